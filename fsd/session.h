// Mounting fsd and running the FUSE session until unmount or a signal.
#ifndef MEMFUSE_FSD_SESSION_H_
#define MEMFUSE_FSD_SESSION_H_

#include "absl/status/status.h"
#include "fsd/options.h"
#include "fsd/ops/ops.h"

namespace memfuse::fsd {

// Mounts `options.mountpoint` serving `ctx`, runs the multi-threaded loop in
// the calling thread until SIGINT, SIGTERM, SIGHUP or an unmount, then
// unmounts. Call once per process (it installs signal handlers).
absl::Status RunSession(const Options& options, ops::Context* ctx);

}  // namespace memfuse::fsd

#endif  // MEMFUSE_FSD_SESSION_H_
