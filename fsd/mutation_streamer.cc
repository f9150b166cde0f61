// Sends the MutationLog to the mirror agent (mutation_streamer.h).
#include "fsd/mutation_streamer.h"

#include <optional>
#include <string>
#include <thread>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "fsd/change_recorder.h"
#include "glog/logging.h"

namespace memfuse::fsd {

void MutationStreamer::Stream() {
  std::shared_ptr<MirrorChannel::Stub> stub = channel_->stub();
  if (stub == nullptr) return;
  grpc::ClientContext ctx;
  {
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
      // The mirror lost an object: it is re-created before the next ack
      // is read.
      if (const uint64_t lost = log_->Acked(ack); lost != 0) lost_(lost);
    }
    broken = true;
    log_->WakeSender();
  });
  while (!stopping_ && !broken) {
    std::optional<MutationLog::ToSend> out =
        log_->TakeNext(absl::Milliseconds(200));
    if (!out) continue;
    std::shared_ptr<const pb::Mutation> message = out->message;
    if (message == nullptr) {
      message = BuildWrite(*out);
      log_->KeepForResend(out->seq, message);
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

void MutationStreamer::Stop() {
  absl::MutexLock l(&mu_);
  stopping_ = true;
  if (stream_ctx_ != nullptr) stream_ctx_->TryCancel();
}

std::shared_ptr<const pb::Mutation> MutationStreamer::BuildWrite(
    const MutationLog::ToSend& out) {
  const std::shared_ptr<common::SharedRegion>& region = channel_->region();
  if (out.inode != nullptr && channel_->agent_has_region()) {
    // The bytes go where the agent can O_DIRECT them from: a file offset's
    // place within its page is kept within the region's page.
    const uint64_t pad = out.offset % common::kRegionAlign;
    const std::shared_ptr<common::RegionAllocator>& ranges =
        channel_->region_ranges();
    if (std::optional<uint64_t> at = ranges->Allocate(pad + out.length)) {
      std::shared_ptr<pb::Mutation> built(
          new pb::Mutation, [ranges, region, at](pb::Mutation* m) {
            ranges->Free(*at);
            delete m;
          });
      built->set_seq(out.seq);
      pb::Write* write = built->mutable_write();
      const uint64_t n = ChangeRecorder::WriteMessage(
          *out.inode, block_size_, out.offset, out.length, write,
          region->data() + *at + pad);
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
    ChangeRecorder::WriteMessage(*out.inode, block_size_, out.offset,
                                 out.length, built->mutable_write());
  } else {  // deleted meanwhile: a no-op in its place
    built->mutable_write()->set_id(out.id);
    built->mutable_write()->set_offset(out.offset);
  }
  return built;
}

std::shared_ptr<const pb::Mutation> MutationStreamer::ForThisAgent(
    std::shared_ptr<const pb::Mutation> message) {
  if (!message->has_write() || message->write().shared_length() == 0 ||
      channel_->agent_has_region()) {
    return message;
  }
  // Built for an agent that had the region; this one has not (it failed
  // to map it): the same bytes inline. `message` keeps the range alive.
  auto inline_copy = std::make_shared<pb::Mutation>(*message);
  pb::Write* write = inline_copy->mutable_write();
  write->set_data(channel_->region()->data() + write->shared_offset(),
                  write->shared_length());
  write->clear_shared_offset();
  write->clear_shared_length();
  return inline_copy;
}

}  // namespace memfuse::fsd
