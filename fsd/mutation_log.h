// The ordered stream of mutations fsd owes the mirror, from the moment fsd
// performs them until mirrord acknowledges them as applied.
//
// Every mutation gets the next sequence number when it is appended, and the
// Tree appends while holding the locks that order it (the tree lock for
// namespace changes, the inode's lock for data and attributes), so sequence
// order is the order fsd performed them in (DESIGN.md, invariant 1).
//
// Data is not copied at write(2) time. A write marks a range of one block
// dirty in an unsent Write slot of that block; further writes to the block
// widen that slot while it waits, so a block rewritten a thousand times is
// sent once or twice. The bytes are read from the file when the slot is
// sent, so they are the newest. A size change of the file closes its slots
// to widening (later writes get new slots, after the truncate).
//
// A slot stays in the log after it is sent, holding the message, until its
// Ack arrives (invariant 3): on a reconnect everything unacknowledged is sent
// again with its original sequence number (invariant 7).
//
// Which blocks are dirty, and the write limit, are the DirtySet's
// (dirty_set.h): the log marks and cleans them as slots come and go.
//
// Thread-safe. Lock order: Tree::mu_, Inode::mu, MutationLog::mu_, then the
// DirtySet's; the sender never holds mu_ while reading file data or talking
// to mirrord.
#ifndef MEMFUSE_FSD_MUTATION_LOG_H_
#define MEMFUSE_FSD_MUTATION_LOG_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "fsd/dirty_set.h"
#include "mirror.pb.h"

namespace memfuse::fsd {

namespace pb = ::memfuse::mirror::v1;

struct Inode;

class MutationLog {
 public:
  // Sent slots hold at most about this many bytes of messages; the sender
  // waits for acknowledgements beyond it.
  static constexpr uint64_t kMaxInflightBytes = 32 << 20;

  // `dirty_limit`: the most bytes of dirty blocks (--cache-max-write-size);
  // 0 for no limit.
  explicit MutationLog(uint64_t block_size, uint64_t dirty_limit = 0)
      : block_size_(block_size), dirty_(block_size, dirty_limit) {}
  MutationLog(const MutationLog&) = delete;
  MutationLog& operator=(const MutationLog&) = delete;

  // Appends a complete mutation (anything but file data); returns its seq.
  // A set_attr that changes the size, and a punch_hole, close the file's
  // slots to widening, and keep its blocks from eviction until applied.
  // `gone`: the object that loses its last name with this mutation (a
  // remove or a rename over it), or 0.
  uint64_t Append(pb::Mutation mutation, uint64_t gone = 0)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Marks [offset, offset + length) of regular file `inode` dirty.
  // REQUIRES: the inode's lock is held (orders this against truncates).
  void AppendWrite(const std::shared_ptr<Inode>& inode, uint64_t offset,
                   uint64_t length) ABSL_LOCKS_EXCLUDED(mu_);

  // The dirty blocks and the write limit (dirty_set.h): the log marks
  // blocks dirty as writes are appended and clean as their slots are
  // acknowledged and durable; writers reserve room there first.
  DirtySet& dirty() { return dirty_; }

  // What the sender sends next: a complete message, or a data slot the
  // sender turns into one (ChangeRecorder::WriteMessage) and hands back
  // with KeepForResend().
  struct ToSend {
    uint64_t seq = 0;
    std::shared_ptr<const pb::Mutation> message;  // null for a data slot
    // Data slot: the file, or null if it is gone (its last name removed
    // and its last user closed it); then nothing is left to send and the
    // sender sends an empty Write in its place.
    std::shared_ptr<Inode> inode;
    uint64_t id = 0;
    uint64_t offset = 0;
    uint64_t length = 0;
  };
  // Waits up to `timeout` for something to send (and for room in flight);
  // nullopt on timeout or after Shutdown().
  std::optional<ToSend> TakeNext(absl::Duration timeout)
      ABSL_LOCKS_EXCLUDED(mu_);
  // The message built for data slot `seq`, kept for resending.
  void KeepForResend(uint64_t seq, std::shared_ptr<const pb::Mutation> message)
      ABSL_LOCKS_EXCLUDED(mu_);

  // mirrord applied (or refused for good) everything up to `ack.seq`.
  // Returns the object to repair if the ack says the mirror lost it and
  // no repair appended after this mutation covers it already, else 0; the
  // caller calls Tree::Repair for it at once (until EndRepair its blocks
  // are not clean: the mirror does not hold them).
  uint64_t Acked(const pb::Ack& ack) ABSL_LOCKS_EXCLUDED(mu_);

  // Repairs (Tree::Repair). BeginRepair: the mutations appended from now
  // on re-create `id` in the mirror; false after kMaxRepairs attempts for
  // it (then it is refused for good). EndRepair: they are all appended.
  static constexpr int kMaxRepairs = 4;
  bool BeginRepair(uint64_t id) ABSL_LOCKS_EXCLUDED(mu_);
  void EndRepair(uint64_t id) ABSL_LOCKS_EXCLUDED(mu_);
  // Waits until no repair of `id` is being appended (or Shutdown()).
  // False if `interrupted` was set first.
  bool WaitRepairAppended(uint64_t id, const std::atomic<bool>* interrupted)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Waits until no repair is being appended (or Shutdown()); false if
  // `interrupted` was set first.
  bool WaitRepairsAppended(const std::atomic<bool>* interrupted)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Whether a repair appended mutations after `seq` (a barrier at `seq`
  // does not cover them: they repair what came before it).
  bool RepairedAfter(uint64_t seq) ABSL_LOCKS_EXCLUDED(mu_);
  // The mirror lost `lost_bytes` of `id` that fsd does not hold either:
  // its data is refused for good (fsync gives EIO; counted).
  void RefuseForGood(uint64_t id, int error, uint64_t lost_bytes)
      ABSL_LOCKS_EXCLUDED(mu_);

  // The oldest unacknowledged mutation, for a drain that makes no
  // progress: its seq, the object it names and what it is (data slots
  // not yet built say "write"). nullopt when nothing is waiting.
  struct Front {
    uint64_t seq = 0;
    uint64_t id = 0;
    std::string what;
  };
  std::optional<Front> OldestUnacked() ABSL_LOCKS_EXCLUDED(mu_);

  // `cleaned` is called when blocks may have become evictable (an
  // acknowledgement made some clean, or forgot a refusal), with this log's
  // lock held: it must only take a lock of its own that it never holds
  // while calling here. Set once, before anything is appended.
  void OnBlocksCleaned(std::function<void()> cleaned) {
    cleaned_ = std::move(cleaned);
  }

  // After a reconnect: everything up to `last_applied` is applied; the
  // rest of what was sent goes out again first.
  void Rewind(uint64_t last_applied) ABSL_LOCKS_EXCLUDED(mu_);

  // The unacknowledged create, link, remove and rename mutations, oldest
  // first (to undo them when telling mirrord where objects are).
  // REQUIRES: the tree lock is held, so that none is appended meanwhile.
  std::vector<pb::Mutation> UnackedNamespaceOps() ABSL_LOCKS_EXCLUDED(mu_);

  // Waits until `seq` is acknowledged (or Shutdown()); returns its error
  // (0 when applied), or kRepairing when the mirror had lost the object
  // the barrier is for (sync again once WaitRepairAppended returns). Only
  // sync barriers keep their error for this: a barrier of a file also
  // fails when, as it was applied, a refusal of the file's data or
  // attributes stood (see FailedErrno).
  static constexpr int kRepairing = -1;
  // With `interrupted`: returns EINTR once it is set (and Wake() called).
  int WaitApplied(uint64_t seq, const std::atomic<bool>* interrupted)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Makes waiters look at their conditions again (an interrupt).
  void Wake() ABSL_LOCKS_EXCLUDED(mu_);
  int WaitApplied(uint64_t seq) ABSL_LOCKS_EXCLUDED(mu_);

  // The errno mirrord refused data or attributes of `id` with for good,
  // or 0. A refusal stands until what was refused is gone from the file:
  // once a truncate to size 0 (O_TRUNC) is applied after it, when only
  // data was refused, or once the removal of the object's last name is.
  // (A rewrite of every byte without a truncate does not count.)
  int FailedErrno(uint64_t id) ABSL_LOCKS_EXCLUDED(mu_);

  // Whether the mirror holds block `index` of file `id` as fsd does: no
  // write to it and no size change of the file is unacknowledged, and the
  // mirror never refused the file's data. (Eviction asks this, under the
  // file's lock, so no new write can slip in.)
  bool IsBlockClean(uint64_t id, uint64_t index) ABSL_LOCKS_EXCLUDED(mu_);

  struct Backlog {
    uint64_t mutations = 0;   // not yet acknowledged
    uint64_t data_bytes = 0;  // file data among them
    uint64_t acked_bytes = 0; // file data acknowledged since start
    uint64_t last_acked = 0;
    uint64_t dirty_bytes = 0;       // memory of dirty blocks now
    uint64_t dirty_peak = 0;        // ... at most, since start
    uint64_t dirty_waits = 0;       // writes that waited for room
    uint64_t repairs = 0;           // objects re-created in the mirror
    uint64_t refused_objects = 0;   // objects the mirror refused for good
    uint64_t lost_bytes = 0;        // lost by the mirror, not held here
  };
  Backlog GetBacklog() ABSL_LOCKS_EXCLUDED(mu_);

  // Whether some acknowledged changes are not durable yet (a new agent
  // makes them so at its first commit: a sync barrier asks for one).
  bool HasLimbo() ABSL_LOCKS_EXCLUDED(mu_);

  // Waits until everything appended is acknowledged and durable, or
  // `timeout` passes; true when empty.
  bool WaitEmpty(absl::Duration timeout) ABSL_LOCKS_EXCLUDED(mu_);

  bool IsShutdown() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock l(&mu_);
    return shutdown_;
  }
  // Wakes every waiter; TakeNext and the waits return from now on.
  void Shutdown() ABSL_LOCKS_EXCLUDED(mu_);
  // Wakes TakeNext once (the sender checks its connection).
  void WakeSender() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Slot {
    std::shared_ptr<const pb::Mutation> message;  // null: unbuilt data
    // Data slots do not keep a deleted file's blocks in memory.
    std::weak_ptr<Inode> inode;
    uint64_t id = 0;                              // object the slot names
    uint64_t offset = 0;
    uint64_t length = 0;
    uint64_t wire_bytes = 0;  // size counted in flight
    bool is_data = false;
    bool is_sync = false;
    bool is_size_change = false;  // or a punch: see Append()
    bool empties_file = false;    // a truncate to size 0
    uint64_t gone = 0;            // see Append()
  };

  // A data slot of block `key` is acknowledged (or dropped).
  void CleanLocked(std::pair<uint64_t, uint64_t> key)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  Slot& SlotLocked(uint64_t seq) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return queue_[seq - front_seq_];
  }
  uint64_t AppendLocked(Slot slot) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A data slot or size change was acknowledged and is durable: its
  // blocks may be clean.
  void ReleaseLocked(uint64_t id, uint64_t block, bool is_data,
                     bool is_size_change) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Returns the object to repair, or 0 (see Acked).
  uint64_t AckedLocked(const pb::Ack& ack) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Refusal bookkeeping of AckedLocked: `slot` was refused with `error`,
  // or applied.
  void RefusedLocked(const Slot& slot, int error)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void AppliedLocked(const Slot& slot) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CleanedLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (cleaned_) cleaned_();
  }

  const uint64_t block_size_;
  absl::Mutex mu_;
  DirtySet dirty_;
  std::deque<Slot> queue_ ABSL_GUARDED_BY(mu_);  // seqs front_seq_ ...
  uint64_t front_seq_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t next_seq_ ABSL_GUARDED_BY(mu_) = 1;  // next to assign
  uint64_t send_seq_ ABSL_GUARDED_BY(mu_) = 1;  // next to send
  uint64_t inflight_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t data_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t acked_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  bool poked_ ABSL_GUARDED_BY(mu_) = false;
  // Unsent data slots still open to widening: inode -> block -> seq.
  absl::flat_hash_map<uint64_t, absl::flat_hash_map<uint64_t, uint64_t>>
      open_slots_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, int> sync_errors_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, int> failed_ ABSL_GUARDED_BY(mu_);
  // Acknowledged as applied but not yet durable (Ack.durable_seq): their
  // blocks stay dirty, and a write's message (with its range of the data
  // region, which the agent may apply again) is kept.
  struct Limbo {
    uint64_t seq;
    uint64_t id;
    uint64_t block;
    bool is_data;
    bool is_size_change;
    std::shared_ptr<const pb::Mutation> message;
  };
  std::deque<Limbo> limbo_ ABSL_GUARDED_BY(mu_);
  uint64_t durable_seq_ ABSL_GUARDED_BY(mu_) = 0;
  // Repairs: the first seq of the last repair of each object, how often
  // each was repaired, and those whose repair is being appended.
  absl::flat_hash_map<uint64_t, uint64_t> repair_seq_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, int> repair_attempts_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<uint64_t> repairing_ ABSL_GUARDED_BY(mu_);
  uint64_t repairs_ ABSL_GUARDED_BY(mu_) = 0;
  // One past the last seq a repair appended.
  uint64_t repair_end_seq_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t refused_objects_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t lost_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  // Ids in failed_ whose refusals include more than data (attributes,
  // xattrs): a truncate does not undo those.
  absl::flat_hash_set<uint64_t> failed_beyond_data_ ABSL_GUARDED_BY(mu_);
  std::function<void()> cleaned_;
  // Unacknowledged size changes, by file.
  absl::flat_hash_map<uint64_t, int> size_changes_ ABSL_GUARDED_BY(mu_);
};

}  // namespace memfuse::fsd

#endif  // MEMFUSE_FSD_MUTATION_LOG_H_
