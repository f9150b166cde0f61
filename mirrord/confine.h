// Confining the mirror agent to what its mirror needs, however it was
// started (by fsd, by hand, by systemd), once it has opened the mirror and
// its socket and before it starts a thread or reads a byte from fsd:
//
//   1. its own mount namespace (when root): everything read-only, a private
//      /tmp. What it opened before (the mirror root, the socket's
//      directory) stays writable through those descriptors;
//   2. the bounding set cut to the capabilities the mirror needs;
//   3. the user changed (--user, or `nobody` for an HTTP mirror);
//   4. every other capability dropped, the ambient set emptied,
//      no_new_privs set;
//   5. Landlock: file access beneath the mirror root only (local), none at
//      all (HTTP, but for the TLS trust store); TCP connections to the
//      mirror's port only; no signals to processes outside;
//   6. seccomp: the measured allow-list of system calls
//      (syscall_allowlist.h); anything else kills the process.
//
// Each step that the kernel or the launch cannot give (an old kernel, a
// container without CAP_SYS_ADMIN) is skipped and said once; the steps
// that always work (capabilities, no_new_privs, seccomp) are never
// skipped. Not thread-safe: the whole process must have one thread.
#ifndef MEMFUSE_MIRRORD_CONFINE_H_
#define MEMFUSE_MIRRORD_CONFINE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "mirrord/launch.h"
#include "mirrord/syscall_allowlist.h"

namespace memfuse::mirrord {

// The capabilities a local mirror keeps when the agent runs as root:
// CAP_CHOWN (owners), CAP_FOWNER (modes, times, xattrs and links of files
// it does not own), CAP_DAC_OVERRIDE (directories and files whose modes
// shut their owner out), CAP_FSETID (set-id bits survive its writes and
// chowns), CAP_MKNOD (device nodes). An HTTP mirror needs none.
std::vector<int> MirrorCapabilities(bool local_mirror);

struct ConfinePlan {
  MirrorKind kind = MirrorKind::kLocal;
  // A descriptor of the local mirror's root: the only tree the agent may
  // open files in from now on.
  int mirror_root_fd = -1;
  // --listen: the socket file's directory, where the agent may remove
  // files (its socket, at exit) and nothing else.
  int socket_dir_fd = -1;
  // Trees an HTTP agent may still read (the TLS trust store).
  std::vector<std::string> read_only_paths;
  // The HTTP mirror's TCP port: the only one the agent may connect to.
  std::optional<uint16_t> tcp_port;
  std::vector<int> keep_capabilities;
  std::optional<User> user;  // becomes this user after step 2
  bool own_mount_namespace = true;
  SeccompMode seccomp = SeccompMode::kEnforce;
};

// What Confine() could not do, one line each, for the log.
struct ConfineReport {
  bool mount_namespace = false;
  int landlock_abi = 0;  // 0: no Landlock
  std::vector<std::string> skipped;
};

// Steps 1 to 6 above. An error means the agent must not go on.
absl::StatusOr<ConfineReport> Confine(const ConfinePlan& plan);

// Step 2 and 4 on their own: drops every capability but `keep` from the
// effective, permitted, inheritable and bounding sets, empties the ambient
// set, and sets no_new_privs. A process without CAP_SETPCAP (not root)
// keeps its bounding set, which no_new_privs makes moot.
absl::Status DropCapabilities(const std::vector<int>& keep);

}  // namespace memfuse::mirrord

#endif  // MEMFUSE_MIRRORD_CONFINE_H_
