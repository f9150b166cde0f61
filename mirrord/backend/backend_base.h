// What every mirror backend does the same way, once: the session's start
// (the request checked, the bindings forgotten, where replay resumes, the
// response's common fields), the bindings fsd sends after it, and the
// status. A backend supplies what is its own through the hooks:
// DescribeMirror (its root, kind, limits) and StartSessionLocked (its
// per-session state and resume point), BoundLocked (what it indexes per
// binding).
//
// Thread-safety: mu_ guards the ids, the acknowledgement book and the
// session, and whatever the backend adds under it; the hooks ending in
// Locked are called with it held.
#ifndef MEMFUSE_MIRRORD_BACKEND_BACKEND_BASE_H_
#define MEMFUSE_MIRRORD_BACKEND_BACKEND_BASE_H_

#include <cstdint>

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

  absl::Mutex mu_;
  IdMap ids_ ABSL_GUARDED_BY(mu_){kRootId};
  AckBook acks_ ABSL_GUARDED_BY(mu_);
  uint64_t session_id_ ABSL_GUARDED_BY(mu_) = 0;
  uint32_t block_size_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace memfuse::mirrord

#endif  // MEMFUSE_MIRRORD_BACKEND_BACKEND_BASE_H_
