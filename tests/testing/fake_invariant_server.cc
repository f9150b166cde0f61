// FakeInvariantServer's front (see fake_invariant_server.h): construction,
// Start and Stop, the routing of every request to its endpoint (with the
// injected faults applied on the way) and the request counters. The
// endpoints are in fake_invariant_server_reads.cc and
// fake_invariant_server_changes.cc, the tree and its saves in
// fake_invariant_server_state.cc.
//
// Thread-safety: Start and Stop run on the test's thread (see the header);
// Handle runs on httplib's worker threads and takes mu_ only to count and
// to take a fault, never while an endpoint runs (each takes it itself).
#include "tests/testing/fake_invariant_server.h"

#include <httplib.h>

#include <algorithm>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "tests/testing/fake_invariant_server_internal.h"

namespace memfuse::testing {
namespace {

using fake_invariant_internal::EtagOf;
using fake_invariant_internal::kJsonType;
using fake_invariant_internal::kMaxFileSize;
using fake_invariant_internal::kNotFound;
using fake_invariant_internal::kTextType;
using fake_invariant_internal::NowMs;
using fake_invariant_internal::ParseId;

// Every method httplib parses is routed through Handle, so that counting
// and 404s are the fake's. The decoded path may hold any byte.
constexpr char kAnyPath[] = R"([\s\S]*)";

}  // namespace

FakeInvariantServer::FakeInvariantServer() : FakeInvariantServer(Options()) {}

FakeInvariantServer::FakeInvariantServer(Options options)
    : options_(std::move(options)), port_(options_.port) {
  absl::MutexLock lock(&mu_);
  auto root = std::make_unique<Node>();
  root->id = kRootNode;
  root->kind = InvariantKind::kDirectory;
  root->create_ms = root->modify_ms = NowMs();
  root->etag = EtagOf(InvariantKind::kDirectory, "");
  root->links = 1;
  nodes_.emplace(kRootNode, std::move(root));
  SnapshotLocked();
}

FakeInvariantServer::~FakeInvariantServer() { Stop(); }

absl::Status FakeInvariantServer::Start() {
  if (server_ != nullptr) {
    return absl::FailedPreconditionError("fake invariant server: running");
  }
  auto server = std::make_unique<httplib::Server>();
  // Every body is read through a content reader: that keeps httplib from
  // parsing an application/x-www-form-urlencoded body (libcurl's default
  // Content-Type for a POST) into the query parameters, and from refusing
  // one above 8 KiB. The real server takes the raw bytes, whatever the type.
  auto without_body = [this](const httplib::Request& req,
                             httplib::Response& res) { Handle(req, "", res); };
  auto with_body = [this](const httplib::Request& req, httplib::Response& res,
                          const httplib::ContentReader& reader) {
    if (req.is_multipart_form_data()) {
      res.status = 400;
      res.set_content("multipart/form-data is not supported by the fake",
                      kTextType);
      return;
    }
    std::string body;
    if (!reader([&body](const char* data, size_t n) {
          body.append(data, n);
          return true;
        })) {
      res.status = 400;  // a short body: nothing is performed
      return;
    }
    Handle(req, body, res);
  };
  server->Get(kAnyPath, without_body)
      .Post(kAnyPath, with_body)
      .Put(kAnyPath, with_body)
      .Patch(kAnyPath, with_body)
      .Delete(kAnyPath, with_body);
  // A request with neither Content-Length nor Transfer-Encoding has no body
  // (RFC 9112 6.3), and Node serves it; httplib would wait for EOF and
  // answer 400. libcurl sends a body-less PUT that way.
  server->set_pre_routing_handler(
      [this](const httplib::Request& req, httplib::Response& res) {
        if (req.has_header("Content-Length") ||
            req.has_header("Transfer-Encoding")) {
          return httplib::Server::HandlerResponse::Unhandled;
        }
        Handle(req, "", res);
        return httplib::Server::HandlerResponse::Handled;
      });
  // Like Node's http server: no Nagle delay between headers and body, and
  // no limit on the requests one connection may carry.
  server->set_tcp_nodelay(true);
  server->set_keep_alive_max_count(std::numeric_limits<int>::max());
  // Node streams a write's body with no limit; httplib has one (413).
  server->set_payload_max_length(kMaxFileSize);
  server->set_keep_alive_timeout(
      std::max<time_t>(1, absl::ToInt64Seconds(options_.keep_alive_timeout)));

  if (port_ == 0) {
    const int port = server->bind_to_any_port("127.0.0.1");
    if (port <= 0) {
      return absl::UnavailableError(
          "fake invariant server: cannot bind 127.0.0.1 to a free port");
    }
    port_ = port;
  } else if (!server->bind_to_port("127.0.0.1", port_)) {
    return absl::UnavailableError(
        absl::StrCat("fake invariant server: cannot bind 127.0.0.1:", port_));
  }

  httplib::Server* raw = server.get();
  server_ = std::move(server);
  listener_ = std::thread([raw] { raw->listen_after_bind(); });
  // The socket already accepts into its backlog, but httplib's stop() is a
  // no-op until the listen loop has started: wait for it.
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (!raw->is_running()) {
    if (absl::Now() > deadline) {
      Stop();
      return absl::DeadlineExceededError(
          "fake invariant server: listen loop did not start");
    }
    absl::SleepFor(absl::Milliseconds(1));
  }
  if (options_.save_interval > absl::ZeroDuration()) {
    {
      absl::MutexLock lock(&mu_);
      saver_quit_ = false;
    }
    saver_ = std::thread([this] { SaverLoop(); });
  }
  return absl::OkStatus();
}

void FakeInvariantServer::Stop() {
  if (server_ == nullptr) return;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    saver_quit_ = true;
  }
  if (saver_.joinable()) saver_.join();
  // stop() closes the listening socket; listen_after_bind() then waits for
  // the pool's workers, which finish their connections.
  server_->stop();
  listener_.join();
  server_.reset();
  absl::MutexLock lock(&mu_);
  stopping_ = false;
}

std::string FakeInvariantServer::base_url() const {
  return absl::StrCat("http://127.0.0.1:", port_);
}

void FakeInvariantServer::InjectFault(Fault fault) {
  absl::MutexLock lock(&mu_);
  if (fault.count > 0) faults_.push_back(std::move(fault));
}

void FakeInvariantServer::ClearFaults() {
  absl::MutexLock lock(&mu_);
  faults_.clear();
}

int FakeInvariantServer::PendingFaults() const {
  absl::MutexLock lock(&mu_);
  int n = 0;
  for (const Fault& f : faults_) n += f.count;
  return n;
}

int64_t FakeInvariantServer::RequestCount(absl::string_view route) const {
  absl::MutexLock lock(&mu_);
  auto it = request_counts_.find(route);
  return it == request_counts_.end() ? 0 : it->second;
}

int64_t FakeInvariantServer::TotalRequests() const {
  absl::MutexLock lock(&mu_);
  return total_requests_;
}

int64_t FakeInvariantServer::BytesWritten() const {
  absl::MutexLock lock(&mu_);
  return bytes_written_;
}

int64_t FakeInvariantServer::BytesRead() const {
  absl::MutexLock lock(&mu_);
  return bytes_read_;
}

int64_t FakeInvariantServer::SyncCount() const {
  absl::MutexLock lock(&mu_);
  return sync_count_;
}

int64_t FakeInvariantServer::SaveCount() const {
  absl::MutexLock lock(&mu_);
  return save_count_;
}

int64_t FakeInvariantServer::OverlappingUnsavedWrites() const {
  absl::MutexLock lock(&mu_);
  return overlapping_writes_;
}

void FakeInvariantServer::ResetCounters() {
  absl::MutexLock lock(&mu_);
  request_counts_.clear();
  total_requests_ = bytes_written_ = bytes_read_ = 0;
  sync_count_ = save_count_ = overlapping_writes_ = 0;
}

// ---------------------------------------------------------------------------
// Routing.

// "files/lookup/1/a%20b" -> kLookup, 1, "a%20b".
FakeInvariantServer::Route FakeInvariantServer::Classify(
    absl::string_view method, absl::string_view path) {
  Route route;
  std::vector<absl::string_view> s = absl::StrSplit(path, '/');
  if (s.empty() || s[0] != "files" || s.size() > 4) return route;
  if (std::any_of(s.begin(), s.end(),
                  [](absl::string_view seg) { return seg.empty(); })) {
    return route;
  }
  s.erase(s.begin());
  // Fills `route` when `id` (and the name, if any) are well formed.
  auto set = [&route](absl::string_view key, absl::string_view id,
                      absl::string_view name = {}) {
    std::optional<uint64_t> n = ParseId(id);
    if (!n) return;
    route.key = key;
    route.id = *n;
    route.name = std::string(name);
  };
  if (method == "GET" || method == "HEAD") {
    if (s.size() == 2 && s[0] == "info") set(kInfo, s[1]);
    if (s.size() == 2 && s[0] == "directory") set(kList, s[1]);
    if (s.size() == 3 && s[0] == "lookup") set(kLookup, s[1], s[2]);
    if (s.size() == 1) set(kRead, s[0]);
  } else if (method == "POST") {
    if (s.size() == 2 && s[0] == "attributes") set(kSetAttributes, s[1]);
    if (s.size() == 3 && s[0] == "remove") set(kRemove, s[1], s[2]);
    if (s.size() == 1) set(kWrite, s[0]);
  } else if (method == "PUT") {
    if (s.size() == 2 && s[0] == "size") set(kSetSize, s[1]);
    // `files/rename/{node}` (two segments) is deliberately no route.
    if (s.size() == 3 && s[0] == "rename") set(kRename, s[1], s[2]);
    if (s.size() == 3 && s[0] == "link") set(kLink, s[1], s[2]);
    if (s.size() == 1 && s[0] == "sync") route.key = kSync;
    if (s.size() == 2 && ParseId(s[0])) set(kCreate, s[0], s[1]);
  }
  return route;
}

void FakeInvariantServer::Handle(const httplib::Request& req,
                                 const std::string& body,
                                 httplib::Response& res) {
  // req.path is percent-decoded by httplib; the real server splits the raw
  // path, so route on the request target as it came in the request line.
  absl::string_view path = req.target;
  path = path.substr(0, path.find('?'));
  absl::ConsumePrefix(&path, "/");
  const Route route = Classify(req.method, path);

  std::optional<Fault> fault;
  {
    absl::MutexLock lock(&mu_);
    ++total_requests_;
    ++request_counts_[route.key];
    fault = TakeFaultLocked(absl::StrCat(req.method, " ", path));
  }

  if (fault) {
    switch (fault->kind) {
      case Fault::Kind::kServerError:
        res.status = 500;
        res.set_content("Injected server error", kTextType);
        return;
      case Fault::Kind::kMalformedJson:
        res.status = 200;
        res.set_content(R"({"node": 1, "kind": "Dir)", kJsonType);
        return;
      case Fault::Kind::kDelay: {
        absl::MutexLock lock(&mu_);
        if (mu_.AwaitWithTimeout(absl::Condition(&stopping_), fault->delay)) {
          res.status = 503;
          res.set_content("Server stopping", kTextType);
          return;
        }
        break;
      }
      case Fault::Kind::kTruncatedBody:
        break;
    }
  }

  Reply reply = Dispatch(route, req, body);
  res.status = reply.status;
  if (fault && fault->kind == Fault::Kind::kTruncatedBody) {
    // Announce at least one byte more than is sent; returning false from
    // the provider makes httplib drop the connection.
    const size_t announced = std::max<size_t>(reply.body.size(), 1);
    std::string sent = reply.body.substr(0, reply.body.size() / 2);
    res.set_content_provider(announced, reply.content_type,
                             [sent](size_t, size_t, httplib::DataSink& sink) {
                               if (!sent.empty())
                                 sink.write(sent.data(), sent.size());
                               return false;
                             });
    return;
  }
  res.set_content(std::move(reply.body), reply.content_type);
}

std::optional<Fault> FakeInvariantServer::TakeFaultLocked(
    absl::string_view key) {
  for (auto it = faults_.begin(); it != faults_.end(); ++it) {
    if (!absl::StartsWith(key, it->route_prefix)) continue;
    Fault taken = *it;
    if (--it->count <= 0) faults_.erase(it);
    return taken;
  }
  return std::nullopt;
}

FakeInvariantServer::Reply FakeInvariantServer::Dispatch(
    const Route& route, const httplib::Request& req, const std::string& body) {
  const absl::string_view k = route.key;
  if (k == kInfo) return Info(route.id);
  if (k == kList) return List(route.id);
  if (k == kLookup) return Lookup(route.id, route.name);
  if (k == kRead) return Read(route.id, req);
  if (k == kWrite) return Write(route.id, req, body);
  if (k == kCreate) return Create(route.id, route.name, req);
  if (k == kSetAttributes) return SetAttributes(route.id, body);
  if (k == kSetSize) return SetSize(route.id, req);
  if (k == kRemove) return Remove(route.id, route.name);
  if (k == kRename) return Rename(route.id, route.name, req);
  if (k == kLink) return Link(route.id, route.name, req);
  if (k == kSync) return Sync();
  return Reply::Text(404, kNotFound);
}

}  // namespace memfuse::testing
