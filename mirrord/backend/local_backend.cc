// The local backend's session, replay state, id resolution and the front
// of Apply (dispatch and acknowledgement). Its changes, file data and
// reads are in local_backend_changes.cc, _data.cc and _reads.cc.
#include "mirrord/backend/local_backend.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstring>

#include "absl/strings/cord.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/status.h"
#include "glog/logging.h"
#include "mirrord/backend/backend_common.h"
#include "mirrord/backend/mirror_limits.h"
#include "mirrord/backend/local_posix.h"

namespace memfuse::mirrord {

using common::ErrnoStatus;
using common::StatusToErrno;
using common::UniqueFd;
using namespace local;  // NOLINT: the backend's own POSIX mapping

// --- opening and the session ---

absl::StatusOr<std::unique_ptr<LocalBackend>> LocalBackend::Open(
    const std::string& path, Env* env) {
  ASSIGN_OR_RETURN(ConfinedDir dir, ConfinedDir::Open(path, /*create=*/true));
  UniqueFd root(fcntl(dir.root(), F_DUPFD_CLOEXEC, 0));
  if (!root.valid()) return ErrnoStatus(errno, "dup mirror root");
  auto shared = std::make_shared<const UniqueFd>(std::move(root));
  return std::unique_ptr<LocalBackend>(
      new LocalBackend(path, std::move(dir), std::move(shared), env));
}

LocalBackend::LocalBackend(std::string path, ConfinedDir dir, SharedFd root,
                           Env* env)
    : path_(std::move(path)),
      env_(env),
      dir_(std::move(dir)),
      root_(std::move(root)) {}

absl::StatusOr<pb::HandshakeResponse> LocalBackend::DescribeMirror() {
  struct stat st;
  if (fstat(root_->get(), &st) != 0) {
    return ErrnoStatus(errno, absl::StrCat("stat mirror ", path_));
  }
  const int root_fd = root_->get();
  ASSIGN_OR_RETURN(std::vector<pb::XattrEntry> xattrs,
                   ReadUserXattrs(
                       [&](char* buf, size_t size) {
                         return flistxattr(root_fd, buf, size);
                       },
                       [&](const char* name, void* buf, size_t size) {
                         return fgetxattr(root_fd, name, buf, size);
                       }));
  pb::HandshakeResponse response;
  response.set_backend_kind("local");
  response.set_backend_description(path_);
  *response.mutable_root() = AttrFromStat(st, kRootId);
  for (pb::XattrEntry& x : xattrs) *response.add_root_xattrs() = std::move(x);
  *response.mutable_limits() = ProbeMirrorLimits(root_fd);
  return response;
}

absl::StatusOr<uint64_t> LocalBackend::StartSessionLocked(
    uint64_t /*previous_session*/) {
  fds_.Clear();
  direct_fds_.Clear();
  inode_ids_.clear();
  unindexed_bindings_.clear();
  unlinked_.clear();
  unlinked_order_.clear();
  // What a crash left: the replay state on the mirror root.
  ASSIGN_OR_RETURN(stored_, LoadStateLocked());
  return stored_.session == session_id_ ? stored_.seq : 0;
}

void LocalBackend::BoundLocked(uint64_t id) {
  unindexed_bindings_.push_back(id);
}

// --- the replay state ---

absl::StatusOr<LocalBackend::ReplayState> LocalBackend::LoadStateLocked() {
  if (!persist_state_) return stored_;
  char buf[128];
  ssize_t n = fgetxattr(root_->get(), kStateXattr, buf, sizeof(buf));
  if (n < 0) {
    if (errno == ENODATA) return ReplayState{};
    if (errno == ERANGE) {
      LOG(WARNING) << "ignoring an oversized " << kStateXattr << " on "
                   << path_;
      return ReplayState{};
    }
    if (errno == ENOTSUP) {
      LOG(WARNING) << "mirror " << path_
                   << " has no user xattrs: the replay state is kept in "
                      "memory only and lost if the agent dies";
      persist_state_ = false;
      return stored_;
    }
    return ErrnoStatus(errno, absl::StrCat("read ", kStateXattr));
  }
  const std::string value(buf, n);
  std::vector<absl::string_view> fields =
      absl::StrSplit(value, ' ', absl::SkipEmpty());
  ReplayState state;
  uint64_t ino = 0;
  if ((fields.size() != 2 && fields.size() != 4) ||
      !absl::SimpleHexAtoi(fields[0], &state.session) ||
      !absl::SimpleAtoi(fields[1], &state.seq) ||
      (fields.size() == 4 &&
       (fields[2] != "x" || !absl::SimpleAtoi(fields[3], &ino)))) {
    LOG(WARNING) << "ignoring malformed " << kStateXattr << " on " << path_
                 << ": " << Quoted(value);
    return ReplayState{};
  }
  if (fields.size() == 4) state.ino = ino;
  return state;
}

absl::Status LocalBackend::StoreStateLocked(const ReplayState& state) {
  if (persist_state_) {
    std::string value = absl::StrFormat("%016x %d", state.session, state.seq);
    if (state.ino.has_value()) absl::StrAppend(&value, " x ", *state.ino);
    if (fsetxattr(root_->get(), kStateXattr, value.data(), value.size(), 0) !=
        0) {
      if (errno != ENOTSUP) {
        return ErrnoStatus(errno, absl::StrCat("store ", kStateXattr));
      }
      LOG(WARNING) << "mirror " << path_
                   << " has no user xattrs: the replay state is kept in "
                      "memory only and lost if the agent dies";
      persist_state_ = false;
    }
  }
  stored_ = state;
  return absl::OkStatus();
}

absl::Status LocalBackend::RecordBeforeLocked(uint64_t seq) {
  const ReplayState want{session_id_, seq - 1, std::nullopt};
  if (stored_ == want) return absl::OkStatus();
  return StoreStateLocked(want);
}

// --- resolving ids ---

absl::Status LocalBackend::CheckKnownLocked(uint64_t id,
                                            absl::string_view what) const {
  if (!ids_.Contains(id)) {
    return Missing(absl::StrCat(what, " ", id, " is not known here"));
  }
  return absl::OkStatus();
}

bool LocalBackend::StillNamed(const SharedFd& fd) {
  // A descriptor cached before the object was removed underneath still
  // works, on an object no longer in the mirror.
  struct stat st;
  return fstat(fd->get(), &st) != 0 || st.st_nlink > 0;
}

absl::StatusOr<LocalBackend::SharedFd> LocalBackend::DirFdLocked(uint64_t id) {
  if (id == kRootId) return root_;
  if (SharedFd fd = fds_.Get(id)) {
    if (StillNamed(fd)) return fd;
    fds_.Erase(id);
  }
  absl::StatusOr<IdMap::Location> location = ids_.Locate(id);
  if (!location.ok()) return Missing(location.status().message());
  std::vector<std::string> components = std::move(location->parent);
  components.push_back(std::move(location->name));
  absl::StatusOr<UniqueFd> fd = dir_.OpenDir(components);
  if (!fd.ok()) {
    const int err = StatusToErrno(fd.status());
    if (err == ENOENT || err == ENOTDIR) {
      return Missing(absl::StrCat("directory ", id, " (",
                                  absl::StrJoin(components, "/"),
                                  ") is not in the mirror"));
    }
    return Prefixed(fd.status(), absl::StrCat("directory ", id));
  }
  return fds_.Put(id, std::move(*fd));
}

absl::StatusOr<LocalBackend::Entry> LocalBackend::EntryLocked(uint64_t id) {
  if (id == kRootId) return Entry{root_, ""};
  absl::StatusOr<std::pair<uint64_t, std::string>> link = ids_.FirstLink(id);
  if (!link.ok()) return Missing(link.status().message());
  ASSIGN_OR_RETURN(SharedFd dir, DirFdLocked(link->first));
  return Entry{std::move(dir), std::move(link->second)};
}

absl::StatusOr<LocalBackend::SharedFd> LocalBackend::FileFdLocked(uint64_t id) {
  if (SharedFd fd = fds_.Get(id)) {
    if (StillNamed(fd)) return fd;
    fds_.Erase(id);
    direct_fds_.Erase(id);  // reopened from the old descriptor
  }
  if (id == kRootId) return Conflict(EISDIR, "the root is a directory");
  ASSIGN_OR_RETURN(Entry entry, EntryLocked(id));
  const int dir = entry.dir->get();
  struct stat st;
  if (fstatat(dir, entry.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) {
      return Missing(absl::StrCat(Quoted(entry.name), " is not in the mirror"));
    }
    return ErrnoStatus(errno, absl::StrCat("stat ", Quoted(entry.name)));
  }
  if (!S_ISREG(st.st_mode)) {
    return Conflict(S_ISDIR(st.st_mode) ? EISDIR : EINVAL,
                    absl::StrCat(Quoted(entry.name), " is a ",
                                 KindOf(st.st_mode), ", not a file"));
  }
  const int flags = O_RDWR | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC;
  UniqueFd fd(openat(dir, entry.name.c_str(), flags));
  if (!fd.valid() && errno == EACCES && geteuid() != 0 &&
      st.st_uid == geteuid()) {
    // A read-only file the agent owns (fsd wrote it through a descriptor
    // opened before a chmod): grant u+rw for the open only.
    struct stat again;
    absl::StatusOr<UniqueFd> opened = OpenPath(dir, entry.name, &again);
    if (opened.ok() && S_ISREG(again.st_mode) &&
        chmod(ProcFdPath(opened->get()).c_str(),
              (again.st_mode & 07777) | 0600) == 0) {
      fd.Reset(openat(dir, entry.name.c_str(), flags));
      const int saved = errno;
      chmod(ProcFdPath(opened->get()).c_str(), again.st_mode & 07777);
      errno = saved;
    } else {
      errno = EACCES;
    }
  }
  if (!fd.valid()) {
    return ErrnoStatus(errno, absl::StrCat("open ", Quoted(entry.name)));
  }
  return fds_.Put(id, std::move(fd));
}

void LocalBackend::ForgetIfUnnamedLocked(uint64_t id) {
  if (ids_.Contains(id)) return;
  fds_.Erase(id);
  direct_fds_.Erase(id);
  if (unlinked_.insert(id).second) {
    unlinked_order_.push_back(id);
    if (unlinked_order_.size() > kMaxUnlinked) {
      unlinked_.erase(unlinked_order_.front());
      unlinked_order_.pop_front();
    }
  }
}

void LocalBackend::IndexBoundFilesLocked() {
  std::vector<uint64_t> ids;
  ids.swap(unindexed_bindings_);
  for (uint64_t id : ids) {
    if (!ids_.Contains(id)) continue;
    absl::StatusOr<Entry> entry = EntryLocked(id);
    if (!entry.ok() || entry->is_root()) continue;
    struct stat st;
    if (fstatat(entry->dir->get(), entry->name.c_str(), &st,
                AT_SYMLINK_NOFOLLOW) != 0) {
      continue;
    }
    if (!S_ISDIR(st.st_mode) && st.st_nlink > 1) {
      inode_ids_.emplace(std::make_pair(st.st_dev, st.st_ino), id);
    }
  }
}


// --- Apply ---

absl::StatusOr<bool> LocalBackend::NeedsApplyingLocked(
    const pb::Mutation& mutation) {
  // Recorded as applied: a resend, never applied twice. (A sync is cheap
  // to repeat, and its durability is what was asked.)
  if (mutation.op_case() != pb::Mutation::kSync &&
      stored_.session == session_id_ && mutation.seq() <= stored_.seq) {
    return false;
  }
  // A change to a file fsd keeps open after its last name went: no trace
  // of it is left in the mirror to change.
  const uint64_t object = ObjectOf(mutation);
  if (object != 0 && !ids_.Contains(object) && unlinked_.contains(object)) {
    VLOG(1) << Describe(mutation) << ": the object is unlinked";
    return false;
  }
  return true;
}

absl::Status LocalBackend::AfterChange(const pb::Mutation& mutation,
                                       absl::Status status) {
  // An object fsd says exists that is not where the mirror had it (removed
  // or moved underneath): no retry finds it, a repair makes it again.
  if (!status.ok() && !IsMissing(status) && StatusToErrno(status) == ENOENT &&
      !mutation.has_remove()) {
    status = Missing(status.message());
  }
  // Permission refused on one object (made immutable, or given to another
  // owner, behind fsd's back) while the mirror's root takes changes: no
  // wait mends it, and it must not hold the rest of the queue, so it is
  // refused for that object alone. Refused at the root, the whole mirror
  // is: retried with backoff.
  if (!status.ok() && !IsPermanent(status) &&
      (StatusToErrno(status) == EPERM || StatusToErrno(status) == EACCES) &&
      !mutation.has_sync() && ObjectOf(mutation) != kRootId &&
      faccessat(root_->get(), ".", W_OK | X_OK, AT_EACCESS) == 0) {
    status = Conflict(StatusToErrno(status),
                      absl::StrCat(status.message(),
                                   " (this object only; the mirror's root "
                                   "takes changes)"));
  }
  return status;
}

// The namespace and attribute changes run under mu_ (names are resolved
// and descriptors opened under it).
absl::Status LocalBackend::ApplyCreate(uint64_t seq, const pb::Create& op) {
  absl::MutexLock l(&mu_);
  return CreateLocked(seq, op);
}
absl::Status LocalBackend::ApplySetAttr(const pb::SetAttr& op) {
  absl::MutexLock l(&mu_);
  return SetAttrLocked(op);
}
absl::Status LocalBackend::ApplyLink(uint64_t seq, const pb::Link& op) {
  absl::MutexLock l(&mu_);
  return LinkLocked(seq, op);
}
absl::Status LocalBackend::ApplyRemove(uint64_t seq, const pb::Remove& op) {
  absl::MutexLock l(&mu_);
  return RemoveLocked(seq, op);
}
absl::Status LocalBackend::ApplyRename(uint64_t seq, const pb::Rename& op) {
  absl::MutexLock l(&mu_);
  return RenameLocked(seq, op);
}
absl::Status LocalBackend::ApplySetXattr(const pb::SetXattr& op) {
  absl::MutexLock l(&mu_);
  return SetXattrLocked(op);
}
absl::Status LocalBackend::ApplyRemoveXattr(const pb::RemoveXattr& op) {
  absl::MutexLock l(&mu_);
  return RemoveXattrLocked(op);
}

std::string LocalBackend::WhereInMirror(const pb::Mutation& m) {
  uint64_t id = 0;
  switch (m.op_case()) {
    case pb::Mutation::kCreate:
      id = m.create().parent();
      break;
    case pb::Mutation::kWrite:
      id = m.write().id();
      break;
    case pb::Mutation::kPunchHole:
      id = m.punch_hole().id();
      break;
    case pb::Mutation::kSetAttr:
      id = m.set_attr().attr().id();
      break;
    case pb::Mutation::kLink:
      id = m.link().id();
      break;
    case pb::Mutation::kRemove:
      id = m.remove().parent();
      break;
    case pb::Mutation::kRename:
      id = m.rename().parent();
      break;
    case pb::Mutation::kSetXattr:
      id = m.set_xattr().id();
      break;
    case pb::Mutation::kRemoveXattr:
      id = m.remove_xattr().id();
      break;
    case pb::Mutation::kSync:
      id = m.sync().id();
      break;
    case pb::Mutation::OP_NOT_SET:
      return "";
  }
  absl::MutexLock l(&mu_);
  if (!ids_.Contains(id)) return "";
  absl::StatusOr<IdMap::Location> where = ids_.Locate(id);
  if (!where.ok()) return "";
  std::vector<std::string> parts = where->parent;
  if (!where->name.empty()) parts.push_back(where->name);
  return absl::StrCat(" at ", path_, "/", absl::StrJoin(parts, "/"));
}

pb::Ack LocalBackend::MakeAck(const pb::Mutation& mutation,
                              const absl::Status& status) {
  absl::MutexLock l(&mu_);
  return acks_.Record(mutation, status);
}

}  // namespace memfuse::mirrord
