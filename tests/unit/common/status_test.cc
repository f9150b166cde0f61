#include "common/status.h"

#include <cerrno>

#include "gtest/gtest.h"

namespace memfuse::common {
namespace {

TEST(StatusTest, KeepsErrnoThatCodesFoldTogether) {
  // absl maps all three to FAILED_PRECONDITION; the payload keeps them apart.
  for (int err : {ENOTDIR, EISDIR, ENOTEMPTY, ENAMETOOLONG, ENXIO, EXDEV}) {
    absl::Status status = ErrnoStatus(err, "op");
    EXPECT_FALSE(status.ok());
    EXPECT_EQ(StatusToErrno(status), err);
  }
}

TEST(StatusTest, OkIsZeroAndPlainCodesMap) {
  EXPECT_EQ(StatusToErrno(absl::OkStatus()), 0);
  EXPECT_EQ(StatusToErrno(absl::NotFoundError("x")), ENOENT);
  EXPECT_EQ(StatusToErrno(absl::InternalError("x")), EIO);
}

absl::Status FailsWith(int err) { return ErrnoStatus(err); }
absl::StatusOr<int> Value(int v) {
  if (v < 0) return ErrnoStatus(EINVAL);
  return v;
}
absl::Status UsesMacros(int v, int* out) {
  RETURN_IF_ERROR(v == 0 ? FailsWith(EPERM) : absl::OkStatus());
  ASSIGN_OR_RETURN(*out, Value(v));
  return absl::OkStatus();
}

TEST(StatusTest, MacrosReturnEarly) {
  int out = 0;
  EXPECT_EQ(StatusToErrno(UsesMacros(0, &out)), EPERM);
  EXPECT_EQ(StatusToErrno(UsesMacros(-1, &out)), EINVAL);
  EXPECT_TRUE(UsesMacros(7, &out).ok());
  EXPECT_EQ(out, 7);
}

}  // namespace
}  // namespace memfuse::common
