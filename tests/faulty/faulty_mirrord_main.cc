// The test build of mem-fuse-mirrord (build/bin/faulty/, beside a test
// build of mem-fuse that spawns it): the product's agent (RunAgent) with
// the faults agent_faults.h names, read from the environment before the
// agent starts. Single-threaded until RunAgent starts its threads.
#include <cstdlib>
#include <iostream>

#include "absl/strings/numbers.h"
#include "absl/time/time.h"
#include "mirrord/agent.h"
#include "tests/faulty/agent_faults.h"
#include "tests/testing/fault_env.h"

namespace {

// The milliseconds `var` holds; 0 when unset or not a positive number.
int Milliseconds(const char* var) {
  const char* value = getenv(var);
  int ms = 0;
  if (value == nullptr || !absl::SimpleAtoi(value, &ms) || ms < 0) return 0;
  return ms;
}

}  // namespace

int main(int argc, char** argv) {
  namespace mirrord = memfuse::mirrord;
  using memfuse::testing::FaultEnv;
  // Lives as long as the process: the backend holds it until exit.
  static FaultEnv env;
  mirrord::AgentHooks hooks;
  hooks.env = &env;
  if (const int ms = Milliseconds(memfuse::testing::kWriteDelayVar); ms > 0) {
    std::cerr << "mem-fuse-mirrord (faulty): every write of file data waits "
              << ms << " ms\n";
    env.Delay(FaultEnv::Call::kWrite, absl::Milliseconds(ms));
  }
  if (const int ms = Milliseconds(memfuse::testing::kHttpTimeoutVar); ms > 0) {
    std::cerr << "mem-fuse-mirrord (faulty): HTTP requests time out after "
              << ms << " ms\n";
    hooks.adjust_http = [ms](mirrord::HttpBackend::Options* options) {
      options->http.total_timeout = absl::Milliseconds(ms);
    };
  }
  return mirrord::RunAgent(argc, argv, hooks);
}
