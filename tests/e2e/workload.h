// Workloads for the end-to-end tests. Each is deterministic (given a seed),
// so it can run on the mount and on a native reference directory and leave
// the same tree behind; every failing syscall becomes a test failure naming
// the root, the call, the path and errno.
//
// Thread-compatible: one workload object per thread.
#ifndef MEMFUSE_TESTS_E2E_WORKLOAD_H_
#define MEMFUSE_TESTS_E2E_WORKLOAD_H_

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <random>
#include <string>

#include "absl/strings/string_view.h"

namespace memfuse::testing {

inline constexpr uint64_t kKiB = 1024;
inline constexpr uint64_t kMiB = 1024 * kKiB;

// Chunk `index` (of `size` bytes) of the deterministic byte stream `seed`:
// large files are written and checked chunk by chunk without holding them.
std::string StreamChunk(uint64_t seed, uint64_t index, size_t size);

// Whether `path` holds exactly `size` bytes of stream `seed` (1 MiB chunks);
// on failure `why` says where it differs.
bool FileHoldsStream(const std::string& path, uint64_t seed, uint64_t size,
                     std::string* why);

// Syscalls under a root, each reporting its own failure.
class Ops {
 public:
  explicit Ops(std::string root) : root_(std::move(root)) {}

  const std::string& root() const { return root_; }
  std::string Path(absl::string_view rel) const;
  // How many calls failed so far (loops stop early on many).
  int failures() const { return failures_; }

  void Mkdir(absl::string_view rel, mode_t mode = 0755);
  // Creates or truncates, writes `data` in one write(2), closes.
  void WriteFile(absl::string_view rel, absl::string_view data,
                 mode_t mode = 0644);
  // Creates or truncates and writes `size` bytes of stream `seed` in 1 MiB
  // write(2) calls.
  void WriteStream(absl::string_view rel, uint64_t seed, uint64_t size);
  void PWrite(absl::string_view rel, off_t offset, absl::string_view data);
  void Truncate(absl::string_view rel, off_t size);
  // renameat2(2) with `flags` (RENAME_EXCHANGE, RENAME_NOREPLACE, 0).
  void Rename(absl::string_view from, absl::string_view to, unsigned flags = 0);
  // renameat2 must fail with `expected_errno` and change nothing.
  void RenameFails(absl::string_view from, absl::string_view to, unsigned flags,
                   int expected_errno);
  void Link(absl::string_view from, absl::string_view to);
  void Symlink(absl::string_view target, absl::string_view rel);
  void Mkfifo(absl::string_view rel, mode_t mode);
  void Unlink(absl::string_view rel);
  void Rmdir(absl::string_view rel);
  void Chmod(absl::string_view rel, mode_t mode);
  // lchown: a symlink itself changes owner.
  void Chown(absl::string_view rel, uid_t uid, gid_t gid);
  // lsetxattr with XATTR_CREATE / XATTR_REPLACE / 0.
  void SetXattr(absl::string_view rel, absl::string_view name,
                absl::string_view value, int flags = 0);
  void RemoveXattr(absl::string_view rel, absl::string_view name);
  // utimensat(AT_SYMLINK_NOFOLLOW): atime and mtime both set.
  void SetTimes(absl::string_view rel, time_t sec, long nsec);
  // open(2); -1 (reported) on failure.
  int Open(absl::string_view rel, int flags, mode_t mode = 0644);
  void PWriteFd(int fd, absl::string_view rel, off_t offset,
                absl::string_view data);
  void Close(int fd, absl::string_view rel);
  // The whole file, read with read(2); after POSIX_FADV_DONTNEED when
  // `drop_cache`, so that on the mount the daemon serves it.
  std::string Read(absl::string_view rel, bool drop_cache = false);

 private:
  // Adds a failure for `op` on `rel` with the current errno unless `ok`.
  bool Check(bool ok, absl::string_view op, absl::string_view rel);

  std::string root_;
  int failures_ = 0;
};

// A tree-wide workload touching every kind of mutation the mirror must
// replay: nested directories, a 20 MiB file, small files, overwrites in
// the middle, truncates both ways, renames of directories right after
// writes inside them (no fsync between), a file kept open across the rename
// of its directory, rename over a file, RENAME_EXCHANGE (file/file and
// dir/file), RENAME_NOREPLACE (success and EEXIST), hard links (the first
// name unlinked), symlinks (relative, absolute, dangling), FIFOs, user
// xattrs (create, replace, remove, binary, 3000 bytes), chmod (0604, 0400,
// 0000, 0711 and 01777 directories), chown of files, a directory, a symlink
// and a FIFO, explicit past times, unlink and rmdir (also of just-written
// data), an unlinked-but-open file.
void RunRichWorkload(Ops& ops);

// Changes after a remount: appends, overwrites, a new nested file, renames,
// chmod, xattr, unlink.
void RunFollowUpWorkload(Ops& ops);

// Fills `root` (a native directory) with a tree for a pre-populated mirror:
// nested directories with odd modes, files of several sizes (one sparse, one
// empty, one 5 MiB), symlinks, hard links across directories, FIFOs, user
// xattrs, several owners, names with spaces, UTF-8 and 255 bytes; then
// gives every entry a distinct explicit mtime (nanoseconds included).
void PopulateNativeTree(Ops& ops);

// Gives every entry under `root`, the root included, a distinct explicit
// atime/mtime (children before their directory), not following symlinks.
void SetDistinctTimes(const std::string& root, time_t first);

// The write-heavy workload of the agent-restart tests: rounds of many small
// files and one larger file in a fresh directory, overwrites, extends and
// truncates, renames over files, then the round's directory is renamed
// right away; old rounds are deleted so the live data stays small. It keeps
// a model of every file and checks every read against it.
class ChurnWorkload {
 public:
  ChurnWorkload(std::string root, uint64_t seed);

  // Runs rounds until `stop` is set (but at least `min_rounds`), or
  // `max_time` passed, or calls keep failing.
  void Run(const std::atomic<bool>& stop, int min_rounds,
           std::chrono::seconds max_time);
  // Reads every modelled file back (from the daemon, not the page cache)
  // and checks that the workload's directory holds no other file.
  void VerifyAll();

  int rounds() const { return round_; }
  uint64_t bytes_written() const { return bytes_written_; }
  int reads_checked() const { return reads_checked_; }

 private:
  void Round();
  void WriteModelled(const std::string& rel, std::string data);
  void CheckRead(const std::string& rel, bool drop_cache);
  const std::string& RandomFile(absl::string_view prefix);

  Ops ops_;
  std::mt19937_64 rng_;
  std::map<std::string, std::string> model_;  // rel path -> contents
  int round_ = 0;
  uint64_t bytes_written_ = 0;
  int reads_checked_ = 0;
  int read_failures_ = 0;
};

}  // namespace memfuse::testing

#endif  // MEMFUSE_TESTS_E2E_WORKLOAD_H_
