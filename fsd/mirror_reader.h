// What the Tree reads from the mirror on demand: listings of directories it
// has not loaded yet and blocks of files it does not hold (lazy loading and
// eviction). MirrorReads implements it over the agent's connection; the
// unit tests, with fakes.
//
// Thread-safe; calls block until the agent answers (or gives up) and are
// made with no lock of the Tree's held.
#ifndef MEMFUSE_FSD_MIRROR_READER_H_
#define MEMFUSE_FSD_MIRROR_READER_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "mirror.pb.h"

namespace memfuse::fsd {

class MirrorReader {
 public:
  virtual ~MirrorReader() = default;

  // Reads up to `length` bytes at `offset` of file `id` into `out` (room
  // for `length`); returns how many (fewer at the end of the file).
  virtual absl::StatusOr<uint64_t> ReadBlock(uint64_t id, uint64_t offset,
                                             uint64_t length, char* out) = 0;

  // The entries of directory `id`, new ones bound to ids from `first_id`
  // on, at most `max_new_ids` of them (else the response's ids_needed).
  virtual absl::StatusOr<::memfuse::mirror::v1::ListDirectoryResponse>
  ListDirectory(uint64_t id, uint64_t first_id, uint64_t max_new_ids) = 0;
};

// What a failed read of the mirror (`what`, for the log) is for the
// program that caused it: ENOSPC (no room in the cache) keeps its meaning;
// a broken connection or agent is an I/O error. Logged.
absl::Status MirrorReadError(const absl::Status& status,
                             absl::string_view what);

}  // namespace memfuse::fsd

#endif  // MEMFUSE_FSD_MIRROR_READER_H_
