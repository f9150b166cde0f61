#include "mirrord/backend/backend_common.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>

#include "absl/strings/cord.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "glog/logging.h"
#include "mirrord/backend/confined_dir.h"

namespace memfuse::mirrord {

using common::ErrnoStatus;
using common::StatusToErrno;

namespace {

// A failure that must never be retried, whatever its errno (the Ack's
// `permanent`). Validation errors carry EINVAL and are permanent anyway.
constexpr absl::string_view kPermanentPayload = "memfuse/permanent";
constexpr absl::string_view kMissingPayload = "memfuse/missing";

}  // namespace

absl::Status Permanent(absl::Status status) {
  status.SetPayload(kPermanentPayload, absl::Cord("1"));
  return status;
}

absl::Status Missing(absl::string_view message) {
  absl::Status status = ErrnoStatus(ENOENT, message);
  status.SetPayload(kMissingPayload, absl::Cord("1"));
  return Permanent(std::move(status));
}

bool IsMissing(const absl::Status& status) {
  return status.GetPayload(kMissingPayload).has_value();
}

uint64_t RepairTargetOf(const pb::Mutation& m) {
  switch (m.op_case()) {
    case pb::Mutation::kCreate:
      return m.create().attr().id();
    case pb::Mutation::kLink:
      return m.link().id();
    case pb::Mutation::kRename:
      return m.rename().id();
    case pb::Mutation::kRemove:
      return 0;
    default:
      return ObjectOf(m);
  }
}

absl::Status Invalid(absl::string_view message) {
  return ErrnoStatus(EINVAL, message);
}

absl::Status Conflict(int err, absl::string_view message) {
  return Permanent(ErrnoStatus(err, message));
}

bool IsTransientErrno(int err) {
  switch (err) {
    case ENOSPC:
    case EDQUOT:
    case EACCES:
    case EPERM:
    case EIO:
    case EROFS:
    case ENOENT:
    case EAGAIN:
    case EINTR:
    case ENOMEM:
    case EMFILE:
    case ENFILE:
    case EBUSY:
    case ETXTBSY:
    case ESTALE:
    case ETIMEDOUT:
    case ENOBUFS:
    case ENOLCK:
      return true;
    default:
      return false;
  }
}

bool IsPermanent(const absl::Status& status) {
  return status.GetPayload(kPermanentPayload).has_value() ||
         !IsTransientErrno(StatusToErrno(status));
}

absl::Status Prefixed(const absl::Status& status, absl::string_view what) {
  absl::Status out(status.code(), absl::StrCat(what, ": ", status.message()));
  status.ForEachPayload([&](absl::string_view url, const absl::Cord& payload) {
    out.SetPayload(url, payload);
  });
  return out;
}

std::string Quoted(absl::string_view name) {
  return absl::StrCat("\"", absl::CEscape(name.substr(0, 300)), "\"");
}

absl::Status CheckName(absl::string_view name) {
  if (name.size() > kMaxName) {
    return ErrnoStatus(ENAMETOOLONG,
                       absl::StrCat("name of ", name.size(), " bytes"));
  }
  absl::Status valid = ValidateName(name);
  if (!valid.ok()) return Invalid(valid.message());
  return absl::OkStatus();
}

pb::Ack AckBook::Record(const pb::Mutation& m, const absl::Status& status,
                        bool durable) {
  const uint64_t seq = m.seq();
  pb::Ack ack;
  ack.set_seq(seq);
  // A removal whose object (or its directory) is gone already is done.
  const bool gone = IsMissing(status) && RepairTargetOf(m) == 0;
  if (status.ok() || gone) {
    if (durable) last_applied_seq = std::max(last_applied_seq, seq);
    healthy = true;
    return ack;
  }
  ack.set_error(StatusToErrno(status));
  ack.set_message(std::string(status.message()));
  ack.set_permanent(IsPermanent(status));
  ++errors_total;
  last_error = std::string(status.message());
  if (IsMissing(status)) {
    ack.set_missing_id(RepairTargetOf(m));
    ++missing_objects;
    LOG(WARNING) << status.message()
                 << ": the mirror lost it; fsd re-creates object "
                 << ack.missing_id();
    if (durable) last_applied_seq = std::max(last_applied_seq, seq);
  } else if (ack.permanent()) {
    LOG(WARNING) << "rejected: " << status.message();
    if (durable) last_applied_seq = std::max(last_applied_seq, seq);
  } else {
    healthy = false;
  }
  return ack;
}

void AckBook::Fill(pb::StatusResponse* status) const {
  status->set_last_applied_seq(last_applied_seq);
  status->set_backend_healthy(healthy);
  status->set_last_error(last_error);
  status->set_errors_total(errors_total);
  status->set_directories_listed(directories_listed);
  status->set_blocks_read(blocks_read);
  status->set_commits(commits);
  status->set_missing_objects(missing_objects);
}

const char* KindOf(mode_t mode) {
  switch (mode & S_IFMT) {
    case S_IFREG:
      return "file";
    case S_IFDIR:
      return "directory";
    case S_IFLNK:
      return "symlink";
    case S_IFIFO:
      return "fifo";
    case S_IFSOCK:
      return "socket";
    case S_IFCHR:
      return "character device";
    case S_IFBLK:
      return "block device";
    default:
      return "object of unknown type";
  }
}

std::string Describe(const pb::Mutation& m) {
  std::string what = absl::StrCat("seq ", m.seq(), " ");
  switch (m.op_case()) {
    case pb::Mutation::kCreate:
      absl::StrAppend(&what, "create ", KindOf(m.create().attr().mode()), " ",
                      m.create().attr().id(), " ", Quoted(m.create().name()),
                      " in ", m.create().parent());
      break;
    case pb::Mutation::kWrite:
      absl::StrAppend(&what, "write ", m.write().id(), " at ",
                      m.write().offset(), " (", m.write().data().size(),
                      " bytes)");
      break;
    case pb::Mutation::kSetAttr:
      absl::StrAppend(&what, "set_attr ", m.set_attr().attr().id(), " mask ",
                      m.set_attr().mask());
      break;
    case pb::Mutation::kLink:
      absl::StrAppend(&what, "link ", m.link().id(), " as ",
                      Quoted(m.link().new_name()), " in ",
                      m.link().new_parent());
      break;
    case pb::Mutation::kRemove:
      absl::StrAppend(&what, "remove ", m.remove().id(), " ",
                      Quoted(m.remove().name()), " in ", m.remove().parent());
      break;
    case pb::Mutation::kRename:
      absl::StrAppend(&what, "rename ", m.rename().id(), " ",
                      Quoted(m.rename().name()), " in ", m.rename().parent(),
                      " to ", Quoted(m.rename().new_name()), " in ",
                      m.rename().new_parent(), " flags ", m.rename().flags());
      break;
    case pb::Mutation::kSetXattr:
      absl::StrAppend(&what, "set_xattr ", m.set_xattr().id(), " ",
                      Quoted(m.set_xattr().name()));
      break;
    case pb::Mutation::kRemoveXattr:
      absl::StrAppend(&what, "remove_xattr ", m.remove_xattr().id(), " ",
                      Quoted(m.remove_xattr().name()));
      break;
    case pb::Mutation::kSync:
      absl::StrAppend(&what, "sync ", m.sync().id());
      break;
    case pb::Mutation::kPunchHole:
      absl::StrAppend(&what, "punch_hole ", m.punch_hole().id(), " at ",
                      m.punch_hole().offset(), " (", m.punch_hole().length(),
                      " bytes)");
      break;
    case pb::Mutation::OP_NOT_SET:
      absl::StrAppend(&what, "(no operation)");
      break;
  }
  return what;
}

uint64_t ObjectOf(const pb::Mutation& m) {
  switch (m.op_case()) {
    case pb::Mutation::kWrite:
      return m.write().id();
    case pb::Mutation::kPunchHole:
      return m.punch_hole().id();
    case pb::Mutation::kSetAttr:
      return m.set_attr().attr().id();
    case pb::Mutation::kSetXattr:
      return m.set_xattr().id();
    case pb::Mutation::kRemoveXattr:
      return m.remove_xattr().id();
    case pb::Mutation::kSync:
      return m.sync().id();
    default:
      return 0;
  }
}

}  // namespace memfuse::mirrord
