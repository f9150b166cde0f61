// The reads fsd makes of the mirror, through the agent: blocks of files it
// does not hold and listings of directories it has not loaded (the Tree's
// MirrorReader), and the mirror's capacity for statfs(2). A block comes
// through the data region when the agent has mapped it.
//
// Thread-safe: called from FUSE worker and readahead threads, with no lock
// of the Tree's held. Reads wait for an agent that is restarting
// (MirrorChannel::kCallTimeout); statfs never does.
#ifndef MEMFUSE_FSD_MIRROR_READS_H_
#define MEMFUSE_FSD_MIRROR_READS_H_

#include <cstdint>
#include <optional>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "fsd/mirror_channel.h"
#include "fsd/mirror_reader.h"

namespace memfuse::fsd {

class MirrorReads : public MirrorReader {
 public:
  explicit MirrorReads(MirrorChannel* channel) : channel_(channel) {}
  MirrorReads(const MirrorReads&) = delete;
  MirrorReads& operator=(const MirrorReads&) = delete;

  absl::StatusOr<uint64_t> ReadBlock(uint64_t id, uint64_t offset,
                                     uint64_t length, char* out) override;
  absl::StatusOr<pb::ListDirectoryResponse> ListDirectory(
      uint64_t id, uint64_t first_id, uint64_t max_new_ids) override;

  // The mirror's capacity. Asks the agent at most about once a second
  // (`df` in a loop costs it nothing) and never waits long for it: while
  // one caller asks, or when the agent cannot answer (restarting, gone),
  // the last answer stands; nullopt until a first one came.
  std::optional<pb::StatFsResponse> StatFs() ABSL_LOCKS_EXCLUDED(statfs_mu_);

 private:
  MirrorChannel* const channel_;

  // StatFs()'s last answer and when it was last asked for. Never held
  // across the call to the agent.
  absl::Mutex statfs_mu_;
  std::optional<pb::StatFsResponse> statfs_ ABSL_GUARDED_BY(statfs_mu_);
  absl::Time statfs_asked_ ABSL_GUARDED_BY(statfs_mu_) = absl::InfinitePast();
  bool statfs_asking_ ABSL_GUARDED_BY(statfs_mu_) = false;
};

}  // namespace memfuse::fsd

#endif  // MEMFUSE_FSD_MIRROR_READS_H_
