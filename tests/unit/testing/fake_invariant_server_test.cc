// Tests of the fake Invariant files server's front: errors and routes as
// the real server answers them (literal names in paths, decoded query
// values, requests without a body or a Content-Length), Stop and Start,
// loopback only, injected faults and the request counters.
#include "tests/testing/fake_invariant_server.h"

#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstdint>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/testing/fake_invariant_server_test_fixture.h"

namespace memfuse::testing::fake_invariant_test {
namespace {

using S = FakeInvariantServer;

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

}  // namespace
}  // namespace memfuse::testing::fake_invariant_test
