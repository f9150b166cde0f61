// Helpers both backends share: what a mutation is called in a log line,
// names checked the same way, and how a failure says whether a retry can
// ever help (the Ack's `permanent`).
#ifndef MEMFUSE_MIRRORD_BACKEND_BACKEND_COMMON_H_
#define MEMFUSE_MIRRORD_BACKEND_BACKEND_COMMON_H_

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "mirror.pb.h"

namespace memfuse::mirrord {

namespace pb = ::memfuse::mirror::v1;

// FUSE_SET_ATTR_* from <fuse_lowlevel.h>, the mask of SetAttr.
inline constexpr uint32_t kSetMode = 1 << 0;
inline constexpr uint32_t kSetUid = 1 << 1;
inline constexpr uint32_t kSetGid = 1 << 2;
inline constexpr uint32_t kSetSize = 1 << 3;
inline constexpr uint32_t kSetAtime = 1 << 4;
inline constexpr uint32_t kSetMtime = 1 << 5;
inline constexpr uint32_t kSetAtimeNow = 1 << 7;
inline constexpr uint32_t kSetMtimeNow = 1 << 8;

inline constexpr size_t kMaxName = 255;

// `status` marked as never to be retried, whatever its errno.
absl::Status Permanent(absl::Status status);
// EINVAL (permanent): bad input.
absl::Status Invalid(absl::string_view message);
// `err` (permanent): an object in the way, an unsupported operation.
absl::Status Conflict(int err, absl::string_view message);
// Environmental failures a retry may get past (space freed, permissions
// fixed, a disk or server back); the server retries them with backoff.
bool IsTransientErrno(int err);
bool IsPermanent(const absl::Status& status);
// The mirror no longer has an object a mutation needs, or a directory on
// its path: lost by the server, removed underneath, or an id this agent
// does not know. Never retried: the Ack names the object (missing_id) and
// fsd re-creates it (DESIGN.md, invariant 3).
absl::Status Missing(absl::string_view message);
bool IsMissing(const absl::Status& status);
// The object fsd must re-create when mutation `m` found something missing:
// the object it creates, changes, links or renames; 0 for a removal (what
// is gone needs no removing) and for a sync of the whole mount.
uint64_t RepairTargetOf(const pb::Mutation& m);
// `status` with `what` in front of its message, payloads kept.
absl::Status Prefixed(const absl::Status& status, absl::string_view what);
// A name for a log line: quoted, escaped, at most 300 bytes of it.
std::string Quoted(absl::string_view name);
// Names fsd sends: one component; ENAMETOOLONG beyond 255 bytes.
absl::Status CheckName(absl::string_view name);

// What a backend records of the acknowledgements it gave, for the status
// call. Not thread-safe: the backend's own mutex guards it.
struct AckBook {
  // Where a replay resumes: everything up to it is durable in the mirror.
  uint64_t last_applied_seq = 0;
  bool healthy = true;
  std::string last_error;
  uint64_t errors_total = 0;
  uint64_t directories_listed = 0;
  uint64_t blocks_read = 0;
  uint64_t commits = 0;
  uint64_t missing_objects = 0;

  // The ack of mutation `m`, which ended with `status`, recorded. A
  // permanent refusal is logged here: never retried, this is its only
  // trace (the server logs transient ones, once per cause). A missing
  // object gives an ack naming it. `durable`: applying it made it durable
  // (a local mirror); otherwise last_applied_seq moves only at commits.
  pb::Ack Record(const pb::Mutation& m, const absl::Status& status,
                 bool durable = true);
  void Fill(pb::StatusResponse* status) const;
};

const char* KindOf(mode_t mode);
// One line saying what `m` does, for logs and acks.
std::string Describe(const pb::Mutation& m);
// The object a data or attribute change is for (0 for other mutations).
uint64_t ObjectOf(const pb::Mutation& m);

}  // namespace memfuse::mirrord

#endif  // MEMFUSE_MIRRORD_BACKEND_BACKEND_COMMON_H_
