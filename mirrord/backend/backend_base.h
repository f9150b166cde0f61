// What every mirror backend does the same way, once: the session's start
// (the request checked, the bindings forgotten, where replay resumes, the
// response's common fields), the bindings fsd sends after it, the front
// and back of Apply (a mutation checked, skipped when a replay finds it
// applied, dispatched by kind, its failure described, its ack recorded),
// and the status. A backend supplies what is its own: the storage
// operations (ApplyCreate ... ApplySync) and the hooks DescribeMirror,
// StartSessionLocked, BoundLocked, NeedsApplyingLocked, BeforeChange,
// AfterChange, WhereInMirror and MakeAck.
//
// Thread-safety: mu_ guards the ids, the acknowledgement book and the
// session, and whatever the backend adds under it; the hooks ending in
// Locked are called with it held.
#ifndef MEMFUSE_MIRRORD_BACKEND_BACKEND_BASE_H_
#define MEMFUSE_MIRRORD_BACKEND_BACKEND_BASE_H_

#include <cstdint>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "mirrord/backend/backend.h"
#include "mirrord/backend/backend_common.h"
#include "mirrord/backend/id_map.h"

namespace memfuse::mirrord {

class BackendBase : public Backend {
 public:
  static constexpr uint64_t kRootId = 1;
  // The largest ReadBlock: fsd's largest --block-size (64 MiB).
  static constexpr uint32_t kMaxReadLength = 64u << 20;

  absl::StatusOr<pb::HandshakeResponse> Handshake(
      const pb::HandshakeRequest& request) final ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status Bind(const pb::Binding& binding) final ABSL_LOCKS_EXCLUDED(mu_);
  pb::Ack Apply(const pb::Mutation& mutation) final ABSL_LOCKS_EXCLUDED(mu_);
  void FillStatus(pb::StatusResponse* status) final ABSL_LOCKS_EXCLUDED(mu_);

 protected:
  // The mirror as the handshake shows it: its root's attributes (and
  // xattrs), kind, description and limits. Called without mu_ (it may
  // wait for the mirror).
  virtual absl::StatusOr<pb::HandshakeResponse> DescribeMirror() = 0;

  // A session starts (session_id_ and block_size_ already the new ones;
  // `previous_session` the one before): forget every per-session state
  // but the root's, and say after which seq replay resumes.
  virtual absl::StatusOr<uint64_t> StartSessionLocked(
      uint64_t previous_session) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) = 0;

  // A binding was recorded in ids_.
  virtual void BoundLocked(uint64_t id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {}

  // Whether a well-formed mutation is to be applied: false when there is
  // nothing to do (a replay of one already applied, a change to an object
  // the mirror holds no trace of), an error when it cannot be (Missing).
  virtual absl::StatusOr<bool> NeedsApplyingLocked(
      const pb::Mutation& mutation) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) = 0;
  // Runs before a mutation is dispatched; its error is the mutation's.
  virtual absl::Status BeforeChange(const pb::Mutation& mutation) {
    return absl::OkStatus();
  }
  // What a dispatched mutation's outcome means for this mirror (an errno
  // turned into Missing or a refusal of one object).
  virtual absl::Status AfterChange(const pb::Mutation& mutation,
                                   absl::Status status) {
    return status;
  }
  // Where in the mirror a failed mutation was, for its message.
  virtual std::string WhereInMirror(const pb::Mutation& mutation) {
    return "";
  }
  // Records the ack of `mutation` (see AckBook) and anything the backend
  // keeps per applied mutation.
  virtual pb::Ack MakeAck(const pb::Mutation& mutation,
                          const absl::Status& status)
      ABSL_LOCKS_EXCLUDED(mu_) = 0;

  // The storage operations, one per mutation kind, called without mu_ in
  // stream order. A kind the mirror does not keep returns OkStatus.
  virtual absl::Status ApplyCreate(uint64_t seq, const pb::Create& op) = 0;
  virtual absl::Status ApplyWrite(const pb::Write& op) = 0;
  virtual absl::Status ApplyPunchHole(const pb::PunchHole& op) = 0;
  virtual absl::Status ApplySetAttr(const pb::SetAttr& op) = 0;
  virtual absl::Status ApplyLink(uint64_t seq, const pb::Link& op) = 0;
  virtual absl::Status ApplyRemove(uint64_t seq, const pb::Remove& op) = 0;
  virtual absl::Status ApplyRename(uint64_t seq, const pb::Rename& op) = 0;
  virtual absl::Status ApplySetXattr(const pb::SetXattr& op) = 0;
  virtual absl::Status ApplyRemoveXattr(const pb::RemoveXattr& op) = 0;
  virtual absl::Status ApplySync(uint64_t seq, const pb::Sync& op) = 0;

  absl::Mutex mu_;
  IdMap ids_ ABSL_GUARDED_BY(mu_){kRootId};
  AckBook acks_ ABSL_GUARDED_BY(mu_);
  uint64_t session_id_ ABSL_GUARDED_BY(mu_) = 0;
  uint32_t block_size_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace memfuse::mirrord

#endif  // MEMFUSE_MIRRORD_BACKEND_BACKEND_BASE_H_
