// A mirror that cannot take a change, or takes nothing at all, never holds
// programs or the daemon hostage (DESIGN.md, invariant 3): a change the
// mirror's filesystem can never store is refused for that object alone,
// an fsync waiting for a stopped agent ends when its program is signalled
// or killed, and a second SIGTERM ends a daemon whose flush is stuck.
#include <fcntl.h>
#include <linux/fs.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <signal.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_fixture.h"
#include "tests/e2e/workload.h"
#include "tests/testing/mount_fixture.h"

namespace memfuse::testing {
namespace {

class StuckMirrorTest : public E2eTest {
 protected:
  // Lists the mount's root, so that it is loaded from the mirror.
  void ListedRoot() {
    std::error_code error;
    for (auto it = std::filesystem::directory_iterator(mount(), error);
         !error && it != std::filesystem::directory_iterator();
         it.increment(error)) {
    }
    ASSERT_FALSE(error) << error.message();
  }
};

std::string ReadWhole(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream out;
  out << in.rdbuf();
  return out.str();
}

// The state letter of /proc/PID/stat ('S', 'D', 'Z', ...), or 0.
char ProcessState(pid_t pid) {
  const std::string stat = ReadWhole(absl::StrCat("/proc/", pid, "/stat"));
  const size_t paren = stat.rfind(')');
  return paren == std::string::npos || paren + 2 >= stat.size()
             ? 0
             : stat[paren + 2];
}

// The process's wait channel: where in the kernel it sleeps.
std::string WaitChannel(pid_t pid) {
  return ReadWhole(absl::StrCat("/proc/", pid, "/wchan"));
}

void OnUsr1(int) {}

// A child that writes `path`, then fsyncs it and reports fsync's errno (0
// for success) on `report`. Only async-signal-safe calls after fork.
pid_t StartFsyncChild(const std::string& path, int report) {
  const pid_t pid = fork();
  if (pid != 0) return pid;
  struct sigaction sa = {};
  sa.sa_handler = OnUsr1;  // no SA_RESTART: the fsync sees the signal
  sigemptyset(&sa.sa_mask);
  sigaction(SIGUSR1, &sa, nullptr);
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) _exit(2);
  if (write(fd, "waiting for a mirror", 20) != 20) _exit(3);
  int error = 0;
  if (fsync(fd) != 0) error = errno;
  [[maybe_unused]] ssize_t n = write(report, &error, sizeof(error));
  _exit(0);
}

// Waits (bounded) for `pid` to sleep in the FUSE request's wait.
::testing::AssertionResult WaitsInFuse(pid_t pid) {
  if (WaitFor(
          [&] {
            return absl::StrContains(WaitChannel(pid), "request_wait_answer");
          },
          std::chrono::seconds(10))) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure()
         << "pid " << pid << " never waited in FUSE (state "
         << ProcessState(pid) << ", wchan " << WaitChannel(pid) << ")";
}

// How many attributes `name_prefix`i = `value_prefix`i`value_suffix` (i =
// 0, 1, ...) `fd` takes before setting one fails; that errno in *error.
// Stops at kManyXattrs: room no test will fill.
constexpr int kManyXattrs = 2000;

struct XattrShape {
  const char* name_prefix;
  const char* value_prefix;
  const char* value_suffix;
};

int FillXattrs(int fd, const XattrShape& shape, int* error) {
  *error = 0;
  for (int i = 0; i < kManyXattrs; ++i) {
    const std::string name = absl::StrCat(shape.name_prefix, i);
    const std::string value =
        absl::StrCat(shape.value_prefix, i, shape.value_suffix);
    if (fsetxattr(fd, name.c_str(), value.data(), value.size(), 0) != 0) {
      *error = errno;
      return i;
    }
  }
  return kManyXattrs;
}

// A file of `mount` the mirror refused for good: its fsync gives EIO, and
// the status counts it.
void ExpectRefused(const std::string& mount, const std::string& name) {
  const int fd = open((mount + "/" + name).c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  EXPECT_NE(fsync(fd), 0);
  EXPECT_EQ(errno, EIO);
  close(fd);
  const DaemonStatus status(mount);
  EXPECT_GE(status["mirror_refused_objects"].value_or(0), 1u)
      << status.text();
}

// What the mirror's filesystem takes on an object (measured here on an
// anonymous file beside the mirror's root), the mount takes, and no more:
// the program is told at once, with that filesystem's errno, and nothing
// reaches the agent that it would have to refuse.
TEST_F(StuckMirrorTest, XattrsBeyondTheMirrorsRoomAreRefusedAtOnce) {
  // stress-ng's xattr stressor, and fewer, larger attributes.
  const XattrShape shapes[] = {
      {"user.var_", "orig-value-", ""},
      {"user.a_longer_attribute_name_", "",
       " and a value of a hundred bytes or so, the kind a program keeps as "
       "metadata of its own"}};
  ASSERT_TRUE(Mount().ok());
  for (const XattrShape& shape : shapes) {
    SCOPED_TRACE(shape.name_prefix);
    const int probe = open(mirror().c_str(), O_TMPFILE | O_RDWR, 0600);
    ASSERT_GE(probe, 0) << strerror(errno);
    int mirror_error;
    const int room = FillXattrs(probe, shape, &mirror_error);
    close(probe);
    if (room == kManyXattrs) {
      GTEST_SKIP() << "the mirror's filesystem has unbounded xattr room";
    }
    const std::string file =
        absl::StrCat("crowded", &shape - shapes);
    const int fd = open((mount() + "/" + file).c_str(),
                        O_RDWR | O_CREAT | O_TRUNC, 0644);
    ASSERT_GE(fd, 0);
    int mount_error;
    EXPECT_EQ(FillXattrs(fd, shape, &mount_error), room);
    EXPECT_EQ(mount_error, mirror_error) << strerror(mount_error);
    EXPECT_EQ(fsync(fd), 0) << strerror(errno);
    close(fd);
    // All the mount took is in the mirror.
    EXPECT_EQ(listxattr((mirror() + "/" + file).c_str(), nullptr, 0),
              listxattr((mount() + "/" + file).c_str(), nullptr, 0));
  }
  const DaemonStatus status(mount());
  EXPECT_EQ(status["mirror_refused_objects"].value_or(1), 0u)
      << status.text();
  ASSERT_TRUE(CleanExit(Unmount()));
}

// When the mirror's room was taken behind fsd's back, the agent's refusal
// is the backstop: fsd took the attribute, the mirror refuses it for that
// file alone, and everything else goes on.
TEST_F(StuckMirrorTest, AnXattrTheMirrorCannotStoreHoldsNothingElse) {
  ASSERT_TRUE(Mount().ok());
  Ops ops(mount());
  ops.WriteFile("crowded", "many attributes");
  ASSERT_TRUE(MirrorCaughtUp(std::chrono::seconds(20)));
  {
    const int fd = open((mirror() + "/crowded").c_str(), O_RDONLY);
    ASSERT_GE(fd, 0);
    int error;
    ASSERT_LT(FillXattrs(fd, {"user.outside", "", ""}, &error), kManyXattrs);
    close(fd);
  }
  ops.SetXattr("crowded", "user.attribute", std::string(200, 'v'));
  ASSERT_EQ(ops.failures(), 0);
  // Other files, and a barrier of the whole mount, are not held up.
  ops.WriteFile("other", "goes on");
  ASSERT_TRUE(MirrorCaughtUp(std::chrono::seconds(20)));
  EXPECT_EQ(ReadWhole(mirror() + "/other"), "goes on");
  // The file the mirror could not take: fsync says so.
  ExpectRefused(mount(), "crowded");
  EXPECT_TRUE(absl::StrContains(ReadWhole(fs().log_path()),
                                "cannot store xattr"))
      << fs().Log();
  ASSERT_TRUE(CleanExit(Unmount()));
}

// Sets or clears the immutable flag of `path` (ext4, as root).
bool SetImmutable(const std::string& path, bool on) {
  const int fd = open(path.c_str(), O_RDONLY);
  if (fd < 0) return false;
  int flags = 0;
  bool ok = ioctl(fd, FS_IOC_GETFLAGS, &flags) == 0;
  flags = on ? (flags | FS_IMMUTABLE_FL) : (flags & ~FS_IMMUTABLE_FL);
  ok = ok && ioctl(fd, FS_IOC_SETFLAGS, &flags) == 0;
  close(fd);
  return ok;
}

// A file made immutable in the mirror behind fsd's back refuses every
// change (EPERM) however long one waits: that file's changes are refused,
// the rest of the queue goes on.
TEST_F(StuckMirrorTest, AFileTheMirrorWillNotChangeHoldsNothingElse) {
  ASSERT_TRUE(Mount().ok());
  Ops ops(mount());
  ops.WriteFile("locked", "before");
  ASSERT_TRUE(MirrorCaughtUp(std::chrono::seconds(20)));
  const std::string locked = mirror() + "/locked";
  if (!SetImmutable(locked, true)) {
    GTEST_SKIP() << "no immutable flag here: " << strerror(errno);
  }
  absl::Cleanup mutable_again = [&] { SetImmutable(locked, false); };
  ops.WriteFile("locked", "after, and longer");
  ASSERT_EQ(chmod((mount() + "/locked").c_str(), 0600), 0);
  ops.WriteFile("other", "goes on");
  ASSERT_EQ(ops.failures(), 0);
  ASSERT_TRUE(MirrorCaughtUp(std::chrono::seconds(20)));
  EXPECT_EQ(ReadWhole(mirror() + "/other"), "goes on");
  EXPECT_EQ(ReadWhole(locked), "before");
  ExpectRefused(mount(), "locked");
  ASSERT_TRUE(CleanExit(Unmount()));
}

TEST_F(StuckMirrorTest, AnFsyncWaitingForAStoppedAgentEndsOnASignal) {
  const std::string socket = TempPath("agent.sock");
  ASSERT_TRUE(StartAgent(socket).ok());
  ASSERT_TRUE(MountWithSocket(socket).ok());
  ASSERT_TRUE(MirrorCaughtUp());
  ListedRoot();  // creating in it needs no listing from the stopped agent
  const pid_t agent_pid = agent()->pid();
  ASSERT_EQ(kill(agent_pid, SIGSTOP), 0);
  absl::Cleanup resume = [agent_pid] { kill(agent_pid, SIGCONT); };

  int report[2];
  ASSERT_EQ(pipe2(report, O_CLOEXEC), 0);
  absl::Cleanup close_report = [&] {
    close(report[0]);
    close(report[1]);
  };
  // A signal the program handles: fsync returns EINTR.
  const pid_t interrupted = StartFsyncChild(mount() + "/a", report[1]);
  ASSERT_GT(interrupted, 0);
  absl::Cleanup reap = [interrupted] {
    kill(interrupted, SIGKILL);
    waitpid(interrupted, nullptr, 0);
  };
  ASSERT_TRUE(WaitsInFuse(interrupted));
  ASSERT_EQ(kill(interrupted, SIGUSR1), 0);
  int error = -1;
  ASSERT_TRUE(WaitFor(
      [&] {
        struct pollfd p = {report[0], POLLIN, 0};
        return poll(&p, 1, 0) == 1;
      },
      std::chrono::seconds(10)))
      << "fsync did not return after SIGUSR1 (state "
      << ProcessState(interrupted) << ")";
  ASSERT_EQ(read(report[0], &error, sizeof(error)),
            static_cast<ssize_t>(sizeof(error)));
  EXPECT_EQ(error, EINTR);

  // SIGKILL: the program goes, however long the mirror takes.
  const pid_t killed = StartFsyncChild(mount() + "/b", report[1]);
  ASSERT_GT(killed, 0);
  ASSERT_TRUE(WaitsInFuse(killed));
  ASSERT_EQ(kill(killed, SIGKILL), 0);
  int status = 0;
  pid_t reaped = 0;
  ASSERT_TRUE(WaitFor(
      [&] {
        reaped = waitpid(killed, &status, WNOHANG);
        return reaped == killed;
      },
      std::chrono::seconds(10)))
      << "a program killed in fsync did not exit (state "
      << ProcessState(killed) << ")";
  EXPECT_TRUE(WIFSIGNALED(status));

  // The agent back: everything reaches the mirror.
  ASSERT_EQ(kill(agent_pid, SIGCONT), 0);
  ASSERT_TRUE(MirrorCaughtUp());
  EXPECT_EQ(ReadWhole(mirror() + "/a"), "waiting for a mirror");
  ASSERT_TRUE(CleanExit(Unmount()));
}

TEST_F(StuckMirrorTest, ASecondSigtermEndsABusyMountWhoseFlushIsStuck) {
  const std::string socket = TempPath("agent.sock");
  ASSERT_TRUE(StartAgent(socket).ok());
  ASSERT_TRUE(
      MountWithSocket(socket, {"--cache-size", "64", "--cache-max-write-size",
                               "4"})
          .ok());
  ASSERT_TRUE(MirrorCaughtUp());
  ListedRoot();  // creating in it needs no listing from the stopped agent
  const pid_t agent_pid = agent()->pid();
  ASSERT_EQ(kill(agent_pid, SIGSTOP), 0);
  absl::Cleanup resume = [agent_pid] { kill(agent_pid, SIGCONT); };

  // A writer of far more than the dirty limit keeps the mount busy and
  // ends up waiting for the stopped mirror.
  const std::string path = mount() + "/stream";
  const pid_t writer = fork();
  ASSERT_GE(writer, 0);
  if (writer == 0) {
    const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) _exit(2);
    static char block[1 << 20];
    for (int i = 0; i < 256; ++i) {
      if (write(fd, block, sizeof(block)) < 0) _exit(3);
    }
    _exit(0);
  }
  absl::Cleanup reap = [writer] {
    kill(writer, SIGKILL);
    waitpid(writer, nullptr, 0);
  };
  ASSERT_TRUE(WaitFor(
      [&] {
        return DaemonStatus(mount())["dirty_waits"].value_or(0) > 0 ||
               absl::StrContains(WaitChannel(writer), "balance_dirty");
      },
      std::chrono::seconds(20)));

  ASSERT_EQ(kill(fs().pid(), SIGTERM), 0);
  ASSERT_TRUE(WaitFor(
      [&] {
        return absl::StrContains(ReadWhole(fs().log_path()), "is busy");
      },
      std::chrono::seconds(10)))
      << fs().Log();
  std::optional<ExitInfo> exit =
      fs().SignalAndWait(SIGTERM, std::chrono::seconds(45));
  ASSERT_TRUE(exit.has_value())
      << "mem-fuse did not exit after a second SIGTERM:\n"
      << fs().Log();
  EXPECT_FALSE(exit->exited && exit->code_or_signal == 0) << ToString(*exit);
  EXPECT_TRUE(absl::StrContains(ReadWhole(fs().log_path()), "NOT mirrored"))
      << fs().Log();
}

}  // namespace
}  // namespace memfuse::testing
