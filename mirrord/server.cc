#include "mirrord/server.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "glog/logging.h"
#include "mirrord/backend/backend_common.h"

namespace memfuse::mirrord {
namespace {

// A Write carries at most one block (fsd's largest: 64 MiB), plus framing.
constexpr int kMaxMessageBytes = (64 << 20) + (1 << 20);
// The largest block read answered inline (fsd's largest --block-size).
constexpr uint64_t kMaxInlineRead = 64 << 20;
constexpr uint32_t kProtocolVersion = 1;
// How much lower than the read calls the Apply stream runs (nice(2) steps).
constexpr int kApplyNice = 5;

grpc::Status Unavailable() {
  return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the agent is stopping");
}

}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  const int err = common::StatusToErrno(status);
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()),
                      err > 0 ? absl::StrCat(err) : std::string());
}

// --- session ---

grpc::Status MirrorService::Handshake(grpc::ServerContext* context,
                                      const pb::HandshakeRequest* request,
                                      pb::HandshakeResponse* response) {
  if (request->protocol_version() != kProtocolVersion) {
    return grpc::Status(
        grpc::StatusCode::FAILED_PRECONDITION,
        absl::StrCat("protocol version ", request->protocol_version(),
                     " is not supported; this agent speaks ",
                     kProtocolVersion));
  }
  {
    absl::MutexLock l(&mu_);
    if (stopping_) return Unavailable();
    mu_.Await(absl::Condition(this, &MirrorService::NoHandshakeRunning));
    if (stopping_) return Unavailable();
    handshaking_ = true;
    handshaken_ = false;
    ++generation_;
    wake_.SignalAll();
    if (apply_context_ != nullptr) {
      LOG(INFO) << "a new handshake supersedes the Apply stream";
      apply_context_->TryCancel();
    }
    mu_.Await(absl::Condition(this, &MirrorService::NoApplyStream));
  }
  absl::StatusOr<pb::HandshakeResponse> result = backend_->Handshake(*request);
  absl::MutexLock l(&mu_);
  handshaking_ = false;
  if (!result.ok()) {
    LOG(WARNING) << "handshake failed: " << result.status();
    return ToGrpcStatus(result.status());
  }
  handshaken_ = true;
  *response = std::move(*result);
  if (const common::MappedRegion* region = backend_->shared_region()) {
    response->set_shared_region_size(region->size());
  }
  return grpc::Status::OK;
}

grpc::Status MirrorService::CheckReadyLocked() const {
  if (stopping_) return Unavailable();
  if (!handshaken_) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        "Handshake must come first");
  }
  return grpc::Status::OK;
}

std::optional<grpc::Status> MirrorService::EndReasonLocked(
    uint64_t generation) const {
  if (stopping_) return Unavailable();
  if (generation != generation_) {
    return grpc::Status(grpc::StatusCode::ABORTED,
                        "superseded by a newer handshake");
  }
  return std::nullopt;
}

grpc::Status MirrorService::Bind(grpc::ServerContext* context,
                                 grpc::ServerReader<pb::Binding>* reader,
                                 pb::BindResponse* response) {
  uint64_t generation;
  {
    absl::MutexLock l(&mu_);
    if (grpc::Status ready = CheckReadyLocked(); !ready.ok()) return ready;
    generation = generation_;
  }
  uint64_t bound = 0;
  pb::Binding binding;
  while (reader->Read(&binding)) {
    absl::MutexLock l(&mu_);
    if (std::optional<grpc::Status> end = EndReasonLocked(generation)) {
      return *end;
    }
    absl::Status added = backend_->Bind(binding);
    if (!added.ok()) {
      LOG(WARNING) << "Bind refused: " << added.message();
      return ToGrpcStatus(added);
    }
    ++bound;
  }
  VLOG(1) << "bound " << bound << " objects";
  response->set_bound(bound);
  return grpc::Status::OK;
}

// --- the mutation stream ---

grpc::Status MirrorService::Apply(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<pb::Ack, pb::Mutation>* stream) {
  uint64_t generation;
  {
    absl::MutexLock l(&mu_);
    if (grpc::Status ready = CheckReadyLocked(); !ready.ok()) return ready;
    if (apply_context_ != nullptr) {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                          "another Apply stream is active");
    }
    apply_context_ = context;
    apply_busy_ = false;
    generation = generation_;
  }
  // Applying is background work for the program on the mount, reading
  // (ReadBlock, ListDirectory) is not: this stream's thread runs at a lower
  // priority while it lasts, the read calls' threads at the agent's own.
  const id_t self = static_cast<id_t>(gettid());
  errno = 0;
  const int own_nice = getpriority(PRIO_PROCESS, self);
  if (errno == 0) setpriority(PRIO_PROCESS, self, own_nice + kApplyNice);
  // (An agent without CAP_SYS_NICE cannot go back up: that pool thread
  // then stays lower, which costs a later read call little.)
  absl::Cleanup restore_nice = [self, own_nice] {
    setpriority(PRIO_PROCESS, self, own_nice);
  };
  absl::Cleanup unregister = [this] {
    absl::MutexLock l(&mu_);
    apply_context_ = nullptr;
    apply_busy_ = false;
    bytes_in_flight_ = 0;
  };

  {
    absl::MutexLock l(&mu_);
    next_.reset();
    reader_done_ = false;
    reader_stop_ = false;
  }
  std::thread reader([this, stream] { ReadMutations(stream); });
  // The reader ends when the stream does; on any other way out it is told
  // to stop and the call is cancelled, which ends its Read.
  absl::Cleanup join_reader = [this, context, &reader] {
    bool done;
    {
      absl::MutexLock l(&mu_);
      reader_stop_ = true;
      done = reader_done_;
    }
    if (!done) context->TryCancel();
    reader.join();
  };

  std::deque<Held> held;
  absl::Time oldest_held;
  auto end_status = [&]() -> grpc::Status {
    absl::MutexLock l(&mu_);
    if (std::optional<grpc::Status> end = EndReasonLocked(generation)) {
      return *end;
    }
    if (context->IsCancelled()) {
      return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
    }
    return grpc::Status::OK;
  };
  // Commits what is held and says so; false when the stream ends.
  auto commit = [&]() -> bool {
    return CommitHeld(context, &held, generation) &&
           SendDurableNotice(stream, &held);
  };
  pb::Mutation mutation;
  while (true) {
    absl::Duration wait = absl::Milliseconds(100);
    if (!held.empty()) {
      wait = std::max(absl::ZeroDuration(),
                      std::min(kIdleCommit,
                               oldest_held + kMaxCommitDelay - absl::Now()));
    }
    const Next next = TakeMutation(&mutation, wait, generation);
    if (next == Next::kEnd) {
      // What was applied is committed and acknowledged before the stream
      // ends (best effort: a lost ack only means a replay).
      if (!held.empty() && !context->IsCancelled()) commit();
      return end_status();
    }
    if (next == Next::kIdle) {
      if (!held.empty() && !commit()) return end_status();
      continue;
    }
    if (!held.empty() && backend_->NeedsCommitBefore(mutation) && !commit()) {
      return end_status();
    }
    {
      absl::MutexLock l(&mu_);
      apply_busy_ = true;
      bytes_in_flight_ =
          mutation.has_write() ? mutation.write().data().size() : 0;
    }
    std::optional<pb::Ack> ack = ApplyWithRetry(context, mutation, generation);
    {
      absl::MutexLock l(&mu_);
      apply_busy_ = false;
      bytes_in_flight_ = 0;
    }
    if (!ack.has_value()) return end_status();
    // Acknowledged as applied at once (fsd's replay position after a
    // reconnect); durable as far as the backend says.
    const uint64_t durable = backend_->DurableSeq();
    ack->set_durable_seq(std::min(durable, mutation.seq()));
    if (!stream->Write(*ack)) {
      return grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
    }
    if (mutation.seq() > durable && ack->error() == 0) {
      if (held.empty()) oldest_held = absl::Now();
      held.push_back(Held{std::move(mutation), *std::move(ack)});
    }
    if (!held.empty() && absl::Now() - oldest_held >= kMaxCommitDelay &&
        !commit()) {
      return end_status();
    }
  }
}

void MirrorService::ReadMutations(
    grpc::ServerReaderWriter<pb::Ack, pb::Mutation>* stream) {
  pb::Mutation mutation;
  while (stream->Read(&mutation)) {
    absl::MutexLock l(&mu_);
    auto room = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return reader_stop_ || !next_.has_value();
    };
    mu_.Await(absl::Condition(&room));
    if (reader_stop_) break;
    next_ = std::move(mutation);
  }
  absl::MutexLock l(&mu_);
  reader_done_ = true;
}

MirrorService::Next MirrorService::TakeMutation(pb::Mutation* out,
                                                absl::Duration timeout,
                                                uint64_t generation) {
  absl::MutexLock l(&mu_);
  auto ready = [this, generation]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return next_.has_value() || reader_done_ ||
           EndReasonLocked(generation).has_value();
  };
  mu_.AwaitWithTimeout(absl::Condition(&ready), timeout);
  if (EndReasonLocked(generation).has_value()) return Next::kEnd;
  if (next_.has_value()) {
    *out = *std::move(next_);
    next_.reset();
    return Next::kMutation;
  }
  return reader_done_ ? Next::kEnd : Next::kIdle;
}

bool MirrorService::SendDurableNotice(
    grpc::ServerReaderWriter<pb::Ack, pb::Mutation>* stream,
    std::deque<Held>* held) {
  const uint64_t durable = backend_->DurableSeq();
  while (!held->empty() && held->front().mutation.seq() <= durable) {
    // Applied again after the backend lost it, and found something
    // missing this time: fsd repairs it (its first ack said applied).
    if (held->front().ack.missing_id() != 0) {
      pb::Ack late;
      late.set_missing_id(held->front().ack.missing_id());
      late.set_error(held->front().ack.error());
      late.set_message(held->front().ack.message());
      if (!stream->Write(late)) return false;
    }
    held->pop_front();
  }
  pb::Ack notice;
  notice.set_durable_seq(durable);
  return stream->Write(notice);
}

bool MirrorService::CommitHeld(grpc::ServerContext* context,
                               std::deque<Held>* held, uint64_t generation) {
  absl::Duration delay = kFirstRetryDelay;
  std::string logged_cause;
  int aborts = 0;
  while (true) {
    absl::Status committed = backend_->Commit();
    if (committed.ok()) return true;
    if (absl::IsAborted(committed)) {
      // What the backend held but had not made durable may be gone:
      // everything held is applied again, in order (idempotently). Again
      // and again means the server is unsettled: wait a little first.
      if (++aborts > 2) {
        if (!WaitToRetry(context, delay, generation)) return false;
        delay = std::min(delay * 2, kMaxRetryDelay);
      }
      const uint64_t durable = backend_->DurableSeq();
      uint64_t again = 0;
      for (const Held& h : *held) again += h.mutation.seq() > durable;
      LOG(WARNING) << committed.message() << "; applying " << again
                   << " changes again";
      for (Held& h : *held) {
        if (h.mutation.seq() <= durable) continue;
        std::optional<pb::Ack> ack =
            ApplyWithRetry(context, h.mutation, generation);
        if (!ack.has_value()) return false;
        h.ack = *std::move(ack);
        absl::MutexLock l(&mu_);
        ++reapplied_;
      }
      continue;
    }
    std::string cause(committed.message());
    if (cause != logged_cause) {
      LOG(WARNING) << "commit: " << cause << "; retrying with backoff up to "
                   << absl::FormatDuration(kMaxRetryDelay);
      logged_cause = std::move(cause);
    }
    {
      absl::MutexLock l(&mu_);
      retrying_ = absl::StrCat("commit of ", held->size(), " changes");
      retrying_error_ = std::string(committed.message());
      ++retrying_attempts_;
    }
    if (!WaitToRetry(context, delay, generation)) return false;
    delay = std::min(delay * 2, kMaxRetryDelay);
  }
}

MirrorService::MirrorService(Backend* backend)
    : backend_(backend) {}

std::optional<pb::Ack> MirrorService::ApplyWithRetry(
    grpc::ServerContext* context, const pb::Mutation& mutation,
    uint64_t generation) {
  absl::Duration delay = kFirstRetryDelay;
  std::string logged_cause;
  for (int attempt = 1;; ++attempt) {
    pb::Ack ack = backend_->Apply(mutation);
    if (ack.error() == 0 || ack.permanent()) {
      if (attempt > 1) {
        absl::MutexLock l(&mu_);
        retrying_.clear();
        retrying_error_.clear();
        retrying_attempts_ = 0;
      }
      if (attempt > 1) {
        LOG(INFO) << "seq " << mutation.seq()
                  << (ack.error() == 0 ? " applied" : " rejected") << " after "
                  << attempt << " attempts";
      }
      return ack;
    }
    {
      absl::MutexLock l(&mu_);
      retrying_ = Describe(mutation);
      retrying_error_ = ack.message();
      retrying_attempts_ = attempt;
    }
    std::string cause = absl::StrCat(ack.error(), " ", ack.message());
    if (cause != logged_cause) {
      LOG(WARNING) << ack.message() << " (errno " << ack.error()
                   << "); retrying with backoff up to "
                   << absl::FormatDuration(kMaxRetryDelay);
      logged_cause = std::move(cause);
    }
    if (!WaitToRetry(context, delay, generation)) return std::nullopt;
    delay = std::min(delay * 2, kMaxRetryDelay);
  }
}

bool MirrorService::WaitToRetry(grpc::ServerContext* context,
                                absl::Duration delay, uint64_t generation) {
  // Cancellation has no wake-up of its own here: look every 100 ms.
  constexpr absl::Duration kPoll = absl::Milliseconds(100);
  const absl::Time deadline = absl::Now() + delay;
  absl::MutexLock l(&mu_);
  for (;;) {
    if (EndReasonLocked(generation).has_value() || context->IsCancelled()) {
      return false;
    }
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) return true;
    wake_.WaitWithTimeout(&mu_, std::min(left, kPoll));
  }
}

void MirrorService::Stop() {
  absl::MutexLock l(&mu_);
  stopping_ = true;
  wake_.SignalAll();
  // The Apply handler sees stopping_, commits what it applied, sends those
  // acks and ends the stream.
  // A client that stopped reading acks could block the stream's Write
  // forever: after a while, cancel it whatever it does. (Its mutation still
  // completes; only the Ack is lost, and the replay is idempotent.)
  if (!mu_.AwaitWithTimeout(
          absl::Condition(this, &MirrorService::NoApplyStream), kStopGrace)) {
    LOG(WARNING) << "the Apply stream did not end in "
                 << absl::FormatDuration(kStopGrace) << ": cancelling it";
    if (apply_context_ != nullptr) apply_context_->TryCancel();
    mu_.Await(absl::Condition(this, &MirrorService::NoApplyStream));
  }
}

// --- reads ---

grpc::Status MirrorService::ListDirectory(
    grpc::ServerContext* context, const pb::ListDirectoryRequest* request,
    pb::ListDirectoryResponse* response) {
  {
    absl::MutexLock l(&mu_);
    if (grpc::Status ready = CheckReadyLocked(); !ready.ok()) return ready;
  }
  absl::StatusOr<pb::ListDirectoryResponse> result =
      backend_->ListDirectory(*request);
  if (!result.ok()) return ToGrpcStatus(result.status());
  *response = std::move(*result);
  return grpc::Status::OK;
}

grpc::Status MirrorService::ReadBlock(grpc::ServerContext* context,
                                      const pb::ReadBlockRequest* request,
                                      pb::ReadBlockResponse* response) {
  {
    absl::MutexLock l(&mu_);
    if (grpc::Status ready = CheckReadyLocked(); !ready.ok()) return ready;
  }
  absl::StatusOr<uint64_t> got;
  if (request->into_shared()) {
    const common::MappedRegion* region = backend_->shared_region();
    if (region == nullptr) {
      return ToGrpcStatus(absl::InvalidArgumentError(
          "a read names the data region, but this agent has none"));
    }
    absl::StatusOr<absl::Span<char>> out =
        region->MutableView(request->shared_offset(), request->length());
    if (!out.ok()) return ToGrpcStatus(out.status());
    got = backend_->ReadBlock(*request, *out);
    if (got.ok()) response->set_shared_length(static_cast<uint32_t>(*got));
  } else {
    // A length over the backend's limit is refused by the backend; this
    // only keeps the buffer from growing past it first.
    std::string* data = response->mutable_data();
    data->resize(std::min<uint64_t>(request->length(), kMaxInlineRead));
    got = backend_->ReadBlock(*request, absl::MakeSpan(*data));
    if (got.ok()) data->resize(*got);
  }
  if (!got.ok()) return ToGrpcStatus(got.status());
  return grpc::Status::OK;
}

grpc::Status MirrorService::ReadLink(grpc::ServerContext* context,
                                     const pb::ReadLinkRequest* request,
                                     pb::ReadLinkResponse* response) {
  {
    absl::MutexLock l(&mu_);
    if (grpc::Status ready = CheckReadyLocked(); !ready.ok()) return ready;
  }
  absl::StatusOr<pb::ReadLinkResponse> result = backend_->ReadLink(*request);
  if (!result.ok()) return ToGrpcStatus(result.status());
  *response = std::move(*result);
  return grpc::Status::OK;
}

grpc::Status MirrorService::Stat(grpc::ServerContext* context,
                                 const pb::StatRequest* request,
                                 pb::StatResponse* response) {
  {
    absl::MutexLock l(&mu_);
    if (grpc::Status ready = CheckReadyLocked(); !ready.ok()) return ready;
  }
  absl::StatusOr<pb::StatResponse> result = backend_->Stat(*request);
  if (!result.ok()) return ToGrpcStatus(result.status());
  *response = std::move(*result);
  return grpc::Status::OK;
}

grpc::Status MirrorService::StatFs(grpc::ServerContext* context,
                                   const pb::StatFsRequest* request,
                                   pb::StatFsResponse* response) {
  {
    absl::MutexLock l(&mu_);
    if (grpc::Status ready = CheckReadyLocked(); !ready.ok()) return ready;
  }
  absl::StatusOr<pb::StatFsResponse> result = backend_->StatFs();
  if (!result.ok()) return ToGrpcStatus(result.status());
  *response = std::move(*result);
  return grpc::Status::OK;
}

grpc::Status MirrorService::GetStatus(grpc::ServerContext* context,
                                      const pb::StatusRequest* request,
                                      pb::StatusResponse* response) {
  backend_->FillStatus(response);
  absl::MutexLock l(&mu_);
  // The stream holds at most the mutation being applied; the rest waits
  // in fsd (and in HTTP/2 flow-control windows, invisible from here).
  response->set_mutations_queued(apply_busy_ ? 1 : 0);
  response->set_bytes_in_flight(bytes_in_flight_);
  response->set_reapplied(reapplied_);
  response->set_retrying(retrying_);
  response->set_retrying_error(retrying_error_);
  response->set_retrying_attempts(retrying_attempts_);
  return grpc::Status::OK;
}

namespace {
constexpr int kHttp2FrameBytes = (1 << 20) + 4096;
constexpr int kHttp2WindowBytes = 8 << 20;
}  // namespace

std::unique_ptr<grpc::Server> StartServer(grpc::Service* service) {
  grpc::ServerBuilder builder;
  builder.RegisterService(service);
  builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
  // Blocks of a MiB arrive in few frames and with a window that holds
  // several: the default 16 KiB frames and 64 KiB window leave the agent
  // idle between them. Flow control still bounds what waits here.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_FRAME_SIZE, kHttp2FrameBytes);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES,
                             kHttp2WindowBytes);
  return builder.BuildAndStart();
}

}  // namespace memfuse::mirrord
