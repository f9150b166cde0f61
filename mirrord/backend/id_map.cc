#include "mirrord/backend/id_map.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "mirrord/backend/confined_dir.h"

namespace memfuse::mirrord {

IdMap::IdMap(uint64_t root_id) : root_id_(root_id) {
  links_[root_id];  // the root has no name
}

void IdMap::Clear() {
  links_.clear();
  links_[root_id_];
}

absl::Status IdMap::AddLink(uint64_t id, uint64_t parent,
                            absl::string_view name) {
  RETURN_IF_ERROR(ValidateName(name));
  if (id == 0 || id == root_id_) {
    return absl::InvalidArgumentError(absl::StrCat("cannot link id ", id));
  }
  if (!links_.contains(parent)) {
    return absl::NotFoundError(absl::StrCat("unknown parent id ", parent));
  }
  std::vector<Link>& links = links_[id];
  for (const Link& l : links) {
    if (l.parent == parent && l.name == name) return absl::OkStatus();
  }
  links.push_back(Link{parent, std::string(name)});
  return absl::OkStatus();
}

absl::Status IdMap::RemoveLink(uint64_t id, uint64_t parent,
                               absl::string_view name) {
  auto it = links_.find(id);
  if (it == links_.end() || id == root_id_) {
    return absl::NotFoundError(absl::StrCat("unknown id ", id));
  }
  std::vector<Link>& links = it->second;
  auto link = std::find_if(links.begin(), links.end(), [&](const Link& l) {
    return l.parent == parent && l.name == name;
  });
  if (link == links.end()) {
    return absl::NotFoundError(
        absl::StrCat("id ", id, " has no name ", name, " in ", parent));
  }
  links.erase(link);
  if (links.empty()) links_.erase(it);
  return absl::OkStatus();
}

absl::Status IdMap::ReplaceLink(uint64_t id, uint64_t parent,
                                absl::string_view name, uint64_t new_parent,
                                absl::string_view new_name) {
  auto it = links_.find(id);
  if (it == links_.end()) {
    return absl::NotFoundError(absl::StrCat("unknown id ", id));
  }
  for (Link& l : it->second) {
    if (l.parent == parent && l.name == name) {
      l.parent = new_parent;
      l.name = std::string(new_name);
      return absl::OkStatus();
    }
  }
  return absl::NotFoundError(
      absl::StrCat("id ", id, " has no name ", name, " in ", parent));
}

bool IdMap::IsWithin(uint64_t id, uint64_t ancestor) const {
  for (int depth = 0; depth < kMaxDepth; ++depth) {
    if (id == ancestor) return true;
    if (id == root_id_) return false;
    auto it = links_.find(id);
    if (it == links_.end() || it->second.empty()) return false;
    id = it->second.front().parent;
  }
  return true;  // a loop: treat as "within" so nothing is moved into it
}

bool IdMap::HasLink(uint64_t id, uint64_t parent,
                    absl::string_view name) const {
  auto it = links_.find(id);
  if (it == links_.end()) return false;
  return std::any_of(it->second.begin(), it->second.end(), [&](const Link& l) {
    return l.parent == parent && l.name == name;
  });
}

absl::StatusOr<std::pair<uint64_t, std::string>> IdMap::FirstLink(
    uint64_t id) const {
  auto it = links_.find(id);
  if (it == links_.end() || it->second.empty()) {
    return absl::NotFoundError(absl::StrCat("unknown id ", id));
  }
  return std::make_pair(it->second.front().parent, it->second.front().name);
}

absl::Status IdMap::CheckRename(uint64_t id, uint64_t parent,
                                absl::string_view name, uint64_t new_parent,
                                absl::string_view new_name, uint64_t replaced,
                                bool exchange) const {
  RETURN_IF_ERROR(ValidateName(new_name));
  if (!links_.contains(new_parent)) {
    return absl::NotFoundError(absl::StrCat("unknown parent id ", new_parent));
  }
  if (IsWithin(new_parent, id) || (exchange && IsWithin(parent, replaced))) {
    return absl::InvalidArgumentError(
        absl::StrCat("id ", id, " cannot move below itself"));
  }
  if (exchange && replaced == 0) {
    return absl::InvalidArgumentError("exchange needs the other id");
  }
  if (!HasLink(id, parent, name)) {
    return absl::NotFoundError(
        absl::StrCat("id ", id, " has no name ", name, " in ", parent));
  }
  if (replaced != 0 && !HasLink(replaced, new_parent, new_name)) {
    return absl::NotFoundError(absl::StrCat("id ", replaced, " has no name ",
                                            new_name, " in ", new_parent));
  }
  return absl::OkStatus();
}

absl::Status IdMap::Rename(uint64_t id, uint64_t parent, absl::string_view name,
                           uint64_t new_parent, absl::string_view new_name,
                           uint64_t replaced, bool exchange) {
  // Everything that can fail is checked first: a failed rename leaves the
  // map as it was.
  RETURN_IF_ERROR(
      CheckRename(id, parent, name, new_parent, new_name, replaced, exchange));
  if (exchange) {
    // Through a placeholder so the two names never collide mid-swap.
    RETURN_IF_ERROR(ReplaceLink(id, parent, name, 0, {}));
    RETURN_IF_ERROR(ReplaceLink(replaced, new_parent, new_name, parent, name));
    return ReplaceLink(id, 0, {}, new_parent, new_name);
  }
  if (replaced != 0) {
    RETURN_IF_ERROR(RemoveLink(replaced, new_parent, new_name));
  }
  return ReplaceLink(id, parent, name, new_parent, new_name);
}

absl::StatusOr<IdMap::Location> IdMap::Locate(uint64_t id) const {
  Location location;
  std::vector<std::string> reversed;
  uint64_t at = id;
  for (int depth = 0; at != root_id_; ++depth) {
    if (depth == kMaxDepth) {
      return absl::InternalError(absl::StrCat("id ", id, ": path too deep"));
    }
    auto it = links_.find(at);
    if (it == links_.end() || it->second.empty()) {
      return absl::NotFoundError(absl::StrCat("unknown id ", at));
    }
    reversed.push_back(it->second.front().name);
    at = it->second.front().parent;
  }
  if (!reversed.empty()) {
    location.name = std::move(reversed.front());
    location.parent.assign(std::make_move_iterator(reversed.rbegin()),
                           std::make_move_iterator(reversed.rend() - 1));
  }
  return location;
}

}  // namespace memfuse::mirrord
