#include "mirrord/backend/mirror_limits.h"

#include <fcntl.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/xattr_space.h"
#include "gtest/gtest.h"

namespace memfuse::mirrord {
namespace {

// How many attributes name_prefix<i> with `value_size` bytes an anonymous
// file in `dir` takes (at most `limit`), and the errno that stopped it.
int Fill(int dir, const std::string& name_prefix, size_t value_size,
         int limit, int* error) {
  const int fd = openat(dir, ".", O_TMPFILE | O_RDWR, 0600);
  if (fd < 0) return -1;
  const std::string value(value_size, 'v');
  int i = 0;
  *error = 0;
  for (; i < limit; ++i) {
    const std::string name = absl::StrCat(name_prefix, i);
    if (fsetxattr(fd, name.c_str(), value.data(), value.size(), 0) != 0) {
      *error = errno;
      break;
    }
  }
  close(fd);
  return i;
}

// The probe measures the filesystem the tests run on; whatever it is, the
// model with the measured regions must predict what that filesystem takes.
TEST(MirrorLimitsTest, PredictsWhatTheFilesystemTakes) {
  const std::string dir = ::testing::TempDir();
  const int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  ASSERT_GE(fd, 0);
  const pb::MirrorLimits limits = ProbeMirrorLimits(fd);
  struct statvfs fs;
  ASSERT_EQ(fstatvfs(fd, &fs), 0);
  EXPECT_EQ(limits.name_max(), fs.f_namemax);
  if (limits.xattr_regions().empty()) {
    close(fd);
    GTEST_SKIP() << "xattr room on " << dir << " is unbounded";
  }
  const std::vector<uint64_t> regions(limits.xattr_regions().begin(),
                                      limits.xattr_regions().end());
  for (const std::string& prefix : {std::string("user.n"),
                                    std::string("user.") + std::string(40, 'x')}) {
    for (size_t value_size : {0, 4, 13, 40, 100, 400, 1000, 3000}) {
      SCOPED_TRACE(absl::StrCat(prefix, " value ", value_size));
      int error;
      const int taken = Fill(fd, prefix, value_size, 5000, &error);
      ASSERT_LT(taken, 5000);
      EXPECT_EQ(error, limits.xattr_full_errno());
      // The model: `taken` fit, one more does not.
      std::vector<uint64_t> costs;
      for (int i = 0; i <= taken; ++i) {
        costs.push_back(common::XattrCost(
            absl::StrCat(prefix, i).size(), value_size));
      }
      EXPECT_FALSE(common::XattrsFit(regions, costs));
      costs.pop_back();
      EXPECT_TRUE(common::XattrsFit(regions, costs));
    }
  }
  close(fd);
}

// The probe leaves nothing behind in the mirror.
TEST(MirrorLimitsTest, LeavesNothingBehind) {
  const std::string dir = ::testing::TempDir() + "/probe_" +
                          std::to_string(getpid());
  std::filesystem::create_directory(dir);
  const int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  ASSERT_GE(fd, 0);
  ProbeMirrorLimits(fd);
  close(fd);
  EXPECT_TRUE(std::filesystem::is_empty(dir));
  std::filesystem::remove(dir);
}

}  // namespace
}  // namespace memfuse::mirrord
