#include "fsd/file_data.h"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>

#include <sys/mman.h>

#include "common/status.h"

namespace memfuse::fsd {
namespace {

constexpr uint64_t kMinCapacity = 64;

// The buffer size that holds `needed` bytes of a block of `block_size`.
uint64_t CapacityFor(uint64_t needed, uint64_t block_size) {
  if (needed >= block_size) return block_size;
  return std::max(kMinCapacity, std::bit_ceil(needed));
}

// A buffer of `size` bytes, not initialized. Big ones are faulted in with
// one madvise instead of a page fault per 4 KiB page, which is most of the
// cost of writing a fresh block.
std::unique_ptr<char[]> NewBuffer(uint64_t size) {
  std::unique_ptr<char[]> bytes = std::make_unique_for_overwrite<char[]>(size);
  constexpr uint64_t kPopulateFrom = 64 << 10;
  if (size >= kPopulateFrom) {
    const uintptr_t page = 4096;
    const uintptr_t start =
        (reinterpret_cast<uintptr_t>(bytes.get()) + page - 1) & ~(page - 1);
    const uintptr_t end =
        (reinterpret_cast<uintptr_t>(bytes.get()) + size) & ~(page - 1);
    // Best effort: on failure the pages fault in one by one as usual.
    if (end > start) {
      madvise(reinterpret_cast<void*>(start), end - start, MADV_POPULATE_WRITE);
    }
  }
  return bytes;
}

}  // namespace

FileData::~FileData() { Clear(); }

void FileData::Clear() {
  for (auto& [index, block] : blocks_) Free(block);
  blocks_.clear();
}

void FileData::Free(Block& block) {
  budget_->Release(block.capacity);
  resident_ -= block.capacity;
  block.bytes.reset();
  block.capacity = 0;
}

void FileData::Grow(Block& block, uint64_t new_capacity, bool overwrite_all) {
  if (block.bytes != nullptr && new_capacity <= block.capacity) return;
  new_capacity = std::max<uint64_t>(new_capacity, block.capacity);
  std::unique_ptr<char[]> bytes = NewBuffer(new_capacity);
  const uint64_t kept = block.bytes != nullptr ? block.capacity : 0;
  if (!overwrite_all) {
    if (kept > 0) std::memcpy(bytes.get(), block.bytes.get(), kept);
    std::memset(bytes.get() + kept, 0, new_capacity - kept);
  }
  resident_ += new_capacity - block.capacity;
  block.bytes = std::move(bytes);
  block.capacity = static_cast<uint32_t>(new_capacity);
}

void FileData::Reserve(Block& block, uint64_t new_capacity) {
  if (new_capacity <= block.capacity) return;
  if (block.bytes != nullptr) {
    Grow(block, new_capacity, /*overwrite_all=*/false);
    return;
  }
  resident_ += new_capacity - block.capacity;
  block.capacity = static_cast<uint32_t>(new_capacity);
}

absl::Status FileData::ReserveFor(uint64_t block_size, uint64_t offset,
                                  uint64_t end) {
  const uint64_t last = (end - 1) / block_size;
  uint64_t extra = 0;
  for (uint64_t index = offset / block_size; index <= last; ++index) {
    const uint64_t block_end =
        index == last ? end - index * block_size : block_size;
    auto it = blocks_.find(index);
    const uint64_t have = it == blocks_.end() ? 0 : it->second.capacity;
    extra += std::max(have, CapacityFor(block_end, block_size)) - have;
  }
  if (extra > 0 && !budget_->TryReserve(extra)) {
    return common::ErrnoStatus(ENOSPC);
  }
  return absl::OkStatus();
}

void FileData::Read(uint64_t block_size, uint64_t offset, uint64_t length,
                    char* out) const {
  const uint64_t end = offset + length;
  auto it = blocks_.lower_bound(offset / block_size);
  for (uint64_t pos = offset; pos < end;) {
    const uint64_t index = pos / block_size;
    const uint64_t in_block = pos % block_size;
    const uint64_t n = std::min(block_size - in_block, end - pos);
    char* dst = out + (pos - offset);
    while (it != blocks_.end() && it->first < index) ++it;
    if (it != blocks_.end() && it->first == index) {
      const Block& block = it->second;
      const uint64_t have = block.bytes != nullptr && in_block < block.capacity
                                ? std::min(n, block.capacity - in_block)
                                : 0;
      if (have > 0) std::memcpy(dst, block.bytes.get() + in_block, have);
      if (have < n) std::memset(dst + have, 0, n - have);
    } else {
      std::memset(dst, 0, n);
    }
    pos += n;
  }
}

absl::Status FileData::Write(uint64_t block_size, uint64_t offset,
                             const char* data, uint64_t length) {
  if (length == 0) return absl::OkStatus();
  const uint64_t end = offset + length;

  // Charge the budget for the whole write up front, so that a write either
  // happens entirely or fails with ENOSPC having changed nothing.
  RETURN_IF_ERROR(ReserveFor(block_size, offset, end));

  auto it = blocks_.lower_bound(offset / block_size);
  for (uint64_t pos = offset; pos < end;) {
    const uint64_t index = pos / block_size;
    const uint64_t in_block = pos % block_size;
    const uint64_t n = std::min(block_size - in_block, end - pos);
    while (it != blocks_.end() && it->first < index) ++it;
    if (it == blocks_.end() || it->first != index) {
      it = blocks_.try_emplace(it, index);
    }
    Block& block = it->second;
    const bool whole = in_block == 0 && n == block_size;
    Grow(block, CapacityFor(in_block + n, block_size), whole);
    std::memcpy(block.bytes.get() + in_block, data + (pos - offset), n);
    pos += n;
  }
  return absl::OkStatus();
}

void FileData::Truncate(uint64_t block_size, uint64_t new_size) {
  const uint64_t keep = (new_size + block_size - 1) / block_size;
  for (auto it = blocks_.lower_bound(keep); it != blocks_.end();) {
    Free(it->second);
    it = blocks_.erase(it);
  }
  const uint64_t tail = new_size % block_size;
  if (tail == 0) return;
  auto it = blocks_.find(new_size / block_size);
  if (it != blocks_.end() && it->second.bytes != nullptr &&
      it->second.capacity > tail) {
    std::memset(it->second.bytes.get() + tail, 0, it->second.capacity - tail);
  }
}

void FileData::PunchHole(uint64_t block_size, uint64_t offset,
                         uint64_t length) {
  const uint64_t end = offset + length;
  for (auto it = blocks_.lower_bound(offset / block_size);
       it != blocks_.end() && it->first * block_size < end;) {
    const uint64_t start = it->first * block_size;
    const uint64_t from = std::max(offset, start) - start;
    const uint64_t to = std::min(end, start + block_size) - start;
    Block& block = it->second;
    if (from == 0 && to == block_size) {
      Free(block);
      it = blocks_.erase(it);
      continue;
    }
    if (block.bytes != nullptr && from < block.capacity) {
      std::memset(block.bytes.get() + from, 0,
                  std::min<uint64_t>(to, block.capacity) - from);
    }
    ++it;
  }
}

absl::Status FileData::Allocate(uint64_t block_size, uint64_t offset,
                                uint64_t length) {
  if (length == 0) return absl::OkStatus();
  const uint64_t end = offset + length;
  const uint64_t first = offset / block_size;
  const uint64_t last = (end - 1) / block_size;
  RETURN_IF_ERROR(ReserveFor(block_size, offset, end));
  for (uint64_t index = first; index <= last; ++index) {
    const uint64_t block_end =
        index == last ? end - index * block_size : block_size;
    Reserve(blocks_[index], CapacityFor(block_end, block_size));
  }
  return absl::OkStatus();
}

}  // namespace memfuse::fsd
