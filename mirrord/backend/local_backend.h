// The local mirror: a plain 1:1 copy of the mount in a directory on disk.
// Its code, by job: local_backend.cc (session, replay state, ids, the
// front of Apply), local_backend_changes.cc (namespace and attribute
// changes), local_backend_data.cc (file data, direct I/O),
// local_backend_reads.cc (listings, stat, status), local_posix.h (the
// mapping onto POSIX calls they share).
//
// Same names, modes, owners (where the agent may), times, symlinks, hard
// links, special files and user xattrs as the mount; no bookkeeping file
// inside. Objects are named by fsd's ids (root: 1) and resolved through the
// IdMap when a mutation is applied; every access goes through ConfinedDir
// (a symlink planted in the mirror is never followed), open descriptors
// are a bounded FdCache, and every change to the files and every sync is
// made through an Env (env.h: tests inject faults there).
//
// Replay (DESIGN.md, invariant 7). The root's xattr `user.memfuse.seq` holds
// "<session hex> <seq> [x <st_ino>]": every mutation up to <seq> of that
// session is applied. Before a namespace mutation (create, link, remove,
// rename) seq-1 is stored; after a Sync barrier, the sync's seq. Writes,
// attribute and xattr changes are not recorded: a run of them re-applied on
// its own result gives that result again. So after a crash at most one
// namespace mutation is replayed on its own result, and each is written to
// be safe there: a create finding the same kind of object keeps it (no
// truncation) and re-applies the attributes, a remove of an absent name
// succeeds, a rename whose source is gone and whose target exists
// succeeds, a link whose new name already is the file succeeds. An exchange
// cannot be recognised that way, so the source's st_ino is stored with its
// seq, and a replay finding another inode at the source name is skipped.
// Without user xattrs on the mirror's filesystem the state is kept in
// memory only (a warning says so).
//
// Thread-safety: Apply() is called by one thread at a time (the server's
// stream order); the read calls (ListDirectory, ReadBlock, ReadLink, Stat,
// FillStatus) from any thread concurrently with it and with each other.
// mu_ guards the id map and the replay state. Names are resolved and
// descriptors opened under mu_, so a concurrent rename cannot send an
// operation to the wrong object; data I/O (pwrite, pread, fsync, listing a
// directory's entries) happens outside it.
#ifndef MEMFUSE_MIRRORD_BACKEND_LOCAL_BACKEND_H_
#define MEMFUSE_MIRRORD_BACKEND_LOCAL_BACKEND_H_

#include <sys/stat.h>
#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "mirrord/backend/backend.h"
#include "mirrord/backend/backend_base.h"
#include "mirrord/backend/backend_common.h"
#include "mirrord/backend/confined_dir.h"
#include "mirrord/backend/env.h"
#include "mirrord/backend/fd_cache.h"
#include "mirrord/backend/id_map.h"

namespace memfuse::mirrord {

class LocalBackend final : public BackendBase {
 public:
  // Descriptors kept open at most (files and directories).
  static constexpr size_t kFdCacheCapacity = 1024;
  // O_DIRECT descriptors kept open at most, for the files being written.
  static constexpr size_t kDirectFdCacheCapacity = 64;
  // Writes whose aligned part is smaller than this go through the page
  // cache only: a direct write waits for the disk.
  static constexpr uint64_t kMinDirectWrite = 64 << 10;
  // Where the replay state lives, on the mirror root.
  static constexpr char kStateXattr[] = "user.memfuse.seq";
  // The agent's own xattrs: never shown to fsd, never set by it.
  static constexpr char kReservedXattrPrefix[] = "user.memfuse.";

  // Opens (creating it with mode 0755 if missing) the mirror at `path`,
  // changed through `env` (which must outlive the backend).
  static absl::StatusOr<std::unique_ptr<LocalBackend>> Open(
      const std::string& path, Env* env = Env::Default());

  // The mirror root, opened by Open(): what the agent's confinement lets it
  // reach (confine.h).
  int root_fd() const { return dir_.root(); }

  LocalBackend(const LocalBackend&) = delete;
  LocalBackend& operator=(const LocalBackend&) = delete;
  ~LocalBackend() override = default;

  absl::StatusOr<pb::ReadLinkResponse> ReadLink(
      const pb::ReadLinkRequest& request) override ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<pb::StatResponse> Stat(const pb::StatRequest& request) override
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<pb::StatFsResponse> StatFs() override ABSL_LOCKS_EXCLUDED(mu_);

 private:
  // BackendBase's hooks.
  absl::StatusOr<pb::HandshakeResponse> DescribeMirror() override;
  absl::StatusOr<uint64_t> StartSessionLocked(uint64_t previous_session)
      override ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void BoundLocked(uint64_t id) override ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<uint64_t> ReadBytes(const pb::ReadBlockRequest& request,
                                     absl::Span<char> out) override
      ABSL_LOCKS_EXCLUDED(mu_);
  // A listing's entries; hard links are known by (st_dev, st_ino).
  absl::StatusOr<std::vector<ListedEntry>> ReadDirectory(uint64_t dir_id)
      override ABSL_LOCKS_EXCLUDED(mu_);
  uint64_t LinkedIdLocked(const ListedEntry& listed) override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ListedLocked(uint64_t id, const ListedEntry& listed) override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  using SharedFd = FdCache::SharedFd;

  // What the root's state xattr says.
  struct ReplayState {
    uint64_t session = 0;
    uint64_t seq = 0;
    std::optional<uint64_t> ino;  // an exchange's source inode
    bool operator==(const ReplayState&) const = default;
  };

  // An object as its parent directory sees it: *at() calls take (dir, name).
  // For the root, `dir` is the root itself and `name` is empty.
  struct Entry {
    SharedFd dir;
    std::string name;
    bool is_root() const { return name.empty(); }
  };

  LocalBackend(std::string path, ConfinedDir dir, SharedFd root, Env* env);

  // BackendBase's storage operations; the namespace and attribute ones
  // take mu_ and call the ...Locked handler below.
  absl::Status ApplyCreate(uint64_t seq, const pb::Create& op) override
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status ApplyWrite(const pb::Write& op) override
      ABSL_LOCKS_EXCLUDED(mu_);
  // Punches with fallocate; writes zeros where the filesystem cannot.
  absl::Status ApplyPunchHole(const pb::PunchHole& op) override
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status ApplySetAttr(const pb::SetAttr& op) override
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status ApplyLink(uint64_t seq, const pb::Link& op) override
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status ApplyRemove(uint64_t seq, const pb::Remove& op) override
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status ApplyRename(uint64_t seq, const pb::Rename& op) override
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status ApplySetXattr(const pb::SetXattr& op) override
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status ApplyRemoveXattr(const pb::RemoveXattr& op) override
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status ApplySync(uint64_t seq, const pb::Sync& op) override
      ABSL_LOCKS_EXCLUDED(mu_);

  // One handler per namespace or attribute change; each returns how it
  // went (AckBook says which failures are permanent).
  absl::Status CreateLocked(uint64_t seq, const pb::Create& op)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Writes `data` at `offset` of file `id` (open as `fd`): the part
  // aligned for direct I/O through an O_DIRECT descriptor of the same
  // file, the head and tail through `fd`.
  absl::Status WriteData(uint64_t id, const SharedFd& fd,
                         absl::string_view data, uint64_t offset)
      ABSL_LOCKS_EXCLUDED(mu_);
  // A cached O_DIRECT descriptor of file `id` reopened from `fd`, or null
  // when direct I/O is not possible for it. Opened for reading too where
  // the agent may (block reads use it), else for writing only.
  SharedFd DirectFd(uint64_t id, const SharedFd& fd) ABSL_LOCKS_EXCLUDED(mu_);
  // Reads into `out` with O_DIRECT when it, `offset` and its size are all
  // aligned for it: nullopt when they are not or the file refuses (the
  // caller reads through the page cache).
  std::optional<absl::StatusOr<uint64_t>> ReadDirect(uint64_t id,
                                                     const SharedFd& fd,
                                                     uint64_t offset,
                                                     absl::Span<char> out)
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status SetAttrLocked(const pb::SetAttr& op)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status LinkLocked(uint64_t seq, const pb::Link& op)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status RemoveLocked(uint64_t seq, const pb::Remove& op)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status RenameLocked(uint64_t seq, const pb::Rename& op)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status ApplyExchange(uint64_t seq, const pb::Rename& op,
                             const Entry& from, const Entry& to)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status SetXattrLocked(const pb::SetXattr& op)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status RemoveXattrLocked(const pb::RemoveXattr& op)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Sets owner, mode and times of a just created (or re-found) object as
  // `attr` says.
  absl::Status SetCreatedAttrs(const Entry& entry, const pb::Attr& attr)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // chown that tolerates an agent without the right to give files away.
  absl::Status ChownEntry(const Entry& entry, uint32_t uid, uint32_t gid);

  // The descriptor of directory `id`, from the cache or opened now.
  absl::StatusOr<SharedFd> DirFdLocked(uint64_t id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Where `id` is: its first name's directory descriptor and name.
  absl::StatusOr<Entry> EntryLocked(uint64_t id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A read-write descriptor of regular file `id`, cached.
  absl::StatusOr<SharedFd> FileFdLocked(uint64_t id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // INVALID_ARGUMENT unless `id` is bound (and, for `parent`, bound).
  // Missing() for an id not bound here.
  absl::Status CheckKnownLocked(uint64_t id, absl::string_view what) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // False for a cached descriptor whose object was removed underneath.
  static bool StillNamed(const SharedFd& fd);
  // Forgets the descriptor of `id` once it has no name left (and remembers
  // the id as unlinked).
  void ForgetIfUnnamedLocked(uint64_t id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // The replay state as stored on the root (none: all zero).
  absl::StatusOr<ReplayState> LoadStateLocked()
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Stores `state` (in memory only when the mirror has no user xattrs).
  absl::Status StoreStateLocked(const ReplayState& state)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Before a namespace mutation: records that everything before `seq` is
  // applied, unless that is already recorded.
  absl::Status RecordBeforeLocked(uint64_t seq)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Indexes by inode the bound files Bind() added since the last call, so
  // a listing recognises their other hard links.
  void IndexBoundFilesLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // BackendBase's hooks for Apply. WhereInMirror: " at <mirror path>" of
  // the object a failed mutation names, for the log.
  absl::StatusOr<bool> NeedsApplyingLocked(const pb::Mutation& mutation)
      override ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status AfterChange(const pb::Mutation& mutation,
                           absl::Status status) override;
  std::string WhereInMirror(const pb::Mutation& m) override
      ABSL_LOCKS_EXCLUDED(mu_);
  pb::Ack MakeAck(const pb::Mutation& mutation, const absl::Status& status)
      override ABSL_LOCKS_EXCLUDED(mu_);

  const std::string path_;
  Env* const env_;
  const ConfinedDir dir_;
  const SharedFd root_;  // dir_.root(), shared like the cached descriptors
  FdCache fds_{kFdCacheCapacity};
  FdCache direct_fds_{kDirectFdCacheCapacity};
  // The file offset alignment direct I/O needs on the mirror's filesystem:
  // 0 until a file was asked, kNoDirectIo when it has none.
  static constexpr uint32_t kNoDirectIo = UINT32_MAX;
  std::atomic<uint32_t> dio_align_{0};

  // False once the mirror said it has no user xattrs: state in memory.
  bool persist_state_ ABSL_GUARDED_BY(mu_) = true;
  // The state last stored (or read).
  ReplayState stored_ ABSL_GUARDED_BY(mu_);
  // Files with several hard links seen in listings or bindings of this
  // session, by (st_dev, st_ino), so other names of them keep their id.
  absl::flat_hash_map<std::pair<dev_t, ino_t>, uint64_t> inode_ids_
      ABSL_GUARDED_BY(mu_);
  std::vector<uint64_t> unindexed_bindings_ ABSL_GUARDED_BY(mu_);
  // Ids whose last name went, most recent last (at most kMaxUnlinked): fsd
  // may still write to such a file (unlinked but open), which changes
  // nothing in the mirror and is no error.
  static constexpr size_t kMaxUnlinked = 65536;
  absl::flat_hash_set<uint64_t> unlinked_ ABSL_GUARDED_BY(mu_);
  std::deque<uint64_t> unlinked_order_ ABSL_GUARDED_BY(mu_);

  // For GetStatus.
};

}  // namespace memfuse::mirrord

#endif  // MEMFUSE_MIRRORD_BACKEND_LOCAL_BACKEND_H_
