// FaultEnv (fault_env.h): faults injected in front of a wrapped Env.
// Thread-safe: faults_ under mu_, delays slept without it.
#include "tests/testing/fault_env.h"

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace memfuse::testing {

using common::UniqueFd;

void FaultEnv::Fail(Call call, int err, int times) {
  absl::MutexLock l(&mu_);
  Fault& f = faults_[static_cast<size_t>(call)];
  f.err = err;
  f.times = times;
}

void FaultEnv::Delay(Call call, absl::Duration delay) {
  absl::MutexLock l(&mu_);
  faults_[static_cast<size_t>(call)].delay = delay;
}

void FaultEnv::Clear() {
  absl::MutexLock l(&mu_);
  for (Fault& f : faults_) {
    f.err = 0;
    f.times = 0;
    f.delay = absl::ZeroDuration();
  }
}

int FaultEnv::calls(Call call) const {
  absl::MutexLock l(&mu_);
  return faults_[static_cast<size_t>(call)].calls;
}

absl::Status FaultEnv::Enter(Call call, const char* name) {
  absl::Duration delay;
  int err = 0;
  {
    absl::MutexLock l(&mu_);
    Fault& f = faults_[static_cast<size_t>(call)];
    ++f.calls;
    delay = f.delay;
    if (f.err != 0 && f.times != 0) {
      err = f.err;
      if (f.times != kForever) --f.times;
    }
  }
  if (delay > absl::ZeroDuration()) absl::SleepFor(delay);
  if (err != 0) {
    return common::ErrnoStatus(err, absl::StrCat(name, " (injected)"));
  }
  return absl::OkStatus();
}

absl::Status FaultEnv::WriteAt(int fd, absl::string_view data,
                               uint64_t offset) {
  if (data.empty()) return absl::OkStatus();
  if (absl::Status s = Enter(Call::kWrite, "pwrite"); !s.ok()) return s;
  return base_->WriteAt(fd, data, offset);
}

absl::Status FaultEnv::Truncate(int fd, uint64_t size) {
  if (absl::Status s = Enter(Call::kTruncate, "ftruncate"); !s.ok()) return s;
  return base_->Truncate(fd, size);
}

absl::Status FaultEnv::PunchHole(int fd, uint64_t offset, uint64_t length) {
  if (absl::Status s = Enter(Call::kPunchHole, "fallocate"); !s.ok()) {
    return s;
  }
  return base_->PunchHole(fd, offset, length);
}

void FaultEnv::StartWriteback(int fd, uint64_t offset, uint64_t length) {
  base_->StartWriteback(fd, offset, length);
}

absl::Status FaultEnv::SyncFile(int fd) {
  if (absl::Status s = Enter(Call::kSync, "fsync"); !s.ok()) return s;
  return base_->SyncFile(fd);
}

absl::Status FaultEnv::SyncFilesystem(int fd) {
  if (absl::Status s = Enter(Call::kSync, "syncfs"); !s.ok()) return s;
  return base_->SyncFilesystem(fd);
}

absl::StatusOr<UniqueFd> FaultEnv::CreateFile(int dir, const std::string& name,
                                              mode_t mode) {
  if (absl::Status s = Enter(Call::kCreate, "openat"); !s.ok()) return s;
  return base_->CreateFile(dir, name, mode);
}

absl::Status FaultEnv::MakeDirectory(int dir, const std::string& name,
                                     mode_t mode) {
  if (absl::Status s = Enter(Call::kCreate, "mkdirat"); !s.ok()) return s;
  return base_->MakeDirectory(dir, name, mode);
}

absl::Status FaultEnv::MakeSymlink(const std::string& target, int dir,
                                   const std::string& name) {
  if (absl::Status s = Enter(Call::kCreate, "symlinkat"); !s.ok()) return s;
  return base_->MakeSymlink(target, dir, name);
}

absl::Status FaultEnv::MakeNode(int dir, const std::string& name, mode_t mode,
                                dev_t rdev) {
  if (absl::Status s = Enter(Call::kCreate, "mknodat"); !s.ok()) return s;
  return base_->MakeNode(dir, name, mode, rdev);
}

absl::Status FaultEnv::Link(int from_dir, const std::string& from, int to_dir,
                            const std::string& to) {
  if (absl::Status s = Enter(Call::kLink, "linkat"); !s.ok()) return s;
  return base_->Link(from_dir, from, to_dir, to);
}

absl::Status FaultEnv::Remove(int dir, const std::string& name,
                              bool directory) {
  if (absl::Status s = Enter(Call::kRemove, "unlinkat"); !s.ok()) return s;
  return base_->Remove(dir, name, directory);
}

absl::Status FaultEnv::Rename(int from_dir, const std::string& from,
                              int to_dir, const std::string& to,
                              unsigned flags) {
  if (absl::Status s = Enter(Call::kRename, "renameat2"); !s.ok()) return s;
  return base_->Rename(from_dir, from, to_dir, to, flags);
}

}  // namespace memfuse::testing
