// The contents of one regular file, as fixed-size blocks.
//
// A block is allocated on first write to it, so holes cost no memory. A
// block's buffer grows with the data written into it (to a power of two, at
// most the block size), so a 100-byte file costs about 128 bytes, not a whole
// block. Every byte of a buffer that was never written is zero.
//
// With a mirror, a block may also be *missing*: its bytes are in the mirror
// and not in memory, because the file was loaded lazily (every block below
// the mirror extent starts missing) or because the block was evicted when
// clean. Reads and partial writes of a missing block need it fetched first
// (Tree does that, with no lock held, and hands the bytes to Install); a
// write of a whole block just replaces it.
//
// Not thread-safe: the owning inode's mutex guards it (REQUIRES on each
// method). The size of the file is kept by the inode, not here; callers pass
// it where it matters.
#ifndef MEMFUSE_FSD_FILE_DATA_H_
#define MEMFUSE_FSD_FILE_DATA_H_

#include <cstdint>
#include <memory>

#include "absl/container/btree_map.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include <string_view>
#include <vector>

#include "fsd/block_budget.h"
#include "fsd/block_cache.h"

namespace memfuse::fsd {

struct Inode;

class FileData {
 public:
  // Blocks are charged to `budget` and, once SetOwner() names the inode,
  // listed in `cache` (null: never evicted); both must outlive this.
  explicit FileData(BlockBudget* budget, BlockCache* cache = nullptr)
      : budget_(budget), cache_(cache) {}
  FileData(const FileData&) = delete;
  FileData& operator=(const FileData&) = delete;
  ~FileData();

  // The inode this belongs to, for the cache's entries.
  void SetOwner(std::weak_ptr<Inode> owner) { owner_ = std::move(owner); }

  // Bytes below `end` that are not in memory are in the mirror (a file
  // loaded lazily).
  void SetMirrorExtent(uint64_t end) { mirror_end_ = end; }

  // A block to fetch: `length` bytes from its start come from the mirror
  // (the rest of it reads as zeros); `gen` tells Install whether it is
  // still the same missing block.
  struct Missing {
    uint64_t index = 0;
    uint64_t length = 0;
    uint64_t gen = 0;
  };
  // The missing blocks among those [offset, offset+length) touches; with
  // `edges_only`, only those it covers partly (what a write needs).
  void FindMissing(uint64_t block_size, uint64_t offset, uint64_t length,
                   bool edges_only, std::vector<Missing>* out) const;
  bool IsMissing(uint64_t block_size, uint64_t index, Missing* missing) const;
  // Big buffers come from huge pages and go back to them (block_memory.h:
  // a bounded number are kept for reuse, the rest are returned to the
  // system at once, never left in a malloc arena); small ones come from
  // malloc.
  struct BufferDeleter {
    constexpr BufferDeleter() noexcept : size(0) {}
    explicit constexpr BufferDeleter(uint64_t size) noexcept : size(size) {}
    void operator()(char* p) const;
    uint64_t size;
  };
  using Buffer = std::unique_ptr<char[], BufferDeleter>;
  // `size` bytes, not initialized. Thread-safe (no FileData involved).
  static Buffer NewBuffer(uint64_t size);

  // What a resident block of `length` bytes costs (to reserve before
  // installing), and the size of the buffer to fetch it into.
  static uint64_t ChargeFor(uint64_t length, uint64_t block_size);

  // Makes `buffer`, of ChargeFor(missing.length) bytes whose first `filled`
  // were fetched, the block `missing` names, paid from `room`, if it is
  // still that missing block; false (nothing taken) otherwise.
  bool Install(uint64_t block_size, const Missing& missing, Buffer buffer,
               uint64_t filled, CacheReservation* room);
  // The same from bytes held elsewhere (copied).
  bool Install(uint64_t block_size, const Missing& missing,
               std::string_view bytes, CacheReservation* room);

  // Frees resident block `index` (the caller made sure the mirror holds
  // its bytes): it is missing from now on. Returns the bytes freed. The
  // block is no longer in the cache; the caller (the cache's sweep) erases
  // its entry. REQUIRES: the block is resident.
  uint64_t EvictForCache(uint64_t index);
  // Reads `index`'s referenced bit and clears it; false for a block that
  // is not resident.
  bool TestAndClearReferenced(uint64_t index, bool* resident);

  // Copies [offset, offset+length) into `out`; holes read as zeros.
  // REQUIRES: the caller bounds the range by the file size, and no block in
  // it is missing (FindMissing).
  void Read(uint64_t block_size, uint64_t offset, uint64_t length,
            char* out) const;

  // Writes `length` bytes at `offset`, paid from `room` first (when given)
  // and then from the budget. ENOSPC, with nothing changed, if they cannot
  // hold the blocks this needs. REQUIRES: no block it covers partly is
  // missing.
  absl::Status Write(uint64_t block_size, uint64_t offset,
                     const char* data, uint64_t length,
                     CacheReservation* room = nullptr);

  // Drops everything at or past `new_size` (zeroing the tail of the last
  // block, so a later extension reads zeros).
  void Truncate(uint64_t block_size, uint64_t new_size);

  // Makes [offset, offset+length) read as zeros, freeing whole blocks.
  // REQUIRES: no block it covers partly is missing.
  void PunchHole(uint64_t block_size, uint64_t offset, uint64_t length);

  // Allocates every block in [offset, offset+length) (fallocate mode 0).
  // ENOSPC, with nothing allocated, if the budget cannot hold them.
  absl::Status Allocate(uint64_t block_size, uint64_t offset,
                        uint64_t length);


  // For a repair of the mirror's copy: calls `held` with the index of each
  // block below `size` whose bytes are in memory, and returns how many
  // bytes below `size` exist only in the mirror (missing here).
  uint64_t ForEachHeldBlock(uint64_t block_size, uint64_t size,
                            absl::FunctionRef<void(uint64_t index)> held) const;

  // Bytes of memory held (what the budget was charged).
  uint64_t resident_bytes() const { return resident_; }

  // Frees every block.
  void Clear();

 private:
  // `capacity` bytes are charged to the budget; `bytes` holds them, or is
  // null for a block fallocate reserved that nothing wrote yet (it reads as
  // zeros and gets its memory on first write, already paid for).
  //
  // A block with neither bytes nor capacity is missing if `mirror_length`
  // is not zero (evicted; `gen` names this eviction), else a hole. Blocks
  // with no entry below the mirror extent are missing too (gen 0).
  struct Block {
    Buffer bytes;
    uint32_t capacity = 0;
    uint32_t mirror_length = 0;
    uint64_t gen = 0;
    // Set by readers under a shared lock, hence through atomic_ref.
    mutable uint8_t referenced = 0;
    bool in_cache = false;
    BlockCache::Handle handle;
  };

  // Makes `block` hold max(`new_capacity`, its capacity) bytes in memory
  // (the increase already charged to the budget by the caller). With
  // `overwrite_all`, the caller is about to write all of it, so it is
  // neither zeroed nor copied.
  void Grow(uint64_t index, Block& block, uint64_t new_capacity,
            bool overwrite_all);
  // Charges the budget for what blocks covering [offset, end) still lack;
  // ENOSPC, charging nothing, if it cannot. REQUIRES: offset < end.
  absl::Status ReserveFor(uint64_t block_size, uint64_t offset, uint64_t end,
                          CacheReservation* room);
  // How many bytes of block `index` the mirror holds (0: not missing).
  uint64_t MirrorLengthOf(uint64_t block_size, uint64_t index,
                          const Block* block) const;
  // Reserves `new_capacity` for `block` without memory (fallocate).
  void Reserve(Block& block, uint64_t new_capacity);
  void Free(Block& block);

  BlockBudget* const budget_;
  BlockCache* const cache_;
  std::weak_ptr<Inode> owner_;
  uint64_t mirror_end_ = 0;
  uint64_t next_gen_ = 1;
  absl::btree_map<uint64_t, Block> blocks_;  // block index -> block
  uint64_t resident_ = 0;
};

}  // namespace memfuse::fsd

#endif  // MEMFUSE_FSD_FILE_DATA_H_
