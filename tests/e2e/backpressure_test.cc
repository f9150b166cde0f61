// The dirty limit: with the mirror made slow (the faulty agent's write
// delay, tests/faulty/), a writer of ten times the limit waits for
// the mirror instead of failing or filling memory; dirty bytes never pass
// the limit (the root's user.memfuse.status says so), reads of another file
// go on while the writer waits, and every byte reaches the mirror.
#include <fcntl.h>
#include <stdlib.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_fixture.h"
#include "tests/e2e/workload.h"
#include "tests/testing/mount_fixture.h"
#include "tests/testing/tree_compare.h"

namespace memfuse::testing {
namespace {

constexpr size_t kMiB = 1 << 20;
constexpr uint64_t kLimitMiB = 4;
constexpr size_t kWrittenMiB = 10 * kLimitMiB;

// The kernel's limit on dirty pages of the mount at `path`, from its bdi
// (named by the device number in mountinfo); nullopt if not found.
std::optional<uint64_t> BdiMaxBytes(const std::string& path) {
  std::ifstream mountinfo("/proc/self/mountinfo");
  std::string line, device;
  while (std::getline(mountinfo, line)) {
    std::vector<std::string> fields = absl::StrSplit(line, ' ');
    if (fields.size() >= 5 && fields[4] == path) device = fields[2];
  }
  if (device.empty()) return std::nullopt;
  std::ifstream knob(absl::StrCat("/sys/class/bdi/", device, "/max_bytes"));
  uint64_t bytes = 0;
  if (!(knob >> bytes)) return std::nullopt;
  return bytes;
}

bool WriteAll(int fd, const std::string& data, off_t offset) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = pwrite(fd, data.data() + done, data.size() - done,
                       offset + static_cast<off_t>(done));
    if (n <= 0) return false;
    done += n;
  }
  return true;
}

class BackpressureTest : public E2eTest {};

TEST_F(BackpressureTest, WritersWaitAtTheDirtyLimitAndReadersDoNot) {
  // 64 KiB blocks applied 3 ms apart: the mirror takes about 20 MiB/s.
  InjectAgentFaults({.write_delay = absl::Milliseconds(3)});
  absl::Status started =
      Mount({"--cache-size", "64", "--cache-max-write-size",
             absl::StrCat(kLimitMiB), "--block-size", "64"});
  ASSERT_TRUE(started.ok()) << started;
  DaemonStatus status(mount());
  ASSERT_EQ(status["dirty_limit"], kLimitMiB * kMiB)
      << "no user.memfuse.status on the root";
  // Pages the kernel holds dirty are not mirrored either: its buffer for
  // the mount is capped by the same limit (which the kernel keeps as a
  // fraction of memory, rounded).
  std::optional<uint64_t> bdi = BdiMaxBytes(mount());
  if (bdi.has_value()) {
    EXPECT_LE(*bdi, kLimitMiB * kMiB * 102 / 100);
    EXPECT_GE(*bdi, kLimitMiB * kMiB * 98 / 100);
  }

  // Another file, mirrored before the writer starts.
  const std::string other = mount() + "/other";
  const std::string other_data = StreamChunk(2, 0, kMiB);
  {
    int fd = open(other.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(WriteAll(fd, other_data, 0));
    close(fd);
  }
  ASSERT_TRUE(MirrorCaughtUp());

  // O_DIRECT: every write(2) is a WRITE to the daemon, not a page in the
  // kernel's cache, so the writer itself is what waits.
  std::atomic<bool> writer_done{false};
  std::atomic<bool> writer_ok{false};
  const std::string big = mount() + "/big";
  std::thread writer([&] {
    int fd = open(big.c_str(), O_WRONLY | O_CREAT | O_DIRECT | O_CLOEXEC, 0644);
    bool ok = fd >= 0;
    for (size_t i = 0; ok && i < kWrittenMiB; ++i) {
      ok = WriteAll(fd, StreamChunk(1, i, kMiB), i * kMiB);
    }
    if (fd >= 0) close(fd);
    writer_ok = ok;
    writer_done = true;
  });
  absl::Cleanup join = [&] { writer.join(); };

  ASSERT_TRUE(WaitFor([&] { return DaemonStatus(mount())["dirty_waits"] > 0; },
                      std::chrono::seconds(30)))
      << "the writer never waited at the dirty limit";
  // While it waits: a lookup, a listing and a read of the other file that
  // reaches the daemon (the kernel's cached pages are dropped first).
  struct stat st;
  EXPECT_EQ(stat(other.c_str(), &st), 0);
  int fd = open(other.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  std::string read_back(kMiB, '\0');
  EXPECT_EQ(pread(fd, read_back.data(), kMiB, 0), static_cast<ssize_t>(kMiB));
  close(fd);
  EXPECT_TRUE(read_back == other_data);
  EXPECT_FALSE(writer_done)
      << "the writer finished before the reader: it never really waited";

  std::move(join).Invoke();
  EXPECT_TRUE(writer_ok) << "a write failed instead of waiting";
  ASSERT_TRUE(MirrorCaughtUp(std::chrono::seconds(60)));
  status = DaemonStatus(mount());
  EXPECT_LE(status["dirty_peak"], kLimitMiB * kMiB);
  EXPECT_GT(status["dirty_peak"], 0u);
  EXPECT_EQ(status["dirty_bytes"], 0u);
  std::string why;
  EXPECT_TRUE(FileHoldsStream(mirror() + "/big", 1, kWrittenMiB * kMiB, &why))
      << why;
  EXPECT_TRUE(TreesEqual(mount(), mirror(), MirrorCompareOptions()));
  ASSERT_TRUE(CleanExit(Unmount()));
}

}  // namespace
}  // namespace memfuse::testing
