#include "fsd/agent_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/service_notify.h"
#include "common/status.h"
#include "glog/logging.h"

namespace memfuse::fsd {
namespace {

// The agent binary installed beside this one.
std::string AgentBinary() {
  char self[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n <= 0) return "mem-fuse-mirrord";
  std::string path(self, static_cast<size_t>(n));
  return path.substr(0, path.rfind('/') + 1) + "mem-fuse-mirrord";
}

std::string HowItEnded(int status) {
  return WIFEXITED(status) ? absl::StrCat("status ", WEXITSTATUS(status))
                           : absl::StrCat("signal ", WTERMSIG(status));
}

}  // namespace

absl::Status AgentProcess::Start(int fd) {
  End();
  const std::string binary = AgentBinary();
  std::vector<std::string> args = {"mem-fuse-mirrord", "--mirror",
                                   spec_.mirror_spec, "--fd", "3"};
  if (spec_.root_node.has_value()) {
    args.push_back("--root");
    args.push_back(absl::StrCat(*spec_.root_node));
  }
  const int region_fd = spec_.region_fd;
  if (region_fd >= 0) {
    args.push_back("--data-fd");
    args.push_back("4");
  }
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  // The agent must not speak to fsd's service manager for it.
  std::vector<std::string> env = common::service::ChildEnvironment();
  std::vector<char*> envp;
  for (std::string& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) return common::ErrnoStatus(errno, "fork");
  if (pid == 0) {
    // Only async-signal-safe calls until exec. Its own process group keeps
    // a terminal's Ctrl-C away from the agent while fsd drains into it; it
    // ends with fsd.
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(1);
    // The socket to 3, the region to 4, neither closed on exec. dup2 onto
    // itself keeps close-on-exec, so a descriptor already in place is
    // cleared by hand; one in the way of the other is moved first.
    int socket_fd = fd;
    int data_fd = region_fd;
    if (data_fd == 3) {
      data_fd = fcntl(3, F_DUPFD_CLOEXEC, 5);
      if (data_fd < 0) _exit(126);
    }
    if (socket_fd == 4 && data_fd >= 0) {
      socket_fd = fcntl(4, F_DUPFD_CLOEXEC, 5);
      if (socket_fd < 0) _exit(126);
    }
    if (socket_fd == 3) {
      fcntl(3, F_SETFD, 0);
    } else if (dup2(socket_fd, 3) < 0) {
      _exit(126);
    }
    if (data_fd == 4) {
      fcntl(4, F_SETFD, 0);
    } else if (data_fd >= 0 && dup2(data_fd, 4) < 0) {
      _exit(126);
    }
    execve(binary.c_str(), argv.data(), envp.data());
    _exit(127);
  }
  pid_ = pid;
  return absl::OkStatus();
}

std::optional<std::string> AgentProcess::Ended() {
  int status = 0;
  if (pid_ <= 0 || waitpid(pid_, &status, WNOHANG) != pid_) {
    return std::nullopt;
  }
  pid_ = -1;
  return HowItEnded(status);
}

void AgentProcess::Stop(absl::Duration grace) {
  const absl::Time give_up = absl::Now() + grace;
  while (pid_ > 0) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      Reaped(status, /*by_itself=*/true);
      return;
    }
    if (absl::Now() >= give_up) break;
    absl::SleepFor(absl::Milliseconds(40));
  }
  End();
}

void AgentProcess::End() {
  if (pid_ <= 0) return;
  int status = 0;
  // One that ended by itself says how; one still running is ended here.
  const bool by_itself = waitpid(pid_, &status, WNOHANG) == pid_;
  if (!by_itself) {
    kill(pid_, SIGKILL);
    while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
  }
  Reaped(status, by_itself);
}

void AgentProcess::Reaped(int status, bool by_itself) {
  // (A filter's kill wins over a SIGKILL sent while it was dying.)
  if (WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS) {
    LOG(ERROR) << "mem-fuse-mirrord (pid " << pid_
               << ") was killed by its seccomp filter: a system call "
                  "outside its allow-list (the kernel log names it: "
                  "dmesg | grep type=1326); please report it";
  } else if (by_itself && (WIFSIGNALED(status) || WEXITSTATUS(status) != 0)) {
    LOG(WARNING) << "mem-fuse-mirrord (pid " << pid_ << ") ended: "
                 << HowItEnded(status);
  }
  pid_ = -1;
}

}  // namespace memfuse::fsd
