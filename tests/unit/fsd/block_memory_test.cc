// Big block buffers (fsd/block_memory.h): reused once freed, never more
// kept than the bound, and every buffer its own memory.
#include "fsd/block_memory.h"

#include <cstring>
#include <set>
#include <vector>

#include "gtest/gtest.h"

namespace memfuse::fsd {
namespace {

constexpr uint64_t kMiB = 1 << 20;

TEST(BlockMemoryTest, AFreedBufferIsTheNextOneOfItsSize) {
  block_memory::ReleaseKept();  // room to keep one, whatever ran before
  EXPECT_EQ(block_memory::KeptBytes(), 0u);
  char* first = block_memory::Allocate(kMiB);
  std::memset(first, 'a', kMiB);
  block_memory::Free(first, kMiB);
  char* again = block_memory::Allocate(kMiB);
  EXPECT_EQ(again, first) << "not reused";
  block_memory::Free(again, kMiB);
}

TEST(BlockMemoryTest, BuffersDoNotOverlapAndKeptMemoryIsBounded) {
  // More than the bound, of two sizes cut from huge pages and one bigger.
  std::vector<std::pair<char*, uint64_t>> held;
  for (uint64_t size : {uint64_t{64} << 10, kMiB, 4 * kMiB}) {
    for (uint64_t total = 0; total < block_memory::kKeptBytes + 8 * kMiB;
         total += size) {
      char* p = block_memory::Allocate(size);
      std::memset(p, static_cast<int>(held.size() & 0x7f), size);
      held.emplace_back(p, size);
    }
  }
  std::set<std::pair<char*, char*>> ranges;
  for (const auto& [p, size] : held) ranges.emplace(p, p + size);
  char* last_end = nullptr;
  for (const auto& [begin, end] : ranges) {
    EXPECT_GE(begin, last_end) << "two buffers share memory";
    last_end = end;
  }
  // Each still holds what was written into it.
  for (size_t i = 0; i < held.size(); ++i) {
    const auto [p, size] = held[i];
    ASSERT_EQ(p[0], static_cast<char>(i & 0x7f));
    ASSERT_EQ(p[size - 1], static_cast<char>(i & 0x7f));
  }
  for (const auto& [p, size] : held) block_memory::Free(p, size);
  EXPECT_LE(block_memory::KeptBytes(), block_memory::kKeptBytes);
  EXPECT_GT(block_memory::KeptBytes(), 0u);
}

}  // namespace
}  // namespace memfuse::fsd
