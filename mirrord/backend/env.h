// The local backend's way to the operating system, as leveldb's Env: every
// call that changes the mirror's files or makes them durable goes through
// one Env object, so that a test can wrap it and inject a fault (EIO,
// ENOSPC, a delay) where the disk would. Env::Default() is the POSIX calls
// themselves; tests/testing/fault_env.h is the wrapper tests use.
//
// Grouped by job: file data (write, truncate, punch, start writeback),
// durability (fsync, syncfs) and the namespace (create, link, remove,
// rename). Reads of metadata (stat, readlink, listings, xattrs) and the
// attribute changes (owner, mode, times, xattrs) stay direct calls: no test
// needs a fault there yet, and they would join here the same way.
//
// Errors are absl::Status with the errno as payload (common/status.h),
// converted once here; the message is the call's name. Names are single
// components relative to a directory descriptor, never followed when they
// are a symlink.
//
// Thread-safety: implementations are thread-safe; the local backend calls
// them from the Apply thread and the read threads concurrently, never with
// a lock of its own held across a call that waits for the disk.
#ifndef MEMFUSE_MIRRORD_BACKEND_ENV_H_
#define MEMFUSE_MIRRORD_BACKEND_ENV_H_

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/unique_fd.h"

namespace memfuse::mirrord {

class Env {
 public:
  // The POSIX calls; never deleted.
  static Env* Default();

  Env() = default;
  Env(const Env&) = delete;
  Env& operator=(const Env&) = delete;
  virtual ~Env() = default;

  // --- file data ---
  // All of `data` at `offset` of `fd` (short writes and EINTR continued);
  // empty `data` does nothing.
  virtual absl::Status WriteAt(int fd, absl::string_view data,
                               uint64_t offset) = 0;
  virtual absl::Status Truncate(int fd, uint64_t size) = 0;
  // A hole that keeps the size; EOPNOTSUPP where the filesystem has none.
  virtual absl::Status PunchHole(int fd, uint64_t offset, uint64_t length) = 0;
  // Starts writing a range to the disk without waiting for it (best
  // effort: nothing to report).
  virtual void StartWriteback(int fd, uint64_t offset, uint64_t length) = 0;

  // --- durability ---
  virtual absl::Status SyncFile(int fd) = 0;        // fsync
  virtual absl::Status SyncFilesystem(int fd) = 0;  // syncfs

  // --- the namespace ---
  // A new regular file `name` in `dir` (never an existing one: EEXIST),
  // opened read-write and non-blocking.
  virtual absl::StatusOr<common::UniqueFd> CreateFile(int dir,
                                                      const std::string& name,
                                                      mode_t mode) = 0;
  virtual absl::Status MakeDirectory(int dir, const std::string& name,
                                     mode_t mode) = 0;
  virtual absl::Status MakeSymlink(const std::string& target, int dir,
                                   const std::string& name) = 0;
  // A FIFO, socket or device node (`mode` carries the type).
  virtual absl::Status MakeNode(int dir, const std::string& name, mode_t mode,
                                dev_t rdev) = 0;
  virtual absl::Status Link(int from_dir, const std::string& from, int to_dir,
                            const std::string& to) = 0;
  // unlink, or rmdir when `directory`.
  virtual absl::Status Remove(int dir, const std::string& name,
                              bool directory) = 0;
  // renameat2 with RENAME_NOREPLACE or RENAME_EXCHANGE in `flags`, or none.
  virtual absl::Status Rename(int from_dir, const std::string& from,
                              int to_dir, const std::string& to,
                              unsigned flags) = 0;
};

}  // namespace memfuse::mirrord

#endif  // MEMFUSE_MIRRORD_BACKEND_ENV_H_
