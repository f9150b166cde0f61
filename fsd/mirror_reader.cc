// What a failed read of the mirror is for the program (mirror_reader.h).
#include "fsd/mirror_reader.h"

#include <cerrno>

#include "common/status.h"
#include "glog/logging.h"

namespace memfuse::fsd {

absl::Status MirrorReadError(const absl::Status& status,
                             absl::string_view what) {
  LOG(ERROR) << "cannot " << what << " from the mirror: " << status;
  const int err = common::StatusToErrno(status);
  return common::ErrnoStatus(err == ENOSPC ? ENOSPC : EIO);
}

}  // namespace memfuse::fsd
