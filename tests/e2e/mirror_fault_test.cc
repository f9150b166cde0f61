// Mirror errors: a change the mirror cannot take now (disk full, a
// directory removed behind fsd's back) is retried, never dropped, and
// logged once per cause; once the cause is gone it lands.
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_fixture.h"
#include "tests/testing/mount_fixture.h"

namespace memfuse::testing {
namespace {

using MirrorFaultTest = E2eTest;

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool WriteFile(const std::string& path, const std::string& data) {
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return false;
  const bool ok = write(fd, data.data(), data.size()) ==
                  static_cast<ssize_t>(data.size());
  return close(fd) == 0 && ok;
}

size_t Count(const std::string& haystack, const std::string& needle) {
  size_t n = 0;
  for (size_t at = haystack.find(needle); at != std::string::npos;
       at = haystack.find(needle, at + 1)) {
    ++n;
  }
  return n;
}

// A barrier (fsync of the mount's root) on its own thread.
class PendingBarrier {
 public:
  explicit PendingBarrier(const std::string& mount)
      : thread_([this, mount] {
          const int fd = open(mount.c_str(), O_RDONLY | O_DIRECTORY);
          result_ = fd >= 0 ? fsync(fd) : -1;
          if (fd >= 0) close(fd);
          done_ = true;
        }) {}
  ~PendingBarrier() { thread_.join(); }
  bool done() const { return done_; }
  // Waits at most `timeout`; true once the barrier returned 0.
  bool WaitOk(std::chrono::seconds timeout) {
    const auto until = std::chrono::steady_clock::now() + timeout;
    while (!done_ && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return done_ && result_ == 0;
  }

 private:
  std::atomic<bool> done_{false};
  std::atomic<int> result_{-1};
  std::thread thread_;
};

TEST_F(MirrorFaultTest, FullMirrorDiskIsRetriedUntilThereIsRoom) {
  MEMFUSE_REQUIRE_FUSE();
  ASSERT_EQ(mkdir(mirror().c_str(), 0755), 0);
  ASSERT_EQ(::mount("memfuse-test", mirror().c_str(), "tmpfs", 0, "size=4m"), 0)
      << "cannot mount a small tmpfs as the mirror";
  absl::Cleanup unmount_mirror = [this] {
    umount2(mirror().c_str(), MNT_DETACH);
  };
  ASSERT_TRUE(Mount().ok());

  // Fill the mirror's disk behind fsd's back.
  const std::string filler = mirror() + "/filler";
  ASSERT_TRUE(WriteFile(filler, std::string(3 << 20, 'x')));
  const std::string data(2 << 20, 'd');
  ASSERT_TRUE(WriteFile(mount() + "/big", data));

  {
    PendingBarrier barrier(mount());
    // Once the agent has met the full disk, the barrier must still wait.
    EXPECT_TRUE(WaitFor(
        [&] {
          return Slurp(fs().log_path()).find("No space left on device") !=
                 std::string::npos;
        },
        std::chrono::seconds(20)))
        << "the agent never met the full disk";
    EXPECT_FALSE(barrier.done())
        << "the mirror cannot hold the file, yet the barrier returned";
    // The file is still whole on the mount meanwhile.
    EXPECT_EQ(Slurp(mount() + "/big"), data);

    ASSERT_EQ(unlink(filler.c_str()), 0);
    EXPECT_TRUE(barrier.WaitOk(kBarrierTimeout))
        << "the write never landed after room was made";
  }
  EXPECT_EQ(Slurp(mirror() + "/big"), data);
  const std::string log = Slurp(fs().log_path());
  const size_t logged = Count(log, "No space left on device");
  EXPECT_GE(logged, 1u) << log;
  EXPECT_LE(logged, 3u) << "logged on every retry:\n" << log;
  EXPECT_NE(log.find(mirror() + "/big"), std::string::npos)
      << "the log does not name the mirror file:\n" << log;
  EXPECT_TRUE(CleanExit(Unmount()));
}

// No waiting for someone to put the directory back: fsd re-creates it
// (tests/e2e/mirror_loss_test.cc has the full story), and the barrier
// returns once the file is in it.
TEST_F(MirrorFaultTest, DirectoryRemovedUnderneathIsRecreatedByTheBarrier) {
  MEMFUSE_REQUIRE_FUSE();
  ASSERT_TRUE(Mount().ok());
  ASSERT_EQ(mkdir((mount() + "/d").c_str(), 0755), 0);
  ASSERT_TRUE(MirrorCaughtUp());
  ASSERT_EQ(rmdir((mirror() + "/d").c_str()), 0);  // behind fsd's back

  ASSERT_TRUE(WriteFile(mount() + "/d/f", "kept"));
  ASSERT_TRUE(MirrorCaughtUp());
  EXPECT_EQ(Slurp(mirror() + "/d/f"), "kept");
  EXPECT_TRUE(CleanExit(Unmount()));
}

}  // namespace
}  // namespace memfuse::testing
