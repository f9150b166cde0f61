// Who is on the other end of a connected Unix socket (SO_PEERCRED), so a
// daemon can refuse peers of the wrong uid. Thread-safe.
#ifndef MEMFUSE_COMMON_PEER_CREDENTIALS_H_
#define MEMFUSE_COMMON_PEER_CREDENTIALS_H_

#include <sys/socket.h>

#include "absl/status/statusor.h"

namespace memfuse::common {

// The pid, uid and gid of the process that connected `socket_fd` (as of
// connect() or socketpair()).
absl::StatusOr<ucred> PeerCredentials(int socket_fd);

}  // namespace memfuse::common

#endif  // MEMFUSE_COMMON_PEER_CREDENTIALS_H_
