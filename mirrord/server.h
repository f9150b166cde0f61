// The gRPC service memfuse.mirror.v1.Mirror of mem-fuse-mirrord, over one
// Backend.
//
// Sync API: gRPC runs every call on a thread of its pool. The Apply
// handler takes a mutation only when it is ready to apply it (a reader
// thread holds at most one read ahead: that is the backpressure of
// invariant 5), applies it, retries a transient failure with backoff
// (100 ms doubling to 10 s, each distinct cause logged once) until it
// succeeds, turns permanent, or the call is cancelled, and acknowledges it
// as applied at once. Each Ack also says how far the backend holds
// everything durably (durable_seq): for a local mirror, as far as it
// applied; for a backend that saves lazily, as far as its last commit
// (group commit: when no mutation has arrived for kIdleCommit, when the
// oldest applied-but-not-durable one is kMaxCommitDelay old, or when the
// next mutation needs it), after which a notice (an Ack with seq 0) says
// so. A commit that finds the backend may have lost what it held (a server
// restart) applies those mutations again first. fsd keeps data dirty until
// it is durable, and resends after a reconnect from what was applied.
//
// Sessions: Handshake comes first (Bind, Apply and the reads before it are
// FAILED_PRECONDITION). One Apply stream at a time: a second one while the
// first lives is FAILED_PRECONDITION. A new Handshake supersedes the
// session: it cancels a live Apply stream (whose current mutation still
// completes; its Ack may be lost, and the replay of it is idempotent),
// waits for that stream to end and only then resets the backend, so a
// reconnecting fsd never races its own old stream. A Bind stream of a
// superseded session ends with ABORTED.
//
// Errors of unary calls carry the errno, when there is one, as the decimal
// text of grpc::Status::error_details().
//
// Thread-safety: every method may be called from any thread. Lock order:
// mu_ before the backend's own locks (Bind calls the backend under mu_, so
// that a concurrent Handshake cannot slip between the check and the bind);
// no lock is held across a stream read or write.
#ifndef MEMFUSE_MIRRORD_SERVER_H_
#define MEMFUSE_MIRRORD_SERVER_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "mirror.grpc.pb.h"
#include "mirrord/backend/backend.h"

namespace memfuse::mirrord {

// The absl status as a grpc::Status: same code and message, and the errno
// (if any) as decimal text in error_details.
grpc::Status ToGrpcStatus(const absl::Status& status);

class MirrorService final : public pb::Mirror::Service {
 public:
  static constexpr absl::Duration kFirstRetryDelay = absl::Milliseconds(100);
  static constexpr absl::Duration kMaxRetryDelay = absl::Seconds(10);
  // How long Stop() lets a busy Apply stream finish before cancelling it.
  static constexpr absl::Duration kStopGrace = absl::Seconds(30);
  // Group commit: how long the stream must be quiet before the held acks
  // are committed, and how old the oldest may get under steady load.
  static constexpr absl::Duration kIdleCommit = absl::Milliseconds(20);
  static constexpr absl::Duration kMaxCommitDelay = absl::Milliseconds(250);

  // `backend` must outlive the service.
  explicit MirrorService(Backend* backend);
  MirrorService(const MirrorService&) = delete;
  MirrorService& operator=(const MirrorService&) = delete;

  grpc::Status Handshake(grpc::ServerContext* context,
                         const pb::HandshakeRequest* request,
                         pb::HandshakeResponse* response) override
      ABSL_LOCKS_EXCLUDED(mu_);
  grpc::Status Bind(grpc::ServerContext* context,
                    grpc::ServerReader<pb::Binding>* reader,
                    pb::BindResponse* response) override
      ABSL_LOCKS_EXCLUDED(mu_);
  grpc::Status Apply(grpc::ServerContext* context,
                     grpc::ServerReaderWriter<pb::Ack, pb::Mutation>* stream)
      override ABSL_LOCKS_EXCLUDED(mu_);
  grpc::Status ListDirectory(grpc::ServerContext* context,
                             const pb::ListDirectoryRequest* request,
                             pb::ListDirectoryResponse* response) override
      ABSL_LOCKS_EXCLUDED(mu_);
  grpc::Status ReadBlock(grpc::ServerContext* context,
                         const pb::ReadBlockRequest* request,
                         pb::ReadBlockResponse* response) override
      ABSL_LOCKS_EXCLUDED(mu_);
  grpc::Status ReadLink(grpc::ServerContext* context,
                        const pb::ReadLinkRequest* request,
                        pb::ReadLinkResponse* response) override
      ABSL_LOCKS_EXCLUDED(mu_);
  grpc::Status Stat(grpc::ServerContext* context,
                    const pb::StatRequest* request,
                    pb::StatResponse* response) override
      ABSL_LOCKS_EXCLUDED(mu_);
  grpc::Status StatFs(grpc::ServerContext* context,
                      const pb::StatFsRequest* request,
                      pb::StatFsResponse* response) override
      ABSL_LOCKS_EXCLUDED(mu_);
  grpc::Status GetStatus(grpc::ServerContext* context,
                         const pb::StatusRequest* request,
                         pb::StatusResponse* response) override
      ABSL_LOCKS_EXCLUDED(mu_);

  // For a clean exit (SIGTERM): the Apply stream takes no new mutation; the
  // one being applied finishes, what was applied is committed and
  // acknowledged, and the stream ends; retries stop; new calls get
  // UNAVAILABLE. Returns once
  // no Apply stream runs, so grpc::Server::Shutdown() with an immediate
  // deadline then loses no applied mutation's Ack.
  void Stop() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  // Applies `mutation`, retrying transient failures. nullopt when the call
  // was cancelled, the session superseded or the agent stopped first.
  std::optional<pb::Ack> ApplyWithRetry(grpc::ServerContext* context,
                                        const pb::Mutation& mutation,
                                        uint64_t generation)
      ABSL_LOCKS_EXCLUDED(mu_);
  // An applied mutation whose Ack waits for the backend to make it durable
  // (or for the acks before it).
  struct Held {
    pb::Mutation mutation;
    pb::Ack ack;
  };
  // What the Apply handler gets next from the reader thread.
  enum class Next { kMutation, kIdle, kEnd };
  Next TakeMutation(pb::Mutation* out, absl::Duration timeout,
                    uint64_t generation) ABSL_LOCKS_EXCLUDED(mu_);
  // Reads the stream into next_ until it ends or the handler says stop.
  void ReadMutations(grpc::ServerReaderWriter<pb::Ack, pb::Mutation>* stream)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Commits until the backend holds every applied mutation in `held`
  // durably, applying them again if it says it lost them; false when the
  // stream must end first.
  bool CommitHeld(grpc::ServerContext* context, std::deque<Held>* held,
                  uint64_t generation) ABSL_LOCKS_EXCLUDED(mu_);
  // Tells fsd how far the backend holds everything durably (an Ack with
  // seq 0 and durable_seq), and drops what that covers from `held`; a
  // mutation that, applied again, found its object missing is named in
  // an Ack of its own. False if the client left.
  bool SendDurableNotice(
      grpc::ServerReaderWriter<pb::Ack, pb::Mutation>* stream,
      std::deque<Held>* held);
  // Sleeps `delay`; false if the wait was cut short by a cancellation, a
  // newer session or Stop().
  bool WaitToRetry(grpc::ServerContext* context, absl::Duration delay,
                   uint64_t generation) ABSL_LOCKS_EXCLUDED(mu_);
  // Why an Apply or Bind stream of session `generation` must end, if so.
  std::optional<grpc::Status> EndReasonLocked(uint64_t generation) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // OK once a handshake has been made (and the agent is not stopping).
  grpc::Status CheckReadyLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool NoApplyStream() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return apply_context_ == nullptr;
  }
  bool NoHandshakeRunning() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !handshaking_;
  }

  Backend* const backend_;

  mutable absl::Mutex mu_;
  absl::CondVar wake_;  // Stop() or a new session: retry waits end early
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool handshaking_ ABSL_GUARDED_BY(mu_) = false;
  bool handshaken_ ABSL_GUARDED_BY(mu_) = false;
  // Bumped by every Handshake: streams of an older session end.
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  // The live Apply stream's call (null: none), and whether it is applying
  // a mutation right now (then it is not cancelled by Stop()).
  grpc::ServerContext* apply_context_ ABSL_GUARDED_BY(mu_) = nullptr;
  bool apply_busy_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t bytes_in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  // The reader thread's hand-over: the next mutation read (at most one),
  // whether the stream ended, and the handler's word to stop reading.
  std::optional<pb::Mutation> next_ ABSL_GUARDED_BY(mu_);
  bool reader_done_ ABSL_GUARDED_BY(mu_) = false;
  bool reader_stop_ ABSL_GUARDED_BY(mu_) = false;
  // For the status: the mutation being retried now and how it fails.
  std::string retrying_ ABSL_GUARDED_BY(mu_);
  std::string retrying_error_ ABSL_GUARDED_BY(mu_);
  uint32_t retrying_attempts_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t reapplied_ ABSL_GUARDED_BY(mu_) = 0;
};

// A started server for `service` with no listening port: connections are
// handed to it with grpc::AddInsecureChannelFromFd(). Accepts messages as
// large as a Write of fsd's largest block. Null on failure.
std::unique_ptr<grpc::Server> StartServer(grpc::Service* service);

}  // namespace memfuse::mirrord

#endif  // MEMFUSE_MIRRORD_SERVER_H_
