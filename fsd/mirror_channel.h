// fsd's connection to the mirror agent: reaching it (spawning it over a
// socketpair for --mirror, or connecting to --mirror-socket), the gRPC
// channel, the handshake, the bindings a new agent is sent, the data region
// a spawned agent shares, and calls that wait for an agent that is
// restarting. It knows nothing of the tree or the log: MirrorClient decides
// what to do with a handshake's answer and which bindings to send.
//
// Thread-safe. Connect() and Handshake() are called by one thread at a time
// (the client's start, then its reconnecting thread); stub(), the region and
// CallWithRetry from any thread, holding a stub across a reconnect safely.
#ifndef MEMFUSE_FSD_MIRROR_CHANNEL_H_
#define MEMFUSE_FSD_MIRROR_CHANNEL_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/shared_region.h"
#include "fsd/agent_process.h"
#include "fsd/options.h"
#include "mirror.grpc.pb.h"

namespace memfuse::fsd {

namespace pb = ::memfuse::mirror::v1;

// The agent's answer as fsd's own currency, the one conversion at fsd's
// gRPC edge: the code, "mem-fuse-mirrord: " and the message, and the errno
// the agent sent with it (its error details) as the status's payload.
absl::Status FromGrpcStatus(const grpc::Status& status);

class MirrorChannel {
 public:
  using Stub = pb::Mirror::Stub;

  // How long a call waits for an agent that is restarting.
  static constexpr absl::Duration kCallTimeout = absl::Seconds(30);

  explicit MirrorChannel(const Options& options);
  MirrorChannel(const MirrorChannel&) = delete;
  MirrorChannel& operator=(const MirrorChannel&) = delete;
  ~MirrorChannel();

  // Makes the data region for spawned agents (none with --mirror-socket,
  // or when it cannot be made: then file data goes over the socket).
  // Call once, before the first Connect().
  void MakeRegion(uint64_t inflight_bytes);

  // A new channel: a freshly spawned agent (ending the last one) or a new
  // connection to the socket.
  absl::Status Connect() ABSL_LOCKS_EXCLUDED(mu_);
  // The handshake on the current channel; notes whether the agent mapped
  // the data region.
  absl::StatusOr<pb::HandshakeResponse> Handshake() ABSL_LOCKS_EXCLUDED(mu_);
  // Tells the current agent where every known object is.
  absl::Status Bind(const std::vector<pb::Binding>& bindings)
      ABSL_LOCKS_EXCLUDED(mu_);

  // The current channel's stub (null before the first connect and after
  // Stop()). Calls in flight keep theirs across a reconnect.
  std::shared_ptr<Stub> stub() ABSL_LOCKS_EXCLUDED(mu_);

  // Runs `call(stub, ctx)` and, while the agent is unavailable
  // (restarting), again until it answers or kCallTimeout passes.
  template <typename Call>
  grpc::Status CallWithRetry(Call call);

  // The spawned agent, if it ended by itself: how. Else nullopt.
  std::optional<std::string> AgentEnded() ABSL_LOCKS_EXCLUDED(mu_);
  // Ends a spawned agent now (a start that gave up).
  void EndAgent() ABSL_LOCKS_EXCLUDED(mu_);

  // The data region, when the current agent mapped it (else null: the
  // bytes go inline). The allocator hands out ranges of it.
  bool agent_has_region() const { return agent_has_region_; }
  const std::shared_ptr<common::SharedRegion>& region() const {
    return region_;
  }
  const std::shared_ptr<common::RegionAllocator>& region_ranges() const {
    return region_ranges_;
  }

  // Waits up to `timeout` unless Stop() comes first; true once stopped.
  bool WaitStopped(absl::Duration timeout) {
    return stopped_.WaitForNotificationWithTimeout(timeout);
  }
  bool stopping() const { return stopped_.HasBeenNotified(); }
  // Wakes every wait (WaitStopped, CallWithRetry).
  void Stop() ABSL_LOCKS_EXCLUDED(mu_);
  // After Stop() and once nothing uses the stub any more: closes the
  // channel; a spawned agent gets up to two seconds to finish what it is
  // applying, then ends.
  void Close() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  const Options options_;
  const uint64_t session_id_;

  absl::Mutex mu_;
  std::shared_ptr<Stub> stub_ ABSL_GUARDED_BY(mu_);
  // The agent fsd started (--mirror), made at the first connect.
  std::unique_ptr<AgentProcess> agent_ ABSL_GUARDED_BY(mu_);
  bool stop_called_ ABSL_GUARDED_BY(mu_) = false;

  // Shared with the deleters of the messages that hold ranges of it, which
  // may outlive this channel in the log.
  std::shared_ptr<common::SharedRegion> region_;
  std::shared_ptr<common::RegionAllocator> region_ranges_;
  std::atomic<bool> agent_has_region_{false};

  absl::Notification stopped_;
};

template <typename Call>
grpc::Status MirrorChannel::CallWithRetry(Call call) {
  const absl::Time give_up = absl::Now() + kCallTimeout;
  grpc::Status status;
  while (true) {
    std::shared_ptr<Stub> current = stub();
    if (current == nullptr) {
      status = grpc::Status(grpc::StatusCode::UNAVAILABLE, "not connected");
    } else {
      grpc::ClientContext ctx;
      ctx.set_deadline(absl::ToChronoTime(absl::Now() + kCallTimeout));
      ctx.set_wait_for_ready(true);
      status = call(current.get(), &ctx);
    }
    if (status.ok() || stopping() ||
        status.error_code() != grpc::StatusCode::UNAVAILABLE ||
        absl::Now() >= give_up) {
      return status;
    }
    WaitStopped(absl::Milliseconds(100));
  }
}

}  // namespace memfuse::fsd

#endif  // MEMFUSE_FSD_MIRROR_CHANNEL_H_
