// The end-to-end fixture: the real daemon mem-fuse and its mirror agent
// mem-fuse-mirrord as separate processes, a local mirror directory, and the
// means to wait for the mirror to catch up and to compare it with the mount.
//
// Everything a test starts is cleaned up in TearDown, by path and PID, also
// when the test failed half-way: the mount (lazily unmounted), the daemon
// (SIGTERM, then SIGKILL), an agent the test started itself, and an agent the
// daemon spawned if it outlived the daemon.
//
// Threading: the fixture's methods run on the test's thread. Workloads may
// run on a Worker thread meanwhile; only the test's thread starts processes
// (their PR_SET_PDEATHSIG is tied to the starting thread).
#ifndef MEMFUSE_TESTS_E2E_E2E_FIXTURE_H_
#define MEMFUSE_TESTS_E2E_E2E_FIXTURE_H_

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "gtest/gtest.h"
#include "tests/faulty/agent_faults.h"
#include "tests/testing/mount_fixture.h"
#include "tests/testing/tree_compare.h"

namespace memfuse::testing {

// Bounds on waits that depend on the mirror catching up. Generous: they only
// turn a hang into a failure, they never pace a test.
inline constexpr std::chrono::seconds kBarrierTimeout{60};
inline constexpr std::chrono::seconds kDrainTimeout{90};
inline constexpr std::chrono::seconds kWorkloadTimeout{90};
// How long a respawned or restarted agent may take to appear.
inline constexpr std::chrono::seconds kRespawnTimeout{30};

// The comm (first 15 bytes of the name) of mem-fuse-mirrord.
inline constexpr absl::string_view kMirrordComm = "mem-fuse-mirr";

// The mount compared with its mirror once the mirror caught up: everything,
// file mtimes included; directory and symlink mtimes excluded (creating an
// entry changes its directory's mtime on each side at its own time).
TreeCompareOptions MirrorCompareOptions();

// Every check, directory and symlink mtimes included: for a tree that was
// copied and not modified since (a mirror loaded by a fresh mount, a mirror
// before and after an unmount).
TreeCompareOptions ExactCompareOptions();

// A native reference directory that received the same operations as the
// mount, compared with the mount or the mirror: no mtimes (each side wrote
// at its own time; explicit times are checked mount vs mirror) and not the
// roots' own attributes.
TreeCompareOptions ReferenceCompareOptions();

// Success, or a failure listing the first 20 differences.
::testing::AssertionResult TreesEqual(const std::string& a,
                                      const std::string& b,
                                      const TreeCompareOptions& options);

// Copies `from` to a new directory `to` with `cp -a` (modes, owners, times,
// xattrs, hard links, symlinks and FIFOs preserved).
absl::Status CopyTree(const std::string& from, const std::string& to);

// A function running on its own thread. The destructor (or Join) never
// waits unboundedly: past the timeout it calls `abort` (which must make
// blocked syscalls return, e.g. by aborting the FUSE connection) and then
// joins.
class Worker {
 public:
  // `fn` gets a flag asking it to stop early; it should poll it.
  Worker(std::function<void(const std::atomic<bool>& stop)> fn,
         std::function<void()> abort);
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;
  ~Worker();

  void RequestStop() { stop_ = true; }
  bool done() const { return state_->done; }

  // Waits at most `timeout` for `fn` to return. On timeout, adds a failure
  // naming `what`, aborts and joins. Returns whether `fn` returned in time.
  bool Join(absl::string_view what, std::chrono::milliseconds timeout);

 private:
  struct State {
    std::atomic<bool> done{false};
  };
  std::atomic<bool> stop_{false};
  std::shared_ptr<State> state_;
  std::function<void()> abort_;
  std::thread thread_;
};

// One reading of the mount root's user.memfuse.status ("name value"
// lines). Reading it lists nothing: the root's own xattrs need no lookup.
class DaemonStatus {
 public:
  explicit DaemonStatus(const std::string& mount);

  // nullopt (gtest prints "(nullopt)") when the daemon does not report it.
  std::optional<uint64_t> operator[](const std::string& name) const {
    auto it = values_.find(name);
    if (it == values_.end()) return std::nullopt;
    return it->second;
  }
  const std::string& text() const { return text_; }

 private:
  std::string text_;
  std::map<std::string, uint64_t> values_;
};

class E2eTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;

  // base/mirror; it does not exist until a daemon or the test creates it.
  const std::string& mirror() const { return mirror_; }
  // A fresh path under the test's temp dir (for references and snapshots).
  std::string TempPath(absl::string_view name) const;
  // The current mount; REQUIRES: a Mount* call succeeded.
  const std::string& mount() const { return fs_->path(); }
  MountedFs& fs() { return *fs_; }

  // From here on, mounts and agents are the test builds (tests/faulty/),
  // and their agents inject `faults`; until TearDown. Call before Mount.
  void InjectAgentFaults(const AgentFaults& faults);

  // `mem-fuse MOUNT --mirror mirror() extra...` (one command: the daemon
  // spawns the agent). Replaces (and first cleans up) a previous mount.
  absl::Status Mount(const std::vector<std::string>& extra = {});
  // `mem-fuse MOUNT --mirror SPEC extra...` with another mirror than
  // mirror() (an http:// URL).
  absl::Status MountMirror(const std::string& spec,
                           const std::vector<std::string>& extra = {});
  // `mem-fuse MOUNT --mirror-socket SOCKET extra...`.
  absl::Status MountWithSocket(const std::string& socket,
                               const std::vector<std::string>& extra = {});

  // `mem-fuse-mirrord --mirror mirror() --listen SOCKET`, started by the
  // test, waiting at most kRespawnTimeout until a socket listens on SOCKET
  // (per /proc/net/unix: the file a killed agent left behind does not
  // count). Replaces a previous agent, which must be dead already. The
  // stale socket file is left in place, as after any crash.
  absl::Status StartAgent(const std::string& socket);
  // The same with another mirror than mirror() (an http:// URL).
  absl::Status StartAgentFor(const std::string& spec,
                             const std::string& socket);
  ChildProcess* agent() { return agent_.get(); }

  // Unmounts with fusermount3 -u and waits at most kDrainTimeout for the
  // daemon to drain and exit; the mount stays the current one until the
  // next Mount (its log stays readable).
  absl::StatusOr<ExitInfo> Unmount();

  // Success when the daemon exited with code 0 and the mount is gone;
  // otherwise a failure with the daemon's log. Takes Unmount()'s result, or
  // fs().SignalAndWait()'s (nullopt: still running).
  ::testing::AssertionResult CleanExit(const absl::StatusOr<ExitInfo>& exit);
  ::testing::AssertionResult CleanExit(const std::optional<ExitInfo>& exit);

  // The agent the daemon spawned: its PID once exactly one live child named
  // mem-fuse-mirr* exists (polled for at most `timeout`), other than
  // `not_this` (a PID just killed). 0 on timeout.
  pid_t WaitForMirrordChild(
      pid_t not_this = 0, std::chrono::milliseconds timeout = kRespawnTimeout);

  // fsync(2) of the mount's root directory: returns once everything done on
  // the mount before is applied in the mirror. Bounded by `timeout`; a
  // failure carries the daemon's log.
  ::testing::AssertionResult MirrorCaughtUp(
      std::chrono::milliseconds timeout = kBarrierTimeout);

  // Runs `fn` on a Worker and joins it with `timeout` (aborting the mount
  // if it hangs). Returns whether it finished in time.
  bool RunBounded(absl::string_view what, std::chrono::milliseconds timeout,
                  std::function<void()> fn);
  // A Worker whose abort is AbortMount.
  std::unique_ptr<Worker> StartWorker(
      std::function<void(const std::atomic<bool>& stop)> fn);

  // Makes every syscall blocked on the mount return: MNT_FORCE unmount
  // (which aborts a FUSE connection), then, if that is not enough within a
  // few seconds, SIGKILL of the agent and the daemon.
  void AbortMount();

 private:
  void NoteAgents();
  void DumpLogs();

  std::optional<TempDir> base_;
  std::string mirror_;
  std::unique_ptr<MountedFs> fs_;
  std::unique_ptr<ChildProcess> agent_;
  std::vector<std::unique_ptr<ChildProcess>> dead_agents_;  // for their logs
  // Agents the daemon spawned, seen while it ran: ended if they outlive it.
  std::vector<pid_t> spawned_agents_;
  int agent_starts_ = 0;
  // InjectAgentFaults was called: the faulty builds run.
  bool faulty_ = false;
};

}  // namespace memfuse::testing

#endif  // MEMFUSE_TESTS_E2E_E2E_FIXTURE_H_
