// Confining the mirror agent to what its mirror needs, however it was
// started (by fsd, by hand, by systemd): the capabilities a local mirror's
// owners, modes and device nodes need, and nothing else; no_new_privs.
#ifndef MEMFUSE_MIRRORD_CONFINE_H_
#define MEMFUSE_MIRRORD_CONFINE_H_

#include <vector>

#include "absl/status/status.h"

namespace memfuse::mirrord {

// The capabilities a local mirror keeps when the agent runs as root:
// CAP_CHOWN (owners), CAP_FOWNER (modes, times, xattrs and links of files
// it does not own), CAP_DAC_OVERRIDE (directories and files whose modes
// shut their owner out), CAP_FSETID (set-id bits survive its writes and
// chowns), CAP_MKNOD (device nodes). An HTTP mirror needs none.
std::vector<int> MirrorCapabilities(bool local_mirror);

// Drops every capability but `keep` from the effective, permitted,
// inheritable and bounding sets, empties the ambient set, and sets
// no_new_privs. A process without CAP_SETPCAP (not root) keeps its
// bounding set, which no_new_privs makes moot. Call after everything that
// needed more (opening the socket, changing user).
absl::Status DropCapabilities(const std::vector<int>& keep);

}  // namespace memfuse::mirrord

#endif  // MEMFUSE_MIRRORD_CONFINE_H_
