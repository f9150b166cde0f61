// Tests of WalkApiTree against the fake Invariant files server: the tree it
// reads back is what was created, and a bad answer is an error.
#include "tests/testing/fake_invariant_server.h"

#include <set>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/unit/testing/fake_invariant_server_test_fixture.h"

namespace memfuse::testing::fake_invariant_test {
namespace {

TEST_F(FakeInvariantServerTest, WalkApiTreeSeesWhatWasCreated) {
  const uint64_t d = Create(1, "d", "kind=Directory");
  const uint64_t f = Create(d, "a%20b");
  Ok(Post(absl::StrCat("/files/", f), std::string("x\0y", 3)));
  Ok(Post(absl::StrCat("/files/attributes/", f), R"({"executable": true})"));
  Create(1, "l", "kind=SymbolicLink&target=d%2Fa%20b");
  Create(d, "empty", "kind=Directory");
  ExpectStatus(Put(absl::StrCat("/files/link/1/hard?node=", f)), 200, "");

  absl::StatusOr<ApiTree> tree = WalkApiTree("127.0.0.1", server_.port());
  ASSERT_TRUE(tree.ok()) << tree.status();
  std::set<std::string> paths;
  for (const auto& [path, entry] : *tree) paths.insert(path);
  EXPECT_EQ(paths,
            (std::set<std::string>{"d", "d/a%20b", "d/empty", "hard", "l"}));
  const ApiEntry& file = tree->at("d/a%20b");
  EXPECT_EQ(file.kind, InvariantKind::kFile);
  EXPECT_EQ(file.bytes, std::string("x\0y", 3));
  EXPECT_EQ(file.size, 3u);
  EXPECT_TRUE(file.executable);
  EXPECT_EQ(tree->at("hard").node, file.node);
  EXPECT_EQ(tree->at("l").kind, InvariantKind::kSymbolicLink);
  EXPECT_EQ(tree->at("l").target, "d/a b");
  EXPECT_EQ(tree->at("d/empty").kind, InvariantKind::kDirectory);

  // Walking a subtree; a bad answer is an error, not a wrong tree.
  absl::StatusOr<ApiTree> sub = WalkApiTree("127.0.0.1", server_.port(), d);
  ASSERT_TRUE(sub.ok()) << sub.status();
  EXPECT_EQ(sub->size(), 2u);
  server_.InjectFault({Fault::Kind::kMalformedJson, 1, "GET files/directory"});
  EXPECT_FALSE(WalkApiTree("127.0.0.1", server_.port()).ok());
}

}  // namespace
}  // namespace memfuse::testing::fake_invariant_test
