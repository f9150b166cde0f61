// FakeInvariantServer: an in-memory stand-in for an "Invariant files" HTTP
// server (the API described in invariant-files-api.md), on 127.0.0.1 only,
// for the tests and benchmarks of the http mirror backend. It reproduces what
// the real server does rather than what POSIX would want:
// - creating an existing name replaces it, renaming onto a name replaces the
//   target, removing a non-empty directory removes it recursively;
// - names in URL paths are stored exactly as sent (never percent-decoded)
//   while query values are decoded (%XX, and '+' as a space, as Node's query
//   parser does);
// - saving is lazy: requests see the live tree at once, but only a save
//   makes it survive a restart. A save happens at `PUT files/sync` (or
//   Save()) and on a timer of its own (Options::save_interval, 5 s like the
//   real server's). Etags change only at a save;
// - a restart (Restart(), Restart(down)) loses everything not saved by then
//   (writes, creates, removes, renames, attribute and size changes) and gives
//   every node a new id;
// - several unsaved writes to overlapping ranges of one file may be combined
//   out of order by the real server. The fake is deterministic instead: it
//   counts such writes (OverlappingUnsavedWrites) and, with
//   Options::scramble_overlaps, applies them in the wrong order (the older
//   bytes win), so a client that breaks the rule gets wrong bytes.
// On top of that it can inject bad answers (see Fault) and counts requests.
//
// Choices of the fake where the real server's behaviour is not documented:
// a directory's `size` is 0; a directory cannot be hard-linked (400);
// create, remove, link and rename into a directory whose `writable` is false
// are refused (400); moving a directory below itself is refused (400); the
// timer saves only when something changed since the last save; Stop() and
// Start() alone model the network going away, not a restart: the server's
// memory (unsaved changes included) and ids are kept, and nothing is saved
// on the timer while stopped.
//
// Threading: Start, Stop, Restart(down), running(), port(), base_url() and
// the destructor must not run concurrently with one another (call them from
// the test's thread). Everything else (Restart(), Save(), faults, counters)
// may be called from any thread, also while requests are being served.
// The live and saved trees, the faults and the counters are guarded by one
// mutex; requests are served on httplib's thread pool, the save timer runs
// on a thread of its own between Start() and Stop().
#ifndef MEMFUSE_TESTS_TESTING_FAKE_INVARIANT_SERVER_H_
#define MEMFUSE_TESTS_TESTING_FAKE_INVARIANT_SERVER_H_

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "nlohmann/json_fwd.hpp"

namespace httplib {
class Server;
struct Request;
struct Response;
}  // namespace httplib

namespace memfuse::testing {

enum class InvariantKind { kFile, kDirectory, kSymbolicLink };

// "File", "Directory", "SymbolicLink": the API's spelling.
absl::string_view InvariantKindName(InvariantKind kind);
// The inverse of InvariantKindName; nullopt for anything else.
std::optional<InvariantKind> ParseInvariantKind(absl::string_view name);

// A bad answer for the next `count` requests that match `route_prefix`.
struct Fault {
  enum class Kind {
    // 200 with a body that is not JSON; the operation is not performed.
    kMalformedJson,
    // The operation is performed, then its answer is cut: the Content-Length
    // announces at least one byte more than is sent (half of the real
    // body is sent) and the connection is closed.
    kTruncatedBody,
    // Sleeps `delay`, then answers normally. Stop() cuts the sleep short
    // and the request is then answered 503 without being performed.
    kDelay,
    // 500 with a plain-text body; the operation is not performed.
    kServerError,
  };
  Kind kind = Kind::kServerError;
  int count = 1;
  // Matched against "METHOD PATH": the method, one space and the raw request
  // path without its leading '/' or its query, e.g. "POST files/7" for a
  // write to node 7 or "GET files/info/" for every stat. Empty matches
  // every request.
  std::string route_prefix;
  // For kDelay.
  absl::Duration delay = absl::ZeroDuration();
};

class FakeInvariantServer {
 public:
  struct Options {
    // 0: a free port, chosen at the first Start() and kept by later ones.
    int port = 0;
    // How long an idle keep-alive connection stays open. Stop() waits for
    // idle connections to time out (httplib has no way to cut them), so
    // this is kept shorter than Node's 5 s; a client must cope with the
    // server closing an idle connection either way.
    absl::Duration keep_alive_timeout = absl::Seconds(1);
    // How often the server saves on its own, while running. Zero: never,
    // only at `PUT files/sync` and Save() (what a test that restarts the
    // server wants, to know exactly what is lost).
    absl::Duration save_interval = absl::Seconds(5);
    // When a write overlaps a range of the same file written since the last
    // save, the overlapping part keeps the older bytes (the real server may
    // combine such writes out of order; this is the order that shows it).
    // Counted either way.
    bool scramble_overlaps = false;
  };

  static constexpr uint64_t kRootNode = 1;

  // Counter keys for RequestCount: "METHOD ROUTE", ROUTE being the API's
  // path up to its first parameter.
  static constexpr absl::string_view kInfo = "GET files/info";
  static constexpr absl::string_view kList = "GET files/directory";
  static constexpr absl::string_view kLookup = "GET files/lookup";
  static constexpr absl::string_view kRead = "GET files";
  static constexpr absl::string_view kWrite = "POST files";
  static constexpr absl::string_view kCreate = "PUT files";
  static constexpr absl::string_view kSetAttributes = "POST files/attributes";
  static constexpr absl::string_view kSetSize = "PUT files/size";
  static constexpr absl::string_view kRemove = "POST files/remove";
  static constexpr absl::string_view kRename = "PUT files/rename";
  static constexpr absl::string_view kLink = "PUT files/link";
  static constexpr absl::string_view kSync = "PUT files/sync";
  // Any request that matches no route (answered 404).
  static constexpr absl::string_view kNoRoute = "no route";

  // A tree holding only the root directory. Not started.
  FakeInvariantServer();
  explicit FakeInvariantServer(Options options);
  // Stops.
  ~FakeInvariantServer();

  FakeInvariantServer(const FakeInvariantServer&) = delete;
  FakeInvariantServer& operator=(const FakeInvariantServer&) = delete;

  // Binds 127.0.0.1:port (the same port as before after a Stop()) and
  // returns once connections are accepted. REQUIRES: not running.
  absl::Status Start();
  // Stops accepting, waits for the requests in progress (and for idle
  // keep-alive connections to time out) and joins the listen thread. The
  // tree is kept. A no-op when not running.
  void Stop();
  bool running() const { return server_ != nullptr; }

  // The bound port; 0 before the first Start().
  int port() const { return port_; }
  // "http://127.0.0.1:PORT".
  std::string base_url() const;

  // Simulates a server restart: the live tree is replaced by the saved one
  // (everything not saved is lost), then every node but the root gets a new
  // id from a counter well above every old id, so an old id answers 400
  // `Unrecognized node`. The server keeps running.
  void Restart();
  // Stop(), restart as Restart() does, stay down for `down` (connections
  // are refused), then Start() on the same port.
  absl::Status Restart(absl::Duration down);

  // What `PUT files/sync` does: etags are recomputed and the live tree is
  // saved, to be what a restart starts from. Counted in SaveCount, not as a
  // request.
  void Save();

  // Adds a fault; faults are consumed in the order they were added (the
  // first one whose prefix matches a request applies to it).
  void InjectFault(Fault fault);
  void ClearFaults();
  // Matching requests still to be spoiled by the injected faults.
  int PendingFaults() const;

  // Requests received (faulted ones included) under one counter key above.
  int64_t RequestCount(absl::string_view route) const;
  int64_t TotalRequests() const;
  // Body bytes accepted by `POST files/{n}` writes.
  int64_t BytesWritten() const;
  // Bytes answered by `GET files/{n}` reads.
  int64_t BytesRead() const;
  // `PUT files/sync` requests performed (not those spoiled by a fault).
  int64_t SyncCount() const;
  // Saves: syncs, Save() calls and saves by the timer.
  int64_t SaveCount() const;
  // Writes that overlapped a range of the same file written since the last
  // save (see Options::scramble_overlaps).
  int64_t OverlappingUnsavedWrites() const;
  // Resets the counters above (not UnsavedChanges: that is state).
  void ResetCounters();

  // Requests that changed the live tree since the last save (or restart):
  // 0 means a restart now would lose nothing.
  int64_t UnsavedChanges() const;

  // Nodes in the tree, the root included (hard links count once).
  size_t NodeCount() const;

 private:
  struct Node;
  struct Reply;
  struct Route;

  // The route of a request path (its raw target without query or leading
  // '/'); names in it are kept exactly as sent.
  static Route Classify(absl::string_view method, absl::string_view path);
  // `body` is the request body as received, whatever its Content-Type.
  void Handle(const httplib::Request& req, const std::string& body,
              httplib::Response& res);
  Reply Dispatch(const Route& route, const httplib::Request& req,
                 const std::string& body);

  // One function per endpoint; each takes the lock.
  Reply Info(uint64_t id);
  Reply List(uint64_t id);
  Reply Lookup(uint64_t parent, const std::string& name);
  Reply Read(uint64_t id, const httplib::Request& req);
  Reply Write(uint64_t id, const httplib::Request& req,
              const std::string& body);
  Reply Create(uint64_t parent, const std::string& name,
               const httplib::Request& req);
  Reply SetAttributes(uint64_t id, const std::string& body);
  Reply SetSize(uint64_t id, const httplib::Request& req);
  Reply Remove(uint64_t parent, const std::string& name);
  Reply Rename(uint64_t parent, const std::string& name,
               const httplib::Request& req);
  Reply Link(uint64_t parent, const std::string& name,
             const httplib::Request& req);
  Reply Sync();

  Node* FindLocked(uint64_t id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Node `id` if it is a directory (a file), and writable when `to_change`;
  // otherwise nullptr and `*error` is the 400 to answer.
  Node* DirectoryLocked(uint64_t id, bool to_change, Reply* error)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Node* FileLocked(uint64_t id, bool to_change, Reply* error)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint64_t NewNodeLocked(InvariantKind kind) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Drops one link to `id`; a node left without links is deleted, a
  // directory's entries with it (recursively).
  void UnlinkLocked(uint64_t id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  nlohmann::ordered_json InfoJsonLocked(const Node& node) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether `dir` is `node` or has it somewhere below.
  bool ContainsLocked(uint64_t dir, uint64_t node)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // What `PUT files/sync` does: every node's etag recomputed from content,
  // then saved_ = nodes_ and the unsaved bookkeeping cleared.
  void SaveLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // saved_ = nodes_, cheaply (file contents are shared until written).
  void SnapshotLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RenumberLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // One more request changed the live tree.
  void ChangedLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Records a write of [offset, offset + length) to `file` in
  // unsaved_writes_; returns the parts of it that overlap earlier unsaved
  // writes, as [start, end) pairs.
  std::vector<std::pair<uint64_t, uint64_t>> NoteWriteLocked(uint64_t file,
                                                             uint64_t offset,
                                                             uint64_t length)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Forgets unsaved write ranges of `file` at or beyond `size`.
  void ClipWritesLocked(uint64_t file, uint64_t size)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The save timer's thread body: saves every save_interval until
  // saver_quit_.
  void SaverLoop();
  // Takes one use of the first fault matching `key`.
  std::optional<Fault> TakeFaultLocked(absl::string_view key)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  // Start/Stop state: see the threading note at the top.
  int port_ = 0;
  std::unique_ptr<httplib::Server> server_;
  std::thread listener_;
  std::thread saver_;

  mutable absl::Mutex mu_;
  absl::flat_hash_map<uint64_t, std::unique_ptr<Node>> nodes_
      ABSL_GUARDED_BY(mu_);
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = kRootNode + 1;
  // The tree as of the last save: what a restart starts from. File contents
  // are shared with nodes_ until written (see Bytes).
  absl::flat_hash_map<uint64_t, std::unique_ptr<Node>> saved_
      ABSL_GUARDED_BY(mu_);
  // File node -> the byte ranges written since the last save, merged:
  // start -> end.
  absl::flat_hash_map<uint64_t, std::map<uint64_t, uint64_t>> unsaved_writes_
      ABSL_GUARDED_BY(mu_);
  int64_t unsaved_changes_ ABSL_GUARDED_BY(mu_) = 0;
  // Tells the save timer to end.
  bool saver_quit_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<Fault> faults_ ABSL_GUARDED_BY(mu_);
  // Set while Stop() runs, to cut kDelay sleeps short.
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_map<std::string, int64_t> request_counts_
      ABSL_GUARDED_BY(mu_);
  int64_t total_requests_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t bytes_written_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t bytes_read_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t sync_count_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t save_count_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t overlapping_writes_ ABSL_GUARDED_BY(mu_) = 0;
};

// One entry of a tree walked through the API.
struct ApiEntry {
  uint64_t node = 0;
  InvariantKind kind = InvariantKind::kFile;
  uint64_t size = 0;   // files only, from info
  std::string bytes;   // files only, read with GET files/{n}
  std::string target;  // symbolic links only
  bool executable = false;
  bool writable = true;
  int64_t modify_time_ms = 0;
};

// Path below the root ("a", "a/b"; names exactly as the server lists them,
// which is how they were sent in URL paths) -> entry. The root itself is not
// in the map.
using ApiTree = std::map<std::string, ApiEntry>;

// Walks the tree below directory `root` of the server at host:port through
// HTTP (GET files/directory, GET files/{n} for file contents), as any client
// would. An error for a failed or non-200 request, a malformed answer, a
// file whose bytes do not match its size, or a directory met twice.
absl::StatusOr<ApiTree> WalkApiTree(
    const std::string& host, int port,
    uint64_t root = FakeInvariantServer::kRootNode);

}  // namespace memfuse::testing

#endif  // MEMFUSE_TESTS_TESTING_FAKE_INVARIANT_SERVER_H_
