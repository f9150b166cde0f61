// The mirror agent holds only what its mirror needs, however it was
// started: read off /proc/PID/status of the agent fsd spawned and of one
// started by hand, then the kept capabilities put to work (owners, device
// nodes, set-id bits) through the mount.
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <map>
#include <vector>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_fixture.h"
#include "tests/testing/fake_invariant_server.h"

namespace memfuse::testing {
namespace {

// "Name:\tvalue" lines of /proc/PID/status.
std::map<std::string, std::string> ProcStatus(pid_t pid) {
  std::map<std::string, std::string> fields;
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    std::pair<std::string, std::string> kv =
        absl::StrSplit(line, absl::MaxSplits(':', 1));
    fields[kv.first] = std::string(absl::StripAsciiWhitespace(kv.second));
  }
  return fields;
}

// CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_FSETID, CAP_MKNOD.
constexpr char kLocalMirrorCaps[] = "000000000800001b";
constexpr char kNoCaps[] = "0000000000000000";
constexpr char kFsdCaps[] = "00000000082401fb";

// Every thread of the agent: capabilities, no_new_privs, a seccomp
// filter (mode 2), and the user (for an HTTP mirror, not root).
void ExpectConfined(pid_t pid, const std::string& caps, bool root) {
  const std::string tasks = "/proc/" + std::to_string(pid) + "/task";
  // An agent's socket exists before it confines itself and starts its
  // threads: wait for both.
  WaitFor(
      [&] {
        int n = 0;
        for ([[maybe_unused]] const auto& t :
             std::filesystem::directory_iterator(tasks)) {
          ++n;
        }
        return n > 1 && ProcStatus(pid)["Seccomp"] == "2";
      },
      std::chrono::seconds(10));
  int threads = 0;
  for (const auto& task : std::filesystem::directory_iterator(tasks)) {
    const pid_t tid = std::stoi(task.path().filename());
    std::map<std::string, std::string> status = ProcStatus(tid);
    if (status.empty()) continue;  // a thread that just ended
    ++threads;
    SCOPED_TRACE(absl::StrCat("thread ", tid, " (", status["Name"], ")"));
    EXPECT_EQ(status["CapEff"], caps);
    EXPECT_EQ(status["CapPrm"], caps);
    EXPECT_EQ(status["CapBnd"], caps);
    EXPECT_EQ(status["CapInh"], kNoCaps);
    EXPECT_EQ(status["CapAmb"], kNoCaps);
    EXPECT_EQ(status["NoNewPrivs"], "1");
    EXPECT_EQ(status["Seccomp"], "2");
    const std::vector<std::string> uids = absl::StrSplit(
        status["Uid"], absl::ByAnyChar(" \t"), absl::SkipEmpty());
    ASSERT_EQ(uids.size(), 4u) << status["Uid"];
    for (const std::string& uid : uids) {
      if (root) {
        EXPECT_EQ(uid, "0");
      } else {
        EXPECT_NE(uid, "0") << "an HTTP agent runs as an unprivileged user";
      }
    }
  }
  EXPECT_GT(threads, 1) << "the agent's threads were not all looked at";
}

// The agent's mount namespace is its own, and holds none of the host's
// mounts (a copy of the FUSE mount would keep it alive after umount).
void ExpectOwnMountNamespace(pid_t pid, const std::string& mount_point) {
  struct stat mine, its;
  ASSERT_EQ(stat("/proc/self/ns/mnt", &mine), 0);
  ASSERT_EQ(stat(("/proc/" + std::to_string(pid) + "/ns/mnt").c_str(), &its),
            0);
  EXPECT_NE(mine.st_ino, its.st_ino);
  std::ifstream in("/proc/" + std::to_string(pid) + "/mountinfo");
  std::string line;
  int mounts = 0;
  while (std::getline(in, line)) {
    ++mounts;
    EXPECT_FALSE(absl::StrContains(line, mount_point)) << line;
    EXPECT_FALSE(absl::StrContains(line, " fuse")) << line;
  }
  EXPECT_GT(mounts, 0);
  EXPECT_LE(mounts, 10) << "more of the host's mounts than it needs";
}

class ConfinementTest : public E2eTest {};

TEST_F(ConfinementTest, TheSpawnedLocalAgentKeepsOnlyTheMirrorsCapabilities) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root";
  ASSERT_TRUE(Mount().ok());
  const pid_t agent = WaitForMirrordChild();
  ASSERT_NE(agent, 0);
  ExpectConfined(agent, kLocalMirrorCaps, /*root=*/true);
  ExpectOwnMountNamespace(agent, mount());

  // fsd itself keeps what mounting, unmounting and starting its agent take
  // (README, "Security"): the agent's five, SYS_ADMIN, SYS_CHROOT, SETUID,
  // SETGID, SETPCAP, KILL.
  std::map<std::string, std::string> fsd = ProcStatus(fs().pid());
  EXPECT_EQ(fsd["CapEff"], kFsdCaps);
  EXPECT_EQ(fsd["CapBnd"], kFsdCaps);
  EXPECT_EQ(fsd["CapAmb"], kNoCaps);

  // What the kept capabilities are for still reaches the mirror.
  const std::string file = mount() + "/owned";
  { std::ofstream(file) << "data"; }
  ASSERT_EQ(chown(file.c_str(), 1234, 5678), 0);
  ASSERT_EQ(chmod(file.c_str(), 04755), 0);
  { std::ofstream(file, std::ios::app) << " and more"; }
  ASSERT_EQ(chmod(file.c_str(), 04755), 0);
  ASSERT_EQ(mknod((mount() + "/tty").c_str(), S_IFCHR | 0600, makedev(5, 0)),
            0);
  ASSERT_TRUE(MirrorCaughtUp());
  struct stat st;
  ASSERT_EQ(stat((mirror() + "/owned").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 1234u);
  EXPECT_EQ(st.st_gid, 5678u);
  EXPECT_EQ(st.st_mode & 07777, 04755u);
  EXPECT_EQ(st.st_size, 13);
  ASSERT_EQ(lstat((mirror() + "/tty").c_str(), &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode));
  EXPECT_EQ(st.st_rdev, makedev(5, 0));
  ASSERT_TRUE(CleanExit(Unmount()));
}

TEST_F(ConfinementTest, AnHttpAgentStartedByHandKeepsNoCapability) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root";
  FakeInvariantServer server;
  ASSERT_TRUE(server.Start().ok());
  const std::string socket = TempPath("agent.sock");
  ASSERT_TRUE(StartAgentFor(server.base_url(), socket).ok());
  ExpectConfined(agent()->pid(), kNoCaps, /*root=*/false);
  ASSERT_TRUE(MountWithSocket(socket).ok());
  { std::ofstream(mount() + "/f") << "over http"; }
  ASSERT_TRUE(MirrorCaughtUp());
  ASSERT_TRUE(CleanExit(Unmount()));
  server.Stop();
}

TEST_F(ConfinementTest, TheSpawnedHttpAgentRunsAsNobodyWithoutCapabilities) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root";
  FakeInvariantServer server;
  ASSERT_TRUE(server.Start().ok());
  ASSERT_TRUE(MountMirror(server.base_url()).ok());
  const pid_t agent = WaitForMirrordChild();
  ASSERT_NE(agent, 0);
  ExpectConfined(agent, kNoCaps, /*root=*/false);
  ExpectOwnMountNamespace(agent, mount());
  // Still the owner the mount's user expects (the server keeps none).
  struct stat st;
  ASSERT_EQ(stat(mount().c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 0u);
  { std::ofstream(mount() + "/f") << "over http"; }
  ASSERT_TRUE(MirrorCaughtUp());
  ASSERT_TRUE(CleanExit(Unmount()));
  server.Stop();
}

// A respawned agent is born while the mount exists: it must not hold a
// copy of it, or unmounting would never end the mount (fsd would wait for
// a FUSE connection that a namespace elsewhere keeps open).
TEST_F(ConfinementTest, ARespawnedAgentDoesNotHoldTheMountBusy) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root";
  ASSERT_TRUE(Mount().ok());
  const pid_t first = WaitForMirrordChild();
  ASSERT_NE(first, 0);
  { std::ofstream(mount() + "/before") << "1"; }
  ASSERT_EQ(kill(first, SIGKILL), 0);
  const pid_t second = WaitForMirrordChild(first);
  ASSERT_NE(second, 0);
  // Once it has confined itself (it answers fsd only after).
  { std::ofstream(mount() + "/after") << "2"; }
  ASSERT_TRUE(MirrorCaughtUp());
  ExpectOwnMountNamespace(second, mount());
  ASSERT_TRUE(CleanExit(Unmount()));
}

}  // namespace
}  // namespace memfuse::testing
