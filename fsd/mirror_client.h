// fsd's side of the mirror: the connection to mirrord, loading what the
// mirror holds at mount, streaming the MutationLog, fsync barriers and the
// drain at exit.
//
// Two ways to reach mirrord: spawn it as a child over a socketpair (one
// command, --mirror), or connect to a Unix socket (--mirror-socket). When
// the connection breaks (mirrord killed, restarted, crashed) fsd keeps
// serving from memory and one thread reconnects with backoff, respawning the
// child in the first mode; then it tells the new agent where every known
// object is (Bind) and resends everything unacknowledged after the agent's
// last applied sequence number (DESIGN.md, invariant 7).
//
// Thread-safe: Sync() is called from FUSE worker threads; Start(), Drain()
// and Stop() from the main thread.
#ifndef MEMFUSE_FSD_MIRROR_CLIENT_H_
#define MEMFUSE_FSD_MIRROR_CLIENT_H_

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/shared_region.h"
#include "fsd/agent_process.h"
#include "fsd/mirror_reader.h"
#include "fsd/mutation_log.h"
#include "fsd/options.h"
#include "fsd/tree.h"
#include "mirror.grpc.pb.h"

namespace memfuse::fsd {

class MirrorClient : public MirrorReader {
 public:
  MirrorClient(const Options& options, Tree* tree, MutationLog* log);
  MirrorClient(const MirrorClient&) = delete;
  MirrorClient& operator=(const MirrorClient&) = delete;
  ~MirrorClient();

  // Reaches mirrord (spawning it if needed), loads the mirror's content into
  // the tree and starts streaming. Fails if mirrord cannot be reached within
  // a few seconds or the mirror's files do not fit in the cache.
  absl::Status Start();

  // A durability barrier for object `id` (0: everything): returns once all
  // mutations before it are applied and fsync'ed in the mirror. Returns an
  // errno: EIO if the mirror refused data of `id` for good.
  // EINTR once `interrupted` is set (the program's FUSE_INTERRUPT; the
  // barrier itself still goes to the mirror).
  int Sync(uint64_t id, const std::atomic<bool>* interrupted = nullptr);
  // A forced exit: every wait for the mirror on a FUSE thread returns now
  // (their programs get EIO), so that the session can end.
  void Abandon();

  // Waits until the mirror has everything, printing progress to stderr every
  // second once it takes longer than one (each line also goes to `report`).
  // Returns false, saying what was not mirrored, if `abort` becomes true
  // first.
  bool Drain(const std::atomic<bool>& abort,
             const std::function<void(std::string_view)>& report = {});

  // What the oldest unacknowledged change is and why the mirror has not
  // taken it (the agent's retry state), for a drain that makes no
  // progress; empty when nothing waits.
  std::string StuckOn();

  // Ends the stream and the agent (after Drain, or to give up).
  void Stop();

  // MirrorReader: through the current agent, waiting for one to be back
  // (up to kReadTimeout) if it is restarting.
  absl::StatusOr<uint64_t> ReadBlock(uint64_t id, uint64_t offset,
                                     uint64_t length, char* out) override;
  absl::StatusOr<pb::ListDirectoryResponse> ListDirectory(
      uint64_t id, uint64_t first_id, uint64_t max_new_ids) override;

  // The mirror's capacity, for statfs(2) on the mount (FUSE threads).
  // Asks the agent at most about once a second (`df` in a loop costs it
  // nothing) and never waits long for it: while one caller asks, or when
  // the agent cannot answer (restarting, gone), the last answer stands;
  // nullopt until a first one came.
  std::optional<pb::StatFsResponse> StatFs() ABSL_LOCKS_EXCLUDED(statfs_mu_);

 private:
  using Stub = memfuse::mirror::v1::Mirror::Stub;

  // A new channel: a freshly spawned agent or the socket.
  absl::Status ConnectLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Handshake on the current channel; rewinds the log to what the agent
  // has applied and sends the bindings.
  absl::Status HandshakeAndBind(bool first);
  // --lazy-load false: lists every directory (at mount).
  absl::Status LoadMirror();
  // --lazy-load false: reads file data until the cache is full (a thread).
  void Prefetch();
  std::shared_ptr<Stub> CurrentStub();
  template <typename Call>
  grpc::Status CallWithRetry(std::string_view what, Call call);
  void Run();
  // One Apply stream, until it breaks or Stop().
  void Stream(Stub* stub);
  // The repairs' blocks, sent under the dirty limit (a thread).
  void ResendRepairs();
  // The Mutation for a data slot taken from the log: its bytes in the data
  // region when the agent has it and there is room, else inline.
  std::shared_ptr<const pb::Mutation> BuildWrite(
      const MutationLog::Outgoing& out);
  // `message` as this agent can take it: a write naming the data region
  // is sent inline to an agent without the region.
  std::shared_ptr<const pb::Mutation> ForThisAgent(
      std::shared_ptr<const pb::Mutation> message);

  const Options options_;
  Tree* const tree_;
  MutationLog* const log_;
  const uint64_t session_id_;

  absl::Mutex mu_;
  // Shared with the reads in flight on FUSE threads, which may outlive a
  // reconnect.
  std::shared_ptr<Stub> stub_ ABSL_GUARDED_BY(mu_);
  // The agent fsd started (--mirror), made at the first connect.
  std::unique_ptr<AgentProcess> agent_ ABSL_GUARDED_BY(mu_);
  // The live Apply stream's call, for Stop() to cancel.
  grpc::ClientContext* stream_ctx_ ABSL_GUARDED_BY(mu_) = nullptr;

  // The data region passed to spawned agents (common/shared_region.h); null
  // with --mirror-socket. Shared with the deleters of the messages that
  // hold ranges of it, which may outlive this client in the log.
  std::shared_ptr<common::SharedRegion> region_;
  std::shared_ptr<common::RegionAllocator> region_ranges_;
  // The current agent mapped the region.
  std::atomic<bool> agent_has_region_{false};

  // StatFs()'s last answer and when it was last asked for. Never held
  // with mu_ nor across the call to the agent.
  absl::Mutex statfs_mu_;
  std::optional<pb::StatFsResponse> statfs_ ABSL_GUARDED_BY(statfs_mu_);
  absl::Time statfs_asked_ ABSL_GUARDED_BY(statfs_mu_) = absl::InfinitePast();
  bool statfs_asking_ ABSL_GUARDED_BY(statfs_mu_) = false;

  std::atomic<bool> stopping_{false};
  absl::Notification stopped_;
  std::thread runner_;
  std::thread prefetcher_;
  std::thread repairer_;
  // Repairs whose blocks are still to be sent.
  std::deque<Tree::RepairData> repairs_ ABSL_GUARDED_BY(mu_);
};

}  // namespace memfuse::fsd

#endif  // MEMFUSE_FSD_MIRROR_CLIENT_H_
