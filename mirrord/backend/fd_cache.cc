#include "mirrord/backend/fd_cache.h"

namespace memfuse::mirrord {

FdCache::SharedFd FdCache::Get(uint64_t id) {
  absl::MutexLock l(&mu_);
  auto it = by_id_.find(id);
  if (it == by_id_.end()) return nullptr;
  lru_.splice(lru_.begin(), lru_, it->second);
  return it->second->second;
}

FdCache::SharedFd FdCache::Put(uint64_t id, common::UniqueFd fd) {
  auto shared = std::make_shared<const common::UniqueFd>(std::move(fd));
  // Descriptors dropped here are closed after unlocking, when these go.
  SharedFd replaced, evicted;
  absl::MutexLock l(&mu_);
  if (auto it = by_id_.find(id); it != by_id_.end()) {
    replaced = std::move(it->second->second);
    lru_.erase(it->second);
    by_id_.erase(it);
  }
  if (lru_.size() >= capacity_) {
    evicted = std::move(lru_.back().second);
    by_id_.erase(lru_.back().first);
    lru_.pop_back();
  }
  lru_.emplace_front(id, shared);
  by_id_[id] = lru_.begin();
  return shared;
}

void FdCache::Erase(uint64_t id) {
  SharedFd dropped;
  absl::MutexLock l(&mu_);
  auto it = by_id_.find(id);
  if (it == by_id_.end()) return;
  dropped = std::move(it->second->second);
  lru_.erase(it->second);
  by_id_.erase(it);
}

void FdCache::Clear() {
  Lru dropped;  // closed after unlocking
  absl::MutexLock l(&mu_);
  dropped.swap(lru_);
  by_id_.clear();
}

size_t FdCache::size() {
  absl::MutexLock l(&mu_);
  return lru_.size();
}

}  // namespace memfuse::mirrord
