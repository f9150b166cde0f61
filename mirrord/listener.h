// How connections reach mem-fuse-mirrord's gRPC server, in its three
// launch modes, all on one code path: a started grpc::Server with no
// listening port, and each connected socket handed to it with
// grpc::AddInsecureChannelFromFd().
//
//  - --listen PATH: a Unix socket made here (0600; a stale socket file is
//    replaced, a live one or a non-socket is an error);
//  - socket activation: the listening socket systemd passes as fd 3
//    (LISTEN_FDS=1, LISTEN_PID=our pid; the sd_listen_fds protocol, without
//    libsystemd);
//  - --fd N: one socket connected already (the socketpair end that the
//    one-command mem-fuse hands its spawned agent).
// Every connection is checked with SO_PEERCRED first: a peer whose uid is
// not allowed is logged (uid, pid) and closed.
//
// Serve() runs on the main thread until SIGTERM/SIGINT (which the caller
// must have blocked in every thread, before starting any) or, with --fd,
// until that one connection is gone: the peer hung up (POLLRDHUP on a
// duplicate of the socket) or gRPC closed its side (the descriptor number
// no longer names that socket). A single connection cannot come back, so
// the agent then has nothing left to serve.
//
// Thread-safety: the functions share no state; ListenOnPath() changes the
// process umask for a moment and TakeActivationSocket() the environment,
// so both belong to start-up, before other threads run.
#ifndef MEMFUSE_MIRRORD_LISTENER_H_
#define MEMFUSE_MIRRORD_LISTENER_H_

#include <grpcpp/grpcpp.h>
#include <sys/types.h>

#include <optional>
#include <string>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/unique_fd.h"

namespace memfuse::mirrord {

// Creates, binds (mode 0600, owned by `owner`:`group` when they are not -1)
// and listens on a Unix socket at `path`.
absl::StatusOr<common::UniqueFd> ListenOnPath(const std::string& path,
                                              uid_t owner, gid_t group);

// Whether the environment passes this process sockets (LISTEN_PID is our
// pid and LISTEN_FDS is set).
bool ActivationOffered();

// Takes the one listening socket systemd passed (fd 3) and unsets
// LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES. An error unless exactly one
// listening Unix stream socket was passed. REQUIRES: ActivationOffered().
absl::StatusOr<common::UniqueFd> TakeActivationSocket();

// OK if the peer of connected Unix socket `fd` runs as an allowed uid;
// PERMISSION_DENIED naming its uid and pid otherwise.
absl::Status CheckPeer(int fd, const absl::flat_hash_set<uid_t>& allowed);

// Why Serve() returned.
enum class StopReason { kSignal, kPeerGone };

struct ServeOptions {
  grpc::Server* server = nullptr;
  const absl::flat_hash_set<uid_t>* allowed_uids = nullptr;
  int listen_fd = -1;  // accept connections here (listen or activation)
  // Or serve this one connected socket (--fd): its ownership passes to
  // gRPC as Serve() starts.
  int connected_fd = -1;
};

// Serves connections until a SIGTERM/SIGINT arrives or, for a single
// connection, that connection is gone.
absl::StatusOr<StopReason> Serve(const ServeOptions& options);

}  // namespace memfuse::mirrord

#endif  // MEMFUSE_MIRRORD_LISTENER_H_
