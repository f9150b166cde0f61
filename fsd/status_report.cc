// fsd's figures for operators (status_report.h).
#include "fsd/status_report.h"

#include "absl/strings/str_cat.h"

namespace memfuse::fsd {

StatusReport StatusReport::Gather(Tree* tree, const BlockBudget* budget,
                                  MutationLog* log, bool walk_tree) {
  StatusReport report;
  if (budget != nullptr) {
    report.cache = Cache{budget->used(), budget->peak(), budget->limit()};
  }
  report.fetched = tree->GetCacheStats();
  if (walk_tree) report.metadata = tree->GetMetadataStats();
  if (log != nullptr) {
    report.mirror = log->GetBacklog();
    report.dirty_limit = log->dirty().limit();
  }
  return report;
}

std::string StatusReport::Text() const {
  std::string out;
  if (cache.has_value()) {
    absl::StrAppend(&out, "cache_bytes ", cache->bytes, "\n",
                    "cache_peak ", cache->peak, "\n",
                    "cache_limit ", cache->limit, "\n");
  }
  const Tree::CacheStats& c = fetched;
  absl::StrAppend(&out, "dirs_listed ", c.dirs_listed, "\n",
                  "blocks_fetched ", c.blocks_fetched, "\n",
                  "bytes_fetched ", c.bytes_fetched, "\n",
                  "readahead_blocks ", c.readahead_blocks, "\n",
                  "blocks_evicted ", c.blocks_evicted, "\n");
  absl::StrAppend(&out, "inodes ", metadata.inodes, "\n", "dir_entries ",
                  metadata.entries, "\n", "metadata_bytes ", metadata.bytes,
                  "\n");
  if (mirror.has_value()) {
    const MutationLog::Backlog& b = *mirror;
    absl::StrAppend(&out, "dirty_bytes ", b.dirty_bytes, "\n",
                    "dirty_peak ", b.dirty_peak, "\n",
                    "dirty_limit ", dirty_limit, "\n",
                    "dirty_waits ", b.dirty_waits, "\n",
                    "cache_waits ", c.cache_waits, "\n",
                    "unacked_changes ", b.mutations, "\n",
                    "unacked_data_bytes ", b.data_bytes, "\n",
                    "mirrored_data_bytes ", b.acked_bytes, "\n",
                    "mirror_repairs ", b.repairs, "\n",
                    "mirror_refused_objects ", b.refused_objects, "\n",
                    "mirror_lost_bytes ", b.lost_bytes, "\n");
  }
  return out;
}

}  // namespace memfuse::fsd
