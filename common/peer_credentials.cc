#include "common/peer_credentials.h"

#include <cerrno>

#include "common/status.h"

namespace memfuse::common {

absl::StatusOr<ucred> PeerCredentials(int socket_fd) {
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (getsockopt(socket_fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    return ErrnoStatus(errno, "SO_PEERCRED");
  }
  return cred;
}

}  // namespace memfuse::common
