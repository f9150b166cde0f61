// The local backend's file data: writes (aligned pages with O_DIRECT,
// the rest through the page cache), punched holes, and reads of blocks.
// Thread-safety as LocalBackend's (local_backend.h).
#include "mirrord/backend/local_backend.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstring>

#include "absl/strings/cord.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/status.h"
#include "glog/logging.h"
#include "mirrord/backend/backend_common.h"
#include "mirrord/backend/mirror_limits.h"
#include "mirrord/backend/local_posix.h"

namespace memfuse::mirrord {

using common::ErrnoStatus;
using common::StatusToErrno;
using common::UniqueFd;
using namespace local;  // NOLINT: the backend's own POSIX mapping

// --- file data ---

absl::Status LocalBackend::ApplyWrite(const pb::Write& op) {
  absl::StatusOr<absl::string_view> bytes = WriteBytes(op);
  if (!bytes.ok()) return Invalid(bytes.status().message());
  const absl::string_view data = *bytes;
  // Both times 0: leave them alone (fsd's placeholder for a write whose
  // file went meanwhile carries neither data nor times).
  const bool set_times = op.atime_ns() != 0 || op.mtime_ns() != 0;
  if (data.empty() && !set_times) return absl::OkStatus();
  // Its size and range were checked by BackendBase::Apply.
  SharedFd fd;
  {
    absl::MutexLock l(&mu_);
    RETURN_IF_ERROR(CheckKnownLocked(op.id(), "file"));
    ASSIGN_OR_RETURN(fd, FileFdLocked(op.id()));
  }
  // The I/O, outside the lock: reads need not wait behind it.
  RETURN_IF_ERROR(WriteData(op.id(), fd, data, op.offset()));
  if (!set_times) return absl::OkStatus();
  // Writing set the mirror file's times to now; the mount's are older.
  // Both 0: an empty Write standing in for data of a file deleted since.
  if (op.atime_ns() == 0 && op.mtime_ns() == 0) return absl::OkStatus();
  const timespec times[2] = {ToTimespec(op.atime_ns()),
                             ToTimespec(op.mtime_ns())};
  if (futimens(fd->get(), times) != 0) return ErrnoStatus(errno, "futimens");
  return absl::OkStatus();
}

namespace {

// A page-aligned buffer of at least `size` bytes, one per thread, kept for
// the next write.
char* AlignedScratch(size_t size) {
  struct Scratch {
    char* bytes = nullptr;
    size_t size = 0;
    ~Scratch() { free(bytes); }
  };
  static thread_local Scratch scratch;
  if (scratch.size < size) {
    free(scratch.bytes);
    scratch.bytes = static_cast<char*>(aligned_alloc(4096, size));
    scratch.size = scratch.bytes != nullptr ? size : 0;
  }
  return scratch.bytes;
}

}  // namespace

absl::Status LocalBackend::ApplyPunchHole(const pb::PunchHole& op) {
  // Its range was checked by BackendBase::Apply.
  SharedFd fd;
  uint64_t block_size;
  {
    absl::MutexLock l(&mu_);
    RETURN_IF_ERROR(CheckKnownLocked(op.id(), "file"));
    ASSIGN_OR_RETURN(fd, FileFdLocked(op.id()));
    block_size = block_size_;
  }
  if (op.length() == 0) return absl::OkStatus();
  // The I/O, outside the lock, as for writes.
  const absl::Status punched =
      env_->PunchHole(fd->get(), op.offset(), op.length());
  if (punched.ok() || StatusToErrno(punched) != EOPNOTSUPP) return punched;
  // The mirror's filesystem cannot punch: the same bytes, as zeros, below
  // the file's size (which a punch keeps).
  struct stat st;
  if (fstat(fd->get(), &st) != 0) return ErrnoStatus(errno, "fstat");
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  const uint64_t end = std::min(size, op.offset() + op.length());
  const std::string zeros(block_size, '\0');
  for (uint64_t at = op.offset(); at < end;) {
    const uint64_t n = std::min<uint64_t>(end - at, block_size);
    RETURN_IF_ERROR(
        env_->WriteAt(fd->get(), absl::string_view(zeros.data(), n), at));
    at += n;
  }
  return absl::OkStatus();
}

LocalBackend::SharedFd LocalBackend::DirectFd(uint64_t id, const SharedFd& fd) {
  if (dio_align_.load(std::memory_order_relaxed) == kNoDirectIo) return {};
  if (SharedFd direct = direct_fds_.Get(id)) return direct;
  // Reopened through the descriptor, not by name: the same file, with no
  // lookup in the mirror. A file the agent may not open for writing again
  // (read-only, owned by someone else) is written through `fd` only.
  const std::string path = ProcFdPath(fd->get());
  UniqueFd direct(open(path.c_str(), O_RDWR | O_DIRECT | O_CLOEXEC));
  if (!direct.valid() && errno != EINVAL) {
    direct = UniqueFd(open(path.c_str(), O_WRONLY | O_DIRECT | O_CLOEXEC));
  }
  if (!direct.valid()) {
    if (errno == EINVAL) {
      LOG(INFO) << "the mirror's filesystem has no direct I/O; writing "
                   "through the page cache";
      dio_align_ = kNoDirectIo;
    }
    return {};
  }
  if (dio_align_.load(std::memory_order_relaxed) == 0) {
    struct statx stx = {};
    uint32_t align = 4096;
    if (statx(direct.get(), "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 &&
        (stx.stx_mask & STATX_DIOALIGN) != 0) {
      if (stx.stx_dio_offset_align == 0 || stx.stx_dio_mem_align > 4096) {
        dio_align_ = kNoDirectIo;
        return {};
      }
      align = std::max<uint32_t>(align, stx.stx_dio_offset_align);
    }
    dio_align_ = align;
  }
  return direct_fds_.Put(id, std::move(direct));
}

std::optional<absl::StatusOr<uint64_t>> LocalBackend::ReadDirect(
    uint64_t id, const SharedFd& fd, uint64_t offset, absl::Span<char> out) {
  if (out.size() < kMinDirectWrite) return std::nullopt;
  // Alignment is known once a descriptor was opened; 4096 satisfies every
  // filesystem STATX_DIOALIGN was checked against.
  const uint32_t known = dio_align_.load(std::memory_order_relaxed);
  if (known == kNoDirectIo) return std::nullopt;
  const uint64_t guess = known == 0 ? common::kRegionAlign : known;
  if (offset % guess != 0 || out.size() % guess != 0 ||
      reinterpret_cast<uintptr_t>(out.data()) % common::kRegionAlign != 0) {
    return std::nullopt;
  }
  SharedFd direct = DirectFd(id, fd);
  if (direct == nullptr) return std::nullopt;
  const uint64_t align = dio_align_.load(std::memory_order_relaxed);
  if (offset % align != 0 || out.size() % align != 0 ||
      (fcntl(direct->get(), F_GETFL) & O_ACCMODE) != O_RDWR) {
    return std::nullopt;
  }
  uint64_t done = 0;
  while (done < out.size()) {
    ssize_t n = pread(direct->get(), out.data() + done, out.size() - done,
                      static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EINVAL && done == 0) return std::nullopt;
      return ErrnoStatus(errno, "pread");
    }
    if (n == 0) break;
    done += n;
    // A short read that is not at a multiple of the alignment is the end
    // of the file; another read from there would be refused.
    if (done % align != 0) break;
  }
  return done;
}

absl::Status LocalBackend::WriteData(uint64_t id, const SharedFd& fd,
                                     absl::string_view data, uint64_t offset) {
  if (data.size() >= kMinDirectWrite) {
    // Whole aligned pages go to the disk straight from one copy in memory:
    // through the page cache a block costs a second copy and the kernel's
    // writeback later, which is most of the agent's work when draining.
    if (SharedFd direct = DirectFd(id, fd)) {
      const uint64_t align = dio_align_.load(std::memory_order_relaxed);
      const uint64_t end = offset + data.size();
      const uint64_t start = (offset + align - 1) / align * align;
      const uint64_t stop = end / align * align;
      const char* aligned = nullptr;
      if (stop > start && stop - start >= kMinDirectWrite) {
        aligned = data.data() + (start - offset);
        // Data from the shared region is laid out page-aligned already;
        // inline data is copied once into an aligned buffer.
        if (reinterpret_cast<uintptr_t>(aligned) % common::kRegionAlign != 0) {
          char* scratch = AlignedScratch(stop - start);
          if (scratch != nullptr) {
            std::memcpy(scratch, aligned, stop - start);
          }
          aligned = scratch;
        }
      }
      if (aligned != nullptr) {
        RETURN_IF_ERROR(
            env_->WriteAt(fd->get(), data.substr(0, start - offset), offset));
        absl::Status direct_status = env_->WriteAt(
            direct->get(), absl::string_view(aligned, stop - start), start);
        if (!direct_status.ok()) {
          // EINVAL: this file refuses direct I/O after all; the page
          // cache takes the data as it would have without it.
          if (StatusToErrno(direct_status) != EINVAL) {
            return direct_status;
          }
          direct_fds_.Erase(id);
          RETURN_IF_ERROR(
              env_->WriteAt(fd->get(), data.substr(start - offset), start));
          return absl::OkStatus();
        }
        return env_->WriteAt(fd->get(), data.substr(stop - offset), stop);
      }
    }
  }
  RETURN_IF_ERROR(env_->WriteAt(fd->get(), data, offset));
  // Start the disk write now, without waiting for it: a Sync barrier (or
  // the drain at exit) then finds most of the data already on disk instead
  // of flushing it all at the end.
  if (!data.empty()) {
    env_->StartWriteback(fd->get(), offset, data.size());
  }
  return absl::OkStatus();
}


absl::StatusOr<uint64_t> LocalBackend::ReadBytes(
    const pb::ReadBlockRequest& request, absl::Span<char> out) {
  SharedFd fd;
  {
    absl::MutexLock l(&mu_);
    RETURN_IF_ERROR(CheckKnownLocked(request.id(), "file"));
    absl::StatusOr<SharedFd> rw = FileFdLocked(request.id());
    if (rw.ok()) {
      fd = std::move(*rw);
    } else {
      // A read-only mirror (or file): read without caching.
      const int err = StatusToErrno(rw.status());
      if (err != EROFS && err != EACCES && err != ETXTBSY) return rw.status();
      ASSIGN_OR_RETURN(Entry entry, EntryLocked(request.id()));
      ASSIGN_OR_RETURN(UniqueFd ro, dir_.OpenLeaf(entry.dir->get(), entry.name,
                                                  O_RDONLY | O_NONBLOCK));
      fd = std::make_shared<const UniqueFd>(std::move(ro));
    }
  }
  const size_t length = out.size();
  // Straight from the disk into fsd's range: through the page cache a
  // block would cost one more copy, and be cached twice (fsd is the cache).
  if (std::optional<absl::StatusOr<uint64_t>> direct =
          ReadDirect(request.id(), fd, request.offset(), out)) {
    return *direct;
  }
  size_t done = 0;
  while (done < length) {
    ssize_t n = pread(fd->get(), out.data() + done, length - done,
                      static_cast<off_t>(request.offset() + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "pread");
    }
    if (n == 0) break;  // end of file
    done += n;
  }
  return done;
}

}  // namespace memfuse::mirrord
