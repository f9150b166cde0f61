// FaultEnv: the local backend's Env (mirrord/backend/env.h) with faults a
// test asks for: a call kind that fails with an errno (a number of times,
// or until cleared), or waits before it runs. Everything else goes to the
// Env it wraps (Env::Default() unless told).
//
// Used by the backend's unit tests (EIO, ENOSPC on write, fsync, rename) and
// by the faulty agent of the e2e tests (tests/faulty/: a slow mirror). It
// sleeps with absl::SleepFor and locks an absl::Mutex, which the agent's
// seccomp allow-list permits.
//
// Thread-safe: faults may be set from the test's thread while the backend
// calls in from others; a delay is slept without the lock.
#ifndef MEMFUSE_TESTS_TESTING_FAULT_ENV_H_
#define MEMFUSE_TESTS_TESTING_FAULT_ENV_H_

#include <array>
#include <cstdint>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "mirrord/backend/env.h"

namespace memfuse::testing {

class FaultEnv final : public mirrord::Env {
 public:
  // The call kinds a fault can be set on.
  enum class Call {
    kWrite,  // WriteAt with data (an empty write is no call)
    kTruncate,
    kPunchHole,
    kSync,  // SyncFile and SyncFilesystem
    kCreate,  // CreateFile, MakeDirectory, MakeSymlink, MakeNode
    kLink,
    kRemove,
    kRename,
    kCount_,
  };
  static constexpr int kForever = -1;

  explicit FaultEnv(mirrord::Env* base = mirrord::Env::Default())
      : base_(base) {}

  // The next `times` calls of `call` (kForever: all, until Clear) fail
  // with `err`, without reaching the wrapped Env.
  void Fail(Call call, int err, int times = kForever) ABSL_LOCKS_EXCLUDED(mu_);
  // Every call of `call` waits `delay` first.
  void Delay(Call call, absl::Duration delay) ABSL_LOCKS_EXCLUDED(mu_);
  // No faults from here on.
  void Clear() ABSL_LOCKS_EXCLUDED(mu_);
  // Calls of `call` made so far, failed ones included.
  int calls(Call call) const ABSL_LOCKS_EXCLUDED(mu_);

  absl::Status WriteAt(int fd, absl::string_view data,
                       uint64_t offset) override;
  absl::Status Truncate(int fd, uint64_t size) override;
  absl::Status PunchHole(int fd, uint64_t offset, uint64_t length) override;
  void StartWriteback(int fd, uint64_t offset, uint64_t length) override;
  absl::Status SyncFile(int fd) override;
  absl::Status SyncFilesystem(int fd) override;
  absl::StatusOr<common::UniqueFd> CreateFile(int dir, const std::string& name,
                                              mode_t mode) override;
  absl::Status MakeDirectory(int dir, const std::string& name,
                             mode_t mode) override;
  absl::Status MakeSymlink(const std::string& target, int dir,
                           const std::string& name) override;
  absl::Status MakeNode(int dir, const std::string& name, mode_t mode,
                        dev_t rdev) override;
  absl::Status Link(int from_dir, const std::string& from, int to_dir,
                    const std::string& to) override;
  absl::Status Remove(int dir, const std::string& name,
                      bool directory) override;
  absl::Status Rename(int from_dir, const std::string& from, int to_dir,
                      const std::string& to, unsigned flags) override;

 private:
  struct Fault {
    int err = 0;
    int times = 0;  // kForever, or how many calls are still to fail
    absl::Duration delay;
    int calls = 0;
  };
  // Counts the call, sleeps its delay and says whether it fails (OK: go
  // on to the wrapped Env).
  absl::Status Enter(Call call, const char* name) ABSL_LOCKS_EXCLUDED(mu_);

  mirrord::Env* const base_;
  mutable absl::Mutex mu_;
  std::array<Fault, static_cast<size_t>(Call::kCount_)> faults_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace memfuse::testing

#endif  // MEMFUSE_TESTS_TESTING_FAULT_ENV_H_
