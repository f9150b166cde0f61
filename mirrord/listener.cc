#include "mirrord/listener.h"

#include <fcntl.h>
#include <grpcpp/server_posix.h>
#include <poll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/peer_credentials.h"
#include "common/status.h"
#include "glog/logging.h"

namespace memfuse::mirrord {
namespace {

using common::ErrnoStatus;
using common::UniqueFd;

constexpr int kActivationFd = 3;  // SD_LISTEN_FDS_START
constexpr int kBacklog = 128;

absl::StatusOr<sockaddr_un> UnixAddress(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(
        absl::StrCat("socket path ", path, ": empty or longer than ",
                     sizeof(addr.sun_path) - 1, " bytes"));
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  return addr;
}

absl::Status SetNonBlocking(int fd) {
  const int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
    return ErrnoStatus(errno, "fcntl O_NONBLOCK");
  }
  return absl::OkStatus();
}

// Accepts every pending connection on `listen_fd`.
absl::Status AcceptPending(const ServeOptions& options) {
  for (;;) {
    const int fd = accept4(options.listen_fd, nullptr, nullptr,
                           SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) {
      switch (errno) {
        case EAGAIN:
          return absl::OkStatus();
        case EINTR:
        case ECONNABORTED:
        case EPROTO:
          continue;
        case EMFILE:
        case ENFILE:
        case ENOBUFS:
        case ENOMEM: {
          // Leave it queued; try again shortly rather than spin.
          LOG(WARNING) << "accept: " << std::strerror(errno);
          usleep(100 * 1000);
          return absl::OkStatus();
        }
        default:
          return ErrnoStatus(errno, "accept");
      }
    }
    absl::Status allowed = CheckPeer(fd, *options.allowed_uids);
    if (!allowed.ok()) {
      LOG(WARNING) << "refused a connection: " << allowed.message();
      close(fd);
      continue;
    }
    VLOG(1) << "accepted a connection";
    grpc::AddInsecureChannelFromFd(options.server, fd);  // gRPC owns fd now
  }
}

}  // namespace

absl::StatusOr<UniqueFd> ListenOnPath(const std::string& path, uid_t owner,
                                      gid_t group) {
  ASSIGN_OR_RETURN(sockaddr_un addr, UnixAddress(path));
  struct stat st;
  if (lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return absl::FailedPreconditionError(
          absl::StrCat(path, " exists and is not a socket"));
    }
    // A socket file: stale (left by a dead agent) unless someone answers.
    UniqueFd probe(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (probe.valid() &&
        connect(probe.get(), reinterpret_cast<const sockaddr*>(&addr),
                sizeof(addr)) == 0) {
      return absl::AlreadyExistsError(
          absl::StrCat("another process listens on ", path));
    }
    if (unlink(path.c_str()) != 0 && errno != ENOENT) {
      return ErrnoStatus(errno, absl::StrCat("remove stale socket ", path));
    }
  }
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.valid()) return ErrnoStatus(errno, "socket");
  // Created 0600 from the start: no window where others may connect.
  const mode_t old_umask = umask(0177);
  const int bound =
      bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
  const int bind_errno = errno;
  umask(old_umask);
  if (bound != 0) return ErrnoStatus(bind_errno, absl::StrCat("bind ", path));
  if ((owner != static_cast<uid_t>(-1) || group != static_cast<gid_t>(-1)) &&
      fchownat(AT_FDCWD, path.c_str(), owner, group, AT_SYMLINK_NOFOLLOW) !=
          0) {
    return ErrnoStatus(errno, absl::StrCat("chown ", path));
  }
  if (listen(fd.get(), kBacklog) != 0) {
    return ErrnoStatus(errno, absl::StrCat("listen ", path));
  }
  return fd;
}

bool ActivationOffered() {
  const char* pid = getenv("LISTEN_PID");
  const char* fds = getenv("LISTEN_FDS");
  int64_t value = 0;
  return pid != nullptr && fds != nullptr && absl::SimpleAtoi(pid, &value) &&
         value == getpid();
}

absl::StatusOr<UniqueFd> TakeActivationSocket() {
  const char* fds = getenv("LISTEN_FDS");
  int count = 0;
  const bool parsed = fds != nullptr && absl::SimpleAtoi(fds, &count);
  // Not for any child of ours: the protocol says unset them once read.
  unsetenv("LISTEN_PID");
  unsetenv("LISTEN_FDS");
  unsetenv("LISTEN_FDNAMES");
  if (!parsed || count != 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        "socket activation passed LISTEN_FDS=", fds ? fds : "(unset)",
        "; expected exactly one listening socket"));
  }
  UniqueFd fd(kActivationFd);
  int value = 0;
  socklen_t len = sizeof(value);
  if (getsockopt(fd.get(), SOL_SOCKET, SO_DOMAIN, &value, &len) != 0) {
    return ErrnoStatus(errno, "activation fd 3 is not a socket");
  }
  if (value != AF_UNIX) {
    return absl::FailedPreconditionError(
        "activation socket is not a Unix socket (peer uids cannot be "
        "checked)");
  }
  len = sizeof(value);
  if (getsockopt(fd.get(), SOL_SOCKET, SO_ACCEPTCONN, &value, &len) != 0 ||
      value != 1) {
    return absl::FailedPreconditionError(
        "activation socket is not listening (use Accept=no)");
  }
  if (fcntl(fd.get(), F_SETFD, FD_CLOEXEC) != 0) {
    return ErrnoStatus(errno, "fcntl FD_CLOEXEC");
  }
  RETURN_IF_ERROR(SetNonBlocking(fd.get()));
  return fd;
}

absl::Status CheckPeer(int fd, const absl::flat_hash_set<uid_t>& allowed) {
  ASSIGN_OR_RETURN(ucred cred, common::PeerCredentials(fd));
  if (!allowed.contains(cred.uid)) {
    return absl::PermissionDeniedError(
        absl::StrCat("peer uid ", cred.uid, " (pid ", cred.pid,
                     ") is not allowed (see --allow-uid)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<StopReason> Serve(const ServeOptions& options) {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  UniqueFd signal_fd(signalfd(-1, &signals, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!signal_fd.valid()) return ErrnoStatus(errno, "signalfd");

  // With one connection: a duplicate to watch for the peer's hangup, and
  // the socket's inode to notice gRPC closing its own descriptor.
  UniqueFd watch;
  ino_t connection_ino = 0;
  if (options.connected_fd >= 0) {
    struct stat st;
    if (fstat(options.connected_fd, &st) != 0)
      return ErrnoStatus(errno, "fstat");
    connection_ino = st.st_ino;
    watch.Reset(fcntl(options.connected_fd, F_DUPFD_CLOEXEC, 0));
    if (!watch.valid()) return ErrnoStatus(errno, "dup");
    RETURN_IF_ERROR(SetNonBlocking(options.connected_fd));
    grpc::AddInsecureChannelFromFd(options.server, options.connected_fd);
  }

  for (;;) {
    pollfd fds[2] = {{signal_fd.get(), POLLIN, 0}, {-1, 0, 0}};
    if (options.listen_fd >= 0) fds[1] = {options.listen_fd, POLLIN, 0};
    if (watch.valid()) fds[1] = {watch.get(), POLLRDHUP, 0};
    const int r = poll(fds, 2, watch.valid() ? 1000 : -1);
    if (r < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "poll");
    }
    if (fds[0].revents & POLLIN) {
      signalfd_siginfo info{};
      if (read(signal_fd.get(), &info, sizeof(info)) == sizeof(info)) {
        LOG(INFO) << "signal " << info.ssi_signo << " ("
                  << strsignal(info.ssi_signo)
                  << "): finishing the mutation in progress, then exiting";
        return StopReason::kSignal;
      }
    }
    if (options.listen_fd >= 0) {
      if (fds[1].revents & (POLLERR | POLLNVAL)) {
        return absl::InternalError("the listening socket failed");
      }
      if (fds[1].revents & POLLIN) RETURN_IF_ERROR(AcceptPending(options));
    }
    if (watch.valid()) {
      if (fds[1].revents & (POLLRDHUP | POLLHUP | POLLERR)) {
        LOG(INFO) << "the peer closed the connection: exiting";
        return StopReason::kPeerGone;
      }
      struct stat st;
      if (fstat(options.connected_fd, &st) != 0 ||
          st.st_ino != connection_ino) {
        LOG(INFO) << "the connection is closed: exiting";
        return StopReason::kPeerGone;
      }
    }
  }
}

}  // namespace memfuse::mirrord
