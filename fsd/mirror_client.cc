// fsd's side of the mirror, put together (mirror_client.h).
#include "fsd/mirror_client.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status.h"
#include "fsd/drain.h"
#include "fsd/mirror_loader.h"
#include "fsd/units.h"
#include "glog/logging.h"

namespace memfuse::fsd {
namespace {

// How long fsd waits for mirrord at mount before giving up.
constexpr absl::Duration kStartTimeout = absl::Seconds(10);
constexpr absl::Duration kMaxBackoff = absl::Seconds(5);
// How much lower than fsd's FUSE threads mirroring runs (nice(2) steps).
constexpr int kBackgroundNice = 5;

}  // namespace

MirrorClient::MirrorClient(const Options& options, Tree* tree,
                           MutationLog* log)
    : options_(options), tree_(tree), log_(log), channel_(options),
      reads_(&channel_),
      streamer_(&channel_, log, options.block_bytes(), [this](uint64_t id) {
        // The mirror lost an object: it is re-created from the tree before
        // the next ack is read; its blocks follow on another thread.
        Tree::RepairData data = tree_->Repair(id);
        if (data.inode != nullptr) {
          absl::MutexLock l(&mu_);
          repairs_.push_back(std::move(data));
        }
      }) {}

MirrorClient::~MirrorClient() { Stop(); }

absl::Status MirrorClient::Connect(bool first) {
  RETURN_IF_ERROR(channel_.Connect());
  absl::StatusOr<pb::HandshakeResponse> response = channel_.Handshake();
  if (!response.ok()) return response.status();
  tree_->SetMirrorLimits(response->limits());
  if (first) {
    LOG(INFO) << "mirror: " << response->backend_kind() << " "
              << response->backend_description()
              << (channel_.agent_has_region()
                      ? absl::StrCat("; file data through a shared ",
                                     MiB(channel_.region()->size()),
                                     " region")
                      : std::string("; file data over the socket"));
    tree_->LoadRoot(response->root(), response->root_xattrs());
    // --lazy-load false: every directory now.
    return options_.lazy_load ? absl::OkStatus() : ListWholeMirror(tree_);
  }
  log_->Rewind(response->last_applied_seq());
  return channel_.Bind(tree_->MirrorBindings(log_));
}

absl::Status MirrorClient::Start() {
  const absl::Time give_up = absl::Now() + kStartTimeout;
  channel_.MakeRegion(MutationLog::kMaxInflightBytes);
  absl::Status status;
  while (true) {
    status = Connect(/*first=*/true);
    if (!status.ok() && options_.mirror_socket.empty()) {
      // A spawned agent that exited has said why on stderr already.
      if (std::optional<std::string> ended = channel_.AgentEnded()) {
        return absl::FailedPreconditionError(absl::StrCat(
            "mem-fuse-mirrord exited (", *ended, ") before answering"));
      }
    }
    if (status.ok() || absl::Now() >= give_up ||
        status.code() != absl::StatusCode::kUnavailable) {
      break;
    }
    absl::SleepFor(absl::Milliseconds(200));
  }
  if (!status.ok()) {
    channel_.EndAgent();
    return status;
  }
  runner_ = std::thread([this] { Run(); });
  repairer_ = std::thread([this] { ResendRepairs(); });
  if (!options_.lazy_load) {
    prefetcher_ = std::thread([this] { PrefetchMirror(tree_, stopping_); });
  }
  return absl::OkStatus();
}

void MirrorClient::Run() {
  // Mirroring is background work: on a busy machine the program writing to
  // the mount goes first, and the dirty limit makes sure the mirror is not
  // starved for long (writers wait, and then it has the CPU).
  setpriority(PRIO_PROCESS, static_cast<id_t>(gettid()), kBackgroundNice);
  bool connected = true;
  absl::Duration backoff = absl::Milliseconds(100);
  std::string last_error;
  while (!stopping_) {
    if (!connected) {
      const absl::Status status = Connect(/*first=*/false);
      if (!status.ok()) {
        if (std::string(status.message()) != last_error) {
          last_error = std::string(status.message());
          LOG(WARNING) << "mirror agent unavailable, retrying: " << last_error;
        }
        channel_.WaitStopped(backoff);
        backoff = std::min(backoff * 2, kMaxBackoff);
        continue;
      }
      const MutationLog::Backlog backlog = log_->GetBacklog();
      LOG(INFO) << "mirror agent back; resending " << backlog.mutations
                << " unacknowledged changes";
      // What the last agent applied but did not make durable is made so by
      // the new one's first commit: a barrier asks for it.
      if (log_->HasLimbo()) {
        pb::Mutation barrier;
        barrier.mutable_sync()->set_id(0);
        log_->Append(std::move(barrier));
      }
      backoff = absl::Milliseconds(100);
      last_error.clear();
    }
    streamer_.Stream();
    connected = false;
  }
}

void MirrorClient::ResendRepairs() {
  while (true) {
    Tree::RepairData next;
    {
      absl::MutexLock l(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_.load() || !repairs_.empty();
      };
      mu_.Await(absl::Condition(&ready));
      if (repairs_.empty()) return;  // stopping
      next = std::move(repairs_.front());
      repairs_.pop_front();
    }
    // After Stop() the log is shut down: this returns at once.
    tree_->ResendBlocks(next);
  }
}

void MirrorClient::Abandon() { log_->Shutdown(); }

absl::Status MirrorClient::Sync(uint64_t id,
                                const std::atomic<bool>* interrupted) {
  const absl::Status interrupted_status =
      common::ErrnoStatus(EINTR, "the barrier's wait was interrupted");
  // The mirror may have lost the object: then the barrier goes again after
  // its repair (a bounded number of times: MutationLog::kMaxRepairs).
  absl::Status result = common::ErrnoStatus(
      EIO, "the mirror lost the object again after every repair");
  for (int round = 0; round <= MutationLog::kMaxRepairs; ++round) {
    pb::Mutation m;
    m.mutable_sync()->set_id(id);
    const uint64_t seq = log_->Append(std::move(m));
    const int error = log_->WaitApplied(seq, interrupted);
    if (error == EINTR) return interrupted_status;
    if (error == MutationLog::kRepairing) {
      // The repair's blocks wait for room under the dirty limit.
      if (!log_->WaitRepairAppended(id, interrupted)) {
        return interrupted_status;
      }
      continue;
    }
    // The barrier's error includes a refusal of the file's data that
    // stood when it was applied (MutationLog::WaitApplied).
    if (error != 0) {
      return common::ErrnoStatus(
          EIO, absl::StrCat("the mirror refused changes of it (errno ",
                            error, ")"));
    }
    // Acks before the barrier made fsd repair objects the mirror lost: the
    // barrier goes again after those repairs. (They are all begun by now:
    // the thread reading acks begins them before it reads the next.)
    result = absl::OkStatus();
    // Their blocks are appended on another thread, under the dirty limit.
    if (!log_->WaitRepairsAppended(interrupted)) return interrupted_status;
    if (log_->RepairedAfter(seq)) continue;
    return absl::OkStatus();
  }
  return result;
}

std::string MirrorClient::StuckOn() {
  std::optional<MutationLog::Front> front = log_->OldestUnacked();
  if (!front.has_value()) return "";
  std::string what = absl::StrCat(front->what, " ");
  if (front->id != 0) {
    absl::StrAppend(&what, tree_->PathOf(front->id));
  } else {
    absl::StrAppend(&what, "of the whole mount");
  }
  pb::StatusResponse status;
  grpc::Status asked = grpc::Status(grpc::StatusCode::UNAVAILABLE, "");
  if (std::shared_ptr<MirrorChannel::Stub> stub = channel_.stub()) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
    asked = stub->GetStatus(&ctx, pb::StatusRequest(), &status);
  }
  if (!asked.ok()) {
    absl::StrAppend(&what, ": the mirror agent does not answer (",
                    asked.error_message().empty() ? "not connected"
                                                  : asked.error_message(),
                    ")");
  } else if (!status.retrying().empty()) {
    absl::StrAppend(&what, ": ", status.retrying_error(), " (",
                    status.retrying_attempts(), " attempts)");
  } else if (!status.last_error().empty() && !status.backend_healthy()) {
    absl::StrAppend(&what, ": ", status.last_error());
  }
  return what;
}

bool MirrorClient::Drain(
    const std::atomic<bool>& abort,
    const std::function<void(std::string_view)>& report) {
  DrainOptions options;
  options.abort = &abort;
  options.stuck_on = [this] { return StuckOn(); };
  options.report = report;
  return DrainLog(log_, options);
}

void MirrorClient::Stop() {
  {
    absl::MutexLock l(&mu_);
    if (stopping_.exchange(true)) return;
  }
  streamer_.Stop();
  channel_.Stop();
  log_->Shutdown();
  if (prefetcher_.joinable()) prefetcher_.join();
  if (runner_.joinable()) runner_.join();
  if (repairer_.joinable()) repairer_.join();
  channel_.Close();
}

}  // namespace memfuse::fsd
