#include "fsd/directory.h"

#include "glog/logging.h"

namespace memfuse::fsd {

void Directory::Add(std::string_view name, fuse_ino_t ino) {
  auto [it, inserted] =
      entries_.emplace(next_cookie_++, Entry{std::string(name), ino});
  CHECK(inserted);
  CHECK(by_name_.emplace(it->second.name, it).second)
      << "duplicate directory entry " << name;
}

void Directory::Remove(std::string_view name) {
  auto it = by_name_.find(name);
  CHECK(it != by_name_.end()) << "removing absent entry " << name;
  Map::iterator entry = it->second;
  by_name_.erase(it);  // before the string its key views is freed
  entries_.erase(entry);
}

void Directory::Replace(std::string_view name, fuse_ino_t ino) {
  auto it = by_name_.find(name);
  CHECK(it != by_name_.end()) << "replacing absent entry " << name;
  it->second->second.ino = ino;
}

uint64_t Directory::MemoryBytes() const {
  // A std::map node is the value plus three pointers and a colour word.
  constexpr uint64_t kNodeBytes = sizeof(Map::value_type) + 4 * sizeof(void*);
  uint64_t bytes = sizeof(*this) + entries_.size() * kNodeBytes +
                   by_name_.capacity() *
                       (sizeof(decltype(by_name_)::value_type) + 1);
  const uint64_t inline_capacity = std::string().capacity();
  for (const auto& [cookie, entry] : entries_) {
    if (entry.name.capacity() > inline_capacity) {
      bytes += entry.name.capacity() + 1;
    }
  }
  return bytes;
}

}  // namespace memfuse::fsd
