// The remote mirror: an "Invariant files" HTTP server
// (../shared/invariant-files-api.md), through libcurl. Its code, by job:
// http_backend.cc (opening, requests, ids to nodes, the session, the front
// of Apply, the group commit), http_backend_changes.cc (the changes),
// http_backend_reads.cc (the reads), http_api.h (the API's mapping they
// share).
//
// Objects are named by fsd's ids, as with the local mirror; the IdMap keeps
// each id's names (parent id and name) and the server's node id of each is
// found by name from the root node and cached. The server's ids do not
// survive a restart: an answer "Unrecognized node" drops every cached node
// id, and the request is made again after finding its objects by name.
//
// POSIX semantics are kept here, not trusted to the server: it replaces an
// existing name on create and rename and removes a directory recursively,
// so a create that finds its name taken keeps what is there only when it
// is the same kind of object (a replay), a remove or a rename onto a
// directory that is not empty is refused (ENOTEMPTY), and nothing is ever
// sent that would replace or remove more than fsd asked for.
//
// What the server cannot store is kept by fsd only and acknowledged here as
// applied: owners, mode bits other than "executable" and "writable", atime,
// xattrs, and FIFOs, sockets and device nodes (they exist in the mount,
// not on the server).
//
// Names in URL paths: EncodePathName (http_client.h), and its inverse on
// listed names.
//
// Errors. Transport failures and 5xx are transient: Apply's caller retries
// them with backoff, reads give UNAVAILABLE (fsd retries those while the
// agent is away) or, for a timeout or a malformed or truncated answer,
// DATA_LOSS/DEADLINE_EXCEEDED (EIO in the mount). A 4xx is mapped to an
// errno, logged with the request, and never retried.
//
// Acknowledged means saved. The server keeps what it is sent in memory and
// saves it lazily (invariant-files-api.md): an answer 200 means
// "received". So an applied change is acknowledged only after a `PUT
// files/sync` that covers it (Commit(), group commit driven by the server,
// mirrord/server.h). A commit checks that nothing happened since the first
// unsaved change that could have lost it (a transport failure, an
// "Unrecognized node" answer, or the last object changed no longer known
// after the sync): then it answers ABORTED and those changes are applied
// again. Two unsaved writes to overlapping bytes of one file are never
// left together (the server may combine them out of order): a commit comes
// between them (NeedsCommitBefore).
//
// Write coalescing: a Write is one POST of its bytes; the file's mtime,
// which needs a request of its own, is set once after a run of writes to
// the file (before any other mutation, before a Sync, or 200 ms after the
// last write), not once per block.
//
// Thread-safety: Apply() from one thread at a time; the read calls from
// any thread concurrently. mu_ guards the maps; no request is made with it
// held.
#ifndef MEMFUSE_MIRRORD_BACKEND_HTTP_BACKEND_H_
#define MEMFUSE_MIRRORD_BACKEND_HTTP_BACKEND_H_

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "mirrord/backend/backend.h"
#include "mirrord/backend/backend_base.h"
#include "mirrord/backend/backend_common.h"
#include "mirrord/backend/http_client.h"
#include "mirrord/backend/id_map.h"
#include "nlohmann/json_fwd.hpp"

namespace memfuse::mirrord {

class HttpBackend final : public BackendBase {
 public:

  struct Options {
    std::string base_url;    // http://host:port[/prefix]
    uint64_t root_node = 1;  // the server's node shown as the mount's root
    HttpOptions http;
    // Owner shown for every object (the server keeps none).
    uid_t uid = 0;
    gid_t gid = 0;
  };

  // Checks that the server answers and that the root node is a directory;
  // an unreachable server fails within the connect timeout.
  static absl::StatusOr<std::unique_ptr<HttpBackend>> Open(Options options);
  ~HttpBackend() override;

  // The thread that keeps the server's modification times (TimesLoop).
  void Start() override;

  HttpClient& client() { return *http_; }

  absl::StatusOr<pb::ReadLinkResponse> ReadLink(
      const pb::ReadLinkRequest& request) override ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<pb::StatResponse> Stat(const pb::StatRequest& request) override
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<pb::StatFsResponse> StatFs() override ABSL_LOCKS_EXCLUDED(mu_);

  uint64_t DurableSeq() override ABSL_LOCKS_EXCLUDED(mu_);
  bool NeedsCommitBefore(const pb::Mutation& mutation) override
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status Commit() override ABSL_LOCKS_EXCLUDED(mu_);

  // Requests sent so far (benchmarks: requests per MiB written).
  uint64_t requests() const { return http_->requests(); }

 private:
  // BackendBase's hooks.
  absl::StatusOr<pb::HandshakeResponse> DescribeMirror() override;
  absl::StatusOr<uint64_t> StartSessionLocked(uint64_t previous_session)
      override ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<uint64_t> ReadBytes(const pb::ReadBlockRequest& request,
                                     absl::Span<char> out) override
      ABSL_LOCKS_EXCLUDED(mu_);
  // A listing's entries; a node's names are known by its node id.
  absl::StatusOr<std::vector<ListedEntry>> ReadDirectory(uint64_t dir_id)
      override ABSL_LOCKS_EXCLUDED(mu_);
  uint64_t LinkedIdLocked(const ListedEntry& listed) override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ListedLocked(uint64_t id, const ListedEntry& listed) override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  HttpBackend(Options options, std::unique_ptr<HttpClient> http);

  // --- requests ---
  // Sends one request and maps its outcome: 2xx is the response; 400
  // "Unrecognized node" is kStaleNode (NOT_FOUND with that message);
  // another 4xx an errno status (permanent); 5xx and transport failures
  // transient (UNAVAILABLE).
  enum class Method { kGet, kPut, kPost };
  absl::StatusOr<HttpResponse> Send(Method method, const std::string& path,
                                    std::string_view body = {});
  // Send's mapping of an answer already received.
  absl::StatusOr<HttpResponse> Checked(Method method, const std::string& path,
                                       absl::StatusOr<HttpResponse> response);
  absl::StatusOr<nlohmann::json> SendJson(Method method,
                                          const std::string& path,
                                          std::string_view body = {});

  // --- ids to nodes ---
  // The server's node of object `id`, from the cache or looked up by name
  // from the root.
  absl::StatusOr<uint64_t> NodeOf(uint64_t id) ABSL_LOCKS_EXCLUDED(mu_);
  // Runs `op` with NodeOf's answers; when the server says a node is
  // unknown (it restarted), forgets every cached node and runs it once
  // more.
  template <typename Op>
  auto WithNodes(Op op) -> decltype(op());
  void ForgetNodes() ABSL_LOCKS_EXCLUDED(mu_);
  void RememberNode(uint64_t id, uint64_t node) ABSL_LOCKS_EXCLUDED(mu_);
  // GET files/lookup: the entry's content info, or nullopt when absent.
  absl::StatusOr<std::optional<nlohmann::json>> Lookup(uint64_t parent_node,
                                                       std::string_view name);

  // --- mutations ---
  // BackendBase's storage operations.
  absl::Status ApplyCreate(uint64_t seq, const pb::Create& op) override;
  absl::Status ApplyWrite(const pb::Write& op) override;
  // As zeros: the API has nothing better.
  absl::Status ApplyPunchHole(const pb::PunchHole& op) override;
  absl::Status ApplySetAttr(const pb::SetAttr& op) override;
  absl::Status ApplyLink(uint64_t seq, const pb::Link& op) override;
  absl::Status ApplyRemove(uint64_t seq, const pb::Remove& op) override;
  absl::Status ApplyRename(uint64_t seq, const pb::Rename& op) override;
  // Kept by fsd: the server has no xattrs.
  absl::Status ApplySetXattr(const pb::SetXattr& op) override {
    return absl::OkStatus();
  }
  absl::Status ApplyRemoveXattr(const pb::RemoveXattr& op) override {
    return absl::OkStatus();
  }
  // Always a real commit: an earlier agent may have left changes applied
  // and not saved.
  absl::Status ApplySync(uint64_t seq, const pb::Sync& op) override;

  // BackendBase's hooks for Apply.
  absl::StatusOr<bool> NeedsApplyingLocked(const pb::Mutation& mutation)
      override ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Pending mtimes are set before anything else happens to the namespace.
  absl::Status BeforeChange(const pb::Mutation& mutation) override;
  // Commit(), and with `force` a sync even when nothing was applied since
  // the last one.
  absl::Status CommitNow(bool force) ABSL_LOCKS_EXCLUDED(mu_);
  // Drops every binding of `id` (a repair binds it anew).
  void ForgetIdLocked(uint64_t id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sets the mtimes writes left pending (all of them, or `id`'s).
  absl::Status FlushTimes(uint64_t only_id = 0) ABSL_LOCKS_EXCLUDED(mu_);
  void TimesLoop() ABSL_LOCKS_EXCLUDED(mu_);
  // POST files/attributes; with `force_writable`, a read-only file is
  // made writable around `then` (a write or truncate POSIX allows on an
  // open file whose mode says read-only).
  absl::Status SetAttributes(uint64_t node, const nlohmann::json& attributes);
  absl::Status WhileWritable(uint64_t id, uint64_t node,
                             const std::function<absl::Status()>& then);
  // ENOTEMPTY unless directory `node` has no entries.
  absl::Status CheckEmptyDirectory(uint64_t node);
  pb::Ack MakeAck(const pb::Mutation& mutation, const absl::Status& status)
      override
      ABSL_LOCKS_EXCLUDED(mu_);
  // Something that may have lost what the server had not saved happened
  // (a transport failure, a forgotten node id).
  void NoteUpset() ABSL_LOCKS_EXCLUDED(mu_);

  pb::Attr AttrFromInfo(const nlohmann::json& info, uint64_t id) const;

  const Options options_;
  const std::unique_ptr<HttpClient> http_;

  absl::flat_hash_map<uint64_t, uint64_t> node_of_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, uint64_t> id_of_node_ ABSL_GUARDED_BY(mu_);
  // Objects that exist only in fsd: FIFOs, sockets, device nodes.
  absl::flat_hash_set<uint64_t> local_only_ ABSL_GUARDED_BY(mu_);
  // Files whose mode has no write bit: the server refuses writes to them.
  absl::flat_hash_set<uint64_t> read_only_ ABSL_GUARDED_BY(mu_);
  // fsd id -> the mtime (ns) its last write carried, not sent yet.
  absl::flat_hash_map<uint64_t, int64_t> pending_times_ ABSL_GUARDED_BY(mu_);
  absl::Time last_write_ ABSL_GUARDED_BY(mu_);
  // A FlushTimes is sending (see there).
  bool flushing_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;

  // Group commit. acks_.last_applied_seq is the durable point; applied_seq_
  // the last mutation applied (not yet saved while has_unsaved_).
  uint64_t applied_seq_ ABSL_GUARDED_BY(mu_) = 0;
  bool has_unsaved_ ABSL_GUARDED_BY(mu_) = false;
  // Bumped by NoteUpset(); unsaved_epoch_ is its value when the first
  // unsaved change was applied.
  uint64_t epoch_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t unsaved_epoch_ ABSL_GUARDED_BY(mu_) = 0;
  // The last file written (fsd id, server node), checked after a sync.
  uint64_t probe_id_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t probe_node_ ABSL_GUARDED_BY(mu_) = 0;
  // Byte ranges [start, end) written since the last save, by fsd id.
  absl::flat_hash_map<uint64_t, std::map<uint64_t, uint64_t>> unsaved_writes_
      ABSL_GUARDED_BY(mu_);


  std::thread times_thread_;
};

}  // namespace memfuse::mirrord

#endif  // MEMFUSE_MIRRORD_BACKEND_HTTP_BACKEND_H_
