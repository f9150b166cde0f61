// The Tree's file data: open, read, write (and the set-id bits a write
// clears), fallocate, copy_file_range. Thread-safety as Tree's (tree.h).
#include "fsd/tree.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/xattr.h>

#include <algorithm>
#include <cerrno>
#include <ctime>

#include "common/status.h"
#include "common/xattr_space.h"
#include "glog/logging.h"
#include "fsd/tree_rules.h"

namespace memfuse::fsd {

using common::ErrnoStatus;
using namespace tree_rules;  // NOLINT: the Tree's own rules

bool Tree::KillSuidGid(fuse_ino_t ino) {
  InodePtr inode = Find(ino);
  absl::MutexLock il(&inode->mu);
  mode_t mode = inode->mode & ~S_ISUID;
  if (mode & S_IXGRP) mode &= ~S_ISGID;
  if (mode == inode->mode) return false;
  inode->mode = mode;
  inode->ctime = Now();
  recorder_.AttrsChanged(*inode, FUSE_SET_ATTR_MODE);
  return true;
}

absl::Status Tree::Open(fuse_ino_t ino, int flags) {
  if (!(flags & O_TRUNC)) return absl::OkStatus();
  InodePtr inode = Find(ino);
  if (!inode->is_reg()) return absl::OkStatus();
  absl::MutexLock il(&inode->mu);
  inode->data.Truncate(block_size_, 0);
  inode->size = 0;
  inode->mtime = inode->ctime = Now();
  recorder_.AttrsChanged(*inode, FUSE_SET_ATTR_SIZE | FUSE_SET_ATTR_MTIME);
  return absl::OkStatus();
}

absl::Status Tree::Opened(fuse_ino_t ino) {
  // Under the tree lock: see MustFetchBeforeLastNameLocked.
  absl::ReaderMutexLock l(&mu_);
  Inode& inode = GetLocked(ino);
  if (reader_ != nullptr && inode.is_reg() && inode.nlink == 0 &&
      inode.open_count.load() == 0) {
    // Nobody had it open when its last name went, so nothing was fetched:
    // what is not in memory is gone with the name.
    std::vector<FileData::Missing> missing;
    absl::ReaderMutexLock il(&inode.mu);
    inode.data.FindMissing(block_size_, 0, inode.size, /*edges_only=*/false,
                           &missing);
    if (!missing.empty()) return ErrnoStatus(ENOENT);
  }
  inode.open_count.fetch_add(1);
  return absl::OkStatus();
}

void Tree::Released(fuse_ino_t ino) { Find(ino)->open_count.fetch_sub(1); }

absl::StatusOr<size_t> Tree::Read(fuse_ino_t ino, uint64_t offset, size_t size,
                                  char* out) {
  InodePtr inode = Find(ino);
  if (inode->is_dir()) return ErrnoStatus(EISDIR);
  std::vector<FileData::Missing> missing;
  size_t n = 0;
  // Blocks not in memory are fetched with no lock held, then the read is
  // tried again (they may have gone again meanwhile, rarely).
  for (int attempt = 0;; ++attempt) {
    {
      absl::ReaderMutexLock il(&inode->mu);
      if (offset >= inode->size) return 0;
      n = static_cast<size_t>(std::min<uint64_t>(size, inode->size - offset));
      missing.clear();
      if (reader_ != nullptr) {
        inode->data.FindMissing(block_size_, offset, n, /*edges_only=*/false,
                                &missing);
      }
      if (missing.empty()) {
        inode->data.Read(block_size_, offset, n, out);
        break;
      }
    }
    if (attempt == 0) fetcher_.Readahead(inode, offset, n);
    RETURN_IF_ERROR(fetcher_.Fetch(inode, missing, Room::kWaitForRead));
  }
  if (reader_ != nullptr) fetcher_.Readahead(inode, offset, n);
  return n;
}

absl::StatusOr<size_t> Tree::Write(fuse_ino_t ino, uint64_t offset,
                                   const char* data, size_t size,
                                   bool kernel_times) {
  InodePtr inode = Find(ino);
  if (inode->is_dir()) return ErrnoStatus(EISDIR);
  if (offset + size < offset || offset + size > uint64_t{INT64_MAX}) {
    return ErrnoStatus(EFBIG);
  }
  // At the dirty limit, wait for the mirror here, before taking the
  // inode's lock: the sender needs it to send what frees the room. Room in
  // the cache is made here too, by evicting other blocks.
  const DirtySet::Reservation room =
      log_ != nullptr
          ? log_->dirty().Reserve(log_->dirty().Charge(offset, size))
          : DirtySet::Reservation();
  CacheReservation cache_room;
  if (reader_ != nullptr && size > 0) {
    ASSIGN_OR_RETURN(cache_room,
                     fetcher_.Reserve(log_->dirty().Charge(offset, size),
                                  Room::kWaitForWrite));
  }
  std::vector<FileData::Missing> missing;
  while (true) {
    if (reader_ != nullptr) {
      // A block written only in part keeps the rest of its bytes: those
      // in the mirror are fetched first.
      missing.clear();
      {
        absl::ReaderMutexLock il(&inode->mu);
        inode->data.FindMissing(block_size_, offset, size,
                                /*edges_only=*/true, &missing);
      }
      if (!missing.empty()) {
        RETURN_IF_ERROR(fetcher_.Fetch(inode, missing, Room::kWaitForWrite));
      }
    }
    absl::MutexLock il(&inode->mu);
    if (reader_ != nullptr) {
      missing.clear();
      inode->data.FindMissing(block_size_, offset, size, /*edges_only=*/true,
                              &missing);
      if (!missing.empty()) continue;  // evicted again meanwhile
    }
    RETURN_IF_ERROR(
        inode->data.Write(block_size_, offset, data, size, &cache_room));
    inode->size = std::max<uint64_t>(inode->size, offset + size);
    if (!kernel_times) inode->mtime = inode->ctime = Now();
    if (inode->linked) {
      recorder_.Written(inode, offset, size);
    }
    return size;
  }
}

absl::Status Tree::Fallocate(fuse_ino_t ino, int mode, uint64_t offset,
                             uint64_t length) {
  InodePtr inode = Find(ino);
  if (!inode->is_reg()) return ErrnoStatus(inode->is_dir() ? EISDIR : ENODEV);
  if (offset + length < offset || offset + length > uint64_t{INT64_MAX}) {
    return ErrnoStatus(EFBIG);
  }
  if (mode == (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE) &&
      reader_ != nullptr) {
    // The blocks punched in part keep the rest of their bytes.
    std::vector<FileData::Missing> missing;
    {
      absl::ReaderMutexLock il(&inode->mu);
      inode->data.FindMissing(block_size_, offset,
                              std::min(length, inode->size > offset
                                                   ? inode->size - offset
                                                   : 0),
                              /*edges_only=*/true, &missing);
    }
    RETURN_IF_ERROR(fetcher_.Fetch(inode, missing, Room::kWaitForWrite));
  }
  absl::MutexLock il(&inode->mu);
  const uint64_t end = offset + length;
  if (mode == (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)) {
    const uint64_t stop = std::min(end, inode->size);
    inode->mtime = inode->ctime = Now();
    if (offset < stop) {
      inode->data.PunchHole(block_size_, offset, stop - offset);
      // Sent as a punch, not as data: it dirties nothing (the mirror's
      // bytes around the hole are already fsd's, or on their way in
      // earlier slots), and a local mirror gets a hole, not zeros. The
      // log orders it like a size change: it closes the file's open
      // slots (a later write is not widened into a slot sent before it)
      // and keeps the file's blocks from eviction until it is applied.
      if (inode->linked) {
        recorder_.HolePunched(ino, offset, stop - offset);
        // Punching set the mirror file's mtime to its own now.
        recorder_.AttrsChanged(*inode, FUSE_SET_ATTR_MTIME);
      }
    }
    return absl::OkStatus();
  }
  if (mode != 0 && mode != FALLOC_FL_KEEP_SIZE) return ErrnoStatus(EOPNOTSUPP);
  // Without a mirror the cache is the space, and fallocate reserves it.
  // With one the space is the mirror's: blocks reserved here would only
  // fill the cache (and past it, ENOSPC for a file dd could write), so the
  // range stays holes, charged to nothing, until written.
  if (log_ == nullptr) {
    RETURN_IF_ERROR(inode->data.Allocate(block_size_, offset, length));
  }
  if (mode == 0 && end > inode->size) {
    inode->size = end;
    inode->mtime = inode->ctime = Now();
    recorder_.AttrsChanged(*inode, FUSE_SET_ATTR_SIZE | FUSE_SET_ATTR_MTIME);
  }
  return absl::OkStatus();
}

absl::StatusOr<size_t> Tree::CopyFileRange(fuse_ino_t in, uint64_t in_offset,
                                           fuse_ino_t out, uint64_t out_offset,
                                           size_t length) {
  // Through a bounded buffer, one inode lock at a time: copying within one
  // file, or between two files in opposite directions at once, cannot
  // deadlock.
  constexpr size_t kChunk = 1 << 20;
  std::unique_ptr<char[]> buffer(new char[std::min(length, kChunk)]);
  size_t copied = 0;
  while (copied < length) {
    const size_t want = std::min(length - copied, kChunk);
    ASSIGN_OR_RETURN(size_t got,
                     Read(in, in_offset + copied, want, buffer.get()));
    if (got == 0) break;
    absl::StatusOr<size_t> wrote =
        Write(out, out_offset + copied, buffer.get(), got);
    if (!wrote.ok()) {
      if (copied > 0) break;  // report what was copied
      return wrote.status();
    }
    copied += got;
    if (got < want) break;
  }
  return copied;
}

}  // namespace memfuse::fsd
