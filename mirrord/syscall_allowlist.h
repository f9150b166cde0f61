// The system calls the mirror agent may make once it has confined itself
// (confine.h), and the seccomp filter that enforces them.
//
// The lists are measured, not guessed: scripts/agent-syscalls runs the
// tests that drive the agent with every agent under `strace -f` and prints
// the calls each kind of agent made after confining itself. A handful more
// are allowed for paths the tests do not reach (each named with its reason
// in syscall_allowlist.cc). Anything else kills the process
// (SECCOMP_RET_KILL_PROCESS), and the kernel logs the call (dmesg:
// "type=1326 ... syscall=N"), which the e2e tests report.
#ifndef MEMFUSE_MIRRORD_SYSCALL_ALLOWLIST_H_
#define MEMFUSE_MIRRORD_SYSCALL_ALLOWLIST_H_

#include <string_view>
#include <vector>

#include "absl/status/status.h"

namespace memfuse::mirrord {

enum class MirrorKind { kLocal, kHttp };

// kLog: calls outside the list are allowed and logged by the kernel
// instead of killing the agent; for measuring a new workload
// (MEMFUSE_SECCOMP=log in the agent's environment).
enum class SeccompMode { kEnforce, kLog };

// MEMFUSE_SECCOMP=log gives kLog; anything else kEnforce.
SeccompMode SeccompModeFromEnvironment();

// The names of the calls an agent of `kind` may make, sorted.
std::vector<std::string_view> AllowedSyscalls(MirrorKind kind);

// Installs the filter on every thread of the process (TSYNC). Needs
// no_new_privs (or CAP_SYS_ADMIN).
absl::Status InstallSyscallFilter(MirrorKind kind, SeccompMode mode);

}  // namespace memfuse::mirrord

#endif  // MEMFUSE_MIRRORD_SYSCALL_ALLOWLIST_H_
