// Where each object fsd names by id lives in a path-based mirror.
//
// fsd names every object by a stable id (DESIGN.md, invariant 2). mirrord
// keeps, for each id, the names it has in the mirror (parent id and name; a
// file with hard links has several, a directory exactly one) and resolves an
// id to a path only when applying a mutation, after every earlier mutation
// has updated the map. So a rename of a directory is one update here, and a
// write queued for a file deep inside it still lands on that file.
//
// Not thread-safe: the single thread that applies mutations in order owns it.
#ifndef MEMFUSE_MIRRORD_BACKEND_ID_MAP_H_
#define MEMFUSE_MIRRORD_BACKEND_ID_MAP_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace memfuse::mirrord {

class IdMap {
 public:
  // Deeper than any real tree; a longer walk means a corrupted map.
  static constexpr int kMaxDepth = 4096;

  struct Location {
    std::vector<std::string> parent;  // components of the parent directory
    std::string name;                 // empty for the root
  };

  explicit IdMap(uint64_t root_id);

  // Forgets every object except the root.
  void Clear();

  bool Contains(uint64_t id) const { return links_.contains(id); }

  // Whether `id` is named `name` in directory `parent`.
  bool HasLink(uint64_t id, uint64_t parent, absl::string_view name) const;

  // The first name of `id` (the one Locate() goes through): its parent id
  // and name. NOT_FOUND for an unknown id and for the root.
  absl::StatusOr<std::pair<uint64_t, std::string>> FirstLink(
      uint64_t id) const;

  // Records that `id` is named `name` in directory `parent` (a create, a
  // hard link, or an entry found when listing). NOT_FOUND for an unknown
  // parent, INVALID_ARGUMENT for a bad name or id.
  absl::Status AddLink(uint64_t id, uint64_t parent, absl::string_view name);

  // Forgets the name `name` in `parent`, which must belong to `id`; the id
  // itself is forgotten with its last name.
  absl::Status RemoveLink(uint64_t id, uint64_t parent, absl::string_view name);

  // Forgets every name of `id` (not the root): a repair binds it anew.
  void Forget(uint64_t id) {
    if (id != root_id_) links_.erase(id);
  }

  // Moves the name (parent, name) of `id` to (new_parent, new_name); a
  // `replaced` id (nonzero) loses that name. With `exchange`, `replaced`
  // takes (parent, name) instead. INVALID_ARGUMENT for a directory moved
  // below itself.
  absl::Status Rename(uint64_t id, uint64_t parent, absl::string_view name,
                      uint64_t new_parent, absl::string_view new_name,
                      uint64_t replaced, bool exchange);

  // What Rename() with these arguments would return, without changing
  // anything: lets a caller check before it renames in the mirror itself.
  absl::Status CheckRename(uint64_t id, uint64_t parent,
                           absl::string_view name, uint64_t new_parent,
                           absl::string_view new_name, uint64_t replaced,
                           bool exchange) const;

  // Where `id` is now, through its first name.
  absl::StatusOr<Location> Locate(uint64_t id) const;

 private:
  struct Link {
    uint64_t parent;
    std::string name;
  };

  absl::Status ReplaceLink(uint64_t id, uint64_t parent,
                           absl::string_view name, uint64_t new_parent,
                           absl::string_view new_name);
  // True if `id` is `ancestor` or below it, by first names.
  bool IsWithin(uint64_t id, uint64_t ancestor) const;

  const uint64_t root_id_;
  absl::flat_hash_map<uint64_t, std::vector<Link>> links_;
};

}  // namespace memfuse::mirrord

#endif  // MEMFUSE_MIRRORD_BACKEND_ID_MAP_H_
