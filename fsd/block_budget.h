// Accounting of resident file data against --cache-size.
//
// Thread-safe: every method may be called from any thread without a lock.
// Reservations are made before memory is allocated, so resident bytes never
// exceed the limit, even transiently.
#ifndef MEMFUSE_FSD_BLOCK_BUDGET_H_
#define MEMFUSE_FSD_BLOCK_BUDGET_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <utility>

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
};

// Bytes reserved in a BlockBudget ahead of the work that needs them (made
// before taking an inode's lock, where room can be made by eviction); what
// is not taken goes back when this goes.
class BudgetRoom {
 public:
  BudgetRoom() = default;
  BudgetRoom(BlockBudget* budget, uint64_t bytes)
      : budget_(budget), bytes_(bytes) {}
  BudgetRoom(BudgetRoom&& other) noexcept
      : budget_(std::exchange(other.budget_, nullptr)),
        bytes_(std::exchange(other.bytes_, 0)) {}
  BudgetRoom& operator=(BudgetRoom&& other) noexcept {
    if (this != &other) {
      Reset();
      budget_ = std::exchange(other.budget_, nullptr);
      bytes_ = std::exchange(other.bytes_, 0);
    }
    return *this;
  }
  ~BudgetRoom() { Reset(); }

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
