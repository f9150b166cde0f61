// The data region fsd shares with the mirror agent it spawned.
//
// File data on its way to and from the mirror is the bulk of what crosses
// the agent's socket. When fsd spawns the agent itself it also hands it a
// sealed memfd: fsd copies a block into the region once and sends only
// (offset, length), and the agent writes the mirror file straight from its
// mapping; for a block read back, fsd names a free range and the agent
// reads the mirror file into it. No serialization, no socket copies, no
// copy into an aligned buffer for direct I/O. An agent reached through
// --mirror-socket has no region and sends and gets the bytes inline.
//
// The region's size is sealed (F_SEAL_SHRINK | F_SEAL_GROW): the agent
// refuses one that is not, so fsd cannot make the agent's mapping fault.
// The agent bounds-checks every range it is given. It writes only into
// ranges fsd named for a read; the region only ever holds copies (fsd's
// blocks stay in fsd's own memory), so a misbehaving agent can spoil the
// data it is handed, which it could anyway, but not fsd's state.
#ifndef MEMFUSE_COMMON_SHARED_REGION_H_
#define MEMFUSE_COMMON_SHARED_REGION_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "absl/synchronization/mutex.h"
#include "common/unique_fd.h"

namespace memfuse::common {

// Ranges handed out are aligned to this, so whole pages of a block sit on
// page boundaries and can go to O_DIRECT without a copy.
inline constexpr uint64_t kRegionAlign = 4096;

// fsd's side: a writable, size-sealed memfd mapping.
class SharedRegion {
 public:
  // A region of `size` bytes (rounded up to kRegionAlign).
  static absl::StatusOr<std::unique_ptr<SharedRegion>> Create(uint64_t size);
  ~SharedRegion();
  SharedRegion(const SharedRegion&) = delete;
  SharedRegion& operator=(const SharedRegion&) = delete;

  int fd() const { return fd_.get(); }
  uint64_t size() const { return size_; }
  char* data() const { return data_; }

 private:
  SharedRegion(UniqueFd fd, char* data, uint64_t size)
      : fd_(std::move(fd)), data_(data), size_(size) {}

  UniqueFd fd_;
  char* const data_;
  const uint64_t size_;
};

// Hands out aligned ranges of a region in a ring: allocation at the head,
// space comes back as the oldest ranges are freed (ranges freed out of
// order wait for the ones before them). Thread-safe.
class RegionAllocator {
 public:
  explicit RegionAllocator(uint64_t size) : size_(size) {}

  // The offset of `length` contiguous bytes, or nullopt when the ring has
  // no such room now (the caller sends inline instead; it never waits).
  std::optional<uint64_t> Allocate(uint64_t length) ABSL_LOCKS_EXCLUDED(mu_);
  // REQUIRES: `offset` came from Allocate and was not freed yet.
  void Free(uint64_t offset) ABSL_LOCKS_EXCLUDED(mu_);

  uint64_t used() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Range {
    uint64_t offset;
    uint64_t length;  // rounded up to kRegionAlign
    bool freed;
  };

  const uint64_t size_;
  absl::Mutex mu_;
  std::deque<Range> ranges_ ABSL_GUARDED_BY(mu_);  // oldest first
  uint64_t used_ ABSL_GUARDED_BY(mu_) = 0;
};

// The agent's side: a mapping of the region fsd passed.
class MappedRegion {
 public:
  // Maps `fd` (taking it). Refuses a descriptor that is not a memfd sealed
  // against shrinking and growing.
  static absl::StatusOr<std::unique_ptr<MappedRegion>> Map(UniqueFd fd);
  ~MappedRegion();
  MappedRegion(const MappedRegion&) = delete;
  MappedRegion& operator=(const MappedRegion&) = delete;

  uint64_t size() const { return size_; }
  // [offset, offset+length) of the region; INVALID_ARGUMENT when outside.
  absl::StatusOr<absl::string_view> View(uint64_t offset,
                                         uint64_t length) const;
  // The same range, to read a block into.
  absl::StatusOr<absl::Span<char>> MutableView(uint64_t offset,
                                               uint64_t length) const;

 private:
  MappedRegion(char* data, uint64_t size) : data_(data), size_(size) {}

  char* const data_;
  const uint64_t size_;
};

}  // namespace memfuse::common

#endif  // MEMFUSE_COMMON_SHARED_REGION_H_
