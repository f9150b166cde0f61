// Env::Default(): the POSIX calls, each errno turned into a Status once.
// Thread-safe: it holds no state.
#include "mirrord/backend/env.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "common/status.h"

namespace memfuse::mirrord {
namespace {

using common::ErrnoStatus;
using common::UniqueFd;

absl::Status Result(int r, const char* call) {
  if (r != 0) return ErrnoStatus(errno, call);
  return absl::OkStatus();
}

class PosixEnv final : public Env {
 public:
  absl::Status WriteAt(int fd, absl::string_view data,
                       uint64_t offset) override {
    size_t done = 0;
    while (done < data.size()) {
      ssize_t n = pwrite(fd, data.data() + done, data.size() - done,
                         static_cast<off_t>(offset + done));
      if (n < 0) {
        if (errno == EINTR) continue;
        return ErrnoStatus(errno, "pwrite");
      }
      if (n == 0) return ErrnoStatus(EIO, "pwrite wrote nothing");
      done += n;
    }
    return absl::OkStatus();
  }
  absl::Status Truncate(int fd, uint64_t size) override {
    return Result(ftruncate(fd, static_cast<off_t>(size)), "ftruncate");
  }
  absl::Status PunchHole(int fd, uint64_t offset, uint64_t length) override {
    return Result(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                            static_cast<off_t>(offset),
                            static_cast<off_t>(length)),
                  "fallocate");
  }
  void StartWriteback(int fd, uint64_t offset, uint64_t length) override {
    sync_file_range(fd, static_cast<off_t>(offset), static_cast<off_t>(length),
                    SYNC_FILE_RANGE_WRITE);
  }

  absl::Status SyncFile(int fd) override { return Result(fsync(fd), "fsync"); }
  absl::Status SyncFilesystem(int fd) override {
    return Result(syncfs(fd), "syncfs");
  }

  absl::StatusOr<UniqueFd> CreateFile(int dir, const std::string& name,
                                      mode_t mode) override {
    UniqueFd fd(openat(
        dir, name.c_str(),
        O_CREAT | O_EXCL | O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, mode));
    if (!fd.valid()) return ErrnoStatus(errno, "openat");
    return fd;
  }
  absl::Status MakeDirectory(int dir, const std::string& name,
                             mode_t mode) override {
    return Result(mkdirat(dir, name.c_str(), mode), "mkdirat");
  }
  absl::Status MakeSymlink(const std::string& target, int dir,
                           const std::string& name) override {
    return Result(symlinkat(target.c_str(), dir, name.c_str()), "symlinkat");
  }
  absl::Status MakeNode(int dir, const std::string& name, mode_t mode,
                        dev_t rdev) override {
    return Result(mknodat(dir, name.c_str(), mode, rdev), "mknodat");
  }
  absl::Status Link(int from_dir, const std::string& from, int to_dir,
                    const std::string& to) override {
    return Result(linkat(from_dir, from.c_str(), to_dir, to.c_str(), 0),
                  "linkat");
  }
  absl::Status Remove(int dir, const std::string& name,
                      bool directory) override {
    return Result(unlinkat(dir, name.c_str(), directory ? AT_REMOVEDIR : 0),
                  "unlinkat");
  }
  absl::Status Rename(int from_dir, const std::string& from, int to_dir,
                      const std::string& to, unsigned flags) override {
    return Result(renameat2(from_dir, from.c_str(), to_dir, to.c_str(), flags),
                  "renameat2");
  }
};

}  // namespace

Env* Env::Default() {
  static Env* const env = new PosixEnv();
  return env;
}

}  // namespace memfuse::mirrord
