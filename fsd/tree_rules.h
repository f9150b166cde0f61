// Small rules the Tree's files (tree*.cc) share and nothing else uses:
// nanoseconds and timespecs, the clock, which names and xattr names are
// valid, and which xattrs reach the mirror.
//
// Thread-safe: the functions touch only their arguments.
#ifndef MEMFUSE_FSD_TREE_RULES_H_
#define MEMFUSE_FSD_TREE_RULES_H_

#include <cerrno>
#include <cstdint>
#include <ctime>
#include <string_view>

#include "absl/status/status.h"
#include "common/status.h"
#include "fsd/tree.h"

namespace memfuse::fsd::tree_rules {

using common::ErrnoStatus;

inline int64_t Nanos(const timespec& ts) {
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

inline timespec FromNanos(int64_t ns) {
  timespec ts;
  ts.tv_sec = ns / 1000000000;
  ts.tv_nsec = ns % 1000000000;
  if (ts.tv_nsec < 0) {
    ts.tv_nsec += 1000000000;
    --ts.tv_sec;
  }
  return ts;
}

// Only user xattrs reach the mirror; trusted.* and security.* stay here.
inline bool IsMirroredXattr(std::string_view name) {
  return name.substr(0, 5) == "user.";
}

// The mirror agent keeps its own state in these; they are never shown.
inline constexpr std::string_view kReservedXattrPrefix = "user.memfuse.";

inline timespec Now() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return ts;
}

inline absl::Status ValidateName(std::string_view name,
                          size_t name_max = Tree::kMaxNameLength) {
  if (name.empty()) return ErrnoStatus(ENOENT);
  if (name.size() > name_max) return ErrnoStatus(ENAMETOOLONG);
  return absl::OkStatus();
}

// The xattr namespaces stored; others (system.*, ACLs) are not ours to keep.
inline absl::Status ValidateXattrName(std::string_view name) {
  for (std::string_view prefix : {"user.", "trusted.", "security."}) {
    if (name.size() > prefix.size() && name.substr(0, prefix.size()) == prefix) {
      return absl::OkStatus();
    }
  }
  return ErrnoStatus(EOPNOTSUPP);
}

}  // namespace memfuse::fsd::tree_rules

#endif  // MEMFUSE_FSD_TREE_RULES_H_
