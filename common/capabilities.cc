#include "common/capabilities.h"

#include <sys/capability.h>

#include <algorithm>
#include <cerrno>

#include "absl/strings/str_join.h"
#include "common/status.h"

namespace memfuse::common {

bool HasCapability(int cap) {
  if (!CAP_IS_SUPPORTED(cap)) return false;
  cap_t current = cap_get_proc();
  if (current == nullptr) return false;
  cap_flag_value_t value = CAP_CLEAR;
  cap_get_flag(current, cap, CAP_EFFECTIVE, &value);
  cap_free(current);
  return value == CAP_SET;
}

std::string CapabilityNames(const std::vector<int>& caps) {
  std::vector<std::string> names;
  for (int cap : caps) {
    char* name = cap_to_name(cap);  // "cap_chown"
    std::string text = name != nullptr ? name : std::to_string(cap);
    cap_free(name);
    if (text.rfind("cap_", 0) == 0) text.erase(0, 4);
    names.push_back(std::move(text));
  }
  return names.empty() ? "none" : absl::StrJoin(names, ", ");
}

absl::Status KeepOnlyCapabilities(const std::vector<int>& keep) {
  std::vector<cap_value_t> kept;
  for (int cap : keep) {
    if (CAP_IS_SUPPORTED(cap)) kept.push_back(cap);
  }
  if (HasCapability(CAP_SETPCAP)) {
    for (cap_value_t cap = 0; cap <= CAP_LAST_CAP; ++cap) {
      if (std::find(kept.begin(), kept.end(), cap) != kept.end()) continue;
      if (CAP_IS_SUPPORTED(cap) && cap_drop_bound(cap) != 0) {
        return ErrnoStatus(errno, "dropping from the bounding set");
      }
    }
  }
  if (CAP_AMBIENT_SUPPORTED() && cap_reset_ambient() != 0) {
    return ErrnoStatus(errno, "clearing the ambient set");
  }
  // Keep only those of `kept` this process holds (as non-root: none).
  std::vector<cap_value_t> held;
  if (cap_t current = cap_get_proc(); current != nullptr) {
    for (cap_value_t cap : kept) {
      cap_flag_value_t has = CAP_CLEAR;
      cap_get_flag(current, cap, CAP_PERMITTED, &has);
      if (has == CAP_SET) held.push_back(cap);
    }
    cap_free(current);
  }
  cap_t caps = cap_init();  // everything clear
  if (caps == nullptr) return ErrnoStatus(errno, "cap_init");
  if (!held.empty()) {
    cap_set_flag(caps, CAP_PERMITTED, static_cast<int>(held.size()),
                 held.data(), CAP_SET);
    cap_set_flag(caps, CAP_EFFECTIVE, static_cast<int>(held.size()),
                 held.data(), CAP_SET);
  }
  const int set = cap_set_proc(caps);
  const int err = errno;
  cap_free(caps);
  if (set != 0) return ErrnoStatus(err, "cap_set_proc");
  return absl::OkStatus();
}

}  // namespace memfuse::common
