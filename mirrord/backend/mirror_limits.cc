#include "mirrord/backend/mirror_limits.h"

#include <fcntl.h>
#include <linux/limits.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/unique_fd.h"
#include "common/xattr_space.h"
#include "glog/logging.h"

namespace memfuse::mirrord {
namespace {

using common::UniqueFd;

// More regions than this, or one that takes a value of XATTR_SIZE_MAX, is
// room no program will run out of: reported as unbounded.
constexpr int kMaxRegions = 4;

// Whether `name` with a value of `size` bytes can be created on `fd`; on
// false, the errno in *err. The attribute is removed again unless `keep`.
bool TrySet(int fd, const std::string& name, const std::string& value,
            size_t size, bool keep, int* err) {
  if (fsetxattr(fd, name.c_str(), value.data(), size, XATTR_CREATE) != 0) {
    *err = errno;
    return false;
  }
  if (!keep) fremovexattr(fd, name.c_str());
  return true;
}

// The largest value `name` can be given on `fd` now: -1 if not even an
// empty one fits (errno in *err).
long LargestValue(int fd, const std::string& name, const std::string& value,
                  int* err) {
  if (!TrySet(fd, name, value, 0, false, err)) return -1;
  size_t lo = 0, hi = value.size();
  while (lo < hi) {
    const size_t mid = lo + (hi - lo + 1) / 2;
    if (TrySet(fd, name, value, mid, false, err)) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return static_cast<long>(lo);
}

void ProbeXattrs(int dir_fd, pb::MirrorLimits* limits) {
  UniqueFd fd(openat(dir_fd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
  if (!fd.valid()) {
    LOG(INFO) << "mirror limits: no O_TMPFILE here (" << std::strerror(errno)
              << "); xattr room not measured";
    return;
  }
  const std::string value(XATTR_SIZE_MAX, 'v');
  int err = 0;
  if (!TrySet(fd.get(), "user.p", value, 0, false, &err)) {
    if (err == EOPNOTSUPP || err == EPERM) limits->set_xattrs_refused_errno(err);
    LOG(INFO) << "mirror limits: user xattrs: " << std::strerror(err);
    return;
  }
  // Each pass fills the largest region left with one attribute, so the
  // regions come out largest first.
  std::vector<uint64_t> regions;
  int full_errno = 0;
  bool bounded = false;
  for (int i = 0; i <= kMaxRegions; ++i) {
    const std::string name = absl::StrCat("user.p", i);
    const long largest = LargestValue(fd.get(), name, value, &err);
    if (largest < 0) {
      if (err != ENOSPC && err != E2BIG) {
        LOG(INFO) << "mirror limits: probing xattr room: "
                  << std::strerror(err) << "; not measured";
        return;
      }
      full_errno = err;
      bounded = true;
      break;
    }
    if (static_cast<size_t>(largest) == value.size() || i == kMaxRegions) {
      break;  // room enough: unbounded
    }
    if (full_errno == 0) {
      // Why the next byte did not fit.
      TrySet(fd.get(), name, value, largest + 1, false, &full_errno);
    }
    regions.push_back(common::XattrCost(name.size(), largest));
    TrySet(fd.get(), name, value, largest, true, &err);
  }
  if (!bounded || regions.empty()) return;
  // Which region does the filesystem fill first? A fresh object given an
  // attribute the size of the smallest region: if the largest still has
  // all its room, the smallest was chosen (ext4: the inode before the
  // block), and the regions are filled smallest first.
  if (regions.size() > 1) {
    UniqueFd fresh(openat(dir_fd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
    if (!fresh.valid()) return;
    const uint64_t header = common::XattrCost(7, 0);  // "user.pN", empty
    if (regions.back() < header ||
        !TrySet(fresh.get(), "user.s", value, regions.back() - header, true,
                &err)) {
      return;
    }
    if (TrySet(fresh.get(), "user.b", value, regions.front() - header, false,
               &err)) {
      std::reverse(regions.begin(), regions.end());
    }
  }
  for (uint64_t r : regions) limits->add_xattr_regions(r);
  limits->set_xattr_full_errno(full_errno != 0 ? full_errno : ENOSPC);
  LOG(INFO) << "mirror limits: room for user xattrs per object "
            << absl::StrJoin(regions, " + ") << " bytes ("
            << std::strerror(limits->xattr_full_errno()) << " beyond)";
}

}  // namespace

pb::MirrorLimits ProbeMirrorLimits(int dir_fd) {
  pb::MirrorLimits limits;
  struct statvfs fs;
  if (fstatvfs(dir_fd, &fs) == 0 && fs.f_namemax > 0) {
    limits.set_name_max(static_cast<uint32_t>(std::min<unsigned long>(
        fs.f_namemax, NAME_MAX)));
  }
  ProbeXattrs(dir_fd, &limits);
  return limits;
}

}  // namespace memfuse::mirrord
