// Runs the mem-fuse daemon on a temporary mount point for tests, and a
// GoogleTest fixture that pairs such a mount with a native directory.
//
// Cleanup is unconditional: whatever a test did (or failed to do), the
// destructor unmounts by the path it mounted, ends only the PID it started
// (SIGTERM, then SIGKILL after a bounded wait) and removes its temp dirs.
//
// Threading: a MountedFs is started, stopped and destroyed by one thread (the
// test's); any thread may do file I/O under path() meanwhile.
#ifndef MEMFUSE_TESTS_TESTING_MOUNT_FIXTURE_H_
#define MEMFUSE_TESTS_TESTING_MOUNT_FIXTURE_H_

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "gtest/gtest.h"
#include "tests/testing/posix_compare.h"

namespace memfuse::testing {

// statfs(2).f_type of a FUSE mount.
inline constexpr long kFuseSuperMagic = 0x65735546;

// The daemon under test: MEMFUSE_BIN_DIR "/mem-fuse".
std::string MemFuseBinary();

// The mirror agent, installed next to the daemon: MEMFUSE_BIN_DIR
// "/mem-fuse-mirrord".
std::string MirrordBinary();

// The test builds of both (tests/faulty/): MEMFUSE_BIN_DIR "/faulty/...".
// That mem-fuse spawns the faulty agent beside it.
std::string FaultyMemFuseBinary();
std::string FaultyMirrordBinary();

// Whether /dev/fuse can be opened; `why` gets the reason when not.
bool FuseAvailable(std::string* why);

// True when the environment says CI=true: there an unusable /dev/fuse is a
// failure, because the CI must run the mount tests for real.
bool RunningUnderCi();

// Skips the current test when FUSE is unusable, or fails it under CI=true.
// Must be used directly in a test body or SetUp (it returns on skip/fail).
#define MEMFUSE_REQUIRE_FUSE()                                      \
  do {                                                              \
    std::string memfuse_why_;                                       \
    if (!::memfuse::testing::FuseAvailable(&memfuse_why_)) {        \
      if (::memfuse::testing::RunningUnderCi()) {                   \
        FAIL() << "CI=true but FUSE is unusable: " << memfuse_why_; \
      }                                                             \
      GTEST_SKIP() << "FUSE is unusable here: " << memfuse_why_;    \
    }                                                               \
  } while (0)

// Whether `path` is a mount point, from /proc/self/mountinfo (never blocks on
// a FUSE daemon). `path` must be absolute and free of symlinks.
bool IsMountPoint(const std::string& path);

// A directory made with mkdtemp under /tmp, removed recursively on
// destruction. /tmp is a real disk (or tmpfs) directory, never the mount.
class TempDir {
 public:
  // `prefix` becomes part of the name, e.g. "memfuse-native".
  static absl::StatusOr<TempDir> Create(absl::string_view prefix);

  TempDir(TempDir&& other) noexcept : path_(std::exchange(other.path_, "")) {}
  TempDir& operator=(TempDir&& other) noexcept;
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir();

  const std::string& path() const { return path_; }

  // Forgets the directory without removing it (used when it still holds a
  // mount that must not be recursed into).
  void Release() { path_.clear(); }

 private:
  explicit TempDir(std::string path) : path_(std::move(path)) {}
  void Remove();

  std::string path_;
};

// Result of waiting for the daemon to exit.
struct ExitInfo {
  bool exited = false;  // false: killed by a signal
  int code_or_signal = 0;
};
std::string ToString(const ExitInfo& info);

// One mem-fuse daemon mounted on a fresh temp dir.
class MountedFs {
 public:
  // How long to wait for the mount to appear, and for the daemon to exit.
  static constexpr std::chrono::seconds kMountTimeout{10};
  static constexpr std::chrono::seconds kExitTimeout{10};

  // Starts `mem-fuse MOUNTPOINT args...` (`binary`, MemFuseBinary() by
  // default) and waits, polling statfs every 10 ms for at most
  // kMountTimeout, until the mount point is a FUSE mount. Errors carry the
  // daemon's stderr.
  static absl::StatusOr<std::unique_ptr<MountedFs>> Start(
      const std::vector<std::string>& args,
      const std::string& binary = MemFuseBinary());

  MountedFs(const MountedFs&) = delete;
  MountedFs& operator=(const MountedFs&) = delete;
  // Unmounts (lazily) if still mounted, stops the daemon, removes the dirs.
  ~MountedFs();

  const std::string& path() const { return mount_point_; }
  pid_t pid() const { return pid_; }

  // What the daemon wrote to stdout/stderr so far (at most the last 64 KiB).
  std::string Log() const;

  // Whether path() is currently a mount point (from /proc/self/mountinfo;
  // never blocks on the daemon).
  bool IsMounted() const;

  // Sends `sig` to the daemon and waits at most `timeout` for it to exit.
  // Returns nullopt on timeout (the daemon is still running then).
  std::optional<ExitInfo> SignalAndWait(
      int sig, std::chrono::milliseconds timeout = kExitTimeout);

  // Runs `fusermount3 -u PATH` (not lazy: it must succeed on an idle mount)
  // and waits at most `timeout` for the daemon to exit by itself.
  absl::StatusOr<ExitInfo> UnmountAndWait(
      std::chrono::milliseconds timeout = kExitTimeout);

  // Polls waitpid for at most `timeout`; records the exit once reaped and
  // returns it (also on later calls), nullopt while the daemon runs.
  std::optional<ExitInfo> WaitForExit(std::chrono::milliseconds timeout);

  // The file the daemon's stdout and stderr go to, in full (Log() is the
  // tail).
  const std::string& log_path() const { return log_path_; }

 private:
  MountedFs(TempDir base, std::string mount_point, std::string log_path,
            pid_t pid)
      : base_(std::move(base)),
        mount_point_(std::move(mount_point)),
        log_path_(std::move(log_path)),
        pid_(pid) {}

  absl::Status WaitForMount();
  void Shutdown();

  TempDir base_;  // holds mnt/ and daemon.log
  std::string mount_point_;
  std::string log_path_;
  pid_t pid_;
  std::optional<ExitInfo> exit_;  // set once the child is reaped
};

// Another process a test starts and owns (say, a mirror agent launched by
// hand), with stdout and stderr going to a log file. The destructor ends
// only its own PID: SIGTERM, then SIGKILL after a bounded wait.
// Threading: like MountedFs.
class ChildProcess {
 public:
  static constexpr std::chrono::seconds kExitTimeout{10};

  // Starts `argv` (argv[0] is a path), appending its output to `log_path`.
  // The child gets SIGTERM if the calling thread dies (PR_SET_PDEATHSIG), so
  // call it from the test's own thread, not a short-lived helper.
  static absl::StatusOr<std::unique_ptr<ChildProcess>> Start(
      const std::vector<std::string>& argv, const std::string& log_path);

  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess();

  pid_t pid() const { return pid_; }
  const std::string& log_path() const { return log_path_; }
  // The last 64 KiB of its output.
  std::string Log() const;

  // Polls waitpid for at most `timeout`; nullopt while it runs.
  std::optional<ExitInfo> WaitForExit(std::chrono::milliseconds timeout);
  // Sends `sig` (unless it was reaped already) and waits at most `timeout`.
  std::optional<ExitInfo> SignalAndWait(
      int sig, std::chrono::milliseconds timeout = kExitTimeout);

 private:
  ChildProcess(pid_t pid, std::string log_path)
      : pid_(pid), log_path_(std::move(log_path)) {}

  pid_t pid_;
  std::string log_path_;
  std::optional<ExitInfo> exit_;
};

// Live (not zombie) processes whose parent is `parent` and whose comm (the
// first 15 bytes of the executable's name) starts with `comm_prefix`, from
// /proc. Used to find the agent a daemon spawned.
std::vector<pid_t> ChildPids(pid_t parent, absl::string_view comm_prefix = "");

// Whether `pid` is a live (not zombie) process whose comm starts with
// `comm_prefix`.
bool ProcessAlive(pid_t pid, absl::string_view comm_prefix = "");

// The kernel log's last lines about runs of the program `exe` killed by a
// seccomp filter (audit type=1326), each followed by the system call's
// name; what a test prints when mem-fuse-mirrord met a call its allow-list
// lacks. Empty when there are none, or the log cannot be read.
std::string SeccompKills(absl::string_view exe = "mem-fuse-mirrord");

// Runs `argv` (argv[0] is a path) with stdout/stderr captured, waiting at most
// `timeout`; kills it (by its PID) on timeout. Returns the exit and output.
struct CommandResult {
  ExitInfo exit;
  std::string output;
};
absl::StatusOr<CommandResult> RunCommand(const std::vector<std::string>& argv,
                                         std::chrono::milliseconds timeout);

// Polls `condition` every `interval` until it holds or `timeout` passes.
// Returns whether it held. This is the only way tests wait.
template <typename Condition>
bool WaitFor(
    Condition&& condition, std::chrono::milliseconds timeout,
    std::chrono::milliseconds interval = std::chrono::milliseconds(10));

// A fresh mem-fuse mount plus a native temp dir for every test.
class MountTest : public ::testing::Test {
 protected:
  // Extra daemon flags for a suite, e.g. {"--block-size", "4"}.
  virtual std::vector<std::string> MountArgs() const { return {}; }

  void SetUp() override;
  void TearDown() override;

  const std::string& mount_dir() const { return fs_->path(); }
  const std::string& native_dir() const { return native_->path(); }
  MountedFs& fs() { return *fs_; }

  // Runs `step_fn(Dir)` (returning an Outcome) on the native dir, then on the
  // mount, and adds a failure naming `step` if the outcomes differ. Returns
  // the mount's outcome.
  template <typename StepFn>
  Outcome ExpectSame(absl::string_view step, StepFn&& step_fn);

  // Runs `seq_fn(Dir, Trace&)` on both and reports every differing step.
  template <typename SeqFn>
  void ExpectSameTrace(absl::string_view what, SeqFn&& seq_fn);

 private:
  std::optional<TempDir> native_;
  std::unique_ptr<MountedFs> fs_;
};

// --- implementation of templates ---

template <typename Condition>
bool WaitFor(Condition&& condition, std::chrono::milliseconds timeout,
             std::chrono::milliseconds interval) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (condition()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return condition();
    struct timespec ts = {
        static_cast<time_t>(interval.count() / 1000),
        static_cast<long>((interval.count() % 1000) * 1000000)};
    nanosleep(&ts, nullptr);
  }
}

template <typename StepFn>
Outcome MountTest::ExpectSame(absl::string_view step, StepFn&& step_fn) {
  Outcome native = step_fn(Dir(native_dir()));
  Outcome mounted = step_fn(Dir(mount_dir()));
  if (native != mounted) {
    ADD_FAILURE() << "step \"" << step << "\": native " << ToString(native)
                  << ", mount " << ToString(mounted);
  }
  return mounted;
}

template <typename SeqFn>
void MountTest::ExpectSameTrace(absl::string_view what, SeqFn&& seq_fn) {
  Trace native;
  seq_fn(Dir(native_dir()), native);
  Trace mounted;
  seq_fn(Dir(mount_dir()), mounted);
  std::string diff = DiffTraces(native, mounted);
  if (!diff.empty()) {
    ADD_FAILURE() << what << ": mount differs from native:\n" << diff;
  }
}

}  // namespace memfuse::testing

#endif  // MEMFUSE_TESTS_TESTING_MOUNT_FIXTURE_H_
