// The agent's confinement put to the test from inside: a child process
// confines itself exactly as mem-fuse-mirrord does (mirrord::Confine) and
// then tries to get out. This test code is the "compromised agent"; it is
// compiled into the test binary only.
#include "mirrord/confine.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <algorithm>
#include <functional>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/unique_fd.h"
#include "gtest/gtest.h"
#include "mirrord/syscall_allowlist.h"

namespace memfuse::mirrord {
namespace {

using common::UniqueFd;

// Runs `body` in a child that has confined itself with `plan`; the child's
// exit code is what `body` returns (errno values, 0 for "as expected"), or
// 100 + the step that failed to confine.
struct Outcome {
  bool exited = false;
  int code = -1;
  int signal = 0;
};

Outcome RunConfined(const ConfinePlan& plan, const std::function<int()>& body) {
  fflush(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    absl::StatusOr<ConfineReport> report = Confine(plan);
    if (!report.ok()) {
      // write(2) and _exit are on every allow-list.
      const std::string line = absl::StrCat(report.status().ToString(), "\n");
      (void)!write(2, line.data(), line.size());
      _exit(100);
    }
    _exit(body());
  }
  Outcome outcome;
  int status = 0;
  if (pid < 0 || waitpid(pid, &status, 0) != pid) return outcome;
  outcome.exited = WIFEXITED(status);
  if (outcome.exited) outcome.code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) outcome.signal = WTERMSIG(status);
  return outcome;
}

bool LandlockAvailable() {
  return syscall(SYS_landlock_create_ruleset, nullptr, 0, 1U << 0) > 0;
}

class ConfineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/memfuse-confine-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    base_ = dir;
    mirror_ = base_ + "/mirror";
    ASSERT_EQ(mkdir(mirror_.c_str(), 0755), 0);
    outside_ = base_ + "/outside";
    UniqueFd f(open(outside_.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644));
    ASSERT_TRUE(f.valid());
    root_ = UniqueFd(open(mirror_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    ASSERT_TRUE(root_.valid());
  }
  void TearDown() override {
    root_.Reset();
    unlinkat(AT_FDCWD, (mirror_ + "/inside").c_str(), 0);
    rmdir(mirror_.c_str());
    unlink(outside_.c_str());
    rmdir(base_.c_str());
  }

  // Landlock and seccomp on their own: the mount namespace (tested below)
  // would hide the paths outside before Landlock could refuse them.
  ConfinePlan LocalPlan() const {
    ConfinePlan plan;
    plan.own_mount_namespace = false;
    plan.kind = MirrorKind::kLocal;
    plan.mirror_root_fd = root_.get();
    plan.keep_capabilities = MirrorCapabilities(true);
    return plan;
  }

  std::string base_, mirror_, outside_;
  UniqueFd root_;
};

TEST_F(ConfineTest, ALocalAgentMayOpenFilesInTheMirrorAndNowhereElse) {
  if (!LandlockAvailable()) GTEST_SKIP() << "no Landlock in this kernel";
  const std::string outside = outside_;
  const int root = root_.get();
  Outcome outcome = RunConfined(LocalPlan(), [&] {
    // What the backend does: create beneath the root.
    const int inside = openat(root, "inside", O_CREAT | O_RDWR | O_CLOEXEC,
                              0644);
    if (inside < 0) return 1;
    close(inside);
    // The escape: a file outside the mirror, by an absolute path and
    // relative to the root.
    if (open(outside.c_str(), O_RDONLY | O_CLOEXEC) >= 0) return 2;
    if (errno != EACCES) return 3;
    if (openat(root, "../outside", O_RDONLY | O_CLOEXEC) >= 0) return 4;
    if (errno != EACCES) return 5;
    if (open("/etc/passwd", O_RDONLY | O_CLOEXEC) >= 0) return 6;
    return 0;
  });
  EXPECT_TRUE(outcome.exited) << "killed by signal " << outcome.signal;
  EXPECT_EQ(outcome.code, 0);
  struct stat st;
  EXPECT_EQ(stat((mirror_ + "/inside").c_str(), &st), 0);
}

TEST_F(ConfineTest, AnHttpAgentMayOpenNoFileAndConnectOnlyToItsServer) {
  if (!LandlockAvailable()) GTEST_SKIP() << "no Landlock in this kernel";
  ConfinePlan plan;
  plan.own_mount_namespace = false;
  plan.kind = MirrorKind::kHttp;
  plan.tcp_port = 9;  // the only port it may connect to
  const std::string mirror = mirror_;
  const bool net_rules =
      syscall(SYS_landlock_create_ruleset, nullptr, 0, 1U << 0) >= 4;
  Outcome outcome = RunConfined(plan, [&] {
    if (open(mirror.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC) >= 0) {
      return 1;
    }
    if (errno != EACCES) return 2;
    if (open("/etc/hostname", O_RDONLY | O_CLOEXEC) >= 0) return 3;
    // Another port on this machine: refused by Landlock (ABI 4 and later)
    // before any packet leaves.
    const int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) return 4;
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(22);
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (net_rules &&
        (connect(s, reinterpret_cast<sockaddr*>(&to), sizeof(to)) == 0 ||
         errno != EACCES)) {
      return 5;
    }
    return 0;
  });
  EXPECT_TRUE(outcome.exited) << "killed by signal " << outcome.signal;
  EXPECT_EQ(outcome.code, 0);
}

TEST_F(ConfineTest, ACallOutsideTheAllowListKillsTheAgent) {
  Outcome outcome = RunConfined(LocalPlan(), [] {
    // ptrace is on no agent's list.
    syscall(SYS_ptrace, 0 /* PTRACE_TRACEME */, 0, nullptr, nullptr);
    return 0;
  });
  EXPECT_FALSE(outcome.exited) << "exited with " << outcome.code;
  EXPECT_EQ(outcome.signal, SIGSYS);

  // execve too: a confined agent never runs another program.
  outcome = RunConfined(LocalPlan(), [] {
    char* const argv[] = {const_cast<char*>("/bin/true"), nullptr};
    execv("/bin/true", argv);
    return 0;
  });
  EXPECT_EQ(outcome.signal, SIGSYS);
}

TEST_F(ConfineTest, AUnixStreamSocketCannotBeMade) {
  // Root's other daemons listen on Unix stream sockets (docker, dbus);
  // a datagram socket for sd_notify is all an agent may open.
  Outcome outcome = RunConfined(LocalPlan(), [] {
    const int dgram = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (dgram < 0) return 1;
    close(dgram);
    socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    return 0;
  });
  EXPECT_EQ(outcome.signal, SIGSYS);
}

TEST_F(ConfineTest, RootsAgentSeesOnlyARootOfItsOwn) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root (CAP_SYS_ADMIN)";
  ConfinePlan plan = LocalPlan();
  plan.own_mount_namespace = true;
  plan.read_only_paths = {"/etc/hostname"};
  const std::string outside = outside_;
  const int root = root_.get();
  Outcome outcome = RunConfined(plan, [&] {
    struct stat st;
    // The host's tree is gone, and with it every mount it holds.
    if (stat(outside.c_str(), &st) == 0 || errno != ENOENT) return 1;
    if (stat("/etc/passwd", &st) == 0 || errno != ENOENT) return 2;
    if (stat("/etc/hostname", &st) != 0) return 3;  // what it may read
    // A private /tmp, and a read-only rest.
    if (stat("/tmp", &st) != 0 || !S_ISDIR(st.st_mode)) return 4;
    if (mkdirat(AT_FDCWD, "/new", 0755) == 0 || errno != EROFS) return 5;
    // The mirror, through the descriptor opened before.
    if (fstatat(root, "inside", &st, 0) == 0) return 6;  // not yet made
    const int inside = openat(root, "inside", O_CREAT | O_RDWR | O_CLOEXEC,
                              0644);
    if (inside < 0) return 7;
    close(inside);
    return 0;
  });
  EXPECT_TRUE(outcome.exited) << "killed by signal " << outcome.signal;
  EXPECT_EQ(outcome.code, 0);
}

TEST(SyscallAllowlistTest, TheListsDifferWhereTheMirrorsDo) {
  const std::vector<std::string_view> local = AllowedSyscalls(MirrorKind::kLocal);
  const std::vector<std::string_view> http = AllowedSyscalls(MirrorKind::kHttp);
  auto has = [](const std::vector<std::string_view>& list,
                std::string_view name) {
    return std::find(list.begin(), list.end(), name) != list.end();
  };
  EXPECT_TRUE(has(local, "openat2"));
  EXPECT_TRUE(has(local, "pwrite64"));
  EXPECT_FALSE(has(http, "pwrite64"));
  EXPECT_FALSE(has(http, "mknodat"));
  EXPECT_TRUE(has(http, "connect"));
  EXPECT_FALSE(has(local, "connect"));
  for (std::string_view never : {"execve", "ptrace", "mount", "bpf", "kexec_load",
                                 "init_module", "setuid", "unshare"}) {
    EXPECT_FALSE(has(local, never)) << never;
    EXPECT_FALSE(has(http, never)) << never;
  }
}

}  // namespace
}  // namespace memfuse::mirrord
