// FakeInvariantServer's endpoints that change the tree: writes, creates,
// attributes and sizes, removes, renames, hard links, and the sync that
// saves it all. Each counts as an unsaved change (ChangedLocked) when it
// changed something.
//
// Thread-safety: each endpoint runs on one of httplib's worker threads,
// checks what it can of the request first and then holds mu_ for the whole
// of its work on the tree.
#include "tests/testing/fake_invariant_server.h"

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "tests/testing/fake_invariant_server_internal.h"

namespace memfuse::testing {
namespace {

using fake_invariant_internal::EtagOf;
using fake_invariant_internal::Json;
using fake_invariant_internal::kBadNumber;
using fake_invariant_internal::kMaxFileSize;
using fake_invariant_internal::kNotFound;
using fake_invariant_internal::kUnrecognizedNode;
using fake_invariant_internal::NowMs;
using fake_invariant_internal::QueryNumber;
using fake_invariant_internal::QueryString;
using fake_invariant_internal::QueryUint;

}  // namespace

FakeInvariantServer::Reply FakeInvariantServer::Write(
    uint64_t id, const httplib::Request& req, const std::string& body) {
  const QueryNumber offset = QueryUint(req, "offset");
  if (!offset.ok) return Reply::Text(400, kBadNumber);
  // No offset writes at 0: it does not append.
  const uint64_t at = offset.value.value_or(0);
  absl::MutexLock lock(&mu_);
  Reply error;
  Node* file = FileLocked(id, true, &error);
  if (file == nullptr) return error;
  if (at > kMaxFileSize || body.size() > kMaxFileSize - at) {
    return Reply::Text(400, "File too large for the fake server");
  }
  const std::vector<std::pair<uint64_t, uint64_t>> overlaps =
      NoteWriteLocked(id, at, body.size());
  // The older bytes of the overlapping parts, to put back after the write.
  std::vector<std::string> older;
  if (options_.scramble_overlaps) {
    for (const auto& [start, end] : overlaps) {
      older.push_back(file->data.Read(start, end - start));
    }
  }
  // A gap between the end of the file and `at` reads as zeros.
  file->data.Write(at, body);
  for (size_t i = 0; i < older.size(); ++i) {
    file->data.Write(overlaps[i].first, older[i]);
  }
  file->modify_ms = NowMs();
  bytes_written_ += body.size();
  ChangedLocked();
  return Reply::Json(body.size());
}

FakeInvariantServer::Reply FakeInvariantServer::Create(
    uint64_t parent, const std::string& name, const httplib::Request& req) {
  const std::string kind_name = QueryString(req, "kind");
  std::optional<InvariantKind> kind =
      kind_name.empty() ? InvariantKind::kFile : ParseInvariantKind(kind_name);
  if (!kind) return Reply::Text(400, "Expected a content kind");
  const std::string target = QueryString(req, "target");
  if (*kind == InvariantKind::kSymbolicLink && target.empty()) {
    return Reply::Text(400, "Expected a target");
  }
  absl::MutexLock lock(&mu_);
  Reply error;
  Node* dir = DirectoryLocked(parent, true, &error);
  if (dir == nullptr) return error;
  // An existing name is replaced, whatever it was (a non-empty directory
  // included): the real server does not protect POSIX semantics.
  if (auto it = dir->entries.find(name); it != dir->entries.end()) {
    const uint64_t old = it->second;
    dir->entries.erase(it);
    UnlinkLocked(old);
  }
  const uint64_t id = NewNodeLocked(*kind);
  Node* node = FindLocked(id);
  node->links = 1;
  if (*kind == InvariantKind::kSymbolicLink) {
    node->target = target;
    node->etag = EtagOf(*kind, target);
  }
  dir->entries.emplace(name, id);
  dir->modify_ms = NowMs();
  ChangedLocked();
  return Reply::Json(InfoJsonLocked(*node));
}

FakeInvariantServer::Reply FakeInvariantServer::SetAttributes(
    uint64_t id, const std::string& body) {
  const Json attributes =
      Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (attributes.is_discarded() || !attributes.is_object()) {
    return Reply::Text(400, "Expected entry attributes");
  }
  auto flag = [&](const char* key, std::optional<bool>* out) {
    auto it = attributes.find(key);
    if (it == attributes.end()) return true;
    if (!it->is_boolean()) return false;
    *out = it->get<bool>();
    return true;
  };
  auto number = [&](const char* key, std::optional<uint64_t>* out) {
    auto it = attributes.find(key);
    if (it == attributes.end()) return true;
    if (!it->is_number_unsigned()) return false;
    *out = it->get<uint64_t>();
    return true;
  };
  std::optional<bool> executable, writable;
  std::optional<uint64_t> modify_time, create_time, size;
  if (!flag("executable", &executable) || !flag("writable", &writable) ||
      !number("modifyTime", &modify_time) ||
      !number("createTime", &create_time) || !number("size", &size)) {
    return Reply::Text(400, "Expected entry attributes");
  }
  // `type` (a MIME type) is accepted and, as content info does not carry
  // it, not kept.
  if (auto it = attributes.find("type");
      it != attributes.end() && !it->is_string() && !it->is_null()) {
    return Reply::Text(400, "Expected entry attributes");
  }

  absl::MutexLock lock(&mu_);
  if (id == kRootNode) {
    return Reply::Text(400, "Cannot set the attributes of the root");
  }
  Node* node = FindLocked(id);
  if (node == nullptr) return Reply::Text(400, kUnrecognizedNode);
  if (size) {
    if (node->kind != InvariantKind::kFile) {
      return Reply::Text(400, "Node is not a file");
    }
    if (!writable.value_or(node->writable)) {
      return Reply::Text(400, "Node is not writable");
    }
    if (*size > kMaxFileSize) {
      return Reply::Text(400, "File too large for the fake server");
    }
  }
  if (executable) node->executable = *executable;
  if (writable) node->writable = *writable;
  if (size) {
    node->data.Resize(*size);
    ClipWritesLocked(id, *size);
    node->modify_ms = NowMs();
  }
  if (modify_time) node->modify_ms = static_cast<int64_t>(*modify_time);
  if (create_time) node->create_ms = static_cast<int64_t>(*create_time);
  ChangedLocked();
  return Reply::Json(InfoJsonLocked(*node));
}

FakeInvariantServer::Reply FakeInvariantServer::SetSize(
    uint64_t id, const httplib::Request& req) {
  const QueryNumber size = QueryUint(req, "size");
  if (!size.ok || !size.value) return Reply::Text(400, kBadNumber);
  absl::MutexLock lock(&mu_);
  Reply error;
  Node* file = FileLocked(id, true, &error);
  if (file == nullptr) return error;
  if (*size.value > kMaxFileSize) {
    return Reply::Text(400, "File too large for the fake server");
  }
  file->data.Resize(*size.value);
  ClipWritesLocked(id, *size.value);
  file->modify_ms = NowMs();
  ChangedLocked();
  return Reply::Json(InfoJsonLocked(*file));
}

FakeInvariantServer::Reply FakeInvariantServer::Remove(
    uint64_t parent, const std::string& name) {
  absl::MutexLock lock(&mu_);
  Reply error;
  Node* dir = DirectoryLocked(parent, true, &error);
  if (dir == nullptr) return error;
  auto it = dir->entries.find(name);
  if (it == dir->entries.end()) return Reply::Json(false);
  const uint64_t id = it->second;
  dir->entries.erase(it);
  dir->modify_ms = NowMs();
  // A directory goes with everything below it.
  UnlinkLocked(id);
  ChangedLocked();
  return Reply::Json(true);
}

FakeInvariantServer::Reply FakeInvariantServer::Rename(
    uint64_t parent, const std::string& name, const httplib::Request& req) {
  const QueryNumber new_parent = QueryUint(req, "newParent");
  if (!new_parent.ok) return Reply::Text(400, kBadNumber);
  const std::string new_name = QueryString(req, "newName");
  if (!new_parent.value || new_name.empty()) {
    return Reply::Text(404, kNotFound);
  }
  absl::MutexLock lock(&mu_);
  Reply error;
  Node* from = DirectoryLocked(parent, true, &error);
  if (from == nullptr) return error;
  Node* to = DirectoryLocked(*new_parent.value, true, &error);
  if (to == nullptr) return error;
  auto it = from->entries.find(name);
  if (it == from->entries.end()) return Reply::Text(404, kNotFound);
  const uint64_t id = it->second;
  if (from == to && name == new_name) return Reply::Empty();
  if (FindLocked(id)->kind == InvariantKind::kDirectory &&
      ContainsLocked(id, to->id)) {
    return Reply::Text(400, "Cannot move a directory below itself");
  }
  const int64_t now = NowMs();
  from->modify_ms = to->modify_ms = now;
  // Detach the source first: replacing the target must not take the moved
  // node with it (renaming a/x/y onto a/x).
  from->entries.erase(it);
  if (auto old = to->entries.find(new_name); old != to->entries.end()) {
    const uint64_t replaced = old->second;
    to->entries.erase(old);
    UnlinkLocked(replaced);
  }
  to->entries.emplace(new_name, id);
  ChangedLocked();
  return Reply::Empty();
}

FakeInvariantServer::Reply FakeInvariantServer::Link(
    uint64_t parent, const std::string& name, const httplib::Request& req) {
  const QueryNumber target = QueryUint(req, "node");
  if (!target.ok) return Reply::Text(400, kBadNumber);
  if (!target.value) return Reply::Text(404, kNotFound);
  absl::MutexLock lock(&mu_);
  Reply error;
  Node* dir = DirectoryLocked(parent, true, &error);
  if (dir == nullptr) return error;
  Node* node = FindLocked(*target.value);
  if (node == nullptr) return Reply::Text(400, kUnrecognizedNode);
  if (node->kind == InvariantKind::kDirectory) {
    return Reply::Text(400, "Cannot link a directory");
  }
  if (dir->entries.contains(name)) {
    return Reply::Text(502, "Name already exists");
  }
  dir->entries.emplace(name, node->id);
  ++node->links;
  dir->modify_ms = NowMs();
  ChangedLocked();
  return Reply::Empty();
}

FakeInvariantServer::Reply FakeInvariantServer::Sync() {
  absl::MutexLock lock(&mu_);
  ++sync_count_;
  SaveLocked();
  return Reply::Empty();
}

}  // namespace memfuse::testing
