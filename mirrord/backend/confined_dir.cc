#include "mirrord/backend/confined_dir.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"

namespace memfuse::mirrord {

using common::ErrnoStatus;
using common::UniqueFd;

absl::Status ValidateName(absl::string_view name) {
  if (name.empty() || name == "." || name == ".." || name.size() > 255 ||
      name.find('/') != absl::string_view::npos ||
      name.find('\0') != absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid name \"", absl::CEscape(name.substr(0, 300)),
                     "\""));
  }
  return absl::OkStatus();
}

absl::StatusOr<ConfinedDir> ConfinedDir::Open(const std::string& path,
                                              bool create) {
  bool created = false;
  if (create) {
    if (mkdir(path.c_str(), 0755) == 0) {
      created = true;
    } else if (errno != EEXIST) {
      return ErrnoStatus(errno, absl::StrCat("cannot create mirror ", path));
    }
  }
  UniqueFd root(open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!root.valid()) {
    return ErrnoStatus(errno, absl::StrCat("cannot open mirror ", path));
  }
  // 0755 whatever the umask.
  if (created && fchmod(root.get(), 0755) != 0) {
    return ErrnoStatus(errno, absl::StrCat("cannot chmod mirror ", path));
  }
  return ConfinedDir(std::move(root));
}

absl::StatusOr<UniqueFd> ConfinedDir::OpenDir(
    const std::vector<std::string>& components) const {
  for (const std::string& c : components) RETURN_IF_ERROR(ValidateName(c));
  const std::string path =
      components.empty() ? "." : absl::StrJoin(components, "/");
  open_how how{};
  how.flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  const long fd = syscall(SYS_openat2, root_.get(), path.c_str(), &how,
                          sizeof(how));
  if (fd < 0) return ErrnoStatus(errno, absl::StrCat("open ", path));
  return UniqueFd(static_cast<int>(fd));
}

absl::StatusOr<UniqueFd> ConfinedDir::OpenLeaf(int dir, absl::string_view name,
                                               int flags, mode_t mode) const {
  RETURN_IF_ERROR(ValidateName(name));
  const std::string leaf(name);
  UniqueFd fd(openat(dir, leaf.c_str(), flags | O_NOFOLLOW | O_CLOEXEC, mode));
  if (!fd.valid()) return ErrnoStatus(errno, absl::StrCat("open ", leaf));
  return fd;
}

}  // namespace memfuse::mirrord
