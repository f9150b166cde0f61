// Attributes, symlink targets and filesystem statistics.
#include <sys/statvfs.h>

#include <algorithm>
#include <optional>
#include <string>

#include "fsd/mirror_client.h"
#include "fsd/ops/ops.h"

namespace memfuse::fsd::ops {
namespace {

constexpr unsigned long kFragmentSize = 4096;
// Inodes cost only memory, which the cache size does not bound; statfs
// reports this many so that tools checking for free inodes are content.
constexpr fsfilcnt_t kInodeLimit = fsfilcnt_t{1} << 32;

void ReplyAttr(fuse_req_t req, const absl::StatusOr<struct stat>& st) {
  if (!st.ok()) {
    ReplyStatus(req, st.status());
    return;
  }
  fuse_reply_attr(req, &*st, ContextOf(req).timeout);
}

void GetAttr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  ReplyAttr(req, ContextOf(req).tree->GetAttr(ino));
}

void SetAttr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set,
             fuse_file_info*) {
  ReplyAttr(req, ContextOf(req).tree->SetAttr(ino, *attr, to_set));
}

void ReadLink(fuse_req_t req, fuse_ino_t ino) {
  absl::StatusOr<std::string> target = ContextOf(req).tree->ReadLink(ino);
  if (!target.ok()) {
    ReplyStatus(req, target.status());
    return;
  }
  fuse_reply_readlink(req, target->c_str());
}

// Without a mirror the cache is the filesystem: its size is the size.
void FillFromCache(const Tree::Usage& usage, struct statvfs* st) {
  st->f_blocks = usage.bytes_limit / kFragmentSize;
  st->f_bfree = (usage.bytes_limit - usage.bytes_used) / kFragmentSize;
  st->f_bavail = st->f_bfree;
  st->f_files = kInodeLimit;
  st->f_ffree = kInodeLimit - std::min<uint64_t>(usage.inodes, kInodeLimit);
  st->f_favail = st->f_ffree;
  st->f_namemax = Tree::kMaxNameLength;
}

// With a mirror the cache is a cache: what lands on the mount ends up in
// the mirror, so the mirror's capacity is the mount's (a program checking
// before a large copy must not be stopped by the cache's size).
void FillFromMirror(const pb::StatFsResponse& mirror, struct statvfs* st) {
  st->f_blocks = mirror.total_bytes() / kFragmentSize;
  st->f_bfree = mirror.free_bytes() / kFragmentSize;
  st->f_bavail = mirror.available_bytes() / kFragmentSize;
  // A filesystem that does not count inodes (btrfs) says 0: keep the
  // cache's figure, which only says there is no fixed limit.
  if (mirror.total_files() > 0) {
    st->f_files = mirror.total_files();
    st->f_ffree = mirror.free_files();
    st->f_favail = mirror.free_files();
  }
  if (mirror.name_max() > 0) {
    st->f_namemax = std::min<unsigned long>(mirror.name_max(),
                                            Tree::kMaxNameLength);
  }
}

void StatFs(fuse_req_t req, fuse_ino_t) {
  const Context& ctx = ContextOf(req);
  struct statvfs st{};
  st.f_bsize = kFragmentSize;
  st.f_frsize = kFragmentSize;
  FillFromCache(ctx.tree->GetUsage(), &st);
  // Until the agent first answers (and if it never can), the cache's
  // figure stands.
  if (ctx.mirror != nullptr) {
    if (std::optional<pb::StatFsResponse> mirror = ctx.mirror->StatFs()) {
      FillFromMirror(*mirror, &st);
    }
  }
  fuse_reply_statfs(req, &st);
}

}  // namespace

void AddAttrOps(fuse_lowlevel_ops& ops) {
  ops.getattr = GetAttr;
  ops.setattr = SetAttr;
  ops.readlink = ReadLink;
  ops.statfs = StatFs;
}

}  // namespace memfuse::fsd::ops
