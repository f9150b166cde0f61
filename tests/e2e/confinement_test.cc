// The mirror agent holds only what its mirror needs, however it was
// started: read off /proc/PID/status of the agent fsd spawned and of one
// started by hand, then the kept capabilities put to work (owners, device
// nodes, set-id bits) through the mount.
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <string>

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

void ExpectConfined(pid_t pid, const std::string& caps) {
  std::map<std::string, std::string> status = ProcStatus(pid);
  ASSERT_FALSE(status.empty()) << "no /proc/" << pid << "/status";
  EXPECT_EQ(status["CapEff"], caps);
  EXPECT_EQ(status["CapPrm"], caps);
  EXPECT_EQ(status["CapBnd"], caps);
  EXPECT_EQ(status["CapInh"], kNoCaps);
  EXPECT_EQ(status["CapAmb"], kNoCaps);
  EXPECT_EQ(status["NoNewPrivs"], "1");
}

class ConfinementTest : public E2eTest {};

TEST_F(ConfinementTest, TheSpawnedLocalAgentKeepsOnlyTheMirrorsCapabilities) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root";
  ASSERT_TRUE(Mount().ok());
  const pid_t agent = WaitForMirrordChild();
  ASSERT_NE(agent, 0);
  ExpectConfined(agent, kLocalMirrorCaps);

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
  ExpectConfined(agent()->pid(), kNoCaps);
  ASSERT_TRUE(MountWithSocket(socket).ok());
  { std::ofstream(mount() + "/f") << "over http"; }
  ASSERT_TRUE(MirrorCaughtUp());
  ASSERT_TRUE(CleanExit(Unmount()));
  server.Stop();
}

}  // namespace
}  // namespace memfuse::testing
