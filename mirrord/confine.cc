#include "mirrord/confine.h"

#include <sys/capability.h>
#include <sys/prctl.h>

#include <algorithm>
#include <cerrno>

#include "common/status.h"

namespace memfuse::mirrord {

std::vector<int> MirrorCapabilities(bool local_mirror) {
  if (!local_mirror) return {};
  return {CAP_CHOWN, CAP_FOWNER, CAP_DAC_OVERRIDE, CAP_FSETID, CAP_MKNOD};
}

absl::Status DropCapabilities(const std::vector<int>& keep) {
  cap_t current = cap_get_proc();
  if (current == nullptr) return common::ErrnoStatus(errno, "cap_get_proc");
  cap_flag_value_t setpcap = CAP_CLEAR;
  cap_get_flag(current, CAP_SETPCAP, CAP_EFFECTIVE, &setpcap);
  cap_free(current);

  std::vector<cap_value_t> kept;
  for (int cap : keep) {
    if (CAP_IS_SUPPORTED(cap)) kept.push_back(cap);
  }
  if (setpcap == CAP_SET) {
    for (cap_value_t cap = 0; cap <= CAP_LAST_CAP; ++cap) {
      if (std::find(kept.begin(), kept.end(), cap) != kept.end()) continue;
      if (CAP_IS_SUPPORTED(cap) && cap_drop_bound(cap) != 0) {
        return common::ErrnoStatus(errno, "dropping from the bounding set");
      }
    }
  }
  if (CAP_AMBIENT_SUPPORTED() && cap_reset_ambient() != 0) {
    return common::ErrnoStatus(errno, "clearing the ambient set");
  }
  cap_t caps = cap_init();  // everything clear
  if (caps == nullptr) return common::ErrnoStatus(errno, "cap_init");
  if (!kept.empty()) {
    current = cap_get_proc();
    // Keep only those of `kept` this process holds (as non-root: none).
    std::vector<cap_value_t> held;
    for (cap_value_t cap : kept) {
      cap_flag_value_t has = CAP_CLEAR;
      cap_get_flag(current, cap, CAP_PERMITTED, &has);
      if (has == CAP_SET) held.push_back(cap);
    }
    cap_free(current);
    if (!held.empty()) {
      cap_set_flag(caps, CAP_PERMITTED, static_cast<int>(held.size()),
                   held.data(), CAP_SET);
      cap_set_flag(caps, CAP_EFFECTIVE, static_cast<int>(held.size()),
                   held.data(), CAP_SET);
    }
  }
  const int set = cap_set_proc(caps);
  const int err = errno;
  cap_free(caps);
  if (set != 0) return common::ErrnoStatus(err, "cap_set_proc");
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    return common::ErrnoStatus(errno, "PR_SET_NO_NEW_PRIVS");
  }
  return absl::OkStatus();
}

}  // namespace memfuse::mirrord
