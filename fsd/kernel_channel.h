// Hooks on fsd's /dev/fuse channel for protocol features Debian's libfuse
// 3.14 does not negotiate.
//
// FUSE_HANDLE_KILLPRIV_V2: without it the kernel asks fsd for the
// security.capability xattr on every write(2), one round trip per write
// even when the data only goes to the page cache, which caps small writes
// at the round-trip rate. With it, the kernel remembers that a file has
// nothing to kill and instead flags the requests after which fsd must clear
// setuid/setgid (WRITE, SETATTR and OPEN kill flags, which libfuse 3.14
// drops before calling the handlers, so they are applied here).
//
// Thread-safe: the hooks run on every FUSE worker thread.
#ifndef MEMFUSE_FSD_KERNEL_CHANNEL_H_
#define MEMFUSE_FSD_KERNEL_CHANNEL_H_

#include <fuse_lowlevel.h>

#include "absl/status/status.h"
#include "fsd/tree.h"

namespace memfuse::fsd {

// Installs the hooks on the mounted session `se`, whose kill requests are
// applied to `tree`. Call after fuse_session_mount() and before the loop.
// REQUIRES: the operation table's init() does not want
// FUSE_CAP_HANDLE_KILLPRIV (v1), which this replaces.
absl::Status InstallKernelChannelHooks(fuse_session* se, Tree* tree);

}  // namespace memfuse::fsd

#endif  // MEMFUSE_FSD_KERNEL_CHANNEL_H_
