// The Tree's side of the mirror: its reader and log set up, listing
// directories at first use (one listing per directory at a time, never
// under a lock), what an unlink of an open file fetches first, the files
// the prefetch of --lazy-load false reads (block_fetcher.h does the
// reading), and re-creating what the mirror lost.
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

}  // namespace

Tree::~Tree() { StopMirrorReads(); }

void Tree::StopMirrorReads() { fetcher_.Stop(); }

void Tree::SetMirrorLog(MutationLog* log) {
  log_ = log;
  recorder_.SetLog(log);
  fetcher_.SetLog(log);
  // Blocks the mirror acknowledges become evictable: wake whoever waits
  // for room in the cache (BlockFetcher::Reserve).
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
  fetcher_.SetReader(reader);
}

Tree::CacheStats Tree::GetCacheStats() const {
  CacheStats stats;
  static_cast<BlockFetcher::Stats&>(stats) = fetcher_.GetStats();
  stats.dirs_listed = dirs_listed_.load(std::memory_order_relaxed);
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

absl::Status Tree::ListNow(fuse_ino_t ino) {
  return dir_flights_.Do(ino, [&] { return ListOnce(ino); });
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
      status = MirrorReadError(listing.status(),
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

absl::Status Tree::ListBeforeRemoval(fuse_ino_t parent, std::string_view name) {
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
  absl::Status fetched =
      fetcher_.Fetch(victim, missing, BlockFetcher::Room::kWaitForRead);
  if (!fetched.ok()) {
    LOG(ERROR) << "file " << victim->ino
               << " is open and loses its last name, but its bytes could "
                  "not all be read from the mirror first: "
               << fetched;
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
  return fetcher_.Prefetch(files, stop, progress);
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
    const DirtySet::Reservation room =
        log_->dirty().Reserve(log_->dirty().Charge(start, block_size_));
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
