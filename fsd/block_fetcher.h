// File blocks the Tree does not hold, read from the mirror on demand: one
// read per block at a time (later askers share it), never under a lock of
// the Tree's; room in the cache made for them by evicting clean blocks, or
// waited for while the mirror may still make some clean; readahead for
// sequential readers; and the background prefetch of --lazy-load false.
//
// It judges eviction: a block may go only when the mirror holds every byte
// of it (MutationLog::IsBlockClean), so what is evicted can be read back.
//
// Thread-safe: every method may be called from any FUSE worker thread.
// Lock order: a caller may hold nothing of the Tree's when it calls Fetch,
// FetchOne, Reserve or Readahead; eviction takes inodes' locks only with
// TryLock.
#ifndef MEMFUSE_FSD_BLOCK_FETCHER_H_
#define MEMFUSE_FSD_BLOCK_FETCHER_H_

#include <fuse_lowlevel.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "fsd/block_budget.h"
#include "fsd/block_cache.h"
#include "fsd/file_data.h"
#include "fsd/inode.h"
#include "fsd/mirror_reader.h"
#include "fsd/mutation_log.h"
#include "fsd/single_flight.h"

namespace memfuse::fsd {

class BlockFetcher {
 public:
  // How room in the cache is made for a block: evicting clean blocks, and
  // waiting for the mirror when none is clean (up to the read or the
  // write bound); only evicting; or only with what is free.
  enum class Room { kWaitForRead, kWaitForWrite, kEvict, kFreeOnly };

  // How long a read, and a write, waits for room in the cache while the
  // mirror may still make some; then EIO. A write waiting for the mirror
  // is backpressure, as at the dirty limit, so it is given longer.
  static constexpr absl::Duration kReadRoomWait = absl::Seconds(30);
  static constexpr absl::Duration kWriteRoomWait = absl::Seconds(60);

  BlockFetcher(uint64_t block_size, BlockBudget* budget)
      : block_size_(block_size), budget_(budget) {}
  BlockFetcher(const BlockFetcher&) = delete;
  BlockFetcher& operator=(const BlockFetcher&) = delete;
  ~BlockFetcher() { Stop(); }

  // The blocks eviction walks (Inodes of a mirrored tree register theirs).
  BlockCache* cache() { return &cache_; }

  // From now on eviction asks `log` which blocks are clean. Call before
  // serving.
  void SetLog(MutationLog* log) { log_ = log; }
  // From now on blocks are read through `reader`; starts the readahead
  // threads. Call after SetLog, before serving.
  void SetReader(MirrorReader* reader);
  // Ends the readahead threads (before the reader goes).
  void Stop() ABSL_LOCKS_EXCLUDED(readahead_mu_);
  // (Tests shorten them.) Call before serving.
  void SetRoomWaits(absl::Duration read, absl::Duration write) {
    read_room_wait_ = read;
    write_room_wait_ = write;
  }

  // Fetches `wanted` blocks of `inode` (joining fetches in flight);
  // returns the first error.
  absl::Status Fetch(const std::shared_ptr<Inode>& inode,
                     const std::vector<FileData::Missing>& wanted, Room how);
  absl::Status FetchOne(const std::shared_ptr<Inode>& inode,
                        const FileData::Missing& m, Room how);
  // Reserves `bytes` of the cache, evicting clean blocks as needed; with a
  // mirror, waits while dirty blocks may still become clean (up to the
  // bound of `how`, then EIO); ENOSPC when nothing can make room.
  absl::StatusOr<CacheReservation> Reserve(uint64_t bytes, Room how);

  // A read of [offset, offset+length) of `inode` ended: if it continues
  // the previous one, the blocks after it are fetched in the background.
  void Readahead(const std::shared_ptr<Inode>& inode, uint64_t offset,
                 uint64_t length) ABSL_LOCKS_EXCLUDED(readahead_mu_);

  // Reads the missing blocks of `files` while the cache has room without
  // evicting anything; calls `progress` with the bytes fetched so far and
  // the total missing at the start, about once a second, and returns the
  // bytes fetched. Stops early if `stop`.
  uint64_t Prefetch(const std::vector<std::shared_ptr<Inode>>& files,
                    const std::atomic<bool>& stop,
                    absl::FunctionRef<void(uint64_t done, uint64_t total)>
                        progress);

  struct Stats {
    uint64_t blocks_fetched = 0;
    uint64_t bytes_fetched = 0;
    uint64_t blocks_evicted = 0;
    uint64_t readahead_blocks = 0;
    // Reads and writes that waited for the mirror to make room in the
    // cache (every resident block dirty or busy).
    uint64_t cache_waits = 0;
  };
  Stats GetStats() const;

 private:
  // Sets `*busy` when the block was passed over only because its file
  // was locked at that moment.
  BlockCache::Verdict JudgeForEviction(Inode& inode, uint64_t index,
                                       uint64_t* freed, bool* busy);
  void ReadaheadLoop() ABSL_LOCKS_EXCLUDED(readahead_mu_);

  const uint64_t block_size_;
  BlockBudget* const budget_;
  MutationLog* log_ = nullptr;      // null: no mirror, nothing evicted
  MirrorReader* reader_ = nullptr;  // null: nothing is ever missing
  BlockCache cache_;
  SingleFlight<std::pair<fuse_ino_t, uint64_t>> flights_;
  absl::Duration read_room_wait_ = kReadRoomWait;
  absl::Duration write_room_wait_ = kWriteRoomWait;

  std::atomic<uint64_t> blocks_fetched_{0};
  std::atomic<uint64_t> bytes_fetched_{0};
  std::atomic<uint64_t> readahead_blocks_{0};
  std::atomic<uint64_t> cache_waits_{0};

  absl::Mutex readahead_mu_;
  struct ReadaheadJob {
    std::weak_ptr<Inode> inode;
    fuse_ino_t ino = 0;
    FileData::Missing block;
  };
  std::deque<ReadaheadJob> readahead_queue_ ABSL_GUARDED_BY(readahead_mu_);
  // (inode, block) of the jobs in readahead_queue_: a block is queued once
  // however many reads ask for it.
  absl::flat_hash_set<std::pair<fuse_ino_t, uint64_t>> readahead_queued_
      ABSL_GUARDED_BY(readahead_mu_);
  bool readahead_stop_ ABSL_GUARDED_BY(readahead_mu_) = false;
  std::vector<std::thread> readahead_threads_;
};

}  // namespace memfuse::fsd

#endif  // MEMFUSE_FSD_BLOCK_FETCHER_H_
