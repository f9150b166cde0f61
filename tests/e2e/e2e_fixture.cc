#include "tests/e2e/e2e_fixture.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <iostream>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "tests/testing/posix_compare.h"

namespace memfuse::testing {

DaemonStatus::DaemonStatus(const std::string& mount) {
  char buf[8192];
  const ssize_t n =
      getxattr(mount.c_str(), "user.memfuse.status", buf, sizeof(buf));
  if (n < 0) {
    text_ = absl::StrCat("(getxattr failed: ", ErrnoName(errno), ")");
    return;
  }
  text_.assign(buf, n);
  for (absl::string_view line :
       absl::StrSplit(text_, '\n', absl::SkipEmpty())) {
    std::pair<std::string, std::string> kv = absl::StrSplit(line, ' ');
    uint64_t value = 0;
    if (absl::SimpleAtoi(kv.second, &value)) values_[kv.first] = value;
  }
}
namespace {

// Whether a socket is listening on `path`, from /proc/net/unix: a socket
// file left behind by a killed agent is not listed there.
bool SocketListening(const std::string& path) {
  std::ifstream in("/proc/net/unix");
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    // Num RefCount Protocol Flags Type St Inode Path
    std::vector<absl::string_view> fields =
        absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (fields.size() < 8 || fields[7] != path) continue;
    unsigned long flags = strtoul(std::string(fields[3]).c_str(), nullptr, 16);
    if (flags & 0x10000) return true;  // __SO_ACCEPTCON: listening
  }
  return false;
}

std::string Tail(const std::string& log, size_t max) {
  return log.size() > max ? "..." + log.substr(log.size() - max) : log;
}

}  // namespace

TreeCompareOptions MirrorCompareOptions() {
  TreeCompareOptions o;
  o.compare_file_mtime = true;
  o.compare_symlink_mtime = false;
  o.compare_dir_mtime = false;
  return o;
}

TreeCompareOptions ExactCompareOptions() {
  TreeCompareOptions o;
  o.compare_file_mtime = true;
  o.compare_symlink_mtime = true;
  o.compare_dir_mtime = true;
  return o;
}

TreeCompareOptions ReferenceCompareOptions() {
  TreeCompareOptions o;
  o.compare_file_mtime = false;
  o.compare_symlink_mtime = false;
  o.compare_dir_mtime = false;
  o.compare_root = false;
  return o;
}

::testing::AssertionResult TreesEqual(const std::string& a,
                                      const std::string& b,
                                      const TreeCompareOptions& options) {
  std::vector<std::string> diffs = CompareTrees(a, b, options);
  if (diffs.empty()) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "trees differ (a = " << a << ", b = " << b
         << "): " << FormatDifferences(diffs, 20);
}

absl::Status CopyTree(const std::string& from, const std::string& to) {
  absl::StatusOr<CommandResult> r =
      RunCommand({"cp", "-a", "--no-target-directory", from, to},
                 std::chrono::seconds(60));
  if (!r.ok()) return r.status();
  if (!r->exit.exited || r->exit.code_or_signal != 0) {
    return absl::InternalError(absl::StrCat(
        "cp -a ", from, " ", to, ": ", ToString(r->exit), ": ", r->output));
  }
  return absl::OkStatus();
}

// --- Worker ---

Worker::Worker(std::function<void(const std::atomic<bool>& stop)> fn,
               std::function<void()> abort)
    : state_(std::make_shared<State>()), abort_(std::move(abort)) {
  thread_ = std::thread([this, fn = std::move(fn), state = state_] {
    fn(stop_);
    state->done = true;
  });
}

Worker::~Worker() {
  if (!thread_.joinable()) return;
  stop_ = true;
  Join("a workload left running at the end of the test", kWorkloadTimeout);
}

bool Worker::Join(absl::string_view what, std::chrono::milliseconds timeout) {
  if (!thread_.joinable()) return state_->done;
  bool in_time = WaitFor([&] { return state_->done.load(); }, timeout);
  if (!in_time) {
    ADD_FAILURE() << what << " did not finish within " << timeout.count()
                  << " ms: aborting the mount so its blocked calls return";
    abort_();
  }
  thread_.join();
  return in_time;
}

// --- E2eTest ---

void E2eTest::SetUp() {
  MEMFUSE_REQUIRE_FUSE();
  absl::StatusOr<TempDir> base = TempDir::Create("memfuse-e2e");
  ASSERT_TRUE(base.ok()) << base.status();
  base_.emplace(std::move(*base));
  mirror_ = absl::StrCat(base_->path(), "/mirror");
}

std::string E2eTest::TempPath(absl::string_view name) const {
  return absl::StrCat(base_->path(), "/", name);
}

void E2eTest::NoteAgents() {
  if (fs_ == nullptr || fs_->WaitForExit(std::chrono::milliseconds(0))) return;
  for (pid_t pid : ChildPids(fs_->pid(), kMirrordComm)) {
    if (std::find(spawned_agents_.begin(), spawned_agents_.end(), pid) ==
        spawned_agents_.end()) {
      spawned_agents_.push_back(pid);
    }
  }
}

void E2eTest::DumpLogs() {
  if (fs_ != nullptr) {
    std::cerr << "mem-fuse output (" << fs_->path() << "):\n"
              << Tail(fs_->Log(), 8192) << "\n";
  }
  for (const auto& a : dead_agents_) {
    std::cerr << "mem-fuse-mirrord (pid " << a->pid() << ") output:\n"
              << Tail(a->Log(), 4096) << "\n";
  }
  if (agent_ != nullptr) {
    std::cerr << "mem-fuse-mirrord (pid " << agent_->pid() << ") output:\n"
              << Tail(agent_->Log(), 4096) << "\n";
  }
}

void E2eTest::TearDown() {
  // A call missing from the agent's seccomp allow-list is a failure with
  // the call's name, whatever the test was looking at.
  bool filtered = fs_ != nullptr &&
                  absl::StrContains(fs_->Log(), "killed by its seccomp filter");
  std::vector<ChildProcess*> agents = {agent_.get()};
  for (const auto& a : dead_agents_) agents.push_back(a.get());
  for (ChildProcess* a : agents) {
    if (a == nullptr) continue;
    std::optional<ExitInfo> exit = a->WaitForExit(std::chrono::milliseconds(0));
    filtered |= exit.has_value() && !exit->exited &&
                exit->code_or_signal == SIGSYS;
  }
  if (filtered) {
    ADD_FAILURE() << "mem-fuse-mirrord was killed by its seccomp filter; "
                     "the kernel log says:\n"
                  << SeccompKills();
  }
  if (HasFailure()) DumpLogs();
  NoteAgents();
  // Unmount and stop the daemon first: it drains into the agent.
  fs_.reset();
  agent_.reset();
  dead_agents_.clear();
  for (pid_t pid : spawned_agents_) {
    if (!WaitFor([&] { return !ProcessAlive(pid, kMirrordComm); },
                 std::chrono::seconds(10))) {
      std::cerr << "warning: mem-fuse-mirrord pid " << pid
                << " outlived mem-fuse by 10 s; sending SIGKILL\n";
      kill(pid, SIGKILL);
    }
  }
  spawned_agents_.clear();
  base_.reset();
  if (faulty_) {
    unsetenv(kWriteDelayVar);
    unsetenv(kHttpTimeoutVar);
    faulty_ = false;
  }
}

void E2eTest::InjectAgentFaults(const AgentFaults& faults) {
  faulty_ = true;
  // Read by the faulty agent when it starts; fsd passes its environment on.
  setenv(kWriteDelayVar,
         absl::StrCat(absl::ToInt64Milliseconds(faults.write_delay)).c_str(),
         1);
  setenv(kHttpTimeoutVar,
         absl::StrCat(absl::ToInt64Milliseconds(faults.http_timeout)).c_str(),
         1);
}

absl::Status E2eTest::Mount(const std::vector<std::string>& extra) {
  return MountMirror(mirror_, extra);
}

absl::Status E2eTest::MountMirror(const std::string& spec,
                                  const std::vector<std::string>& extra) {
  std::vector<std::string> args = {"--mirror", spec};
  args.insert(args.end(), extra.begin(), extra.end());
  NoteAgents();
  fs_.reset();
  absl::StatusOr<std::unique_ptr<MountedFs>> fs = MountedFs::Start(
      args, faulty_ ? FaultyMemFuseBinary() : MemFuseBinary());
  if (!fs.ok()) return fs.status();
  fs_ = std::move(*fs);
  NoteAgents();
  return absl::OkStatus();
}

absl::Status E2eTest::MountWithSocket(const std::string& socket,
                                      const std::vector<std::string>& extra) {
  std::vector<std::string> args = {"--mirror-socket", socket};
  args.insert(args.end(), extra.begin(), extra.end());
  fs_.reset();
  absl::StatusOr<std::unique_ptr<MountedFs>> fs = MountedFs::Start(
      args, faulty_ ? FaultyMemFuseBinary() : MemFuseBinary());
  if (!fs.ok()) return fs.status();
  fs_ = std::move(*fs);
  return absl::OkStatus();
}

absl::Status E2eTest::StartAgent(const std::string& socket) {
  return StartAgentFor(mirror_, socket);
}

absl::Status E2eTest::StartAgentFor(const std::string& spec,
                                    const std::string& socket) {
  if (agent_ != nullptr) {
    if (!agent_->WaitForExit(std::chrono::milliseconds(0))) {
      return absl::FailedPreconditionError(
          "StartAgent: the previous agent is still running");
    }
    dead_agents_.push_back(std::move(agent_));
  }
  std::string log = TempPath(absl::StrCat("mirrord-", ++agent_starts_, ".log"));
  absl::StatusOr<std::unique_ptr<ChildProcess>> agent = ChildProcess::Start(
      {faulty_ ? FaultyMirrordBinary() : MirrordBinary(), "--mirror", spec,
       "--listen", socket},
      log);
  if (!agent.ok()) return agent.status();
  agent_ = std::move(*agent);
  bool up = WaitFor(
      [&] {
        return SocketListening(socket) ||
               agent_->WaitForExit(std::chrono::milliseconds(0)).has_value();
      },
      kRespawnTimeout);
  if (std::optional<ExitInfo> exit =
          agent_->WaitForExit(std::chrono::milliseconds(0))) {
    return absl::FailedPreconditionError(
        absl::StrCat("mem-fuse-mirrord exited at start: ", ToString(*exit),
                     "\noutput:\n", agent_->Log()));
  }
  if (!up) {
    return absl::DeadlineExceededError(
        absl::StrCat("mem-fuse-mirrord did not listen on ", socket, " within ",
                     kRespawnTimeout.count(), " s\noutput:\n", agent_->Log()));
  }
  return absl::OkStatus();
}

absl::StatusOr<ExitInfo> E2eTest::Unmount() {
  NoteAgents();
  absl::StatusOr<ExitInfo> exit = fs_->UnmountAndWait(kDrainTimeout);
  if (!exit.ok()) {
    return absl::Status(
        exit.status().code(),
        absl::StrCat(exit.status().message(), "\nmem-fuse output:\n",
                     Tail(fs_->Log(), 8192)));
  }
  return exit;
}

::testing::AssertionResult E2eTest::CleanExit(
    const absl::StatusOr<ExitInfo>& exit) {
  if (!exit.ok()) return ::testing::AssertionFailure() << exit.status();
  if (!exit->exited || exit->code_or_signal != 0) {
    return ::testing::AssertionFailure()
           << "mem-fuse ended with " << ToString(*exit)
           << "\nmem-fuse output:\n"
           << Tail(fs_->Log(), 8192);
  }
  if (fs_->IsMounted()) {
    return ::testing::AssertionFailure()
           << fs_->path() << " is still mounted after mem-fuse exited";
  }
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult E2eTest::CleanExit(
    const std::optional<ExitInfo>& exit) {
  if (!exit) {
    return ::testing::AssertionFailure()
           << "mem-fuse did not exit in time\nmem-fuse output:\n"
           << Tail(fs_->Log(), 8192);
  }
  return CleanExit(absl::StatusOr<ExitInfo>(*exit));
}

pid_t E2eTest::WaitForMirrordChild(pid_t not_this,
                                   std::chrono::milliseconds timeout) {
  pid_t found = 0;
  WaitFor(
      [&] {
        std::vector<pid_t> pids = ChildPids(fs_->pid(), kMirrordComm);
        pids.erase(std::remove(pids.begin(), pids.end(), not_this), pids.end());
        if (pids.size() != 1) return false;
        found = pids[0];
        return true;
      },
      timeout);
  if (found != 0) NoteAgents();
  return found;
}

::testing::AssertionResult E2eTest::MirrorCaughtUp(
    std::chrono::milliseconds timeout) {
  // fsync runs on a helper thread that may outlive this call if the daemon
  // never answers (it returns once the mount is aborted in TearDown).
  struct Probe {
    std::atomic<bool> done{false};
    int err = 0;
  };
  auto probe = std::make_shared<Probe>();
  auto start = std::chrono::steady_clock::now();
  std::thread([probe, path = mount()] {
    int err = 0;
    int fd = open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
      err = errno;
    } else {
      if (fsync(fd) != 0) err = errno;
      close(fd);
    }
    probe->err = err;
    probe->done = true;
  }).detach();
  if (!WaitFor([&] { return probe->done.load(); }, timeout)) {
    return ::testing::AssertionFailure()
           << "fsync of the mount's root (the mirror barrier) did not return "
              "within "
           << timeout.count() << " ms\nmem-fuse output:\n"
           << Tail(fs_->Log(), 4096);
  }
  if (probe->err != 0) {
    return ::testing::AssertionFailure()
           << "fsync of the mount's root failed: " << ErrnoName(probe->err);
  }
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - start);
  return ::testing::AssertionSuccess()
         << "mirror caught up in " << ms.count() << " ms";
}

std::unique_ptr<Worker> E2eTest::StartWorker(
    std::function<void(const std::atomic<bool>& stop)> fn) {
  return std::make_unique<Worker>(std::move(fn), [this] { AbortMount(); });
}

bool E2eTest::RunBounded(absl::string_view what,
                         std::chrono::milliseconds timeout,
                         std::function<void()> fn) {
  Worker worker([fn = std::move(fn)](const std::atomic<bool>&) { fn(); },
                [this] { AbortMount(); });
  return worker.Join(what, timeout);
}

void E2eTest::AbortMount() {
  if (fs_ == nullptr) return;
  // A FUSE filesystem's umount_begin aborts the connection: every request
  // in flight fails with ENOTCONN. The unmount itself may fail (busy).
  umount2(fs_->path().c_str(), MNT_FORCE);
  NoteAgents();
  // Give the blocked calls a moment to return; if the daemon is wedged in
  // a way the abort does not reach, end it and its agents by PID.
  if (fs_->WaitForExit(std::chrono::seconds(5))) return;
  std::cerr << "warning: aborting: SIGKILL to mem-fuse pid " << fs_->pid()
            << "\n";
  for (pid_t pid : spawned_agents_) {
    if (ProcessAlive(pid, kMirrordComm)) kill(pid, SIGKILL);
  }
  fs_->SignalAndWait(SIGKILL, std::chrono::seconds(10));
}

}  // namespace memfuse::testing
