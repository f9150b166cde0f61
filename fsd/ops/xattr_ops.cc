// Extended attributes.
#include <cerrno>
#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "fsd/ops/ops.h"
#include "fsd/status_report.h"

namespace memfuse::fsd::ops {
namespace {

constexpr std::string_view kStatusXattr = "user.memfuse.status";

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

// The daemon's state for operators and tests, one "name value" per line
// (StatusReport::Text): `getfattr --only-values -n user.memfuse.status
// MOUNT`. Not listed, not settable; only the root has it.
std::string StatusText(const Context& ctx) {
  return StatusReport::Gather(ctx.tree, ctx.budget, ctx.log).Text();
}

void GetXattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  const Context& ctx = ContextOf(req);
  if (ino == FUSE_ROOT_ID && std::string_view(name) == kStatusXattr) {
    ReplyValue(req, StatusText(ctx), size);
    return;
  }
  ReplyValue(req, ctx.tree->GetXattr(ino, name), size);
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
