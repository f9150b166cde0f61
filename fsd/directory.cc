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

}  // namespace memfuse::fsd
