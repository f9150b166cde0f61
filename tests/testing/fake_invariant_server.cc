#include "tests/testing/fake_invariant_server.h"

#include <httplib.h>

#include <algorithm>
#include <chrono>
#include <iterator>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"

namespace memfuse::testing {
namespace {

using Json = nlohmann::ordered_json;

constexpr char kJsonType[] = "application/json; charset=utf-8";
constexpr char kTextType[] = "text/plain; charset=utf-8";
constexpr char kBytesType[] = "application/octet-stream";

constexpr char kUnrecognizedNode[] = "Unrecognized node";
constexpr char kNotFound[] = "Not Found";
constexpr char kBadNumber[] = "Expected a non-negative number";

// Files are kept in memory: a write or size far beyond anything a test
// needs is refused rather than allocated.
constexpr uint64_t kMaxFileSize = uint64_t{1} << 34;

// Every method httplib parses is routed through Handle, so that counting
// and 404s are the fake's. The decoded path may hold any byte.
constexpr char kAnyPath[] = R"([\s\S]*)";

int64_t NowMs() { return absl::ToUnixMillis(absl::Now()); }

// An id in a URL path: decimal digits only.
std::optional<uint64_t> ParseId(absl::string_view s) {
  uint64_t id = 0;
  if (s.empty() || s.size() > 19 ||
      !std::all_of(s.begin(), s.end(), absl::ascii_isdigit) ||
      !absl::SimpleAtoi(s, &id)) {
    return std::nullopt;
  }
  return id;
}

// A non-negative integer query value, like the real server's parseInt:
// absent or empty is nullopt, anything else must be a number.
struct QueryNumber {
  bool ok = true;
  std::optional<uint64_t> value;
};
QueryNumber QueryUint(const httplib::Request& req, const char* key) {
  if (!req.has_param(key)) return {};
  const std::string v = req.get_param_value(key);
  if (v.empty()) return {};
  std::optional<uint64_t> n = ParseId(v);
  if (!n) return {false, std::nullopt};
  return {true, n};
}

std::string QueryString(const httplib::Request& req, const char* key) {
  return req.has_param(key) ? req.get_param_value(key) : std::string();
}

// 64-bit FNV-1a: stable across runs, unlike absl::Hash.
uint64_t Fnv1a(absl::string_view s, uint64_t h = 14695981039346656037ull) {
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

std::string Dump(const Json& j) {
  // Names are whatever bytes came in a URL path: never throw on bad UTF-8.
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

// File contents in chunks that a copy shares: saving copies a tree of
// pointers, and a write then copies only the chunks it changes that the
// saved tree still holds. Each chunk's hash is kept until the chunk
// changes, so a save hashes only what was written since the last one.
// Not thread-safe: the server's mutex guards every Bytes.
class Bytes {
 public:
  uint64_t size() const { return size_; }

  // Up to `length` bytes from `offset`, fewer at the end.
  std::string Read(uint64_t offset, uint64_t length) const {
    std::string out;
    if (offset >= size_) return out;
    length = std::min(length, size_ - offset);
    out.reserve(length);
    while (length > 0) {
      const Chunk& chunk = *chunks_[offset / kChunk];
      const uint64_t in = offset % kChunk;
      const uint64_t n = std::min<uint64_t>(length, kChunk - in);
      out.append(chunk.bytes, in, n);
      offset += n;
      length -= n;
    }
    return out;
  }

  // A gap between the end and `offset` reads as zeros.
  void Write(uint64_t offset, absl::string_view data) {
    if (data.empty()) return;
    if (size_ < offset + data.size()) Resize(offset + data.size());
    while (!data.empty()) {
      std::string& bytes = MutableChunk(offset / kChunk);
      const uint64_t in = offset % kChunk;
      const uint64_t n = std::min<uint64_t>(data.size(), kChunk - in);
      bytes.replace(in, n, data.data(), n);
      offset += n;
      data.remove_prefix(n);
    }
  }

  // Truncates, or extends with zeros.
  void Resize(uint64_t size) {
    if (size == size_) return;
    const size_t count = (size + kChunk - 1) / kChunk;
    // The last chunk kept changes length when it is cut or, being the old
    // last one, when the file grows past it.
    const size_t last_kept = std::min(count, chunks_.size());
    chunks_.resize(count);
    for (size_t i = 0; i < count; ++i) {
      const uint64_t want = std::min<uint64_t>(kChunk, size - i * kChunk);
      if (i + 1 >= last_kept &&
          (chunks_[i] == nullptr || chunks_[i]->bytes.size() != want)) {
        if (chunks_[i] == nullptr) chunks_[i] = std::make_shared<Chunk>();
        MutableChunk(i).resize(want, '\0');
      }
    }
    size_ = size;
  }

  // A hash of the contents, after `seed`; stable across runs.
  uint64_t Hash(uint64_t seed) const;

 private:
  static constexpr uint64_t kChunk = 256 << 10;

  struct Chunk {
    std::string bytes;
    // Of `bytes`, once computed.
    mutable std::optional<uint64_t> hash;
  };

  // Chunk i, copied first if a copy of this Bytes shares it.
  std::string& MutableChunk(size_t i) {
    std::shared_ptr<Chunk>& chunk = chunks_[i];
    if (chunk.use_count() > 1) chunk = std::make_shared<Chunk>(*chunk);
    chunk->hash.reset();
    return chunk->bytes;
  }

  // Every chunk but the last holds kChunk bytes; none is empty.
  std::vector<std::shared_ptr<Chunk>> chunks_;
  uint64_t size_ = 0;
};

uint64_t Bytes::Hash(uint64_t seed) const {
  uint64_t h = seed;
  for (const std::shared_ptr<Chunk>& chunk : chunks_) {
    if (!chunk->hash) chunk->hash = Fnv1a(chunk->bytes);
    const uint64_t part = *chunk->hash;
    h = Fnv1a(
        absl::string_view(reinterpret_cast<const char*>(&part), sizeof part),
        h);
  }
  return h;
}

}  // namespace

absl::string_view InvariantKindName(InvariantKind kind) {
  switch (kind) {
    case InvariantKind::kFile:
      return "File";
    case InvariantKind::kDirectory:
      return "Directory";
    case InvariantKind::kSymbolicLink:
      return "SymbolicLink";
  }
  return "File";
}

std::optional<InvariantKind> ParseInvariantKind(absl::string_view name) {
  for (InvariantKind kind : {InvariantKind::kFile, InvariantKind::kDirectory,
                             InvariantKind::kSymbolicLink}) {
    if (name == InvariantKindName(kind)) return kind;
  }
  return std::nullopt;
}

struct FakeInvariantServer::Node {
  uint64_t id = 0;
  InvariantKind kind = InvariantKind::kFile;
  int64_t create_ms = 0;
  int64_t modify_ms = 0;
  bool executable = false;
  bool writable = true;
  // Files.
  Bytes data;
  // Symbolic links.
  std::string target;
  // Directories: name -> node id.
  std::map<std::string, uint64_t> entries;
  // The etag as of the last save (sync), as the real server reports it.
  std::string etag;
  // Directory entries naming this node (the root has one of its own).
  int links = 0;
};

struct FakeInvariantServer::Reply {
  int status = 200;
  std::string body;
  std::string content_type = kTextType;

  static Reply Json(const nlohmann::ordered_json& j) {
    return {200, Dump(j), kJsonType};
  }
  static Reply Text(int status, std::string body) {
    return {status, std::move(body), kTextType};
  }
  static Reply Empty() { return {200, "", kTextType}; }
};

struct FakeInvariantServer::Route {
  // One of the counter keys, kNoRoute included.
  absl::string_view key = kNoRoute;
  uint64_t id = 0;
  // Exactly the bytes of the path segment: never percent-decoded.
  std::string name;
};

namespace {

std::string EtagOf(InvariantKind kind, absl::string_view content) {
  return absl::StrCat(absl::Hex(Fnv1a(content, Fnv1a(InvariantKindName(kind))),
                                absl::kZeroPad16));
}

std::string EtagOf(const Bytes& content) {
  return absl::StrCat(
      absl::Hex(content.Hash(Fnv1a(InvariantKindName(InvariantKind::kFile))),
                absl::kZeroPad16));
}

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

void FakeInvariantServer::Restart() {
  absl::MutexLock lock(&mu_);
  // What was not saved is lost, the ids go with it; the counter of ids goes
  // on from the live tree's, so that no old id names a node again.
  nodes_.clear();
  nodes_.reserve(saved_.size());
  for (const auto& [id, node] : saved_) {
    nodes_.emplace(id, std::make_unique<Node>(*node));
  }
  unsaved_writes_.clear();
  unsaved_changes_ = 0;
  RenumberLocked();
  // The server has just loaded this tree: it is what a restart now would
  // start from, under the new ids.
  SnapshotLocked();
}

void FakeInvariantServer::Save() {
  absl::MutexLock lock(&mu_);
  SaveLocked();
}

void FakeInvariantServer::SaverLoop() {
  absl::MutexLock lock(&mu_);
  absl::Time next = absl::Now() + options_.save_interval;
  while (!mu_.AwaitWithDeadline(absl::Condition(&saver_quit_), next)) {
    // An idle server has nothing to save; the real one writes nothing then
    // either, and SaveCount stays meaningful.
    if (unsaved_changes_ > 0) SaveLocked();
    next = std::max(next + options_.save_interval, absl::Now());
  }
}

absl::Status FakeInvariantServer::Restart(absl::Duration down) {
  Stop();
  Restart();
  // The downtime itself is what is simulated here.
  absl::SleepFor(down);
  return Start();
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

int64_t FakeInvariantServer::UnsavedChanges() const {
  absl::MutexLock lock(&mu_);
  return unsaved_changes_;
}

size_t FakeInvariantServer::NodeCount() const {
  absl::MutexLock lock(&mu_);
  return nodes_.size();
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

// ---------------------------------------------------------------------------
// The tree.

FakeInvariantServer::Node* FakeInvariantServer::FindLocked(uint64_t id) {
  auto it = nodes_.find(id);
  return it == nodes_.end() ? nullptr : it->second.get();
}

FakeInvariantServer::Node* FakeInvariantServer::DirectoryLocked(uint64_t id,
                                                                bool to_change,
                                                                Reply* error) {
  Node* node = FindLocked(id);
  if (node == nullptr) {
    *error = Reply::Text(400, kUnrecognizedNode);
  } else if (node->kind != InvariantKind::kDirectory) {
    *error = Reply::Text(400, "Node is not a directory");
  } else if (to_change && !node->writable) {
    *error = Reply::Text(400, "Node is not writable");
  } else {
    return node;
  }
  return nullptr;
}

FakeInvariantServer::Node* FakeInvariantServer::FileLocked(uint64_t id,
                                                           bool to_change,
                                                           Reply* error) {
  Node* node = FindLocked(id);
  if (node == nullptr) {
    *error = Reply::Text(400, kUnrecognizedNode);
  } else if (node->kind != InvariantKind::kFile) {
    *error = Reply::Text(400, "Node is not a file");
  } else if (to_change && !node->writable) {
    *error = Reply::Text(400, "Node is not writable");
  } else {
    return node;
  }
  return nullptr;
}

uint64_t FakeInvariantServer::NewNodeLocked(InvariantKind kind) {
  auto node = std::make_unique<Node>();
  node->id = next_id_++;
  node->kind = kind;
  node->create_ms = node->modify_ms = NowMs();
  node->etag = EtagOf(kind, "");
  const uint64_t id = node->id;
  nodes_.emplace(id, std::move(node));
  return id;
}

void FakeInvariantServer::UnlinkLocked(uint64_t id) {
  std::vector<uint64_t> pending = {id};
  while (!pending.empty()) {
    const uint64_t n = pending.back();
    pending.pop_back();
    auto it = nodes_.find(n);
    if (it == nodes_.end()) continue;
    if (--it->second->links > 0) continue;
    for (const auto& [name, child] : it->second->entries) {
      pending.push_back(child);
    }
    unsaved_writes_.erase(n);
    nodes_.erase(it);
  }
}

bool FakeInvariantServer::ContainsLocked(uint64_t dir, uint64_t node) {
  std::vector<uint64_t> pending = {dir};
  while (!pending.empty()) {
    const uint64_t n = pending.back();
    pending.pop_back();
    if (n == node) return true;
    if (const Node* d = FindLocked(n); d != nullptr) {
      for (const auto& [name, child] : d->entries) pending.push_back(child);
    }
  }
  return false;
}

nlohmann::ordered_json FakeInvariantServer::InfoJsonLocked(
    const Node& node) const {
  Json j;
  j["node"] = node.id;
  j["kind"] = std::string(InvariantKindName(node.kind));
  j["modifyTime"] = node.modify_ms;
  j["createTime"] = node.create_ms;
  j["executable"] = node.executable;
  j["writable"] = node.writable;
  j["etag"] = node.etag;
  if (node.kind == InvariantKind::kSymbolicLink) {
    j["target"] = node.target;
  } else {
    j["size"] = node.kind == InvariantKind::kFile ? node.data.size() : 0;
  }
  return j;
}

void FakeInvariantServer::SaveLocked() {
  // Post-order from the root: a directory's etag covers its entries' names
  // and etags. Hard-linked nodes are computed once.
  absl::flat_hash_set<uint64_t> done;
  std::vector<std::pair<uint64_t, bool>> stack = {{kRootNode, false}};
  while (!stack.empty()) {
    auto [id, children_done] = stack.back();
    stack.pop_back();
    Node* node = FindLocked(id);
    if (node == nullptr || done.contains(id)) continue;
    if (node->kind == InvariantKind::kFile) {
      node->etag = EtagOf(node->data);
      done.insert(id);
    } else if (node->kind == InvariantKind::kSymbolicLink) {
      node->etag = EtagOf(node->kind, node->target);
      done.insert(id);
    } else if (!children_done) {
      stack.push_back({id, true});
      for (const auto& [name, child] : node->entries) {
        stack.push_back({child, false});
      }
    } else {
      std::string listing;
      for (const auto& [name, child] : node->entries) {
        const Node* c = FindLocked(child);
        absl::StrAppend(&listing, name, "\n", c != nullptr ? c->etag : "",
                        "\n");
      }
      node->etag = EtagOf(node->kind, listing);
      done.insert(id);
    }
  }
  SnapshotLocked();
  unsaved_writes_.clear();
  unsaved_changes_ = 0;
  ++save_count_;
}

void FakeInvariantServer::SnapshotLocked() {
  saved_.clear();
  saved_.reserve(nodes_.size());
  for (const auto& [id, node] : nodes_) {
    saved_.emplace(id, std::make_unique<Node>(*node));
  }
}

void FakeInvariantServer::ChangedLocked() { ++unsaved_changes_; }

std::vector<std::pair<uint64_t, uint64_t>> FakeInvariantServer::NoteWriteLocked(
    uint64_t file, uint64_t offset, uint64_t length) {
  std::vector<std::pair<uint64_t, uint64_t>> overlaps;
  if (length == 0) return overlaps;
  uint64_t start = offset;
  uint64_t end = offset + length;
  std::map<uint64_t, uint64_t>& ranges = unsaved_writes_[file];
  // The first range that may touch [start, end): the one starting at or
  // before `start`, if it reaches it.
  auto it = ranges.upper_bound(start);
  if (it != ranges.begin() && std::prev(it)->second >= start) --it;
  // Merge every range that overlaps or touches [start, end) into it,
  // noting the overlapping parts.
  while (it != ranges.end() && it->first <= end) {
    const uint64_t overlap_start = std::max(it->first, offset);
    const uint64_t overlap_end = std::min(it->second, offset + length);
    if (overlap_start < overlap_end) {
      overlaps.emplace_back(overlap_start, overlap_end);
    }
    start = std::min(start, it->first);
    end = std::max(end, it->second);
    it = ranges.erase(it);
  }
  ranges.emplace(start, end);
  if (!overlaps.empty()) ++overlapping_writes_;
  return overlaps;
}

void FakeInvariantServer::ClipWritesLocked(uint64_t file, uint64_t size) {
  auto found = unsaved_writes_.find(file);
  if (found == unsaved_writes_.end()) return;
  std::map<uint64_t, uint64_t>& ranges = found->second;
  ranges.erase(ranges.lower_bound(size), ranges.end());
  if (!ranges.empty() && ranges.rbegin()->second > size) {
    ranges.rbegin()->second = size;
  }
}

void FakeInvariantServer::RenumberLocked() {
  // New ids from a counter well above every old one (a restarted server
  // counts from 1 again; this makes every old id unknown rather than
  // naming some other node), assigned in walk order.
  const uint64_t kStep = 1'000'000;
  uint64_t next = (next_id_ / kStep + 1) * kStep;
  absl::flat_hash_map<uint64_t, uint64_t> renamed = {{kRootNode, kRootNode}};
  std::vector<uint64_t> pending = {kRootNode};
  while (!pending.empty()) {
    const uint64_t id = pending.back();
    pending.pop_back();
    const Node* node = FindLocked(id);
    for (auto it = node->entries.rbegin(); it != node->entries.rend(); ++it) {
      if (renamed.emplace(it->second, next).second) {
        ++next;
        pending.push_back(it->second);
      }
    }
  }
  absl::flat_hash_map<uint64_t, std::unique_ptr<Node>> nodes;
  for (auto& [old_id, node] : nodes_) {
    auto it = renamed.find(old_id);
    if (it == renamed.end()) continue;  // unreachable: dropped
    node->id = it->second;
    for (auto& [name, child] : node->entries) child = renamed.at(child);
    nodes.emplace(node->id, std::move(node));
  }
  nodes_ = std::move(nodes);
  next_id_ = next;
}

// ---------------------------------------------------------------------------
// Endpoints.

FakeInvariantServer::Reply FakeInvariantServer::Info(uint64_t id) {
  absl::MutexLock lock(&mu_);
  const Node* node = FindLocked(id);
  if (node == nullptr) return Reply::Text(400, kUnrecognizedNode);
  return Reply::Json(InfoJsonLocked(*node));
}

FakeInvariantServer::Reply FakeInvariantServer::List(uint64_t id) {
  absl::MutexLock lock(&mu_);
  Reply error;
  const Node* dir = DirectoryLocked(id, false, &error);
  if (dir == nullptr) return error;
  Json entries = Json::array();
  for (const auto& [name, child] : dir->entries) {
    Json entry;
    entry["name"] = name;
    entry["info"] = InfoJsonLocked(*FindLocked(child));
    entries.push_back(std::move(entry));
  }
  return Reply::Json(entries);
}

FakeInvariantServer::Reply FakeInvariantServer::Lookup(
    uint64_t parent, const std::string& name) {
  absl::MutexLock lock(&mu_);
  Reply error;
  const Node* dir = DirectoryLocked(parent, false, &error);
  if (dir == nullptr) return error;
  auto it = dir->entries.find(name);
  if (it == dir->entries.end()) return Reply::Text(404, kNotFound);
  return Reply::Json(InfoJsonLocked(*FindLocked(it->second)));
}

FakeInvariantServer::Reply FakeInvariantServer::Read(
    uint64_t id, const httplib::Request& req) {
  const QueryNumber offset = QueryUint(req, "offset");
  const QueryNumber length = QueryUint(req, "length");
  if (!offset.ok || !length.ok) return Reply::Text(400, kBadNumber);
  absl::MutexLock lock(&mu_);
  Reply error;
  const Node* file = FileLocked(id, false, &error);
  if (file == nullptr) return error;
  const uint64_t size = file->data.size();
  const uint64_t start = std::min(offset.value.value_or(0), size);
  const uint64_t count =
      std::min(length.value.value_or(size - start), size - start);
  bytes_read_ += count;
  return {200, file->data.Read(start, count), kBytesType};
}

FakeInvariantServer::Reply FakeInvariantServer::Write(
    uint64_t id, const httplib::Request& req, const std::string& body) {
  const QueryNumber offset = QueryUint(req, "offset");
  if (!offset.ok) return Reply::Text(400, kBadNumber);
  // No offset writes at 0: it does not append.
  const uint64_t at = offset.value.value_or(0);
  absl::MutexLock lock(&mu_);
  Reply error;
  Node* file = FileLocked(id, true, &error);
  if (file == nullptr) return error;
  if (at > kMaxFileSize || body.size() > kMaxFileSize - at) {
    return Reply::Text(400, "File too large for the fake server");
  }
  const std::vector<std::pair<uint64_t, uint64_t>> overlaps =
      NoteWriteLocked(id, at, body.size());
  // The older bytes of the overlapping parts, to put back after the write.
  std::vector<std::string> older;
  if (options_.scramble_overlaps) {
    for (const auto& [start, end] : overlaps) {
      older.push_back(file->data.Read(start, end - start));
    }
  }
  // A gap between the end of the file and `at` reads as zeros.
  file->data.Write(at, body);
  for (size_t i = 0; i < older.size(); ++i) {
    file->data.Write(overlaps[i].first, older[i]);
  }
  file->modify_ms = NowMs();
  bytes_written_ += body.size();
  ChangedLocked();
  return Reply::Json(body.size());
}

FakeInvariantServer::Reply FakeInvariantServer::Create(
    uint64_t parent, const std::string& name, const httplib::Request& req) {
  const std::string kind_name = QueryString(req, "kind");
  std::optional<InvariantKind> kind =
      kind_name.empty() ? InvariantKind::kFile : ParseInvariantKind(kind_name);
  if (!kind) return Reply::Text(400, "Expected a content kind");
  const std::string target = QueryString(req, "target");
  if (*kind == InvariantKind::kSymbolicLink && target.empty()) {
    return Reply::Text(400, "Expected a target");
  }
  absl::MutexLock lock(&mu_);
  Reply error;
  Node* dir = DirectoryLocked(parent, true, &error);
  if (dir == nullptr) return error;
  // An existing name is replaced, whatever it was (a non-empty directory
  // included): the real server does not protect POSIX semantics.
  if (auto it = dir->entries.find(name); it != dir->entries.end()) {
    const uint64_t old = it->second;
    dir->entries.erase(it);
    UnlinkLocked(old);
  }
  const uint64_t id = NewNodeLocked(*kind);
  Node* node = FindLocked(id);
  node->links = 1;
  if (*kind == InvariantKind::kSymbolicLink) {
    node->target = target;
    node->etag = EtagOf(*kind, target);
  }
  dir->entries.emplace(name, id);
  dir->modify_ms = NowMs();
  ChangedLocked();
  return Reply::Json(InfoJsonLocked(*node));
}

FakeInvariantServer::Reply FakeInvariantServer::SetAttributes(
    uint64_t id, const std::string& body) {
  const Json attributes =
      Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (attributes.is_discarded() || !attributes.is_object()) {
    return Reply::Text(400, "Expected entry attributes");
  }
  auto flag = [&](const char* key, std::optional<bool>* out) {
    auto it = attributes.find(key);
    if (it == attributes.end()) return true;
    if (!it->is_boolean()) return false;
    *out = it->get<bool>();
    return true;
  };
  auto number = [&](const char* key, std::optional<uint64_t>* out) {
    auto it = attributes.find(key);
    if (it == attributes.end()) return true;
    if (!it->is_number_unsigned()) return false;
    *out = it->get<uint64_t>();
    return true;
  };
  std::optional<bool> executable, writable;
  std::optional<uint64_t> modify_time, create_time, size;
  if (!flag("executable", &executable) || !flag("writable", &writable) ||
      !number("modifyTime", &modify_time) ||
      !number("createTime", &create_time) || !number("size", &size)) {
    return Reply::Text(400, "Expected entry attributes");
  }
  // `type` (a MIME type) is accepted and, as content info does not carry
  // it, not kept.
  if (auto it = attributes.find("type");
      it != attributes.end() && !it->is_string() && !it->is_null()) {
    return Reply::Text(400, "Expected entry attributes");
  }

  absl::MutexLock lock(&mu_);
  if (id == kRootNode) {
    return Reply::Text(400, "Cannot set the attributes of the root");
  }
  Node* node = FindLocked(id);
  if (node == nullptr) return Reply::Text(400, kUnrecognizedNode);
  if (size) {
    if (node->kind != InvariantKind::kFile) {
      return Reply::Text(400, "Node is not a file");
    }
    if (!writable.value_or(node->writable)) {
      return Reply::Text(400, "Node is not writable");
    }
    if (*size > kMaxFileSize) {
      return Reply::Text(400, "File too large for the fake server");
    }
  }
  if (executable) node->executable = *executable;
  if (writable) node->writable = *writable;
  if (size) {
    node->data.Resize(*size);
    ClipWritesLocked(id, *size);
    node->modify_ms = NowMs();
  }
  if (modify_time) node->modify_ms = static_cast<int64_t>(*modify_time);
  if (create_time) node->create_ms = static_cast<int64_t>(*create_time);
  ChangedLocked();
  return Reply::Json(InfoJsonLocked(*node));
}

FakeInvariantServer::Reply FakeInvariantServer::SetSize(
    uint64_t id, const httplib::Request& req) {
  const QueryNumber size = QueryUint(req, "size");
  if (!size.ok || !size.value) return Reply::Text(400, kBadNumber);
  absl::MutexLock lock(&mu_);
  Reply error;
  Node* file = FileLocked(id, true, &error);
  if (file == nullptr) return error;
  if (*size.value > kMaxFileSize) {
    return Reply::Text(400, "File too large for the fake server");
  }
  file->data.Resize(*size.value);
  ClipWritesLocked(id, *size.value);
  file->modify_ms = NowMs();
  ChangedLocked();
  return Reply::Json(InfoJsonLocked(*file));
}

FakeInvariantServer::Reply FakeInvariantServer::Remove(
    uint64_t parent, const std::string& name) {
  absl::MutexLock lock(&mu_);
  Reply error;
  Node* dir = DirectoryLocked(parent, true, &error);
  if (dir == nullptr) return error;
  auto it = dir->entries.find(name);
  if (it == dir->entries.end()) return Reply::Json(false);
  const uint64_t id = it->second;
  dir->entries.erase(it);
  dir->modify_ms = NowMs();
  // A directory goes with everything below it.
  UnlinkLocked(id);
  ChangedLocked();
  return Reply::Json(true);
}

FakeInvariantServer::Reply FakeInvariantServer::Rename(
    uint64_t parent, const std::string& name, const httplib::Request& req) {
  const QueryNumber new_parent = QueryUint(req, "newParent");
  if (!new_parent.ok) return Reply::Text(400, kBadNumber);
  const std::string new_name = QueryString(req, "newName");
  if (!new_parent.value || new_name.empty()) {
    return Reply::Text(404, kNotFound);
  }
  absl::MutexLock lock(&mu_);
  Reply error;
  Node* from = DirectoryLocked(parent, true, &error);
  if (from == nullptr) return error;
  Node* to = DirectoryLocked(*new_parent.value, true, &error);
  if (to == nullptr) return error;
  auto it = from->entries.find(name);
  if (it == from->entries.end()) return Reply::Text(404, kNotFound);
  const uint64_t id = it->second;
  if (from == to && name == new_name) return Reply::Empty();
  if (FindLocked(id)->kind == InvariantKind::kDirectory &&
      ContainsLocked(id, to->id)) {
    return Reply::Text(400, "Cannot move a directory below itself");
  }
  const int64_t now = NowMs();
  from->modify_ms = to->modify_ms = now;
  // Detach the source first: replacing the target must not take the moved
  // node with it (renaming a/x/y onto a/x).
  from->entries.erase(it);
  if (auto old = to->entries.find(new_name); old != to->entries.end()) {
    const uint64_t replaced = old->second;
    to->entries.erase(old);
    UnlinkLocked(replaced);
  }
  to->entries.emplace(new_name, id);
  ChangedLocked();
  return Reply::Empty();
}

FakeInvariantServer::Reply FakeInvariantServer::Link(
    uint64_t parent, const std::string& name, const httplib::Request& req) {
  const QueryNumber target = QueryUint(req, "node");
  if (!target.ok) return Reply::Text(400, kBadNumber);
  if (!target.value) return Reply::Text(404, kNotFound);
  absl::MutexLock lock(&mu_);
  Reply error;
  Node* dir = DirectoryLocked(parent, true, &error);
  if (dir == nullptr) return error;
  Node* node = FindLocked(*target.value);
  if (node == nullptr) return Reply::Text(400, kUnrecognizedNode);
  if (node->kind == InvariantKind::kDirectory) {
    return Reply::Text(400, "Cannot link a directory");
  }
  if (dir->entries.contains(name)) {
    return Reply::Text(502, "Name already exists");
  }
  dir->entries.emplace(name, node->id);
  ++node->links;
  dir->modify_ms = NowMs();
  ChangedLocked();
  return Reply::Empty();
}

FakeInvariantServer::Reply FakeInvariantServer::Sync() {
  absl::MutexLock lock(&mu_);
  ++sync_count_;
  SaveLocked();
  return Reply::Empty();
}

// ---------------------------------------------------------------------------
// WalkApiTree.

namespace {

absl::StatusOr<std::string> Get(httplib::Client& client,
                                const std::string& path) {
  httplib::Result result = client.Get(path);
  if (!result) {
    return absl::UnavailableError(
        absl::StrCat("GET ", path, ": ", httplib::to_string(result.error())));
  }
  if (result->status != 200) {
    return absl::FailedPreconditionError(
        absl::StrCat("GET ", path, ": ", result->status, " ", result->body));
  }
  return std::move(result->body);
}

}  // namespace

absl::StatusOr<ApiTree> WalkApiTree(const std::string& host, int port,
                                    uint64_t root) {
  httplib::Client client(host, port);
  client.set_keep_alive(true);
  client.set_tcp_nodelay(true);
  client.set_connection_timeout(std::chrono::seconds(5));
  client.set_read_timeout(std::chrono::seconds(30));

  ApiTree tree;
  absl::flat_hash_set<uint64_t> seen_dirs = {root};
  std::vector<std::pair<uint64_t, std::string>> pending = {{root, ""}};
  while (!pending.empty()) {
    const uint64_t dir = pending.back().first;
    const std::string prefix = std::move(pending.back().second);
    pending.pop_back();
    absl::StatusOr<std::string> listing =
        Get(client, absl::StrCat("/files/directory/", dir));
    if (!listing.ok()) return listing.status();
    const Json entries = Json::parse(*listing, nullptr, false);
    if (entries.is_discarded() || !entries.is_array()) {
      return absl::DataLossError(
          absl::StrCat("directory ", dir, ": not a JSON array"));
    }
    for (const Json& e : entries) {
      auto bad = [&](absl::string_view why) {
        return absl::DataLossError(
            absl::StrCat("directory ", dir, ": ", why, ": ", Dump(e)));
      };
      if (!e.is_object() || !e.contains("name") || !e["name"].is_string() ||
          !e.contains("info") || !e["info"].is_object()) {
        return bad("malformed entry");
      }
      const std::string name = e["name"].get<std::string>();
      if (name.empty() || absl::StrContains(name, '/')) return bad("bad name");
      const Json& info = e["info"];
      ApiEntry entry;
      std::optional<InvariantKind> kind;
      if (!info.contains("node") || !info["node"].is_number_unsigned() ||
          !info.contains("kind") || !info["kind"].is_string() ||
          !(kind = ParseInvariantKind(info["kind"].get<std::string>()))) {
        return bad("malformed info");
      }
      entry.node = info["node"].get<uint64_t>();
      entry.kind = *kind;
      entry.executable = info.value("executable", false);
      entry.writable = info.value("writable", true);
      entry.modify_time_ms = info.value("modifyTime", int64_t{0});
      const std::string path =
          prefix.empty() ? name : absl::StrCat(prefix, "/", name);
      switch (entry.kind) {
        case InvariantKind::kFile: {
          if (!info.contains("size") || !info["size"].is_number_unsigned()) {
            return bad("file without a size");
          }
          entry.size = info["size"].get<uint64_t>();
          absl::StatusOr<std::string> bytes =
              Get(client, absl::StrCat("/files/", entry.node,
                                       "?offset=0&length=", entry.size));
          if (!bytes.ok()) return bytes.status();
          if (bytes->size() != entry.size) {
            return absl::DataLossError(
                absl::StrCat(path, ": read ", bytes->size(), " bytes, size is ",
                             entry.size));
          }
          entry.bytes = *std::move(bytes);
          break;
        }
        case InvariantKind::kSymbolicLink:
          if (!info.contains("target") || !info["target"].is_string()) {
            return bad("symbolic link without a target");
          }
          entry.target = info["target"].get<std::string>();
          break;
        case InvariantKind::kDirectory:
          if (!seen_dirs.insert(entry.node).second) {
            return bad("directory met twice");
          }
          pending.emplace_back(entry.node, path);
          break;
      }
      if (!tree.emplace(path, std::move(entry)).second) {
        return bad("duplicate path");
      }
    }
  }
  return tree;
}

}  // namespace memfuse::testing
