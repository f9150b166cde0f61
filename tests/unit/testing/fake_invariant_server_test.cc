#include "tests/testing/fake_invariant_server.h"

#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace memfuse::testing {
namespace {

using Json = nlohmann::json;
using S = FakeInvariantServer;

// Every request goes out exactly as written: the tests choose the bytes of
// each path, percent signs included.
std::unique_ptr<httplib::Client> NewClient(int port) {
  auto client = std::make_unique<httplib::Client>("127.0.0.1", port);
  client->set_url_encode(false);
  client->set_tcp_nodelay(true);
  client->set_connection_timeout(std::chrono::seconds(2));
  client->set_read_timeout(std::chrono::seconds(5));
  return client;
}

// Sends `request` as is on a new connection to 127.0.0.1:port and returns
// everything received until the server closes it (or 5 s pass). One request
// per connection: httplib drops pipelined requests.
std::string RawExchange(int port, const std::string& request) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return "socket failed";
  struct timeval timeout = {5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string received;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      send(fd, request.data(), request.size(), MSG_NOSIGNAL) ==
          static_cast<ssize_t>(request.size())) {
    char buf[4096];
    ssize_t n;
    while ((n = recv(fd, buf, sizeof buf, 0)) > 0) received.append(buf, n);
  }
  close(fd);
  return received;
}

// Saves only when asked: what is lost at a restart is then exactly what the
// test did not save.
S::Options SavingOnlyWhenAsked() {
  S::Options options;
  options.save_interval = absl::ZeroDuration();
  return options;
}

class FakeInvariantServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(server_.Start().ok());
    client_ = NewClient(server_.port());
  }

  httplib::Result Get(const std::string& path) { return client_->Get(path); }
  httplib::Result Post(const std::string& path, const std::string& body = "") {
    return client_->Post(path, body, "application/octet-stream");
  }
  httplib::Result Put(const std::string& path) {
    return client_->Put(path, "", "text/plain");
  }

  // The JSON of a 200 answer; a failure (and null) otherwise.
  Json Ok(const httplib::Result& result) {
    if (!result) {
      ADD_FAILURE() << "transport error " << result.error();
      return nullptr;
    }
    if (result->status != 200) {
      ADD_FAILURE() << "status " << result->status << ": " << result->body;
      return nullptr;
    }
    Json j = Json::parse(result->body, nullptr, false);
    if (j.is_discarded()) ADD_FAILURE() << "not JSON: " << result->body;
    return j;
  }

  // Creates `name` (as it goes in the path) in `parent`; its node id.
  uint64_t Create(uint64_t parent, const std::string& name,
                  const std::string& query = "kind=File") {
    Json info = Ok(Put(absl::StrCat("/files/", parent, "/", name, "?", query)));
    return info.is_object() ? info.value("node", uint64_t{0}) : 0;
  }

  Json Info(uint64_t node) {
    return Ok(Get(absl::StrCat("/files/info/", node)));
  }

  std::string Read(uint64_t node) {
    httplib::Result r = Get(absl::StrCat("/files/", node));
    EXPECT_TRUE(r && r->status == 200);
    return r ? r->body : "";
  }

  // Names listed in directory `node`.
  std::set<std::string> Names(uint64_t node) {
    std::set<std::string> names;
    Json listing = Ok(Get(absl::StrCat("/files/directory/", node)));
    if (!listing.is_array()) return names;
    for (const Json& e : listing) names.insert(e["name"].get<std::string>());
    return names;
  }

  void ExpectStatus(const httplib::Result& result, int status,
                    const std::string& body) {
    ASSERT_TRUE(result) << result.error();
    EXPECT_EQ(result->status, status);
    EXPECT_EQ(result->body, body);
  }

  FakeInvariantServer server_{SavingOnlyWhenAsked()};
  std::unique_ptr<httplib::Client> client_;
};

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

TEST_F(FakeInvariantServerTest, ErrorsAreStatusesWithPlainText) {
  const uint64_t f = Create(1, "f");
  const uint64_t d = Create(1, "d", "kind=Directory");
  ExpectStatus(Get("/files/info/999"), 400, "Unrecognized node");
  ExpectStatus(Get("/files/directory/999"), 400, "Unrecognized node");
  ExpectStatus(Post("/files/999", "x"), 400, "Unrecognized node");
  ExpectStatus(Get(absl::StrCat("/files/directory/", f)), 400,
               "Node is not a directory");
  ExpectStatus(Get(absl::StrCat("/files/", d)), 400, "Node is not a file");
  ExpectStatus(Post(absl::StrCat("/files/", d), "x"), 400,
               "Node is not a file");
  ExpectStatus(Put(absl::StrCat("/files/", f, "/child?kind=File")), 400,
               "Node is not a directory");
  ExpectStatus(Get("/files/lookup/1/absent"), 404, "Not Found");
  ExpectStatus(Get("/files/info/abc"), 404, "Not Found");
  ExpectStatus(Get("/nothing/here"), 404, "Not Found");
  ExpectStatus(Put("/files/1/x?kind=Socket"), 400, "Expected a content kind");
  httplib::Result r = Get("/files/info/999");
  ASSERT_TRUE(r);
  EXPECT_THAT(r->get_header_value("Content-Type"),
              ::testing::StartsWith("text/plain"));
}

TEST_F(FakeInvariantServerTest, NamesInPathsAreLiteralQueryValuesDecoded) {
  // "a%20b" in a path is the five bytes a % 2 0 b, never "a b".
  const uint64_t f = Create(1, "a%20b");
  EXPECT_EQ(Names(1), (std::set<std::string>{"a%20b"}));
  EXPECT_EQ(Ok(Get("/files/lookup/1/a%20b"))["node"], f);
  Create(1, "x%2Fy");
  EXPECT_EQ(Names(1), (std::set<std::string>{"a%20b", "x%2Fy"}));

  // A query value is decoded: newName=c%20d names the entry "c d".
  ExpectStatus(Put("/files/rename/1/a%20b?newParent=1&newName=c%20d"), 200, "");
  EXPECT_EQ(Names(1), (std::set<std::string>{"c d", "x%2Fy"}));
  ExpectStatus(Get("/files/lookup/1/c%20d"), 404, "Not Found");

  Json link = Ok(Put("/files/1/l?kind=SymbolicLink&target=..%2Fa%20b%25"));
  EXPECT_EQ(link["target"], "../a b%");
}

TEST_F(FakeInvariantServerTest, BodilessRequestsWithoutContentLength) {
  // What libcurl sends for a PUT without a body: no Content-Length at all.
  // (httplib alone would answer 400.)
  const std::string created =
      RawExchange(server_.port(),
                  "PUT /files/1/raw%25?kind=Directory HTTP/1.1\r\nHost: x\r\n"
                  "Connection: close\r\n\r\n");
  EXPECT_THAT(created, ::testing::StartsWith("HTTP/1.1 200 OK\r\n"));
  EXPECT_THAT(created, ::testing::HasSubstr(R"("kind":"Directory")"));
  const std::string synced = RawExchange(
      server_.port(),
      "PUT /files/sync HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  EXPECT_THAT(synced, ::testing::StartsWith("HTTP/1.1 200 OK\r\n"));
  EXPECT_EQ(server_.RequestCount(S::kSync), 1);
  EXPECT_EQ(Names(1), (std::set<std::string>{"raw%25"}));
}

TEST_F(FakeInvariantServerTest, EtagChangesOnlyAtSync) {
  const uint64_t f = Create(1, "f");
  const Json before = Info(f);
  Ok(Post(absl::StrCat("/files/", f), "new contents"));
  const Json written = Info(f);
  EXPECT_EQ(written["size"], 12);
  EXPECT_EQ(written["etag"], before["etag"]);

  ExpectStatus(Put("/files/sync"), 200, "");
  const Json saved = Info(f);
  EXPECT_NE(saved["etag"], before["etag"]);
  // Same content, same etag.
  ExpectStatus(Put("/files/sync"), 200, "");
  EXPECT_EQ(Info(f)["etag"], saved["etag"]);
}

TEST_F(FakeInvariantServerTest, RestartRenumbersIdsAndKeepsWhatWasSaved) {
  const uint64_t d = Create(1, "d", "kind=Directory");
  const uint64_t f = Create(d, "f");
  Ok(Post(absl::StrCat("/files/", f), "kept"));
  server_.Save();

  server_.Restart();
  for (uint64_t old : {d, f}) {
    ExpectStatus(Get(absl::StrCat("/files/info/", old)), 400,
                 "Unrecognized node");
  }
  EXPECT_EQ(Info(1)["kind"], "Directory");
  const uint64_t new_d = Ok(Get("/files/lookup/1/d"))["node"].get<uint64_t>();
  const uint64_t new_f =
      Ok(Get(absl::StrCat("/files/lookup/", new_d, "/f")))["node"]
          .get<uint64_t>();
  EXPECT_GT(new_d, f);
  EXPECT_GT(new_f, f);
  EXPECT_EQ(Read(new_f), "kept");
  // New nodes continue above the renumbered ones.
  EXPECT_GT(Create(1, "g"), std::max(new_d, new_f));
}

TEST_F(FakeInvariantServerTest, RestartLosesEverythingNotSaved) {
  const uint64_t keep = Create(1, "keep");
  Ok(Post(absl::StrCat("/files/", keep), "kept"));
  const uint64_t removed = Create(1, "removed");
  const uint64_t d = Create(1, "d", "kind=Directory");
  Create(d, "inner");
  Create(1, "old-name");
  ExpectStatus(Put("/files/sync"), 200, "");
  EXPECT_EQ(server_.UnsavedChanges(), 0);
  const Json saved_keep = Info(keep);

  // Every kind of change, none of them saved.
  Ok(Post(absl::StrCat("/files/", keep), "overwritten and longer"));
  Ok(Post(absl::StrCat("/files/attributes/", keep),
          R"({"executable": true, "modifyTime": 5})"));
  Ok(Put(absl::StrCat("/files/size/", keep, "?size=2")));
  const uint64_t fresh = Create(1, "fresh");
  Ok(Post(absl::StrCat("/files/", fresh), "never saved"));
  Create(1, "newdir", "kind=Directory");
  EXPECT_EQ(Ok(Post(absl::StrCat("/files/remove/1/removed"))), true);
  EXPECT_EQ(Ok(Post("/files/remove/1/d")), true);
  ExpectStatus(Put("/files/rename/1/old-name?newParent=1&newName=new-name"),
               200, "");
  ExpectStatus(Put(absl::StrCat("/files/link/1/hard?node=", keep)), 200, "");
  EXPECT_EQ(server_.UnsavedChanges(), 10);
  EXPECT_EQ(Names(1), (std::set<std::string>{"fresh", "hard", "keep",
                                             "new-name", "newdir"}));

  server_.Restart();
  EXPECT_EQ(server_.UnsavedChanges(), 0);
  EXPECT_EQ(Names(1),
            (std::set<std::string>{"d", "keep", "old-name", "removed"}));
  const Json keep_info = Ok(Get("/files/lookup/1/keep"));
  EXPECT_EQ(Read(keep_info["node"].get<uint64_t>()), "kept");
  EXPECT_EQ(keep_info["executable"], false);
  EXPECT_EQ(keep_info["modifyTime"], saved_keep["modifyTime"]);
  EXPECT_EQ(keep_info["etag"], saved_keep["etag"]);
  const uint64_t new_d = Ok(Get("/files/lookup/1/d"))["node"].get<uint64_t>();
  EXPECT_EQ(Names(new_d), (std::set<std::string>{"inner"}));
  EXPECT_NE(Ok(Get("/files/lookup/1/removed"))["node"], removed);
  EXPECT_EQ(server_.NodeCount(), 6u);
}

TEST_F(FakeInvariantServerTest, ASyncMakesChangesSurviveARestart) {
  const uint64_t synced = Create(1, "synced");
  Ok(Post(absl::StrCat("/files/", synced), "first"));
  ExpectStatus(Put("/files/sync"), 200, "");
  // Written after the sync: lost, while the synced bytes stay.
  Ok(Post(absl::StrCat("/files/", synced, "?offset=5"), " and second"));
  const uint64_t unsynced = Create(1, "unsynced");
  Ok(Post(absl::StrCat("/files/", unsynced), "lost"));
  EXPECT_EQ(Read(synced), "first and second");

  server_.Restart();
  EXPECT_EQ(Names(1), (std::set<std::string>{"synced"}));
  EXPECT_EQ(Read(Ok(Get("/files/lookup/1/synced"))["node"].get<uint64_t>()),
            "first");

  // What the restarted server loaded is saved: a second restart loses
  // nothing more.
  server_.Restart();
  EXPECT_EQ(Names(1), (std::set<std::string>{"synced"}));
}

TEST_F(FakeInvariantServerTest, RestartWithDowntimeDropsUnsavedChanges) {
  Create(1, "saved", "kind=Directory");
  server_.Save();
  Create(1, "unsaved", "kind=Directory");
  EXPECT_EQ(Ok(Post("/files/remove/1/saved")), true);
  ASSERT_TRUE(server_.Restart(absl::Milliseconds(50)).ok());
  EXPECT_EQ(Names(1), (std::set<std::string>{"saved"}));
}

TEST_F(FakeInvariantServerTest, LargeFilesKeepTheirSavedBytesWhileWritten) {
  // Contents are shared with the saved tree in chunks: writes after a save,
  // across chunk boundaries, must not reach the saved copy.
  std::string saved(700 * 1024, '\0');
  for (size_t i = 0; i < saved.size(); ++i) saved[i] = static_cast<char>(i);
  const uint64_t f = Create(1, "big");
  Ok(Post(absl::StrCat("/files/", f), saved));
  server_.Save();
  const Json saved_info = Info(f);

  std::string live = saved;
  const std::string patch(100 * 1024, 'p');
  live.replace(250 * 1024, patch.size(), patch);
  Ok(Post(absl::StrCat("/files/", f, "?offset=", 250 * 1024), patch));
  EXPECT_EQ(Read(f), live);
  // Truncated inside a chunk, extended with zeros past the old end.
  Ok(Put(absl::StrCat("/files/size/", f, "?size=", 300 * 1024 + 7)));
  Ok(Put(absl::StrCat("/files/size/", f, "?size=", 900 * 1024)));
  live.resize(300 * 1024 + 7);
  live.resize(900 * 1024, '\0');
  EXPECT_EQ(Read(f), live);
  ExpectStatus(Get(absl::StrCat("/files/", f, "?offset=", 262143, "&length=3")),
               200, live.substr(262143, 3));
  server_.Save();
  EXPECT_NE(Info(f)["etag"], saved_info["etag"]);

  // Back to the first contents: the same etag as when they were saved.
  Ok(Put(absl::StrCat("/files/size/", f, "?size=0")));
  Ok(Post(absl::StrCat("/files/", f), saved));
  server_.Save();
  EXPECT_EQ(Info(f)["etag"], saved_info["etag"]);
  Ok(Post(absl::StrCat("/files/", f, "?offset=1000"), "unsaved"));
  server_.Restart();
  EXPECT_EQ(Read(Ok(Get("/files/lookup/1/big"))["node"].get<uint64_t>()),
            saved);
}

TEST_F(FakeInvariantServerTest, CountsSavesSyncsAndUnsavedChanges) {
  EXPECT_EQ(server_.UnsavedChanges(), 0);
  const uint64_t f = Create(1, "f");
  Ok(Post(absl::StrCat("/files/", f), "x"));
  // Reads and refused or empty-handed requests change nothing.
  Read(f);
  Info(f);
  Post("/files/999", "x");
  Put("/files/1/x?kind=Socket");
  EXPECT_EQ(Ok(Post("/files/remove/1/absent")), false);
  ExpectStatus(Put("/files/rename/1/f?newParent=1&newName=f"), 200, "");
  EXPECT_EQ(server_.UnsavedChanges(), 2);
  EXPECT_EQ(server_.SaveCount(), 0);

  ExpectStatus(Put("/files/sync"), 200, "");
  EXPECT_EQ(server_.UnsavedChanges(), 0);
  EXPECT_EQ(server_.SyncCount(), 1);
  EXPECT_EQ(server_.SaveCount(), 1);
  server_.Save();
  EXPECT_EQ(server_.SyncCount(), 1);
  EXPECT_EQ(server_.SaveCount(), 2);
  // A sync refused by a fault saves nothing; one whose answer is cut does.
  Create(1, "g");
  server_.InjectFault({Fault::Kind::kServerError, 1, "PUT files/sync"});
  ExpectStatus(Put("/files/sync"), 500, "Injected server error");
  EXPECT_EQ(server_.UnsavedChanges(), 1);
  server_.InjectFault({Fault::Kind::kTruncatedBody, 1, "PUT files/sync"});
  EXPECT_FALSE(Put("/files/sync"));
  EXPECT_EQ(server_.UnsavedChanges(), 0);
  EXPECT_EQ(server_.SyncCount(), 2);
  EXPECT_EQ(server_.RequestCount(S::kSync), 3);

  server_.ResetCounters();
  EXPECT_EQ(server_.SaveCount(), 0);
  EXPECT_EQ(server_.SyncCount(), 0);
}

TEST(FakeInvariantServerSaveTimerTest, SavesOnItsOwnEveryInterval) {
  EXPECT_EQ(S::Options().save_interval, absl::Seconds(5));
  S::Options options;
  options.save_interval = absl::Milliseconds(50);
  FakeInvariantServer server(options);
  ASSERT_TRUE(server.Start().ok());
  auto client = NewClient(server.port());
  httplib::Result created =
      client->Put("/files/1/f?kind=File", "", "text/plain");
  ASSERT_TRUE(created && created->status == 200);
  const uint64_t f = Json::parse(created->body).value("node", uint64_t{0});
  httplib::Result written = client->Post(absl::StrCat("/files/", f), "timed",
                                         "application/octet-stream");
  ASSERT_TRUE(written && written->status == 200);

  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (server.UnsavedChanges() > 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  ASSERT_EQ(server.UnsavedChanges(), 0) << "the timer did not save";
  EXPECT_GE(server.SaveCount(), 1);
  EXPECT_EQ(server.SyncCount(), 0);
  server.Restart();
  httplib::Result found = client->Get("/files/lookup/1/f");
  ASSERT_TRUE(found && found->status == 200);
  httplib::Result read = client->Get(absl::StrCat(
      "/files/", Json::parse(found->body).value("node", uint64_t{0})));
  ASSERT_TRUE(read);
  EXPECT_EQ(read->body, "timed");
  // Stop ends the timer's thread too (a hang here is the failure).
  server.Stop();
}

TEST_F(FakeInvariantServerTest, CountsWritesOverlappingUnsavedOnes) {
  const uint64_t f = Create(1, "f");
  const std::string path = absl::StrCat("/files/", f);
  Ok(Post(path + "?offset=0", "aaaa"));
  Ok(Post(path + "?offset=4", "bbbb"));  // touches, does not overlap
  Ok(Post(path + "?offset=10", ""));     // empty: no range
  EXPECT_EQ(server_.OverlappingUnsavedWrites(), 0);
  Ok(Post(path + "?offset=7", "cc"));  // [7, 9) over [4, 8)
  EXPECT_EQ(server_.OverlappingUnsavedWrites(), 1);
  // Another file's ranges are its own.
  const uint64_t g = Create(1, "g");
  Ok(Post(absl::StrCat("/files/", g), "aaaa"));
  EXPECT_EQ(server_.OverlappingUnsavedWrites(), 1);

  // A save forgets every range.
  server_.Save();
  Ok(Post(path + "?offset=0", "dddddddd"));
  Ok(Post(path + "?offset=20", "zz"));
  EXPECT_EQ(server_.OverlappingUnsavedWrites(), 1);
  // A truncation forgets what lies beyond the new size, whole ranges and
  // the tail of one.
  Ok(Put(absl::StrCat("/files/size/", f, "?size=3")));
  Ok(Post(path + "?offset=3", "eeee"));
  EXPECT_EQ(server_.OverlappingUnsavedWrites(), 1);
  Ok(Post(absl::StrCat("/files/attributes/", f), R"({"size": 5})"));
  Ok(Post(path + "?offset=5", "ff"));
  EXPECT_EQ(server_.OverlappingUnsavedWrites(), 1);
  Ok(Post(path + "?offset=4", "gg"));  // over two earlier writes: counted once
  EXPECT_EQ(server_.OverlappingUnsavedWrites(), 2);
  // Not scrambled by default: the newest bytes win.
  EXPECT_EQ(Read(f), "dddeggf");
}

TEST(FakeInvariantServerScrambleTest, OverlappingUnsavedWritesKeepOlderBytes) {
  S::Options options = SavingOnlyWhenAsked();
  options.scramble_overlaps = true;
  FakeInvariantServer server(options);
  ASSERT_TRUE(server.Start().ok());
  auto client = NewClient(server.port());
  httplib::Result created =
      client->Put("/files/1/f?kind=File", "", "text/plain");
  ASSERT_TRUE(created && created->status == 200);
  const std::string path = absl::StrCat(
      "/files/", Json::parse(created->body).value("node", uint64_t{0}));
  auto write = [&](uint64_t offset, const std::string& bytes) {
    httplib::Result r = client->Post(absl::StrCat(path, "?offset=", offset),
                                     bytes, "application/octet-stream");
    ASSERT_TRUE(r && r->status == 200);
  };
  auto read = [&] {
    httplib::Result r = client->Get(path);
    return r ? r->body : "transport error";
  };

  write(0, "AAAAAAAA");
  write(2, "BBBB");  // entirely over the older write: lost
  EXPECT_EQ(read(), "AAAAAAAA");
  write(6, "CCCC");  // [6, 8) keeps the older bytes, [8, 10) is new
  EXPECT_EQ(read(), "AAAAAAAACC");
  EXPECT_EQ(server.OverlappingUnsavedWrites(), 2);

  // After a save the same write lands as written.
  server.Save();
  write(2, "BBBB");
  EXPECT_EQ(read(), "AABBBBAACC");
  EXPECT_EQ(server.OverlappingUnsavedWrites(), 2);
}

TEST_F(FakeInvariantServerTest, StopThenStartServesTheSamePortWithNewIds) {
  const uint64_t f = Create(1, "f");
  const int port = server_.port();
  server_.Stop();
  httplib::Result down = Get("/files/info/1");
  ASSERT_FALSE(down);
  EXPECT_EQ(down.error(), httplib::Error::Connection);

  ASSERT_TRUE(server_.Start().ok());
  EXPECT_EQ(server_.port(), port);
  // Stop alone is the network going away: ids and unsaved changes are kept.
  EXPECT_EQ(Ok(Get("/files/lookup/1/f"))["node"], f);
  EXPECT_EQ(server_.UnsavedChanges(), 1);

  // Restart(down): the Stop above (refused while stopped), for `down`,
  // then back on the same port with new ids.
  server_.Save();
  const absl::Time before = absl::Now();
  ASSERT_TRUE(server_.Restart(absl::Milliseconds(300)).ok());
  EXPECT_GE(absl::Now() - before, absl::Milliseconds(300));
  EXPECT_EQ(server_.port(), port);
  ExpectStatus(Get(absl::StrCat("/files/info/", f)), 400, "Unrecognized node");
  EXPECT_NE(Ok(Get("/files/lookup/1/f"))["node"], f);
}

TEST_F(FakeInvariantServerTest, ListensOnLoopbackOnly) {
  // 127.0.0.2 is a loopback address too, but not the one bound.
  httplib::Client other("127.0.0.2", server_.port());
  other.set_connection_timeout(std::chrono::seconds(1));
  httplib::Result r = other.Get("/files/info/1");
  EXPECT_FALSE(r);
  EXPECT_TRUE(Get("/files/info/1"));
}

TEST_F(FakeInvariantServerTest, FaultMalformedJson) {
  server_.InjectFault({Fault::Kind::kMalformedJson, 1, "GET files/info/"});
  httplib::Result r = Get("/files/info/1");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_TRUE(Json::parse(r->body, nullptr, false).is_discarded()) << r->body;
  EXPECT_EQ(Info(1)["node"], 1);  // only once
  EXPECT_EQ(server_.PendingFaults(), 0);
}

TEST_F(FakeInvariantServerTest, FaultTruncatedBody) {
  const uint64_t f = Create(1, "f");
  Ok(Post(absl::StrCat("/files/", f), std::string(1000, 'x')));
  server_.InjectFault({Fault::Kind::kTruncatedBody, 1, "GET files/"});
  httplib::Result r = Get(absl::StrCat("/files/", f));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), httplib::Error::Read);

  // An empty answer is cut too: one byte announced, none sent.
  server_.InjectFault({Fault::Kind::kTruncatedBody, 1, "PUT files/sync"});
  EXPECT_FALSE(Put("/files/sync"));

  // A raw look at what goes on the wire.
  server_.InjectFault({Fault::Kind::kTruncatedBody, 1, "GET files/"});
  httplib::Client raw("127.0.0.1", server_.port());
  raw.set_decompress(false);
  std::string got;
  std::string length;
  httplib::Result partial = raw.Get(
      absl::StrCat("/files/", f),
      [&](const httplib::Response& response) {
        length = response.get_header_value("Content-Length");
        return true;
      },
      [&](const char* data, size_t n) {
        got.append(data, n);
        return true;
      });
  EXPECT_FALSE(partial);
  EXPECT_EQ(length, "1000");
  EXPECT_EQ(got, std::string(500, 'x'));
  EXPECT_EQ(Read(f).size(), 1000u);
}

TEST_F(FakeInvariantServerTest, FaultDelay) {
  server_.InjectFault(
      {Fault::Kind::kDelay, 1, "GET files/info/", absl::Milliseconds(1500)});
  auto impatient = NewClient(server_.port());
  impatient->set_read_timeout(std::chrono::milliseconds(200));
  const absl::Time start = absl::Now();
  httplib::Result r = impatient->Get("/files/info/1");
  EXPECT_FALSE(r);
  EXPECT_EQ(r.error(), httplib::Error::Read);
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(1400));

  server_.InjectFault(
      {Fault::Kind::kDelay, 1, "GET files/info/", absl::Milliseconds(200)});
  const absl::Time patient = absl::Now();
  EXPECT_EQ(Info(1)["node"], 1);
  EXPECT_GE(absl::Now() - patient, absl::Milliseconds(200));
}

TEST_F(FakeInvariantServerTest, FaultServerErrorAppliesToMatchingRoutesOnly) {
  const uint64_t f = Create(1, "f");
  server_.InjectFault(
      {Fault::Kind::kServerError, 2, absl::StrCat("POST files/", f)});
  EXPECT_EQ(Info(f)["size"], 0);  // not matched
  ExpectStatus(Post(absl::StrCat("/files/", f), "abc"), 500,
               "Injected server error");
  ExpectStatus(Post(absl::StrCat("/files/", f), "abc"), 500,
               "Injected server error");
  EXPECT_EQ(Info(f)["size"], 0);  // not performed
  ExpectStatus(Post(absl::StrCat("/files/", f), "abc"), 200, "3");

  server_.InjectFault({Fault::Kind::kServerError, 5, ""});
  ExpectStatus(Get("/files/info/1"), 500, "Injected server error");
  server_.ClearFaults();
  EXPECT_EQ(Info(1)["node"], 1);
}

TEST_F(FakeInvariantServerTest, CountersByRoute) {
  const uint64_t f = Create(1, "f");
  Ok(Post(absl::StrCat("/files/", f), "12345"));
  Ok(Post(absl::StrCat("/files/", f, "?offset=5"), "678"));
  Read(f);
  Info(f);
  Get("/bogus");
  EXPECT_EQ(server_.RequestCount(S::kCreate), 1);
  EXPECT_EQ(server_.RequestCount(S::kWrite), 2);
  EXPECT_EQ(server_.RequestCount("POST files"), 2);
  EXPECT_EQ(server_.RequestCount(S::kRead), 1);
  EXPECT_EQ(server_.RequestCount(S::kInfo), 1);
  EXPECT_EQ(server_.RequestCount(S::kNoRoute), 1);
  EXPECT_EQ(server_.TotalRequests(), 6);
  EXPECT_EQ(server_.BytesWritten(), 8);
  EXPECT_EQ(server_.BytesRead(), 8);

  server_.ResetCounters();
  EXPECT_EQ(server_.TotalRequests(), 0);
  EXPECT_EQ(server_.RequestCount(S::kWrite), 0);
  EXPECT_EQ(server_.BytesWritten(), 0);
}

TEST_F(FakeInvariantServerTest, ConcurrentWritersAreAllCounted) {
  constexpr int kThreads = 4;
  constexpr int kWrites = 25;
  std::vector<uint64_t> files;
  for (int i = 0; i < kThreads; ++i) {
    files.push_back(Create(1, absl::StrCat("f", i)));
  }
  server_.ResetCounters();
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      auto client = NewClient(server_.port());
      client->set_keep_alive(true);
      for (int w = 0; w < kWrites; ++w) {
        httplib::Result r =
            client->Post(absl::StrCat("/files/", files[i], "?offset=", w * 4),
                         "abcd", "application/octet-stream");
        EXPECT_TRUE(r && r->status == 200);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(server_.RequestCount(S::kWrite), kThreads * kWrites);
  EXPECT_EQ(server_.BytesWritten(), kThreads * kWrites * 4);
  for (uint64_t f : files) EXPECT_EQ(Info(f)["size"], kWrites * 4);
}

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
}  // namespace memfuse::testing
