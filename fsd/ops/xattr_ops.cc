// Extended attributes.
#include <cerrno>
#include <string>

#include "fsd/ops/ops.h"

namespace memfuse::fsd::ops {
namespace {

// Replies as getxattr(2)/listxattr(2) expect: the size for a zero-size
// query, ERANGE if the caller's buffer is too small, else the bytes.
void ReplyValue(fuse_req_t req, const absl::StatusOr<std::string>& value,
                size_t size) {
  if (!value.ok()) {
    ReplyStatus(req, value.status());
  } else if (size == 0) {
    fuse_reply_xattr(req, value->size());
  } else if (value->size() > size) {
    fuse_reply_err(req, ERANGE);
  } else {
    fuse_reply_buf(req, value->data(), value->size());
  }
}

void SetXattr(fuse_req_t req, fuse_ino_t ino, const char* name,
              const char* value, size_t size, int flags) {
  ReplyStatus(req, ContextOf(req).tree->SetXattr(
                       ino, name, std::string_view(value, size), flags));
}

void GetXattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  ReplyValue(req, ContextOf(req).tree->GetXattr(ino, name), size);
}

void ListXattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  ReplyValue(req, ContextOf(req).tree->ListXattr(ino), size);
}

void RemoveXattr(fuse_req_t req, fuse_ino_t ino, const char* name) {
  ReplyStatus(req, ContextOf(req).tree->RemoveXattr(ino, name));
}

}  // namespace

void AddXattrOps(fuse_lowlevel_ops& ops) {
  ops.setxattr = SetXattr;
  ops.getxattr = GetXattr;
  ops.listxattr = ListXattr;
  ops.removexattr = RemoveXattr;
}

}  // namespace memfuse::fsd::ops
