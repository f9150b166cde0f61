// fsd's connection to the mirror agent (mirror_channel.h).
#include "fsd/mirror_channel.h"

#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "fsd/units.h"
#include "glog/logging.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/create_channel_posix.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"

namespace memfuse::fsd {
namespace {

constexpr uint32_t kProtocolVersion = 1;
// How long a handshake waits for the agent to answer.
constexpr absl::Duration kHandshakeTimeout = absl::Seconds(5);

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

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  const std::string message =
      absl::StrCat("mem-fuse-mirrord: ", status.error_message());
  int err = 0;
  if (absl::SimpleAtoi(status.error_details(), &err) && err > 0) {
    return common::ErrnoStatus(err, message);
  }
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      message);
}

MirrorChannel::MirrorChannel(const Options& options)
    : options_(options), session_id_(RandomSessionId()) {}

MirrorChannel::~MirrorChannel() { Close(); }

void MirrorChannel::MakeRegion(uint64_t inflight_bytes) {
  if (!options_.mirror_socket.empty()) return;
  // Room for everything in flight, plus a block's alignment padding per
  // message and slack for the ring's wrap-around.
  const uint64_t block = options_.block_bytes();
  const uint64_t size =
      inflight_bytes + 2 * block + inflight_bytes / block * common::kRegionAlign;
  absl::StatusOr<std::unique_ptr<common::SharedRegion>> region =
      common::SharedRegion::Create(size);
  if (!region.ok()) {
    LOG(WARNING) << "no data region for the agent ("
                 << region.status().message()
                 << "); file data goes over the socket";
    return;
  }
  region_ = std::move(*region);
  region_ranges_ = std::make_shared<common::RegionAllocator>(region_->size());
}

absl::Status MirrorChannel::Connect() {
  absl::MutexLock l(&mu_);
  stub_.reset();
  if (!options_.mirror_socket.empty()) {
    stub_ = pb::Mirror::NewStub(grpc::CreateCustomChannel(
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
  stub_ = pb::Mirror::NewStub(grpc::CreateCustomInsecureChannelFromFd(
      "mem-fuse-mirrord", sv[0], ChannelArgs()));
  return absl::OkStatus();
}

absl::StatusOr<pb::HandshakeResponse> MirrorChannel::Handshake() {
  std::shared_ptr<Stub> current = stub();
  if (current == nullptr) return absl::UnavailableError("not connected");
  pb::HandshakeRequest request;
  request.set_protocol_version(kProtocolVersion);
  request.set_session_id(session_id_);
  request.set_block_size(static_cast<uint32_t>(options_.block_bytes()));
  pb::HandshakeResponse response;
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + kHandshakeTimeout));
  ctx.set_wait_for_ready(true);
  grpc::Status status = current->Handshake(&ctx, request, &response);
  if (!status.ok()) {
    return absl::UnavailableError(absl::StrCat(
        "no answer from mem-fuse-mirrord: ", status.error_message()));
  }
  if (response.protocol_version() != kProtocolVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        "mem-fuse-mirrord speaks protocol ", response.protocol_version(),
        ", this fsd ", kProtocolVersion));
  }
  agent_has_region_ = region_ != nullptr &&
                      response.shared_region_size() == region_->size();
  return response;
}

absl::Status MirrorChannel::Bind(const std::vector<pb::Binding>& bindings) {
  if (bindings.empty()) return absl::OkStatus();
  std::shared_ptr<Stub> current = stub();
  if (current == nullptr) return absl::UnavailableError("not connected");
  grpc::ClientContext ctx;
  pb::BindResponse bound;
  std::unique_ptr<grpc::ClientWriter<pb::Binding>> writer =
      current->Bind(&ctx, &bound);
  for (const pb::Binding& b : bindings) {
    if (!writer->Write(b)) break;
  }
  writer->WritesDone();
  const grpc::Status status = writer->Finish();
  if (!status.ok()) {
    return absl::UnavailableError(absl::StrCat(
        "mem-fuse-mirrord refused the bindings: ", status.error_message()));
  }
  return absl::OkStatus();
}

std::shared_ptr<MirrorChannel::Stub> MirrorChannel::stub() {
  absl::MutexLock l(&mu_);
  return stub_;
}

std::optional<std::string> MirrorChannel::AgentEnded() {
  absl::MutexLock l(&mu_);
  return agent_ != nullptr ? agent_->Ended() : std::nullopt;
}

void MirrorChannel::EndAgent() {
  absl::MutexLock l(&mu_);
  if (agent_ != nullptr) agent_->End();
}

void MirrorChannel::Stop() {
  absl::MutexLock l(&mu_);
  if (stop_called_) return;
  stop_called_ = true;
  stopped_.Notify();
}

void MirrorChannel::Close() {
  Stop();
  absl::MutexLock l(&mu_);
  stub_.reset();
  // The agent exits when its connection closes; give it a moment to
  // finish what it is applying.
  if (agent_ != nullptr) agent_->Stop(absl::Seconds(2));
  agent_.reset();
}

}  // namespace memfuse::fsd
