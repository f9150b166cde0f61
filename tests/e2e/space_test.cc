// With a mirror, the mount's size is the mirror's, not the cache's:
//
//  - statfs(2) of the mount reports the local mirror's filesystem (total,
//    free and available space, inodes), and keeps answering, at once, with
//    the last figure while the agent is gone;
//  - fallocate(2) far beyond the cache succeeds: the range is holes until
//    written, reads as zeros, reaches the mirror as a size change, and
//    writes into it later reach the mirror like any other.
//
// Without a mirror the cache is the size: tests/mount/statfs_test.cc and
// tests/mount/enospc_test.cc (fallocate past the cache is ENOSPC). The HTTP
// mirror's stand-in figure is in http_mirror_test.cc.
#include <fcntl.h>
#include <linux/falloc.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <iterator>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/e2e/e2e_fixture.h"
#include "tests/testing/mount_fixture.h"
#include "tests/testing/posix_compare.h"

namespace memfuse::testing {
namespace {

constexpr uint64_t kMiB = uint64_t{1} << 20;
const std::vector<std::string> kSmallCache = {"--cache-size", "64"};

struct Space {
  uint64_t total = 0;
  uint64_t free = 0;
  uint64_t available = 0;
  uint64_t files = 0;
  uint64_t free_files = 0;
};

std::optional<Space> SpaceOf(const std::string& path) {
  struct statvfs st;
  if (statvfs(path.c_str(), &st) != 0) return std::nullopt;
  Space s;
  s.total = uint64_t{st.f_blocks} * st.f_frsize;
  s.free = uint64_t{st.f_bfree} * st.f_frsize;
  s.available = uint64_t{st.f_bavail} * st.f_frsize;
  s.files = st.f_files;
  s.free_files = st.f_ffree;
  return s;
}

// |a - b| <= tolerance.
bool Near(uint64_t a, uint64_t b, uint64_t tolerance) {
  return (a > b ? a - b : b - a) <= tolerance;
}

// The mirror's filesystem (under /tmp) is shared with whatever else runs:
// free space may move while the test looks.
constexpr uint64_t kFreeTolerance = 256 * kMiB;

class SpaceTest : public E2eTest {
 protected:
  // statfs of the mount vs statvfs of the mirror directory.
  void ExpectMountIsTheMirrorsSize() {
    std::optional<Space> mount_space = SpaceOf(mount());
    std::optional<Space> mirror_space = SpaceOf(mirror());
    ASSERT_TRUE(mount_space && mirror_space);
    // The mount counts in 4 KiB units; the mirror's may be larger.
    EXPECT_TRUE(Near(mount_space->total, mirror_space->total, 4096))
        << mount_space->total << " vs " << mirror_space->total;
    EXPECT_GT(mount_space->total, 64 * kMiB) << "the cache's size";
    EXPECT_TRUE(Near(mount_space->free, mirror_space->free, kFreeTolerance))
        << mount_space->free << " vs " << mirror_space->free;
    EXPECT_TRUE(
        Near(mount_space->available, mirror_space->available, kFreeTolerance))
        << mount_space->available << " vs " << mirror_space->available;
    if (mirror_space->files > 0) {
      EXPECT_EQ(mount_space->files, mirror_space->files);
      EXPECT_TRUE(Near(mount_space->free_files, mirror_space->free_files,
                       100000));
    }
  }
};

TEST_F(SpaceTest, StatFsIsTheMirrorsFilesystem) {
  ASSERT_TRUE(Mount(kSmallCache).ok());
  ExpectMountIsTheMirrorsSize();
}

// The agent gone: statfs answers at once with the last figure (the mirror
// is still as large), never waits for a new agent.
TEST_F(SpaceTest, StatFsAnswersAtOnceWhileTheAgentIsGone) {
  const std::string socket = TempPath("mirrord.sock");
  ASSERT_TRUE(StartAgent(socket).ok());
  ASSERT_TRUE(MountWithSocket(socket, kSmallCache).ok());
  ExpectMountIsTheMirrorsSize();
  std::optional<Space> known = SpaceOf(mount());
  ASSERT_TRUE(known.has_value());

  ASSERT_TRUE(agent()->SignalAndWait(SIGKILL).has_value());
  // Past the second the answer is kept for, each statfs tries the agent
  // once more and gets nothing.
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  int calls = 0;
  while (std::chrono::steady_clock::now() < until) {
    const auto start = std::chrono::steady_clock::now();
    std::optional<Space> now = SpaceOf(mount());
    const auto took = std::chrono::steady_clock::now() - start;
    ASSERT_TRUE(now.has_value());
    EXPECT_LT(took, std::chrono::seconds(2)) << "statfs waited for the agent";
    EXPECT_EQ(now->total, known->total) << "not the mirror's figure any more";
    ++calls;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_GT(calls, 10);

  // A new agent: still the mirror's figure.
  ASSERT_TRUE(StartAgent(socket).ok());
  ASSERT_TRUE(MirrorCaughtUp());
  ExpectMountIsTheMirrorsSize();
}

TEST_F(SpaceTest, FallocateBeyondTheCacheIsHolesUntilWritten) {
  ASSERT_TRUE(Mount(kSmallCache).ok());
  const std::string path = mount() + "/big";
  const uint64_t size = 200 * kMiB;
  const int fd = open(path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0) << ErrnoName(errno);
  ASSERT_EQ(fallocate(fd, 0, 0, size), 0) << ErrnoName(errno);
  // KEEP_SIZE past the end reserves nothing either, and keeps the size.
  ASSERT_EQ(fallocate(fd, FALLOC_FL_KEEP_SIZE, size, 100 * kMiB), 0)
      << ErrnoName(errno);
  struct stat st;
  ASSERT_EQ(fstat(fd, &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), size);
  // Nothing resident was charged for it.
  EXPECT_LE(DaemonStatus(mount())["cache_bytes"].value_or(UINT64_MAX),
            8 * kMiB)
      << DaemonStatus(mount()).text();

  // Zeros, all of it.
  std::string chunk(4 * kMiB, 'x');
  const std::string zeros(chunk.size(), '\0');
  for (uint64_t at = 0; at < size; at += chunk.size()) {
    ASSERT_EQ(pread(fd, chunk.data(), chunk.size(), at),
              static_cast<ssize_t>(chunk.size()))
        << "at " << at << ": " << ErrnoName(errno);
    ASSERT_TRUE(chunk == zeros) << "not zeros at " << at;
  }

  // The size reaches the mirror.
  ASSERT_TRUE(MirrorCaughtUp());
  const std::string mirrored = mirror() + "/big";
  ASSERT_EQ(stat(mirrored.c_str(), &st), 0) << ErrnoName(errno);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), size);

  // Writes into the holes reach the mirror like any other.
  const uint64_t offsets[] = {0, 100 * kMiB + 12345, size - kMiB};
  for (uint64_t i = 0; i < std::size(offsets); ++i) {
    const std::string data = PatternBytes(i + 1, kMiB);
    ASSERT_EQ(pwrite(fd, data.data(), data.size(), offsets[i]),
              static_cast<ssize_t>(data.size()))
        << ErrnoName(errno);
  }
  ASSERT_EQ(fsync(fd), 0) << ErrnoName(errno);
  ASSERT_EQ(close(fd), 0);
  ASSERT_TRUE(MirrorCaughtUp());
  const int mfd = open(mirrored.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(mfd, 0) << ErrnoName(errno);
  ASSERT_EQ(fstat(mfd, &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), size);
  std::string got(kMiB, '\0');
  for (uint64_t i = 0; i < std::size(offsets); ++i) {
    ASSERT_EQ(pread(mfd, got.data(), got.size(), offsets[i]),
              static_cast<ssize_t>(got.size()));
    EXPECT_TRUE(got == PatternBytes(i + 1, kMiB))
        << "the mirror at " << offsets[i];
  }
  // Between the writes, still zeros.
  ASSERT_EQ(pread(mfd, got.data(), got.size(), 50 * kMiB),
            static_cast<ssize_t>(got.size()));
  EXPECT_TRUE(got == std::string(kMiB, '\0'));
  close(mfd);

  // And the mount says the same, read back through the cache.
  const int again = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(again, 0);
  for (uint64_t i = 0; i < std::size(offsets); ++i) {
    ASSERT_EQ(pread(again, got.data(), got.size(), offsets[i]),
              static_cast<ssize_t>(got.size()));
    EXPECT_TRUE(got == PatternBytes(i + 1, kMiB)) << "the mount at "
                                                  << offsets[i];
  }
  close(again);
}

}  // namespace
}  // namespace memfuse::testing
