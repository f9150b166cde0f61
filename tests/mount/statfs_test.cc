// statfs: the cache is the filesystem's size, and free space follows what is
// stored. Freed memory is released when the kernel forgets the inode, which
// happens asynchronously after unlink, so "space comes back" is a bounded
// wait for the condition rather than an immediate check.
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/testing/mount_fixture.h"
#include "tests/testing/posix_compare.h"

namespace memfuse::testing {
namespace {

constexpr int64_t kMiB = 1024 * 1024;
constexpr int64_t kCacheMiB = 64;

class StatfsTest : public MountTest {
 protected:
  std::vector<std::string> MountArgs() const override {
    return {"--cache-size", std::to_string(kCacheMiB)};
  }

  struct statvfs Statvfs() {
    struct statvfs st {};
    EXPECT_EQ(statvfs(mount_dir().c_str(), &st), 0) << ErrnoName(errno);
    return st;
  }

  int64_t FreeBytes() {
    struct statvfs st = Statvfs();
    return static_cast<int64_t>(st.f_bfree) * st.f_frsize;
  }

  // Writes `size` bytes of pattern to `path` and flushes them to the daemon
  // (with the kernel's writeback cache, unflushed data is not yet stored).
  void WriteAndSync(const std::string& path, int64_t size) {
    int fd = open(path.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
    ASSERT_GE(fd, 0) << ErrnoName(errno);
    std::string chunk = PatternBytes(1, kMiB);
    for (int64_t done = 0; done < size; done += kMiB) {
      ASSERT_EQ(write(fd, chunk.data(), kMiB), kMiB) << ErrnoName(errno);
    }
    ASSERT_EQ(fsync(fd), 0) << ErrnoName(errno);
    ASSERT_EQ(close(fd), 0) << ErrnoName(errno);
  }

  // Waits (bounded) until free space is back to at least `bytes`.
  bool FreeReturnsTo(int64_t bytes) {
    return WaitFor([&] { return FreeBytes() >= bytes; },
                   std::chrono::seconds(10));
  }
};

TEST_F(StatfsTest, SizeIsTheCache) {
  struct statvfs st = Statvfs();
  ASSERT_GT(st.f_frsize, 0u);
  const double total = static_cast<double>(st.f_blocks) * st.f_frsize;
  EXPECT_GE(total, kCacheMiB * kMiB * 0.95) << "f_blocks " << st.f_blocks;
  EXPECT_LE(total, kCacheMiB * kMiB * 1.05) << "f_blocks " << st.f_blocks;
  EXPECT_LE(st.f_bfree, st.f_blocks);
  EXPECT_LE(st.f_bavail, st.f_bfree);
  EXPECT_GE(static_cast<double>(st.f_bfree) * st.f_frsize, total * 0.95)
      << "a fresh mount should be (almost) all free";
  EXPECT_EQ(st.f_namemax, 255u);
}

TEST_F(StatfsTest, FreeSpaceFollowsWritesAndUnlink) {
  const int64_t start = FreeBytes();
  const std::string path = mount_dir() + "/eight";
  ASSERT_NO_FATAL_FAILURE(WriteAndSync(path, 8 * kMiB));
  const int64_t after_write = FreeBytes();
  EXPECT_LE(after_write, start - 8 * kMiB)
      << "8 MiB written but free space only went " << start << " -> "
      << after_write;
  // Block rounding may cost a little more, never a lot more.
  EXPECT_GE(after_write, start - 10 * kMiB);

  ASSERT_EQ(unlink(path.c_str()), 0) << ErrnoName(errno);
  EXPECT_TRUE(FreeReturnsTo(start))
      << "free space did not return after unlink: " << start << " -> "
      << FreeBytes();
}

TEST_F(StatfsTest, OpenUnlinkedFileHoldsSpaceUntilClose) {
  const int64_t start = FreeBytes();
  const std::string path = mount_dir() + "/held";
  ASSERT_NO_FATAL_FAILURE(WriteAndSync(path, 4 * kMiB));
  int fd = open(path.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(unlink(path.c_str()), 0);
  // Still open: the data must still be there (and readable).
  char c = 0;
  EXPECT_EQ(pread(fd, &c, 1, 4 * kMiB - 1), 1);
  EXPECT_LE(FreeBytes(), start - 4 * kMiB) << "space freed while still open";
  close(fd);
  EXPECT_TRUE(FreeReturnsTo(start))
      << "space not released after the last close: " << start << " -> "
      << FreeBytes();
}

TEST_F(StatfsTest, TruncateAndPunchHoleFreeSpace) {
  const int64_t start = FreeBytes();
  const std::string path = mount_dir() + "/f";
  ASSERT_NO_FATAL_FAILURE(WriteAndSync(path, 8 * kMiB));
  ASSERT_EQ(truncate(path.c_str(), 2 * kMiB), 0) << ErrnoName(errno);
  EXPECT_TRUE(FreeReturnsTo(start - 3 * kMiB))
      << "truncate to 2 MiB did not free: " << start << " -> " << FreeBytes();
  int fd = open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(
      fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 2 * kMiB), 0)
      << ErrnoName(errno);
  close(fd);
  EXPECT_TRUE(FreeReturnsTo(start))
      << "punching the whole file did not free: " << start << " -> "
      << FreeBytes();
  // A sparse file costs nothing.
  ASSERT_EQ(truncate(path.c_str(), 1024 * kMiB), 0) << ErrnoName(errno);
  EXPECT_GE(FreeBytes(), start) << "a 1 GiB hole allocated memory";
}

}  // namespace
}  // namespace memfuse::testing
