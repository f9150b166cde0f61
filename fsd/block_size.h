// How many bytes of memory a block's buffer takes: the one formula the
// file data (which allocates it) and the dirty set (which charges it to
// the write limit) share. A buffer grows by powers of two from 64 bytes
// up to the block size (a power of two, --block-size), so a small file
// costs little and a full block exactly its size.
#ifndef MEMFUSE_FSD_BLOCK_SIZE_H_
#define MEMFUSE_FSD_BLOCK_SIZE_H_

#include <algorithm>
#include <bit>
#include <cstdint>

namespace memfuse::fsd {

inline constexpr uint64_t kMinBlockBuffer = 64;

// The buffer that holds a block's first `needed` bytes.
constexpr uint64_t BlockBufferBytes(uint64_t needed, uint64_t block_size) {
  return std::min(block_size,
                  std::bit_ceil(std::max(needed, kMinBlockBuffer)));
}

}  // namespace memfuse::fsd

#endif  // MEMFUSE_FSD_BLOCK_SIZE_H_
