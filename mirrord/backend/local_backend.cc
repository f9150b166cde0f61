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

namespace memfuse::mirrord {
namespace {

using common::ErrnoStatus;
using common::StatusToErrno;
using common::UniqueFd;

constexpr size_t kMaxSymlinkTarget = PATH_MAX - 1;
constexpr size_t kMaxXattrValue = 64 * 1024;  // XATTR_SIZE_MAX
constexpr uint64_t kMaxOffset = static_cast<uint64_t>(INT64_MAX);

bool IsReservedXattr(absl::string_view name) {
  return absl::StartsWith(name, LocalBackend::kReservedXattrPrefix);
}

absl::Status CheckXattrName(absl::string_view name) {
  if (!absl::StartsWith(name, "user.") || name.size() <= 5 ||
      name.size() > XATTR_NAME_MAX ||
      name.find('\0') != absl::string_view::npos) {
    return Invalid(
        absl::StrCat("xattr name ", Quoted(name), " is not a user.* name"));
  }
  if (IsReservedXattr(name)) {
    return Invalid(
        absl::StrCat("xattr ", Quoted(name), " is reserved for the agent"));
  }
  return absl::OkStatus();
}

timespec ToTimespec(int64_t ns) {
  int64_t sec = ns / 1000000000;
  int64_t rem = ns % 1000000000;
  if (rem < 0) {
    rem += 1000000000;
    --sec;
  }
  return timespec{static_cast<time_t>(sec), static_cast<long>(rem)};
}

int64_t ToNs(const timespec& ts) {
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

pb::Attr AttrFromStat(const struct stat& st, uint64_t id) {
  pb::Attr attr;
  attr.set_id(id);
  attr.set_mode(st.st_mode);
  attr.set_uid(st.st_uid);
  attr.set_gid(st.st_gid);
  attr.set_rdev(st.st_rdev);
  attr.set_size(st.st_size);
  attr.set_nlink(st.st_nlink);
  attr.set_atime_ns(ToNs(st.st_atim));
  attr.set_mtime_ns(ToNs(st.st_mtim));
  attr.set_ctime_ns(ToNs(st.st_ctim));
  return attr;
}

std::string ProcFdPath(int fd) { return absl::StrCat("/proc/self/fd/", fd); }

bool Exists(int dir, const std::string& name) {
  struct stat st;
  return fstatat(dir, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0;
}

// The user.* xattrs (except the agent's own) through `list` and `get`
// (l/f-listxattr and -getxattr bound to one object). None when the
// filesystem has no xattrs.
template <typename ListFn, typename GetFn>
absl::StatusOr<std::vector<pb::XattrEntry>> ReadUserXattrs(ListFn list,
                                                           GetFn get) {
  std::vector<pb::XattrEntry> out;
  std::string names;
  for (int attempt = 0;; ++attempt) {
    ssize_t n = list(nullptr, 0);
    if (n < 0) {
      if (errno == ENOTSUP) return out;
      return ErrnoStatus(errno, "listxattr");
    }
    if (n == 0) return out;
    names.resize(n);
    n = list(names.data(), names.size());
    if (n >= 0) {
      names.resize(n);
      break;
    }
    if (errno != ERANGE || attempt == 8) return ErrnoStatus(errno, "listxattr");
  }
  for (absl::string_view name :
       absl::StrSplit(names, absl::ByChar('\0'), absl::SkipEmpty())) {
    if (!absl::StartsWith(name, "user.") || IsReservedXattr(name)) continue;
    const std::string key(name);
    std::string value;
    bool gone = false;
    for (int attempt = 0;; ++attempt) {
      ssize_t n = get(key.c_str(), nullptr, 0);
      if (n >= 0) {
        value.resize(n);
        n = n == 0 ? 0 : get(key.c_str(), value.data(), value.size());
      }
      if (n >= 0) {
        value.resize(n);
        break;
      }
      if (errno == ENODATA) {  // removed since the listing
        gone = true;
        break;
      }
      if (errno != ERANGE || attempt == 8) {
        return ErrnoStatus(errno, absl::StrCat("getxattr ", key));
      }
    }
    if (gone) continue;
    pb::XattrEntry& entry = out.emplace_back();
    entry.set_name(key);
    entry.set_value(std::move(value));
  }
  return out;
}

// As a non-root agent, the owner of a directory may lack the permission
// bits a change inside needs (say a 0555 directory fsd, as root, still
// creates in). The owner may always chmod: when `op` (a syscall returning
// -1 and errno on failure) fails with EACCES, grant u+wx on `dir` for one
// more try and restore the mode after.
template <typename Op>
int InWritableDir(int dir, Op op) {
  int r = op();
  if (r >= 0 || errno != EACCES || geteuid() == 0) return r;
  struct stat st;
  if (fstat(dir, &st) != 0 || st.st_uid != geteuid() ||
      (st.st_mode & 0300) == 0300 ||
      fchmod(dir, (st.st_mode & 07777) | 0300) != 0) {
    errno = EACCES;
    return r;
  }
  r = op();
  const int saved = errno;
  fchmod(dir, st.st_mode & 07777);
  errno = saved;
  return r;
}

// Opens `name` in `dir` as an O_PATH descriptor (never following a
// symlink) and stats it.
absl::StatusOr<UniqueFd> OpenPath(int dir, const std::string& name,
                                  struct stat* st) {
  UniqueFd fd(openat(dir, name.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus(errno, "open");
  if (fstat(fd.get(), st) != 0) return ErrnoStatus(errno, "fstat");
  return fd;
}

}  // namespace

// --- opening and the session ---

absl::StatusOr<std::unique_ptr<LocalBackend>> LocalBackend::Open(
    const std::string& path) {
  ASSIGN_OR_RETURN(ConfinedDir dir, ConfinedDir::Open(path, /*create=*/true));
  UniqueFd root(fcntl(dir.root(), F_DUPFD_CLOEXEC, 0));
  if (!root.valid()) return ErrnoStatus(errno, "dup mirror root");
  auto shared = std::make_shared<const UniqueFd>(std::move(root));
  return std::unique_ptr<LocalBackend>(
      new LocalBackend(path, std::move(dir), std::move(shared)));
}

LocalBackend::LocalBackend(std::string path, ConfinedDir dir, SharedFd root)
    : path_(std::move(path)), dir_(std::move(dir)), root_(std::move(root)) {}

absl::StatusOr<pb::HandshakeResponse> LocalBackend::Handshake(
    const pb::HandshakeRequest& request) {
  if (request.block_size() == 0 || request.block_size() > kMaxReadLength) {
    return absl::InvalidArgumentError(absl::StrCat(
        "block_size ", request.block_size(), " is not in 1..", kMaxReadLength));
  }
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
  const pb::MirrorLimits limits = ProbeMirrorLimits(root_fd);

  pb::HandshakeResponse response;
  absl::MutexLock l(&mu_);
  ids_.Clear();
  fds_.Clear();
  direct_fds_.Clear();
  inode_ids_.clear();
  unindexed_bindings_.clear();
  unlinked_.clear();
  unlinked_order_.clear();
  session_id_ = request.session_id();
  block_size_ = request.block_size();
  ASSIGN_OR_RETURN(stored_, LoadStateLocked());
  const uint64_t resume = stored_.session == session_id_ ? stored_.seq : 0;
  acks_.last_applied_seq = resume;
  LOG(INFO) << "session " << absl::StrFormat("%016x", session_id_)
            << ": block size " << block_size_ << ", last applied seq "
            << resume;

  response.set_protocol_version(1);
  response.set_backend_kind("local");
  response.set_backend_description(path_);
  *response.mutable_root() = AttrFromStat(st, kRootId);
  response.set_last_applied_seq(resume);
  response.set_needs_bindings(true);
  for (pb::XattrEntry& x : xattrs) *response.add_root_xattrs() = std::move(x);
  *response.mutable_limits() = limits;
  return response;
}

absl::Status LocalBackend::Bind(const pb::Binding& binding) {
  absl::Status name_ok = CheckName(binding.name());
  if (!name_ok.ok()) {
    return absl::InvalidArgumentError(name_ok.message());
  }
  absl::MutexLock l(&mu_);
  absl::Status added =
      ids_.AddLink(binding.id(), binding.parent(), binding.name());
  if (!added.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("binding ", binding.id(), " ", Quoted(binding.name()),
                     " in ", binding.parent(), ": ", added.message()));
  }
  unindexed_bindings_.push_back(binding.id());
  return absl::OkStatus();
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

// --- attributes ---

absl::Status LocalBackend::ChownEntry(const Entry& entry, uint32_t uid,
                                      uint32_t gid) {
  static std::atomic<bool> warned{false};
  // Nothing to change: skip the call, which would also clear set-id bits.
  struct stat st;
  const int got = entry.is_root()
                      ? fstat(entry.dir->get(), &st)
                      : fstatat(entry.dir->get(), entry.name.c_str(), &st,
                                AT_SYMLINK_NOFOLLOW);
  if (got == 0 && (uid == static_cast<uint32_t>(-1) || uid == st.st_uid) &&
      (gid == static_cast<uint32_t>(-1) || gid == st.st_gid)) {
    return absl::OkStatus();
  }
  const int r = entry.is_root() ? fchown(entry.dir->get(), uid, gid)
                                : fchownat(entry.dir->get(), entry.name.c_str(),
                                           uid, gid, AT_SYMLINK_NOFOLLOW);
  if (r == 0) return absl::OkStatus();
  if (errno == EPERM || errno == EINVAL) {
    // Not root (or uid not mapped here): owners stay the agent's.
    if (!warned.exchange(true)) {
      LOG(WARNING) << "cannot give mirror objects away (uid " << uid << ", gid "
                   << gid << "): " << std::strerror(errno)
                   << "; owners in the mirror stay the agent's (logged once)";
    }
    return absl::OkStatus();
  }
  return ErrnoStatus(errno, "chown");
}

namespace {

// chmod of an object that is no symlink, never following one.
absl::Status ChmodAt(int dir, const std::string& name, bool is_root,
                     mode_t mode) {
  if (is_root) {
    if (fchmod(dir, mode) != 0) return ErrnoStatus(errno, "chmod");
    return absl::OkStatus();
  }
  struct stat st;
  ASSIGN_OR_RETURN(UniqueFd fd, OpenPath(dir, name, &st));
  if (S_ISLNK(st.st_mode)) return absl::OkStatus();  // no mode of its own
  if ((st.st_mode & 07777) == mode) return absl::OkStatus();
  // The magic link names the inode fd holds, which is not a symlink.
  if (chmod(ProcFdPath(fd.get()).c_str(), mode) != 0) {
    return ErrnoStatus(errno, "chmod");
  }
  return absl::OkStatus();
}

absl::Status UtimensAt(int dir, const std::string& name, bool is_root,
                       const timespec times[2]) {
  const int r = is_root
                    ? futimens(dir, times)
                    : utimensat(dir, name.c_str(), times, AT_SYMLINK_NOFOLLOW);
  if (r != 0) return ErrnoStatus(errno, "utimens");
  return absl::OkStatus();
}

}  // namespace

absl::Status LocalBackend::SetCreatedAttrs(const Entry& entry,
                                           const pb::Attr& attr) {
  // Owner first: chown clears set-id bits that chmod then sets.
  RETURN_IF_ERROR(ChownEntry(entry, attr.uid(), attr.gid()));
  if (!S_ISLNK(attr.mode())) {
    RETURN_IF_ERROR(ChmodAt(entry.dir->get(), entry.name, entry.is_root(),
                            attr.mode() & 07777));
  }
  const timespec times[2] = {ToTimespec(attr.atime_ns()),
                             ToTimespec(attr.mtime_ns())};
  return UtimensAt(entry.dir->get(), entry.name, entry.is_root(), times);
}

// --- Apply ---

pb::Ack LocalBackend::Apply(const pb::Mutation& mutation) {
  const uint64_t seq = mutation.seq();
  absl::Status status;
  if (seq == 0) {
    status = Invalid("seq 0");
  } else if (mutation.op_case() == pb::Mutation::OP_NOT_SET) {
    status = Invalid("no operation");
  } else {
    bool done = false;
    {
      absl::MutexLock l(&mu_);
      // Recorded as applied: a resend, never applied twice. (A sync is
      // cheap to repeat, and its durability is what was asked.)
      done = mutation.op_case() != pb::Mutation::kSync &&
             stored_.session == session_id_ && seq <= stored_.seq;
      // A change to a file fsd keeps open after its last name went: no
      // trace of it is left in the mirror to change.
      const uint64_t object = ObjectOf(mutation);
      if (object != 0 && !ids_.Contains(object) && unlinked_.contains(object)) {
        VLOG(1) << Describe(mutation) << ": the object is unlinked";
        done = true;
      }
    }
    if (done) {
      VLOG(1) << Describe(mutation) << ": nothing to do";
    } else {
      switch (mutation.op_case()) {
        case pb::Mutation::kWrite:
          status = ApplyWrite(mutation.write());
          break;
        case pb::Mutation::kPunchHole:
          status = ApplyPunchHole(mutation.punch_hole());
          break;
        case pb::Mutation::kSync:
          status = ApplySync(seq, mutation.sync());
          break;
        default: {
          absl::MutexLock l(&mu_);
          switch (mutation.op_case()) {
            case pb::Mutation::kCreate:
              status = ApplyCreate(seq, mutation.create());
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
            default:
              status = Invalid("unexpected operation");
          }
        }
      }
    }
  }
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
  if (!status.ok()) {
    status = Prefixed(status,
                      absl::StrCat(Describe(mutation), MirrorPathOf(mutation)));
  }
  return MakeAck(mutation, status);
}

std::string LocalBackend::MirrorPathOf(const pb::Mutation& m) {
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

absl::Status LocalBackend::ApplyCreate(uint64_t seq, const pb::Create& op) {
  const pb::Attr& attr = op.attr();
  const uint64_t id = attr.id();
  const std::string& name = op.name();
  RETURN_IF_ERROR(CheckName(name));
  if (id == 0 || id == kRootId) return Invalid(absl::StrCat("bad id ", id));
  RETURN_IF_ERROR(CheckKnownLocked(op.parent(), "parent"));
  if (ids_.Contains(id) && !ids_.HasLink(id, op.parent(), name)) {
    if (!op.repair()) {
      return Invalid(absl::StrCat("id ", id, " already names another object"));
    }
    // A repair: the id lives where fsd says now.
    ids_.Forget(id);
    fds_.Erase(id);
    direct_fds_.Erase(id);
  }
  const mode_t type = attr.mode() & S_IFMT;
  switch (type) {
    case S_IFREG:
    case S_IFDIR:
    case S_IFIFO:
    case S_IFSOCK:
    case S_IFCHR:
    case S_IFBLK:
      break;
    case S_IFLNK:
      if (op.symlink_target().empty() ||
          op.symlink_target().size() > kMaxSymlinkTarget ||
          op.symlink_target().find('\0') != std::string::npos) {
        return Invalid("bad symlink target");
      }
      break;
    default:
      return Invalid(absl::StrFormat("bad file type in mode 0%o", attr.mode()));
  }

  RETURN_IF_ERROR(RecordBeforeLocked(seq));
  ASSIGN_OR_RETURN(SharedFd dir, DirFdLocked(op.parent()));
  const int d = dir->get();
  UniqueFd created;
  const int r = InWritableDir(d, [&] {
    switch (type) {
      case S_IFREG:
        created.Reset(openat(
            d, name.c_str(),
            O_CREAT | O_EXCL | O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC,
            0600));
        return created.valid() ? 0 : -1;
      case S_IFDIR:
        return mkdirat(d, name.c_str(), 0700);
      case S_IFLNK:
        return symlinkat(op.symlink_target().c_str(), d, name.c_str());
      default:
        return mknodat(d, name.c_str(), type | 0600, attr.rdev());
    }
  });
  if (r != 0) {
    const int err = errno;
    if (err != EEXIST) {
      if (err == EPERM && (type == S_IFCHR || type == S_IFBLK)) {
        return Conflict(err, "the agent may not create devices");
      }
      if (err == ENOENT) {
        return Missing(absl::StrCat("directory ", op.parent(),
                                    " is not in the mirror"));
      }
      return ErrnoStatus(err, "create");
    }
    // Something is there. The same kind of object is this create replayed
    // (or retried): keep it, contents and all, and set its attributes.
    struct stat st;
    if (fstatat(d, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      return ErrnoStatus(errno, "stat existing");
    }
    if ((st.st_mode & S_IFMT) != type) {
      return Conflict(EEXIST,
                      absl::StrCat("a ", KindOf(st.st_mode), " is in the way"));
    }
    if (type == S_IFLNK) {
      char target[PATH_MAX];
      ssize_t n = readlinkat(d, name.c_str(), target, sizeof(target));
      if (n < 0) return ErrnoStatus(errno, "readlink existing");
      if (absl::string_view(target, n) != op.symlink_target()) {
        return Conflict(EEXIST, "a symlink to elsewhere is in the way");
      }
    }
    VLOG(1) << "create " << id << " " << Quoted(name)
            << ": the same kind of object exists, kept";
  }
  if (created.valid()) {
    // A repair re-creates a file whose old one (gone) may still be cached.
    direct_fds_.Erase(id);
    fds_.Put(id, std::move(created));
  }
  RETURN_IF_ERROR(SetCreatedAttrs(Entry{dir, name}, attr));
  return ids_.AddLink(id, op.parent(), name);
}

absl::Status LocalBackend::ApplyWrite(const pb::Write& op) {
  absl::StatusOr<absl::string_view> bytes = WriteBytes(op);
  if (!bytes.ok()) return Invalid(bytes.status().message());
  const absl::string_view data = *bytes;
  // Both times 0: leave them alone (fsd's placeholder for a write whose
  // file went meanwhile carries neither data nor times).
  const bool set_times = op.atime_ns() != 0 || op.mtime_ns() != 0;
  if (data.empty() && !set_times) return absl::OkStatus();
  SharedFd fd;
  {
    absl::MutexLock l(&mu_);
    if (data.size() > block_size_) {
      return Invalid(absl::StrCat(data.size(), " bytes exceed the block size ",
                                  block_size_));
    }
    if (op.offset() > kMaxOffset || data.size() > kMaxOffset - op.offset()) {
      return Conflict(EFBIG, "beyond the largest file offset");
    }
    RETURN_IF_ERROR(CheckKnownLocked(op.id(), "file"));
    ASSIGN_OR_RETURN(fd, FileFdLocked(op.id()));
  }
  // The I/O, outside the lock: reads need not wait behind it.
  RETURN_IF_ERROR(WriteData(op.id(), fd, data, op.offset()));
  if (!set_times) return absl::OkStatus();
  // Writing set the mirror file's times to now; the mount's are older.
  // Both 0: an empty Write standing in for data of a file deleted since.
  if (op.atime_ns() == 0 && op.mtime_ns() == 0) return absl::OkStatus();
  const timespec times[2] = {ToTimespec(op.atime_ns()),
                             ToTimespec(op.mtime_ns())};
  if (futimens(fd->get(), times) != 0) return ErrnoStatus(errno, "futimens");
  return absl::OkStatus();
}

namespace {

absl::Status PWriteAll(int fd, absl::string_view data, uint64_t offset) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = pwrite(fd, data.data() + done, data.size() - done,
                       static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "pwrite");
    }
    if (n == 0) return ErrnoStatus(EIO, "pwrite wrote nothing");
    done += n;
  }
  return absl::OkStatus();
}

// A page-aligned buffer of at least `size` bytes, one per thread, kept for
// the next write.
char* AlignedScratch(size_t size) {
  struct Scratch {
    char* bytes = nullptr;
    size_t size = 0;
    ~Scratch() { free(bytes); }
  };
  static thread_local Scratch scratch;
  if (scratch.size < size) {
    free(scratch.bytes);
    scratch.bytes = static_cast<char*>(aligned_alloc(4096, size));
    scratch.size = scratch.bytes != nullptr ? size : 0;
  }
  return scratch.bytes;
}

}  // namespace

absl::Status LocalBackend::ApplyPunchHole(const pb::PunchHole& op) {
  if (op.offset() > kMaxOffset || op.length() > kMaxOffset - op.offset()) {
    return Conflict(EFBIG, "beyond the largest file offset");
  }
  SharedFd fd;
  uint64_t block_size;
  {
    absl::MutexLock l(&mu_);
    RETURN_IF_ERROR(CheckKnownLocked(op.id(), "file"));
    ASSIGN_OR_RETURN(fd, FileFdLocked(op.id()));
    block_size = block_size_;
  }
  if (op.length() == 0) return absl::OkStatus();
  // The I/O, outside the lock, as for writes.
  if (fallocate(fd->get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                static_cast<off_t>(op.offset()),
                static_cast<off_t>(op.length())) == 0) {
    return absl::OkStatus();
  }
  if (errno != EOPNOTSUPP) return ErrnoStatus(errno, "fallocate");
  // The mirror's filesystem cannot punch: the same bytes, as zeros, below
  // the file's size (which a punch keeps).
  struct stat st;
  if (fstat(fd->get(), &st) != 0) return ErrnoStatus(errno, "fstat");
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  const uint64_t end = std::min(size, op.offset() + op.length());
  const std::string zeros(block_size, '\0');
  for (uint64_t at = op.offset(); at < end;) {
    const uint64_t n = std::min<uint64_t>(end - at, block_size);
    RETURN_IF_ERROR(
        PWriteAll(fd->get(), absl::string_view(zeros.data(), n), at));
    at += n;
  }
  return absl::OkStatus();
}

LocalBackend::SharedFd LocalBackend::DirectFd(uint64_t id, const SharedFd& fd) {
  if (dio_align_.load(std::memory_order_relaxed) == kNoDirectIo) return {};
  if (SharedFd direct = direct_fds_.Get(id)) return direct;
  // Reopened through the descriptor, not by name: the same file, with no
  // lookup in the mirror. A file the agent may not open for writing again
  // (read-only, owned by someone else) is written through `fd` only.
  const std::string path = ProcFdPath(fd->get());
  UniqueFd direct(open(path.c_str(), O_RDWR | O_DIRECT | O_CLOEXEC));
  if (!direct.valid() && errno != EINVAL) {
    direct = UniqueFd(open(path.c_str(), O_WRONLY | O_DIRECT | O_CLOEXEC));
  }
  if (!direct.valid()) {
    if (errno == EINVAL) {
      LOG(INFO) << "the mirror's filesystem has no direct I/O; writing "
                   "through the page cache";
      dio_align_ = kNoDirectIo;
    }
    return {};
  }
  if (dio_align_.load(std::memory_order_relaxed) == 0) {
    struct statx stx = {};
    uint32_t align = 4096;
    if (statx(direct.get(), "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 &&
        (stx.stx_mask & STATX_DIOALIGN) != 0) {
      if (stx.stx_dio_offset_align == 0 || stx.stx_dio_mem_align > 4096) {
        dio_align_ = kNoDirectIo;
        return {};
      }
      align = std::max<uint32_t>(align, stx.stx_dio_offset_align);
    }
    dio_align_ = align;
  }
  return direct_fds_.Put(id, std::move(direct));
}

std::optional<absl::StatusOr<uint64_t>> LocalBackend::ReadDirect(
    uint64_t id, const SharedFd& fd, uint64_t offset, absl::Span<char> out) {
  if (out.size() < kMinDirectWrite) return std::nullopt;
  // Alignment is known once a descriptor was opened; 4096 satisfies every
  // filesystem STATX_DIOALIGN was checked against.
  const uint32_t known = dio_align_.load(std::memory_order_relaxed);
  if (known == kNoDirectIo) return std::nullopt;
  const uint64_t guess = known == 0 ? common::kRegionAlign : known;
  if (offset % guess != 0 || out.size() % guess != 0 ||
      reinterpret_cast<uintptr_t>(out.data()) % common::kRegionAlign != 0) {
    return std::nullopt;
  }
  SharedFd direct = DirectFd(id, fd);
  if (direct == nullptr) return std::nullopt;
  const uint64_t align = dio_align_.load(std::memory_order_relaxed);
  if (offset % align != 0 || out.size() % align != 0 ||
      (fcntl(direct->get(), F_GETFL) & O_ACCMODE) != O_RDWR) {
    return std::nullopt;
  }
  uint64_t done = 0;
  while (done < out.size()) {
    ssize_t n = pread(direct->get(), out.data() + done, out.size() - done,
                      static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EINVAL && done == 0) return std::nullopt;
      return ErrnoStatus(errno, "pread");
    }
    if (n == 0) break;
    done += n;
    // A short read that is not at a multiple of the alignment is the end
    // of the file; another read from there would be refused.
    if (done % align != 0) break;
  }
  return done;
}

absl::Status LocalBackend::WriteData(uint64_t id, const SharedFd& fd,
                                     absl::string_view data, uint64_t offset) {
  if (data.size() >= kMinDirectWrite) {
    // Whole aligned pages go to the disk straight from one copy in memory:
    // through the page cache a block costs a second copy and the kernel's
    // writeback later, which is most of the agent's work when draining.
    if (SharedFd direct = DirectFd(id, fd)) {
      const uint64_t align = dio_align_.load(std::memory_order_relaxed);
      const uint64_t end = offset + data.size();
      const uint64_t start = (offset + align - 1) / align * align;
      const uint64_t stop = end / align * align;
      const char* aligned = nullptr;
      if (stop > start && stop - start >= kMinDirectWrite) {
        aligned = data.data() + (start - offset);
        // Data from the shared region is laid out page-aligned already;
        // inline data is copied once into an aligned buffer.
        if (reinterpret_cast<uintptr_t>(aligned) % common::kRegionAlign != 0) {
          char* scratch = AlignedScratch(stop - start);
          if (scratch != nullptr) {
            std::memcpy(scratch, aligned, stop - start);
          }
          aligned = scratch;
        }
      }
      if (aligned != nullptr) {
        RETURN_IF_ERROR(
            PWriteAll(fd->get(), data.substr(0, start - offset), offset));
        absl::Status direct_status = PWriteAll(
            direct->get(), absl::string_view(aligned, stop - start), start);
        if (!direct_status.ok()) {
          // EINVAL: this file refuses direct I/O after all; the page
          // cache takes the data as it would have without it.
          if (StatusToErrno(direct_status) != EINVAL) {
            return direct_status;
          }
          direct_fds_.Erase(id);
          RETURN_IF_ERROR(
              PWriteAll(fd->get(), data.substr(start - offset), start));
          return absl::OkStatus();
        }
        return PWriteAll(fd->get(), data.substr(stop - offset), stop);
      }
    }
  }
  RETURN_IF_ERROR(PWriteAll(fd->get(), data, offset));
  // Start the disk write now, without waiting for it: a Sync barrier (or
  // the drain at exit) then finds most of the data already on disk instead
  // of flushing it all at the end.
  if (!data.empty()) {
    sync_file_range(fd->get(), static_cast<off_t>(offset),
                    static_cast<off_t>(data.size()), SYNC_FILE_RANGE_WRITE);
  }
  return absl::OkStatus();
}

absl::Status LocalBackend::ApplySetAttr(const pb::SetAttr& op) {
  const pb::Attr& attr = op.attr();
  const uint32_t mask = op.mask();
  RETURN_IF_ERROR(CheckKnownLocked(attr.id(), "object"));
  ASSIGN_OR_RETURN(Entry entry, EntryLocked(attr.id()));
  if (mask & kSetSize) {
    if (attr.size() > kMaxOffset) return Conflict(EFBIG, "size too large");
    ASSIGN_OR_RETURN(SharedFd fd, FileFdLocked(attr.id()));
    if (ftruncate(fd->get(), static_cast<off_t>(attr.size())) != 0) {
      return ErrnoStatus(errno, "ftruncate");
    }
  }
  if (mask & (kSetUid | kSetGid)) {
    RETURN_IF_ERROR(ChownEntry(
        entry, (mask & kSetUid) ? attr.uid() : static_cast<uint32_t>(-1),
        (mask & kSetGid) ? attr.gid() : static_cast<uint32_t>(-1)));
  }
  if (mask & kSetMode) {
    RETURN_IF_ERROR(ChmodAt(entry.dir->get(), entry.name, entry.is_root(),
                            attr.mode() & 07777));
  }
  if (mask & (kSetAtime | kSetMtime | kSetAtimeNow | kSetMtimeNow)) {
    timespec times[2];
    times[0] = (mask & kSetAtime)      ? ToTimespec(attr.atime_ns())
               : (mask & kSetAtimeNow) ? timespec{0, UTIME_NOW}
                                       : timespec{0, UTIME_OMIT};
    times[1] = (mask & kSetMtime)      ? ToTimespec(attr.mtime_ns())
               : (mask & kSetMtimeNow) ? timespec{0, UTIME_NOW}
                                       : timespec{0, UTIME_OMIT};
    RETURN_IF_ERROR(
        UtimensAt(entry.dir->get(), entry.name, entry.is_root(), times));
  }
  return absl::OkStatus();
}

absl::Status LocalBackend::ApplyLink(uint64_t seq, const pb::Link& op) {
  const std::string& new_name = op.new_name();
  RETURN_IF_ERROR(CheckName(new_name));
  if (op.id() == kRootId) return Invalid("cannot link the root");
  RETURN_IF_ERROR(CheckKnownLocked(op.id(), "file"));
  RETURN_IF_ERROR(CheckKnownLocked(op.new_parent(), "parent"));
  RETURN_IF_ERROR(RecordBeforeLocked(seq));
  ASSIGN_OR_RETURN(Entry from, EntryLocked(op.id()));
  struct stat st;
  if (fstatat(from.dir->get(), from.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) !=
      0) {
    return ErrnoStatus(errno, "stat source");
  }
  if (S_ISDIR(st.st_mode)) return Conflict(EPERM, "cannot link a directory");
  ASSIGN_OR_RETURN(SharedFd to, DirFdLocked(op.new_parent()));
  const int r = InWritableDir(to->get(), [&] {
    return linkat(from.dir->get(), from.name.c_str(), to->get(),
                  new_name.c_str(), 0);
  });
  if (r != 0) {
    const int err = errno;
    if (err != EEXIST) return ErrnoStatus(err, "link");
    struct stat there;
    if (fstatat(to->get(), new_name.c_str(), &there, AT_SYMLINK_NOFOLLOW) !=
        0) {
      return ErrnoStatus(errno, "stat existing");
    }
    if (there.st_dev != st.st_dev || there.st_ino != st.st_ino) {
      return Conflict(EEXIST, "another object has that name");
    }
    // Already this file: the link replayed.
  }
  return ids_.AddLink(op.id(), op.new_parent(), new_name);
}

absl::Status LocalBackend::ApplyRemove(uint64_t seq, const pb::Remove& op) {
  const std::string& name = op.name();
  RETURN_IF_ERROR(CheckName(name));
  if (op.id() == kRootId) return Invalid("cannot remove the root");
  const bool bound = ids_.HasLink(op.id(), op.parent(), name);
  absl::Status known = CheckKnownLocked(op.parent(), "parent");
  absl::StatusOr<SharedFd> found =
      known.ok() ? DirFdLocked(op.parent()) : known;
  if (!found.ok() && IsMissing(found.status())) {
    // Its directory is gone from the mirror, and the entry with it.
    if (bound) {
      RETURN_IF_ERROR(ids_.RemoveLink(op.id(), op.parent(), name));
      ForgetIfUnnamedLocked(op.id());
    }
    return absl::OkStatus();
  }
  RETURN_IF_ERROR(RecordBeforeLocked(seq));
  ASSIGN_OR_RETURN(SharedFd dir, std::move(found));
  if (!bound) {
    // Gone already: this remove replayed. Anything else there is not the
    // object fsd means.
    if (!Exists(dir->get(), name)) return absl::OkStatus();
    return Invalid(absl::StrCat(Quoted(name), " in ", op.parent(),
                                " is not object ", op.id()));
  }
  const int r = InWritableDir(dir->get(), [&] {
    return unlinkat(dir->get(), name.c_str(),
                    op.directory() ? AT_REMOVEDIR : 0);
  });
  if (r != 0 && errno != ENOENT) {
    const int err = errno;
    if (err == ENOTEMPTY || err == EEXIST) {
      return Conflict(err, "the mirror directory holds entries fsd does not");
    }
    return ErrnoStatus(err, "remove");
  }
  RETURN_IF_ERROR(ids_.RemoveLink(op.id(), op.parent(), name));
  ForgetIfUnnamedLocked(op.id());
  return absl::OkStatus();
}

absl::Status LocalBackend::ApplyRename(uint64_t seq, const pb::Rename& op) {
  const uint32_t flags = op.flags();
  if ((flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE)) != 0 ||
      flags == (RENAME_NOREPLACE | RENAME_EXCHANGE)) {
    return Invalid(absl::StrCat("bad rename flags ", flags));
  }
  RETURN_IF_ERROR(CheckName(op.name()));
  RETURN_IF_ERROR(CheckName(op.new_name()));
  if (op.id() == kRootId) return Invalid("cannot rename the root");
  RETURN_IF_ERROR(CheckKnownLocked(op.id(), "object"));
  RETURN_IF_ERROR(CheckKnownLocked(op.parent(), "parent"));
  RETURN_IF_ERROR(CheckKnownLocked(op.new_parent(), "new parent"));
  const bool exchange = (flags & RENAME_EXCHANGE) != 0;
  if (!exchange && op.replaced_id() == op.id()) {
    // Two hard links of one file: rename(2) leaves both in place.
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(SharedFd from_dir, DirFdLocked(op.parent()));
  ASSIGN_OR_RETURN(SharedFd to_dir, DirFdLocked(op.new_parent()));
  const Entry from{from_dir, op.name()};
  const Entry to{to_dir, op.new_name()};
  if (exchange) return ApplyExchange(seq, op, from, to);

  // Applied before and replayed: the source is gone, the target is there.
  auto looks_applied = [&] {
    return !Exists(from_dir->get(), op.name()) &&
           Exists(to_dir->get(), op.new_name());
  };
  if (!ids_.HasLink(op.id(), op.parent(), op.name())) {
    if (ids_.HasLink(op.id(), op.new_parent(), op.new_name()) &&
        looks_applied()) {
      return absl::OkStatus();  // the map has it moved already
    }
    return Invalid(absl::StrCat("object ", op.id(), " is not named ",
                                Quoted(op.name()), " in ", op.parent()));
  }
  absl::Status map_ok =
      ids_.CheckRename(op.id(), op.parent(), op.name(), op.new_parent(),
                       op.new_name(), op.replaced_id(), false);
  if (!map_ok.ok()) return Invalid(map_ok.message());
  RETURN_IF_ERROR(RecordBeforeLocked(seq));
  const int r = InWritableDir(from_dir->get(), [&] {
    return InWritableDir(to_dir->get(), [&] {
      return renameat2(from_dir->get(), op.name().c_str(), to_dir->get(),
                       op.new_name().c_str(), flags);
    });
  });
  if (r != 0) {
    const int err = errno;
    if (!looks_applied()) {
      if (err == EEXIST || err == ENOTEMPTY || err == EISDIR ||
          err == ENOTDIR) {
        return Conflict(err, "the target is in the way");
      }
      return ErrnoStatus(err, "rename");
    }
  }
  absl::Status moved =
      ids_.Rename(op.id(), op.parent(), op.name(), op.new_parent(),
                  op.new_name(), op.replaced_id(), false);
  CHECK(moved.ok()) << "id map rename failed after CheckRename: " << moved;
  if (op.replaced_id() != 0) ForgetIfUnnamedLocked(op.replaced_id());
  return absl::OkStatus();
}

absl::Status LocalBackend::ApplyExchange(uint64_t seq, const pb::Rename& op,
                                         const Entry& from, const Entry& to) {
  const uint64_t other = op.replaced_id();
  if (other == 0 || other == kRootId || !ids_.Contains(other)) {
    return Invalid(absl::StrCat("exchange with unknown id ", other));
  }
  const bool map_before = ids_.HasLink(op.id(), op.parent(), op.name()) &&
                          ids_.HasLink(other, op.new_parent(), op.new_name());
  const bool map_after =
      ids_.HasLink(op.id(), op.new_parent(), op.new_name()) &&
      ids_.HasLink(other, op.parent(), op.name());
  if (!map_before && !map_after) {
    return Invalid(absl::StrCat("objects ", op.id(), " and ", other,
                                " are not at those names"));
  }
  if (map_before) {
    absl::Status map_ok =
        ids_.CheckRename(op.id(), op.parent(), op.name(), op.new_parent(),
                         op.new_name(), other, true);
    if (!map_ok.ok()) return Invalid(map_ok.message());
  }
  struct stat source;
  if (fstatat(from.dir->get(), from.name.c_str(), &source,
              AT_SYMLINK_NOFOLLOW) != 0) {
    return ErrnoStatus(errno, "stat source");
  }
  bool applied = false;
  if (stored_.session == session_id_ && stored_.seq == seq - 1 &&
      stored_.ino.has_value()) {
    // Tried before: the inode then at the source name was recorded. Another
    // one there now means the exchange happened.
    applied = *stored_.ino != source.st_ino;
  } else {
    RETURN_IF_ERROR(StoreStateLocked(ReplayState{
        session_id_, seq - 1, static_cast<uint64_t>(source.st_ino)}));
  }
  if (!applied) {
    const int r = InWritableDir(from.dir->get(), [&] {
      return InWritableDir(to.dir->get(), [&] {
        return renameat2(from.dir->get(), from.name.c_str(), to.dir->get(),
                         to.name.c_str(), RENAME_EXCHANGE);
      });
    });
    if (r != 0) {
      const int err = errno;
      if (err == ENOTDIR || err == EISDIR || err == EINVAL) {
        return Conflict(err, "cannot exchange these");
      }
      return ErrnoStatus(err, "exchange");
    }
  } else {
    VLOG(1) << "exchange seq " << seq << " was applied already";
  }
  // Bindings sent after a restart may show the names exchanged already.
  if (map_before) {
    absl::Status swapped =
        ids_.Rename(op.id(), op.parent(), op.name(), op.new_parent(),
                    op.new_name(), other, true);
    CHECK(swapped.ok()) << "id map exchange failed after CheckRename: "
                        << swapped;
  }
  return absl::OkStatus();
}

absl::Status LocalBackend::ApplySetXattr(const pb::SetXattr& op) {
  RETURN_IF_ERROR(CheckXattrName(op.name()));
  if (op.value().size() > kMaxXattrValue) {
    return Conflict(E2BIG, "xattr value too large");
  }
  RETURN_IF_ERROR(CheckKnownLocked(op.id(), "object"));
  ASSIGN_OR_RETURN(Entry entry, EntryLocked(op.id()));
  int r;
  if (entry.is_root()) {
    r = fsetxattr(entry.dir->get(), op.name().c_str(), op.value().data(),
                  op.value().size(), 0);
  } else {
    struct stat st;
    ASSIGN_OR_RETURN(UniqueFd fd, OpenPath(entry.dir->get(), entry.name, &st));
    // Linux keeps user.* xattrs on files and directories only.
    if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)) {
      return Conflict(EPERM, absl::StrCat("a ", KindOf(st.st_mode),
                                          " cannot hold user xattrs"));
    }
    r = setxattr(ProcFdPath(fd.get()).c_str(), op.name().c_str(),
                 op.value().data(), op.value().size(), 0);
  }
  if (r != 0) {
    const int err = errno;
    // What this filesystem cannot store on this object (no room for more
    // attributes in it, a value too long, no user xattrs here) stays so
    // however long one waits: refused for this object alone, so that the
    // rest of the queue goes on. A full or read-only mirror is retried.
    if (err == ENOSPC || err == E2BIG || err == ERANGE || err == EOPNOTSUPP ||
        err == EPERM || err == EINVAL || err == ENAMETOOLONG) {
      struct statvfs fs;
      const bool disk_full = err == ENOSPC &&
                             fstatvfs(root_->get(), &fs) == 0 &&
                             fs.f_bavail == 0;
      if (!disk_full) {
        return Conflict(err, absl::StrCat("the mirror's filesystem cannot "
                                          "store xattr ",
                                          Quoted(op.name()), " here"));
      }
    }
    return ErrnoStatus(err, "setxattr");
  }
  return absl::OkStatus();
}

absl::Status LocalBackend::ApplyRemoveXattr(const pb::RemoveXattr& op) {
  RETURN_IF_ERROR(CheckXattrName(op.name()));
  RETURN_IF_ERROR(CheckKnownLocked(op.id(), "object"));
  ASSIGN_OR_RETURN(Entry entry, EntryLocked(op.id()));
  int r;
  if (entry.is_root()) {
    r = fremovexattr(entry.dir->get(), op.name().c_str());
  } else {
    struct stat st;
    ASSIGN_OR_RETURN(UniqueFd fd, OpenPath(entry.dir->get(), entry.name, &st));
    if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)) {
      return Conflict(EPERM, absl::StrCat("a ", KindOf(st.st_mode),
                                          " cannot hold user xattrs"));
    }
    r = removexattr(ProcFdPath(fd.get()).c_str(), op.name().c_str());
  }
  if (r != 0 && errno != ENODATA) return ErrnoStatus(errno, "removexattr");
  return absl::OkStatus();
}

absl::Status LocalBackend::ApplySync(uint64_t seq, const pb::Sync& op) {
  // What to fsync, resolved under the lock; the fsyncs happen outside it.
  std::vector<SharedFd> to_sync;
  {
    absl::MutexLock l(&mu_);
    if (op.id() != 0) {
      RETURN_IF_ERROR(CheckKnownLocked(op.id(), "object"));
      ASSIGN_OR_RETURN(Entry entry, EntryLocked(op.id()));
      if (!entry.is_root()) {
        struct stat st;
        if (fstatat(entry.dir->get(), entry.name.c_str(), &st,
                    AT_SYMLINK_NOFOLLOW) != 0) {
          return ErrnoStatus(errno, "stat");
        }
        if (S_ISREG(st.st_mode)) {
          ASSIGN_OR_RETURN(SharedFd fd, FileFdLocked(op.id()));
          to_sync.push_back(std::move(fd));
        } else if (S_ISDIR(st.st_mode)) {
          ASSIGN_OR_RETURN(SharedFd fd, DirFdLocked(op.id()));
          to_sync.push_back(std::move(fd));
        }
        // The directories that make it reachable, up to (not including)
        // the root, which is synced last, after the state is stored.
        uint64_t at = op.id();
        for (int depth = 0; depth < IdMap::kMaxDepth; ++depth) {
          absl::StatusOr<std::pair<uint64_t, std::string>> link =
              ids_.FirstLink(at);
          if (!link.ok() || link->first == kRootId) break;
          at = link->first;
          ASSIGN_OR_RETURN(SharedFd fd, DirFdLocked(at));
          to_sync.push_back(std::move(fd));
        }
      }
    }
  }
  for (const SharedFd& fd : to_sync) {
    if (fsync(fd->get()) != 0) return ErrnoStatus(errno, "fsync");
  }
  if (op.id() == 0 && syncfs(root_->get()) != 0) {
    return ErrnoStatus(errno, "syncfs");
  }
  {
    absl::MutexLock l(&mu_);
    if (stored_.session != session_id_ || stored_.seq < seq) {
      RETURN_IF_ERROR(StoreStateLocked(ReplayState{session_id_, seq, {}}));
    }
  }
  // The root holds the state xattr and the top-level names.
  if (fsync(root_->get()) != 0) return ErrnoStatus(errno, "fsync root");
  return absl::OkStatus();
}

// --- reads ---

absl::StatusOr<pb::ListDirectoryResponse> LocalBackend::ListDirectory(
    const pb::ListDirectoryRequest& request) {
  const uint64_t dir_id = request.id();
  if (request.first_child_id() <= kRootId) {
    return absl::InvalidArgumentError(absl::StrCat(
        "first_child_id ", request.first_child_id(), " is not a new id"));
  }
  SharedFd dir;
  {
    absl::MutexLock l(&mu_);
    if (!ids_.Contains(dir_id)) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown directory id ", dir_id));
    }
    ASSIGN_OR_RETURN(dir, DirFdLocked(dir_id));
  }

  // Read the entries through a description of our own: the cached one's
  // offset is shared.
  const int reader =
      openat(dir->get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (reader < 0) return ErrnoStatus(errno, "open directory");
  DIR* stream = fdopendir(reader);  // owns `reader` from here
  if (stream == nullptr) {
    const int err = errno;
    close(reader);
    return ErrnoStatus(err, "fdopendir");
  }
  std::vector<std::string> names;
  errno = 0;
  while (dirent* e = readdir(stream)) {
    absl::string_view name(e->d_name);
    if (name != "." && name != "..") names.emplace_back(name);
    errno = 0;
  }
  const int read_errno = errno;
  closedir(stream);
  if (read_errno != 0) return ErrnoStatus(read_errno, "readdir");
  std::sort(names.begin(), names.end());

  struct Found {
    pb::DirEntry entry;
    struct stat st;
  };
  std::vector<Found> found;
  found.reserve(names.size());
  const std::string dir_path = ProcFdPath(dir->get());
  for (std::string& name : names) {
    Found f;
    if (fstatat(dir->get(), name.c_str(), &f.st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT) continue;  // removed behind our back meanwhile
      return ErrnoStatus(errno, absl::StrCat("stat ", Quoted(name)));
    }
    if (S_ISLNK(f.st.st_mode)) {
      char target[PATH_MAX];
      ssize_t n = readlinkat(dir->get(), name.c_str(), target, sizeof(target));
      if (n < 0) return ErrnoStatus(errno, absl::StrCat("readlink ", name));
      f.entry.set_symlink_target(target, n);
    } else if (S_ISREG(f.st.st_mode) || S_ISDIR(f.st.st_mode)) {
      // Through the directory's magic link, and l*xattr: the entry itself,
      // never what a symlink there points to, with no open of it.
      const std::string path = absl::StrCat(dir_path, "/", name);
      ASSIGN_OR_RETURN(std::vector<pb::XattrEntry> xattrs,
                       ReadUserXattrs(
                           [&](char* buf, size_t size) {
                             return llistxattr(path.c_str(), buf, size);
                           },
                           [&](const char* key, void* buf, size_t size) {
                             return lgetxattr(path.c_str(), key, buf, size);
                           }));
      for (pb::XattrEntry& x : xattrs) {
        *f.entry.add_xattrs() = std::move(x);
      }
    }
    f.entry.set_name(std::move(name));
    found.push_back(std::move(f));
  }

  pb::ListDirectoryResponse response;
  absl::MutexLock l(&mu_);
  // The ids this listing would bind. A hard link of a file bound already
  // keeps its id; everything else takes a new one.
  auto known_link = [&](const struct stat& st)
                        ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) -> uint64_t {
    if (S_ISDIR(st.st_mode) || st.st_nlink <= 1) return 0;
    const auto inode = std::make_pair(st.st_dev, st.st_ino);
    auto it = inode_ids_.find(inode);
    if (it == inode_ids_.end() && !unindexed_bindings_.empty()) {
      IndexBoundFilesLocked();
      it = inode_ids_.find(inode);
    }
    return it != inode_ids_.end() && ids_.Contains(it->second) ? it->second : 0;
  };
  if (request.max_new_ids() > 0) {
    uint64_t needed = 0;
    for (const Found& f : found) {
      if (known_link(f.st) == 0) ++needed;
    }
    if (needed > request.max_new_ids()) {
      response.set_ids_needed(needed);
      return response;
    }
  }
  uint64_t next = request.first_child_id();
  for (Found& f : found) {
    const std::string& name = f.entry.name();
    const bool shared = !S_ISDIR(f.st.st_mode) && f.st.st_nlink > 1;
    const auto inode = std::make_pair(f.st.st_dev, f.st.st_ino);
    uint64_t id = known_link(f.st);
    if (id == 0) {
      id = next++;
      if (ids_.Contains(id) && !ids_.HasLink(id, dir_id, name)) {
        return absl::FailedPreconditionError(
            absl::StrCat("id ", id, " is bound already"));
      }
    }
    RETURN_IF_ERROR(ids_.AddLink(id, dir_id, name));
    if (shared) inode_ids_[inode] = id;
    *f.entry.mutable_attr() = AttrFromStat(f.st, id);
    *response.add_entries() = std::move(f.entry);
  }
  response.set_next_free_id(next);
  ++acks_.directories_listed;
  return response;
}

absl::StatusOr<uint64_t> LocalBackend::ReadBlock(
    const pb::ReadBlockRequest& request, absl::Span<char> out) {
  if (request.length() > kMaxReadLength) {
    return absl::InvalidArgumentError(
        absl::StrCat("length ", request.length(), " exceeds ", kMaxReadLength));
  }
  if (request.offset() > kMaxOffset ||
      request.length() > kMaxOffset - request.offset()) {
    return absl::InvalidArgumentError("offset beyond the largest file");
  }
  SharedFd fd;
  {
    absl::MutexLock l(&mu_);
    RETURN_IF_ERROR(CheckKnownLocked(request.id(), "file"));
    absl::StatusOr<SharedFd> rw = FileFdLocked(request.id());
    if (rw.ok()) {
      fd = std::move(*rw);
    } else {
      // A read-only mirror (or file): read without caching.
      const int err = StatusToErrno(rw.status());
      if (err != EROFS && err != EACCES && err != ETXTBSY) return rw.status();
      ASSIGN_OR_RETURN(Entry entry, EntryLocked(request.id()));
      ASSIGN_OR_RETURN(UniqueFd ro, dir_.OpenLeaf(entry.dir->get(), entry.name,
                                                  O_RDONLY | O_NONBLOCK));
      fd = std::make_shared<const UniqueFd>(std::move(ro));
    }
  }
  const size_t length = std::min<size_t>(request.length(), out.size());
  // Straight from the disk into fsd's range: through the page cache a
  // block would cost one more copy, and be cached twice (fsd is the cache).
  if (std::optional<absl::StatusOr<uint64_t>> direct =
          ReadDirect(request.id(), fd, request.offset(), out.first(length))) {
    if (direct->ok()) {
      absl::MutexLock l(&mu_);
      ++acks_.blocks_read;
    }
    return *direct;
  }
  size_t done = 0;
  while (done < length) {
    ssize_t n = pread(fd->get(), out.data() + done, length - done,
                      static_cast<off_t>(request.offset() + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "pread");
    }
    if (n == 0) break;  // end of file
    done += n;
  }
  absl::MutexLock l(&mu_);
  ++acks_.blocks_read;
  return done;
}

absl::StatusOr<pb::ReadLinkResponse> LocalBackend::ReadLink(
    const pb::ReadLinkRequest& request) {
  absl::MutexLock l(&mu_);
  RETURN_IF_ERROR(CheckKnownLocked(request.id(), "symlink"));
  ASSIGN_OR_RETURN(Entry entry, EntryLocked(request.id()));
  if (entry.is_root()) return ErrnoStatus(EINVAL, "the root is no symlink");
  char target[PATH_MAX];
  ssize_t n =
      readlinkat(entry.dir->get(), entry.name.c_str(), target, sizeof(target));
  if (n < 0) return ErrnoStatus(errno, "readlink");
  pb::ReadLinkResponse response;
  response.set_target(target, n);
  return response;
}

absl::StatusOr<pb::StatResponse> LocalBackend::Stat(
    const pb::StatRequest& request) {
  absl::MutexLock l(&mu_);
  RETURN_IF_ERROR(CheckKnownLocked(request.id(), "object"));
  ASSIGN_OR_RETURN(Entry entry, EntryLocked(request.id()));
  struct stat st;
  const int r = entry.is_root() ? fstat(entry.dir->get(), &st)
                                : fstatat(entry.dir->get(), entry.name.c_str(),
                                          &st, AT_SYMLINK_NOFOLLOW);
  if (r != 0) return ErrnoStatus(errno, "stat");
  pb::StatResponse response;
  *response.mutable_attr() = AttrFromStat(st, request.id());
  return response;
}

absl::StatusOr<pb::StatFsResponse> LocalBackend::StatFs() {
  // The root's descriptor never changes: no lock needed, and none held
  // across the syscall.
  struct statvfs st;
  if (fstatvfs(root_->get(), &st) != 0) return ErrnoStatus(errno, "statvfs");
  const uint64_t unit = st.f_frsize != 0 ? st.f_frsize : st.f_bsize;
  pb::StatFsResponse response;
  response.set_known(true);
  response.set_total_bytes(uint64_t{st.f_blocks} * unit);
  response.set_free_bytes(uint64_t{st.f_bfree} * unit);
  response.set_available_bytes(uint64_t{st.f_bavail} * unit);
  response.set_total_files(st.f_files);
  response.set_free_files(st.f_favail);
  response.set_name_max(static_cast<uint32_t>(
      std::min<unsigned long>(st.f_namemax, UINT32_MAX)));
  return response;
}

void LocalBackend::FillStatus(pb::StatusResponse* status) {
  absl::MutexLock l(&mu_);
  acks_.Fill(status);
}

}  // namespace memfuse::mirrord
