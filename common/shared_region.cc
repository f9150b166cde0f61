#include "common/shared_region.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace memfuse::common {
namespace {

constexpr int kSizeSeals = F_SEAL_SHRINK | F_SEAL_GROW;

uint64_t RoundUp(uint64_t n) {
  return (n + kRegionAlign - 1) / kRegionAlign * kRegionAlign;
}

}  // namespace

absl::StatusOr<std::unique_ptr<SharedRegion>> SharedRegion::Create(
    uint64_t size) {
  size = RoundUp(size);
  UniqueFd fd(memfd_create("mem-fuse-data", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd.valid()) return ErrnoStatus(errno, "memfd_create");
  if (ftruncate(fd.get(), static_cast<off_t>(size)) != 0) {
    return ErrnoStatus(errno, "ftruncate of the data region");
  }
  if (fcntl(fd.get(), F_ADD_SEALS, kSizeSeals | F_SEAL_SEAL) != 0) {
    return ErrnoStatus(errno, "sealing the data region");
  }
  void* data =
      mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (data == MAP_FAILED) return ErrnoStatus(errno, "mmap of the data region");
  return std::unique_ptr<SharedRegion>(
      new SharedRegion(std::move(fd), static_cast<char*>(data), size));
}

SharedRegion::~SharedRegion() { munmap(data_, size_); }

std::optional<uint64_t> RegionAllocator::Allocate(uint64_t length) {
  length = RoundUp(length > 0 ? length : 1);
  absl::MutexLock l(&mu_);
  if (length > size_) return std::nullopt;
  uint64_t offset = 0;
  if (!ranges_.empty()) {
    const uint64_t head = ranges_.back().offset + ranges_.back().length;
    const uint64_t tail = ranges_.front().offset;
    if (head > tail) {  // in use: [tail, head); free: [head, size), [0, tail)
      if (head + length <= size_) {
        offset = head;
      } else if (length <= tail) {
        offset = 0;
      } else {
        return std::nullopt;
      }
    } else {  // wrapped: free is [head, tail)
      if (head + length > tail) return std::nullopt;
      offset = head;
    }
  }
  ranges_.push_back(Range{offset, length, false});
  used_ += length;
  return offset;
}

void RegionAllocator::Free(uint64_t offset) {
  absl::MutexLock l(&mu_);
  for (Range& r : ranges_) {
    if (r.offset == offset && !r.freed) {
      r.freed = true;
      used_ -= r.length;
      break;
    }
  }
  while (!ranges_.empty() && ranges_.front().freed) ranges_.pop_front();
}

uint64_t RegionAllocator::used() {
  absl::MutexLock l(&mu_);
  return used_;
}

absl::StatusOr<std::unique_ptr<MappedRegion>> MappedRegion::Map(UniqueFd fd) {
  const int seals = fcntl(fd.get(), F_GET_SEALS);
  if (seals < 0) {
    return ErrnoStatus(errno, "the data region is not a sealable memfd");
  }
  if ((seals & kSizeSeals) != kSizeSeals) {
    return absl::InvalidArgumentError(
        "the data region's size is not sealed; refusing to map it");
  }
  struct stat st;
  if (fstat(fd.get(), &st) != 0) return ErrnoStatus(errno, "fstat");
  if (st.st_size <= 0) {
    return absl::InvalidArgumentError("the data region is empty");
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  void* data =
      mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (data == MAP_FAILED) return ErrnoStatus(errno, "mmap of the data region");
  // The mapping keeps the memory; the descriptor is not needed any more.
  return std::unique_ptr<MappedRegion>(
      new MappedRegion(static_cast<char*>(data), size));
}

MappedRegion::~MappedRegion() {
  munmap(data_, size_);
}

absl::StatusOr<absl::string_view> MappedRegion::View(uint64_t offset,
                                                     uint64_t length) const {
  if (offset > size_ || length > size_ - offset) {
    return absl::InvalidArgumentError(
        absl::StrCat("data region range [", offset, ", +", length,
                     ") is outside its ", size_, " bytes"));
  }
  return absl::string_view(data_ + offset, length);
}

absl::StatusOr<absl::Span<char>> MappedRegion::MutableView(
    uint64_t offset, uint64_t length) const {
  RETURN_IF_ERROR(View(offset, length).status());
  return absl::Span<char>(data_ + offset, length);
}

}  // namespace memfuse::common
