// The whole of mem-fuse-mirrord as one call, so that the production main
// (mirrord/main.cc) and a test build (tests/faulty/) run the same agent;
// the test build passes hooks that inject faults, the production one none.
//
// Thread-safety: RunAgent is called once, from main's thread, before any
// other thread exists (it blocks SIGTERM and SIGINT for the signalfd).
#ifndef MEMFUSE_MIRRORD_AGENT_H_
#define MEMFUSE_MIRRORD_AGENT_H_

#include <functional>

#include "mirrord/backend/env.h"
#include "mirrord/backend/http_backend.h"

namespace memfuse::mirrord {

// What a test build changes in the agent. The default is the product.
struct AgentHooks {
  // The local backend's way to the disk; null: Env::Default(). Must
  // outlive RunAgent and use only calls the seccomp allow-list permits
  // (syscall_allowlist.cc), as the backend does.
  Env* env = nullptr;
  // Adjusts the HTTP backend's options before it is opened.
  std::function<void(HttpBackend::Options*)> adjust_http;
};

// Parses `argv` and runs the agent until it stops; the process's exit
// code.
int RunAgent(int argc, char** argv, const AgentHooks& hooks);

}  // namespace memfuse::mirrord

#endif  // MEMFUSE_MIRRORD_AGENT_H_
