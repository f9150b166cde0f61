// The contents of one regular file, as fixed-size blocks.
//
// A block is allocated on first write to it, so holes cost no memory. A
// block's buffer grows with the data written into it (to a power of two, at
// most the block size), so a 100-byte file costs about 128 bytes, not a whole
// block. Every byte of a buffer that was never written is zero.
//
// Not thread-safe: the owning inode's mutex guards it (REQUIRES on each
// method). The size of the file is kept by the inode, not here; callers pass
// it where it matters.
#ifndef MEMFUSE_FSD_FILE_DATA_H_
#define MEMFUSE_FSD_FILE_DATA_H_

#include <cstdint>
#include <memory>

#include "absl/container/btree_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "fsd/block_budget.h"

namespace memfuse::fsd {

class FileData {
 public:
  // Blocks are charged to `budget`, which must outlive this.
  explicit FileData(BlockBudget* budget) : budget_(budget) {}
  FileData(const FileData&) = delete;
  FileData& operator=(const FileData&) = delete;
  ~FileData();

  // Copies [offset, offset+length) into `out`; holes read as zeros. The
  // caller bounds the range by the file size.
  void Read(uint64_t block_size, uint64_t offset, uint64_t length,
            char* out) const;

  // Writes `length` bytes at `offset`. ENOSPC, with nothing changed, if the
  // budget cannot hold the blocks this needs.
  absl::Status Write(uint64_t block_size, uint64_t offset,
                     const char* data, uint64_t length);

  // Drops everything at or past `new_size` (zeroing the tail of the last
  // block, so a later extension reads zeros).
  void Truncate(uint64_t block_size, uint64_t new_size);

  // Makes [offset, offset+length) read as zeros, freeing whole blocks.
  void PunchHole(uint64_t block_size, uint64_t offset, uint64_t length);

  // Allocates every block in [offset, offset+length) (fallocate mode 0).
  // ENOSPC, with nothing allocated, if the budget cannot hold them.
  absl::Status Allocate(uint64_t block_size, uint64_t offset,
                        uint64_t length);


  // Bytes of memory held (what the budget was charged).
  uint64_t resident_bytes() const { return resident_; }

  // Frees every block.
  void Clear();

 private:
  // `capacity` bytes are charged to the budget; `bytes` holds them, or is
  // null for a block fallocate reserved that nothing wrote yet (it reads as
  // zeros and gets its memory on first write, already paid for).
  struct Block {
    std::unique_ptr<char[]> bytes;
    uint32_t capacity = 0;
  };

  // Makes `block` hold max(`new_capacity`, its capacity) bytes in memory
  // (the increase already charged to the budget by the caller). With
  // `overwrite_all`, the caller is about to write all of it, so it is
  // neither zeroed nor copied.
  void Grow(Block& block, uint64_t new_capacity, bool overwrite_all);
  // Charges the budget for what blocks covering [offset, end) still lack;
  // ENOSPC, charging nothing, if it cannot. REQUIRES: offset < end.
  absl::Status ReserveFor(uint64_t block_size, uint64_t offset, uint64_t end);
  // Reserves `new_capacity` for `block` without memory (fallocate).
  void Reserve(Block& block, uint64_t new_capacity);
  void Free(Block& block);

  BlockBudget* const budget_;
  absl::btree_map<uint64_t, Block> blocks_;  // block index -> block
  uint64_t resident_ = 0;
};

}  // namespace memfuse::fsd

#endif  // MEMFUSE_FSD_FILE_DATA_H_
