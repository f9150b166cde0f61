// The in-memory filesystem tree: the inode table, the namespace and file
// contents, with Linux semantics and errno values. Knows nothing of FUSE
// requests and replies; fsd/ops/ translates between the two.
//
// Thread-safe: every public method may be called from any FUSE worker thread.
// Namespace changes take `mu_` exclusively; lookups, getattr and readdir take
// it shared; file I/O takes it only to find the inode and then works under
// that inode's own mutex, so writes to different files run in parallel. No
// method blocks on anything but these mutexes.
//
// Methods returning `struct stat` for an entry ("entry methods") add one to
// the inode's kernel lookup count, which Forget() takes back. Every mutation
// is one method naming its objects by inode number (their stable ids), the
// shape in which it will be sent, in order, to the mirror agent.
#ifndef MEMFUSE_FSD_TREE_H_
#define MEMFUSE_FSD_TREE_H_

#include <fuse_lowlevel.h>
#include <sys/stat.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "fsd/block_budget.h"
#include "fsd/inode.h"
#include "fsd/mutation_log.h"

namespace memfuse::fsd {

// Who asks: owner of what they create.
struct Caller {
  uid_t uid = 0;
  gid_t gid = 0;
};

class Tree {
 public:
  static constexpr size_t kMaxNameLength = 255;

  // The root directory is owned by `root_owner` with mode 0755.
  Tree(uint64_t block_size, BlockBudget* budget, Caller root_owner = {});
  Tree(const Tree&) = delete;
  Tree& operator=(const Tree&) = delete;

  // Entry methods (see above).
  absl::StatusOr<struct stat> Lookup(fuse_ino_t parent, std::string_view name);
  // Creates a file, directory, symlink (with `symlink_target`), FIFO, socket
  // or device node, by the file type in `mode`.
  absl::StatusOr<struct stat> MakeNode(fuse_ino_t parent, std::string_view name,
                                       mode_t mode, dev_t rdev,
                                       std::string_view symlink_target,
                                       const Caller& caller);
  absl::StatusOr<struct stat> Link(fuse_ino_t ino, fuse_ino_t new_parent,
                                   std::string_view new_name);

  // Takes back `count` kernel lookups; frees the inode when nothing refers
  // to it any more.
  void Forget(fuse_ino_t ino, uint64_t count);

  absl::StatusOr<struct stat> GetAttr(fuse_ino_t ino);
  // `to_set` is a mask of FUSE_SET_ATTR_* bits selecting fields of `attr`.
  absl::StatusOr<struct stat> SetAttr(fuse_ino_t ino, const struct stat& attr,
                                      int to_set);
  absl::StatusOr<std::string> ReadLink(fuse_ino_t ino);

  absl::Status Unlink(fuse_ino_t parent, std::string_view name);
  absl::Status Rmdir(fuse_ino_t parent, std::string_view name);
  // `flags`: 0, RENAME_NOREPLACE or RENAME_EXCHANGE.
  absl::Status Rename(fuse_ino_t parent, std::string_view name,
                      fuse_ino_t new_parent, std::string_view new_name,
                      unsigned int flags);

  // Clears setuid, and setgid if group-executable, as Linux does after a
  // write, truncate or chown by an unprivileged process (the kernel says
  // when). True if the mode changed.
  bool KillSuidGid(fuse_ino_t ino);

  // Opening a file: applies O_TRUNC.
  absl::Status Open(fuse_ino_t ino, int flags);
  // Reads up to `size` bytes at `offset` into `out`; returns the count
  // (short at end of file).
  absl::StatusOr<size_t> Read(fuse_ino_t ino, uint64_t offset, size_t size,
                              char* out);
  // With `kernel_times`, the write comes from the kernel's writeback cache,
  // which keeps mtime and ctime itself and sends them with a SETATTR: the
  // time fsd receives the data is not the time it was written.
  absl::StatusOr<size_t> Write(fuse_ino_t ino, uint64_t offset,
                               const char* data, size_t size,
                               bool kernel_times = false);
  absl::Status Fallocate(fuse_ino_t ino, int mode, uint64_t offset,
                         uint64_t length);
  absl::StatusOr<size_t> CopyFileRange(fuse_ino_t in, uint64_t in_offset,
                                       fuse_ino_t out, uint64_t out_offset,
                                       size_t length);

  // Calls `fill` for each entry after `cookie` ("." and ".." first) until it
  // returns false. With `plus`, every non-dot entry `fill` accepted counts as
  // a kernel lookup. `fill` runs under the tree lock: it must only copy.
  using DirFiller = absl::FunctionRef<bool(
      std::string_view name, const struct stat& st, uint64_t next_cookie,
      bool is_dot)>;
  absl::Status ReadDir(fuse_ino_t ino, uint64_t cookie, bool plus,
                       DirFiller fill);

  // `flags`: 0, XATTR_CREATE or XATTR_REPLACE.
  absl::Status SetXattr(fuse_ino_t ino, std::string_view name,
                        std::string_view value, int flags);
  absl::StatusOr<std::string> GetXattr(fuse_ino_t ino, std::string_view name);
  // The names, each followed by a NUL, as listxattr(2) returns them.
  absl::StatusOr<std::string> ListXattr(fuse_ino_t ino);
  absl::Status RemoveXattr(fuse_ino_t ino, std::string_view name);

  struct Usage {
    uint64_t inodes;
    uint64_t bytes_used;
    uint64_t bytes_limit;
  };
  Usage GetUsage();

  uint64_t block_size() const { return block_size_; }

  // --- The mirror -------------------------------------------------------
  // From now on every mutation is appended to `log` (in the order
  // performed) for the mirror agent. Call before serving requests.
  void SetMirrorLog(MutationLog* log) { log_ = log; }

  // Loading what the mirror holds (at mount, before serving). These change
  // the tree without logging anything: the mirror already has it.
  void LoadRoot(const pb::Attr& attr,
                const google::protobuf::RepeatedPtrField<pb::XattrEntry>& xattrs);
  // Adds `entry` (bound to id entry.attr().id()) under `parent`; a second
  // name of a known id is a hard link.
  absl::Status LoadEntry(fuse_ino_t parent, const pb::DirEntry& entry);
  // Stores file contents read from the mirror. ENOSPC if the cache is full.
  absl::Status LoadData(fuse_ino_t ino, uint64_t offset, std::string_view data);
  // Ids below `next` are taken (by the mirror's objects).
  void ReserveIdsBelow(fuse_ino_t next);

  // Where every object of the mirror is named, as of the last mutation the
  // mirror applied: the tree now, minus the effect of every unacknowledged
  // namespace mutation in `log`. Parents come before their children.
  std::vector<pb::Binding> MirrorBindings(MutationLog* log);

  // The Write message for a data slot: the newest bytes of
  // [offset, offset + length) below the file's size, and its times. The
  // bytes go into `write->data`, or to `out` (room for `length` bytes)
  // when it is given. Returns how many bytes there were.
  uint64_t FillWrite(Inode& inode, uint64_t offset, uint64_t length,
                     pb::Write* write, char* out = nullptr)
      ABSL_LOCKS_EXCLUDED(inode.mu);

 private:
  using InodePtr = std::shared_ptr<Inode>;

  InodePtr Find(fuse_ino_t ino) ABSL_LOCKS_EXCLUDED(mu_);
  // REQUIRES: mu_ held (shared at least). Aborts on an unknown inode: the
  // kernel only names inodes we gave it.
  Inode& GetLocked(fuse_ino_t ino) ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // The directory `ino`, ENOTDIR if it is not one, ENOENT if it was removed.
  absl::StatusOr<Inode*> GetDirLocked(fuse_ino_t ino)
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  void FillStatLocked(const Inode& inode, struct stat* st)
      ABSL_SHARED_LOCKS_REQUIRED(mu_, inode.mu);
  struct stat StatForEntryLocked(Inode& inode) ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Marks a directory's contents changed (mtime and ctime now).
  void TouchDirLocked(Inode& dir) ABSL_SHARED_LOCKS_REQUIRED(mu_);
  void TouchCtimeLocked(Inode& inode) ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Drops one name of `inode`.
  void DropLinkLocked(Inode& inode, std::vector<InodePtr>* doomed)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Removes `inode` from the table if no name and no kernel lookup remain;
  // the caller destroys `doomed` after unlocking.
  void MaybeFreeLocked(Inode& inode, std::vector<InodePtr>* doomed)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Names the new `inode` `name` in `dir` and adds it to the table.
  void AddNewLocked(Inode& dir, std::string_view name, InodePtr inode)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // True if `ino` is `ancestor` or below it.
  bool IsWithinLocked(fuse_ino_t ino, fuse_ino_t ancestor)
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  absl::Status ExchangeLocked(Inode& old_dir, std::string_view name,
                              Inode& new_dir, std::string_view new_name)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Appends a set_attr of the fields in `mask` (FUSE_SET_ATTR_* bits) of
  // `inode` as they are now, if it is mirrored.
  void LogSetAttrLocked(Inode& inode, uint32_t mask)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(inode.mu);
  void Log(pb::Mutation mutation) {
    if (log_ != nullptr) log_->Append(std::move(mutation));
  }

  const uint64_t block_size_;
  BlockBudget* const budget_;
  MutationLog* log_ = nullptr;  // null: no mirror

  absl::Mutex mu_;
  absl::flat_hash_map<fuse_ino_t, InodePtr> table_ ABSL_GUARDED_BY(mu_);
  fuse_ino_t next_ino_ ABSL_GUARDED_BY(mu_) = FUSE_ROOT_ID + 1;
};

}  // namespace memfuse::fsd

#endif  // MEMFUSE_FSD_TREE_H_
