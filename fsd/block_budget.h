// Accounting of resident file data against --cache-size.
//
// Thread-safe: every method may be called from any thread without a lock.
// Reservations are made before memory is allocated, so resident bytes never
// exceed the limit, even transiently.
#ifndef MEMFUSE_FSD_BLOCK_BUDGET_H_
#define MEMFUSE_FSD_BLOCK_BUDGET_H_

#include <atomic>
#include <cstdint>

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
    return true;
  }

  // REQUIRES: `bytes` were reserved before.
  void Release(uint64_t bytes) {
    used_.fetch_sub(bytes, std::memory_order_relaxed);
  }

  uint64_t limit() const { return limit_; }
  uint64_t used() const { return used_.load(std::memory_order_relaxed); }

 private:
  const uint64_t limit_;
  std::atomic<uint64_t> used_{0};
};

}  // namespace memfuse::fsd

#endif  // MEMFUSE_FSD_BLOCK_BUDGET_H_
