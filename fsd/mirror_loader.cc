// Loading the whole mirror at mount (mirror_loader.h).
#include "fsd/mirror_loader.h"

#include <cstdint>
#include <deque>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "fsd/units.h"
#include "glog/logging.h"

namespace memfuse::fsd {

absl::Status ListWholeMirror(Tree* tree) {
  const absl::Time start = absl::Now();
  std::deque<uint64_t> dirs = {FUSE_ROOT_ID};
  uint64_t listed = 0;
  while (!dirs.empty()) {
    const uint64_t dir = dirs.front();
    dirs.pop_front();
    absl::Status status = tree->EnsureListed(dir);
    if (!status.ok()) {
      return absl::AbortedError(
          absl::StrCat("cannot list the mirror: ", status.message()));
    }
    ++listed;
    for (uint64_t sub : tree->SubdirectoriesOf(dir)) dirs.push_back(sub);
  }
  LOG(INFO) << "listed " << listed << " directories of the mirror in "
            << absl::Now() - start;
  return absl::OkStatus();
}

void PrefetchMirror(Tree* tree, const std::atomic<bool>& stop) {
  const absl::Time start = absl::Now();
  const uint64_t done =
      tree->PrefetchAll(stop, [&](uint64_t done, uint64_t total) {
        if (total == 0) return;
        LOG(INFO) << "prefetch: " << MiB(done) << " of " << MiB(total)
                  << " of file data in memory ("
                  << absl::StrFormat("%.0f%%", 100.0 * done / total) << ")";
      });
  LOG(INFO) << "prefetch done: " << MiB(done) << " in "
            << absl::Now() - start;
}

}  // namespace memfuse::fsd
