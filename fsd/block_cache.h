// The resident blocks of every file, in the order a second-chance (CLOCK)
// sweep visits them to make room in --cache-size.
//
// A block joins when it gets memory and leaves when it loses it (FileData
// does both, under its inode's lock). Reads and writes set the block's
// referenced bit; the sweep gives a referenced block a second chance, and
// asks the Tree (the judge, which knows what the mirror has) whether an
// unreferenced one may go: only a clean block whose bytes the mirror holds
// can, since it is read back from there.
//
// Thread-safe. Lock order: Inode::mu before BlockCache::mu_; the sweep holds
// mu_ and only try-locks inodes (in the judge), so it never waits for one.
#ifndef MEMFUSE_FSD_BLOCK_CACHE_H_
#define MEMFUSE_FSD_BLOCK_CACHE_H_

#include <cstdint>
#include <list>
#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/synchronization/mutex.h"

namespace memfuse::fsd {

struct Inode;

class BlockCache {
 public:
  struct Entry {
    std::weak_ptr<Inode> inode;
    uint64_t index;
  };
  using Handle = std::list<Entry>::iterator;

  BlockCache() = default;
  BlockCache(const BlockCache&) = delete;
  BlockCache& operator=(const BlockCache&) = delete;

  Handle Add(std::weak_ptr<Inode> inode, uint64_t index)
      ABSL_LOCKS_EXCLUDED(mu_);
  void Remove(Handle handle) ABSL_LOCKS_EXCLUDED(mu_);

  enum class Verdict {
    kKeep,     // referenced (now cleared), dirty, busy or not in the mirror
    kEvicted,  // its memory is freed; `*freed` says how much
  };
  // Called with mu_ held for a live inode's block; try-locks the inode.
  // On kEvicted the block must forget its handle: the sweep erases it.
  using Judge = absl::FunctionRef<Verdict(
      const std::shared_ptr<Inode>& inode, uint64_t index, uint64_t* freed)>;

  // Sweeps until `want` bytes are freed or every block was visited twice;
  // returns the bytes freed.
  uint64_t Evict(uint64_t want, Judge judge) ABSL_LOCKS_EXCLUDED(mu_);

  uint64_t evicted_blocks() const ABSL_LOCKS_EXCLUDED(mu_);
  size_t size() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  mutable absl::Mutex mu_;
  std::list<Entry> blocks_ ABSL_GUARDED_BY(mu_);  // next to visit first
  uint64_t evicted_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace memfuse::fsd

#endif  // MEMFUSE_FSD_BLOCK_CACHE_H_
