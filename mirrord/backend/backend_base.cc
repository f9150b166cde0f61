#include "mirrord/backend/backend_base.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status.h"
#include "glog/logging.h"

namespace memfuse::mirrord {

absl::StatusOr<pb::HandshakeResponse> BackendBase::Handshake(
    const pb::HandshakeRequest& request) {
  if (request.block_size() == 0 || request.block_size() > kMaxReadLength) {
    return absl::InvalidArgumentError(absl::StrCat(
        "block_size ", request.block_size(), " is not in 1..", kMaxReadLength));
  }
  ASSIGN_OR_RETURN(pb::HandshakeResponse response, DescribeMirror());
  absl::MutexLock l(&mu_);
  ids_.Clear();
  const uint64_t previous_session = session_id_;
  session_id_ = request.session_id();
  block_size_ = request.block_size();
  ASSIGN_OR_RETURN(const uint64_t resume,
                   StartSessionLocked(previous_session));
  acks_.last_applied_seq = resume;
  LOG(INFO) << "session " << absl::StrFormat("%016x", session_id_)
            << ": block size " << block_size_ << ", last applied seq "
            << resume;
  response.set_protocol_version(1);
  response.set_last_applied_seq(resume);
  response.set_needs_bindings(true);
  return response;
}

absl::Status BackendBase::Bind(const pb::Binding& binding) {
  absl::Status name_ok = CheckName(binding.name());
  if (!name_ok.ok()) return absl::InvalidArgumentError(name_ok.message());
  absl::MutexLock l(&mu_);
  absl::Status added =
      ids_.AddLink(binding.id(), binding.parent(), binding.name());
  if (!added.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("binding ", binding.id(), " ", Quoted(binding.name()),
                     " in ", binding.parent(), ": ", added.message()));
  }
  BoundLocked(binding.id());
  return absl::OkStatus();
}

void BackendBase::FillStatus(pb::StatusResponse* status) {
  absl::MutexLock l(&mu_);
  acks_.Fill(status);
}

}  // namespace memfuse::mirrord
