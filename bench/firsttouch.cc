// firsttouch: what writing into memory costs by where the memory comes
// from, the figure behind fsd/block_memory.h. Copies 1 MiB at a time from a
// warm buffer into: fresh 4 KiB-page mappings (populated first), mappings
// made, written and unmapped in a loop, fresh 2 MiB transparent huge pages,
// and one buffer used again. Prints one line per case, MiB/s of the copy
// (for fresh mappings, populate included where the case says so):
//   case=fresh_4k_copy mib=1024 mib_per_s=480
// On bare metal all are close; on some virtual machines the first touch of
// a guest page costs far more than the copy.

#include <sys/mman.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace {

constexpr size_t kMiB = 1 << 20;
constexpr size_t kHuge = 2 << 20;
constexpr int kCopies = 1024;

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

void Report(const char* name, double seconds) {
  std::printf("case=%s mib=%d mib_per_s=%.0f\n", name, kCopies,
              seconds > 0 ? kCopies / seconds : 0.0);
}

char* Map(size_t size) {
  void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    std::perror("firsttouch: mmap");
    std::exit(1);
  }
  return static_cast<char*>(p);
}

}  // namespace

int main() {
  std::vector<char> src(kMiB, 7);

  // Fresh 4 KiB pages, populated, then copied into (copy timed alone).
  std::vector<char*> held;
  double copy = 0;
  for (int i = 0; i < kCopies; ++i) {
    char* p = Map(kMiB);
    madvise(p, kMiB, MADV_POPULATE_WRITE);
    const auto start = Clock::now();
    std::memcpy(p, src.data(), kMiB);
    copy += Seconds(start);
    held.push_back(p);
  }
  Report("fresh_4k_copy", copy);
  for (char* p : held) munmap(p, kMiB);

  // Map, populate, copy, unmap: the kernel's own page reuse.
  auto start = Clock::now();
  for (int i = 0; i < kCopies; ++i) {
    char* p = Map(kMiB);
    madvise(p, kMiB, MADV_POPULATE_WRITE);
    std::memcpy(p, src.data(), kMiB);
    munmap(p, kMiB);
  }
  Report("map_copy_unmap_4k", Seconds(start));

  // Fresh 2 MiB huge pages (aligned, MADV_HUGEPAGE), two copies each.
  start = Clock::now();
  for (int i = 0; i < kCopies / 2; ++i) {
    char* raw = Map(2 * kHuge);
    char* p = reinterpret_cast<char*>(
        (reinterpret_cast<uintptr_t>(raw) + kHuge - 1) & ~(kHuge - 1));
    madvise(p, kHuge, MADV_HUGEPAGE);
    madvise(p, kHuge, MADV_POPULATE_WRITE);
    std::memcpy(p, src.data(), kMiB);
    std::memcpy(p + kMiB, src.data(), kMiB);
    munmap(raw, 2 * kHuge);
  }
  Report("map_copy_unmap_huge", Seconds(start));

  // One buffer, used again and again.
  char* reused = Map(kMiB);
  madvise(reused, kMiB, MADV_POPULATE_WRITE);
  start = Clock::now();
  for (int i = 0; i < kCopies; ++i) std::memcpy(reused, src.data(), kMiB);
  Report("reused", Seconds(start));
  munmap(reused, kMiB);
  return 0;
}
