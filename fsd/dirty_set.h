// The dirty set: which blocks of which files hold bytes the mirror does not
// have yet, the memory they are counted with, and the write limit
// (--cache-max-write-size) writers wait at.
//
// A block is dirty from the write that marks it until the last data slot
// carrying a version of it is acknowledged as durable; the MutationLog
// marks and cleans it as slots are made and acknowledged. It counts with
// the buffer that holds it (block_size.h), at most the block size.
//
// Thread-safe. Lock order: MutationLog's lock before this one. Reserve()
// waits holding no lock of the caller's (see Tree::Write).
#ifndef MEMFUSE_FSD_DIRTY_SET_H_
#define MEMFUSE_FSD_DIRTY_SET_H_

#include <cstdint>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"

namespace memfuse::fsd {

class DirtySet {
 public:
  // `limit`: the most bytes of dirty blocks; 0 for no limit.
  DirtySet(uint64_t block_size, uint64_t limit)
      : block_size_(block_size), limit_(limit) {}
  DirtySet(const DirtySet&) = delete;
  DirtySet& operator=(const DirtySet&) = delete;

  // Room held under the limit for a write in progress, given back when
  // it goes.
  class Reservation {
   public:
    Reservation() = default;
    Reservation(DirtySet* set, uint64_t bytes) : set_(set), bytes_(bytes) {}
    Reservation(Reservation&& other) noexcept
        : set_(std::exchange(other.set_, nullptr)), bytes_(other.bytes_) {}
    Reservation& operator=(Reservation&&) = delete;
    ~Reservation() {
      if (set_ != nullptr) set_->Release(bytes_);
    }

   private:
    DirtySet* set_ = nullptr;
    uint64_t bytes_ = 0;
  };
  // Room for a write that may dirty up to `bytes` more: waits until the
  // blocks dirty now plus the room others hold leave `bytes`, so dirty
  // bytes never pass the limit. Returns at once after Shutdown().
  Reservation Reserve(uint64_t bytes) ABSL_LOCKS_EXCLUDED(mu_);

  // The most that writing [offset, offset + length) can add to the dirty
  // bytes: for each block it touches, the buffer that holds up to its end.
  uint64_t Charge(uint64_t offset, uint64_t length) const;

  // Block `block` of file `id` holds dirty bytes up to `end` (within the
  // block); `new_slot`: a new data slot carries them (else one already
  // carrying the block was widened).
  void Mark(uint64_t id, uint64_t block, uint64_t end, bool new_slot)
      ABSL_LOCKS_EXCLUDED(mu_);
  // A data slot carrying the block is acknowledged (or dropped); true when
  // that was the last one: the block is clean.
  bool Clean(uint64_t id, uint64_t block) ABSL_LOCKS_EXCLUDED(mu_);
  bool Contains(uint64_t id, uint64_t block) ABSL_LOCKS_EXCLUDED(mu_);

  uint64_t limit() const { return limit_; }
  struct Stats {
    uint64_t bytes = 0;  // memory of dirty blocks now
    uint64_t peak = 0;   // ... at most, since start
    uint64_t waits = 0;  // writes that waited for room
  };
  Stats GetStats() ABSL_LOCKS_EXCLUDED(mu_);

  // Every wait in Reserve() returns, now and from now on.
  void Shutdown() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  void Release(uint64_t bytes) ABSL_LOCKS_EXCLUDED(mu_);

  const uint64_t block_size_;
  const uint64_t limit_;
  absl::Mutex mu_;
  struct Block {
    int slots = 0;        // unacknowledged data slots carrying it
    uint64_t charge = 0;  // the memory it is counted with
  };
  // By (file, block index).
  absl::flat_hash_map<std::pair<uint64_t, uint64_t>, Block> blocks_
      ABSL_GUARDED_BY(mu_);
  uint64_t bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t peak_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t reserved_ ABSL_GUARDED_BY(mu_) = 0;  // held by Reservations
  uint64_t waits_ ABSL_GUARDED_BY(mu_) = 0;
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace memfuse::fsd

#endif  // MEMFUSE_FSD_DIRTY_SET_H_
