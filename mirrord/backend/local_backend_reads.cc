// The local backend's reads besides file data: the entries of a directory
// (BackendBase binds their ids), symlink targets, stat and statfs, and
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

absl::StatusOr<std::vector<BackendBase::ListedEntry>>
LocalBackend::ReadDirectory(uint64_t dir_id) {
  SharedFd dir;
  {
    absl::MutexLock l(&mu_);
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

  std::vector<ListedEntry> found;
  found.reserve(names.size());
  const std::string dir_path = ProcFdPath(dir->get());
  for (std::string& name : names) {
    ListedEntry f;
    struct stat st;
    if (fstatat(dir->get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT) continue;  // removed behind our back meanwhile
      return ErrnoStatus(errno, absl::StrCat("stat ", Quoted(name)));
    }
    if (S_ISLNK(st.st_mode)) {
      char target[PATH_MAX];
      ssize_t n = readlinkat(dir->get(), name.c_str(), target, sizeof(target));
      if (n < 0) return ErrnoStatus(errno, absl::StrCat("readlink ", name));
      f.entry.set_symlink_target(target, n);
    } else if (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode)) {
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
    *f.entry.mutable_attr() = AttrFromStat(st, 0);
    f.object = {st.st_dev, st.st_ino};
    // A file with one name now may get more, but then a listing finds it
    // again with st_nlink > 1.
    f.linkable = !S_ISDIR(st.st_mode) && st.st_nlink > 1;
    found.push_back(std::move(f));
  }
  return found;
}

uint64_t LocalBackend::LinkedIdLocked(const ListedEntry& listed) {
  const auto inode = std::make_pair(static_cast<dev_t>(listed.object.first),
                                    static_cast<ino_t>(listed.object.second));
  auto it = inode_ids_.find(inode);
  if (it == inode_ids_.end() && !unindexed_bindings_.empty()) {
    IndexBoundFilesLocked();
    it = inode_ids_.find(inode);
  }
  return it != inode_ids_.end() ? it->second : 0;
}

void LocalBackend::ListedLocked(uint64_t id, const ListedEntry& listed) {
  if (!listed.linkable) return;
  inode_ids_[std::make_pair(static_cast<dev_t>(listed.object.first),
                            static_cast<ino_t>(listed.object.second))] = id;
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
