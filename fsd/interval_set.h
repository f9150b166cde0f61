// A set of byte ranges [start, end) kept merged: overlapping or touching
// ranges become one. It is the shape of a file's dirty regions (what has
// been written and not yet acknowledged by the mirror): a hot range written
// a thousand times stays one interval, and what gets sent is the merged
// ranges, never the individual writes.
//
// Not thread-safe: the owner's lock guards it.
#ifndef MEMFUSE_FSD_INTERVAL_SET_H_
#define MEMFUSE_FSD_INTERVAL_SET_H_

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/container/btree_map.h"

namespace memfuse::fsd {

class IntervalSet {
 public:
  using Interval = std::pair<uint64_t, uint64_t>;  // [first, second)

  // Adds [start, end), merging with what it overlaps or touches.
  void Add(uint64_t start, uint64_t end);
  // Removes [start, end), splitting an interval that straddles it.
  void Remove(uint64_t start, uint64_t end);
  // Removes everything at or past `end` (a truncate).
  void TruncateTo(uint64_t end) { Remove(end, UINT64_MAX); }

  bool Contains(uint64_t offset) const;
  bool empty() const { return by_start_.empty(); }
  size_t size() const { return by_start_.size(); }  // number of intervals
  uint64_t bytes() const { return bytes_; }          // total length
  std::vector<Interval> ToVector() const {
    return std::vector<Interval>(by_start_.begin(), by_start_.end());
  }

 private:
  absl::btree_map<uint64_t, uint64_t> by_start_;  // start -> end, disjoint
  uint64_t bytes_ = 0;
};

}  // namespace memfuse::fsd

#endif  // MEMFUSE_FSD_INTERVAL_SET_H_
