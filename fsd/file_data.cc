#include "fsd/file_data.h"

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstring>
#include <new>

#include <sys/mman.h>

#include "common/status.h"
#include "fsd/block_memory.h"
#include "fsd/block_size.h"

namespace memfuse::fsd {
namespace {

// The buffer size that holds `needed` bytes of a block of `block_size`.
uint64_t CapacityFor(uint64_t needed, uint64_t block_size) {
  return BlockBufferBytes(needed, block_size);
}

// Buffers of this size and more are mappings of their own.
constexpr uint64_t kMapFrom = 64 << 10;

}  // namespace

// A buffer of `size` bytes, not initialized. Big ones come from huge pages
// and are reused (block_memory.h): a fresh mapping is most of the cost of
// writing a new block.
FileData::Buffer FileData::NewBuffer(uint64_t size) {
  if (size < kMapFrom) {
    return Buffer(new char[size], BufferDeleter(size));
  }
  return Buffer(block_memory::Allocate(size), BufferDeleter(size));
}

void FileData::BufferDeleter::operator()(char* p) const {
  if (size < kMapFrom) {
    delete[] p;
  } else {
    block_memory::Free(p, size);
  }
}

FileData::~FileData() { Clear(); }

uint64_t FileData::ChargeFor(uint64_t length, uint64_t block_size) {
  return CapacityFor(length, block_size);
}

void FileData::Clear() {
  for (auto& [index, block] : blocks_) Free(block);
  blocks_.clear();
  mirror_end_ = 0;
}

void FileData::Free(Block& block) {
  if (block.in_cache) {
    cache_->Remove(block.handle);
    block.in_cache = false;
  }
  budget_->Release(block.capacity);
  resident_ -= block.capacity;
  block.bytes.reset();
  block.capacity = 0;
  block.mirror_length = 0;
}

void FileData::Grow(uint64_t index, Block& block, uint64_t new_capacity,
                    bool overwrite_all) {
  if (block.bytes != nullptr && new_capacity <= block.capacity) return;
  new_capacity = std::max<uint64_t>(new_capacity, block.capacity);
  Buffer bytes = NewBuffer(new_capacity);
  const uint64_t kept = block.bytes != nullptr ? block.capacity : 0;
  if (!overwrite_all) {
    if (kept > 0) std::memcpy(bytes.get(), block.bytes.get(), kept);
    std::memset(bytes.get() + kept, 0, new_capacity - kept);
  }
  if (block.bytes == nullptr && cache_ != nullptr && !owner_.expired()) {
    block.handle = cache_->Add(owner_, index);
    block.in_cache = true;
  }
  resident_ += new_capacity - block.capacity;
  block.bytes = std::move(bytes);
  block.capacity = static_cast<uint32_t>(new_capacity);
  block.mirror_length = 0;
  block.referenced = 1;
}

void FileData::Reserve(Block& block, uint64_t new_capacity) {
  if (new_capacity <= block.capacity) return;
  if (block.bytes != nullptr) {
    // Only reached for a resident block, whose index the caller knows;
    // growing it in place keeps its cache entry.
    Buffer bytes = NewBuffer(new_capacity);
    std::memcpy(bytes.get(), block.bytes.get(), block.capacity);
    std::memset(bytes.get() + block.capacity, 0,
                new_capacity - block.capacity);
    resident_ += new_capacity - block.capacity;
    block.bytes = std::move(bytes);
    block.capacity = static_cast<uint32_t>(new_capacity);
    return;
  }
  resident_ += new_capacity - block.capacity;
  block.capacity = static_cast<uint32_t>(new_capacity);
}

uint64_t FileData::MirrorLengthOf(uint64_t block_size, uint64_t index,
                                  const Block* block) const {
  if (block != nullptr) {
    if (block->bytes != nullptr || block->capacity > 0) return 0;
    return block->mirror_length;
  }
  const uint64_t start = index * block_size;
  if (start >= mirror_end_) return 0;
  return std::min(block_size, mirror_end_ - start);
}

bool FileData::IsMissing(uint64_t block_size, uint64_t index,
                         Missing* missing) const {
  auto it = blocks_.find(index);
  const Block* block = it == blocks_.end() ? nullptr : &it->second;
  const uint64_t length = MirrorLengthOf(block_size, index, block);
  if (length == 0) return false;
  missing->index = index;
  missing->length = length;
  missing->gen = block != nullptr ? block->gen : 0;
  return true;
}

uint64_t FileData::ForEachHeldBlock(
    uint64_t block_size, uint64_t size,
    absl::FunctionRef<void(uint64_t index)> held) const {
  uint64_t missing = 0;
  const uint64_t blocks = (size + block_size - 1) / block_size;
  for (uint64_t index = 0; index < blocks; ++index) {
    auto it = blocks_.find(index);
    const Block* block = it == blocks_.end() ? nullptr : &it->second;
    if (block != nullptr && block->bytes != nullptr) {
      held(index);
    } else {
      missing += MirrorLengthOf(block_size, index, block);
    }
  }
  return missing;
}

void FileData::FindMissing(uint64_t block_size, uint64_t offset,
                           uint64_t length, bool edges_only,
                           std::vector<Missing>* out) const {
  if (length == 0) return;
  const uint64_t end = offset + length;
  const uint64_t first = offset / block_size;
  const uint64_t last = (end - 1) / block_size;
  for (uint64_t index = first; index <= last; ++index) {
    if (edges_only && index != first && index != last) {
      index = last - 1;  // the loop's ++ lands on the last block
      continue;
    }
    Missing m;
    if (!IsMissing(block_size, index, &m)) continue;
    if (edges_only) {
      // A write that covers every byte the mirror has of the block
      // replaces it; one that does not needs the rest.
      const uint64_t start = index * block_size;
      if (offset <= start && end >= start + m.length) continue;
    }
    out->push_back(m);
  }
}

bool FileData::Install(uint64_t block_size, const Missing& missing,
                       Buffer buffer, uint64_t filled, CacheReservation* room) {
  Missing now;
  if (!IsMissing(block_size, missing.index, &now) || now.gen != missing.gen) {
    return false;
  }
  const uint64_t capacity = CapacityFor(now.length, block_size);
  if (buffer.get_deleter().size != capacity) {
    // The file was truncated while the block was fetched: a smaller buffer.
    const uint64_t kept = std::min(filled, capacity);
    Buffer fitted = NewBuffer(capacity);
    std::memcpy(fitted.get(), buffer.get(), kept);
    buffer = std::move(fitted);
    filled = kept;
  }
  if (room == nullptr || !room->Take(capacity)) {
    if (!budget_->TryReserve(capacity)) return false;
  }
  // Past what the mirror holds the block reads as zeros.
  const uint64_t valid = std::min(filled, now.length);
  std::memset(buffer.get() + valid, 0, capacity - valid);
  Block& block = blocks_[missing.index];
  if (cache_ != nullptr && !owner_.expired()) {
    block.handle = cache_->Add(owner_, missing.index);
    block.in_cache = true;
  }
  resident_ += capacity;
  block.bytes = std::move(buffer);
  block.capacity = static_cast<uint32_t>(capacity);
  block.mirror_length = 0;
  block.referenced = 1;
  block.gen = 0;
  return true;
}

bool FileData::Install(uint64_t block_size, const Missing& missing,
                       std::string_view bytes, CacheReservation* room) {
  const uint64_t capacity = CapacityFor(missing.length, block_size);
  const uint64_t filled = std::min<uint64_t>(bytes.size(), capacity);
  Buffer buffer = NewBuffer(capacity);
  std::memcpy(buffer.get(), bytes.data(), filled);
  return Install(block_size, missing, std::move(buffer), filled, room);
}

uint64_t FileData::EvictForCache(uint64_t index) {
  auto it = blocks_.find(index);
  if (it == blocks_.end() || it->second.bytes == nullptr) return 0;
  Block& block = it->second;
  const uint64_t freed = block.capacity;
  block.in_cache = false;  // the sweep erases the entry
  budget_->Release(freed);
  resident_ -= freed;
  block.bytes.reset();
  block.capacity = 0;
  block.mirror_length = static_cast<uint32_t>(freed);
  block.gen = next_gen_++;
  block.referenced = 0;
  return freed;
}

bool FileData::TestAndClearReferenced(uint64_t index, bool* resident) {
  auto it = blocks_.find(index);
  *resident = it != blocks_.end() && it->second.bytes != nullptr;
  if (!*resident) return false;
  const bool was = it->second.referenced != 0;
  it->second.referenced = 0;
  return was;
}

absl::Status FileData::ReserveFor(uint64_t block_size, uint64_t offset,
                                  uint64_t end, CacheReservation* room) {
  const uint64_t last = (end - 1) / block_size;
  uint64_t extra = 0;
  for (uint64_t index = offset / block_size; index <= last; ++index) {
    const uint64_t block_end =
        index == last ? end - index * block_size : block_size;
    auto it = blocks_.find(index);
    const uint64_t have = it == blocks_.end() ? 0 : it->second.capacity;
    extra += std::max(have, CapacityFor(block_end, block_size)) - have;
  }
  if (extra == 0) return absl::OkStatus();
  if (room != nullptr) {
    const uint64_t from_room = std::min(extra, room->bytes());
    if (extra - from_room > 0 && !budget_->TryReserve(extra - from_room)) {
      return common::ErrnoStatus(ENOSPC);
    }
    room->Take(from_room);
    return absl::OkStatus();
  }
  if (!budget_->TryReserve(extra)) return common::ErrnoStatus(ENOSPC);
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
      if (block.bytes != nullptr) {
        std::atomic_ref<uint8_t>(block.referenced)
            .store(1, std::memory_order_relaxed);
      }
    } else {
      std::memset(dst, 0, n);
    }
    pos += n;
  }
}

absl::Status FileData::Write(uint64_t block_size, uint64_t offset,
                             const char* data, uint64_t length,
                             CacheReservation* room) {
  if (length == 0) return absl::OkStatus();
  const uint64_t end = offset + length;

  // Charge the budget for the whole write up front, so that a write either
  // happens entirely or fails with ENOSPC having changed nothing.
  RETURN_IF_ERROR(ReserveFor(block_size, offset, end, room));

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
    Grow(index, block, CapacityFor(in_block + n, block_size), whole);
    std::memcpy(block.bytes.get() + in_block, data + (pos - offset), n);
    pos += n;
  }
  return absl::OkStatus();
}

void FileData::Truncate(uint64_t block_size, uint64_t new_size) {
  mirror_end_ = std::min(mirror_end_, new_size);
  const uint64_t keep = (new_size + block_size - 1) / block_size;
  for (auto it = blocks_.lower_bound(keep); it != blocks_.end();) {
    Free(it->second);
    it = blocks_.erase(it);
  }
  const uint64_t tail = new_size % block_size;
  if (tail == 0) return;
  auto it = blocks_.find(new_size / block_size);
  if (it == blocks_.end()) return;
  Block& block = it->second;
  if (block.bytes != nullptr) {
    if (block.capacity > tail) {
      std::memset(block.bytes.get() + tail, 0, block.capacity - tail);
    }
  } else if (block.mirror_length > tail) {
    // Missing: the mirror keeps the old bytes past `tail` until it applies
    // the truncate; they must not come back.
    block.mirror_length = static_cast<uint32_t>(tail);
  }
}

void FileData::PunchHole(uint64_t block_size, uint64_t offset,
                         uint64_t length) {
  const uint64_t end = offset + length;
  const uint64_t first = offset / block_size;
  const uint64_t last = (end - 1) / block_size;
  for (auto it = blocks_.lower_bound(first);
       it != blocks_.end() && it->first <= last;) {
    const uint64_t start = it->first * block_size;
    const uint64_t from = std::max(offset, start) - start;
    const uint64_t to = std::min(end, start + block_size) - start;
    Block& block = it->second;
    if (from == 0 && to == block_size) {
      Free(block);
      // Below the mirror extent the entry stays, as a hole.
      it = start >= mirror_end_ ? blocks_.erase(it) : std::next(it);
      continue;
    }
    if (block.bytes != nullptr && from < block.capacity) {
      std::memset(block.bytes.get() + from, 0,
                  std::min<uint64_t>(to, block.capacity) - from);
    }
    ++it;
  }
  // Missing blocks with no entry yet, punched whole, become holes.
  if (mirror_end_ > 0) {
    const uint64_t mirror_last = (mirror_end_ - 1) / block_size;
    for (uint64_t index = first; index <= std::min(last, mirror_last);
         ++index) {
      const uint64_t start = index * block_size;
      if (offset <= start && end >= start + block_size) {
        blocks_.try_emplace(index);
      }
    }
  }
}

absl::Status FileData::Allocate(uint64_t block_size, uint64_t offset,
                                uint64_t length) {
  if (length == 0) return absl::OkStatus();
  const uint64_t end = offset + length;
  const uint64_t first = offset / block_size;
  const uint64_t last = (end - 1) / block_size;
  // Blocks the mirror holds are allocated already, there.
  uint64_t extra = 0;
  for (uint64_t index = first; index <= last; ++index) {
    Missing m;
    if (IsMissing(block_size, index, &m)) continue;
    const uint64_t block_end =
        index == last ? end - index * block_size : block_size;
    auto it = blocks_.find(index);
    const uint64_t have = it == blocks_.end() ? 0 : it->second.capacity;
    extra += std::max(have, CapacityFor(block_end, block_size)) - have;
  }
  if (extra > 0 && !budget_->TryReserve(extra)) {
    return common::ErrnoStatus(ENOSPC);
  }
  for (uint64_t index = first; index <= last; ++index) {
    Missing m;
    if (IsMissing(block_size, index, &m)) continue;
    const uint64_t block_end =
        index == last ? end - index * block_size : block_size;
    Reserve(blocks_[index], CapacityFor(block_end, block_size));
  }
  return absl::OkStatus();
}

}  // namespace memfuse::fsd
