#include "mirrord/server.h"

#include <fcntl.h>
#include <grpcpp/create_channel_posix.h>
#include <grpcpp/server_posix.h>
#include <sys/socket.h>

#include <chrono>
#include <deque>
#include <memory>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "common/status.h"
#include "gtest/gtest.h"

namespace memfuse::mirrord {
namespace {

// A backend that answers Apply from a script (then success) and counts.
class FakeBackend : public Backend {
 public:
  absl::StatusOr<pb::HandshakeResponse> Handshake(
      const pb::HandshakeRequest& request) override {
    absl::MutexLock l(&mu_);
    ++handshakes_;
    pb::HandshakeResponse r;
    r.set_protocol_version(1);
    r.set_backend_kind("fake");
    r.set_last_applied_seq(7);
    return r;
  }
  absl::Status Bind(const pb::Binding& binding) override {
    absl::MutexLock l(&mu_);
    if (binding.name().empty()) return absl::InvalidArgumentError("empty");
    ++bound_;
    return absl::OkStatus();
  }
  pb::Ack Apply(const pb::Mutation& mutation) override {
    absl::MutexLock l(&mu_);
    ++attempts_;
    pb::Ack ack;
    if (!script_.empty()) {
      ack = script_.front();
      script_.pop_front();
    }
    ack.set_seq(mutation.seq());
    if (ack.error() == 0) applied_.push_back(mutation.seq());
    return ack;
  }
  absl::StatusOr<pb::ListDirectoryResponse> ListDirectory(
      const pb::ListDirectoryRequest& request) override {
    return common::ErrnoStatus(ENOTDIR, "not a directory");
  }
  absl::StatusOr<uint64_t> ReadBlock(const pb::ReadBlockRequest& request,
                                     absl::Span<char> out) override {
    const std::string_view block = "block";
    const uint64_t n = std::min(out.size(), block.size());
    std::copy_n(block.data(), n, out.data());
    return n;
  }
  absl::StatusOr<pb::ReadLinkResponse> ReadLink(
      const pb::ReadLinkRequest& request) override {
    return pb::ReadLinkResponse();
  }
  absl::StatusOr<pb::StatResponse> Stat(
      const pb::StatRequest& request) override {
    return pb::StatResponse();
  }
  absl::StatusOr<pb::StatFsResponse> StatFs() override {
    pb::StatFsResponse r;
    r.set_known(true);
    r.set_total_bytes(uint64_t{5} << 40);
    r.set_available_bytes(uint64_t{3} << 40);
    return r;
  }
  void FillStatus(pb::StatusResponse* status) override {
    absl::MutexLock l(&mu_);
    status->set_errors_total(attempts_);
  }

  void Script(pb::Ack ack) {
    absl::MutexLock l(&mu_);
    script_.push_back(std::move(ack));
  }
  int attempts() {
    absl::MutexLock l(&mu_);
    return attempts_;
  }
  int handshakes() {
    absl::MutexLock l(&mu_);
    return handshakes_;
  }
  std::vector<uint64_t> applied() {
    absl::MutexLock l(&mu_);
    return applied_;
  }

 private:
  absl::Mutex mu_;
  std::deque<pb::Ack> script_ ABSL_GUARDED_BY(mu_);
  int attempts_ ABSL_GUARDED_BY(mu_) = 0;
  int handshakes_ ABSL_GUARDED_BY(mu_) = 0;
  int bound_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<uint64_t> applied_ ABSL_GUARDED_BY(mu_);
};

pb::Ack Transient(int err) {
  pb::Ack ack;
  ack.set_error(err);
  ack.set_message("transient");
  return ack;
}

pb::Mutation Sync(uint64_t seq) {
  pb::Mutation m;
  m.set_seq(seq);
  m.mutable_sync()->set_id(0);
  return m;
}

// The service served over a socketpair, as with --fd.
class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = StartServer(&service_);
    ASSERT_NE(server_, nullptr);
    stub_ = Connect();
  }
  void TearDown() override {
    service_.Stop();
    server_->Shutdown(std::chrono::system_clock::now() +
                      std::chrono::seconds(5));
  }

  std::unique_ptr<pb::Mirror::Stub> Connect() {
    int fds[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK);
    grpc::AddInsecureChannelFromFd(server_.get(), fds[0]);
    return pb::Mirror::NewStub(grpc::CreateInsecureChannelFromFd("", fds[1]));
  }

  grpc::Status Handshake(pb::Mirror::Stub* stub) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(10));
    pb::HandshakeRequest request;
    request.set_protocol_version(1);
    request.set_block_size(4096);
    pb::HandshakeResponse response;
    return stub->Handshake(&context, request, &response);
  }

  FakeBackend backend_;
  MirrorService service_{&backend_};
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<pb::Mirror::Stub> stub_;
};

TEST_F(ServerTest, HandshakeComesFirst) {
  grpc::ClientContext context;
  pb::ListDirectoryRequest request;
  pb::ListDirectoryResponse response;
  EXPECT_EQ(stub_->ListDirectory(&context, request, &response).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  grpc::ClientContext apply_context;
  auto stream = stub_->Apply(&apply_context);
  pb::Ack ack;
  EXPECT_FALSE(stream->Read(&ack));
  EXPECT_EQ(stream->Finish().error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);

  grpc::ClientContext bad_version;
  pb::HandshakeRequest old;
  old.set_protocol_version(2);
  pb::HandshakeResponse r;
  EXPECT_EQ(stub_->Handshake(&bad_version, old, &r).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
}

TEST_F(ServerTest, ServesTheMirrorsCapacity) {
  ASSERT_TRUE(Handshake(stub_.get()).ok());
  grpc::ClientContext context;
  pb::StatFsResponse response;
  ASSERT_TRUE(stub_->StatFs(&context, pb::StatFsRequest(), &response).ok());
  EXPECT_TRUE(response.known());
  EXPECT_EQ(response.total_bytes(), uint64_t{5} << 40);
  EXPECT_EQ(response.available_bytes(), uint64_t{3} << 40);
}

TEST_F(ServerTest, RetriesTransientFailuresThenAcks) {
  ASSERT_TRUE(Handshake(stub_.get()).ok());
  backend_.Script(Transient(ENOSPC));
  backend_.Script(Transient(ENOSPC));
  pb::Ack permanent;
  permanent.set_error(EINVAL);
  permanent.set_permanent(true);
  grpc::ClientContext context;
  auto stream = stub_->Apply(&context);
  ASSERT_TRUE(stream->Write(Sync(8)));
  pb::Ack ack;
  ASSERT_TRUE(stream->Read(&ack));
  EXPECT_EQ(ack.seq(), 8u);
  EXPECT_EQ(ack.error(), 0);
  EXPECT_EQ(backend_.attempts(), 3);

  backend_.Script(permanent);  // never retried
  ASSERT_TRUE(stream->Write(Sync(9)));
  ASSERT_TRUE(stream->Read(&ack));
  EXPECT_EQ(ack.seq(), 9u);
  EXPECT_EQ(ack.error(), EINVAL);
  EXPECT_TRUE(ack.permanent());
  EXPECT_EQ(backend_.attempts(), 4);

  ASSERT_TRUE(stream->Write(Sync(10)));
  ASSERT_TRUE(stream->Read(&ack));
  EXPECT_EQ(ack.seq(), 10u);
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_EQ(backend_.applied(), (std::vector<uint64_t>{8, 10}));
}

TEST_F(ServerTest, OneApplyStreamAtATime) {
  ASSERT_TRUE(Handshake(stub_.get()).ok());
  grpc::ClientContext first_context;
  auto first = stub_->Apply(&first_context);
  ASSERT_TRUE(first->Write(Sync(1)));
  pb::Ack ack;
  ASSERT_TRUE(first->Read(&ack));  // the first stream is live now

  grpc::ClientContext second_context;
  auto second = stub_->Apply(&second_context);
  EXPECT_FALSE(second->Read(&ack));
  EXPECT_EQ(second->Finish().error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);

  first->WritesDone();
  EXPECT_TRUE(first->Finish().ok());
}

TEST_F(ServerTest, ANewHandshakeSupersedesTheApplyStream) {
  ASSERT_TRUE(Handshake(stub_.get()).ok());
  grpc::ClientContext old_context;
  auto old_stream = stub_->Apply(&old_context);
  ASSERT_TRUE(old_stream->Write(Sync(1)));
  pb::Ack ack;
  ASSERT_TRUE(old_stream->Read(&ack));

  // A reconnecting fsd, on a new connection.
  std::unique_ptr<pb::Mirror::Stub> again = Connect();
  ASSERT_TRUE(Handshake(again.get()).ok());
  EXPECT_FALSE(old_stream->Read(&ack));
  EXPECT_FALSE(old_stream->Finish().ok());

  grpc::ClientContext context;
  auto stream = again->Apply(&context);
  ASSERT_TRUE(stream->Write(Sync(2)));
  ASSERT_TRUE(stream->Read(&ack));
  EXPECT_EQ(ack.seq(), 2u);
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_EQ(backend_.handshakes(), 2);
}

TEST_F(ServerTest, StopEndsAnIdleStream) {
  ASSERT_TRUE(Handshake(stub_.get()).ok());
  grpc::ClientContext context;
  auto stream = stub_->Apply(&context);
  ASSERT_TRUE(stream->Write(Sync(1)));
  pb::Ack ack;
  ASSERT_TRUE(stream->Read(&ack));
  service_.Stop();
  EXPECT_FALSE(stream->Read(&ack));
  EXPECT_FALSE(stream->Finish().ok());
  EXPECT_EQ(Handshake(stub_.get()).error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(ServerTest, StopEndsARetryingStream) {
  ASSERT_TRUE(Handshake(stub_.get()).ok());
  for (int i = 0; i < 100; ++i) backend_.Script(Transient(EIO));
  grpc::ClientContext context;
  auto stream = stub_->Apply(&context);
  ASSERT_TRUE(stream->Write(Sync(1)));
  // Wait (bounded) until it has retried at least once.
  for (int i = 0; i < 500 && backend_.attempts() < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_GE(backend_.attempts(), 2);
  service_.Stop();
  pb::Ack ack;
  EXPECT_FALSE(stream->Read(&ack));
  // The stream's reader is cancelled to end it: CANCELLED reaches fsd
  // unless the handler's UNAVAILABLE gets there first.
  const grpc::StatusCode code = stream->Finish().error_code();
  EXPECT_TRUE(code == grpc::StatusCode::UNAVAILABLE ||
              code == grpc::StatusCode::CANCELLED)
      << code;
  EXPECT_TRUE(backend_.applied().empty());
}

TEST_F(ServerTest, BindsAndReportsErrnos) {
  ASSERT_TRUE(Handshake(stub_.get()).ok());
  grpc::ClientContext bind_context;
  pb::BindResponse bound;
  auto writer = stub_->Bind(&bind_context, &bound);
  pb::Binding b;
  b.set_id(2);
  b.set_parent(1);
  b.set_name("x");
  ASSERT_TRUE(writer->Write(b));
  ASSERT_TRUE(writer->Write(b));
  writer->WritesDone();
  ASSERT_TRUE(writer->Finish().ok());
  EXPECT_EQ(bound.bound(), 2u);

  grpc::ClientContext context;
  pb::ListDirectoryRequest request;
  pb::ListDirectoryResponse response;
  grpc::Status status = stub_->ListDirectory(&context, request, &response);
  EXPECT_FALSE(status.ok());
  EXPECT_EQ(status.error_details(), std::to_string(ENOTDIR));

  grpc::ClientContext read_context;
  pb::ReadBlockRequest read;
  read.set_length(100);
  pb::ReadBlockResponse block;
  ASSERT_TRUE(stub_->ReadBlock(&read_context, read, &block).ok());
  EXPECT_EQ(block.data(), "block");

  grpc::ClientContext status_context;
  pb::StatusResponse agent;
  ASSERT_TRUE(stub_->GetStatus(&status_context, {}, &agent).ok());
  EXPECT_EQ(agent.mutations_queued(), 0u);
}

}  // namespace
}  // namespace memfuse::mirrord
