#include "fsd/interval_set.h"

#include <algorithm>

namespace memfuse::fsd {

void IntervalSet::Add(uint64_t start, uint64_t end) {
  if (start >= end) return;
  // The first interval that could touch [start, end): the one starting at or
  // before `start`, if it reaches it.
  auto it = by_start_.upper_bound(start);
  if (it != by_start_.begin() && std::prev(it)->second >= start) --it;
  while (it != by_start_.end() && it->first <= end) {
    start = std::min(start, it->first);
    end = std::max(end, it->second);
    bytes_ -= it->second - it->first;
    it = by_start_.erase(it);
  }
  by_start_.emplace(start, end);
  bytes_ += end - start;
}

void IntervalSet::Remove(uint64_t start, uint64_t end) {
  if (start >= end) return;
  auto it = by_start_.upper_bound(start);
  if (it != by_start_.begin() && std::prev(it)->second > start) --it;
  // The parts of straddling intervals that survive are inserted after the
  // loop: inserting into a btree invalidates its iterators.
  Interval kept[2];
  int nkept = 0;
  while (it != by_start_.end() && it->first < end) {
    const auto [first, last] = *it;
    bytes_ -= last - first;
    if (first < start) kept[nkept++] = {first, start};
    if (last > end) kept[nkept++] = {end, last};
    it = by_start_.erase(it);
  }
  for (int i = 0; i < nkept; ++i) {
    by_start_.emplace(kept[i]);
    bytes_ += kept[i].second - kept[i].first;
  }
}

bool IntervalSet::Contains(uint64_t offset) const {
  auto it = by_start_.upper_bound(offset);
  if (it == by_start_.begin()) return false;
  return std::prev(it)->second > offset;
}

}  // namespace memfuse::fsd
