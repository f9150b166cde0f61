// The entries of one directory, with readdir offsets that stay valid while
// the directory changes.
//
// Every entry gets a cookie from a counter when it is added; readdir resumes
// after the cookie of the last entry it returned, so entries removed or added
// meanwhile never make it skip or repeat a surviving entry (rm -rf of a huge
// directory removes everything). Cookies 1 and 2 are "." and "..".
//
// Not thread-safe: the Tree's mutex guards every Directory.
#ifndef MEMFUSE_FSD_DIRECTORY_H_
#define MEMFUSE_FSD_DIRECTORY_H_

#include <fuse_lowlevel.h>

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"

namespace memfuse::fsd {

class Directory {
 public:
  static constexpr uint64_t kFirstCookie = 3;

  struct Entry {
    std::string name;
    fuse_ino_t ino;
  };
  using Map = std::map<uint64_t, Entry>;  // cookie -> entry; nodes are stable

  Directory() = default;
  Directory(const Directory&) = delete;
  Directory& operator=(const Directory&) = delete;

  // The inode named `name`, or 0.
  fuse_ino_t Find(std::string_view name) const {
    auto it = by_name_.find(name);
    return it == by_name_.end() ? 0 : it->second->second.ino;
  }
  // REQUIRES: `name` is not present.
  void Add(std::string_view name, fuse_ino_t ino);
  // REQUIRES: `name` is present.
  void Remove(std::string_view name);
  // Points an existing name at another inode, keeping its cookie.
  // REQUIRES: `name` is present.
  void Replace(std::string_view name, fuse_ino_t ino);

  bool empty() const { return by_name_.empty(); }
  size_t size() const { return by_name_.size(); }
  // What the entries cost in memory: tree nodes, the name index, and names
  // too long to sit inside their string.
  uint64_t MemoryBytes() const;

  // The first entry whose cookie is greater than `cookie`.
  Map::const_iterator After(uint64_t cookie) const {
    return entries_.upper_bound(cookie);
  }
  Map::const_iterator end() const { return entries_.end(); }

 private:
  Map entries_;
  // Views into the names held by `entries_` nodes, which never move.
  absl::flat_hash_map<std::string_view, Map::iterator> by_name_;
  uint64_t next_cookie_ = kFirstCookie;
};

}  // namespace memfuse::fsd

#endif  // MEMFUSE_FSD_DIRECTORY_H_
