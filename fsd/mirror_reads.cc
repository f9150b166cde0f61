// The reads fsd makes of the mirror (mirror_reads.h).
#include "fsd/mirror_reads.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/time/clock.h"
#include "common/status.h"
#include "glog/logging.h"

namespace memfuse::fsd {
namespace {

// statfs(2) asks the agent for the mirror's capacity at most this often,
// and waits at most kStatFsTimeout for the answer (then the last stands).
constexpr absl::Duration kStatFsMaxAge = absl::Seconds(1);
constexpr absl::Duration kStatFsTimeout = absl::Milliseconds(500);

using Stub = MirrorChannel::Stub;

}  // namespace

absl::StatusOr<uint64_t> MirrorReads::ReadBlock(uint64_t id, uint64_t offset,
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
  const std::shared_ptr<common::RegionAllocator>& ranges =
      channel_->region_ranges();
  std::optional<uint64_t> at;
  if (channel_->agent_has_region()) at = ranges->Allocate(pages);
  absl::Cleanup free_range = [&] {
    if (at.has_value()) ranges->Free(*at);
  };
  pb::ReadBlockResponse response;
  grpc::Status status =
      channel_->CallWithRetry([&](Stub* stub, grpc::ClientContext* ctx) {
        // The agent answering may be a new one, without the region.
        const bool shared = at.has_value() && channel_->agent_has_region();
        request.set_into_shared(shared);
        request.set_shared_offset(shared ? *at : 0);
        request.set_length(static_cast<uint32_t>(shared ? pages : length));
        response.Clear();
        return stub->ReadBlock(ctx, request, &response);
      });
  RETURN_IF_ERROR(FromGrpcStatus(status));
  if (request.into_shared()) {
    if (response.shared_length() > pages) {
      return absl::InternalError("the agent read more than was asked");
    }
    const uint64_t got = std::min<uint64_t>(response.shared_length(), length);
    std::memcpy(out, channel_->region()->data() + *at, got);
    return got;
  }
  const uint64_t got = std::min<uint64_t>(response.data().size(), length);
  std::memcpy(out, response.data().data(), got);
  return got;
}

absl::StatusOr<pb::ListDirectoryResponse> MirrorReads::ListDirectory(
    uint64_t id, uint64_t first_id, uint64_t max_new_ids) {
  pb::ListDirectoryRequest request;
  request.set_id(id);
  request.set_first_child_id(first_id);
  request.set_max_new_ids(max_new_ids);
  pb::ListDirectoryResponse response;
  grpc::Status status =
      channel_->CallWithRetry([&](Stub* stub, grpc::ClientContext* ctx) {
        return stub->ListDirectory(ctx, request, &response);
      });
  RETURN_IF_ERROR(FromGrpcStatus(status));
  return response;
}

std::optional<pb::StatFsResponse> MirrorReads::StatFs() {
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
  if (std::shared_ptr<Stub> stub = channel_->stub(); stub != nullptr) {
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

}  // namespace memfuse::fsd
