#include "mirrord/syscall_allowlist.h"

#include <seccomp.h>
#include <sys/prctl.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace memfuse::mirrord {
namespace {

// Measured with scripts/agent-syscalls (x86_64, Debian 12): made by both
// kinds of agent after confining themselves. gRPC's threads, pollers and
// wakeups, glibc's allocator and threads, glog.
constexpr std::string_view kMeasuredBoth[] = {
    "accept4",       "brk",           "clock_nanosleep", "clone3",
    "close",         "epoll_create1", "epoll_ctl",       "epoll_wait",
    "eventfd2",      "exit",          "exit_group",      "fcntl",
    "futex",         "getpriority",   "getsockname",     "getsockopt",
    "gettid",        "getuid",        "lseek",           "madvise",
    "mmap",          "mprotect",      "munmap",          "newfstatat",
    "openat",        "poll",          "read",            "recvmsg",
    "rseq",          "rt_sigaction",  "rt_sigprocmask",  "sched_getparam",
    "sched_getscheduler", "sched_yield", "sendmsg",      "set_robust_list",
    "setpriority",   "setsockopt",    "shutdown",        "signalfd4",
    "uname",         "write",
};

// Measured: a local mirror's file operations.
constexpr std::string_view kMeasuredLocal[] = {
    "chmod",        "faccessat2",   "fallocate",       "fchmod",
    "fchownat",     "fgetxattr",    "flistxattr",
    "fremovexattr", "fsetxattr",    "fstatfs",         "fsync",
    "ftruncate",    "getdents64",   "geteuid",         "lgetxattr",
    "linkat",       "llistxattr",   "mkdirat",         "mknodat",
    "openat2",      "pread64",      "pwrite64",        "readlinkat",
    "removexattr",  "renameat",     "renameat2",       "setxattr",
    "statx",        "symlinkat",    "sync_file_range", "syncfs",
    "unlinkat",     "utimensat",
};

// Measured: an HTTP mirror's connections (socket() is below, narrowed).
constexpr std::string_view kMeasuredHttp[] = {
    "connect", "getpeername", "recvfrom", "sendto", "socketpair",
};

// Not seen under the tests, allowed for paths they do not reach:
constexpr std::string_view kReasonedBoth[] = {
    // the kernel's: returning from a signal handler, restarting a call
    // interrupted by a stop
    "rt_sigreturn", "restart_syscall",
    // realloc of a large block; time where the clock has no vDSO
    "mremap", "clock_gettime", "clock_getres", "gettimeofday",
    // abort() after a failed CHECK ends in SIGABRT, not in SIGSYS
    "getpid", "tgkill",
    // sd_notify's credentials (a service manager's status line)
    "geteuid", "getgid", "getegid",
    // random bytes for hashing and TLS
    "getrandom",
    // removing its socket file at exit (--listen; Landlock keeps it to
    // that directory)
    "unlinkat",
    // what glibc uses instead on other architectures or versions
    "clone", "epoll_pwait", "ppoll", "fstat", "nanosleep",
};
constexpr std::string_view kReasonedLocal[] = {
    // chown of the mirror root itself
    "fchown",
    // the *at forms glibc uses where the plain ones do not exist
    "faccessat", "fchmodat", "fdatasync",
};

bool IsLogMode(const char* value) {
  return value != nullptr && std::strcmp(value, "log") == 0;
}

// One comparison of a call's argument `arg` (SCMP_A0 and the like leave
// datum_b unset, which clang warns about).
scmp_arg_cmp Arg(unsigned arg, scmp_compare op, uint64_t a, uint64_t b = 0) {
  return scmp_arg_cmp{arg, op, a, b};
}

struct FilterDeleter {
  void operator()(void* ctx) const { seccomp_release(ctx); }
};

}  // namespace

SeccompMode SeccompModeFromEnvironment() {
  return IsLogMode(getenv("MEMFUSE_SECCOMP")) ? SeccompMode::kLog
                                              : SeccompMode::kEnforce;
}

std::vector<std::string_view> AllowedSyscalls(MirrorKind kind) {
  std::vector<std::string_view> names;
  auto add = [&names](const auto& list) {
    names.insert(names.end(), std::begin(list), std::end(list));
  };
  add(kMeasuredBoth);
  add(kReasonedBoth);
  if (kind == MirrorKind::kLocal) {
    add(kMeasuredLocal);
    add(kReasonedLocal);
  } else {
    add(kMeasuredHttp);
  }
  // Allowed with their arguments narrowed (InstallSyscallFilter).
  names.push_back("prctl");
  names.push_back("socket");
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  return names;
}

absl::Status InstallSyscallFilter(MirrorKind kind, SeccompMode mode) {
  std::unique_ptr<void, FilterDeleter> filter(seccomp_init(
      mode == SeccompMode::kLog ? SCMP_ACT_LOG : SCMP_ACT_KILL_PROCESS));
  if (filter == nullptr) return absl::InternalError("seccomp_init failed");
  void* const ctx = filter.get();
  auto failed = [](int rc, std::string_view what) {
    return common::ErrnoStatus(-rc, absl::StrCat("seccomp: ", std::string(what)));
  };
  // Every thread, and a logged line for each call killed.
  if (int rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1); rc != 0) {
    return failed(rc, "TSYNC");
  }
  if (int rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_LOG, 1); rc != 0) {
    return failed(rc, "LOG");
  }
  for (std::string_view name : AllowedSyscalls(kind)) {
    if (name == "prctl" || name == "socket") continue;
    const int nr = seccomp_syscall_resolve_name(std::string(name).c_str());
    if (nr == __NR_SCMP_ERROR) continue;  // not on this architecture
    if (int rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0); rc != 0) {
      return failed(rc, name);
    }
  }
  // Naming threads, nothing else of prctl's.
  for (int option : {PR_SET_NAME, PR_GET_NAME}) {
    if (int rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(prctl), 1,
                                  Arg(0, SCMP_CMP_EQ, static_cast<uint64_t>(option)));
        rc != 0) {
      return failed(rc, "prctl");
    }
  }
  // A datagram socket for sd_notify; TCP for an HTTP mirror (Landlock
  // narrows it to the mirror's port). No Unix stream socket: nothing to
  // connect to the host's other daemons with.
  constexpr uint64_t kTypeMask = 0xf;  // SOCK_CLOEXEC and SOCK_NONBLOCK off
  if (int rc = seccomp_rule_add(
          ctx, SCMP_ACT_ALLOW, SCMP_SYS(socket), 2,
          Arg(0, SCMP_CMP_EQ, AF_UNIX),
          Arg(1, SCMP_CMP_MASKED_EQ, kTypeMask, SOCK_DGRAM));
      rc != 0) {
    return failed(rc, "socket");
  }
  if (kind == MirrorKind::kHttp) {
    for (int family : {AF_INET, AF_INET6}) {
      if (int rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(socket), 1,
                                    Arg(0, SCMP_CMP_EQ, static_cast<uint64_t>(family)));
          rc != 0) {
        return failed(rc, "socket");
      }
    }
  }
  if (int rc = seccomp_load(ctx); rc != 0) return failed(rc, "load");
  return absl::OkStatus();
}

}  // namespace memfuse::mirrord
