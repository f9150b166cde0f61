// Directory listing.
#include <memory>

#include "fsd/ops/ops.h"

namespace memfuse::fsd::ops {
namespace {

void OpenDir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  // The kernel may keep listings: it drops them itself whenever it changes
  // the directory, and nothing else does.
  fi->cache_readdir = 1;
  fi->keep_cache = 1;
  fuse_reply_open(req, fi);
}

void ReadDirCommon(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset,
                   bool plus) {
  Context& ctx = ContextOf(req);
  std::unique_ptr<char[]> buffer(new char[size]);
  size_t used = 0;
  // Names reach `fill` from the tree's std::strings or literals, so their
  // data() is NUL-terminated as fuse_add_direntry() needs.
  absl::Status status = ctx.tree->ReadDir(
      ino, static_cast<uint64_t>(offset), plus,
      [&](std::string_view name, const struct stat& st, uint64_t next,
          bool is_dot) {
        const size_t room = size - used;
        size_t need;
        if (plus) {
          fuse_entry_param e = EntryParam(ctx, st);
          if (is_dot) e.ino = 0;  // the kernel does not look dots up
          need = fuse_add_direntry_plus(req, buffer.get() + used, room,
                                        name.data(), &e,
                                        static_cast<off_t>(next));
        } else {
          need = fuse_add_direntry(req, buffer.get() + used, room, name.data(),
                                   &st, static_cast<off_t>(next));
        }
        if (need > room) return false;
        used += need;
        return true;
      });
  if (!status.ok()) {
    ReplyStatus(req, status);
    return;
  }
  fuse_reply_buf(req, buffer.get(), used);
}

void ReadDir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset,
             fuse_file_info*) {
  ReadDirCommon(req, ino, size, offset, /*plus=*/false);
}

void ReadDirPlus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset,
                 fuse_file_info*) {
  ReadDirCommon(req, ino, size, offset, /*plus=*/true);
}

// fsync of the mount's root is the barrier for the whole mount: FUSE does
// not forward syncfs(2) to the daemon (only virtiofs gets it).
void FsyncDir(fuse_req_t req, fuse_ino_t ino, int, fuse_file_info*) {
  ReplySync(req, ino);
}

}  // namespace

void AddDirOps(fuse_lowlevel_ops& ops) {
  ops.opendir = OpenDir;
  ops.readdir = ReadDir;
  ops.readdirplus = ReadDirPlus;
  ops.fsyncdir = FsyncDir;
}

}  // namespace memfuse::fsd::ops
