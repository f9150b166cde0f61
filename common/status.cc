#include "common/status.h"

#include <cerrno>
#include <cstring>
#include "absl/types/optional.h"
#include <string>

#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace memfuse::common {
namespace {

constexpr absl::string_view kErrnoPayload = "memfuse/errno";

}  // namespace

absl::Status ErrnoStatus(int err, absl::string_view message) {
  absl::Status status(absl::ErrnoToStatusCode(err),
                      message.empty()
                          ? std::string(std::strerror(err))
                          : absl::StrCat(message, ": ", std::strerror(err)));
  status.SetPayload(kErrnoPayload, absl::Cord(absl::StrCat(err)));
  return status;
}

int StatusToErrno(const absl::Status& status) {
  if (status.ok()) return 0;
  if (absl::optional<absl::Cord> payload = status.GetPayload(kErrnoPayload)) {
    int err = 0;
    if (absl::SimpleAtoi(std::string(*payload), &err) && err > 0) return err;
  }
  switch (status.code()) {
    case absl::StatusCode::kNotFound:
      return ENOENT;
    case absl::StatusCode::kAlreadyExists:
      return EEXIST;
    case absl::StatusCode::kPermissionDenied:
      return EACCES;
    case absl::StatusCode::kInvalidArgument:
      return EINVAL;
    case absl::StatusCode::kResourceExhausted:
      return ENOSPC;
    case absl::StatusCode::kUnimplemented:
      return EOPNOTSUPP;
    case absl::StatusCode::kOutOfRange:
      return ERANGE;
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
      return EAGAIN;
    default:
      return EIO;
  }
}

}  // namespace memfuse::common
