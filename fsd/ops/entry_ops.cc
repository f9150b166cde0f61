// Namespace operations: lookup, forget, creating and removing names.
#include <cerrno>
#include <string_view>

#include "fsd/ops/ops.h"

namespace memfuse::fsd::ops {
namespace {

void Lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  Context& ctx = ContextOf(req);
  absl::StatusOr<struct stat> st = ctx.tree->Lookup(parent, name);
  if (!st.ok() && st.status().code() == absl::StatusCode::kNotFound &&
      std::string_view(name).size() <= ctx.tree->name_max()) {
    // A negative entry: the kernel remembers the name is absent until it
    // creates it itself.
    fuse_entry_param e{};
    e.entry_timeout = ctx.timeout;
    fuse_reply_entry(req, &e);
    return;
  }
  ReplyEntry(req, st);
}

void Forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  ContextOf(req).tree->Forget(ino, nlookup);
  fuse_reply_none(req);
}

void ForgetMulti(fuse_req_t req, size_t count, fuse_forget_data* forgets) {
  Tree& tree = *ContextOf(req).tree;
  for (size_t i = 0; i < count; ++i) {
    tree.Forget(forgets[i].ino, forgets[i].nlookup);
  }
  fuse_reply_none(req);
}

void Mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
           dev_t rdev) {
  ReplyEntry(req, ContextOf(req).tree->MakeNode(parent, name, mode, rdev, {},
                                                CallerOf(req)));
}

void Mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
  Mknod(req, parent, name, S_IFDIR | (mode & 07777), 0);
}

void Symlink(fuse_req_t req, const char* target, fuse_ino_t parent,
             const char* name) {
  ReplyEntry(req, ContextOf(req).tree->MakeNode(parent, name, S_IFLNK | 0777,
                                                0, target, CallerOf(req)));
}

void Link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t new_parent,
          const char* new_name) {
  ReplyEntry(req, ContextOf(req).tree->Link(ino, new_parent, new_name));
}

void Unlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
  ReplyStatus(req, ContextOf(req).tree->Unlink(parent, name));
}

void Rmdir(fuse_req_t req, fuse_ino_t parent, const char* name) {
  ReplyStatus(req, ContextOf(req).tree->Rmdir(parent, name));
}

void Rename(fuse_req_t req, fuse_ino_t parent, const char* name,
            fuse_ino_t new_parent, const char* new_name, unsigned int flags) {
  ReplyStatus(req, ContextOf(req).tree->Rename(parent, name, new_parent,
                                               new_name, flags));
}

}  // namespace

void AddEntryOps(fuse_lowlevel_ops& ops) {
  ops.lookup = Lookup;
  ops.forget = Forget;
  ops.forget_multi = ForgetMulti;
  ops.mknod = Mknod;
  ops.mkdir = Mkdir;
  ops.symlink = Symlink;
  ops.link = Link;
  ops.unlink = Unlink;
  ops.rmdir = Rmdir;
  ops.rename = Rename;
}

}  // namespace memfuse::fsd::ops
