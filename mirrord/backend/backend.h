// What mirrord needs from a mirror backend (local directory, later HTTP).
//
// The server (mirrord/server.cc) owns the gRPC side: it calls Apply() for
// each mutation in stream order from one thread at a time, retries an
// Ack that is neither success nor permanent with backoff (the backend must
// leave the mirror unchanged or idempotently re-appliable on such an
// error), and serves the read calls concurrently from other threads.
// Implementations are thread-safe.
#ifndef MEMFUSE_MIRRORD_BACKEND_BACKEND_H_
#define MEMFUSE_MIRRORD_BACKEND_BACKEND_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/shared_region.h"
#include "mirror.pb.h"

namespace memfuse::mirrord {

namespace pb = ::memfuse::mirror::v1;

class Backend {
 public:
  virtual ~Backend() = default;

  // Starts the backend's own threads, if it has any. Called once, after
  // Open() and after the agent confined itself (confine.h: a thread started
  // earlier would escape the confinement), before any other call.
  virtual void Start() {}

  // Starts (or restarts) a session: forgets every binding except the root
  // (id 1) and reports where replay resumes for `request.session_id()`.
  virtual absl::StatusOr<pb::HandshakeResponse> Handshake(
      const pb::HandshakeRequest& request) = 0;

  // Records one binding sent by fsd after a handshake.
  virtual absl::Status Bind(const pb::Binding& binding) = 0;

  // Applies one mutation and says how it went. `ack.seq` is the mutation's.
  // error 0: applied (or already applied: replays are idempotent).
  // permanent: will never apply (bad name, unknown id, conflicting object);
  // logged by the backend, never retried. Otherwise transient (ENOSPC,
  // EACCES, EIO, a parent removed underneath): nothing half-done that a
  // retry cannot finish; the server retries with backoff.
  // A missing object (Missing() in backend_common.h) is acknowledged with
  // its id, for fsd to re-create; one the backend does not know is missing
  // too, never silently "applied".
  virtual pb::Ack Apply(const pb::Mutation& mutation) = 0;

  // Group commit (DESIGN.md, invariant 3: acknowledged means kept). A
  // backend whose applied changes become durable only at a later barrier
  // (an HTTP server that saves lazily) says how far they are durable; the
  // server holds back the acks of the rest and calls Commit() when the
  // stream goes idle, after a few hundred milliseconds under load, and
  // whenever NeedsCommitBefore() says so. All from the Apply thread.
  //
  // The last seq whose effects are durable (every later one applied is
  // not yet); the default: everything applied is.
  virtual uint64_t DurableSeq() { return UINT64_MAX; }
  // Whether `mutation` must wait for a commit of what came before it.
  virtual bool NeedsCommitBefore(const pb::Mutation& mutation) {
    return false;
  }
  // Makes everything applied so far durable. OK: done (DurableSeq covers
  // it). ABORTED: the backend may have lost what was applied since the
  // last commit (the server restarted): apply those mutations again, in
  // order, then commit again. Anything else: transient, retry later.
  virtual absl::Status Commit() { return absl::OkStatus(); }

  virtual absl::StatusOr<pb::ListDirectoryResponse> ListDirectory(
      const pb::ListDirectoryRequest& request) = 0;
  // Reads `request.length()` bytes of the file at `request.offset()` into
  // `out` (which has room for them); returns how many (fewer at the end of
  // the file). The server decides where `out` is: the response or the data
  // region.
  virtual absl::StatusOr<uint64_t> ReadBlock(const pb::ReadBlockRequest& request,
                                             absl::Span<char> out) = 0;
  virtual absl::StatusOr<pb::ReadLinkResponse> ReadLink(
      const pb::ReadLinkRequest& request) = 0;
  virtual absl::StatusOr<pb::StatResponse> Stat(
      const pb::StatRequest& request) = 0;
  // The mirror's capacity and free space (statfs(2) on the mount).
  virtual absl::StatusOr<pb::StatFsResponse> StatFs() = 0;

  // Fills the backend's part of the status (last_applied_seq, health,
  // errors, listing and read counters).
  virtual void FillStatus(pb::StatusResponse* status) = 0;

  // The data region fsd passed (see common/shared_region.h), or null; set
  // before serving, never changed after.
  void set_shared_region(const common::MappedRegion* region) {
    shared_region_ = region;
  }
  const common::MappedRegion* shared_region() const { return shared_region_; }

 protected:
  // The bytes `write` carries: inline, or a bounds-checked view of the data
  // region (INVALID_ARGUMENT when it names a range outside it, or a region
  // this agent has not got).
  absl::StatusOr<absl::string_view> WriteBytes(const pb::Write& write) const {
    if (write.shared_length() == 0) return write.data();
    if (!write.data().empty()) {
      return absl::InvalidArgumentError(
          "a write with both inline data and a data region range");
    }
    if (shared_region_ == nullptr) {
      return absl::InvalidArgumentError(
          "a write names the data region, but this agent has none");
    }
    return shared_region_->View(write.shared_offset(), write.shared_length());
  }

 private:
  const common::MappedRegion* shared_region_ = nullptr;
};

}  // namespace memfuse::mirrord

#endif  // MEMFUSE_MIRRORD_BACKEND_BACKEND_H_
