// Keeping only some of root's capabilities, for the whole rest of the
// process's life and for what it starts: fsd at start (what it needs to
// mount, unmount and start its agent), and the agent once it has opened
// its mirror (mirrord/confine.h).
#ifndef MEMFUSE_COMMON_CAPABILITIES_H_
#define MEMFUSE_COMMON_CAPABILITIES_H_

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace memfuse::common {

// Drops every capability but `keep` from the bounding set (when the
// process may: CAP_SETPCAP), from the effective, permitted and inheritable
// sets (keeping only those of `keep` it holds), and empties the ambient
// set. Capabilities are per thread: call before any thread starts.
absl::Status KeepOnlyCapabilities(const std::vector<int>& keep);

// Whether the calling thread has `cap` in its effective set.
bool HasCapability(int cap);

// "chown, dac_override, ..." for a log line; "none" for an empty list.
std::string CapabilityNames(const std::vector<int>& caps);

}  // namespace memfuse::common

#endif  // MEMFUSE_COMMON_CAPABILITIES_H_
