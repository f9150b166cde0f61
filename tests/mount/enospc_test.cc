// A full cache: without a mirror, writes beyond --cache-size fail with ENOSPC
// (with the kernel's writeback cache the error may surface at write(),
// fsync() or close()), nothing hangs, and freeing data makes room again.
#include <fcntl.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/testing/mount_fixture.h"
#include "tests/testing/posix_compare.h"

namespace memfuse::testing {
namespace {

constexpr int64_t kMiB = 1024 * 1024;

class EnospcTest : public MountTest {
 protected:
  std::vector<std::string> MountArgs() const override {
    return {"--cache-size", "16"};
  }

  int64_t FreeBytes() {
    struct statvfs st {};
    EXPECT_EQ(statvfs(mount_dir().c_str(), &st), 0);
    return static_cast<int64_t>(st.f_bfree) * st.f_frsize;
  }
};

// How writing a file ended: the first error and where it surfaced.
struct WriteResult {
  int err = 0;          // 0: every step succeeded
  std::string where;    // "write", "fsync" or "close"
  int64_t written = 0;  // bytes write() accepted
};

WriteResult WriteFileOf(const std::string& path, int64_t size, uint64_t seed) {
  WriteResult result;
  int fd = open(path.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
  if (fd < 0) return {errno, "open", 0};
  std::string chunk = PatternBytes(seed, kMiB);
  while (result.written < size) {
    ssize_t n = write(fd, chunk.data(), kMiB);
    if (n < 0) {
      result = {errno, "write", result.written};
      break;
    }
    result.written += n;
  }
  if (fsync(fd) != 0 && result.err == 0)
    result = {errno, "fsync", result.written};
  if (close(fd) != 0 && result.err == 0)
    result = {errno, "close", result.written};
  return result;
}

TEST_F(EnospcTest, FullCacheGivesEnospcAndDeletingMakesRoom) {
  const int64_t start = FreeBytes();
  // 4 MiB files until the 16 MiB cache is full; 8 files are twice the cache.
  std::vector<std::string> files;
  WriteResult failure;
  int ok_files = 0;
  for (int i = 0; i < 8 && failure.err == 0; ++i) {
    files.push_back(absl::StrCat(mount_dir(), "/f", i));
    WriteResult r = WriteFileOf(files.back(), 4 * kMiB, i);
    if (r.err == 0) {
      ++ok_files;
    } else {
      failure = r;
    }
  }
  ASSERT_NE(failure.err, 0) << "32 MiB fit into a 16 MiB cache";
  EXPECT_EQ(failure.err, ENOSPC)
      << "at " << failure.where << ": " << ErrnoName(failure.err);
  EXPECT_GE(ok_files, 2) << "the cache filled up well before 16 MiB";
  EXPECT_LE(ok_files, 4) << "more than 16 MiB stored";

  // The files that were fully written are intact (WriteFileOf repeats one
  // 1 MiB chunk).
  for (int i = 0; i < ok_files; ++i) {
    std::string want;
    for (int j = 0; j < 4; ++j) want += PatternBytes(i, kMiB);
    Outcome content = ReadFile(files[i]);
    EXPECT_TRUE(content.data == want)
        << files[i] << " damaged by the failed write: " << ToString(content);
  }

  // Deleting everything makes room again, and writing then works.
  for (const std::string& f : files) {
    EXPECT_EQ(Sys(unlink(f.c_str())), Outcome{}) << f;
  }
  EXPECT_TRUE(
      WaitFor([&] { return FreeBytes() >= start; }, std::chrono::seconds(10)))
      << "space not returned: " << start << " -> " << FreeBytes();
  const std::string again = mount_dir() + "/again";
  WriteResult r = WriteFileOf(again, 12 * kMiB, 99);
  EXPECT_EQ(r.err, 0) << "after freeing space, at " << r.where << ": "
                      << ErrnoName(r.err);
  Outcome content = ReadFile(again);
  EXPECT_TRUE(content.data.size() == 12 * kMiB &&
              content.data.substr(0, kMiB) == PatternBytes(99, kMiB))
      << ToString(content);
}

TEST_F(EnospcTest, OneFileTwiceTheCache) {
  const std::string path = mount_dir() + "/big";
  WriteResult r = WriteFileOf(path, 32 * kMiB, 7);
  EXPECT_EQ(r.err, ENOSPC) << "writing 32 MiB into 16 MiB: at " << r.where
                           << ": " << ErrnoName(r.err);
  // The failure leaves a usable file system: unlink frees, a small write works.
  EXPECT_EQ(Sys(unlink(path.c_str())), Outcome{});
  EXPECT_TRUE(WaitFor([&] { return FreeBytes() >= 8 * kMiB; },
                      std::chrono::seconds(10)))
      << "space not returned after unlink: " << FreeBytes();
  WriteResult small = WriteFileOf(mount_dir() + "/small", kMiB, 8);
  EXPECT_EQ(small.err, 0) << "at " << small.where << ": "
                          << ErrnoName(small.err);
}

// fallocate(mode 0) promises that later writes into the range cannot fail
// for lack of space, so it must reserve the space or refuse with ENOSPC.
TEST_F(EnospcTest, FallocateReservesOrRefuses) {
  const std::string path = mount_dir() + "/reserved";
  int fd = open(path.c_str(), O_CREAT | O_RDWR, 0644);
  ASSERT_GE(fd, 0) << ErrnoName(errno);
  EXPECT_EQ(Sys(fallocate(fd, 0, 0, 32 * kMiB)), (Outcome{-1, ENOSPC, ""}))
      << "fallocate of twice the cache";
  ASSERT_EQ(Sys(fallocate(fd, 0, 0, 8 * kMiB)), Outcome{})
      << "fallocate of half the cache";
  // Fill the rest of the cache with another file.
  WriteResult filler = WriteFileOf(mount_dir() + "/filler", 16 * kMiB, 1);
  EXPECT_EQ(filler.err, ENOSPC) << "the filler should run out of space";
  // The reserved range is still writable.
  std::string chunk = PatternBytes(2, kMiB);
  for (int64_t off = 0; off < 8 * kMiB; off += kMiB) {
    ASSERT_EQ(Sys(pwrite(fd, chunk.data(), kMiB, off)), (Outcome{kMiB, 0, ""}))
        << "write into the fallocated range at " << off;
  }
  EXPECT_EQ(Sys(fsync(fd)), Outcome{}) << "fsync of the fallocated range";
  EXPECT_EQ(Sys(close(fd)), Outcome{});
}

}  // namespace
}  // namespace memfuse::testing
