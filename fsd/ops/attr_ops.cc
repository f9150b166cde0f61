// Attributes, symlink targets and filesystem statistics.
#include <sys/statvfs.h>

#include <string>

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

void StatFs(fuse_req_t req, fuse_ino_t) {
  const Tree::Usage usage = ContextOf(req).tree->GetUsage();
  struct statvfs st{};
  st.f_bsize = kFragmentSize;
  st.f_frsize = kFragmentSize;
  st.f_blocks = usage.bytes_limit / kFragmentSize;
  st.f_bfree = (usage.bytes_limit - usage.bytes_used) / kFragmentSize;
  st.f_bavail = st.f_bfree;
  st.f_files = kInodeLimit;
  st.f_ffree = kInodeLimit - usage.inodes;
  st.f_favail = st.f_ffree;
  st.f_namemax = Tree::kMaxNameLength;
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
