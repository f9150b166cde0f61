// One run of a piece of work per key at a time: a second asker for a key
// whose run is in flight waits for that run and shares its result instead
// of running it again (one read of a block, one listing of a directory,
// however many threads ask at once).
//
// Thread-safe: Do() may be called from any thread; the work runs on the
// first asker's thread with no lock of this class held.
#ifndef MEMFUSE_FSD_SINGLE_FLIGHT_H_
#define MEMFUSE_FSD_SINGLE_FLIGHT_H_

#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"

namespace memfuse::fsd {

template <typename Key>
class SingleFlight {
 public:
  // Runs `work` (returning absl::Status) for `key`, unless a run for it is
  // in flight already: then waits for that one and returns its result.
  template <typename Work>
  absl::Status Do(const Key& key, Work work) ABSL_LOCKS_EXCLUDED(mu_) {
    std::shared_ptr<Flight> flight;
    bool mine = false;
    {
      absl::MutexLock l(&mu_);
      auto [it, added] = flights_.try_emplace(key);
      if (added) it->second = std::make_shared<Flight>();
      flight = it->second;
      mine = added;
    }
    if (!mine) {
      flight->done.WaitForNotification();
      return flight->status;
    }
    const absl::Status status = work();
    {
      absl::MutexLock l(&mu_);
      flights_.erase(key);
    }
    flight->status = status;
    flight->done.Notify();
    return status;
  }

  // Whether a run for `key` is in flight now.
  bool InFlight(const Key& key) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock l(&mu_);
    return flights_.contains(key);
  }

 private:
  struct Flight {
    absl::Notification done;
    absl::Status status;
  };
  absl::Mutex mu_;
  absl::flat_hash_map<Key, std::shared_ptr<Flight>> flights_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace memfuse::fsd

#endif  // MEMFUSE_FSD_SINGLE_FLIGHT_H_
