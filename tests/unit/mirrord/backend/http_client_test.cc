#include "mirrord/backend/http_client.h"

#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace memfuse::mirrord {
namespace {

// ---------------------------------------------------------------------------
// Escaping of names.

TEST(EncodePathNameTest, PlainNamesAreUnchanged) {
  for (std::string_view name :
       {"a", "file.txt", "Makefile", "x_y-z.0123456789", "ABCxyz"}) {
    EXPECT_EQ(EncodePathName(name), name);
    EXPECT_EQ(DecodePathName(name), name);
  }
}

TEST(EncodePathNameTest, EscapesEverythingElseAsUppercaseHex) {
  EXPECT_EQ(EncodePathName("a b"), "a%20b");
  EXPECT_EQ(EncodePathName("100%"), "100%25");
  EXPECT_EQ(EncodePathName("what?"), "what%3F");
  EXPECT_EQ(EncodePathName("#1"), "%231");
  EXPECT_EQ(EncodePathName("a+b"), "a%2Bb");
  EXPECT_EQ(EncodePathName("a/b"), "a%2Fb");
  EXPECT_EQ(EncodePathName("~"), "%7E");
  EXPECT_EQ(EncodePathName("é"), "%C3%A9");
  EXPECT_EQ(EncodePathName("日本"), "%E6%97%A5%E6%9C%AC");
  EXPECT_EQ(EncodePathName(std::string_view("\0\xff", 2)), "%00%FF");
}

TEST(EncodePathNameTest, RoundTrips) {
  std::vector<std::string> names = {
      "a b",  "100%",   "%25", "what?",  "#hash", "a+b",    "é",
      "日本", "x%zz y", "%%%", "a/b\\c", " ",     "\t\n\r", "..."};
  std::string every_byte;
  for (int c = 0; c < 256; ++c) every_byte.push_back(static_cast<char>(c));
  names.push_back(every_byte);
  for (const std::string& name : names) {
    EXPECT_EQ(DecodePathName(EncodePathName(name)), name) << name;
  }
}

TEST(DecodePathNameTest, LeavesWhatIsNotAnEscapeAlone) {
  EXPECT_EQ(DecodePathName("100%"), "100%");
  EXPECT_EQ(DecodePathName("%zz"), "%zz");
  EXPECT_EQ(DecodePathName("%4"), "%4");
  EXPECT_EQ(DecodePathName("50%-off"), "50%-off");
  EXPECT_EQ(DecodePathName("a+b"), "a+b");  // '+' is not a space in paths
}

TEST(DecodePathNameTest, DecodesEitherCase) {
  EXPECT_EQ(DecodePathName("%c3%a9"), "é");
  EXPECT_EQ(DecodePathName("%C3%A9"), "é");
  EXPECT_EQ(DecodePathName("a%20b%2fc"), "a b/c");
}

TEST(EncodeQueryValueTest, SameEscapingAsPaths) {
  EXPECT_EQ(EncodeQueryValue("a b&c=d+e/é"), "a%20b%26c%3Dd%2Be%2F%C3%A9");
  EXPECT_EQ(EncodeQueryValue("plain.value"), "plain.value");
}

// ---------------------------------------------------------------------------
// Base URL validation.

TEST(HttpClientCreateTest, RejectsInvalidBaseUrls) {
  for (const char* url :
       {"", "ftp://host/", "127.0.0.1:8080", "http://", "http:///path",
        "http://host/?q=1", "http://host/#frag", "file:///tmp/x",
        "http://ho st/", "http://host/\nx"}) {
    absl::StatusOr<std::unique_ptr<HttpClient>> client =
        HttpClient::Create(url);
    ASSERT_FALSE(client.ok()) << url;
    EXPECT_EQ(client.status().code(), absl::StatusCode::kInvalidArgument)
        << url;
    EXPECT_EQ(client.status().message().find('\n'), std::string::npos);
  }
}

TEST(HttpClientCreateTest, AddsTheTrailingSlash) {
  absl::StatusOr<std::unique_ptr<HttpClient>> client =
      HttpClient::Create("http://127.0.0.1:8080");
  ASSERT_TRUE(client.ok()) << client.status();
  EXPECT_EQ((*client)->base_url(), "http://127.0.0.1:8080/");

  client = HttpClient::Create("http://localhost/prefix/");
  ASSERT_TRUE(client.ok()) << client.status();
  EXPECT_EQ((*client)->base_url(), "http://localhost/prefix/");
}

// ---------------------------------------------------------------------------
// Requests against a tiny server on 127.0.0.1.

// What the echo route saw of one request.
struct Seen {
  std::string method;
  std::string target;  // as sent: encoded path and query
  std::string path;    // decoded by the server
  httplib::Params params;
  std::string body;
  bool has_content_length = false;
  std::string content_length;
  bool has_content_type = false;
  std::string content_type;
  bool has_expect = false;
};

std::string Pattern(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(i % 251);
  return s;
}

constexpr int kConcurrentThreads = 4;

class HttpClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Enough for every test's requests on one connection.
    server_.set_keep_alive_max_count(1000);
    // Bounds how long stopping waits for an idle connection.
    server_.set_keep_alive_timeout(2);
    // httplib writes headers and body apart: without this, Nagle and the
    // client's delayed ACK cost 40 ms per response (real servers set it).
    server_.set_tcp_nodelay(true);
    server_.set_pre_routing_handler(
        [this](const httplib::Request& req, httplib::Response&) {
          absl::MutexLock lock(&mu_);
          remote_ports_.insert(req.remote_port);
          return httplib::Server::HandlerResponse::Unhandled;
        });

    auto echo = [this](const httplib::Request& req, httplib::Response& res) {
      Seen seen;
      seen.method = req.method;
      seen.target = req.target;
      seen.path = req.path;
      seen.params = req.params;
      seen.body = req.body;
      seen.has_content_length = req.has_header("Content-Length");
      seen.content_length = req.get_header_value("Content-Length");
      seen.has_content_type = req.has_header("Content-Type");
      seen.content_type = req.get_header_value("Content-Type");
      seen.has_expect = req.has_header("Expect");
      {
        absl::MutexLock lock(&mu_);
        seen_.push_back(std::move(seen));
      }
      res.set_content("echoed " + req.method, "text/plain");
    };
    const char kEcho[] = R"((/prefix)?/echo[\s\S]*)";
    server_.Get(kEcho, echo);
    server_.Put(kEcho, echo);
    server_.Post(kEcho, echo);

    server_.Get(R"(/bytes/(\d+))",
                [](const httplib::Request& req, httplib::Response& res) {
                  size_t n = 0;
                  ASSERT_TRUE(absl::SimpleAtoi(req.matches[1].str(), &n));
                  res.set_content(Pattern(n), "application/octet-stream");
                });
    server_.Get(R"(/status/(\d+))", [](const httplib::Request& req,
                                       httplib::Response& res) {
      int status = 0;
      ASSERT_TRUE(absl::SimpleAtoi(req.matches[1].str(), &status));
      res.status = status;
      res.set_content(absl::StrCat("status ", status), "text/plain");
    });
    server_.Get("/big-error",
                [](const httplib::Request&, httplib::Response& res) {
                  res.status = 404;
                  res.set_content(std::string(100 << 10, 'e'), "text/plain");
                });
    // Answers only when the test ends (or after 5 s): past any client
    // timeout the tests set.
    server_.Get("/slow",
                [this](const httplib::Request&, httplib::Response& res) {
                  release_.WaitForNotificationWithTimeout(absl::Seconds(5));
                  res.set_content("late", "text/plain");
                });
    // Declares 100 bytes, sends 10, then gives up (the connection closes).
    server_.Get(
        "/truncated", [](const httplib::Request&, httplib::Response& res) {
          res.set_content_provider(100, "application/octet-stream",
                                   [](size_t, size_t, httplib::DataSink& sink) {
                                     sink.write("0123456789", 10);
                                     return false;
                                   });
        });
    // Answers 200 only once kConcurrentThreads requests are in it at once,
    // which a client that serialized its requests could never achieve.
    server_.Get("/barrier",
                [this](const httplib::Request&, httplib::Response& res) {
                  absl::MutexLock lock(&mu_);
                  ++in_barrier_;
                  auto all_arrived = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
                    return in_barrier_ >= kConcurrentThreads;
                  };
                  const bool met = mu_.AwaitWithTimeout(
                      absl::Condition(&all_arrived), absl::Seconds(5));
                  res.status = met ? 200 : 503;
                  res.set_content(met ? "together" : "alone", "text/plain");
                });

    port_ = server_.bind_to_any_port("127.0.0.1");
    ASSERT_GT(port_, 0);
    // The socket listens from here on: requests queue until the loop runs.
    listener_ = std::thread([this] { server_.listen_after_bind(); });
    // stop() is a no-op until the loop runs, so TearDown must not race it.
    const absl::Time deadline = absl::Now() + absl::Seconds(5);
    while (!server_.is_running() && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(1));
    }
    ASSERT_TRUE(server_.is_running());

    absl::StatusOr<std::unique_ptr<HttpClient>> client =
        HttpClient::Create(Url());
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = std::move(*client);
  }

  void TearDown() override {
    // Closing the client's connections first lets the server's keep-alive
    // loops end at once instead of waiting out their timeout.
    client_.reset();
    release_.Notify();
    server_.stop();
    if (listener_.joinable()) listener_.join();
  }

  std::string Url() const { return absl::StrCat("http://127.0.0.1:", port_); }

  std::unique_ptr<HttpClient> NewClient(HttpOptions options) {
    absl::StatusOr<std::unique_ptr<HttpClient>> client =
        HttpClient::Create(Url(), options);
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? std::move(*client) : nullptr;
  }

  std::vector<Seen> seen() {
    absl::MutexLock lock(&mu_);
    return seen_;
  }
  size_t connections() {
    absl::MutexLock lock(&mu_);
    return remote_ports_.size();
  }

  httplib::Server server_;
  int port_ = -1;
  std::thread listener_;
  absl::Notification release_;
  std::unique_ptr<HttpClient> client_;

  absl::Mutex mu_;
  std::vector<Seen> seen_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<int> remote_ports_ ABSL_GUARDED_BY(mu_);
  int in_barrier_ ABSL_GUARDED_BY(mu_) = 0;
};

TEST_F(HttpClientTest, GetSendsThePathRawAndTheQuery) {
  const std::string name = "a b?c#d/e%é";
  const std::string value = "x y&z=1+2/é";
  const std::string path = absl::StrCat(
      "echo/", EncodePathName(name), "?offset=3&v=", EncodeQueryValue(value));
  absl::StatusOr<HttpResponse> response = client_->Get(path);
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(response->body, "echoed GET");

  std::vector<Seen> all = seen();
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].method, "GET");
  EXPECT_EQ(all[0].target, "/" + path);
  EXPECT_EQ(all[0].path, "/echo/" + name);
  ASSERT_EQ(all[0].params.count("offset"), 1u);
  EXPECT_EQ(all[0].params.find("offset")->second, "3");
  ASSERT_EQ(all[0].params.count("v"), 1u);
  EXPECT_EQ(all[0].params.find("v")->second, value);
  EXPECT_EQ(all[0].body, "");
}

TEST_F(HttpClientTest, APinnedNameKeepsItsHostHeaderAndPort) {
  absl::StatusOr<std::unique_ptr<HttpClient>> client =
      HttpClient::Create(absl::StrCat("http://localhost:", port_, "/"));
  ASSERT_TRUE(client.ok()) << client.status();
  EXPECT_EQ((*client)->port(), port_);
  EXPECT_FALSE((*client)->https());
  ASSERT_TRUE((*client)->PinAddress().ok());
  absl::StatusOr<HttpResponse> response = (*client)->Get("echo/x");
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->status, 200);

  absl::StatusOr<std::unique_ptr<HttpClient>> default_port =
      HttpClient::Create("http://example.invalid/");
  ASSERT_TRUE(default_port.ok());
  EXPECT_EQ((*default_port)->port(), 80);
}

TEST_F(HttpClientTest, PutSendsItsBody) {
  const std::string body("put\0body\xff", 9);
  absl::StatusOr<HttpResponse> response =
      client_->Put("echo/p?kind=File", body);
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(response->body, "echoed PUT");

  std::vector<Seen> all = seen();
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].method, "PUT");
  EXPECT_EQ(all[0].target, "/echo/p?kind=File");
  EXPECT_EQ(all[0].body, body);
  EXPECT_EQ(all[0].content_length, "9");
  EXPECT_EQ(all[0].content_type, "application/octet-stream");
}

TEST_F(HttpClientTest, EmptyPutSendsContentLengthZero) {
  absl::StatusOr<HttpResponse> response = client_->Put("echo/sync");
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->status, 200);

  std::vector<Seen> all = seen();
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].method, "PUT");
  EXPECT_TRUE(all[0].has_content_length);
  EXPECT_EQ(all[0].content_length, "0");
  EXPECT_EQ(all[0].body, "");
  // Not announced as a form (curl's default for POSTFIELDS).
  EXPECT_FALSE(all[0].has_content_type) << all[0].content_type;
}

TEST_F(HttpClientTest, PostSendsBinaryBodyAndContentType) {
  const std::string body("\0\x01post\0\xfe", 8);
  absl::StatusOr<HttpResponse> response = client_->Post("echo/5", body);
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(response->body, "echoed POST");

  response =
      client_->Post("echo/attributes/5", R"({"size":0})", "application/json");
  ASSERT_TRUE(response.ok()) << response.status();

  std::vector<Seen> all = seen();
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].method, "POST");
  EXPECT_EQ(all[0].body, body);
  EXPECT_EQ(all[0].content_length, "8");
  EXPECT_EQ(all[0].content_type, "application/octet-stream");
  EXPECT_EQ(all[1].body, R"({"size":0})");
  EXPECT_EQ(all[1].content_type, "application/json");
}

TEST_F(HttpClientTest, LargePostSendsNoExpectHeader) {
  const std::string body = Pattern(2 << 20);
  absl::StatusOr<HttpResponse> response = client_->Post("echo/big", body);
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->status, 200);

  std::vector<Seen> all = seen();
  ASSERT_EQ(all.size(), 1u);
  EXPECT_FALSE(all[0].has_expect);
  EXPECT_EQ(all[0].body, body);
}

TEST_F(HttpClientTest, BaseUrlPathPrefixIsKept) {
  absl::StatusOr<std::unique_ptr<HttpClient>> client =
      HttpClient::Create(Url() + "/prefix");
  ASSERT_TRUE(client.ok()) << client.status();
  absl::StatusOr<HttpResponse> response = (*client)->Get("echo/x");
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->status, 200);
  std::vector<Seen> all = seen();
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].target, "/prefix/echo/x");
}

TEST_F(HttpClientTest, RefusesPathsThatAreNotEncodedOrRelative) {
  for (const char* path : {"", "/echo/x", "echo/a b", "echo/a\nb", "echo#x"}) {
    absl::StatusOr<HttpResponse> response = client_->Get(path);
    ASSERT_FALSE(response.ok()) << path;
    EXPECT_EQ(response.status().code(), absl::StatusCode::kInvalidArgument);
  }
  EXPECT_EQ(client_->requests(), 0u);
  EXPECT_TRUE(seen().empty());
}

TEST_F(HttpClientTest, ServerErrorsAreResponsesNotErrors) {
  for (int status : {400, 404, 500, 502}) {
    absl::StatusOr<HttpResponse> response =
        client_->Get(absl::StrCat("status/", status));
    ASSERT_TRUE(response.ok()) << response.status();
    EXPECT_EQ(response->status, status);
    EXPECT_EQ(response->body, absl::StrCat("status ", status));
  }
}

TEST_F(HttpClientTest, ReadIntoWritesIntoTheSpan) {
  std::vector<char> out(4096, 'x');
  absl::StatusOr<HttpResponse> response =
      client_->ReadInto("bytes/1000", absl::MakeSpan(out));
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(response->bytes, 1000u);
  EXPECT_EQ(response->body, "");
  EXPECT_EQ(std::string(out.data(), 1000), Pattern(1000));
  EXPECT_EQ(out[1000], 'x');  // nothing past the body
}

TEST_F(HttpClientTest, ReadIntoCapsAtTheSpanAndKeepsTheConnection) {
  std::vector<char> out(10, 'x');
  absl::StatusOr<HttpResponse> response =
      client_->ReadInto("bytes/300000", absl::MakeSpan(out));
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(response->bytes, 10u);
  EXPECT_EQ(std::string(out.data(), out.size()), Pattern(10));

  // The rest was read and discarded, so the connection serves the next.
  response = client_->Get("bytes/5");
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->body, Pattern(5));
  EXPECT_EQ(connections(), 1u);
}

TEST_F(HttpClientTest, ReadIntoPutsAnErrorBodyInTheResponse) {
  std::vector<char> out(16, 'x');
  absl::StatusOr<HttpResponse> response =
      client_->ReadInto("status/400", absl::MakeSpan(out));
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->status, 400);
  EXPECT_EQ(response->bytes, 0u);
  EXPECT_EQ(response->body, "status 400");
  EXPECT_EQ(std::string(out.data(), out.size()), std::string(16, 'x'));

  // A large one is capped at 64 KiB.
  response = client_->ReadInto("big-error", absl::MakeSpan(out));
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->status, 404);
  EXPECT_EQ(response->bytes, 0u);
  EXPECT_EQ(response->body, std::string(64 << 10, 'e'));
  EXPECT_EQ(std::string(out.data(), out.size()), std::string(16, 'x'));
}

TEST_F(HttpClientTest, SequentialRequestsReuseOneConnection) {
  for (int i = 0; i < 20; ++i) {
    absl::StatusOr<HttpResponse> response =
        client_->Get(absl::StrCat("bytes/", i));
    ASSERT_TRUE(response.ok()) << response.status();
    ASSERT_EQ(response->body, Pattern(i));
  }
  EXPECT_EQ(connections(), 1u);
  EXPECT_EQ(client_->requests(), 20u);
}

TEST_F(HttpClientTest, ConnectionRefusedIsUnavailableQuickly) {
  // A bound socket that does not listen: connecting to it is refused, and
  // no other test can take its port meanwhile.
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const int port = ntohs(addr.sin_port);

  absl::StatusOr<std::unique_ptr<HttpClient>> client =
      HttpClient::Create(absl::StrCat("http://127.0.0.1:", port));
  ASSERT_TRUE(client.ok()) << client.status();
  const absl::Time start = absl::Now();
  absl::StatusOr<HttpResponse> response = (*client)->Get("files/info/1");
  const absl::Duration elapsed = absl::Now() - start;
  close(fd);

  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(response.status().message().find("GET"), std::string::npos)
      << response.status();
  EXPECT_NE(response.status().message().find("files/info/1"), std::string::npos)
      << response.status();
  EXPECT_LT(elapsed, absl::Seconds(2));
}

TEST_F(HttpClientTest, TotalTimeoutIsDeadlineExceeded) {
  HttpOptions options;
  options.total_timeout = absl::Milliseconds(300);
  std::unique_ptr<HttpClient> client = NewClient(options);
  ASSERT_NE(client, nullptr);

  const absl::Time start = absl::Now();
  absl::StatusOr<HttpResponse> response = client->Get("slow");
  const absl::Duration elapsed = absl::Now() - start;
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_NE(response.status().message().find("slow"), std::string::npos)
      << response.status();
  EXPECT_GE(elapsed, absl::Milliseconds(250));
  EXPECT_LT(elapsed, absl::Seconds(3));

  // The handle that timed out is fine for the next request.
  response = client->Get("bytes/3");
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->body, Pattern(3));
}

TEST_F(HttpClientTest, TruncatedBodyIsDataLoss) {
  absl::StatusOr<HttpResponse> response = client_->Get("truncated");
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(response.status().message().find("truncated"), std::string::npos)
      << response.status();

  std::vector<char> out(200);
  response = client_->ReadInto("truncated", absl::MakeSpan(out));
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.status().code(), absl::StatusCode::kDataLoss);

  // The client recovers on a new connection.
  response = client_->Get("bytes/7");
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->body, Pattern(7));
}

TEST_F(HttpClientTest, ConcurrentRequestsFromManyThreads) {
  std::vector<absl::Status> results(kConcurrentThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kConcurrentThreads; ++t) {
    threads.emplace_back([this, t, &results] {
      auto run = [&]() -> absl::Status {
        absl::StatusOr<HttpResponse> response = client_->Get("barrier");
        if (!response.ok()) return response.status();
        if (response->status != 200) {
          return absl::InternalError(
              absl::StrCat("barrier: ", response->status, " ", response->body));
        }
        for (int i = 0; i < 10; ++i) {
          const size_t n = 1000 * t + i;
          response = client_->Get(absl::StrCat("bytes/", n));
          if (!response.ok()) return response.status();
          if (response->body != Pattern(n)) {
            return absl::InternalError(absl::StrCat("wrong body for ", n));
          }
          std::vector<char> out(n);
          response =
              client_->ReadInto(absl::StrCat("bytes/", n), absl::MakeSpan(out));
          if (!response.ok()) return response.status();
          if (response->bytes != n ||
              std::string(out.data(), out.size()) != Pattern(n)) {
            return absl::InternalError(absl::StrCat("wrong read for ", n));
          }
        }
        return absl::OkStatus();
      };
      results[t] = run();
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (int t = 0; t < kConcurrentThreads; ++t) {
    EXPECT_TRUE(results[t].ok()) << "thread " << t << ": " << results[t];
  }
  EXPECT_EQ(client_->requests(), kConcurrentThreads * 21u);
  // One connection per handle, and one handle per concurrent request.
  EXPECT_LE(connections(), static_cast<size_t>(kConcurrentThreads));
}

}  // namespace
}  // namespace memfuse::mirrord
