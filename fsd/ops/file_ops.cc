// File I/O: create, open, read, write, fsync, fallocate, copy_file_range.
//
// LSEEK is left to the kernel on purpose: with the writeback cache, pages
// written but not yet sent to fsd are data fsd cannot see, so only the
// kernel can answer SEEK_DATA/SEEK_HOLE correctly (everything before EOF is
// data, EOF is the hole). Without a handler libfuse says so once and the
// kernel stops asking.
//
// FLUSH and RELEASE are left to libfuse on purpose: fsd keeps no per-open
// state, and the kernel holds its lookup reference to an open file until the
// last close, so an unlinked open file lives exactly as long as it should.
// Without a flush handler the kernel stops sending FLUSH after the first one
// (one round trip less per close) and still reports write-back errors such as
// ENOSPC from close(2).
#include <fcntl.h>

#include <cerrno>
#include <vector>

#include "common/status.h"
#include "fsd/ops/ops.h"

namespace memfuse::fsd::ops {
namespace {

void Open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Tree& tree = *ContextOf(req).tree;
  absl::Status status = tree.Opened(ino);
  if (status.ok()) {
    status = tree.Open(ino, fi->flags);
    if (!status.ok()) tree.Released(ino);
  }
  if (!status.ok()) {
    ReplyStatus(req, status);
    return;
  }
  fi->keep_cache = 1;
  // Pages stay valid across opens: only the kernel changes file data.
  if (fuse_reply_open(req, fi) == -ENOENT) tree.Released(ino);
}

void Release(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  ContextOf(req).tree->Released(ino);
  fuse_reply_err(req, 0);
}

void Create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
            fuse_file_info* fi) {
  Context& ctx = ContextOf(req);
  absl::StatusOr<struct stat> st = ctx.tree->MakeNode(
      parent, name, S_IFREG | (mode & 07777), 0, {}, CallerOf(req));
  bool counted = false;  // the handle counted by Opened() already
  if (!st.ok() && common::StatusToErrno(st.status()) == EEXIST &&
      !(fi->flags & O_EXCL)) {
    // Open the existing file, as open(O_CREAT) without O_EXCL does.
    st = ctx.tree->Lookup(parent, name);
    if (st.ok()) {
      absl::Status status;
      if (S_ISDIR(st->st_mode)) {
        status = common::ErrnoStatus(EISDIR);
      } else {
        status = ctx.tree->Opened(st->st_ino);
        counted = status.ok();
        if (counted) status = ctx.tree->Open(st->st_ino, fi->flags);
      }
      if (!status.ok()) {
        if (counted) ctx.tree->Released(st->st_ino);
        ctx.tree->Forget(st->st_ino, 1);
        st = status;
      } else {
        st = ctx.tree->GetAttr(st->st_ino);  // after O_TRUNC
      }
    }
  }
  if (!st.ok()) {
    ReplyStatus(req, st.status());
    return;
  }
  fuse_entry_param e = EntryParam(ctx, *st);
  fi->keep_cache = 1;
  // A file just created has every byte in memory: this cannot fail.
  if (!counted) ctx.tree->Opened(e.ino).IgnoreError();
  if (fuse_reply_create(req, &e, fi) == -ENOENT) {
    ctx.tree->Released(e.ino);
    ctx.tree->Forget(e.ino, 1);
  }
}

void Read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset,
          fuse_file_info*) {
  // One buffer per worker thread: a fresh 1 MiB allocation per read would
  // cost more page faults than the copy itself.
  thread_local std::vector<char> buffer;
  if (buffer.size() < size) buffer.resize(size);
  absl::StatusOr<size_t> n = ContextOf(req).tree->Read(
      ino, static_cast<uint64_t>(offset), size, buffer.data());
  if (!n.ok()) {
    ReplyStatus(req, n.status());
    return;
  }
  fuse_reply_buf(req, buffer.data(), *n);
}

void Write(fuse_req_t req, fuse_ino_t ino, const char* data, size_t size,
           off_t offset, fuse_file_info*) {
  Context& ctx = ContextOf(req);
  absl::StatusOr<size_t> n = ctx.tree->Write(
      ino, static_cast<uint64_t>(offset), data, size, ctx.kernel_times);
  if (!n.ok()) {
    ReplyStatus(req, n.status());
    return;
  }
  fuse_reply_write(req, *n);
}

// The kernel has written the file's dirty pages back before this.
void Fsync(fuse_req_t req, fuse_ino_t ino, int, fuse_file_info*) {
  ReplySync(req, ino);
}

void Fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset,
               off_t length, fuse_file_info*) {
  if (offset < 0 || length <= 0) {
    fuse_reply_err(req, EINVAL);
    return;
  }
  ReplyStatus(req, ContextOf(req).tree->Fallocate(
                       ino, mode, static_cast<uint64_t>(offset),
                       static_cast<uint64_t>(length)));
}

void CopyFileRange(fuse_req_t req, fuse_ino_t in, off_t in_offset,
                   fuse_file_info*, fuse_ino_t out, off_t out_offset,
                   fuse_file_info*, size_t length, int flags) {
  if (flags != 0) {
    fuse_reply_err(req, EINVAL);
    return;
  }
  absl::StatusOr<size_t> n = ContextOf(req).tree->CopyFileRange(
      in, static_cast<uint64_t>(in_offset), out,
      static_cast<uint64_t>(out_offset), length);
  if (!n.ok()) {
    ReplyStatus(req, n.status());
    return;
  }
  fuse_reply_write(req, *n);
}

}  // namespace

void AddFileOps(fuse_lowlevel_ops& ops) {
  ops.create = Create;
  ops.open = Open;
  ops.release = Release;
  ops.read = Read;
  ops.write = Write;
  ops.fsync = Fsync;
  ops.fallocate = Fallocate;
  ops.copy_file_range = CopyFileRange;
}

}  // namespace memfuse::fsd::ops
