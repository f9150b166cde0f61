#include "tests/testing/mount_fixture.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <seccomp.h>
#include <sys/klog.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

#ifndef MEMFUSE_BIN_DIR
#error "MEMFUSE_BIN_DIR must name the directory holding the mem-fuse binary"
#endif

namespace memfuse::testing {
namespace {

constexpr size_t kMaxLog = 64 * 1024;

absl::Status ErrnoError(absl::string_view what, int err) {
  return absl::InternalError(absl::StrCat(what, ": ", ErrnoName(err)));
}

ExitInfo DecodeWaitStatus(int status) {
  if (WIFEXITED(status)) return ExitInfo{true, WEXITSTATUS(status)};
  return ExitInfo{false, WIFSIGNALED(status) ? WTERMSIG(status) : -1};
}

// Reaps `pid` if it has exited, polling for at most `timeout`.
std::optional<ExitInfo> PollWait(pid_t pid, std::chrono::milliseconds timeout) {
  std::optional<ExitInfo> info;
  WaitFor(
      [&] {
        int status = 0;
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) info = DecodeWaitStatus(status);
        // ECHILD: someone else reaped it; report it as gone.
        if (r < 0 && errno == ECHILD) info = ExitInfo{false, -1};
        return info.has_value();
      },
      timeout);
  return info;
}

// argv as the char* array execv wants; the strings must outlive it.
std::vector<char*> ExecArgv(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  for (const std::string& a : args)
    argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  return argv;
}

// Forks and execs `args` with stdout and stderr on `out_fd`, stdin on
// /dev/null. The child only makes async-signal-safe calls. If
// `die_with_parent`, the child gets SIGTERM when the test process dies, so a
// crashed test binary does not leave a daemon behind.
absl::StatusOr<pid_t> Spawn(const std::vector<std::string>& args, int out_fd,
                            bool die_with_parent) {
  std::vector<char*> argv = ExecArgv(args);
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) return ErrnoError("fork", errno);
  if (pid == 0) {
    if (die_with_parent) {
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (getppid() != parent) _exit(126);
    }
    int null_fd = open("/dev/null", O_RDONLY);
    if (null_fd >= 0) dup2(null_fd, STDIN_FILENO);
    dup2(out_fd, STDOUT_FILENO);
    dup2(out_fd, STDERR_FILENO);
    execvp(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

// The processes with a descriptor, working directory or root inside
// `mount_point`, as "pid (comm): path" lines: what makes an unmount fail
// with EBUSY.
std::string HoldersOf(const std::string& mount_point) {
  std::error_code ec;
  std::vector<std::string> lines;
  const std::string prefix = mount_point + "/";
  auto inside = [&](const std::string& target) {
    return target == mount_point || absl::StartsWith(target, prefix);
  };
  for (const auto& proc : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string pid = proc.path().filename();
    if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
    std::vector<std::string> links = {proc.path() / "cwd",
                                      proc.path() / "root"};
    for (const auto& fd :
         std::filesystem::directory_iterator(proc.path() / "fd", ec)) {
      links.push_back(fd.path());
    }
    for (const std::string& link : links) {
      std::error_code link_ec;
      std::string target = std::filesystem::read_symlink(link, link_ec);
      if (link_ec || !inside(target)) continue;
      std::string comm;
      std::ifstream(proc.path() / "comm") >> comm;
      lines.push_back(absl::StrCat(pid, " (", comm, "): ", target));
    }
  }
  if (lines.empty()) return "no process holds a file in it";
  return absl::StrCat("held by: ", absl::StrJoin(lines, "; "));
}

std::string ReadTail(int fd, size_t max) {
  off_t size = lseek(fd, 0, SEEK_END);
  if (size < 0) return "";
  off_t start = size > static_cast<off_t>(max) ? size - max : 0;
  std::string out(size - start, '\0');
  ssize_t n = pread(fd, out.data(), out.size(), start);
  out.resize(n > 0 ? n : 0);
  return out;
}

}  // namespace

std::string MemFuseBinary() { return MEMFUSE_BIN_DIR "/mem-fuse"; }

std::string MirrordBinary() { return MEMFUSE_BIN_DIR "/mem-fuse-mirrord"; }

std::string FaultyMemFuseBinary() { return MEMFUSE_BIN_DIR "/faulty/mem-fuse"; }

std::string FaultyMirrordBinary() {
  return MEMFUSE_BIN_DIR "/faulty/mem-fuse-mirrord";
}

bool FuseAvailable(std::string* why) {
  int fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    *why = absl::StrCat("open(/dev/fuse): ", ErrnoName(errno));
    return false;
  }
  close(fd);
  return true;
}

bool RunningUnderCi() {
  const char* ci = getenv("CI");
  return ci != nullptr && absl::string_view(ci) == "true";
}

std::string ToString(const ExitInfo& info) {
  return info.exited ? absl::StrCat("exit code ", info.code_or_signal)
                     : absl::StrCat("killed by signal ", info.code_or_signal);
}

bool IsMountPoint(const std::string& path) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    // Field 5 is the mount point; our temp paths need no unescaping.
    std::vector<absl::string_view> fields = absl::StrSplit(line, ' ');
    if (fields.size() > 4 && fields[4] == path) return true;
  }
  return false;
}

namespace {

// State and parent PID of a process, from /proc/PID/stat; false if gone.
bool ReadProcStat(pid_t pid, char* state, pid_t* ppid, std::string* comm) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string line;
  if (!std::getline(in, line)) return false;
  // "PID (COMM) STATE PPID ...": COMM may hold spaces and parentheses.
  size_t open = line.find('(');
  size_t close = line.rfind(')');
  if (open == std::string::npos || close == std::string::npos ||
      close + 4 >= line.size()) {
    return false;
  }
  *comm = line.substr(open + 1, close - open - 1);
  *state = line[close + 2];
  *ppid = static_cast<pid_t>(strtol(line.c_str() + close + 4, nullptr, 10));
  return true;
}

bool IsLive(char state) { return state != 'Z' && state != 'X'; }

}  // namespace

std::vector<pid_t> ChildPids(pid_t parent, absl::string_view comm_prefix) {
  std::vector<pid_t> out;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    std::string name = entry.path().filename();
    char* end = nullptr;
    long pid = strtol(name.c_str(), &end, 10);
    if (name.empty() || *end != '\0') continue;
    char state;
    pid_t ppid;
    std::string comm;
    if (ReadProcStat(pid, &state, &ppid, &comm) && ppid == parent &&
        IsLive(state) && absl::StartsWith(comm, comm_prefix)) {
      out.push_back(static_cast<pid_t>(pid));
    }
  }
  return out;
}

bool ProcessAlive(pid_t pid, absl::string_view comm_prefix) {
  char state;
  pid_t ppid;
  std::string comm;
  return ReadProcStat(pid, &state, &ppid, &comm) && IsLive(state) &&
         absl::StartsWith(comm, comm_prefix);
}

// --- TempDir ---

absl::StatusOr<TempDir> TempDir::Create(absl::string_view prefix) {
  std::string templ = absl::StrCat("/tmp/", prefix, "-XXXXXX");
  if (mkdtemp(templ.data()) == nullptr) return ErrnoError("mkdtemp", errno);
  // Other users (the permission tests' uid 65534) must be able to traverse.
  if (chmod(templ.c_str(), 0755) != 0) return ErrnoError("chmod", errno);
  return TempDir(std::move(templ));
}

TempDir& TempDir::operator=(TempDir&& other) noexcept {
  if (this != &other) {
    Remove();
    path_ = std::exchange(other.path_, "");
  }
  return *this;
}

TempDir::~TempDir() { Remove(); }

void TempDir::Remove() {
  if (path_.empty()) return;
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
  if (ec) std::cerr << "warning: removing " << path_ << ": " << ec.message();
  path_.clear();
}

// --- RunCommand ---

absl::StatusOr<CommandResult> RunCommand(const std::vector<std::string>& argv,
                                         std::chrono::milliseconds timeout) {
  int out_fd = memfd_create("command-output", MFD_CLOEXEC);
  if (out_fd < 0) return ErrnoError("memfd_create", errno);
  absl::StatusOr<pid_t> pid = Spawn(argv, out_fd, /*die_with_parent=*/true);
  if (!pid.ok()) {
    close(out_fd);
    return pid.status();
  }
  std::optional<ExitInfo> exit = PollWait(*pid, timeout);
  if (!exit) {
    kill(*pid, SIGKILL);
    exit = PollWait(*pid, std::chrono::seconds(10));
    std::string output = ReadTail(out_fd, kMaxLog);
    close(out_fd);
    return absl::DeadlineExceededError(
        absl::StrCat(absl::StrJoin(argv, " "), " did not finish in ",
                     timeout.count(), " ms; output: ", output));
  }
  CommandResult result{*exit, ReadTail(out_fd, kMaxLog)};
  close(out_fd);
  return result;
}

// --- MountedFs ---

absl::StatusOr<std::unique_ptr<MountedFs>> MountedFs::Start(
    const std::vector<std::string>& args, const std::string& binary) {
  if (access(binary.c_str(), X_OK) != 0) {
    return absl::NotFoundError(absl::StrCat("daemon binary ", binary,
                                            " is missing: ", ErrnoName(errno)));
  }
  absl::StatusOr<TempDir> base = TempDir::Create("memfuse-mount");
  if (!base.ok()) return base.status();
  std::string mount_point = absl::StrCat(base->path(), "/mnt");
  if (mkdir(mount_point.c_str(), 0755) != 0) return ErrnoError("mkdir", errno);
  std::string log_path = absl::StrCat(base->path(), "/daemon.log");
  int log_fd =
      open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (log_fd < 0) return ErrnoError("open log", errno);

  std::vector<std::string> argv = {binary, mount_point};
  argv.insert(argv.end(), args.begin(), args.end());
  absl::StatusOr<pid_t> pid = Spawn(argv, log_fd, /*die_with_parent=*/true);
  close(log_fd);
  if (!pid.ok()) return pid.status();

  // From here on the destructor cleans up whatever happens.
  std::unique_ptr<MountedFs> fs(new MountedFs(
      std::move(*base), std::move(mount_point), std::move(log_path), *pid));
  if (absl::Status s = fs->WaitForMount(); !s.ok()) {
    return absl::Status(
        s.code(),
        absl::StrCat(s.message(), "\ncommand: ", absl::StrJoin(argv, " "),
                     "\ndaemon output:\n", fs->Log()));
  }
  return fs;
}

absl::Status MountedFs::WaitForMount() {
  // statfs runs on a helper thread because it blocks until the daemon answers
  // FUSE_INIT; a daemon that never answers must not hang the test. The state
  // is shared so the thread may outlive this call (it finishes once the
  // daemon is killed, which aborts the connection).
  struct Probe {
    std::atomic<bool> done{false};
    long f_type = 0;
    int err = 0;
  };
  auto deadline = std::chrono::steady_clock::now() + kMountTimeout;
  auto remaining = [&] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
  };
  bool listed = WaitFor(
      [&] {
        if (WaitForExit(std::chrono::milliseconds(0))) return true;
        return IsMounted();
      },
      remaining());
  if (exit_) {
    return absl::FailedPreconditionError(
        absl::StrCat("mem-fuse exited before mounting: ", ToString(*exit_)));
  }
  if (!listed) {
    return absl::DeadlineExceededError(
        absl::StrCat(path(), " did not become a mount point in ",
                     kMountTimeout.count(), " s"));
  }
  auto probe = std::make_shared<Probe>();
  std::thread([probe, path = path()] {
    struct statfs sfs {};
    if (statfs(path.c_str(), &sfs) == 0) {
      probe->f_type = sfs.f_type;
    } else {
      probe->err = errno;
    }
    probe->done = true;
  }).detach();
  if (!WaitFor([&] { return probe->done.load(); },
               std::max(remaining(), std::chrono::milliseconds(100)))) {
    return absl::DeadlineExceededError(
        "statfs on the mount did not answer: the daemon does not serve");
  }
  if (probe->err != 0) return ErrnoError("statfs(mount)", probe->err);
  if (probe->f_type != kFuseSuperMagic) {
    return absl::FailedPreconditionError(
        absl::StrCat("mount point has f_type 0x", absl::Hex(probe->f_type),
                     ", want FUSE_SUPER_MAGIC 0x", absl::Hex(kFuseSuperMagic)));
  }
  return absl::OkStatus();
}

MountedFs::~MountedFs() { Shutdown(); }

void MountedFs::Shutdown() {
  if (IsMounted()) {
    // Lazy, so that a descriptor a failed test left open cannot block it.
    absl::StatusOr<CommandResult> r = RunCommand(
        {"fusermount3", "-u", "-z", mount_point_}, std::chrono::seconds(10));
    if (IsMounted()) {
      std::cerr << "warning: fusermount3 -u -z " << mount_point_ << " failed ("
                << (r.ok() ? r->output : r.status().ToString())
                << "); detaching with umount2\n";
      umount2(mount_point_.c_str(), MNT_DETACH);
    }
  }
  if (!exit_) {
    // The PID is ours and not yet reaped, so it cannot have been reused.
    if (!WaitForExit(std::chrono::milliseconds(0))) {
      kill(pid_, SIGTERM);
      if (!WaitForExit(kExitTimeout)) {
        std::cerr << "warning: mem-fuse pid " << pid_
                  << " ignored SIGTERM; sending SIGKILL\n";
        kill(pid_, SIGKILL);
        WaitForExit(kExitTimeout);
      }
    }
  }
  if (IsMounted()) {
    // Never recurse into a live mount while removing the temp dir.
    std::cerr << "warning: " << mount_point_
              << " is still mounted; leaving its temp dir behind\n";
    base_.Release();
  }
}

std::optional<ExitInfo> MountedFs::WaitForExit(
    std::chrono::milliseconds timeout) {
  if (!exit_) exit_ = PollWait(pid_, timeout);
  return exit_;
}

std::string MountedFs::Log() const {
  int fd = open(log_path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::StrCat("(cannot read ", log_path_, ")");
  std::string log = ReadTail(fd, kMaxLog);
  close(fd);
  return log;
}

bool MountedFs::IsMounted() const { return IsMountPoint(mount_point_); }

std::optional<ExitInfo> MountedFs::SignalAndWait(
    int sig, std::chrono::milliseconds timeout) {
  if (!exit_) kill(pid_, sig);
  return WaitForExit(timeout);
}

absl::StatusOr<ExitInfo> MountedFs::UnmountAndWait(
    std::chrono::milliseconds timeout) {
  absl::StatusOr<CommandResult> r =
      RunCommand({"fusermount3", "-u", mount_point_}, timeout);
  if (!r.ok()) return r.status();
  if (!r->exit.exited || r->exit.code_or_signal != 0) {
    return absl::InternalError(absl::StrCat("fusermount3 -u failed: ",
                                            ToString(r->exit), ": ", r->output,
                                            HoldersOf(mount_point_)));
  }
  std::optional<ExitInfo> exit = WaitForExit(timeout);
  if (!exit) {
    return absl::DeadlineExceededError(
        absl::StrCat("mem-fuse did not exit within ", timeout.count(),
                     " ms of being unmounted"));
  }
  return *exit;
}

// --- ChildProcess ---

absl::StatusOr<std::unique_ptr<ChildProcess>> ChildProcess::Start(
    const std::vector<std::string>& argv, const std::string& log_path) {
  if (argv.empty() || access(argv[0].c_str(), X_OK) != 0) {
    return absl::NotFoundError(absl::StrCat("binary ",
                                            argv.empty() ? "" : argv[0],
                                            " is missing: ", ErrnoName(errno)));
  }
  int log_fd =
      open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) return ErrnoError("open log", errno);
  absl::StatusOr<pid_t> pid = Spawn(argv, log_fd, /*die_with_parent=*/true);
  close(log_fd);
  if (!pid.ok()) return pid.status();
  return std::unique_ptr<ChildProcess>(new ChildProcess(*pid, log_path));
}

ChildProcess::~ChildProcess() {
  if (WaitForExit(std::chrono::milliseconds(0))) return;
  // The PID is ours and not yet reaped, so it cannot have been reused.
  kill(pid_, SIGTERM);
  if (!WaitForExit(kExitTimeout)) {
    std::cerr << "warning: pid " << pid_ << " ignored SIGTERM; sending "
              << "SIGKILL\n";
    kill(pid_, SIGKILL);
    WaitForExit(kExitTimeout);
  }
}

std::string ChildProcess::Log() const {
  int fd = open(log_path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::StrCat("(cannot read ", log_path_, ")");
  std::string log = ReadTail(fd, kMaxLog);
  close(fd);
  return log;
}

std::optional<ExitInfo> ChildProcess::WaitForExit(
    std::chrono::milliseconds timeout) {
  if (!exit_) exit_ = PollWait(pid_, timeout);
  return exit_;
}

std::optional<ExitInfo> ChildProcess::SignalAndWait(
    int sig, std::chrono::milliseconds timeout) {
  if (!exit_) kill(pid_, sig);
  return WaitForExit(timeout);
}

// --- MountTest ---

void MountTest::SetUp() {
  MEMFUSE_REQUIRE_FUSE();
  absl::StatusOr<TempDir> native = TempDir::Create("memfuse-native");
  ASSERT_TRUE(native.ok()) << native.status();
  native_.emplace(std::move(*native));
  absl::StatusOr<std::unique_ptr<MountedFs>> fs = MountedFs::Start(MountArgs());
  ASSERT_TRUE(fs.ok()) << fs.status();
  fs_ = std::move(*fs);
}

void MountTest::TearDown() {
  if (fs_ != nullptr && HasFailure()) {
    std::string log = fs_->Log();
    if (log.size() > 4096) log = "..." + log.substr(log.size() - 4096);
    std::cerr << "mem-fuse output (" << fs_->path() << "):\n" << log << "\n";
  }
  fs_.reset();
  native_.reset();
}

std::string SeccompKills(absl::string_view exe) {
  constexpr int kReadAll = 3;     // SYSLOG_ACTION_READ_ALL
  constexpr int kBufferSize = 10;  // SYSLOG_ACTION_SIZE_BUFFER
  const int size = klogctl(kBufferSize, nullptr, 0);
  if (size <= 0) return "";
  std::string log(static_cast<size_t>(size), '\0');
  const int n = klogctl(kReadAll, log.data(), size);
  if (n <= 0) return "";
  log.resize(static_cast<size_t>(n));
  const std::string wanted = absl::StrCat("/", exe, "\"");
  std::vector<std::string> lines;
  for (absl::string_view line : absl::StrSplit(log, '\n')) {
    if (!absl::StrContains(line, "type=1326") ||
        !absl::StrContains(line, wanted)) {
      continue;
    }
    std::string out(line);
    const size_t at = line.find(" syscall=");
    int nr = -1;
    if (at != absl::string_view::npos &&
        absl::SimpleAtoi(line.substr(at + 9, line.find(' ', at + 9) - at - 9),
                         &nr)) {
      char* name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, nr);
      absl::StrAppend(&out, "  <- ", name != nullptr ? name : "?");
      free(name);
    }
    lines.push_back(std::move(out));
  }
  constexpr size_t kLast = 10;
  if (lines.size() > kLast) lines.erase(lines.begin(), lines.end() - kLast);
  return lines.empty() ? "" : absl::StrJoin(lines, "\n") + "\n";
}

}  // namespace memfuse::testing
