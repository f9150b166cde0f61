// The faults the test build of mem-fuse-mirrord (tests/faulty/) injects, and
// how a test asks for them: environment variables the e2e test sets before
// it mounts, which fsd passes on to the agent it spawns. Only the faulty
// agent reads them; the product reads no test knob.
//
// Thread-safety: constants and a plain struct.
#ifndef MEMFUSE_TESTS_FAULTY_AGENT_FAULTS_H_
#define MEMFUSE_TESTS_FAULTY_AGENT_FAULTS_H_

#include "absl/time/time.h"

namespace memfuse::testing {

// Milliseconds every write of file data to a local mirror waits first.
inline constexpr char kWriteDelayVar[] = "MEMFUSE_FAULTY_WRITE_DELAY_MS";
// Milliseconds an HTTP mirror's request may take at most.
inline constexpr char kHttpTimeoutVar[] = "MEMFUSE_FAULTY_HTTP_TIMEOUT_MS";

struct AgentFaults {
  // A slow local mirror: each write of file data waits this long (zero:
  // none).
  absl::Duration write_delay;
  // A short HTTP per-request timeout (zero: the product's).
  absl::Duration http_timeout;
};

}  // namespace memfuse::testing

#endif  // MEMFUSE_TESTS_FAULTY_AGENT_FAULTS_H_
