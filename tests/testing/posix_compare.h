// Helpers for mergerfs-style POSIX comparison tests: the same syscall sequence
// runs on the mount and on a native directory, and the observable outcomes
// (return value, errno, and whatever data the step read back) must be equal.
//
// Everything here is thread-compatible and touches no shared state except
// errno, which each helper reads immediately after its syscall.
#ifndef MEMFUSE_TESTS_TESTING_POSIX_COMPARE_H_
#define MEMFUSE_TESTS_TESTING_POSIX_COMPARE_H_

#include <sys/types.h>

#include <cstdint>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"

namespace memfuse::testing {

// What one step observed. `err` is the errno when `ret` < 0, else 0; `data`
// holds anything the step read (file contents, a stat summary, a listing).
struct Outcome {
  int64_t ret = 0;
  int err = 0;
  std::string data;

  friend bool operator==(const Outcome&, const Outcome&) = default;
};

// "ret=-1 errno=ENOENT" plus a shortened form of `data`.
std::string ToString(const Outcome& outcome);
void PrintTo(const Outcome& outcome, std::ostream* os);

// "ENOENT (No such file or directory)"; "0" for 0.
std::string ErrnoName(int err);

// Captures a syscall's result and errno. Call it directly on the syscall's
// return value so nothing can clobber errno in between.
Outcome Sys(int64_t ret);

// Like Sys, but success maps to ret=0: for calls whose positive result
// (a file descriptor number) may legitimately differ between filesystems.
Outcome SysOk(int64_t ret);

// Sys plus data.
Outcome SysWith(int64_t ret, std::string data);

// A base directory (mount or native) that steps resolve relative paths in.
class Dir {
 public:
  explicit Dir(std::string root) : root_(std::move(root)) {}

  // root + "/" + rel; `rel` may be empty for the root itself.
  std::string operator()(absl::string_view rel) const;
  const std::string& root() const { return root_; }

 private:
  std::string root_;
};

// lstat/stat summarised as the fields every POSIX filesystem must agree on:
// type+mode, nlink, uid, gid, rdev, and size for non-directories (directory
// sizes are filesystem-specific). Inode numbers, st_blocks and times are left
// out on purpose: they legitimately differ.
Outcome Lstat(const std::string& path);
Outcome Stat(const std::string& path);
Outcome Fstat(int fd);

// The whole file's contents (read with read(2) until EOF).
Outcome ReadFile(const std::string& path);

// Creates/truncates `path` and writes `content` to it (open, write, close).
Outcome WriteFile(const std::string& path, absl::string_view content,
                  mode_t mode = 0644);

// Sorted names in a directory, without "." and "..", joined by '\n'.
Outcome ListDir(const std::string& path);

// Every entry under `root` (recursively, not following symlinks), one line
// each: relative path, the Lstat summary, and for regular files a hash of the
// contents, for symlinks the target. A cheap "the whole tree is the same"
// check at the end of a test.
Outcome TreeSummary(const std::string& root);

// readlink(2) result as data.
Outcome ReadLink(const std::string& path);

// An ordered record of named step outcomes, for sequences that keep state
// (open descriptors) between steps.
class Trace {
 public:
  // Records `outcome` under `step` and returns it so the caller can branch.
  const Outcome& Add(std::string step, Outcome outcome);

  const std::vector<std::pair<std::string, Outcome>>& steps() const {
    return steps_;
  }

 private:
  std::vector<std::pair<std::string, Outcome>> steps_;
};

// Describes every difference between two traces (empty when equal), naming
// the step; `expected` is the native side.
std::string DiffTraces(const Trace& expected, const Trace& actual);

// A pseudo-random but deterministic byte string: the same (seed, size) always
// gives the same bytes. Used so content mismatches are detectable.
std::string PatternBytes(uint64_t seed, size_t size);

// An owned file descriptor, closed on destruction.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd();

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  // Closes now and reports close(2)'s result (where writeback errors show).
  Outcome Close();

 private:
  int fd_ = -1;
};

}  // namespace memfuse::testing

#endif  // MEMFUSE_TESTS_TESTING_POSIX_COMPARE_H_
