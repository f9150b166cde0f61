// What every mirror backend does the same way, once: the session's start
// (the request checked, the bindings forgotten, where replay resumes, the
// response's common fields), the bindings fsd sends after it, the front
// and back of Apply (a mutation checked, its offsets held to what Linux
// allows, skipped when a replay finds it applied, dispatched by kind, its
// failure described, its ack recorded), the ids a listing binds, a block
// read's range and count, and the status. A backend supplies what is its
// own: the storage operations (ApplyCreate ... ApplySync, ReadDirectory,
// ReadBytes) and the hooks DescribeMirror,
// StartSessionLocked, BoundLocked, NeedsApplyingLocked, BeforeChange,
// AfterChange, WhereInMirror, MakeAck, LinkedIdLocked and ListedLocked.
//
// Thread-safety: mu_ guards the ids, the acknowledgement book and the
// session, and whatever the backend adds under it; the hooks ending in
// Locked are called with it held.
#ifndef MEMFUSE_MIRRORD_BACKEND_BACKEND_BASE_H_
#define MEMFUSE_MIRRORD_BACKEND_BACKEND_BASE_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

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
  // Binds the entries of a bound directory to ids, in name order: another
  // name of an object bound already (a hard link) takes that object's id,
  // everything else the next of first_child_id, first_child_id + 1, ...
  // The same request again (a replay) gives the same ids. With
  // max_new_ids set and more new ids needed, binds nothing and says how
  // many (ids_needed). INVALID_ARGUMENT for an unknown directory or a
  // first_child_id that is no new id.
  absl::StatusOr<pb::ListDirectoryResponse> ListDirectory(
      const pb::ListDirectoryRequest& request) final ABSL_LOCKS_EXCLUDED(mu_);
  // Checks the range (INVALID_ARGUMENT past kMaxReadLength or the largest
  // file offset, as pread(2)), reads through ReadBytes and counts it.
  absl::StatusOr<uint64_t> ReadBlock(const pb::ReadBlockRequest& request,
                                     absl::Span<char> out) final
      ABSL_LOCKS_EXCLUDED(mu_);
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

  // One entry of a directory as the mirror holds it, before it has an id.
  struct ListedEntry {
    // Name, attributes (all but the id), symlink target, xattrs.
    pb::DirEntry entry;
    // What the mirror calls the object behind the name (local: st_dev and
    // st_ino; HTTP: 0 and the server's node).
    std::pair<uint64_t, uint64_t> object;
    // Whether other names may lead to the same object (a file that may
    // have hard links): all of its names then share one id.
    bool linkable = false;
  };
  // The entries of bound directory `dir_id`, in any order. Called without
  // mu_ (it may wait for the mirror).
  virtual absl::StatusOr<std::vector<ListedEntry>> ReadDirectory(
      uint64_t dir_id) ABSL_LOCKS_EXCLUDED(mu_) = 0;
  // The id the object behind a linkable entry has already in this session
  // (another of its names was bound before this listing), or 0.
  virtual uint64_t LinkedIdLocked(const ListedEntry& listed)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return 0;
  }
  // A listed entry was bound to `id` (in ids_ already).
  virtual void ListedLocked(uint64_t id, const ListedEntry& listed)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {}

  // Reads out.size() bytes (the request's length, or less when `out` is
  // shorter) of file request.id() at request.offset(); how many (fewer at
  // the end of the file). Called without mu_.
  virtual absl::StatusOr<uint64_t> ReadBytes(
      const pb::ReadBlockRequest& request, absl::Span<char> out)
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
