// mem-fuse-mirrord's command line and privilege drop, apart from main()
// so that they can be unit-tested.
//
//   mem-fuse-mirrord --mirror SPEC (--listen PATH | --fd N | socket activation)
//                    [--user NAME] [--allow-uid UID]... [--verbose]
//
// Bad input is one line naming the flag, and exit code 2. Thread-safe
// (ParseOptions touches no shared state); DropPrivileges() changes the
// whole process and belongs before any thread starts.
#ifndef MEMFUSE_MIRRORD_LAUNCH_H_
#define MEMFUSE_MIRRORD_LAUNCH_H_

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace memfuse::mirrord {

struct Options {
  std::string mirror_path;  // absolute path of the local mirror, or
  std::string mirror_url;   // the base URL of an HTTP mirror
  uint64_t root_node = 1;   // --root: the HTTP mirror's node shown as root
  // Exactly one of the three ways in.
  std::string listen_path;        // --listen
  int fd = -1;                    // --fd
  int data_fd = -1;               // --data-fd: the shared data region
  bool activation = false;        // LISTEN_FDS from systemd
  std::string user;               // --user: drop to this user after setup
  std::vector<uid_t> allow_uids;  // empty: root and the agent's own uid
  bool verbose = false;
};

// Either options to run with, or an exit (--help/--version: code 0 and
// `message` for stdout; bad input: code 2 and a one-line `message`).
struct ParseResult {
  std::optional<Options> options;
  int exit_code = 0;
  std::string message;
};

// `activation_offered`: the environment passes this process a socket
// (listener.h, ActivationOffered()).
ParseResult ParseOptions(int argc, const char* const* argv,
                         bool activation_offered);

struct User {
  std::string name;
  uid_t uid = 0;
  gid_t gid = 0;
};

// The passwd entry of `name`. NOT_FOUND if there is none.
absl::StatusOr<User> LookUpUser(const std::string& name);

// Becomes `user` for good: its groups, gid and uid (real, effective,
// saved), no new privileges ever; fails unless getting root back fails.
absl::Status DropPrivileges(const User& user);

}  // namespace memfuse::mirrord

#endif  // MEMFUSE_MIRRORD_LAUNCH_H_
