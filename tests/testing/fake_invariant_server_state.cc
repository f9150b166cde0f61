// FakeInvariantServer's tree and its lifetime: finding and checking nodes,
// making and unlinking them, their content info, saving (at a sync, on
// Save() and on the save timer), restarting from the saved tree under new
// ids, and the bookkeeping of unsaved writes that overlap.
//
// Thread-safety: every *Locked function REQUIRES mu_ (see the header's
// annotations). Restart(), Save(), UnsavedChanges() and NodeCount() take
// it and may run on any thread; SaverLoop runs on the save timer's thread
// and holds mu_ except while it waits; Restart(down) runs on the test's
// thread, as Start and Stop do.
#include "tests/testing/fake_invariant_server.h"

#include <algorithm>
#include <iterator>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "tests/testing/fake_invariant_server_internal.h"

namespace memfuse::testing {
namespace {

using fake_invariant_internal::EtagOf;
using fake_invariant_internal::Json;
using fake_invariant_internal::kUnrecognizedNode;
using fake_invariant_internal::NowMs;

}  // namespace

void FakeInvariantServer::Restart() {
  absl::MutexLock lock(&mu_);
  // What was not saved is lost, the ids go with it; the counter of ids goes
  // on from the live tree's, so that no old id names a node again.
  nodes_.clear();
  nodes_.reserve(saved_.size());
  for (const auto& [id, node] : saved_) {
    nodes_.emplace(id, std::make_unique<Node>(*node));
  }
  unsaved_writes_.clear();
  unsaved_changes_ = 0;
  RenumberLocked();
  // The server has just loaded this tree: it is what a restart now would
  // start from, under the new ids.
  SnapshotLocked();
}

void FakeInvariantServer::Save() {
  absl::MutexLock lock(&mu_);
  SaveLocked();
}

void FakeInvariantServer::SaverLoop() {
  absl::MutexLock lock(&mu_);
  absl::Time next = absl::Now() + options_.save_interval;
  while (!mu_.AwaitWithDeadline(absl::Condition(&saver_quit_), next)) {
    // An idle server has nothing to save; the real one writes nothing then
    // either, and SaveCount stays meaningful.
    if (unsaved_changes_ > 0) SaveLocked();
    next = std::max(next + options_.save_interval, absl::Now());
  }
}

absl::Status FakeInvariantServer::Restart(absl::Duration down) {
  Stop();
  Restart();
  // The downtime itself is what is simulated here.
  absl::SleepFor(down);
  return Start();
}

int64_t FakeInvariantServer::UnsavedChanges() const {
  absl::MutexLock lock(&mu_);
  return unsaved_changes_;
}

size_t FakeInvariantServer::NodeCount() const {
  absl::MutexLock lock(&mu_);
  return nodes_.size();
}

FakeInvariantServer::Node* FakeInvariantServer::FindLocked(uint64_t id) {
  auto it = nodes_.find(id);
  return it == nodes_.end() ? nullptr : it->second.get();
}

FakeInvariantServer::Node* FakeInvariantServer::DirectoryLocked(uint64_t id,
                                                                bool to_change,
                                                                Reply* error) {
  Node* node = FindLocked(id);
  if (node == nullptr) {
    *error = Reply::Text(400, kUnrecognizedNode);
  } else if (node->kind != InvariantKind::kDirectory) {
    *error = Reply::Text(400, "Node is not a directory");
  } else if (to_change && !node->writable) {
    *error = Reply::Text(400, "Node is not writable");
  } else {
    return node;
  }
  return nullptr;
}

FakeInvariantServer::Node* FakeInvariantServer::FileLocked(uint64_t id,
                                                           bool to_change,
                                                           Reply* error) {
  Node* node = FindLocked(id);
  if (node == nullptr) {
    *error = Reply::Text(400, kUnrecognizedNode);
  } else if (node->kind != InvariantKind::kFile) {
    *error = Reply::Text(400, "Node is not a file");
  } else if (to_change && !node->writable) {
    *error = Reply::Text(400, "Node is not writable");
  } else {
    return node;
  }
  return nullptr;
}

uint64_t FakeInvariantServer::NewNodeLocked(InvariantKind kind) {
  auto node = std::make_unique<Node>();
  node->id = next_id_++;
  node->kind = kind;
  node->create_ms = node->modify_ms = NowMs();
  node->etag = EtagOf(kind, "");
  const uint64_t id = node->id;
  nodes_.emplace(id, std::move(node));
  return id;
}

void FakeInvariantServer::UnlinkLocked(uint64_t id) {
  std::vector<uint64_t> pending = {id};
  while (!pending.empty()) {
    const uint64_t n = pending.back();
    pending.pop_back();
    auto it = nodes_.find(n);
    if (it == nodes_.end()) continue;
    if (--it->second->links > 0) continue;
    for (const auto& [name, child] : it->second->entries) {
      pending.push_back(child);
    }
    unsaved_writes_.erase(n);
    nodes_.erase(it);
  }
}

bool FakeInvariantServer::ContainsLocked(uint64_t dir, uint64_t node) {
  std::vector<uint64_t> pending = {dir};
  while (!pending.empty()) {
    const uint64_t n = pending.back();
    pending.pop_back();
    if (n == node) return true;
    if (const Node* d = FindLocked(n); d != nullptr) {
      for (const auto& [name, child] : d->entries) pending.push_back(child);
    }
  }
  return false;
}

nlohmann::ordered_json FakeInvariantServer::InfoJsonLocked(
    const Node& node) const {
  Json j;
  j["node"] = node.id;
  j["kind"] = std::string(InvariantKindName(node.kind));
  j["modifyTime"] = node.modify_ms;
  j["createTime"] = node.create_ms;
  j["executable"] = node.executable;
  j["writable"] = node.writable;
  j["etag"] = node.etag;
  if (node.kind == InvariantKind::kSymbolicLink) {
    j["target"] = node.target;
  } else {
    j["size"] = node.kind == InvariantKind::kFile ? node.data.size() : 0;
  }
  return j;
}

void FakeInvariantServer::SaveLocked() {
  // Post-order from the root: a directory's etag covers its entries' names
  // and etags. Hard-linked nodes are computed once.
  absl::flat_hash_set<uint64_t> done;
  std::vector<std::pair<uint64_t, bool>> stack = {{kRootNode, false}};
  while (!stack.empty()) {
    auto [id, children_done] = stack.back();
    stack.pop_back();
    Node* node = FindLocked(id);
    if (node == nullptr || done.contains(id)) continue;
    if (node->kind == InvariantKind::kFile) {
      node->etag = EtagOf(node->data);
      done.insert(id);
    } else if (node->kind == InvariantKind::kSymbolicLink) {
      node->etag = EtagOf(node->kind, node->target);
      done.insert(id);
    } else if (!children_done) {
      stack.push_back({id, true});
      for (const auto& [name, child] : node->entries) {
        stack.push_back({child, false});
      }
    } else {
      std::string listing;
      for (const auto& [name, child] : node->entries) {
        const Node* c = FindLocked(child);
        absl::StrAppend(&listing, name, "\n", c != nullptr ? c->etag : "",
                        "\n");
      }
      node->etag = EtagOf(node->kind, listing);
      done.insert(id);
    }
  }
  SnapshotLocked();
  unsaved_writes_.clear();
  unsaved_changes_ = 0;
  ++save_count_;
}

void FakeInvariantServer::SnapshotLocked() {
  saved_.clear();
  saved_.reserve(nodes_.size());
  for (const auto& [id, node] : nodes_) {
    saved_.emplace(id, std::make_unique<Node>(*node));
  }
}

void FakeInvariantServer::ChangedLocked() { ++unsaved_changes_; }

std::vector<std::pair<uint64_t, uint64_t>> FakeInvariantServer::NoteWriteLocked(
    uint64_t file, uint64_t offset, uint64_t length) {
  std::vector<std::pair<uint64_t, uint64_t>> overlaps;
  if (length == 0) return overlaps;
  uint64_t start = offset;
  uint64_t end = offset + length;
  std::map<uint64_t, uint64_t>& ranges = unsaved_writes_[file];
  // The first range that may touch [start, end): the one starting at or
  // before `start`, if it reaches it.
  auto it = ranges.upper_bound(start);
  if (it != ranges.begin() && std::prev(it)->second >= start) --it;
  // Merge every range that overlaps or touches [start, end) into it,
  // noting the overlapping parts.
  while (it != ranges.end() && it->first <= end) {
    const uint64_t overlap_start = std::max(it->first, offset);
    const uint64_t overlap_end = std::min(it->second, offset + length);
    if (overlap_start < overlap_end) {
      overlaps.emplace_back(overlap_start, overlap_end);
    }
    start = std::min(start, it->first);
    end = std::max(end, it->second);
    it = ranges.erase(it);
  }
  ranges.emplace(start, end);
  if (!overlaps.empty()) ++overlapping_writes_;
  return overlaps;
}

void FakeInvariantServer::ClipWritesLocked(uint64_t file, uint64_t size) {
  auto found = unsaved_writes_.find(file);
  if (found == unsaved_writes_.end()) return;
  std::map<uint64_t, uint64_t>& ranges = found->second;
  ranges.erase(ranges.lower_bound(size), ranges.end());
  if (!ranges.empty() && ranges.rbegin()->second > size) {
    ranges.rbegin()->second = size;
  }
}

void FakeInvariantServer::RenumberLocked() {
  // New ids from a counter well above every old one (a restarted server
  // counts from 1 again; this makes every old id unknown rather than
  // naming some other node), assigned in walk order.
  const uint64_t kStep = 1'000'000;
  uint64_t next = (next_id_ / kStep + 1) * kStep;
  absl::flat_hash_map<uint64_t, uint64_t> renamed = {{kRootNode, kRootNode}};
  std::vector<uint64_t> pending = {kRootNode};
  while (!pending.empty()) {
    const uint64_t id = pending.back();
    pending.pop_back();
    const Node* node = FindLocked(id);
    for (auto it = node->entries.rbegin(); it != node->entries.rend(); ++it) {
      if (renamed.emplace(it->second, next).second) {
        ++next;
        pending.push_back(it->second);
      }
    }
  }
  absl::flat_hash_map<uint64_t, std::unique_ptr<Node>> nodes;
  for (auto& [old_id, node] : nodes_) {
    auto it = renamed.find(old_id);
    if (it == renamed.end()) continue;  // unreachable: dropped
    node->id = it->second;
    for (auto& [name, child] : node->entries) child = renamed.at(child);
    nodes.emplace(node->id, std::move(node));
  }
  nodes_ = std::move(nodes);
  next_id_ = next;
}

}  // namespace memfuse::testing
