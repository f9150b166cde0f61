// The local backend's mapping of the mirror onto POSIX calls, shared by the
// backend's files (local_backend*.cc) and by nothing else: the limits it
// checks, nanoseconds and timespecs, an Attr from a stat, the user.* xattrs
// of one object, a descriptor's /proc/self/fd name, and the retry a
// non-root agent needs in a directory whose mode shuts its owner out.
//
// Thread-safe: every function touches only its arguments.
#ifndef MEMFUSE_MIRRORD_BACKEND_LOCAL_POSIX_H_
#define MEMFUSE_MIRRORD_BACKEND_LOCAL_POSIX_H_

#include <fcntl.h>
#include <linux/limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdint>
#include <ctime>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status.h"
#include "common/unique_fd.h"
#include "mirrord/backend/backend_common.h"
#include "mirrord/backend/local_backend.h"

namespace memfuse::mirrord::local {

using common::ErrnoStatus;
using common::UniqueFd;

inline constexpr size_t kMaxSymlinkTarget = PATH_MAX - 1;
inline constexpr size_t kMaxXattrValue = 64 * 1024;  // XATTR_SIZE_MAX

inline bool IsReservedXattr(absl::string_view name) {
  return absl::StartsWith(name, LocalBackend::kReservedXattrPrefix);
}

inline absl::Status CheckXattrName(absl::string_view name) {
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

inline timespec ToTimespec(int64_t ns) {
  int64_t sec = ns / 1000000000;
  int64_t rem = ns % 1000000000;
  if (rem < 0) {
    rem += 1000000000;
    --sec;
  }
  return timespec{static_cast<time_t>(sec), static_cast<long>(rem)};
}

inline int64_t ToNs(const timespec& ts) {
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

inline pb::Attr AttrFromStat(const struct stat& st, uint64_t id) {
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

inline std::string ProcFdPath(int fd) {
  return absl::StrCat("/proc/self/fd/", fd);
}

inline bool Exists(int dir, const std::string& name) {
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
// creates in). The owner may always chmod: when `op` (returning an
// absl::Status, through the Env) fails with EACCES, grant u+wx on `dir` for
// one more try and restore the mode after.
template <typename Op>
absl::Status InWritableDir(int dir, Op op) {
  absl::Status s = op();
  if (s.ok() || common::StatusToErrno(s) != EACCES || geteuid() == 0) return s;
  struct stat st;
  if (fstat(dir, &st) != 0 || st.st_uid != geteuid() ||
      (st.st_mode & 0300) == 0300 ||
      fchmod(dir, (st.st_mode & 07777) | 0300) != 0) {
    return s;
  }
  s = op();
  fchmod(dir, st.st_mode & 07777);
  return s;
}

// Opens `name` in `dir` as an O_PATH descriptor (never following a
// symlink) and stats it.
inline absl::StatusOr<UniqueFd> OpenPath(int dir, const std::string& name,
                                  struct stat* st) {
  UniqueFd fd(openat(dir, name.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus(errno, "open");
  if (fstat(fd.get(), st) != 0) return ErrnoStatus(errno, "fstat");
  return fd;
}

}  // namespace memfuse::mirrord::local

#endif  // MEMFUSE_MIRRORD_BACKEND_LOCAL_POSIX_H_
