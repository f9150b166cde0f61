// Where big block buffers (64 KiB and more) come from: 2 MiB transparent
// huge pages, cut into buffers of one size, and freed buffers kept for the
// next block of their size, up to a bound.
//
// Why: on the virtual machines mem-fuse runs on, the first write to freshly
// mapped 4 KiB pages costs far more than the copy itself (measured: 0.5 GB/s
// into a new mapping, 34 GB/s into one used before, 8 GB/s into a new huge
// page), and a write of a new block is exactly that. Huge pages make the
// first touch cheap, and reuse makes it free.
//
// Memory: a buffer is returned to the system when it is freed beyond the
// bound (kKeptBytes), so what is held beyond the cache's blocks is at most
// that bound plus, per size, the unused rest of one huge page. The caller
// charges only what it asked for.
//
// Thread-safe: one mutex around the free lists; mapping and faulting in
// happen outside it.
#ifndef MEMFUSE_FSD_BLOCK_MEMORY_H_
#define MEMFUSE_FSD_BLOCK_MEMORY_H_

#include <cstdint>

namespace memfuse::fsd::block_memory {

// Freed buffers kept for reuse, at most (all sizes together).
inline constexpr uint64_t kKeptBytes = 32 << 20;

// A buffer of `size` bytes (a power of two, at least 64 KiB), not
// initialized. Throws std::bad_alloc when there is no memory.
char* Allocate(uint64_t size);
// Gives back a buffer from Allocate(`size`).
void Free(char* p, uint64_t size);

// Freed buffers kept now, in bytes (tests).
uint64_t KeptBytes();
// Returns every kept buffer to the system.
void ReleaseKept();

}  // namespace memfuse::fsd::block_memory

#endif  // MEMFUSE_FSD_BLOCK_MEMORY_H_
