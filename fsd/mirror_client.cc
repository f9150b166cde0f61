#include "fsd/mirror_client.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstring>
#include <deque>
#include <optional>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/service_notify.h"
#include "common/status.h"
#include "fsd/change_recorder.h"
#include "fsd/drain.h"
#include "fsd/units.h"
#include "glog/logging.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/create_channel_posix.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"

namespace memfuse::fsd {
namespace {

constexpr uint32_t kProtocolVersion = 1;
// How long fsd waits for mirrord at mount before giving up.
constexpr absl::Duration kStartTimeout = absl::Seconds(10);
constexpr absl::Duration kMaxBackoff = absl::Seconds(5);
// How much lower than fsd's FUSE threads mirroring runs (nice(2) steps).
constexpr int kBackgroundNice = 5;
// How long a read of the mirror waits for an agent that is restarting.
constexpr absl::Duration kReadTimeout = absl::Seconds(30);
// statfs(2) asks the agent for the mirror's capacity at most this often,
// and waits at most kStatFsTimeout for the answer (then the last stands).
constexpr absl::Duration kStatFsMaxAge = absl::Seconds(1);
constexpr absl::Duration kStatFsTimeout = absl::Milliseconds(500);

uint64_t RandomSessionId() {
  uint64_t id = 0;
  while (id == 0) {
    if (getrandom(&id, sizeof(id), 0) != sizeof(id)) {
      id = static_cast<uint64_t>(absl::GetCurrentTimeNanos()) ^ getpid();
    }
  }
  return id;
}

grpc::ChannelArguments ChannelArgs() {
  grpc::ChannelArguments args;
  // A Write carries a block (up to 64 MiB) and ReadBlock answers with one.
  args.SetMaxReceiveMessageSize(-1);
  args.SetMaxSendMessageSize(-1);
  // Frames that hold a whole block (HTTP/2's default is 16 KiB).
  args.SetInt(GRPC_ARG_HTTP2_MAX_FRAME_SIZE, (1 << 20) + 4096);
  return args;
}

}  // namespace

MirrorClient::MirrorClient(const Options& options, Tree* tree,
                           MutationLog* log)
    : options_(options), tree_(tree), log_(log),
      session_id_(RandomSessionId()) {}

MirrorClient::~MirrorClient() { Stop(); }

absl::Status MirrorClient::ConnectLocked() {
  stub_.reset();
  if (!options_.mirror_socket.empty()) {
    stub_ = memfuse::mirror::v1::Mirror::NewStub(grpc::CreateCustomChannel(
        "unix:" + options_.mirror_socket, grpc::InsecureChannelCredentials(),
        ChannelArgs()));
    return absl::OkStatus();
  }
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    return common::ErrnoStatus(errno, "socketpair");
  }
  if (agent_ == nullptr) {
    agent_ = std::make_unique<AgentProcess>(AgentProcess::Spec{
        options_.mirror_spec, options_.root_node,
        region_ != nullptr ? region_->fd() : -1});
  }
  absl::Status started = agent_->Start(sv[1]);
  close(sv[1]);
  if (!started.ok()) {
    close(sv[0]);
    return started;
  }
  // The channel owns sv[0] from here.
  stub_ = memfuse::mirror::v1::Mirror::NewStub(
      grpc::CreateCustomInsecureChannelFromFd("mem-fuse-mirrord", sv[0],
                                              ChannelArgs()));
  return absl::OkStatus();
}

absl::Status MirrorClient::HandshakeAndBind(bool first) {
  Stub* stub;
  {
    absl::MutexLock l(&mu_);
    stub = stub_.get();
  }
  pb::HandshakeRequest request;
  request.set_protocol_version(kProtocolVersion);
  request.set_session_id(session_id_);
  request.set_block_size(static_cast<uint32_t>(options_.block_bytes()));
  pb::HandshakeResponse response;
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  ctx.set_wait_for_ready(true);
  grpc::Status status = stub->Handshake(&ctx, request, &response);
  if (!status.ok()) {
    return absl::UnavailableError(
        absl::StrCat("no answer from mem-fuse-mirrord: ",
                     status.error_message()));
  }
  if (response.protocol_version() != kProtocolVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        "mem-fuse-mirrord speaks protocol ", response.protocol_version(),
        ", this fsd ", kProtocolVersion));
  }
  tree_->SetMirrorLimits(response.limits());
  agent_has_region_ = region_ != nullptr &&
                      response.shared_region_size() == region_->size();
  if (first) {
    LOG(INFO) << "mirror: " << response.backend_kind() << " "
              << response.backend_description()
              << (agent_has_region_
                      ? absl::StrCat("; file data through a shared ",
                                     MiB(region_->size()), " region")
                      : std::string("; file data over the socket"));
    tree_->LoadRoot(response.root(), response.root_xattrs());
    return LoadMirror();
  }
  log_->Rewind(response.last_applied_seq());
  std::vector<pb::Binding> bindings = tree_->MirrorBindings(log_);
  if (bindings.empty()) return absl::OkStatus();
  grpc::ClientContext bind_ctx;
  pb::BindResponse bound;
  std::unique_ptr<grpc::ClientWriter<pb::Binding>> writer =
      stub->Bind(&bind_ctx, &bound);
  for (const pb::Binding& b : bindings) {
    if (!writer->Write(b)) break;
  }
  writer->WritesDone();
  status = writer->Finish();
  if (!status.ok()) {
    return absl::UnavailableError(
        absl::StrCat("mem-fuse-mirrord refused the bindings: ",
                     status.error_message()));
  }
  return absl::OkStatus();
}

std::shared_ptr<MirrorClient::Stub> MirrorClient::CurrentStub() {
  absl::MutexLock l(&mu_);
  return stub_;
}

template <typename Call>
grpc::Status MirrorClient::CallWithRetry(std::string_view what, Call call) {
  // The agent may be restarting: wait for it rather than failing the
  // program's read, up to a bound.
  const absl::Time give_up = absl::Now() + kReadTimeout;
  grpc::Status status;
  while (true) {
    std::shared_ptr<Stub> stub = CurrentStub();
    if (stub == nullptr) {
      status = grpc::Status(grpc::StatusCode::UNAVAILABLE, "not connected");
    } else {
      grpc::ClientContext ctx;
      ctx.set_deadline(absl::ToChronoTime(absl::Now() + kReadTimeout));
      ctx.set_wait_for_ready(true);
      status = call(stub.get(), &ctx);
    }
    if (status.ok() || stopping_ ||
        status.error_code() != grpc::StatusCode::UNAVAILABLE ||
        absl::Now() >= give_up) {
      return status;
    }
    stopped_.WaitForNotificationWithTimeout(absl::Milliseconds(100));
  }
}

absl::StatusOr<uint64_t> MirrorClient::ReadBlock(uint64_t id, uint64_t offset,
                                                 uint64_t length, char* out) {
  pb::ReadBlockRequest request;
  request.set_id(id);
  request.set_offset(offset);
  request.set_length(static_cast<uint32_t>(length));
  // Through the data region when the agent has it and the ring has room:
  // the agent reads the mirror file straight into it.
  // Whole pages, so that the agent can read them with direct I/O; only
  // `length` of them are used.
  const uint64_t pages = (length + common::kRegionAlign - 1) /
                         common::kRegionAlign * common::kRegionAlign;
  std::optional<uint64_t> at;
  if (agent_has_region_) at = region_ranges_->Allocate(pages);
  absl::Cleanup free_range = [&] {
    if (at.has_value()) region_ranges_->Free(*at);
  };
  pb::ReadBlockResponse response;
  grpc::Status status = CallWithRetry(
      "read", [&](Stub* stub, grpc::ClientContext* ctx) {
        // The agent answering may be a new one, without the region.
        const bool shared = at.has_value() && agent_has_region_;
        request.set_into_shared(shared);
        request.set_shared_offset(shared ? *at : 0);
        request.set_length(static_cast<uint32_t>(shared ? pages : length));
        response.Clear();
        return stub->ReadBlock(ctx, request, &response);
      });
  if (!status.ok()) {
    return absl::UnavailableError(
        absl::StrCat("mem-fuse-mirrord: ", status.error_message()));
  }
  if (request.into_shared()) {
    if (response.shared_length() > pages) {
      return absl::InternalError("the agent read more than was asked");
    }
    const uint64_t got = std::min<uint64_t>(response.shared_length(), length);
    std::memcpy(out, region_->data() + *at, got);
    return got;
  }
  const uint64_t got = std::min<uint64_t>(response.data().size(), length);
  std::memcpy(out, response.data().data(), got);
  return got;
}

absl::StatusOr<pb::ListDirectoryResponse> MirrorClient::ListDirectory(
    uint64_t id, uint64_t first_id, uint64_t max_new_ids) {
  pb::ListDirectoryRequest request;
  request.set_id(id);
  request.set_first_child_id(first_id);
  request.set_max_new_ids(max_new_ids);
  pb::ListDirectoryResponse response;
  grpc::Status status = CallWithRetry(
      "list", [&](Stub* stub, grpc::ClientContext* ctx) {
        return stub->ListDirectory(ctx, request, &response);
      });
  if (!status.ok()) {
    return absl::UnavailableError(
        absl::StrCat("mem-fuse-mirrord: ", status.error_message()));
  }
  return response;
}

std::optional<pb::StatFsResponse> MirrorClient::StatFs() {
  const absl::Time now = absl::Now();
  {
    absl::MutexLock l(&statfs_mu_);
    if (statfs_asking_ || now - statfs_asked_ < kStatFsMaxAge) return statfs_;
    statfs_asking_ = true;
    statfs_asked_ = now;
  }
  // One try, without waiting for an agent that is not there: a program's
  // statfs must not hang on a restart, and the last answer is close.
  std::optional<pb::StatFsResponse> answer;
  if (std::shared_ptr<Stub> stub = CurrentStub(); stub != nullptr) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(now + kStatFsTimeout));
    pb::StatFsResponse response;
    const grpc::Status status =
        stub->StatFs(&ctx, pb::StatFsRequest(), &response);
    if (status.ok()) {
      answer = std::move(response);
    } else {
      VLOG(1) << "statfs of the mirror: " << status.error_message();
    }
  }
  absl::MutexLock l(&statfs_mu_);
  statfs_asking_ = false;
  if (answer.has_value()) statfs_ = std::move(answer);
  return statfs_;
}

absl::Status MirrorClient::LoadMirror() {
  if (options_.lazy_load) return absl::OkStatus();
  // --lazy-load false: every directory now, breadth first.
  const absl::Time start = absl::Now();
  std::deque<uint64_t> dirs = {FUSE_ROOT_ID};
  uint64_t listed = 0;
  while (!dirs.empty()) {
    const uint64_t dir = dirs.front();
    dirs.pop_front();
    absl::Status status = tree_->EnsureListed(dir);
    if (!status.ok()) {
      return absl::AbortedError(
          absl::StrCat("cannot list the mirror: ", status.message()));
    }
    ++listed;
    for (uint64_t sub : tree_->SubdirectoriesOf(dir)) dirs.push_back(sub);
  }
  LOG(INFO) << "listed " << listed << " directories of the mirror in "
            << absl::Now() - start;
  return absl::OkStatus();
}

void MirrorClient::Prefetch() {
  const absl::Time start = absl::Now();
  const uint64_t done = tree_->PrefetchAll(
      stopping_, [&](uint64_t done, uint64_t total) {
        if (total == 0) return;
        LOG(INFO) << "prefetch: " << MiB(done) << " of " << MiB(total)
                  << " of file data in memory ("
                  << absl::StrFormat("%.0f%%", 100.0 * done / total) << ")";
      });
  LOG(INFO) << "prefetch done: " << MiB(done) << " in "
            << absl::Now() - start;
}

absl::Status MirrorClient::Start() {
  const absl::Time give_up = absl::Now() + kStartTimeout;
  absl::Status status;
  if (options_.mirror_socket.empty()) {
    // Room for everything in flight, plus a block's alignment padding per
    // message and slack for the ring's wrap-around.
    const uint64_t block = options_.block_bytes();
    const uint64_t size = MutationLog::kMaxInflightBytes + 2 * block +
                          MutationLog::kMaxInflightBytes / block *
                              common::kRegionAlign;
    absl::StatusOr<std::unique_ptr<common::SharedRegion>> region =
        common::SharedRegion::Create(size);
    if (region.ok()) {
      region_ = std::move(*region);
      region_ranges_ =
          std::make_shared<common::RegionAllocator>(region_->size());
    } else {
      LOG(WARNING) << "no data region for the agent ("
                   << region.status().message()
                   << "); file data goes over the socket";
    }
  }
  while (true) {
    {
      absl::MutexLock l(&mu_);
      status = ConnectLocked();
    }
    if (status.ok()) status = HandshakeAndBind(/*first=*/true);
    if (!status.ok() && options_.mirror_socket.empty()) {
      // A spawned agent that exited has said why on stderr already.
      absl::MutexLock l(&mu_);
      if (std::optional<std::string> ended =
              agent_ != nullptr ? agent_->Ended() : std::nullopt) {
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
    absl::MutexLock l(&mu_);
    if (agent_ != nullptr) agent_->End();
    return status;
  }
  runner_ = std::thread([this] { Run(); });
  repairer_ = std::thread([this] { ResendRepairs(); });
  if (!options_.lazy_load) prefetcher_ = std::thread([this] { Prefetch(); });
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
      absl::Status status;
      {
        absl::MutexLock l(&mu_);
        status = ConnectLocked();
      }
      if (status.ok()) status = HandshakeAndBind(/*first=*/false);
      if (!status.ok()) {
        if (std::string(status.message()) != last_error) {
          last_error = std::string(status.message());
          LOG(WARNING) << "mirror agent unavailable, retrying: " << last_error;
        }
        stopped_.WaitForNotificationWithTimeout(backoff);
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
    Stub* stub;
    {
      absl::MutexLock l(&mu_);
      stub = stub_.get();
    }
    Stream(stub);
    connected = false;
  }
}

void MirrorClient::Stream(Stub* stub) {
  grpc::ClientContext ctx;
  {
    // Stop() cancels it: a send blocked on an agent that reads nothing
    // (stopped, hung) would otherwise never return.
    absl::MutexLock l(&mu_);
    if (stopping_) return;
    stream_ctx_ = &ctx;
  }
  absl::Cleanup forget_ctx = [this] {
    absl::MutexLock l(&mu_);
    stream_ctx_ = nullptr;
  };
  std::unique_ptr<grpc::ClientReaderWriter<pb::Mutation, pb::Ack>> stream =
      stub->Apply(&ctx);
  std::atomic<bool> broken{false};
  std::thread reader([&] {
    pb::Ack ack;
    while (stream->Read(&ack)) {
      // The mirror lost an object: it is re-created from the tree before
      // the next ack is read.
      if (const uint64_t lost = log_->Acked(ack); lost != 0) {
        Tree::RepairData data = tree_->Repair(lost);
        if (data.inode != nullptr) {
          absl::MutexLock l(&mu_);
          repairs_.push_back(std::move(data));
        }
      }
    }
    broken = true;
    log_->Poke();
  });
  while (!stopping_ && !broken) {
    std::optional<MutationLog::Outgoing> out =
        log_->TakeNext(absl::Milliseconds(200));
    if (!out) continue;
    std::shared_ptr<const pb::Mutation> message = out->message;
    if (message == nullptr) {
      message = BuildWrite(*out);
      log_->Built(out->seq, message);
    }
    if (!stream->Write(*ForThisAgent(std::move(message)))) break;
  }
  ctx.TryCancel();
  reader.join();
  grpc::Status status = stream->Finish();
  if (!stopping_) {
    LOG(WARNING) << "lost the mirror agent ("
                 << (status.ok() ? "stream ended" : status.error_message())
                 << "); serving from memory and reconnecting";
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

std::shared_ptr<const pb::Mutation> MirrorClient::BuildWrite(
    const MutationLog::Outgoing& out) {
  if (out.inode != nullptr && agent_has_region_) {
    // The bytes go where the agent can O_DIRECT them from: a file offset's
    // place within its page is kept within the region's page.
    const uint64_t pad = out.offset % common::kRegionAlign;
    if (std::optional<uint64_t> at =
            region_ranges_->Allocate(pad + out.length)) {
      std::shared_ptr<pb::Mutation> built(
          new pb::Mutation,
          [ranges = region_ranges_, region = region_, at](pb::Mutation* m) {
            ranges->Free(*at);
            delete m;
          });
      built->set_seq(out.seq);
      pb::Write* write = built->mutable_write();
      const uint64_t n = ChangeRecorder::WriteMessage(
          *out.inode, options_.block_bytes(), out.offset, out.length, write,
          region_->data() + *at + pad);
      if (n > 0) {
        write->set_shared_offset(*at + pad);
        write->set_shared_length(static_cast<uint32_t>(n));
      }
      return built;
    }
  }
  auto built = std::make_shared<pb::Mutation>();
  built->set_seq(out.seq);
  if (out.inode != nullptr) {
    ChangeRecorder::WriteMessage(*out.inode, options_.block_bytes(), out.offset,
                                 out.length, built->mutable_write());
  } else {  // deleted meanwhile: a no-op in its place
    built->mutable_write()->set_id(out.id);
    built->mutable_write()->set_offset(out.offset);
  }
  return built;
}

std::shared_ptr<const pb::Mutation> MirrorClient::ForThisAgent(
    std::shared_ptr<const pb::Mutation> message) {
  if (!message->has_write() || message->write().shared_length() == 0 ||
      agent_has_region_) {
    return message;
  }
  // Built for an agent that had the region; this one has not (it failed
  // to map it): the same bytes inline. `message` keeps the range alive.
  auto inline_copy = std::make_shared<pb::Mutation>(*message);
  pb::Write* write = inline_copy->mutable_write();
  write->set_data(region_->data() + write->shared_offset(),
                  write->shared_length());
  write->clear_shared_offset();
  write->clear_shared_length();
  return inline_copy;
}

void MirrorClient::Abandon() { log_->Shutdown(); }

int MirrorClient::Sync(uint64_t id, const std::atomic<bool>* interrupted) {
  // The mirror may have lost the object: then the barrier goes again after
  // its repair (a bounded number of times: MutationLog::kMaxRepairs).
  int result = EIO;
  for (int round = 0; round <= MutationLog::kMaxRepairs; ++round) {
    pb::Mutation m;
    m.mutable_sync()->set_id(id);
    const uint64_t seq = log_->Append(std::move(m));
    const int error = log_->WaitApplied(seq, interrupted);
    if (error == EINTR) return EINTR;
    if (error == MutationLog::kRepairing) {
      // The repair's blocks wait for room under the dirty limit.
      if (!log_->WaitRepairAppended(id, interrupted)) return EINTR;
      continue;
    }
    // The barrier's error includes a refusal of the file's data that
    // stood when it was applied (MutationLog::WaitApplied).
    if (error != 0) return EIO;
    // Acks before the barrier made fsd repair objects the mirror lost: the
    // barrier goes again after those repairs. (They are all begun by now:
    // the thread reading acks begins them before it reads the next.)
    result = 0;
    // Their blocks are appended on another thread, under the dirty limit.
    if (!log_->WaitRepairsAppended(interrupted)) return EINTR;
    if (log_->RepairedAfter(seq)) continue;
    return 0;
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
  if (std::shared_ptr<Stub> stub = CurrentStub()) {
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
    if (stream_ctx_ != nullptr) stream_ctx_->TryCancel();
  }
  stopped_.Notify();
  log_->Shutdown();
  if (prefetcher_.joinable()) prefetcher_.join();
  if (runner_.joinable()) runner_.join();
  if (repairer_.joinable()) repairer_.join();
  absl::MutexLock l(&mu_);
  stub_.reset();
  // The agent exits when its connection closes; give it a moment to
  // finish what it is applying.
  if (agent_ != nullptr) agent_->Stop(absl::Seconds(2));
}

}  // namespace memfuse::fsd
