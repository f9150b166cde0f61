// fsd's figures for operators, gathered in one place: the cache, the
// tree's own memory, and with a mirror the dirty blocks and the queue of
// changes not yet mirrored. The root's user.memfuse.status xattr and the
// service manager's STATUS= line are both made from one Report, so they
// never disagree.
//
// Thread-safe: Gather() reads each part through its own thread-safe
// accessors (the figures of different parts are not one atomic snapshot).
#ifndef MEMFUSE_FSD_STATUS_REPORT_H_
#define MEMFUSE_FSD_STATUS_REPORT_H_

#include <cstdint>
#include <optional>
#include <string>

#include "fsd/block_budget.h"
#include "fsd/mutation_log.h"
#include "fsd/tree.h"

namespace memfuse::fsd {

struct StatusReport {
  struct Cache {
    uint64_t bytes = 0;
    uint64_t peak = 0;
    uint64_t limit = 0;
  };
  std::optional<Cache> cache;  // when the budget is known
  Tree::CacheStats fetched;
  Tree::MetadataStats metadata;
  // With a mirror: the queue and the dirty blocks, and the write limit.
  std::optional<MutationLog::Backlog> mirror;
  uint64_t dirty_limit = 0;

  // Null `budget` or `log`: those figures are left out. Without
  // `walk_tree`, the tree's memory is left at zero: finding it walks the
  // whole tree (for a person asking, not for a report every second).
  static StatusReport Gather(Tree* tree, const BlockBudget* budget,
                             MutationLog* log, bool walk_tree = true);

  // One "name value" per line (the status xattr; names are stable).
  std::string Text() const;
};

}  // namespace memfuse::fsd

#endif  // MEMFUSE_FSD_STATUS_REPORT_H_
