// Big block buffers from huge pages, and reuse (block_memory.h).
#include "fsd/block_memory.h"

#include <sys/mman.h>

#include <bit>
#include <cstdint>
#include <new>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"

namespace memfuse::fsd::block_memory {
namespace {

constexpr uint64_t kHugePage = 2 << 20;

struct State {
  absl::Mutex mu;
  // By size: buffers freed and kept, and buffers cut from a huge page but
  // not handed out yet.
  absl::flat_hash_map<uint64_t, std::vector<char*>> kept ABSL_GUARDED_BY(mu);
  uint64_t kept_bytes ABSL_GUARDED_BY(mu) = 0;
  absl::flat_hash_map<uint64_t, std::vector<char*>> spare ABSL_GUARDED_BY(mu);
};

State& state() {
  static State* s = new State;
  return *s;
}

// `bytes` (a multiple of kHugePage) of memory aligned to kHugePage, asked to
// be backed by huge pages, faulted in.
char* MapHuge(uint64_t bytes) {
  const uint64_t span = bytes + kHugePage;
  void* p = mmap(nullptr, span, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  const auto raw = reinterpret_cast<uintptr_t>(p);
  const uintptr_t start = (raw + kHugePage - 1) & ~(kHugePage - 1);
  // The unaligned ends go back at once.
  if (start > raw) munmap(p, start - raw);
  const uintptr_t end = start + bytes;
  if (raw + span > end) munmap(reinterpret_cast<void*>(end), raw + span - end);
  char* chunk = reinterpret_cast<char*>(start);
  // Best effort both: without them the pages come one by one.
  madvise(chunk, bytes, MADV_HUGEPAGE);
  madvise(chunk, bytes, MADV_POPULATE_WRITE);
  return chunk;
}

}  // namespace

char* Allocate(uint64_t size) {
  State& s = state();
  {
    absl::MutexLock l(&s.mu);
    if (auto it = s.kept.find(size); it != s.kept.end() && !it->second.empty()) {
      char* p = it->second.back();
      it->second.pop_back();
      s.kept_bytes -= size;
      return p;
    }
    if (auto it = s.spare.find(size);
        it != s.spare.end() && !it->second.empty()) {
      char* p = it->second.back();
      it->second.pop_back();
      return p;
    }
  }
  if (size >= kHugePage) return MapHuge(size);
  // One huge page cut into buffers of `size`: this one, and spares.
  char* chunk = MapHuge(kHugePage);
  std::vector<char*> rest;
  for (uint64_t at = size; at < kHugePage; at += size) rest.push_back(chunk + at);
  absl::MutexLock l(&s.mu);
  std::vector<char*>& spare = s.spare[size];
  spare.insert(spare.end(), rest.begin(), rest.end());
  return chunk;
}

void Free(char* p, uint64_t size) {
  State& s = state();
  {
    absl::MutexLock l(&s.mu);
    if (s.kept_bytes + size <= kKeptBytes) {
      s.kept[size].push_back(p);
      s.kept_bytes += size;
      return;
    }
  }
  // Returns the pages (a huge page shared with other buffers is split).
  munmap(p, size);
}

uint64_t KeptBytes() {
  State& s = state();
  absl::MutexLock l(&s.mu);
  return s.kept_bytes;
}

void ReleaseKept() {
  State& s = state();
  absl::flat_hash_map<uint64_t, std::vector<char*>> kept;
  {
    absl::MutexLock l(&s.mu);
    kept.swap(s.kept);
    s.kept_bytes = 0;
  }
  for (const auto& [size, buffers] : kept) {
    for (char* p : buffers) munmap(p, size);
  }
}

}  // namespace memfuse::fsd::block_memory
