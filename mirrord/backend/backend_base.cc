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

pb::Ack BackendBase::Apply(const pb::Mutation& mutation) {
  const uint64_t seq = mutation.seq();
  absl::Status status;
  bool needed = false;
  if (seq == 0) {
    status = Invalid("seq 0");
  } else if (mutation.op_case() == pb::Mutation::OP_NOT_SET) {
    status = Invalid("no operation");
  } else {
    absl::MutexLock l(&mu_);
    absl::StatusOr<bool> needs = NeedsApplyingLocked(mutation);
    if (needs.ok()) {
      needed = *needs;
    } else {
      status = needs.status();
    }
  }
  if (status.ok() && !needed) {
    VLOG(1) << Describe(mutation) << ": nothing to do";
  } else if (status.ok()) {
    status = BeforeChange(mutation);
    if (status.ok()) {
      switch (mutation.op_case()) {
        case pb::Mutation::kCreate:
          status = ApplyCreate(seq, mutation.create());
          break;
        case pb::Mutation::kWrite:
          status = ApplyWrite(mutation.write());
          break;
        case pb::Mutation::kPunchHole:
          status = ApplyPunchHole(mutation.punch_hole());
          break;
        case pb::Mutation::kSetAttr:
          status = ApplySetAttr(mutation.set_attr());
          break;
        case pb::Mutation::kLink:
          status = ApplyLink(seq, mutation.link());
          break;
        case pb::Mutation::kRemove:
          status = ApplyRemove(seq, mutation.remove());
          break;
        case pb::Mutation::kRename:
          status = ApplyRename(seq, mutation.rename());
          break;
        case pb::Mutation::kSetXattr:
          status = ApplySetXattr(mutation.set_xattr());
          break;
        case pb::Mutation::kRemoveXattr:
          status = ApplyRemoveXattr(mutation.remove_xattr());
          break;
        case pb::Mutation::kSync:
          status = ApplySync(seq, mutation.sync());
          break;
        default:
          status = Invalid("unexpected operation");
      }
    }
    status = AfterChange(mutation, std::move(status));
  }
  if (!status.ok()) {
    status = Prefixed(status,
                      absl::StrCat(Describe(mutation), WhereInMirror(mutation)));
  }
  return MakeAck(mutation, status);
}

void BackendBase::FillStatus(pb::StatusResponse* status) {
  absl::MutexLock l(&mu_);
  acks_.Fill(status);
}

}  // namespace memfuse::mirrord
