// Tests of the fake Invariant files server's endpoints, one by one: the
// content info they answer, and how creates, removes, renames, links,
// writes, reads and attribute changes behave as the real server's do
// (replacing, recursive, zero-filling).
#include "tests/testing/fake_invariant_server.h"

#include <httplib.h>

#include <cstdint>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "tests/unit/testing/fake_invariant_server_test_fixture.h"

namespace memfuse::testing::fake_invariant_test {
namespace {

using S = FakeInvariantServer;

std::set<std::string> Keys(const Json& j) {
  std::set<std::string> keys;
  for (auto it = j.begin(); it != j.end(); ++it) keys.insert(it.key());
  return keys;
}

TEST_F(FakeInvariantServerTest, ContentInfoHasExactlyTheDocumentedFields) {
  Json root = Info(S::kRootNode);
  EXPECT_EQ(Keys(root),
            (std::set<std::string>{"node", "kind", "modifyTime", "createTime",
                                   "executable", "writable", "etag", "size"}));
  EXPECT_EQ(root["node"], 1);
  EXPECT_EQ(root["kind"], "Directory");

  const int64_t before = absl::ToUnixMillis(absl::Now());
  Json file = Ok(Put("/files/1/f?kind=File"));
  EXPECT_EQ(file["kind"], "File");
  EXPECT_EQ(file["size"], 0);
  EXPECT_EQ(file["executable"], false);
  EXPECT_EQ(file["writable"], true);
  EXPECT_GE(file["modifyTime"].get<int64_t>(), before);
  EXPECT_GE(file["createTime"].get<int64_t>(), before);
  EXPECT_NE(file["node"], 1);

  Json link = Ok(Put("/files/1/l?kind=SymbolicLink&target=f"));
  EXPECT_EQ(Keys(link), (std::set<std::string>{"node", "kind", "modifyTime",
                                               "createTime", "executable",
                                               "writable", "etag", "target"}));
  EXPECT_EQ(link["kind"], "SymbolicLink");
  EXPECT_EQ(link["target"], "f");
  EXPECT_EQ(Info(link["node"].get<uint64_t>()), link);
}

TEST_F(FakeInvariantServerTest, CreateReplacesAnExistingName) {
  const uint64_t old = Create(1, "f");
  Ok(Post(absl::StrCat("/files/", old), "contents"));
  const uint64_t dir = Create(1, "d", "kind=Directory");
  const uint64_t inner = Create(dir, "inner");

  const uint64_t fresh = Create(1, "f");
  EXPECT_NE(fresh, old);
  EXPECT_EQ(Info(fresh)["size"], 0);
  ExpectStatus(Get(absl::StrCat("/files/info/", old)), 400,
               "Unrecognized node");
  EXPECT_EQ(Ok(Get("/files/lookup/1/f"))["node"], fresh);

  // A non-empty directory is replaced too, with everything below it.
  const uint64_t file = Create(1, "d");
  EXPECT_EQ(Ok(Get("/files/lookup/1/d"))["kind"], "File");
  EXPECT_EQ(Ok(Get("/files/lookup/1/d"))["node"], file);
  ExpectStatus(Get(absl::StrCat("/files/info/", inner)), 400,
               "Unrecognized node");
  EXPECT_EQ(Names(1), (std::set<std::string>{"d", "f"}));
}

TEST_F(FakeInvariantServerTest, RemoveIsRecursive) {
  const uint64_t d = Create(1, "d", "kind=Directory");
  const uint64_t sub = Create(d, "sub", "kind=Directory");
  const uint64_t f = Create(sub, "f");
  EXPECT_EQ(server_.NodeCount(), 4u);

  EXPECT_EQ(Ok(Post("/files/remove/1/d")), true);
  EXPECT_EQ(Ok(Post("/files/remove/1/d")), false);
  for (uint64_t gone : {d, sub, f}) {
    ExpectStatus(Get(absl::StrCat("/files/info/", gone)), 400,
                 "Unrecognized node");
  }
  EXPECT_EQ(server_.NodeCount(), 1u);
  ExpectStatus(Get("/files/lookup/1/d"), 404, "Not Found");
}

TEST_F(FakeInvariantServerTest, RenameReplacesTheTarget) {
  const uint64_t a = Create(1, "a");
  Ok(Post(absl::StrCat("/files/", a), "A"));
  const uint64_t b = Create(1, "b");
  Ok(Post(absl::StrCat("/files/", b), "B"));
  const uint64_t d = Create(1, "d", "kind=Directory");

  ExpectStatus(Put("/files/rename/1/a?newParent=1&newName=b"), 200, "");
  EXPECT_EQ(Names(1), (std::set<std::string>{"b", "d"}));
  EXPECT_EQ(Ok(Get("/files/lookup/1/b"))["node"], a);
  EXPECT_EQ(Read(a), "A");
  ExpectStatus(Get(absl::StrCat("/files/info/", b)), 400, "Unrecognized node");

  // Across directories, keeping the node.
  ExpectStatus(
      Put(absl::StrCat("/files/rename/1/b?newParent=", d, "&newName=moved")),
      200, "");
  EXPECT_EQ(Ok(Get(absl::StrCat("/files/lookup/", d, "/moved")))["node"], a);

  // Onto its own parent: the parent is replaced, the moved node survives.
  ExpectStatus(
      Put(absl::StrCat("/files/rename/", d, "/moved?newParent=1&newName=d")),
      200, "");
  EXPECT_EQ(Ok(Get("/files/lookup/1/d"))["node"], a);
  ExpectStatus(Get(absl::StrCat("/files/info/", d)), 400, "Unrecognized node");

  // The documented non-route and a missing source.
  ExpectStatus(Put(absl::StrCat("/files/rename/", a, "?newParent=1&newName=x")),
               404, "Not Found");
  ExpectStatus(Put("/files/rename/1/nope?newParent=1&newName=x"), 404,
               "Not Found");
}

TEST_F(FakeInvariantServerTest, LinkAddsANameAndRefusesAnExistingOne) {
  const uint64_t f = Create(1, "f");
  Create(1, "g");
  ExpectStatus(Put(absl::StrCat("/files/link/1/h?node=", f)), 200, "");
  EXPECT_EQ(Ok(Get("/files/lookup/1/h"))["node"], f);
  ExpectStatus(Put(absl::StrCat("/files/link/1/g?node=", f)), 502,
               "Name already exists");

  // Both names are the same node; it outlives either.
  Ok(Post(absl::StrCat("/files/", f), "shared"));
  EXPECT_EQ(Ok(Post("/files/remove/1/f")), true);
  EXPECT_EQ(Read(f), "shared");
  EXPECT_EQ(Ok(Get("/files/lookup/1/h"))["size"], 6);
  EXPECT_EQ(Ok(Post("/files/remove/1/h")), true);
  ExpectStatus(Get(absl::StrCat("/files/info/", f)), 400, "Unrecognized node");
}

TEST_F(FakeInvariantServerTest, WriteAtAnOffsetZeroFillsTheGap) {
  const uint64_t f = Create(1, "f");
  ExpectStatus(Post(absl::StrCat("/files/", f, "?offset=5"), "abc"), 200, "3");
  EXPECT_EQ(Read(f), std::string("\0\0\0\0\0abc", 8));
  EXPECT_EQ(Info(f)["size"], 8);
  // No offset writes at 0; it does not append.
  ExpectStatus(Post(absl::StrCat("/files/", f), "XY"), 200, "2");
  EXPECT_EQ(Read(f), std::string("XY\0\0\0abc", 8));
}

TEST_F(FakeInvariantServerTest, WriteBodiesAreRawWhateverTheirContentType) {
  // libcurl's default Content-Type for a POST body: still raw bytes, never
  // form parameters, and not limited to httplib's 8 KiB for forms.
  const uint64_t f = Create(1, "f");
  httplib::Result r = client_->Post(absl::StrCat("/files/", f), "offset=3",
                                    "application/x-www-form-urlencoded");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(Read(f), "offset=3");
  const std::string big(100 * 1024, 'b');
  r = client_->Post(absl::StrCat("/files/", f), big,
                    "application/x-www-form-urlencoded");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "102400");
  EXPECT_EQ(Read(f), big);
}

TEST_F(FakeInvariantServerTest, ReadPastTheEndIsEmpty) {
  const uint64_t f = Create(1, "f");
  Ok(Post(absl::StrCat("/files/", f), "0123456789"));
  ExpectStatus(Get(absl::StrCat("/files/", f, "?offset=100&length=10")), 200,
               "");
  ExpectStatus(Get(absl::StrCat("/files/", f, "?offset=10&length=10")), 200,
               "");
  ExpectStatus(Get(absl::StrCat("/files/", f, "?offset=7&length=10")), 200,
               "789");
  ExpectStatus(Get(absl::StrCat("/files/", f, "?offset=2&length=3")), 200,
               "234");
}

TEST_F(FakeInvariantServerTest, Attributes) {
  ExpectStatus(Post("/files/attributes/1", R"({"executable": true})"), 400,
               "Cannot set the attributes of the root");

  const uint64_t f = Create(1, "f");
  Ok(Post(absl::StrCat("/files/", f), "abcdef"));
  Json info = Ok(Post(absl::StrCat("/files/attributes/", f),
                      R"({"executable": true, "size": 3,
                          "modifyTime": 1000, "createTime": 500})"));
  EXPECT_EQ(info["executable"], true);
  EXPECT_EQ(info["size"], 3);
  EXPECT_EQ(info["modifyTime"], 1000);
  EXPECT_EQ(info["createTime"], 500);
  EXPECT_EQ(Read(f), "abc");

  // Extending zero-fills; PUT files/size does the same.
  Ok(Post(absl::StrCat("/files/attributes/", f), R"({"size": 5})"));
  EXPECT_EQ(Read(f), std::string("abc\0\0", 5));
  EXPECT_EQ(Ok(Put(absl::StrCat("/files/size/", f, "?size=1")))["size"], 1);
  EXPECT_EQ(Read(f), "a");

  // A file made read-only refuses writes and size changes, not attributes.
  EXPECT_EQ(Ok(Post(absl::StrCat("/files/attributes/", f),
                    R"({"writable": false})"))["writable"],
            false);
  ExpectStatus(Post(absl::StrCat("/files/", f), "x"), 400,
               "Node is not writable");
  ExpectStatus(Put(absl::StrCat("/files/size/", f, "?size=0")), 400,
               "Node is not writable");
  EXPECT_EQ(Read(f), "a");

  ExpectStatus(Post(absl::StrCat("/files/attributes/", f), "not json"), 400,
               "Expected entry attributes");
  ExpectStatus(
      Post(absl::StrCat("/files/attributes/", f), R"({"modifyTime": -1})"), 400,
      "Expected entry attributes");
}

}  // namespace
}  // namespace memfuse::testing::fake_invariant_test
