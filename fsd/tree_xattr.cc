// The Tree's extended attributes: set (within the mirror's room), get,
// list, remove. Thread-safety as Tree's (tree.h).
#include "fsd/tree.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/xattr.h>

#include <algorithm>
#include <cerrno>
#include <ctime>

#include "common/status.h"
#include "common/xattr_space.h"
#include "glog/logging.h"
#include "fsd/tree_rules.h"

namespace memfuse::fsd {

using common::ErrnoStatus;
using namespace tree_rules;  // NOLINT: the Tree's own rules

absl::Status Tree::CheckXattrRoom(const Inode& inode, std::string_view name,
                                  size_t value_size) {
  std::vector<uint64_t> regions;
  {
    absl::MutexLock l(&limits_mu_);
    if (limits_.xattrs_refused_errno() != 0) {
      return ErrnoStatus(limits_.xattrs_refused_errno());
    }
    if (limits_.xattr_regions().empty()) return absl::OkStatus();
    regions.assign(limits_.xattr_regions().begin(),
                   limits_.xattr_regions().end());
  }
  // The object's attributes as the mirror would hold them afterwards: a
  // replaced value where it was, a new attribute last.
  std::vector<uint64_t> costs;
  bool replaced = false;
  if (inode.xattrs) {
    for (const auto& [have, value] : *inode.xattrs) {
      if (!IsMirroredXattr(have)) continue;
      if (have == name) {
        costs.push_back(common::XattrCost(have.size(), value_size));
        replaced = true;
      } else {
        costs.push_back(common::XattrCost(have.size(), value.size()));
      }
    }
  }
  if (!replaced) costs.push_back(common::XattrCost(name.size(), value_size));
  if (common::XattrsFit(regions, costs)) return absl::OkStatus();
  int err;
  {
    absl::MutexLock l(&limits_mu_);
    err = limits_.xattr_full_errno() != 0 ? limits_.xattr_full_errno() : ENOSPC;
  }
  return ErrnoStatus(err);
}

absl::Status Tree::SetXattr(fuse_ino_t ino, std::string_view name,
                            std::string_view value, int flags) {
  RETURN_IF_ERROR(ValidateXattrName(name));
  if (log_ != nullptr && name.substr(0, kReservedXattrPrefix.size()) ==
                             kReservedXattrPrefix) {
    return ErrnoStatus(EPERM);  // the mirror agent's own
  }
  InodePtr inode = Find(ino);
  absl::MutexLock il(&inode->mu);
  if (!inode->xattrs) {
    if (flags & XATTR_REPLACE) return ErrnoStatus(ENODATA);
    inode->xattrs = std::make_unique<XattrMap>();
  }
  auto it = inode->xattrs->find(name);
  if (log_ != nullptr && IsMirroredXattr(name)) {
    RETURN_IF_ERROR(CheckXattrRoom(*inode, name, value.size()));
  }
  if (it == inode->xattrs->end()) {
    if (flags & XATTR_REPLACE) return ErrnoStatus(ENODATA);
    inode->xattrs->emplace(std::string(name), std::string(value));
  } else {
    if (flags & XATTR_CREATE) return ErrnoStatus(EEXIST);
    it->second.assign(value);
  }
  inode->ctime = Now();
  if (inode->linked && IsMirroredXattr(name)) {
    recorder_.XattrSet(ino, name, value);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> Tree::GetXattr(fuse_ino_t ino,
                                           std::string_view name) {
  InodePtr inode = Find(ino);
  absl::ReaderMutexLock il(&inode->mu);
  if (!inode->xattrs) return ErrnoStatus(ENODATA);
  auto it = inode->xattrs->find(name);
  if (it == inode->xattrs->end()) return ErrnoStatus(ENODATA);
  return it->second;
}

absl::StatusOr<std::string> Tree::ListXattr(fuse_ino_t ino) {
  InodePtr inode = Find(ino);
  absl::ReaderMutexLock il(&inode->mu);
  std::string names;
  if (inode->xattrs) {
    for (const auto& [name, value] : *inode->xattrs) {
      names.append(name);
      names.push_back('\0');
    }
  }
  return names;
}

absl::Status Tree::RemoveXattr(fuse_ino_t ino, std::string_view name) {
  InodePtr inode = Find(ino);
  absl::MutexLock il(&inode->mu);
  if (!inode->xattrs) return ErrnoStatus(ENODATA);
  auto it = inode->xattrs->find(name);
  if (it == inode->xattrs->end()) return ErrnoStatus(ENODATA);
  inode->xattrs->erase(it);
  if (inode->xattrs->empty()) inode->xattrs.reset();
  inode->ctime = Now();
  if (inode->linked && IsMirroredXattr(name)) {
    recorder_.XattrRemoved(ino, name);
  }
  return absl::OkStatus();
}

}  // namespace memfuse::fsd
