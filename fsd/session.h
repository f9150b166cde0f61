// Mounting fsd and running the FUSE session until unmount or a signal.
#ifndef MEMFUSE_FSD_SESSION_H_
#define MEMFUSE_FSD_SESSION_H_

#include <atomic>
#include <functional>

#include "absl/status/status.h"
#include "fsd/options.h"
#include "fsd/ops/ops.h"

namespace memfuse::fsd {

// Mounts `options.mountpoint` serving `ctx`, runs the multi-threaded loop in
// the calling thread until SIGINT, SIGTERM, SIGHUP or an unmount, then
// unmounts. Call once per process (it installs signal handlers).
//
// A signal unmounts the way umount(8) does, so the kernel first writes back
// every dirty page it holds for the mount (data write(2) already accepted);
// only if the mount is busy does fsd flush the kernel's pages with syncfs
// and detach it lazily. A second signal ends the session whatever it is
// waiting for (a flush stuck on a mirror that takes nothing). `hooks` are
// called from the session's threads as it goes.
struct SessionHooks {
  // The mount is up and served (a service manager is told READY).
  std::function<void()> on_mounted;
  // The first signal: the unmount begins.
  std::function<void()> on_stopping;
  // A second signal: release every wait for the mirror.
  std::function<void()> on_forced;
};
absl::Status RunSession(const Options& options, ops::Context* ctx,
                        SessionHooks hooks = {});

// True once a signal arrived that asks to exit now: a second one during the
// session, or any after the mount is gone (while draining to the mirror).
const std::atomic<bool>& ForcedExit();

}  // namespace memfuse::fsd

#endif  // MEMFUSE_FSD_SESSION_H_
