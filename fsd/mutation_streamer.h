// Sends the MutationLog to the mirror agent and hands its acknowledgements
// back: one Apply stream at a time on the channel's current agent, one
// thread writing what the log gives it next (building a file's Write from
// the file's bytes at that moment, into the data region when the agent has
// it) and one reading acks into the log. When the stream breaks, Stream()
// returns and the client reconnects; the log resends what was not
// acknowledged (DESIGN.md, invariant 7).
//
// Thread-safe: Stream() runs on the client's mirroring thread; Stop() from
// any thread.
#ifndef MEMFUSE_FSD_MUTATION_STREAMER_H_
#define MEMFUSE_FSD_MUTATION_STREAMER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "fsd/mirror_channel.h"
#include "fsd/mutation_log.h"

namespace memfuse::fsd {

class MutationStreamer {
 public:
  // `lost` is called, on the thread reading acks and before it reads the
  // next, with each object an ack says the mirror lost.
  MutationStreamer(MirrorChannel* channel, MutationLog* log,
                   uint64_t block_size, std::function<void(uint64_t)> lost)
      : channel_(channel), log_(log), block_size_(block_size),
        lost_(std::move(lost)) {}
  MutationStreamer(const MutationStreamer&) = delete;
  MutationStreamer& operator=(const MutationStreamer&) = delete;

  // One Apply stream to the current agent, until it breaks or Stop().
  void Stream() ABSL_LOCKS_EXCLUDED(mu_);
  // Cancels the stream in flight (a send blocked on an agent that reads
  // nothing would otherwise never return); Stream() returns at once from
  // now on.
  void Stop() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  // The Mutation for a data slot taken from the log: its bytes in the data
  // region when the agent has it and there is room, else inline.
  std::shared_ptr<const pb::Mutation> BuildWrite(
      const MutationLog::ToSend& out);
  // `message` as this agent can take it: a write naming the data region
  // is sent inline to an agent without the region.
  std::shared_ptr<const pb::Mutation> ForThisAgent(
      std::shared_ptr<const pb::Mutation> message);

  MirrorChannel* const channel_;
  MutationLog* const log_;
  const uint64_t block_size_;
  const std::function<void(uint64_t)> lost_;

  std::atomic<bool> stopping_{false};
  absl::Mutex mu_;
  // The live stream's call, for Stop() to cancel.
  grpc::ClientContext* stream_ctx_ ABSL_GUARDED_BY(mu_) = nullptr;
};

}  // namespace memfuse::fsd

#endif  // MEMFUSE_FSD_MUTATION_STREAMER_H_
