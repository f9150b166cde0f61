// The local backend's reads besides file data: directory listings (which
// bind the ids of what they find), symlink targets, stat and statfs, and
// the status. Thread-safety as LocalBackend's (local_backend.h).
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


}  // namespace memfuse::mirrord
