// How fsd prints amounts of data to people (logs, drain progress, the
// service manager's status line).
#ifndef MEMFUSE_FSD_UNITS_H_
#define MEMFUSE_FSD_UNITS_H_

#include <cstdint>
#include <string>

#include "absl/strings/str_format.h"

namespace memfuse::fsd {

// "12.5 MiB".
inline std::string MiB(uint64_t bytes) {
  return absl::StrFormat("%.1f MiB", static_cast<double>(bytes) / (1 << 20));
}

}  // namespace memfuse::fsd

#endif  // MEMFUSE_FSD_UNITS_H_
