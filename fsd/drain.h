// The drain at exit: waiting until the mirror has every change the mount
// acknowledged, with a progress line every second once it takes longer
// than one (how much is left, the rate, and what the mirror is stuck on
// when nothing moves), and what was not mirrored when the wait is cut
// short. Reads the MutationLog's backlog; knows nothing of the agent.
//
// Thread-safe as the MutationLog is; one drain at a time.
#ifndef MEMFUSE_FSD_DRAIN_H_
#define MEMFUSE_FSD_DRAIN_H_

#include <atomic>
#include <cstdio>
#include <functional>
#include <string>
#include <string_view>

#include "fsd/mutation_log.h"

namespace memfuse::fsd {

struct DrainOptions {
  // Set (by a second signal) to stop waiting: false is returned.
  const std::atomic<bool>* abort = nullptr;
  // What the oldest waiting change is stuck on; empty if unknown.
  std::function<std::string()> stuck_on;
  // Each progress line also goes here (a service manager's status).
  std::function<void(std::string_view)> report;
  // Where the lines are written for a person.
  std::FILE* out = stderr;
};

// Returns true once `log` is empty; false, having said what was not
// mirrored, if `options.abort` became true first.
bool DrainLog(MutationLog* log, const DrainOptions& options);

}  // namespace memfuse::fsd

#endif  // MEMFUSE_FSD_DRAIN_H_
