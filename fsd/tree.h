// The in-memory filesystem tree: the inode table, the namespace and file
// contents, with Linux semantics and errno values. Knows nothing of FUSE
// requests and replies; fsd/ops/ translates between the two. Its code, by
// job: tree.cc (inode table, namespace), tree_file.cc (file data),
// tree_xattr.cc (xattrs), tree_load.cc (what it loads from the mirror and
// binds), tree_mirror.cc (reads of the mirror, eviction, readahead),
// tree_rules.h (the small rules they share).
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

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "fsd/block_budget.h"
#include "fsd/block_cache.h"
#include "fsd/block_fetcher.h"
#include "fsd/change_recorder.h"
#include "fsd/inode.h"
#include "fsd/mirror_reader.h"
#include "fsd/mutation_log.h"
#include "fsd/single_flight.h"

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
  ~Tree();

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
  // A file handle of `ino` is handed out (open, create): counted until
  // Released(). ENOENT when the file lost its last name before this open
  // reached fsd (the kernel had resolved the name) and the mirror has
  // dropped bytes of it that fsd does not hold: the open lost the race
  // with the unlink. Call before Open(), which may truncate.
  absl::Status Opened(fuse_ino_t ino);
  void Released(fuse_ino_t ino);
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
  void SetMirrorLog(MutationLog* log);
  // From now on directories and blocks missing here are read through
  // `reader`, and clean blocks may be evicted to make room in the cache.
  // Starts the readahead threads. Call after SetMirrorLog, before serving.
  void SetMirrorReader(MirrorReader* reader);
  // Ends the readahead threads (before the reader goes).
  void StopMirrorReads();
  // What the mirror can store (from each handshake with its agent): longer
  // names, and user.* xattrs beyond an object's room there, are refused
  // with the errno the mirror's filesystem gives.
  void SetMirrorLimits(const pb::MirrorLimits& limits)
      ABSL_LOCKS_EXCLUDED(limits_mu_);
  // The longest name accepted.
  size_t name_max() const { return name_max_.load(std::memory_order_relaxed); }

  // Lists directory `ino` from the mirror if it was not yet (lazy loading).
  absl::Status EnsureListed(fuse_ino_t ino);
  // The subdirectories of `ino` (for loading a whole tree at mount).
  std::vector<fuse_ino_t> SubdirectoriesOf(fuse_ino_t ino);
  // Reads the missing blocks of every file, in no particular order, while
  // the cache has room without evicting anything; calls `progress` with
  // the bytes fetched so far and the total missing at the start, about
  // once a second, and returns the bytes fetched. Stops early if `stop`.
  uint64_t PrefetchAll(const std::atomic<bool>& stop,
                       absl::FunctionRef<void(uint64_t done, uint64_t total)>
                           progress);

  // The block fetcher's figures and the directories listed.
  struct CacheStats : BlockFetcher::Stats {
    uint64_t dirs_listed = 0;
  };
  CacheStats GetCacheStats() const;

  // How long a read, and a write, waits for room in the cache while the
  // mirror may still make some (BlockFetcher). (Tests shorten them.) Call
  // before serving.
  static constexpr absl::Duration kReadRoomWait = BlockFetcher::kReadRoomWait;
  static constexpr absl::Duration kWriteRoomWait =
      BlockFetcher::kWriteRoomWait;
  void SetRoomWaits(absl::Duration read, absl::Duration write) {
    fetcher_.SetRoomWaits(read, write);
  }

  // The tree's own memory (not in --cache-size): inodes, directory
  // entries, symlink targets and xattrs. Walks the whole tree under the
  // shared lock: for operators, not for a hot path.
  struct MetadataStats {
    uint64_t inodes = 0;
    uint64_t entries = 0;
    uint64_t bytes = 0;
  };
  MetadataStats GetMetadataStats() ABSL_LOCKS_EXCLUDED(mu_);

  // Loading what the mirror holds. These change the tree without logging
  // anything: the mirror already has it. A directory loaded is unlisted
  // (its entries are read on first use), a file's blocks are missing.
  void LoadRoot(const pb::Attr& attr,
                const google::protobuf::RepeatedPtrField<pb::XattrEntry>& xattrs);
  // Adds `entry` (bound to id entry.attr().id()) under `parent`; a second
  // name of a known id is a hard link.
  absl::Status LoadEntry(fuse_ino_t parent, const pb::DirEntry& entry);

  // Where every object of the mirror is named, as of the last mutation the
  // mirror applied: the tree now, minus the effect of every unacknowledged
  // namespace mutation in `log`. Parents come before their children.
  std::vector<pb::Binding> MirrorBindings(MutationLog* log);

  // The mirror lost object `id` (an Ack's missing_id): appends what makes
  // it exist again as it is here, after everything already queued: a
  // Create (with `repair`) of each directory on its path from the root and
  // of itself, its attributes and xattrs, and for a file every block held
  // in memory. Bytes that only the mirror held are lost: logged with the
  // path and refused for good (MutationLog::RefuseForGood). Nothing for an
  // object that no longer has a name here. Called from the thread reading
  // acks, right after MutationLog::Acked.
  //
  // The blocks are not appended here (that thread must not wait for room
  // under the dirty limit): they are returned, for ResendBlocks on another
  // thread, which ends the repair (MutationLog::EndRepair). With none to
  // send, the repair ends here.
  struct RepairData {
    std::shared_ptr<Inode> inode;  // null: nothing to send
    std::vector<uint64_t> blocks;
  };
  RepairData Repair(fuse_ino_t id) ABSL_LOCKS_EXCLUDED(mu_);
  // Appends a write of each block of `data` still held, each once the
  // dirty limit has room for it, then ends the repair.
  void ResendBlocks(const RepairData& data);
  // A path of `ino` below the mount, for log lines ("?" if it has none).
  std::string PathOf(fuse_ino_t ino) ABSL_LOCKS_EXCLUDED(mu_);

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
  absl::Status RmdirLocked(Inode& dir, fuse_ino_t parent,
                           std::string_view name, Inode& inode,
                           std::vector<InodePtr>* doomed)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status RenameLocked(Inode& old_dir, fuse_ino_t parent,
                            std::string_view name, Inode& new_dir,
                            fuse_ino_t new_parent, std::string_view new_name,
                            unsigned int flags, std::vector<InodePtr>* doomed)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status ExchangeLocked(Inode& old_dir, std::string_view name,
                              Inode& new_dir, std::string_view new_name)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  InodePtr NewInode(fuse_ino_t ino, mode_t mode);
  // The names from the root down to `ino`: (directory, name) pairs, the
  // last one naming `ino` itself. Empty for the root; nullopt when `ino`
  // has no name (removed) or is unknown.
  std::optional<std::vector<std::pair<fuse_ino_t, std::string>>> NamesOfLocked(
      fuse_ino_t ino) ABSL_SHARED_LOCKS_REQUIRED(mu_);
  absl::Status LoadEntryLocked(Inode& dir, const pb::DirEntry& entry)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // --- Lazy loading (tree_mirror.cc) --------------------------------------
  using Room = BlockFetcher::Room;
  // Holds a pin (Inode::pins) on one file until it goes or holds another.
  class VictimPin {
   public:
    VictimPin() = default;
    VictimPin(const VictimPin&) = delete;
    VictimPin& operator=(const VictimPin&) = delete;
    ~VictimPin() { Hold(nullptr); }
    void Hold(std::shared_ptr<Inode> inode) {
      if (inode_ != nullptr) inode_->pins.fetch_sub(1);
      inode_ = std::move(inode);
      if (inode_ != nullptr) inode_->pins.fetch_add(1);
    }
    const Inode* get() const { return inode_.get(); }

   private:
    std::shared_ptr<Inode> inode_;
  };
  // Lists `ino` from the mirror now (one listing in flight per directory).
  absl::Status ListNow(fuse_ino_t ino);
  absl::Status ListOnce(fuse_ino_t ino);
  // Before `name` in `parent` loses that name: an unlisted directory is
  // listed (its emptiness matters).
  absl::Status ListBeforeRemoval(fuse_ino_t parent, std::string_view name);
  // An open file losing its last name keeps its bytes, and the mirror
  // drops them with the name, so its missing blocks are fetched first.
  // The decision is made under the exclusive tree lock by the unlink or
  // rename itself, right before the name goes: Opened() counts opens
  // under the same lock (shared), so an open either came first and is
  // seen here, or comes after and sees the name gone (and refuses to hand
  // out a file with dropped bytes). When this says so, the caller drops
  // the lock, calls FetchBeforeLastName() and looks again; `pin` (already
  // holding `inode`) means it fetched once: what is still missing then
  // could not be read, and the name goes anyway (reads of it give EIO).
  bool MustFetchBeforeLastNameLocked(Inode& inode, const VictimPin& pin)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Pins `victim` in `pin` (no eviction of what is fetched before the
  // name goes) and fetches its missing blocks, with no lock held.
  void FetchBeforeLastName(const InodePtr& victim, VictimPin* pin)
      ABSL_LOCKS_EXCLUDED(mu_);
  const uint64_t block_size_;
  BlockBudget* const budget_;
  MutationLog* log_ = nullptr;  // null: no mirror
  ChangeRecorder recorder_;  // what the mirror is told
  MirrorReader* reader_ = nullptr;  // null: nothing is ever missing
  BlockFetcher fetcher_;

  // Whether `inode`, its mirrored xattr `name` set to a value of
  // `value_size` bytes, still fits the mirror's room for them.
  absl::Status CheckXattrRoom(const Inode& inode, std::string_view name,
                              size_t value_size)
      ABSL_SHARED_LOCKS_REQUIRED(inode.mu) ABSL_LOCKS_EXCLUDED(limits_mu_);

  std::atomic<size_t> name_max_{kMaxNameLength};
  absl::Mutex limits_mu_;
  pb::MirrorLimits limits_ ABSL_GUARDED_BY(limits_mu_);

  SingleFlight<fuse_ino_t> dir_flights_;
  std::atomic<uint64_t> dirs_listed_{0};

  absl::Mutex mu_;
  absl::flat_hash_map<fuse_ino_t, InodePtr> table_ ABSL_GUARDED_BY(mu_);
  fuse_ino_t next_ino_ ABSL_GUARDED_BY(mu_) = FUSE_ROOT_ID + 1;
};

}  // namespace memfuse::fsd

#endif  // MEMFUSE_FSD_TREE_H_
