// fsd's side of the mirror, put together: reaching the agent and keeping
// it (MirrorChannel), loading what the mirror holds at mount, streaming the
// MutationLog (MutationStreamer), the Tree's reads of the mirror
// (MirrorReads), re-creating what the mirror lost, fsync barriers and the
// drain at exit (drain.h).
//
// When the connection breaks (mirrord killed, restarted, crashed) fsd keeps
// serving from memory and one thread reconnects with backoff, respawning a
// child agent; then it tells the new agent where every known object is
// (Bind) and resends everything unacknowledged after the agent's last
// applied sequence number (DESIGN.md, invariant 7).
//
// Thread-safe: Sync() and StatFs() are called from FUSE worker threads;
// Start(), Drain() and Stop() from the main thread.
#ifndef MEMFUSE_FSD_MIRROR_CLIENT_H_
#define MEMFUSE_FSD_MIRROR_CLIENT_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "fsd/mirror_channel.h"
#include "fsd/mirror_reads.h"
#include "fsd/mutation_log.h"
#include "fsd/mutation_streamer.h"
#include "fsd/options.h"
#include "fsd/tree.h"

namespace memfuse::fsd {

class MirrorClient {
 public:
  MirrorClient(const Options& options, Tree* tree, MutationLog* log);
  MirrorClient(const MirrorClient&) = delete;
  MirrorClient& operator=(const MirrorClient&) = delete;
  ~MirrorClient();

  // Reaches mirrord (spawning it if needed), loads the mirror's content into
  // the tree and starts streaming. Fails if mirrord cannot be reached within
  // a few seconds or the mirror's files do not fit in the cache.
  absl::Status Start();

  // What the Tree reads the mirror through (Tree::SetMirrorReader).
  MirrorReader* reader() { return &reads_; }

  // A durability barrier for object `id` (0: everything): returns once all
  // mutations before it are applied and fsync'ed in the mirror. EIO if
  // the mirror refused data of `id` for good; EINTR once `interrupted` is
  // set (the program's FUSE_INTERRUPT; the barrier itself still goes to
  // the mirror).
  absl::Status Sync(uint64_t id,
                    const std::atomic<bool>* interrupted = nullptr);
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

  // The mirror's capacity, for statfs(2) on the mount (MirrorReads).
  std::optional<pb::StatFsResponse> StatFs() { return reads_.StatFs(); }

 private:
  // Connects and shakes hands; the first time loads the mirror's root
  // (and with --lazy-load false, everything), later rewinds the log to
  // what the agent applied and sends it the bindings.
  absl::Status Connect(bool first);
  // Streams, reconnecting with backoff, until Stop() (a thread).
  void Run();
  // The repairs' blocks, sent under the dirty limit (a thread).
  void ResendRepairs();

  const Options options_;
  Tree* const tree_;
  MutationLog* const log_;
  MirrorChannel channel_;
  MirrorReads reads_;
  MutationStreamer streamer_;

  absl::Mutex mu_;
  // Repairs whose blocks are still to be sent.
  std::deque<Tree::RepairData> repairs_ ABSL_GUARDED_BY(mu_);

  std::atomic<bool> stopping_{false};
  std::thread runner_;
  std::thread prefetcher_;
  std::thread repairer_;
};

}  // namespace memfuse::fsd

#endif  // MEMFUSE_FSD_MIRROR_CLIENT_H_
