// A bounded cache of open descriptors of mirror objects, keyed by object id.
//
// A mirror may hold millions of objects while a process may hold at most a
// few thousand descriptors (20,000 on these machines), so mirrord never keeps
// one per object: it keeps the most recently used `capacity` and reopens the
// rest on demand. An open descriptor follows its inode through renames, so
// entries stay valid when names change; callers Erase() an id when its last
// name goes. Descriptors are shared: one evicted while a caller still uses it
// is closed when that caller lets go, never under it.
//
// Thread-safe.
#ifndef MEMFUSE_MIRRORD_BACKEND_FD_CACHE_H_
#define MEMFUSE_MIRRORD_BACKEND_FD_CACHE_H_

#include <cstdint>
#include <list>
#include <memory>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "common/unique_fd.h"

namespace memfuse::mirrord {

class FdCache {
 public:
  using SharedFd = std::shared_ptr<const common::UniqueFd>;

  // Holds at most max(`capacity`, 1) descriptors.
  explicit FdCache(size_t capacity) : capacity_(capacity > 0 ? capacity : 1) {}
  FdCache(const FdCache&) = delete;
  FdCache& operator=(const FdCache&) = delete;

  // The cached descriptor of `id` (now the most recently used), or null.
  SharedFd Get(uint64_t id) ABSL_LOCKS_EXCLUDED(mu_);
  // Caches `fd` for `id`, replacing any previous one, evicting the least
  // recently used entry when full. Returns the shared descriptor.
  SharedFd Put(uint64_t id, common::UniqueFd fd) ABSL_LOCKS_EXCLUDED(mu_);
  void Erase(uint64_t id) ABSL_LOCKS_EXCLUDED(mu_);
  // Drops every entry (a new session's ids mean other objects).
  void Clear() ABSL_LOCKS_EXCLUDED(mu_);

  size_t size() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  using Lru = std::list<std::pair<uint64_t, SharedFd>>;  // front: newest

  const size_t capacity_;
  absl::Mutex mu_;
  Lru lru_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, Lru::iterator> by_id_ ABSL_GUARDED_BY(mu_);
};

}  // namespace memfuse::mirrord

#endif  // MEMFUSE_MIRRORD_BACKEND_FD_CACHE_H_
