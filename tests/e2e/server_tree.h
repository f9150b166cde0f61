// The mount compared with an Invariant files server's tree, walked through
// the API (names, kinds, sizes, bytes, symlink targets, executable bits):
// what the server can hold of it. FIFOs and the like (fsd only) are left
// out.
#ifndef MEMFUSE_TESTS_E2E_SERVER_TREE_H_
#define MEMFUSE_TESTS_E2E_SERVER_TREE_H_

#include <cstdint>
#include <string>

#include "gtest/gtest.h"
#include "tests/testing/fake_invariant_server.h"

namespace memfuse::testing {

::testing::AssertionResult MountEqualsServer(
    const std::string& mount, const FakeInvariantServer& server,
    uint64_t root = FakeInvariantServer::kRootNode);

}  // namespace memfuse::testing

#endif  // MEMFUSE_TESTS_E2E_SERVER_TREE_H_
