// FakeInvariantServer's read endpoints: GET files/info, files/directory,
// files/lookup and files/{n}. None of them changes the tree.
//
// Thread-safety: each endpoint runs on one of httplib's worker threads and
// holds mu_ for the whole of its work on the tree.
#include "tests/testing/fake_invariant_server.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>

#include "absl/synchronization/mutex.h"
#include "tests/testing/fake_invariant_server_internal.h"

namespace memfuse::testing {
namespace {

using fake_invariant_internal::Json;
using fake_invariant_internal::kBadNumber;
using fake_invariant_internal::kBytesType;
using fake_invariant_internal::kNotFound;
using fake_invariant_internal::kUnrecognizedNode;
using fake_invariant_internal::QueryNumber;
using fake_invariant_internal::QueryUint;

}  // namespace

FakeInvariantServer::Reply FakeInvariantServer::Info(uint64_t id) {
  absl::MutexLock lock(&mu_);
  const Node* node = FindLocked(id);
  if (node == nullptr) return Reply::Text(400, kUnrecognizedNode);
  return Reply::Json(InfoJsonLocked(*node));
}

FakeInvariantServer::Reply FakeInvariantServer::List(uint64_t id) {
  absl::MutexLock lock(&mu_);
  Reply error;
  const Node* dir = DirectoryLocked(id, false, &error);
  if (dir == nullptr) return error;
  Json entries = Json::array();
  for (const auto& [name, child] : dir->entries) {
    Json entry;
    entry["name"] = name;
    entry["info"] = InfoJsonLocked(*FindLocked(child));
    entries.push_back(std::move(entry));
  }
  return Reply::Json(entries);
}

FakeInvariantServer::Reply FakeInvariantServer::Lookup(
    uint64_t parent, const std::string& name) {
  absl::MutexLock lock(&mu_);
  Reply error;
  const Node* dir = DirectoryLocked(parent, false, &error);
  if (dir == nullptr) return error;
  auto it = dir->entries.find(name);
  if (it == dir->entries.end()) return Reply::Text(404, kNotFound);
  return Reply::Json(InfoJsonLocked(*FindLocked(it->second)));
}

FakeInvariantServer::Reply FakeInvariantServer::Read(
    uint64_t id, const httplib::Request& req) {
  const QueryNumber offset = QueryUint(req, "offset");
  const QueryNumber length = QueryUint(req, "length");
  if (!offset.ok || !length.ok) return Reply::Text(400, kBadNumber);
  absl::MutexLock lock(&mu_);
  Reply error;
  const Node* file = FileLocked(id, false, &error);
  if (file == nullptr) return error;
  const uint64_t size = file->data.size();
  const uint64_t start = std::min(offset.value.value_or(0), size);
  const uint64_t count =
      std::min(length.value.value_or(size - start), size - start);
  bytes_read_ += count;
  return {200, file->data.Read(start, count), kBytesType};
}

}  // namespace memfuse::testing
