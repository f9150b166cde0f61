#include "fsd/block_cache.h"

#include <utility>
#include <vector>

namespace memfuse::fsd {

BlockCache::Handle BlockCache::Add(std::weak_ptr<Inode> inode,
                                   uint64_t index) {
  absl::MutexLock l(&mu_);
  blocks_.push_back(Entry{std::move(inode), index});
  return std::prev(blocks_.end());
}

void BlockCache::Remove(Handle handle) {
  absl::MutexLock l(&mu_);
  blocks_.erase(handle);
}

uint64_t BlockCache::Evict(uint64_t want, Judge judge) {
  // The inodes visited are released after mu_: dropping the last reference
  // destroys the inode, whose blocks then leave this cache (taking mu_).
  std::vector<std::shared_ptr<Inode>> visited;
  uint64_t freed = 0;
  {
    absl::MutexLock l(&mu_);
    size_t budget = 2 * blocks_.size();
    auto it = blocks_.begin();
    while (freed < want && budget-- > 0 && it != blocks_.end()) {
      auto next = std::next(it);
      std::shared_ptr<Inode> inode = it->inode.lock();
      if (inode == nullptr) {
        // Being destroyed: its destructor removes the entry.
        it = next;
        continue;
      }
      uint64_t got = 0;
      if (judge(inode, it->index, &got) == Verdict::kEvicted) {
        freed += got;
        ++evicted_;
        blocks_.erase(it);
      } else {
        blocks_.splice(blocks_.end(), blocks_, it);
      }
      visited.push_back(std::move(inode));
      it = next;
      // Wrapped around to the entries just moved to the back.
      if (it == blocks_.end()) it = blocks_.begin();
    }
  }
  return freed;
}

uint64_t BlockCache::evicted_blocks() const {
  absl::MutexLock l(&mu_);
  return evicted_;
}

size_t BlockCache::size() const {
  absl::MutexLock l(&mu_);
  return blocks_.size();
}

}  // namespace memfuse::fsd
