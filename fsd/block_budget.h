// Accounting of resident file data against --cache-size.
//
// Thread-safe: every method may be called from any thread without a lock.
// Reservations are made before memory is allocated, so resident bytes never
// exceed the limit, even transiently.
//
// Who cannot reserve and must wait for room (BlockFetcher::Reserve) waits
// for a change here: room released, or Wake() (blocks became evictable).
// The releases stay lock-free while nobody waits.
#ifndef MEMFUSE_FSD_BLOCK_BUDGET_H_
#define MEMFUSE_FSD_BLOCK_BUDGET_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace memfuse::fsd {

class BlockBudget {
 public:
  explicit BlockBudget(uint64_t limit_bytes) : limit_(limit_bytes) {}
  BlockBudget(const BlockBudget&) = delete;
  BlockBudget& operator=(const BlockBudget&) = delete;

  // Reserves `bytes`; false (and nothing reserved) if that would pass the
  // limit.
  bool TryReserve(uint64_t bytes) {
    uint64_t used = used_.load(std::memory_order_relaxed);
    do {
      if (bytes > limit_ - used) return false;
    } while (!used_.compare_exchange_weak(used, used + bytes,
                                          std::memory_order_relaxed));
    NotePeak(used + bytes);
    return true;
  }

  // REQUIRES: `bytes` were reserved before.
  void Release(uint64_t bytes) {
    used_.fetch_sub(bytes, std::memory_order_relaxed);
    // Pairs with the fence in Waiting: either the waiter's next try sees
    // this release, or this sees the waiter and wakes it.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (waiters_.load(std::memory_order_relaxed) > 0) Wake();
  }

  // Counts a waiter while it lives; Release() wakes waiters only when
  // there are some. Register before the try whose failure makes you wait.
  class Waiting {
   public:
    explicit Waiting(BlockBudget* budget) : budget_(budget) {
      budget_->waiters_.fetch_add(1, std::memory_order_relaxed);
      std::atomic_thread_fence(std::memory_order_seq_cst);
    }
    Waiting(const Waiting&) = delete;
    Waiting& operator=(const Waiting&) = delete;
    ~Waiting() { budget_->waiters_.fetch_sub(1, std::memory_order_relaxed); }

   private:
    BlockBudget* const budget_;
  };
  // Changes whenever room is released while someone waits, and at Wake().
  // Read it before trying to make room; then WaitForChange(epoch, ...).
  uint64_t epoch() const { return epoch_.load(std::memory_order_seq_cst); }
  // Waits until the epoch is no longer `epoch`, or `deadline`; true if it
  // changed.
  bool WaitForChange(uint64_t epoch, absl::Time deadline) {
    absl::MutexLock l(&wait_mu_);
    auto changed = [this, epoch] {
      return epoch_.load(std::memory_order_seq_cst) != epoch;
    };
    return wait_mu_.AwaitWithDeadline(absl::Condition(&changed), deadline);
  }
  // Wake(), if anyone waits.
  void WakeWaiters() {
    if (waiters_.load(std::memory_order_seq_cst) > 0) Wake();
  }
  // Something may have made room possible (blocks became evictable).
  void Wake() {
    absl::MutexLock l(&wait_mu_);
    epoch_.fetch_add(1, std::memory_order_seq_cst);
  }

  uint64_t limit() const { return limit_; }
  uint64_t used() const { return used_.load(std::memory_order_relaxed); }
  // The most ever used (a status figure).
  uint64_t peak() const { return peak_.load(std::memory_order_relaxed); }

 private:
  void NotePeak(uint64_t used) {
    uint64_t peak = peak_.load(std::memory_order_relaxed);
    while (used > peak && !peak_.compare_exchange_weak(
                              peak, used, std::memory_order_relaxed)) {
    }
  }

  const uint64_t limit_;
  std::atomic<uint64_t> used_{0};
  std::atomic<uint64_t> peak_{0};
  std::atomic<int> waiters_{0};
  // Changed under wait_mu_, so that a waiter's condition is re-evaluated.
  absl::Mutex wait_mu_;
  std::atomic<uint64_t> epoch_{0};
};

// Bytes reserved in a BlockBudget ahead of the work that needs them (made
// before taking an inode's lock, where room can be made by eviction); what
// is not taken goes back when this goes.
class CacheReservation {
 public:
  CacheReservation() = default;
  CacheReservation(BlockBudget* budget, uint64_t bytes)
      : budget_(budget), bytes_(bytes) {}
  CacheReservation(CacheReservation&& other) noexcept
      : budget_(std::exchange(other.budget_, nullptr)),
        bytes_(std::exchange(other.bytes_, 0)) {}
  CacheReservation& operator=(CacheReservation&& other) noexcept {
    if (this != &other) {
      Reset();
      budget_ = std::exchange(other.budget_, nullptr);
      bytes_ = std::exchange(other.bytes_, 0);
    }
    return *this;
  }
  ~CacheReservation() { Reset(); }

  // Takes `bytes` of the room: true if it held that many.
  bool Take(uint64_t bytes) {
    if (bytes > bytes_) return false;
    bytes_ -= bytes;
    return true;
  }
  uint64_t bytes() const { return bytes_; }

 private:
  void Reset() {
    if (budget_ != nullptr && bytes_ > 0) budget_->Release(bytes_);
    budget_ = nullptr;
    bytes_ = 0;
  }

  BlockBudget* budget_ = nullptr;
  uint64_t bytes_ = 0;
};

}  // namespace memfuse::fsd

#endif  // MEMFUSE_FSD_BLOCK_BUDGET_H_
