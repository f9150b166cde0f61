#include "mirrord/confine.h"

#include <fcntl.h>
#include <linux/landlock.h>
#include <sched.h>
#include <sys/capability.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/capabilities.h"
#include "common/status.h"
#include "common/unique_fd.h"

namespace memfuse::mirrord {
namespace {

using common::ErrnoStatus;
using common::UniqueFd;

// --- step 1: a mount namespace of its own ---

// `path` and the directories above it, as in `mkdir -p`, under `root`;
// the last one a directory or, for a file to bind onto, an empty file.
absl::Status MakeMountPoint(const std::string& root, const std::string& path,
                            bool directory) {
  std::string at = root;
  size_t begin = 1;
  while (begin <= path.size()) {
    size_t end = path.find('/', begin);
    if (end == std::string::npos) end = path.size();
    at += "/" + path.substr(begin, end - begin);
    const bool last = end == path.size();
    if (last && !directory) {
      UniqueFd file(open(at.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644));
      if (!file.valid()) return ErrnoStatus(errno, at);
    } else if (mkdir(at.c_str(), 0755) != 0 && errno != EEXIST) {
      return ErrnoStatus(errno, at);
    }
    begin = end + 1;
  }
  return absl::OkStatus();
}

// A new mount namespace whose root is an empty read-only tmpfs holding
// only `visible` (bound read-only from the old root) and an empty /tmp.
// The old root is detached, so no mount of the host (another FUSE mount,
// a USB stick) is held busy by the agent; the mirror stays reachable
// through the descriptors opened before.
absl::Status BuildOwnRoot(std::vector<std::string> visible) {
  // Nothing done here reaches the parent namespace.
  if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
    return ErrnoStatus(errno, "making / private");
  }
  // The new root is built on /tmp: a directory every system has, shadowed
  // in this namespace only.
  const std::string root = "/tmp";
  constexpr unsigned long kSafe = MS_NOSUID | MS_NODEV | MS_NOEXEC;
  if (mount("mem-fuse-mirrord", root.c_str(), "tmpfs", kSafe,
            "size=64k,mode=0755") != 0) {
    return ErrnoStatus(errno, "a tmpfs for the new root");
  }
  // A path beneath one already shown comes with it.
  std::sort(visible.begin(), visible.end());
  std::string shown;
  for (const std::string& path : visible) {
    struct stat st;
    if (path.empty() || path.front() != '/' || stat(path.c_str(), &st) != 0) {
      continue;  // nothing there to show
    }
    if (!shown.empty() && absl::StartsWith(path, shown + "/")) continue;
    shown = path;
    const std::string target = root + path;
    RETURN_IF_ERROR(MakeMountPoint(root, path, S_ISDIR(st.st_mode)));
    if (mount(path.c_str(), target.c_str(), nullptr, MS_BIND, nullptr) != 0) {
      return ErrnoStatus(errno, absl::StrCat("binding ", path));
    }
    if (mount(nullptr, target.c_str(), nullptr,
              MS_REMOUNT | MS_BIND | MS_RDONLY | kSafe, nullptr) != 0) {
      return ErrnoStatus(errno, absl::StrCat("read-only ", path));
    }
  }
  RETURN_IF_ERROR(MakeMountPoint(root, "/tmp", /*directory=*/true));
  if (mount("tmpfs", (root + "/tmp").c_str(), "tmpfs", kSafe,
            "size=1m,mode=1777") != 0) {
    return ErrnoStatus(errno, "a private /tmp");
  }
  if (chdir(root.c_str()) != 0) return ErrnoStatus(errno, "chdir");
  // The old root ends up stacked on the new one, and is then detached.
  if (syscall(SYS_pivot_root, ".", ".") != 0) {
    return ErrnoStatus(errno, "pivot_root");
  }
  if (umount2(".", MNT_DETACH) != 0) {
    return ErrnoStatus(errno, "detaching the old root");
  }
  if (chdir("/") != 0) return ErrnoStatus(errno, "chdir /");
  if (mount(nullptr, "/", nullptr, MS_REMOUNT | MS_RDONLY | kSafe,
            "size=64k,mode=0755") != 0) {
    return ErrnoStatus(errno, "a read-only root");
  }
  return absl::OkStatus();
}

// Enters the namespace BuildOwnRoot() makes, or, if that fails half-way,
// goes back to the one it came from: a copy of the host's mounts must not
// stay behind, holding them busy.
absl::Status EnterOwnMountNamespace(const std::vector<std::string>& visible) {
  UniqueFd previous(open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC));
  if (!previous.valid()) return ErrnoStatus(errno, "/proc/self/ns/mnt");
  UniqueFd cwd(open(".", O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (unshare(CLONE_NEWNS) != 0) return ErrnoStatus(errno, "unshare");
  absl::Status built = BuildOwnRoot(visible);
  if (!built.ok()) {
    if (setns(previous.get(), CLONE_NEWNS) != 0) {
      return ErrnoStatus(errno, absl::StrCat(built.message(),
                                             "; and returning: setns"));
    }
    if (cwd.valid()) fchdir(cwd.get());
  }
  return built;
}

// --- steps 2 and 4: capabilities ---

// The bounding set alone (step 2: before the user changes, while the
// process still has CAP_SETPCAP).
absl::Status DropBoundingSet(const std::vector<int>& keep) {
  if (!common::HasCapability(CAP_SETPCAP)) return absl::OkStatus();
  for (cap_value_t cap = 0; cap <= CAP_LAST_CAP; ++cap) {
    if (std::find(keep.begin(), keep.end(), cap) != keep.end()) continue;
    if (CAP_IS_SUPPORTED(cap) && cap_drop_bound(cap) != 0) {
      return ErrnoStatus(errno, "dropping from the bounding set");
    }
  }
  return absl::OkStatus();
}

// --- step 5: Landlock, through the raw system calls ---

#ifndef SYS_landlock_create_ruleset
#define SYS_landlock_create_ruleset 444
#define SYS_landlock_add_rule 445
#define SYS_landlock_restrict_self 446
#endif

// The kernel's structures as of ABI 6; a kernel that knows fewer fields
// takes a larger structure whose extra fields are zero.
struct RulesetAttr {
  uint64_t handled_access_fs = 0;
  uint64_t handled_access_net = 0;
  uint64_t scoped = 0;
};
struct __attribute__((packed)) PathBeneathAttr {
  uint64_t allowed_access = 0;
  int32_t parent_fd = -1;
};
struct NetPortAttr {
  uint64_t allowed_access = 0;
  uint64_t port = 0;
};

constexpr uint64_t kFsExecute = 1ULL << 0;
constexpr uint64_t kFsWriteFile = 1ULL << 1;
constexpr uint64_t kFsReadFile = 1ULL << 2;
constexpr uint64_t kFsReadDir = 1ULL << 3;
constexpr uint64_t kFsRemoveFile = 1ULL << 5;
constexpr uint64_t kFsTruncate = 1ULL << 14;
constexpr uint64_t kFsIoctlDev = 1ULL << 15;
constexpr uint64_t kFileRights =
    kFsExecute | kFsWriteFile | kFsReadFile | kFsTruncate | kFsIoctlDev;
constexpr uint64_t kNetBindTcp = 1ULL << 0;
constexpr uint64_t kNetConnectTcp = 1ULL << 1;
constexpr uint64_t kScopeAbstractUnixSocket = 1ULL << 0;
constexpr uint64_t kScopeSignal = 1ULL << 1;
constexpr int kRulePathBeneath = 1;
constexpr int kRuleNetPort = 2;

// Every filesystem right the kernel's ABI knows.
uint64_t FsRights(int abi) {
  uint64_t rights = (1ULL << 13) - 1;  // ABI 1: execute .. make_sym
  if (abi >= 2) rights |= 1ULL << 13;  // refer
  if (abi >= 3) rights |= kFsTruncate;
  if (abi >= 5) rights |= kFsIoctlDev;
  return rights;
}

absl::Status AddPathRule(int ruleset, int fd, uint64_t allowed,
                         uint64_t handled, const std::string& what) {
  struct stat st;
  if (fstat(fd, &st) != 0) return ErrnoStatus(errno, what);
  if (!S_ISDIR(st.st_mode)) allowed &= kFileRights;
  PathBeneathAttr rule;
  rule.allowed_access = allowed & handled;
  rule.parent_fd = fd;
  if (syscall(SYS_landlock_add_rule, ruleset, kRulePathBeneath, &rule, 0) !=
      0) {
    return ErrnoStatus(errno, absl::StrCat("Landlock rule for ", what));
  }
  return absl::OkStatus();
}

// The kernel's Landlock ABI, 0 without Landlock.
int LandlockAbi() {
  const long abi = syscall(SYS_landlock_create_ruleset, nullptr, 0,
                           LANDLOCK_CREATE_RULESET_VERSION);
  return abi < 0 ? 0 : static_cast<int>(abi);
}

absl::Status RestrictFilesystem(const ConfinePlan& plan, int abi) {
  RulesetAttr attr;
  attr.handled_access_fs = FsRights(abi);
  if (abi >= 4) attr.handled_access_net = kNetBindTcp | kNetConnectTcp;
  if (abi >= 6) attr.scoped = kScopeAbstractUnixSocket | kScopeSignal;
  UniqueFd ruleset(static_cast<int>(
      syscall(SYS_landlock_create_ruleset, &attr, sizeof(attr), 0)));
  if (!ruleset.valid()) {
    return ErrnoStatus(errno, "landlock_create_ruleset");
  }
  const uint64_t fs = attr.handled_access_fs;
  if (plan.mirror_root_fd >= 0) {
    RETURN_IF_ERROR(AddPathRule(ruleset.get(), plan.mirror_root_fd,
                                fs & ~kFsExecute, fs, "the mirror root"));
  }
  if (plan.socket_dir_fd >= 0) {
    RETURN_IF_ERROR(AddPathRule(ruleset.get(), plan.socket_dir_fd,
                                kFsRemoveFile, fs, "the socket's directory"));
  }
  for (const std::string& path : plan.read_only_paths) {
    UniqueFd fd(open(path.c_str(), O_PATH | O_CLOEXEC));
    if (!fd.valid()) continue;  // nothing there to read
    RETURN_IF_ERROR(AddPathRule(ruleset.get(), fd.get(),
                                kFsReadFile | kFsReadDir, fs, path));
  }
  if (attr.handled_access_net != 0 && plan.tcp_port.has_value()) {
    NetPortAttr rule;
    rule.allowed_access = kNetConnectTcp;
    rule.port = *plan.tcp_port;
    if (syscall(SYS_landlock_add_rule, ruleset.get(), kRuleNetPort, &rule,
                0) != 0) {
      return ErrnoStatus(errno, "Landlock rule for the mirror's port");
    }
  }
  if (syscall(SYS_landlock_restrict_self, ruleset.get(), 0) != 0) {
    return ErrnoStatus(errno, "landlock_restrict_self");
  }
  return absl::OkStatus();
}

}  // namespace

std::vector<int> MirrorCapabilities(bool local_mirror) {
  if (!local_mirror) return {};
  return {CAP_CHOWN, CAP_FOWNER, CAP_DAC_OVERRIDE, CAP_FSETID, CAP_MKNOD};
}

absl::Status DropCapabilities(const std::vector<int>& keep) {
  RETURN_IF_ERROR(common::KeepOnlyCapabilities(keep));
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    return ErrnoStatus(errno, "PR_SET_NO_NEW_PRIVS");
  }
  return absl::OkStatus();
}

absl::StatusOr<ConfineReport> Confine(const ConfinePlan& plan) {
  ConfineReport report;
  if (plan.own_mount_namespace && common::HasCapability(CAP_SYS_ADMIN)) {
    std::vector<std::string> visible = {"/proc"};
    visible.insert(visible.end(), plan.read_only_paths.begin(),
                   plan.read_only_paths.end());
    if (const char* notify = getenv("NOTIFY_SOCKET");
        notify != nullptr && notify[0] == '/') {
      visible.push_back(notify);  // the service manager's socket
    }
    if (absl::Status own = EnterOwnMountNamespace(visible); own.ok()) {
      report.mount_namespace = true;
    } else {
      report.skipped.push_back(
          absl::StrCat("no mount namespace of its own: ", own.message()));
    }
  }
  RETURN_IF_ERROR(DropBoundingSet(plan.keep_capabilities));
  if (plan.user.has_value()) {
    absl::Status dropped = DropPrivileges(*plan.user);
    if (!dropped.ok()) {
      return absl::Status(dropped.code(),
                          absl::StrCat("--user ", plan.user->name, ": ",
                                       dropped.message()));
    }
  }
  RETURN_IF_ERROR(DropCapabilities(plan.keep_capabilities));

  report.landlock_abi = LandlockAbi();
  if (report.landlock_abi == 0) {
    report.skipped.push_back(
        "no Landlock in this kernel (5.13 or later, with landlock in lsm=): "
        "files are confined to the mirror by openat2 alone");
  } else {
    RETURN_IF_ERROR(RestrictFilesystem(plan, report.landlock_abi));
  }
  RETURN_IF_ERROR(InstallSyscallFilter(plan.kind, plan.seccomp));
  return report;
}

}  // namespace memfuse::mirrord
