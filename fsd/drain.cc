#include "fsd/drain.h"

#include <cstdint>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "fsd/units.h"

namespace memfuse::fsd {

bool DrainLog(MutationLog* log, const DrainOptions& options) {
  std::FILE* const out = options.out;
  const absl::Time start = absl::Now();
  absl::Time next_report = start + absl::Seconds(1);
  const uint64_t acked_at_start = log->GetBacklog().acked_bytes;
  uint64_t acked_at_last = acked_at_start;
  uint64_t last_acked = log->GetBacklog().last_acked;
  absl::Time progress_at = start;
  absl::Time last = start;
  bool reported = false;
  if (!log->WaitEmpty(absl::ZeroDuration())) {
    const MutationLog::Backlog b = log->GetBacklog();
    fprintf(out,
            "mem-fuse: draining %s of file data and %llu changes to the "
            "mirror before exiting\n",
            MiB(b.data_bytes).c_str(),
            static_cast<unsigned long long>(b.mutations));
    reported = true;
  }
  while (!log->WaitEmpty(absl::Milliseconds(100))) {
    if (options.abort != nullptr && options.abort->load()) {
      const MutationLog::Backlog b = log->GetBacklog();
      fprintf(out,
              "mem-fuse: forced exit: %s of file data and %llu changes were "
              "NOT mirrored\n",
              MiB(b.data_bytes).c_str(),
              static_cast<unsigned long long>(b.mutations));
      return false;
    }
    const absl::Time now = absl::Now();
    if (now < next_report) continue;
    const MutationLog::Backlog b = log->GetBacklog();
    const double seconds = absl::ToDoubleSeconds(now - last);
    const double rate =
        seconds > 0 ? static_cast<double>(b.acked_bytes - acked_at_last) /
                          seconds / (1 << 20)
                    : 0;
    // No progress for a while: say what the mirror is stuck on.
    if (b.last_acked != last_acked || b.acked_bytes != acked_at_last) {
      last_acked = b.last_acked;
      progress_at = now;
    }
    std::string stuck;
    if (now - progress_at >= absl::Seconds(2)) {
      if (options.stuck_on) stuck = options.stuck_on();
      if (!stuck.empty()) stuck = absl::StrCat("; stuck on ", stuck);
    }
    const std::string line = absl::StrFormat(
        "draining to the mirror: %s and %u changes left, %.1f MiB/s%s",
        MiB(b.data_bytes), b.mutations, rate, stuck);
    fprintf(out,
            "mem-fuse: %s (a second Ctrl-C or SIGTERM exits without them)\n",
            line.c_str());
    if (options.report) options.report(line);
    acked_at_last = b.acked_bytes;
    last = now;
    next_report = now + absl::Seconds(1);
    reported = true;
  }
  if (!reported) {
    fprintf(out,
            "mem-fuse: the mirror has every change: nothing to drain\n");
  } else {
    const MutationLog::Backlog b = log->GetBacklog();
    fprintf(out, "mem-fuse: drained %s to the mirror in %.1f s\n",
            MiB(b.acked_bytes - acked_at_start).c_str(),
            absl::ToDoubleSeconds(absl::Now() - start));
  }
  return true;
}

}  // namespace memfuse::fsd
