#include "mirrord/backend/http_backend.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <functional>
#include <optional>
#include <type_traits>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status.h"
#include "glog/logging.h"
#include "mirrord/backend/backend_common.h"
#include "nlohmann/json.hpp"

namespace memfuse::mirrord {
namespace {

using common::ErrnoStatus;
using common::StatusToErrno;
using json = nlohmann::json;

// The server forgot a node id (it restarted): NOT_FOUND with this message.
constexpr absl::string_view kStaleNode = "Unrecognized node";
// How long a file's mtime may wait after its last write.
constexpr absl::Duration kTimesDelay = absl::Milliseconds(200);
// Longest error body quoted in a log line.
constexpr size_t kMaxQuotedBody = 200;

bool IsStaleNode(const absl::Status& status) {
  return absl::IsNotFound(status) &&
         absl::StrContains(status.message(), kStaleNode);
}

const char* MethodName(int method) {
  switch (method) {
    case 0:
      return "GET";
    case 1:
      return "PUT";
    default:
      return "POST";
  }
}

// An errno for a 4xx answer, from its code and the server's words.
int ErrnoForAnswer(long code, absl::string_view body) {
  if (code == 404) return ENOENT;
  if (absl::StrContains(body, "exists")) return EEXIST;
  if (absl::StrContains(body, "not a directory") ||
      absl::StrContains(body, "Not a directory")) {
    return ENOTDIR;
  }
  if (absl::StrContains(body, "writable")) return EACCES;
  if (absl::StrContains(body, "not a file") ||
      absl::StrContains(body, "Not a file")) {
    return EISDIR;
  }
  if (code == 401 || code == 403) return EACCES;
  if (code == 413) return EFBIG;
  return EINVAL;
}

int64_t MsToNs(int64_t ms) { return ms * 1000000; }
int64_t NsToMs(int64_t ns) { return ns / 1000000; }

// Where a name goes in a path: "files/lookup/12/a%20b".
std::string NamePath(const char* route, uint64_t node, std::string_view name) {
  return absl::StrCat("files/", route, node, "/", EncodePathName(name));
}

}  // namespace

// --- opening ---

absl::StatusOr<std::unique_ptr<HttpBackend>> HttpBackend::Open(
    Options options) {
  ASSIGN_OR_RETURN(std::unique_ptr<HttpClient> http,
                   HttpClient::Create(options.base_url, options.http));
  std::unique_ptr<HttpBackend> backend(
      new HttpBackend(std::move(options), std::move(http)));
  absl::StatusOr<json> root = backend->SendJson(
      Method::kGet, absl::StrCat("files/info/", backend->options_.root_node));
  if (!root.ok()) {
    return absl::Status(root.status().code(),
                        absl::StrCat(backend->http_->base_url(), ": ",
                                     root.status().message()));
  }
  if (root->value("kind", "") != "Directory") {
    return absl::InvalidArgumentError(
        absl::StrCat(backend->http_->base_url(), ": node ",
                     backend->options_.root_node, " is not a directory"));
  }
  {
    absl::MutexLock l(&backend->mu_);
    backend->node_of_[kRootId] = backend->options_.root_node;
    backend->id_of_node_[backend->options_.root_node] = kRootId;
  }
  return backend;
}

void HttpBackend::Start() {
  if (times_thread_.joinable()) return;
  times_thread_ = std::thread([this] { TimesLoop(); });
}

HttpBackend::HttpBackend(Options options, std::unique_ptr<HttpClient> http)
    : options_(std::move(options)), http_(std::move(http)) {}

HttpBackend::~HttpBackend() {
  {
    absl::MutexLock l(&mu_);
    stopping_ = true;
  }
  if (times_thread_.joinable()) times_thread_.join();
}

// --- requests ---

absl::StatusOr<HttpResponse> HttpBackend::Send(Method method,
                                               const std::string& path,
                                               std::string_view body) {
  absl::StatusOr<HttpResponse> response;
  switch (method) {
    case Method::kGet:
      response = http_->Get(path);
      break;
    case Method::kPut:
      response = http_->Put(path, body);
      break;
    case Method::kPost:
      response = http_->Post(path, body);
      break;
  }
  return Checked(method, path, std::move(response));
}

absl::StatusOr<HttpResponse> HttpBackend::Checked(
    Method method, const std::string& path,
    absl::StatusOr<HttpResponse> response) {
  if (!response.ok()) {
    NoteUpset();
    return response.status();
  }
  if (response->status >= 200 && response->status < 300) return response;
  const std::string what = absl::StrCat(
      MethodName(static_cast<int>(method)), " ", path, ": ", response->status,
      " ", Quoted(response->body.substr(0, kMaxQuotedBody)));
  if (response->status >= 500 || response->status == 408 ||
      response->status == 429) {
    return absl::UnavailableError(what);
  }
  if (response->status == 400 &&
      absl::StrContains(response->body, kStaleNode)) {
    NoteUpset();
    return absl::NotFoundError(absl::StrCat(kStaleNode, ": ", what));
  }
  // Logged by whoever gives up on it (a rejected mutation, a failed read
  // in fsd): a lookup's 404 is an answer, not a problem.
  VLOG(1) << what;
  return Permanent(
      ErrnoStatus(ErrnoForAnswer(response->status, response->body), what));
}

absl::StatusOr<json> HttpBackend::SendJson(Method method,
                                           const std::string& path,
                                           std::string_view body) {
  ASSIGN_OR_RETURN(HttpResponse response, Send(method, path, body));
  json parsed = json::parse(response.body, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) {
    return absl::DataLossError(
        absl::StrCat(MethodName(static_cast<int>(method)), " ", path,
                     ": the answer is not JSON: ",
                     Quoted(response.body.substr(0, kMaxQuotedBody))));
  }
  return parsed;
}

// --- ids to nodes ---

absl::StatusOr<uint64_t> HttpBackend::NodeOf(uint64_t id) {
  IdMap::Location where;
  uint64_t start = options_.root_node;
  {
    absl::MutexLock l(&mu_);
    auto it = node_of_.find(id);
    if (it != node_of_.end()) return it->second;
    if (!ids_.Contains(id)) {
      return Missing(absl::StrCat("object ", id, " is not known here"));
    }
    if (local_only_.contains(id)) {
      return Conflict(EOPNOTSUPP,
                      absl::StrCat("object ", id, " exists in fsd only"));
    }
    ASSIGN_OR_RETURN(where, ids_.Locate(id));
  }
  // Down from the root, one lookup per component not known yet.
  uint64_t node = start;
  std::vector<std::string> parts = std::move(where.parent);
  parts.push_back(std::move(where.name));
  for (const std::string& part : parts) {
    ASSIGN_OR_RETURN(std::optional<json> info, Lookup(node, part));
    if (!info.has_value()) {
      return Missing(absl::StrCat("object ", id, ": ", Quoted(part),
                                  " is not on the server"));
    }
    node = info->value("node", uint64_t{0});
  }
  RememberNode(id, node);
  return node;
}

template <typename Op>
auto HttpBackend::WithNodes(Op op) -> decltype(op()) {
  auto status_of = [](const auto& result) -> absl::Status {
    if constexpr (std::is_same_v<std::decay_t<decltype(result)>,
                                 absl::Status>) {
      return result;
    } else {
      return result.status();
    }
  };
  auto result = op();
  if (!IsStaleNode(status_of(result))) return result;
  LOG(WARNING) << "the server no longer knows its node ids (it restarted?): "
                  "finding every object again by name";
  ForgetNodes();
  result = op();
  // Still unknown (the root node itself is gone): worth a retry later.
  if (IsStaleNode(status_of(result))) {
    return absl::UnavailableError(status_of(result).message());
  }
  return result;
}

void HttpBackend::NoteUpset() {
  absl::MutexLock l(&mu_);
  ++epoch_;
}

void HttpBackend::ForgetNodes() {
  absl::MutexLock l(&mu_);
  node_of_.clear();
  id_of_node_.clear();
  node_of_[kRootId] = options_.root_node;
  id_of_node_[options_.root_node] = kRootId;
}

void HttpBackend::RememberNode(uint64_t id, uint64_t node) {
  absl::MutexLock l(&mu_);
  if (!ids_.Contains(id)) return;
  node_of_[id] = node;
  id_of_node_[node] = id;
}

absl::StatusOr<std::optional<json>> HttpBackend::Lookup(uint64_t parent_node,
                                                        std::string_view name) {
  absl::StatusOr<json> info =
      SendJson(Method::kGet, NamePath("lookup/", parent_node, name));
  if (info.ok()) return std::optional<json>(std::move(*info));
  if (StatusToErrno(info.status()) == ENOENT && !IsStaleNode(info.status())) {
    return std::optional<json>();
  }
  return info.status();
}

// --- the session ---

absl::StatusOr<pb::HandshakeResponse> HttpBackend::Handshake(
    const pb::HandshakeRequest& request) {
  if (request.block_size() == 0 || request.block_size() > kMaxReadLength) {
    return absl::InvalidArgumentError(absl::StrCat(
        "block_size ", request.block_size(), " is not in 1..", kMaxReadLength));
  }
  ASSIGN_OR_RETURN(
      json root,
      SendJson(Method::kGet, absl::StrCat("files/info/", options_.root_node)));
  pb::HandshakeResponse response;
  absl::MutexLock l(&mu_);
  ids_.Clear();
  local_only_.clear();
  read_only_.clear();
  pending_times_.clear();
  node_of_.clear();
  id_of_node_.clear();
  node_of_[kRootId] = options_.root_node;
  id_of_node_[options_.root_node] = kRootId;
  // The server keeps no state of ours: replay resumes where this agent
  // got to in the same session, from the start otherwise (every
  // mutation is safe to apply on its own result).
  const uint64_t resume =
      request.session_id() == session_id_ ? acks_.last_applied_seq : 0;
  session_id_ = request.session_id();
  acks_.last_applied_seq = resume;
  applied_seq_ = resume;
  has_unsaved_ = false;
  unsaved_writes_.clear();
  block_size_ = request.block_size();
  LOG(INFO) << "session " << absl::StrFormat("%016x", session_id_)
            << ": block size " << block_size_ << ", last applied seq "
            << resume;
  response.set_protocol_version(1);
  response.set_backend_kind("http");
  response.set_backend_description(
      absl::StrCat(http_->base_url(), " node ", options_.root_node));
  *response.mutable_root() = AttrFromInfo(root, kRootId);
  response.set_last_applied_seq(resume);
  response.set_needs_bindings(true);
  // Names as long as Linux allows; xattrs stay in fsd (the API has none),
  // so their room is fsd's.
  response.mutable_limits()->set_name_max(kMaxName);
  return response;
}

absl::Status HttpBackend::Bind(const pb::Binding& binding) {
  absl::Status name_ok = CheckName(binding.name());
  if (!name_ok.ok()) return absl::InvalidArgumentError(name_ok.message());
  absl::MutexLock l(&mu_);
  absl::Status added =
      ids_.AddLink(binding.id(), binding.parent(), binding.name());
  if (!added.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("binding ", binding.id(), " ", Quoted(binding.name()),
                     " in ", binding.parent(), ": ", added.message()));
  }
  return absl::OkStatus();
}

// --- mutations ---

pb::Ack HttpBackend::Apply(const pb::Mutation& mutation) {
  const uint64_t seq = mutation.seq();
  absl::Status status;
  bool done = false;
  if (seq == 0) {
    status = Invalid("seq 0");
  } else if (mutation.op_case() == pb::Mutation::OP_NOT_SET) {
    status = Invalid("no operation");
  } else {
    absl::MutexLock l(&mu_);
    done = mutation.op_case() != pb::Mutation::kSync &&
           seq <= acks_.last_applied_seq;
    // A change to an object that lives in fsd only, or the empty write
    // fsd sends for a file deleted meanwhile: nothing on the server to
    // change. Any other change to an object not known here is for fsd to
    // repair (Missing), never silently "applied".
    const uint64_t object = ObjectOf(mutation);
    const bool placeholder = mutation.has_write() &&
                             mutation.write().data().empty() &&
                             mutation.write().shared_length() == 0 &&
                             mutation.write().mtime_ns() == 0 &&
                             mutation.write().atime_ns() == 0;
    if (object != 0 && (local_only_.contains(object) || placeholder)) {
      done = true;
    } else if (!done && object != 0 && !ids_.Contains(object)) {
      status = Missing(absl::StrCat("object ", object, " is not known here"));
    }
  }
  if (status.ok() && !done) {
    // Pending mtimes are set before anything else happens to the
    // namespace; a write to another file sets the previous file's (its
    // failure is retried by the next flush, not by this write).
    if (mutation.op_case() == pb::Mutation::kWrite) {
      FlushTimes(mutation.write().id()).IgnoreError();
    } else {
      status = FlushTimes();
    }
    if (status.ok()) {
      switch (mutation.op_case()) {
        case pb::Mutation::kCreate:
          status = ApplyCreate(mutation.create());
          break;
        case pb::Mutation::kWrite:
          status = ApplyWrite(mutation.write());
          break;
        case pb::Mutation::kPunchHole:
          status = ApplyPunchHole(mutation.punch_hole());
          break;
        case pb::Mutation::kSetAttr:
          status = ApplySetAttr(mutation.set_attr());
          break;
        case pb::Mutation::kLink:
          status = ApplyLink(mutation.link());
          break;
        case pb::Mutation::kRemove:
          status = ApplyRemove(mutation.remove());
          break;
        case pb::Mutation::kRename:
          status = ApplyRename(seq, mutation.rename());
          break;
        case pb::Mutation::kSetXattr:
        case pb::Mutation::kRemoveXattr:
          break;  // kept by fsd: the server has no xattrs
        case pb::Mutation::kSync:
          // Always a real sync: an earlier agent may have left changes
          // applied and not saved.
          status = CommitNow(/*force=*/true);
          // Lost changes before the barrier: they were committed just
          // before it (NeedsCommitBefore), so only a retry is needed.
          if (absl::IsAborted(status)) {
            status = absl::UnavailableError(status.message());
          }
          break;
        default:
          status = Invalid("unexpected operation");
      }
    }
  }
  if (!status.ok()) {
    status = Prefixed(status, Describe(mutation));
  }
  return MakeAck(mutation, status);
}

pb::Ack HttpBackend::MakeAck(const pb::Mutation& mutation,
                             const absl::Status& status) {
  absl::MutexLock l(&mu_);
  const bool sync = mutation.has_sync() && status.ok();
  pb::Ack ack = acks_.Record(mutation, status, /*durable=*/sync);
  if (mutation.seq() == 0 || (!status.ok() && !IsPermanent(status))) {
    return ack;  // retried: not applied
  }
  applied_seq_ = std::max(applied_seq_, mutation.seq());
  if (sync) return ack;
  if (!has_unsaved_) {
    has_unsaved_ = true;
    unsaved_epoch_ = epoch_;
  }
  if (status.ok() && mutation.has_write()) {
    auto node = node_of_.find(mutation.write().id());
    if (node != node_of_.end()) {
      probe_id_ = node->first;
      probe_node_ = node->second;
    }
  }
  return ack;
}

uint64_t HttpBackend::DurableSeq() {
  absl::MutexLock l(&mu_);
  return acks_.last_applied_seq;
}

bool HttpBackend::NeedsCommitBefore(const pb::Mutation& mutation) {
  absl::MutexLock l(&mu_);
  if (!has_unsaved_) return false;
  if (mutation.has_sync()) return true;
  if (!mutation.has_write()) return false;
  const pb::Write& w = mutation.write();
  const uint64_t length = w.shared_length() > 0 ? w.shared_length()
                                                : w.data().size();
  auto file = unsaved_writes_.find(w.id());
  if (length == 0 || file == unsaved_writes_.end()) return false;
  // The range starting at or before w.offset(), and the one after it.
  auto after = file->second.upper_bound(w.offset());
  if (after != file->second.end() && after->first < w.offset() + length) {
    return true;
  }
  if (after == file->second.begin()) return false;
  return std::prev(after)->second > w.offset();
}

absl::Status HttpBackend::Commit() { return CommitNow(/*force=*/false); }

absl::Status HttpBackend::CommitNow(bool force) {
  // The mtimes writes left pending are changes too.
  RETURN_IF_ERROR(FlushTimes());
  uint64_t target;
  uint64_t epoch;
  uint64_t probe = 0;
  {
    absl::MutexLock l(&mu_);
    target = applied_seq_;
    if (!has_unsaved_ && !force) {
      acks_.last_applied_seq = std::max(acks_.last_applied_seq, target);
      return absl::OkStatus();
    }
    epoch = has_unsaved_ ? unsaved_epoch_ : epoch_;
    // Only a file still there under that node can vouch for the server.
    auto known = node_of_.find(probe_id_);
    if (probe_id_ != 0 && known != node_of_.end() &&
        known->second == probe_node_) {
      probe = probe_node_;
    }
  }
  absl::Status synced = Send(Method::kPut, "files/sync").status();
  if (!synced.ok()) {
    return absl::UnavailableError(
        absl::StrCat("saving on the server: ", synced.message()));
  }
  // A restart between our requests and the sync loses them without an
  // error: the node last written must still be the one we wrote.
  if (probe != 0 && probe != options_.root_node) {
    absl::StatusOr<HttpResponse> info =
        http_->Get(absl::StrCat("files/info/", probe));
    if (!info.ok()) {
      NoteUpset();
      return absl::UnavailableError(
          absl::StrCat("checking the save: ", info.status().message()));
    }
    if (info->status == 400 && absl::StrContains(info->body, kStaleNode)) {
      NoteUpset();  // the server forgot the file it was just sent
    }
  }
  absl::MutexLock l(&mu_);
  if (epoch_ != epoch) {
    has_unsaved_ = false;
    unsaved_writes_.clear();
    // Node ids may have been handed out afresh: find every object again.
    node_of_.clear();
    id_of_node_.clear();
    node_of_[kRootId] = options_.root_node;
    id_of_node_[options_.root_node] = kRootId;
    probe_id_ = 0;
    probe_node_ = 0;
    // The durable point stays: what came after it is applied again.
    applied_seq_ = acks_.last_applied_seq;
    return absl::AbortedError(
        "the server may have lost changes it had not saved yet (it "
        "restarted, or a request failed since)");
  }
  acks_.last_applied_seq = std::max(acks_.last_applied_seq, target);
  ++acks_.commits;
  if (applied_seq_ == target) {
    has_unsaved_ = false;
    unsaved_writes_.clear();
    probe_id_ = 0;
    probe_node_ = 0;
  }
  return absl::OkStatus();
}

absl::Status HttpBackend::ApplyCreate(const pb::Create& op) {
  RETURN_IF_ERROR(CheckName(op.name()));
  const uint64_t id = op.attr().id();
  const mode_t mode = op.attr().mode();
  const char* kind = nullptr;
  switch (mode & S_IFMT) {
    case S_IFREG:
      kind = "File";
      break;
    case S_IFDIR:
      kind = "Directory";
      break;
    case S_IFLNK:
      kind = "SymbolicLink";
      break;
    default:
      break;  // FIFOs, sockets, devices: fsd only
  }
  {
    absl::MutexLock l(&mu_);
    if (id <= kRootId) return Invalid(absl::StrCat("id ", id));
    if (!ids_.Contains(op.parent())) {
      return Missing(absl::StrCat("parent ", op.parent(), " is not known here"));
    }
    if (ids_.Contains(id) && !ids_.HasLink(id, op.parent(), op.name())) {
      if (!op.repair()) {
        return Conflict(EEXIST, absl::StrCat("id ", id, " exists already"));
      }
      // A repair: the id lives where fsd says now.
      ForgetIdLocked(id);
    }
    if (kind == nullptr) {
      RETURN_IF_ERROR(ids_.AddLink(id, op.parent(), op.name()));
      local_only_.insert(id);
      return absl::OkStatus();
    }
  }
  return WithNodes([&]() -> absl::Status {
    ASSIGN_OR_RETURN(uint64_t parent, NodeOf(op.parent()));
    // The server would replace what is there: only a replay of this very
    // create may find the name taken, by the same kind of object.
    ASSIGN_OR_RETURN(std::optional<json> existing, Lookup(parent, op.name()));
    uint64_t node = 0;
    if (existing.has_value()) {
      if (existing->value("kind", "") != kind) {
        return Conflict(EEXIST, absl::StrCat(Quoted(op.name()),
                                             " exists on the server as a ",
                                             existing->value("kind", "?")));
      }
      node = existing->value("node", uint64_t{0});
    } else {
      std::string path =
          absl::StrCat(NamePath("", parent, op.name()), "?kind=", kind);
      if (S_ISLNK(mode)) {
        absl::StrAppend(&path,
                        "&target=", EncodeQueryValue(op.symlink_target()));
      }
      ASSIGN_OR_RETURN(json info, SendJson(Method::kPut, path));
      node = info.value("node", uint64_t{0});
    }
    if (S_ISREG(mode) && (mode & 0111) != 0) {
      RETURN_IF_ERROR(SetAttributes(node, json{{"executable", true}}));
    }
    absl::MutexLock l(&mu_);
    RETURN_IF_ERROR(ids_.AddLink(id, op.parent(), op.name()));
    node_of_[id] = node;
    id_of_node_[node] = id;
    // Not made read-only on the server now: fsd writes the data next.
    if (S_ISREG(mode) && (mode & 0200) == 0) read_only_.insert(id);
    return absl::OkStatus();
  });
}

absl::Status HttpBackend::ApplyWrite(const pb::Write& op) {
  ASSIGN_OR_RETURN(absl::string_view bytes, WriteBytes(op));
  const std::string_view data(bytes.data(), bytes.size());
  {
    absl::MutexLock l(&mu_);
    if (data.size() > block_size_) {
      return Invalid(absl::StrCat(data.size(), " bytes exceed the block size ",
                                  block_size_));
    }
  }
  if (op.offset() > static_cast<uint64_t>(INT64_MAX) - data.size()) {
    return Invalid("offset beyond the largest file");
  }
  RETURN_IF_ERROR(WithNodes([&]() -> absl::Status {
    ASSIGN_OR_RETURN(uint64_t node, NodeOf(op.id()));
    if (data.empty()) return absl::OkStatus();
    return WhileWritable(op.id(), node, [&]() -> absl::Status {
      return Send(Method::kPost,
                  absl::StrCat("files/", node, "?offset=", op.offset()), data)
          .status();
    });
  }));
  absl::MutexLock l(&mu_);
  if (op.mtime_ns() != 0) {
    pending_times_[op.id()] = op.mtime_ns();
    last_write_ = absl::Now();
  }
  if (!data.empty()) {
    // Merged with the ranges it touches or adjoins.
    std::map<uint64_t, uint64_t>& ranges = unsaved_writes_[op.id()];
    uint64_t lo = op.offset();
    uint64_t hi = op.offset() + data.size();
    auto it = ranges.upper_bound(lo);
    if (it != ranges.begin() && std::prev(it)->second >= lo) --it;
    while (it != ranges.end() && it->first <= hi) {
      lo = std::min(lo, it->first);
      hi = std::max(hi, it->second);
      it = ranges.erase(it);
    }
    ranges[lo] = hi;
  }
  return absl::OkStatus();
}

absl::Status HttpBackend::ApplyPunchHole(const pb::PunchHole& op) {
  if (op.offset() > static_cast<uint64_t>(INT64_MAX) ||
      op.length() > static_cast<uint64_t>(INT64_MAX) - op.offset()) {
    return Invalid("range beyond the largest file");
  }
  uint64_t block_size;
  {
    absl::MutexLock l(&mu_);
    block_size = block_size_ != 0 ? block_size_ : uint64_t{1} << 20;
  }
  // The API can neither punch a hole nor write zeros without sending them:
  // the range is written as zeros, one block per POST as writes go (fsd
  // keeps the range within the file, so the size does not change).
  const std::string zeros(std::min(op.length(), block_size), '\0');
  const uint64_t end = op.offset() + op.length();
  return WithNodes([&]() -> absl::Status {
    ASSIGN_OR_RETURN(uint64_t node, NodeOf(op.id()));
    if (op.length() == 0) return absl::OkStatus();
    return WhileWritable(op.id(), node, [&]() -> absl::Status {
      for (uint64_t at = op.offset(); at < end;) {
        // Aligned to blocks, as the writes of a sequential writer are.
        const uint64_t n = std::min(end, (at / block_size + 1) * block_size) - at;
        RETURN_IF_ERROR(Send(Method::kPost,
                             absl::StrCat("files/", node, "?offset=", at),
                             std::string_view(zeros.data(), n))
                            .status());
        at += n;
      }
      return absl::OkStatus();
    });
  });
}

absl::Status HttpBackend::FlushTimes(uint64_t only_id) {
  std::vector<std::pair<uint64_t, int64_t>> due;
  {
    absl::MutexLock l(&mu_);
    // One flush at a time: an mtime the times thread is sending must land
    // before whatever Apply does next to the same file (an explicit utimens
    // would otherwise be overwritten by the older time).
    auto idle = [this]()
                    ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !flushing_; };
    mu_.Await(absl::Condition(&idle));
    flushing_ = true;
    for (auto it = pending_times_.begin(); it != pending_times_.end();) {
      if (only_id != 0 && it->first == only_id) {
        ++it;
        continue;
      }
      due.push_back(*it);
      pending_times_.erase(it++);
    }
  }
  absl::Status first;
  for (const auto& [due_id, due_mtime_ns] : due) {
    // Named copies: clang's lambdas may not capture structured bindings.
    const uint64_t id = due_id;
    const int64_t mtime_ns = due_mtime_ns;
    absl::Status s = WithNodes([&]() -> absl::Status {
      absl::StatusOr<uint64_t> node = NodeOf(id);
      // Gone from the server since (removed, or fsd-only): nothing to set.
      if (!node.ok() && StatusToErrno(node.status()) == ENOENT &&
          !IsStaleNode(node.status())) {
        return absl::OkStatus();
      }
      if (!node.ok()) return node.status();
      return SetAttributes(*node, json{{"modifyTime", NsToMs(mtime_ns)}});
    });
    if (!s.ok()) {
      absl::MutexLock l(&mu_);
      pending_times_.try_emplace(id, mtime_ns);  // tried again later
      if (first.ok()) first = s;
    }
  }
  absl::MutexLock l(&mu_);
  flushing_ = false;
  return first;
}

void HttpBackend::TimesLoop() {
  while (true) {
    {
      absl::MutexLock l(&mu_);
      auto due = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || (!pending_times_.empty() &&
                             absl::Now() - last_write_ >= kTimesDelay);
      };
      mu_.AwaitWithTimeout(absl::Condition(&due), kTimesDelay);
      if (stopping_) return;
      if (!due()) continue;
    }
    absl::Status s = FlushTimes();
    if (!s.ok()) {
      VLOG(1) << "setting mtimes after writes: " << s;
      absl::SleepFor(kTimesDelay);
    }
  }
}

absl::Status HttpBackend::SetAttributes(uint64_t node, const json& attributes) {
  if (node == options_.root_node) return absl::OkStatus();  // 400 for the root
  return Send(Method::kPost, absl::StrCat("files/attributes/", node),
              attributes.dump())
      .status();
}

absl::Status HttpBackend::WhileWritable(
    uint64_t id, uint64_t node, const std::function<absl::Status()>& then) {
  bool read_only;
  {
    absl::MutexLock l(&mu_);
    read_only = read_only_.contains(id);
  }
  if (!read_only) return then();
  RETURN_IF_ERROR(SetAttributes(node, json{{"writable", true}}));
  absl::Status done = then();
  absl::Status back = SetAttributes(node, json{{"writable", false}});
  return done.ok() ? back : done;
}

absl::Status HttpBackend::ApplySetAttr(const pb::SetAttr& op) {
  const uint64_t id = op.attr().id();
  const uint32_t mask = op.mask();
  json attributes = json::object();
  bool make_read_only = false;
  if ((mask & kSetMode) != 0 && !S_ISDIR(op.attr().mode()) &&
      !S_ISLNK(op.attr().mode())) {
    attributes["executable"] = (op.attr().mode() & 0111) != 0;
    make_read_only = (op.attr().mode() & 0200) == 0;
    attributes["writable"] = !make_read_only;
  }
  if ((mask & (kSetMtime | kSetMtimeNow)) != 0) {
    attributes["modifyTime"] = NsToMs(op.attr().mtime_ns());
  }
  const bool resize = (mask & kSetSize) != 0;
  if (attributes.empty() && !resize) return absl::OkStatus();  // owners, atime
  if ((mask & kSetMode) != 0) {
    absl::MutexLock l(&mu_);
    if (make_read_only) {
      read_only_.insert(id);
    } else {
      read_only_.erase(id);
    }
  }
  return WithNodes([&]() -> absl::Status {
    ASSIGN_OR_RETURN(uint64_t node, NodeOf(id));
    if (resize) {
      // A truncate of a read-only file is still fsd's to make.
      RETURN_IF_ERROR(WhileWritable(id, node, [&]() -> absl::Status {
        return Send(Method::kPut, absl::StrCat("files/size/", node,
                                               "?size=", op.attr().size()))
            .status();
      }));
    }
    if (attributes.empty()) return absl::OkStatus();
    return SetAttributes(node, attributes);
  });
}

absl::Status HttpBackend::ApplyLink(const pb::Link& op) {
  RETURN_IF_ERROR(CheckName(op.new_name()));
  {
    absl::MutexLock l(&mu_);
    if (ids_.HasLink(op.id(), op.new_parent(), op.new_name())) {
      return absl::OkStatus();  // a replay
    }
    if (!ids_.Contains(op.id()) || !ids_.Contains(op.new_parent())) {
      return Missing(absl::StrCat("link of ", op.id(), " into ",
                                  op.new_parent(), ": not known here"));
    }
    if (local_only_.contains(op.id())) {
      return ids_.AddLink(op.id(), op.new_parent(), op.new_name());
    }
  }
  return WithNodes([&]() -> absl::Status {
    ASSIGN_OR_RETURN(uint64_t node, NodeOf(op.id()));
    ASSIGN_OR_RETURN(uint64_t parent, NodeOf(op.new_parent()));
    ASSIGN_OR_RETURN(std::optional<json> existing,
                     Lookup(parent, op.new_name()));
    if (existing.has_value()) {
      if (existing->value("node", uint64_t{0}) != node) {
        return Conflict(EEXIST, absl::StrCat(Quoted(op.new_name()),
                                             " exists on the server"));
      }
    } else {
      RETURN_IF_ERROR(Send(Method::kPut, absl::StrCat(NamePath("link/", parent,
                                                               op.new_name()),
                                                      "?node=", node))
                          .status());
    }
    absl::MutexLock l(&mu_);
    return ids_.AddLink(op.id(), op.new_parent(), op.new_name());
  });
}

absl::Status HttpBackend::CheckEmptyDirectory(uint64_t node) {
  ASSIGN_OR_RETURN(
      json entries,
      SendJson(Method::kGet, absl::StrCat("files/directory/", node)));
  if (!entries.is_array()) {
    return absl::DataLossError("a directory listing that is not an array");
  }
  if (!entries.empty()) {
    return Conflict(ENOTEMPTY,
                    "the server's directory holds entries fsd does not");
  }
  return absl::OkStatus();
}

absl::Status HttpBackend::ApplyRemove(const pb::Remove& op) {
  RETURN_IF_ERROR(CheckName(op.name()));
  bool local_only = false;
  {
    absl::MutexLock l(&mu_);
    if (!ids_.HasLink(op.id(), op.parent(), op.name())) {
      return absl::OkStatus();  // a replay: gone already
    }
    local_only = local_only_.contains(op.id());
  }
  if (!local_only) {
    // A directory on its path gone from the server: so is the entry.
    absl::Status removed = WithNodes([&]() -> absl::Status {
      ASSIGN_OR_RETURN(uint64_t parent, NodeOf(op.parent()));
      ASSIGN_OR_RETURN(std::optional<json> existing, Lookup(parent, op.name()));
      if (!existing.has_value()) return absl::OkStatus();
      // The server removes directories recursively: never more than fsd
      // removed.
      if (existing->value("kind", "") == "Directory") {
        RETURN_IF_ERROR(
            CheckEmptyDirectory(existing->value("node", uint64_t{0})));
      }
      return Send(Method::kPost, NamePath("remove/", parent, op.name()))
          .status();
    });
    if (!removed.ok() && !IsMissing(removed)) return removed;
  }
  absl::MutexLock l(&mu_);
  RETURN_IF_ERROR(ids_.RemoveLink(op.id(), op.parent(), op.name()));
  if (!ids_.Contains(op.id())) {
    auto it = node_of_.find(op.id());
    if (it != node_of_.end()) {
      id_of_node_.erase(it->second);
      node_of_.erase(it);
    }
    local_only_.erase(op.id());
    read_only_.erase(op.id());
    pending_times_.erase(op.id());
  }
  return absl::OkStatus();
}

absl::Status HttpBackend::ApplyRename(uint64_t seq, const pb::Rename& op) {
  RETURN_IF_ERROR(CheckName(op.name()));
  RETURN_IF_ERROR(CheckName(op.new_name()));
  constexpr uint32_t kNoReplace = 1;  // RENAME_NOREPLACE
  constexpr uint32_t kExchange = 2;   // RENAME_EXCHANGE
  const bool exchange = (op.flags() & kExchange) != 0;
  bool source_local = false;
  bool target_local = false;
  {
    absl::MutexLock l(&mu_);
    if (!ids_.HasLink(op.id(), op.parent(), op.name())) {
      // A replay: already where it goes.
      if (ids_.HasLink(op.id(), op.new_parent(), op.new_name())) {
        return absl::OkStatus();
      }
      return Missing("the source is not where fsd says");
    }
    if (!ids_.Contains(op.new_parent())) {
      return Missing(
          absl::StrCat("directory ", op.new_parent(), " is not known here"));
    }
    RETURN_IF_ERROR(ids_.CheckRename(op.id(), op.parent(), op.name(),
                                     op.new_parent(), op.new_name(),
                                     op.replaced_id(), exchange));
    source_local = local_only_.contains(op.id());
    target_local =
        op.replaced_id() != 0 && local_only_.contains(op.replaced_id());
  }
  RETURN_IF_ERROR(WithNodes([&]() -> absl::Status {
    ASSIGN_OR_RETURN(uint64_t from, NodeOf(op.parent()));
    ASSIGN_OR_RETURN(uint64_t to, NodeOf(op.new_parent()));
    ASSIGN_OR_RETURN(std::optional<json> target, Lookup(to, op.new_name()));
    auto rename = [&](uint64_t p, std::string_view name, uint64_t np,
                      std::string_view new_name) {
      return Send(Method::kPut,
                  absl::StrCat(NamePath("rename/", p, name), "?newParent=", np,
                               "&newName=", EncodeQueryValue(new_name)))
          .status();
    };
    if (exchange) {
      if (source_local && target_local) return absl::OkStatus();
      if (source_local || target_local) {
        return Conflict(EOPNOTSUPP,
                        "an exchange with an object the server does not "
                        "hold");
      }
      // No exchange on the server: three renames through a name of our
      // own, each skipped when a retry finds it done already.
      ASSIGN_OR_RETURN(uint64_t source, NodeOf(op.id()));
      if (target.has_value() && target->value("node", uint64_t{0}) == source) {
        return absl::OkStatus();  // all three done before
      }
      const std::string aside = absl::StrCat(".memfuse-exchange-", seq);
      ASSIGN_OR_RETURN(std::optional<json> parked, Lookup(from, aside));
      if (!parked.has_value()) {
        if (!target.has_value()) {
          return Conflict(ENOENT, "the exchange's target is not on the server");
        }
        RETURN_IF_ERROR(rename(from, op.name(), from, aside));
      }
      ASSIGN_OR_RETURN(std::optional<json> at_name, Lookup(from, op.name()));
      if (!at_name.has_value()) {
        RETURN_IF_ERROR(rename(to, op.new_name(), from, op.name()));
      }
      return rename(from, aside, to, op.new_name());
    }
    if (target.has_value()) {
      if ((op.flags() & kNoReplace) != 0) {
        return Conflict(EEXIST, "the target exists on the server");
      }
      if (target->value("kind", "") == "Directory") {
        RETURN_IF_ERROR(
            CheckEmptyDirectory(target->value("node", uint64_t{0})));
      }
    }
    if (source_local) {
      // The name it replaces must go from the server too.
      if (!target.has_value()) return absl::OkStatus();
      return Send(Method::kPost, NamePath("remove/", to, op.new_name()))
          .status();
    }
    return rename(from, op.name(), to, op.new_name());
  }));
  absl::MutexLock l(&mu_);
  RETURN_IF_ERROR(ids_.Rename(op.id(), op.parent(), op.name(), op.new_parent(),
                              op.new_name(), op.replaced_id(), exchange));
  if (op.replaced_id() != 0 && !exchange && !ids_.Contains(op.replaced_id())) {
    auto it = node_of_.find(op.replaced_id());
    if (it != node_of_.end()) {
      id_of_node_.erase(it->second);
      node_of_.erase(it);
    }
    local_only_.erase(op.replaced_id());
    read_only_.erase(op.replaced_id());
    pending_times_.erase(op.replaced_id());
  }
  return absl::OkStatus();
}

void HttpBackend::ForgetIdLocked(uint64_t id) {
  ids_.Forget(id);
  auto it = node_of_.find(id);
  if (it != node_of_.end()) {
    id_of_node_.erase(it->second);
    node_of_.erase(it);
  }
}

// --- reads ---

pb::Attr HttpBackend::AttrFromInfo(const json& info, uint64_t id) const {
  pb::Attr attr;
  attr.set_id(id);
  const std::string kind = info.value("kind", "");
  const bool executable = info.value("executable", false);
  const bool writable = info.value("writable", true);
  if (kind == "Directory") {
    attr.set_mode(S_IFDIR | 0755);
    attr.set_nlink(2);
  } else if (kind == "SymbolicLink") {
    attr.set_mode(S_IFLNK | 0777);
    attr.set_size(info.value("target", std::string()).size());
    attr.set_nlink(1);
  } else {
    attr.set_mode(S_IFREG | 0444 | (writable ? 0200 : 0) |
                  (executable ? 0111 : 0));
    attr.set_size(info.value("size", uint64_t{0}));
    attr.set_nlink(1);
  }
  attr.set_uid(options_.uid);
  attr.set_gid(options_.gid);
  const int64_t mtime = MsToNs(info.value("modifyTime", int64_t{0}));
  attr.set_mtime_ns(mtime);
  attr.set_atime_ns(mtime);
  attr.set_ctime_ns(mtime);
  return attr;
}

absl::StatusOr<pb::ListDirectoryResponse> HttpBackend::ListDirectory(
    const pb::ListDirectoryRequest& request) {
  const uint64_t dir_id = request.id();
  if (request.first_child_id() <= kRootId) {
    return absl::InvalidArgumentError(absl::StrCat(
        "first_child_id ", request.first_child_id(), " is not a new id"));
  }
  {
    absl::MutexLock l(&mu_);
    if (!ids_.Contains(dir_id)) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown directory id ", dir_id));
    }
  }
  ASSIGN_OR_RETURN(json entries, WithNodes([&]() -> absl::StatusOr<json> {
                     ASSIGN_OR_RETURN(uint64_t node, NodeOf(dir_id));
                     return SendJson(Method::kGet,
                                     absl::StrCat("files/directory/", node));
                   }));
  if (!entries.is_array()) {
    return absl::DataLossError(absl::StrCat("the listing of directory ", dir_id,
                                            " is not a JSON array"));
  }
  struct Found {
    std::string name;
    uint64_t node;
    json info;
  };
  std::vector<Found> found;
  for (const json& entry : entries) {
    if (!entry.is_object() || !entry.contains("name") ||
        !entry["name"].is_string() || !entry.contains("info") ||
        !entry["info"].is_object()) {
      return absl::DataLossError(absl::StrCat(
          "a malformed entry in the listing of directory ", dir_id));
    }
    std::string name = DecodePathName(entry["name"].get<std::string>());
    if (!CheckName(name).ok()) {
      LOG(WARNING) << "directory " << dir_id << ": the server's entry "
                   << Quoted(name) << " is no Linux name; not shown";
      continue;
    }
    found.push_back({std::move(name), entry["info"].value("node", uint64_t{0}),
                     entry["info"]});
  }
  std::sort(found.begin(), found.end(),
            [](const Found& a, const Found& b) { return a.name < b.name; });

  pb::ListDirectoryResponse response;
  absl::MutexLock l(&mu_);
  // A second name of a node bound already (a hard link) keeps its id.
  absl::flat_hash_map<uint64_t, uint64_t> seen;
  auto known = [&](const Found& f) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (f.info.value("kind", "") == "Directory") return uint64_t{0};
    auto it = seen.find(f.node);
    if (it != seen.end()) return it->second;
    auto bound = id_of_node_.find(f.node);
    return bound != id_of_node_.end() && ids_.Contains(bound->second)
               ? bound->second
               : uint64_t{0};
  };
  if (request.max_new_ids() > 0) {
    uint64_t needed = 0;
    absl::flat_hash_set<uint64_t> counted;
    for (const Found& f : found) {
      if (known(f) == 0 && counted.insert(f.node).second) ++needed;
    }
    if (needed > request.max_new_ids()) {
      response.set_ids_needed(needed);
      return response;
    }
  }
  uint64_t next = request.first_child_id();
  absl::flat_hash_map<uint64_t, uint32_t> links;
  for (const Found& f : found) ++links[f.node];
  for (Found& f : found) {
    uint64_t id = known(f);
    if (id == 0) {
      id = next++;
      if (ids_.Contains(id) && !ids_.HasLink(id, dir_id, f.name)) {
        return absl::FailedPreconditionError(
            absl::StrCat("id ", id, " is bound already"));
      }
    }
    RETURN_IF_ERROR(ids_.AddLink(id, dir_id, f.name));
    seen[f.node] = id;
    node_of_[id] = f.node;
    id_of_node_[f.node] = id;
    pb::DirEntry* entry = response.add_entries();
    *entry->mutable_attr() = AttrFromInfo(f.info, id);
    if (f.info.value("kind", "") == "File") {
      entry->mutable_attr()->set_nlink(links[f.node]);
      if (!f.info.value("writable", true)) read_only_.insert(id);
    }
    if (f.info.value("kind", "") == "SymbolicLink") {
      entry->set_symlink_target(f.info.value("target", std::string()));
    }
    entry->set_name(std::move(f.name));
  }
  response.set_next_free_id(next);
  ++acks_.directories_listed;
  return response;
}

absl::StatusOr<uint64_t> HttpBackend::ReadBlock(
    const pb::ReadBlockRequest& request, absl::Span<char> out) {
  if (request.length() > kMaxReadLength) {
    return absl::InvalidArgumentError(
        absl::StrCat("length ", request.length(), " exceeds ", kMaxReadLength));
  }
  const uint64_t length = std::min<uint64_t>(request.length(), out.size());
  ASSIGN_OR_RETURN(
      uint64_t got, WithNodes([&]() -> absl::StatusOr<uint64_t> {
        ASSIGN_OR_RETURN(uint64_t node, NodeOf(request.id()));
        const std::string path = absl::StrCat(
            "files/", node, "?offset=", request.offset(), "&length=", length);
        ASSIGN_OR_RETURN(HttpResponse response,
                         Checked(Method::kGet, path,
                                 http_->ReadInto(path, out.first(length))));
        return std::min(response.bytes, length);
      }));
  absl::MutexLock l(&mu_);
  ++acks_.blocks_read;
  return got;
}

absl::StatusOr<pb::ReadLinkResponse> HttpBackend::ReadLink(
    const pb::ReadLinkRequest& request) {
  ASSIGN_OR_RETURN(json info, WithNodes([&]() -> absl::StatusOr<json> {
                     ASSIGN_OR_RETURN(uint64_t node, NodeOf(request.id()));
                     return SendJson(Method::kGet,
                                     absl::StrCat("files/info/", node));
                   }));
  if (info.value("kind", "") != "SymbolicLink") {
    return ErrnoStatus(
        EINVAL, absl::StrCat("object ", request.id(), " is not a symlink"));
  }
  pb::ReadLinkResponse response;
  response.set_target(info.value("target", std::string()));
  return response;
}

absl::StatusOr<pb::StatResponse> HttpBackend::Stat(
    const pb::StatRequest& request) {
  ASSIGN_OR_RETURN(json info, WithNodes([&]() -> absl::StatusOr<json> {
                     ASSIGN_OR_RETURN(uint64_t node, NodeOf(request.id()));
                     return SendJson(Method::kGet,
                                     absl::StrCat("files/info/", node));
                   }));
  pb::StatResponse response;
  *response.mutable_attr() = AttrFromInfo(info, request.id());
  return response;
}

absl::StatusOr<pb::StatFsResponse> HttpBackend::StatFs() {
  // The Invariant files API has no call that tells a server's capacity or
  // free space. Claiming the cache's size would make `df` and programs
  // that check before a large copy refuse what the server would take, so
  // the answer is a stand-in large enough never to stop one, marked as
  // not measured. A server that runs out says so when the data arrives.
  constexpr uint64_t kStandInBytes = uint64_t{1} << 50;  // 1 PiB
  constexpr uint64_t kStandInFiles = uint64_t{1} << 32;
  pb::StatFsResponse response;
  response.set_known(false);
  response.set_total_bytes(kStandInBytes);
  response.set_free_bytes(kStandInBytes);
  response.set_available_bytes(kStandInBytes);
  response.set_total_files(kStandInFiles);
  response.set_free_files(kStandInFiles);
  response.set_name_max(kMaxName);
  return response;
}

void HttpBackend::FillStatus(pb::StatusResponse* status) {
  absl::MutexLock l(&mu_);
  acks_.Fill(status);
}

}  // namespace memfuse::mirrord
