// The HTTP backend's opening, requests, ids to nodes, session, the front
// of Apply, and the group commit. Its changes and reads are in
// http_backend_changes.cc and http_backend_reads.cc.
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
#include "mirrord/backend/http_api.h"

namespace memfuse::mirrord {

using common::ErrnoStatus;
using common::StatusToErrno;
using json = nlohmann::json;
using namespace http;  // NOLINT: the backend's own API mapping

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

absl::StatusOr<pb::HandshakeResponse> HttpBackend::DescribeMirror() {
  ASSIGN_OR_RETURN(
      json root,
      SendJson(Method::kGet, absl::StrCat("files/info/", options_.root_node)));
  pb::HandshakeResponse response;
  response.set_backend_kind("http");
  response.set_backend_description(
      absl::StrCat(http_->base_url(), " node ", options_.root_node));
  *response.mutable_root() = AttrFromInfo(root, kRootId);
  // Names as long as Linux allows; xattrs stay in fsd (the API has none),
  // so their room is fsd's.
  response.mutable_limits()->set_name_max(kMaxName);
  return response;
}

absl::StatusOr<uint64_t> HttpBackend::StartSessionLocked(
    uint64_t previous_session) {
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
      previous_session == session_id_ ? acks_.last_applied_seq : 0;
  applied_seq_ = resume;
  has_unsaved_ = false;
  unsaved_writes_.clear();
  return resume;
}

// --- mutations ---

absl::StatusOr<bool> HttpBackend::NeedsApplyingLocked(
    const pb::Mutation& mutation) {
  // A change to an object that lives in fsd only, or the empty write fsd
  // sends for a file deleted meanwhile: nothing on the server to change.
  // Any other change to an object not known here is for fsd to repair
  // (Missing), never silently "applied".
  const bool replayed = mutation.op_case() != pb::Mutation::kSync &&
                        mutation.seq() <= acks_.last_applied_seq;
  const uint64_t object = ObjectOf(mutation);
  const bool placeholder = mutation.has_write() &&
                           mutation.write().data().empty() &&
                           mutation.write().shared_length() == 0 &&
                           mutation.write().mtime_ns() == 0 &&
                           mutation.write().atime_ns() == 0;
  if (object != 0 && (local_only_.contains(object) || placeholder)) {
    return false;
  }
  if (replayed) return false;
  if (object != 0 && !ids_.Contains(object)) {
    return Missing(absl::StrCat("object ", object, " is not known here"));
  }
  return true;
}

absl::Status HttpBackend::BeforeChange(const pb::Mutation& mutation) {
  // A write to another file sets the previous file's mtime (its failure
  // is retried by the next flush, not by this write).
  if (mutation.op_case() == pb::Mutation::kWrite) {
    FlushTimes(mutation.write().id()).IgnoreError();
    return absl::OkStatus();
  }
  return FlushTimes();
}

absl::Status HttpBackend::ApplySync(uint64_t /*seq*/, const pb::Sync& /*op*/) {
  absl::Status status = CommitNow(/*force=*/true);
  // Lost changes before the barrier: they were committed just before it
  // (NeedsCommitBefore), so only a retry is needed.
  if (absl::IsAborted(status)) {
    status = absl::UnavailableError(status.message());
  }
  return status;
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

}  // namespace memfuse::mirrord
