// The dirty blocks and the write limit (dirty_set.h).
#include "fsd/dirty_set.h"

#include <algorithm>

#include "fsd/block_size.h"

namespace memfuse::fsd {

DirtySet::Reservation DirtySet::Reserve(uint64_t bytes) {
  if (limit_ == 0) return Reservation();
  bytes = std::min(bytes, limit_);
  absl::MutexLock l(&mu_);
  auto room = [this, bytes]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return shutdown_ || bytes_ + reserved_ + bytes <= limit_;
  };
  if (!room()) {
    ++waits_;
    mu_.Await(absl::Condition(&room));
  }
  if (shutdown_) return Reservation();
  reserved_ += bytes;
  return Reservation(this, bytes);
}

void DirtySet::Release(uint64_t bytes) {
  absl::MutexLock l(&mu_);
  reserved_ -= bytes;
}

uint64_t DirtySet::Charge(uint64_t offset, uint64_t length) const {
  uint64_t charge = 0;
  const uint64_t end = offset + length;
  for (uint64_t block = offset / block_size_; block * block_size_ < end;
       ++block) {
    charge += BlockBufferBytes(
        std::min(end, (block + 1) * block_size_) - block * block_size_,
        block_size_);
  }
  return charge;
}

void DirtySet::Mark(uint64_t id, uint64_t block, uint64_t end,
                    bool new_slot) {
  absl::MutexLock l(&mu_);
  Block& dirty = blocks_[{id, block}];
  const uint64_t charge = BlockBufferBytes(end, block_size_);
  if (charge > dirty.charge) {
    bytes_ += charge - dirty.charge;
    dirty.charge = charge;
    peak_ = std::max(peak_, bytes_);
  }
  if (new_slot) ++dirty.slots;
}

bool DirtySet::Clean(uint64_t id, uint64_t block) {
  absl::MutexLock l(&mu_);
  auto it = blocks_.find({id, block});
  if (it == blocks_.end()) return false;
  if (--it->second.slots > 0) return false;
  bytes_ -= it->second.charge;
  blocks_.erase(it);
  return true;
}

bool DirtySet::Contains(uint64_t id, uint64_t block) {
  absl::MutexLock l(&mu_);
  return blocks_.contains({id, block});
}

DirtySet::Stats DirtySet::GetStats() {
  absl::MutexLock l(&mu_);
  return Stats{bytes_, peak_, waits_};
}

void DirtySet::Shutdown() {
  absl::MutexLock l(&mu_);
  shutdown_ = true;
}

}  // namespace memfuse::fsd
