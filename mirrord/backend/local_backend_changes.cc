// The local backend's namespace and attribute changes: create, link,
// remove, rename, exchange, set attributes and xattrs, sync. Thread-safety
// as LocalBackend's (local_backend.h).
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


// --- namespace and attribute changes ---

absl::Status LocalBackend::CreateLocked(uint64_t seq, const pb::Create& op) {
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
  const absl::Status made = InWritableDir(d, [&]() -> absl::Status {
    switch (type) {
      case S_IFREG: {
        ASSIGN_OR_RETURN(created, env_->CreateFile(d, name, 0600));
        return absl::OkStatus();
      }
      case S_IFDIR:
        return env_->MakeDirectory(d, name, 0700);
      case S_IFLNK:
        return env_->MakeSymlink(op.symlink_target(), d, name);
      default:
        return env_->MakeNode(d, name, type | 0600, attr.rdev());
    }
  });
  if (!made.ok()) {
    const int err = StatusToErrno(made);
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


absl::Status LocalBackend::SetAttrLocked(const pb::SetAttr& op) {
  const pb::Attr& attr = op.attr();
  const uint32_t mask = op.mask();
  RETURN_IF_ERROR(CheckKnownLocked(attr.id(), "object"));
  ASSIGN_OR_RETURN(Entry entry, EntryLocked(attr.id()));
  if (mask & kSetSize) {
    // The size was checked by BackendBase::Apply.
    ASSIGN_OR_RETURN(SharedFd fd, FileFdLocked(attr.id()));
    RETURN_IF_ERROR(env_->Truncate(fd->get(), attr.size()));
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

absl::Status LocalBackend::LinkLocked(uint64_t seq, const pb::Link& op) {
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
  const absl::Status linked = InWritableDir(to->get(), [&] {
    return env_->Link(from.dir->get(), from.name, to->get(), new_name);
  });
  if (!linked.ok()) {
    const int err = StatusToErrno(linked);
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

absl::Status LocalBackend::RemoveLocked(uint64_t seq, const pb::Remove& op) {
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
  const absl::Status removed = InWritableDir(dir->get(), [&] {
    return env_->Remove(dir->get(), name, op.directory());
  });
  if (!removed.ok() && StatusToErrno(removed) != ENOENT) {
    const int err = StatusToErrno(removed);
    if (err == ENOTEMPTY || err == EEXIST) {
      return Conflict(err, "the mirror directory holds entries fsd does not");
    }
    return ErrnoStatus(err, "remove");
  }
  RETURN_IF_ERROR(ids_.RemoveLink(op.id(), op.parent(), name));
  ForgetIfUnnamedLocked(op.id());
  return absl::OkStatus();
}

absl::Status LocalBackend::RenameLocked(uint64_t seq, const pb::Rename& op) {
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
  const absl::Status renamed = InWritableDir(from_dir->get(), [&] {
    return InWritableDir(to_dir->get(), [&] {
      return env_->Rename(from_dir->get(), op.name(), to_dir->get(),
                          op.new_name(), flags);
    });
  });
  if (!renamed.ok()) {
    const int err = StatusToErrno(renamed);
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
    const absl::Status exchanged = InWritableDir(from.dir->get(), [&] {
      return InWritableDir(to.dir->get(), [&] {
        return env_->Rename(from.dir->get(), from.name, to.dir->get(),
                            to.name, RENAME_EXCHANGE);
      });
    });
    if (!exchanged.ok()) {
      const int err = StatusToErrno(exchanged);
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

absl::Status LocalBackend::SetXattrLocked(const pb::SetXattr& op) {
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

absl::Status LocalBackend::RemoveXattrLocked(const pb::RemoveXattr& op) {
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
    RETURN_IF_ERROR(env_->SyncFile(fd->get()));
  }
  if (op.id() == 0) RETURN_IF_ERROR(env_->SyncFilesystem(root_->get()));
  {
    absl::MutexLock l(&mu_);
    if (stored_.session != session_id_ || stored_.seq < seq) {
      RETURN_IF_ERROR(StoreStateLocked(ReplayState{session_id_, seq, {}}));
    }
  }
  // The root holds the state xattr and the top-level names.
  if (absl::Status synced = env_->SyncFile(root_->get()); !synced.ok()) {
    return ErrnoStatus(StatusToErrno(synced), "fsync root");
  }
  return absl::OkStatus();
}

}  // namespace memfuse::mirrord
