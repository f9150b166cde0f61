// The mirror agent fsd starts for itself (--mirror without
// --mirror-socket): its command line, the fork and exec that hand it the
// socket as fd 3 and the data region as fd 4, and its end, with how an
// agent that ended by itself ended written to the log (a seccomp kill
// named as such).
//
// Not thread-safe: its owner (MirrorClient) calls it under its own lock.
#ifndef MEMFUSE_FSD_AGENT_PROCESS_H_
#define MEMFUSE_FSD_AGENT_PROCESS_H_

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace memfuse::fsd {

class AgentProcess {
 public:
  struct Spec {
    std::string mirror_spec;  // --mirror
    std::optional<uint64_t> root_node;  // --root
    int region_fd = -1;  // the shared data region, or -1
  };

  explicit AgentProcess(Spec spec) : spec_(std::move(spec)) {}
  AgentProcess(const AgentProcess&) = delete;
  AgentProcess& operator=(const AgentProcess&) = delete;
  ~AgentProcess() { End(); }

  // Starts an agent on `socket_fd` (still the caller's to close), ending
  // the previous one first.
  absl::Status Start(int socket_fd);

  // If the agent ended by itself: how ("status 1", "signal 31"); it is
  // then forgotten. nullopt while it runs, or when none was started.
  std::optional<std::string> Ended();

  // Gives a running agent up to `grace` to end by itself (it does when its
  // connection closes), then ends it.
  void Stop(absl::Duration grace);

  // Ends the agent (SIGKILL, unless it ended already) and reaps it.
  void End();

 private:
  // Logs how the agent ended (a seccomp kill always, other ends when it
  // ended `by_itself`), and forgets it.
  void Reaped(int status, bool by_itself);

  const Spec spec_;
  pid_t pid_ = -1;
};

}  // namespace memfuse::fsd

#endif  // MEMFUSE_FSD_AGENT_PROCESS_H_
