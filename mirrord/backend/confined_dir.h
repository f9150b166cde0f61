// The local mirror's root, and the only way mirrord reaches inside it.
//
// Everything is relative to one directory descriptor opened at start (before
// any privilege drop). Parent directories are resolved with openat2() and
// RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS, and leaves
// are opened with O_NOFOLLOW, so no name on the socket and no symlink planted
// in the mirror can make mirrord touch anything outside the mirror root.
// Every name is validated first: a component with '/' or NUL, ".", "..",
// empty or longer than 255 bytes is INVALID_ARGUMENT, never resolved.
//
// Thread-safe: the root descriptor is immutable after Open().
#ifndef MEMFUSE_MIRRORD_BACKEND_CONFINED_DIR_H_
#define MEMFUSE_MIRRORD_BACKEND_CONFINED_DIR_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/unique_fd.h"

namespace memfuse::mirrord {

// INVALID_ARGUMENT unless `name` is one path component a Linux directory
// can hold.
absl::Status ValidateName(absl::string_view name);

class ConfinedDir {
 public:
  // Opens `path` as the root, creating it (mode 0755) if missing and
  // `create` is set.
  static absl::StatusOr<ConfinedDir> Open(const std::string& path,
                                          bool create);

  ConfinedDir(ConfinedDir&&) = default;
  ConfinedDir& operator=(ConfinedDir&&) = default;

  // The directory at `components` below the root (the root itself for
  // none), never through a symlink.
  absl::StatusOr<common::UniqueFd> OpenDir(
      const std::vector<std::string>& components) const;

  // openat(dir, name, flags | O_NOFOLLOW | O_CLOEXEC, mode): a symlink leaf
  // is ELOOP, never followed.
  absl::StatusOr<common::UniqueFd> OpenLeaf(int dir, absl::string_view name,
                                            int flags, mode_t mode = 0) const;

  int root() const { return root_.get(); }

 private:
  explicit ConfinedDir(common::UniqueFd root) : root_(std::move(root)) {}

  common::UniqueFd root_;
};

}  // namespace memfuse::mirrord

#endif  // MEMFUSE_MIRRORD_BACKEND_CONFINED_DIR_H_
