// A fake of the mirror as fsd reads it (fsd/mirror_reader.h), for unit
// tests of the Tree and the block fetcher: no agent, no gRPC.
//
// Thread-safe.
#ifndef MEMFUSE_TESTS_UNIT_FSD_FAKE_READER_H_
#define MEMFUSE_TESTS_UNIT_FSD_FAKE_READER_H_

#include <cerrno>
#include <cstdint>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/status.h"
#include "fsd/mirror_reader.h"

namespace memfuse::fsd::testing {

// The byte at `offset` of mirror file `id`.
inline char MirrorByte(uint64_t id, uint64_t offset) {
  return static_cast<char>((id * 31 + offset / 7) & 0xff);
}

// The mirror as fsd reads it: every file holds MirrorByte() bytes up to
// the size it was loaded with, until the test says the mirror applied its
// removal. A read of one file can be held on a latch.
class FakeReader : public MirrorReader {
 public:
  absl::StatusOr<uint64_t> ReadBlock(uint64_t id, uint64_t offset,
                                     uint64_t length, char* out) override {
    bool hold = false;
    {
      absl::MutexLock l(&mu_);
      ++reads_;
      if (id == held_id_ && !held_once_) {
        held_once_ = true;
        hold = true;
      }
    }
    if (hold) {
      entered_.Notify();
      release_.WaitForNotification();
    }
    absl::MutexLock l(&mu_);
    if (!failure_.ok()) return failure_;
    if (dropped_.contains(id)) {
      return common::ErrnoStatus(ENOENT, "dropped by the mirror");
    }
    for (uint64_t i = 0; i < length; ++i) out[i] = MirrorByte(id, offset + i);
    return length;
  }
  absl::StatusOr<pb::ListDirectoryResponse> ListDirectory(uint64_t, uint64_t,
                                                          uint64_t) override {
    return pb::ListDirectoryResponse();
  }

  // The first read of `id` waits for Release().
  void HoldFirstReadOf(uint64_t id) {
    absl::MutexLock l(&mu_);
    held_id_ = id;
  }
  bool WaitHeld() { return entered_.WaitForNotificationWithTimeout(absl::Seconds(10)); }
  void Release() {
    if (!release_.HasBeenNotified()) release_.Notify();
  }
  // The mirror applied the removal of `id`'s last name: its bytes are gone.
  void Drop(uint64_t id) {
    absl::MutexLock l(&mu_);
    dropped_.insert(id);
  }
  // Every read fails with `status` from now on.
  void FailWith(absl::Status status) {
    absl::MutexLock l(&mu_);
    failure_ = std::move(status);
  }
  int reads() {
    absl::MutexLock l(&mu_);
    return reads_;
  }

 private:
  absl::Mutex mu_;
  absl::flat_hash_set<uint64_t> dropped_ ABSL_GUARDED_BY(mu_);
  uint64_t held_id_ ABSL_GUARDED_BY(mu_) = 0;
  bool held_once_ ABSL_GUARDED_BY(mu_) = false;
  int reads_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status failure_ ABSL_GUARDED_BY(mu_);
  absl::Notification entered_;
  absl::Notification release_;
};

}  // namespace memfuse::fsd::testing

#endif  // MEMFUSE_TESTS_UNIT_FSD_FAKE_READER_H_
