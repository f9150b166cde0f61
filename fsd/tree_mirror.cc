// The Tree's side of lazy loading and eviction: listing directories and
// fetching blocks from the mirror on demand, one fetch per object at a time
// and never under a lock; making room in the cache by evicting clean blocks;
// readahead for sequential readers; the background prefetch of --lazy-load
// false.
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <optional>
#include <thread>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/status.h"
#include "fsd/tree.h"
#include "glog/logging.h"

namespace memfuse::fsd {
namespace {

using common::ErrnoStatus;

// Ids set aside for one listing at first; a bigger directory asks again.
constexpr uint64_t kListingIds = 4096;
// Threads fetching ahead of sequential readers.
constexpr int kReadaheadThreads = 4;
// How far ahead of a sequential reader blocks are fetched.
constexpr uint64_t kReadaheadBytes = 16 << 20;
constexpr uint64_t kMaxReadaheadBlocks = 64;

absl::Status MirrorError(const absl::Status& status, std::string_view what) {
  LOG(ERROR) << "cannot " << what << " from the mirror: " << status;
  const int err = common::StatusToErrno(status);
  // ENOSPC (no room in the cache) and ENOENT-like answers keep their
  // meaning; a broken connection or agent is an I/O error for the program.
  return ErrnoStatus(err == ENOSPC ? ENOSPC : EIO);
}

}  // namespace

Tree::~Tree() { StopMirrorReads(); }

void Tree::StopMirrorReads() {
  {
    absl::MutexLock l(&readahead_mu_);
    readahead_stop_ = true;
  }
  for (std::thread& t : readahead_threads_) t.join();
  readahead_threads_.clear();
}

void Tree::SetMirrorLog(MutationLog* log) {
  log_ = log;
  recorder_.SetLog(log);
  // Blocks the mirror acknowledges become evictable: wake whoever waits
  // for room in the cache (ReserveCache).
  BlockBudget* budget = budget_;
  log_->OnBlocksCleaned([budget] { budget->WakeWaiters(); });
}

void Tree::SetMirrorLimits(const pb::MirrorLimits& limits) {
  name_max_.store(limits.name_max() > 0
                      ? std::min<size_t>(limits.name_max(), kMaxNameLength)
                      : kMaxNameLength,
                  std::memory_order_relaxed);
  absl::MutexLock l(&limits_mu_);
  limits_ = limits;
}

void Tree::SetMirrorReader(MirrorReader* reader) {
  reader_ = reader;
  for (int i = 0; i < kReadaheadThreads; ++i) {
    readahead_threads_.emplace_back([this] { ReadaheadLoop(); });
  }
}

Tree::CacheStats Tree::GetCacheStats() const {
  CacheStats stats;
  stats.dirs_listed = dirs_listed_.load(std::memory_order_relaxed);
  stats.blocks_fetched = blocks_fetched_.load(std::memory_order_relaxed);
  stats.bytes_fetched = bytes_fetched_.load(std::memory_order_relaxed);
  stats.blocks_evicted = cache_.evicted_blocks();
  stats.readahead_blocks = readahead_blocks_.load(std::memory_order_relaxed);
  stats.cache_waits = cache_waits_.load(std::memory_order_relaxed);
  return stats;
}

Tree::MetadataStats Tree::GetMetadataStats() {
  MetadataStats stats;
  // The table's slot, the inode and its control block (make_shared).
  constexpr uint64_t kPerInode = sizeof(Inode) + 2 * sizeof(void*) + 16 +
                                 sizeof(std::pair<fuse_ino_t, InodePtr>) + 1;
  absl::ReaderMutexLock l(&mu_);
  stats.inodes = table_.size();
  stats.bytes = table_.size() * kPerInode;
  for (const auto& [ino, inode] : table_) {
    if (inode->is_dir()) {
      stats.entries += inode->dir->size();
      stats.bytes += inode->dir->MemoryBytes();
    }
    if (inode->symlink_target.capacity() > std::string().capacity()) {
      stats.bytes += inode->symlink_target.capacity() + 1;
    }
    absl::ReaderMutexLock il(&inode->mu);
    if (inode->xattrs != nullptr) {
      for (const auto& [name, value] : *inode->xattrs) {
        stats.bytes += name.size() + value.size() + 2 * sizeof(std::string);
      }
    }
  }
  return stats;
}

// --- Listing --------------------------------------------------------------

absl::Status Tree::EnsureListed(fuse_ino_t ino) {
  if (reader_ == nullptr) return absl::OkStatus();
  {
    absl::ReaderMutexLock l(&mu_);
    auto it = table_.find(ino);
    if (it == table_.end() || !it->second->unlisted) return absl::OkStatus();
  }
  return ListNow(ino);
}

template <typename Key, typename Work>
absl::Status Tree::OnceInFlight(
    absl::flat_hash_map<Key, std::shared_ptr<Flight>>* flights,
    const Key& key, Work work) {
  std::shared_ptr<Flight> flight;
  bool mine = false;
  {
    absl::MutexLock l(&flights_mu_);
    auto [it, added] = flights->try_emplace(key);
    if (added) it->second = std::make_shared<Flight>();
    flight = it->second;
    mine = added;
  }
  if (!mine) {
    flight->done.WaitForNotification();
    return flight->status;
  }
  const absl::Status status = work();
  {
    absl::MutexLock l(&flights_mu_);
    flights->erase(key);
  }
  flight->status = status;
  flight->done.Notify();
  return status;
}

absl::Status Tree::ListNow(fuse_ino_t ino) {
  return OnceInFlight(&dir_flights_, ino, [&] { return ListOnce(ino); });
}

absl::Status Tree::ListOnce(fuse_ino_t ino) {
  absl::Status status;
  uint64_t ids = kListingIds;
  while (true) {
    fuse_ino_t first;
    {
      absl::MutexLock l(&mu_);
      auto it = table_.find(ino);
      if (it == table_.end() || !it->second->unlisted) break;
      first = next_ino_;
      next_ino_ += ids;
    }
    absl::StatusOr<pb::ListDirectoryResponse> listing =
        reader_->ListDirectory(ino, first, ids);
    if (!listing.ok()) {
      status = MirrorError(listing.status(),
                           absl::StrCat("list directory ", ino));
      break;
    }
    if (listing->ids_needed() > 0) {
      ids = listing->ids_needed();
      continue;
    }
    absl::MutexLock l(&mu_);
    // Ids set aside and not bound go back if nothing was created since.
    if (next_ino_ == first + ids) {
      next_ino_ = std::max<fuse_ino_t>(first, listing->next_free_id());
    }
    auto it = table_.find(ino);
    if (it == table_.end() || !it->second->unlisted) break;
    Inode& dir = *it->second;
    dir.nlink = 2;  // counted again from its subdirectories
    for (const pb::DirEntry& entry : listing->entries()) {
      absl::Status loaded = LoadEntryLocked(dir, entry);
      if (!loaded.ok()) {
        LOG(WARNING) << "skipped entry '" << entry.name() << "' of directory "
                     << ino << " of the mirror: " << loaded;
      }
    }
    dir.unlisted = false;
    dirs_listed_.fetch_add(1, std::memory_order_relaxed);
    break;
  }
  return status;
}

std::vector<fuse_ino_t> Tree::SubdirectoriesOf(fuse_ino_t ino) {
  std::vector<fuse_ino_t> out;
  absl::ReaderMutexLock l(&mu_);
  auto it = table_.find(ino);
  if (it == table_.end() || !it->second->is_dir()) return out;
  const Directory& dir = *it->second->dir;
  for (auto e = dir.After(0); e != dir.end(); ++e) {
    auto child = table_.find(e->second.ino);
    if (child != table_.end() && child->second->is_dir()) {
      out.push_back(e->second.ino);
    }
  }
  return out;
}

absl::Status Tree::PrepareVictim(fuse_ino_t parent, std::string_view name) {
  if (reader_ == nullptr) return absl::OkStatus();
  fuse_ino_t unlisted = 0;
  {
    absl::ReaderMutexLock l(&mu_);
    auto dir = table_.find(parent);
    if (dir == table_.end() || !dir->second->is_dir()) {
      return absl::OkStatus();
    }
    const fuse_ino_t ino = dir->second->dir->Find(name);
    if (ino == 0) return absl::OkStatus();
    const Inode& victim = *table_.at(ino);
    if (victim.is_dir() && victim.unlisted) unlisted = ino;
  }
  return unlisted != 0 ? ListNow(unlisted) : absl::OkStatus();
}

bool Tree::MustFetchBeforeLastNameLocked(Inode& inode, const VictimPin& pin) {
  if (reader_ == nullptr || !inode.is_reg() || inode.nlink != 1 ||
      inode.open_count.load() == 0 || pin.get() == &inode) {
    return false;
  }
  std::vector<FileData::Missing> missing;
  absl::ReaderMutexLock il(&inode.mu);
  inode.data.FindMissing(block_size_, 0, inode.size, /*edges_only=*/false,
                         &missing);
  return !missing.empty();
}

void Tree::FetchBeforeLastName(const InodePtr& victim, VictimPin* pin) {
  // Pinned before looking: a block fetched now is not evicted before the
  // name goes.
  pin->Hold(victim);
  std::vector<FileData::Missing> missing;
  {
    absl::ReaderMutexLock il(&victim->mu);
    victim->data.FindMissing(block_size_, 0, victim->size,
                             /*edges_only=*/false, &missing);
  }
  if (missing.empty()) return;
  absl::Status fetched = Fetch(victim, missing, Room::kWaitForRead);
  if (!fetched.ok()) {
    LOG(ERROR) << "file " << victim->ino
               << " is open and loses its last name, but its bytes could "
                  "not all be read from the mirror first: "
               << fetched;
  }
}

// --- Blocks ---------------------------------------------------------------

absl::Status Tree::Fetch(const InodePtr& inode,
                         const std::vector<FileData::Missing>& wanted,
                         Room how) {
  absl::Status first_error;
  for (const FileData::Missing& m : wanted) {
    absl::Status s = FetchOne(inode, m, how);
    if (!s.ok() && first_error.ok()) first_error = s;
  }
  return first_error;
}

absl::Status Tree::FetchOne(const InodePtr& inode, const FileData::Missing& m,
                            Room how) {
  const auto key = std::make_pair(inode->ino, m.index);
  return OnceInFlight(&block_flights_, key, [&]() -> absl::Status {
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
    absl::StatusOr<BudgetRoom> room = ReserveCache(charge, how);
    if (!room.ok()) return room.status();
    // Read straight into the block's own buffer (paid for by `room`).
    FileData::Buffer buffer = FileData::NewBuffer(charge);
    absl::StatusOr<uint64_t> got = reader_->ReadBlock(
        inode->ino, m.index * block_size_, m.length, buffer.get());
    if (!got.ok()) {
      return MirrorError(got.status(),
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

BlockCache::Verdict Tree::JudgeForEviction(Inode& inode, uint64_t index,
                                           uint64_t* freed, bool* busy) {
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

absl::StatusOr<BudgetRoom> Tree::ReserveCache(uint64_t bytes, Room how) {
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
    if (budget_->TryReserve(bytes)) return BudgetRoom(budget_, bytes);
    if (log_ == nullptr || how == Room::kFreeOnly) return ErrnoStatus(ENOSPC);
    const uint64_t used = budget_->used();
    const uint64_t short_by = used + bytes > limit ? used + bytes - limit : 0;
    // A little more than needed, so that the next few do not sweep again.
    const uint64_t want = std::max(short_by, std::min<uint64_t>(
                                                 limit / 64, 4 * block_size_));
    bool busy = false;
    const uint64_t freed = cache_.Evict(
        want, [this, &busy](const InodePtr& inode, uint64_t index,
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
    const bool dirty = log_->GetBacklog().dirty_bytes > 0;
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

void Tree::Readahead(const InodePtr& inode, uint64_t offset, uint64_t length) {
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
  {
    absl::MutexLock l(&flights_mu_);
    std::erase_if(missing, [&](const FileData::Missing& m)
                               ABSL_EXCLUSIVE_LOCKS_REQUIRED(flights_mu_) {
                                 return block_flights_.contains(
                                     std::make_pair(inode->ino, m.index));
                               });
  }
  absl::MutexLock l(&readahead_mu_);
  for (const FileData::Missing& m : missing) {
    if (readahead_queued_.insert({inode->ino, m.index}).second) {
      readahead_queue_.push_back({inode, inode->ino, m});
    }
  }
}

void Tree::ReadaheadLoop() {
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
    InodePtr inode = job.inode.lock();
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

uint64_t Tree::PrefetchAll(
    const std::atomic<bool>& stop,
    absl::FunctionRef<void(uint64_t done, uint64_t total)> progress) {
  std::vector<InodePtr> files;
  {
    absl::ReaderMutexLock l(&mu_);
    for (const auto& [ino, inode] : table_) {
      if (inode->is_reg()) files.push_back(inode);
    }
  }
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

// --- Repairs of the mirror -----------------------------------------------

namespace memfuse::fsd {

std::optional<std::vector<std::pair<fuse_ino_t, std::string>>>
Tree::NamesOfLocked(fuse_ino_t ino) {
  std::vector<std::pair<fuse_ino_t, std::string>> names;
  auto target = table_.find(ino);
  if (target == table_.end() || target->second->nlink == 0) {
    return std::nullopt;
  }
  // The directory holding `ino`: a directory knows its parent; any other
  // object is found by a search of the directories (repairs are rare).
  fuse_ino_t child = ino;
  fuse_ino_t dir = 0;
  if (target->second->is_dir()) {
    dir = target->second->parent;
  } else {
    for (const auto& [candidate, inode] : table_) {
      if (!inode->is_dir() || inode->nlink == 0) continue;
      for (auto it = inode->dir->After(0); it != inode->dir->end(); ++it) {
        if (it->second.ino == ino) {
          dir = candidate;
          break;
        }
      }
      if (dir != 0) break;
    }
  }
  for (int depth = 0; child != FUSE_ROOT_ID; ++depth) {
    auto d = table_.find(dir);
    if (dir == 0 || d == table_.end() || !d->second->is_dir() ||
        depth > 4096) {
      return std::nullopt;
    }
    const Directory& entries = *d->second->dir;
    std::string name;
    for (auto it = entries.After(0); it != entries.end(); ++it) {
      if (it->second.ino == child) {
        name = it->second.name;
        break;
      }
    }
    if (name.empty()) return std::nullopt;
    names.emplace_back(dir, std::move(name));
    child = dir;
    dir = d->second->parent;
  }
  std::reverse(names.begin(), names.end());
  return names;
}

std::string Tree::PathOf(fuse_ino_t ino) {
  absl::ReaderMutexLock l(&mu_);
  auto names = NamesOfLocked(ino);
  if (!names.has_value()) return "?";
  std::string path;
  for (const auto& [dir, name] : *names) absl::StrAppend(&path, "/", name);
  return path.empty() ? "/" : path;
}

Tree::RepairData Tree::Repair(fuse_ino_t id) {
  RepairData data;
  if (log_ == nullptr) return data;
  absl::Cleanup ended = [this, id, &data] {
    if (data.inode == nullptr) log_->EndRepair(id);
  };
  // Exclusive: nothing moves while the chain is appended, so it is the
  // tree as it is at one moment, ordered after everything queued.
  absl::MutexLock l(&mu_);
  std::optional<std::vector<std::pair<fuse_ino_t, std::string>>> names =
      NamesOfLocked(id);
  if (!names.has_value() || names->empty()) {
    return data;  // gone here too, or the root
  }
  std::string path;
  for (const auto& [dir, name] : *names) absl::StrAppend(&path, "/", name);
  if (!log_->BeginRepair(id)) {
    LOG(ERROR) << "mirror: " << path << " was lost by the mirror again after "
               << MutationLog::kMaxRepairs
               << " repairs; its changes are refused for good";
    log_->RefuseForGood(id, EIO, 0);
    return data;
  }
  LOG(WARNING) << "mirror: re-creating " << path
               << " in the mirror, which lost it";
  for (const auto& [dir, name] : *names) {
    const fuse_ino_t ino =
        table_.at(dir)->dir->Find(name);  // NamesOfLocked found it there
    Inode& inode = *table_.at(ino);
    absl::ReaderMutexLock il(&inode.mu);
    recorder_.Created(dir, name, inode, /*repair=*/true);
  }
  InodePtr target = table_.at(id);
  absl::MutexLock il(&target->mu);
  if (target->xattrs != nullptr) {
    for (const auto& [name, value] : *target->xattrs) {
      recorder_.XattrSet(id, name, value);
    }
  }
  if (!target->is_reg()) return data;
  recorder_.AttrsChanged(*target, FUSE_SET_ATTR_SIZE | FUSE_SET_ATTR_MODE |
                                FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_ATIME);
  std::vector<uint64_t> blocks;
  const uint64_t lost = target->data.ForEachHeldBlock(
      block_size_, target->size,
      [&](uint64_t index) { blocks.push_back(index); });
  if (lost > 0) {
    LOG(ERROR) << "mirror: " << path << ": " << lost
               << " bytes of it were only in the mirror, which lost them; "
                  "they read as zeros there, and fsync of it gives EIO";
    log_->RefuseForGood(id, EIO, lost);
  }
  if (!blocks.empty()) {
    data.inode = target;
    data.blocks = std::move(blocks);
  }
  return data;
}

void Tree::ResendBlocks(const RepairData& data) {
  if (data.inode == nullptr) return;
  Inode& inode = *data.inode;
  for (uint64_t index : data.blocks) {
    const uint64_t start = index * block_size_;
    // Room under the dirty limit first, holding no lock (as Write does).
    const MutationLog::DirtyRoom room =
        log_->ReserveDirty(log_->DirtyCharge(start, block_size_));
    absl::MutexLock il(&inode.mu);
    // Sent as it is now: shorter, or not at all, if it shrank meanwhile
    // (and later writes and truncates are queued after the repair anyway).
    if (!inode.linked || start >= inode.size) continue;
    recorder_.Written(data.inode, start,
                      std::min(block_size_, inode.size - start));
  }
  log_->EndRepair(inode.ino);
}

}  // namespace memfuse::fsd
