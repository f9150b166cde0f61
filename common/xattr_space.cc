#include "common/xattr_space.h"

#include <vector>

namespace memfuse::common {
namespace {

constexpr uint64_t kEntryHeader = 16;  // ext4's struct ext4_xattr_entry
constexpr size_t kUserPrefix = 5;      // "user.", stored as an index

uint64_t RoundUp4(uint64_t n) { return (n + 3) & ~uint64_t{3}; }

}  // namespace

uint64_t XattrCost(size_t name_size, size_t value_size) {
  const size_t stored = name_size > kUserPrefix ? name_size - kUserPrefix : 0;
  return RoundUp4(kEntryHeader + stored) + RoundUp4(value_size);
}

bool XattrsFit(absl::Span<const uint64_t> regions,
               absl::Span<const uint64_t> costs) {
  if (regions.empty()) return true;
  std::vector<uint64_t> left(regions.begin(), regions.end());
  for (uint64_t cost : costs) {
    bool placed = false;
    for (uint64_t& room : left) {
      if (cost <= room) {
        room -= cost;
        placed = true;
        break;
      }
    }
    if (!placed) return false;
  }
  return true;
}

}  // namespace memfuse::common
