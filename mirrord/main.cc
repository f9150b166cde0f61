// mem-fuse-mirrord: the agent (agent.h), with nothing changed by a test.
#include "mirrord/agent.h"

int main(int argc, char** argv) {
  return memfuse::mirrord::RunAgent(argc, argv, memfuse::mirrord::AgentHooks());
}
