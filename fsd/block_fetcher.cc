// Reading blocks from the mirror, room in the cache, readahead and
// prefetch (block_fetcher.h).
#include "fsd/block_fetcher.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <optional>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status.h"
#include "glog/logging.h"

namespace memfuse::fsd {
namespace {

using common::ErrnoStatus;

// Threads fetching ahead of sequential readers.
constexpr int kReadaheadThreads = 4;
// How far ahead of a sequential reader blocks are fetched.
constexpr uint64_t kReadaheadBytes = 16 << 20;
constexpr uint64_t kMaxReadaheadBlocks = 64;

}  // namespace

void BlockFetcher::SetReader(MirrorReader* reader) {
  reader_ = reader;
  for (int i = 0; i < kReadaheadThreads; ++i) {
    readahead_threads_.emplace_back([this] { ReadaheadLoop(); });
  }
}

void BlockFetcher::Stop() {
  {
    absl::MutexLock l(&readahead_mu_);
    readahead_stop_ = true;
  }
  for (std::thread& t : readahead_threads_) t.join();
  readahead_threads_.clear();
}

BlockFetcher::Stats BlockFetcher::GetStats() const {
  Stats stats;
  stats.blocks_fetched = blocks_fetched_.load(std::memory_order_relaxed);
  stats.bytes_fetched = bytes_fetched_.load(std::memory_order_relaxed);
  stats.blocks_evicted = cache_.evicted_blocks();
  stats.readahead_blocks = readahead_blocks_.load(std::memory_order_relaxed);
  stats.cache_waits = cache_waits_.load(std::memory_order_relaxed);
  return stats;
}

absl::Status BlockFetcher::Fetch(const std::shared_ptr<Inode>& inode,
                                 const std::vector<FileData::Missing>& wanted,
                                 Room how) {
  absl::Status first_error;
  for (const FileData::Missing& m : wanted) {
    absl::Status s = FetchOne(inode, m, how);
    if (!s.ok() && first_error.ok()) first_error = s;
  }
  return first_error;
}

absl::Status BlockFetcher::FetchOne(const std::shared_ptr<Inode>& inode,
                                    const FileData::Missing& m, Room how) {
  const auto key = std::make_pair(inode->ino, m.index);
  return flights_.Do(key, [&]() -> absl::Status {
    // A fetch of it may have just ended: then there is nothing to do.
    {
      FileData::Missing now;
      absl::ReaderMutexLock il(&inode->mu);
      if (!inode->data.IsMissing(block_size_, m.index, &now) ||
          now.gen != m.gen) {
        return absl::OkStatus();
      }
    }
    const uint64_t charge = FileData::ChargeFor(m.length, block_size_);
    absl::StatusOr<CacheReservation> room = Reserve(charge, how);
    if (!room.ok()) return room.status();
    // Read straight into the block's own buffer (paid for by `room`).
    FileData::Buffer buffer = FileData::NewBuffer(charge);
    absl::StatusOr<uint64_t> got = reader_->ReadBlock(
        inode->ino, m.index * block_size_, m.length, buffer.get());
    if (!got.ok()) {
      return MirrorReadError(got.status(),
                         absl::StrCat("read block ", m.index, " of file ",
                                      inode->ino));
    }
    blocks_fetched_.fetch_add(1, std::memory_order_relaxed);
    bytes_fetched_.fetch_add(*got, std::memory_order_relaxed);
    absl::MutexLock il(&inode->mu);
    // Not installed when the block changed meanwhile (written whole,
    // truncated away): the caller looks again.
    inode->data.Install(block_size_, m, std::move(buffer), *got, &*room);
    return absl::OkStatus();
  });
}

BlockCache::Verdict BlockFetcher::JudgeForEviction(Inode& inode,
                                                   uint64_t index,
                                                   uint64_t* freed,
                                                   bool* busy) {
  if (!inode.mu.TryLock()) {
    *busy = true;
    return BlockCache::Verdict::kKeep;
  }
  bool resident = false;
  BlockCache::Verdict verdict = BlockCache::Verdict::kKeep;
  // Read back from the mirror later, so the mirror must have every byte of
  // it: the file still has a name there, nothing of the block is waiting
  // to be sent or acknowledged, no size change is pending, and the mirror
  // never refused the file's data.
  if (!inode.data.TestAndClearReferenced(index, &resident) && resident &&
      inode.linked && inode.pins.load(std::memory_order_relaxed) == 0 &&
      log_->IsBlockClean(inode.ino, index)) {
    *freed = inode.data.EvictForCache(index);
    verdict = BlockCache::Verdict::kEvicted;
  }
  inode.mu.Unlock();
  return verdict;
}

absl::StatusOr<CacheReservation> BlockFetcher::Reserve(uint64_t bytes,
                                                       Room how) {
  const uint64_t limit = budget_->limit();
  if (bytes > limit) return ErrnoStatus(ENOSPC);
  const absl::Time start = absl::Now();
  // Registered as a waiter of the budget only once a wait is needed (the
  // common case never waits), then tried again before the first wait.
  std::optional<BlockBudget::Waiting> waiting;
  // Since when nothing was dirty: then only room others hold can come
  // back, which it gets a moment for.
  absl::Time clean_since = absl::InfiniteFuture();
  while (true) {
    const uint64_t epoch = budget_->epoch();
    if (budget_->TryReserve(bytes)) return CacheReservation(budget_, bytes);
    if (log_ == nullptr || how == Room::kFreeOnly) return ErrnoStatus(ENOSPC);
    const uint64_t used = budget_->used();
    const uint64_t short_by = used + bytes > limit ? used + bytes - limit : 0;
    // A little more than needed, so that the next few do not sweep again.
    const uint64_t want = std::max(short_by, std::min<uint64_t>(
                                                 limit / 64, 4 * block_size_));
    bool busy = false;
    const uint64_t freed = cache_.Evict(
        want, [this, &busy](const std::shared_ptr<Inode>& inode, uint64_t index,
                            uint64_t* freed) {
          return JudgeForEviction(*inode, index, freed, &busy);
        });
    if (freed > 0) continue;
    if (how == Room::kEvict) return ErrnoStatus(ENOSPC);
    // A forced exit: nothing will be acknowledged any more.
    if (log_->IsShutdown()) return ErrnoStatus(EIO);
    // Nothing evictable now. Dirty blocks become clean as the mirror
    // acknowledges them, and room others hold comes back: wait while that
    // can happen, up to the bound for reads or writes (the mirror may be
    // down for good), and give up at once when it cannot.
    const bool dirty = log_->dirty().GetStats().bytes > 0;
    const absl::Time now = absl::Now();
    if (dirty || busy) {
      clean_since = absl::InfiniteFuture();
    } else if (clean_since == absl::InfiniteFuture()) {
      clean_since = now;
    }
    if (now - clean_since >= absl::Milliseconds(200)) {
      return ErrnoStatus(ENOSPC);
    }
    const absl::Time deadline =
        start + (how == Room::kWaitForRead ? read_room_wait_
                                           : write_room_wait_);
    if (now >= deadline) {
      LOG(WARNING) << "no room in the cache for "
                   << (how == Room::kWaitForRead ? "a read" : "a write")
                   << " after " << absl::FormatDuration(now - start)
                   << ": the resident blocks stayed dirty (the mirror is "
                      "not acknowledging) or in use";
      return ErrnoStatus(EIO);
    }
    if (!waiting.has_value()) {
      waiting.emplace(budget_);
      cache_waits_.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    // Woken by room released and by blocks made clean. What signals
    // nothing is looked at again soon: a block passed over because its
    // file was locked for a moment (a writer copying into it).
    budget_->WaitForChange(
        epoch, std::min(deadline, now + (busy ? absl::Milliseconds(1)
                                              : absl::Milliseconds(50))));
  }
}

// --- Readahead ------------------------------------------------------------

void BlockFetcher::Readahead(const std::shared_ptr<Inode>& inode,
                             uint64_t offset, uint64_t length) {
  const uint64_t end = offset + length;
  const uint64_t previous = inode->read_end.exchange(end);
  // Sequential, give or take the kernel's own readahead arriving out of
  // order on several threads.
  const uint64_t slack = std::max<uint64_t>(2 * block_size_, 4 << 20);
  if (offset != 0 && (offset + slack < previous || offset > previous + slack)) {
    return;
  }
  const uint64_t blocks = std::clamp<uint64_t>(
      kReadaheadBytes / block_size_, 2, kMaxReadaheadBlocks);
  const uint64_t first = (end + block_size_ - 1) / block_size_;
  std::vector<FileData::Missing> missing;
  {
    absl::ReaderMutexLock il(&inode->mu);
    if (first * block_size_ >= inode->size) return;
    const uint64_t stop =
        std::min(inode->size, (first + blocks) * block_size_);
    inode->data.FindMissing(block_size_, first * block_size_,
                            stop - first * block_size_,
                            /*edges_only=*/false, &missing);
  }
  if (missing.empty()) return;
  std::erase_if(missing, [&](const FileData::Missing& m) {
    return flights_.InFlight(std::make_pair(inode->ino, m.index));
  });
  absl::MutexLock l(&readahead_mu_);
  for (const FileData::Missing& m : missing) {
    if (readahead_queued_.insert({inode->ino, m.index}).second) {
      readahead_queue_.push_back({inode, inode->ino, m});
    }
  }
}

void BlockFetcher::ReadaheadLoop() {
  while (true) {
    ReadaheadJob job;
    {
      absl::MutexLock l(&readahead_mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(readahead_mu_) {
        return readahead_stop_ || !readahead_queue_.empty();
      };
      readahead_mu_.Await(absl::Condition(&ready));
      if (readahead_stop_) return;
      job = std::move(readahead_queue_.front());
      readahead_queue_.pop_front();
      readahead_queued_.erase({job.ino, job.block.index});
    }
    std::shared_ptr<Inode> inode = job.inode.lock();
    if (inode == nullptr) continue;
    // The block as it is now (it may have been fetched and evicted again
    // since it was queued).
    FileData::Missing now;
    {
      absl::ReaderMutexLock il(&inode->mu);
      if (!inode->data.IsMissing(block_size_, job.block.index, &now)) continue;
    }
    // Never waits for room: readahead is worth only what is clean.
    if (FetchOne(inode, now, Room::kEvict).ok()) {
      readahead_blocks_.fetch_add(1, std::memory_order_relaxed);
    }
  }
}

// --- Prefetch (--lazy-load false) -----------------------------------------

uint64_t BlockFetcher::Prefetch(
    const std::vector<std::shared_ptr<Inode>>& files,
    const std::atomic<bool>& stop,
    absl::FunctionRef<void(uint64_t done, uint64_t total)> progress) {
  uint64_t total = 0;
  std::vector<std::vector<FileData::Missing>> missing(files.size());
  for (size_t i = 0; i < files.size(); ++i) {
    absl::ReaderMutexLock il(&files[i]->mu);
    files[i]->data.FindMissing(block_size_, 0, files[i]->size,
                               /*edges_only=*/false, &missing[i]);
    for (const FileData::Missing& m : missing[i]) total += m.length;
  }
  uint64_t done = 0;
  auto next_report = std::chrono::steady_clock::now();
  for (size_t i = 0; i < files.size(); ++i) {
    for (const FileData::Missing& m : missing[i]) {
      if (stop.load()) return done;
      // Only into free room: prefetching never evicts what is there.
      absl::Status s = FetchOne(files[i], m, Room::kFreeOnly);
      if (!s.ok()) {
        if (common::StatusToErrno(s) == ENOSPC) {
          progress(done, total);
          return done;  // the cache is full
        }
        continue;
      }
      done += m.length;
      if (std::chrono::steady_clock::now() >= next_report) {
        progress(done, total);
        next_report += std::chrono::seconds(1);
      }
    }
  }
  progress(done, total);
  return done;
}

}  // namespace memfuse::fsd
