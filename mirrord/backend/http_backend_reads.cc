// The HTTP backend's reads: attributes from the server's info, listings
// (which bind the ids of what they find), blocks, symlink targets, stat,
// statfs and the status. Thread-safety as HttpBackend's (http_backend.h).
#include "mirrord/backend/http_backend.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <functional>
#include <optional>
#include <type_traits>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status.h"
#include "glog/logging.h"
#include "mirrord/backend/backend_common.h"
#include "nlohmann/json.hpp"
#include "mirrord/backend/http_api.h"

namespace memfuse::mirrord {

using common::ErrnoStatus;
using common::StatusToErrno;
using json = nlohmann::json;
using namespace http;  // NOLINT: the backend's own API mapping

// --- reads ---

pb::Attr HttpBackend::AttrFromInfo(const json& info, uint64_t id) const {
  pb::Attr attr;
  attr.set_id(id);
  const std::string kind = info.value("kind", "");
  const bool executable = info.value("executable", false);
  const bool writable = info.value("writable", true);
  if (kind == "Directory") {
    attr.set_mode(S_IFDIR | 0755);
    attr.set_nlink(2);
  } else if (kind == "SymbolicLink") {
    attr.set_mode(S_IFLNK | 0777);
    attr.set_size(info.value("target", std::string()).size());
    attr.set_nlink(1);
  } else {
    attr.set_mode(S_IFREG | 0444 | (writable ? 0200 : 0) |
                  (executable ? 0111 : 0));
    attr.set_size(info.value("size", uint64_t{0}));
    attr.set_nlink(1);
  }
  attr.set_uid(options_.uid);
  attr.set_gid(options_.gid);
  const int64_t mtime = MsToNs(info.value("modifyTime", int64_t{0}));
  attr.set_mtime_ns(mtime);
  attr.set_atime_ns(mtime);
  attr.set_ctime_ns(mtime);
  return attr;
}

absl::StatusOr<pb::ListDirectoryResponse> HttpBackend::ListDirectory(
    const pb::ListDirectoryRequest& request) {
  const uint64_t dir_id = request.id();
  if (request.first_child_id() <= kRootId) {
    return absl::InvalidArgumentError(absl::StrCat(
        "first_child_id ", request.first_child_id(), " is not a new id"));
  }
  {
    absl::MutexLock l(&mu_);
    if (!ids_.Contains(dir_id)) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown directory id ", dir_id));
    }
  }
  ASSIGN_OR_RETURN(json entries, WithNodes([&]() -> absl::StatusOr<json> {
                     ASSIGN_OR_RETURN(uint64_t node, NodeOf(dir_id));
                     return SendJson(Method::kGet,
                                     absl::StrCat("files/directory/", node));
                   }));
  if (!entries.is_array()) {
    return absl::DataLossError(absl::StrCat("the listing of directory ", dir_id,
                                            " is not a JSON array"));
  }
  struct Found {
    std::string name;
    uint64_t node;
    json info;
  };
  std::vector<Found> found;
  for (const json& entry : entries) {
    if (!entry.is_object() || !entry.contains("name") ||
        !entry["name"].is_string() || !entry.contains("info") ||
        !entry["info"].is_object()) {
      return absl::DataLossError(absl::StrCat(
          "a malformed entry in the listing of directory ", dir_id));
    }
    std::string name = DecodePathName(entry["name"].get<std::string>());
    if (!CheckName(name).ok()) {
      LOG(WARNING) << "directory " << dir_id << ": the server's entry "
                   << Quoted(name) << " is no Linux name; not shown";
      continue;
    }
    found.push_back({std::move(name), entry["info"].value("node", uint64_t{0}),
                     entry["info"]});
  }
  std::sort(found.begin(), found.end(),
            [](const Found& a, const Found& b) { return a.name < b.name; });

  pb::ListDirectoryResponse response;
  absl::MutexLock l(&mu_);
  // A second name of a node bound already (a hard link) keeps its id.
  absl::flat_hash_map<uint64_t, uint64_t> seen;
  auto known = [&](const Found& f) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (f.info.value("kind", "") == "Directory") return uint64_t{0};
    auto it = seen.find(f.node);
    if (it != seen.end()) return it->second;
    auto bound = id_of_node_.find(f.node);
    return bound != id_of_node_.end() && ids_.Contains(bound->second)
               ? bound->second
               : uint64_t{0};
  };
  if (request.max_new_ids() > 0) {
    uint64_t needed = 0;
    absl::flat_hash_set<uint64_t> counted;
    for (const Found& f : found) {
      if (known(f) == 0 && counted.insert(f.node).second) ++needed;
    }
    if (needed > request.max_new_ids()) {
      response.set_ids_needed(needed);
      return response;
    }
  }
  uint64_t next = request.first_child_id();
  absl::flat_hash_map<uint64_t, uint32_t> links;
  for (const Found& f : found) ++links[f.node];
  for (Found& f : found) {
    uint64_t id = known(f);
    if (id == 0) {
      id = next++;
      if (ids_.Contains(id) && !ids_.HasLink(id, dir_id, f.name)) {
        return absl::FailedPreconditionError(
            absl::StrCat("id ", id, " is bound already"));
      }
    }
    RETURN_IF_ERROR(ids_.AddLink(id, dir_id, f.name));
    seen[f.node] = id;
    node_of_[id] = f.node;
    id_of_node_[f.node] = id;
    pb::DirEntry* entry = response.add_entries();
    *entry->mutable_attr() = AttrFromInfo(f.info, id);
    if (f.info.value("kind", "") == "File") {
      entry->mutable_attr()->set_nlink(links[f.node]);
      if (!f.info.value("writable", true)) read_only_.insert(id);
    }
    if (f.info.value("kind", "") == "SymbolicLink") {
      entry->set_symlink_target(f.info.value("target", std::string()));
    }
    entry->set_name(std::move(f.name));
  }
  response.set_next_free_id(next);
  ++acks_.directories_listed;
  return response;
}

absl::StatusOr<uint64_t> HttpBackend::ReadBlock(
    const pb::ReadBlockRequest& request, absl::Span<char> out) {
  if (request.length() > kMaxReadLength) {
    return absl::InvalidArgumentError(
        absl::StrCat("length ", request.length(), " exceeds ", kMaxReadLength));
  }
  const uint64_t length = std::min<uint64_t>(request.length(), out.size());
  ASSIGN_OR_RETURN(
      uint64_t got, WithNodes([&]() -> absl::StatusOr<uint64_t> {
        ASSIGN_OR_RETURN(uint64_t node, NodeOf(request.id()));
        const std::string path = absl::StrCat(
            "files/", node, "?offset=", request.offset(), "&length=", length);
        ASSIGN_OR_RETURN(HttpResponse response,
                         Checked(Method::kGet, path,
                                 http_->ReadInto(path, out.first(length))));
        return std::min(response.bytes, length);
      }));
  absl::MutexLock l(&mu_);
  ++acks_.blocks_read;
  return got;
}

absl::StatusOr<pb::ReadLinkResponse> HttpBackend::ReadLink(
    const pb::ReadLinkRequest& request) {
  ASSIGN_OR_RETURN(json info, WithNodes([&]() -> absl::StatusOr<json> {
                     ASSIGN_OR_RETURN(uint64_t node, NodeOf(request.id()));
                     return SendJson(Method::kGet,
                                     absl::StrCat("files/info/", node));
                   }));
  if (info.value("kind", "") != "SymbolicLink") {
    return ErrnoStatus(
        EINVAL, absl::StrCat("object ", request.id(), " is not a symlink"));
  }
  pb::ReadLinkResponse response;
  response.set_target(info.value("target", std::string()));
  return response;
}

absl::StatusOr<pb::StatResponse> HttpBackend::Stat(
    const pb::StatRequest& request) {
  ASSIGN_OR_RETURN(json info, WithNodes([&]() -> absl::StatusOr<json> {
                     ASSIGN_OR_RETURN(uint64_t node, NodeOf(request.id()));
                     return SendJson(Method::kGet,
                                     absl::StrCat("files/info/", node));
                   }));
  pb::StatResponse response;
  *response.mutable_attr() = AttrFromInfo(info, request.id());
  return response;
}

absl::StatusOr<pb::StatFsResponse> HttpBackend::StatFs() {
  // The Invariant files API has no call that tells a server's capacity or
  // free space. Claiming the cache's size would make `df` and programs
  // that check before a large copy refuse what the server would take, so
  // the answer is a stand-in large enough never to stop one, marked as
  // not measured. A server that runs out says so when the data arrives.
  constexpr uint64_t kStandInBytes = uint64_t{1} << 50;  // 1 PiB
  constexpr uint64_t kStandInFiles = uint64_t{1} << 32;
  pb::StatFsResponse response;
  response.set_known(false);
  response.set_total_bytes(kStandInBytes);
  response.set_free_bytes(kStandInBytes);
  response.set_available_bytes(kStandInBytes);
  response.set_total_files(kStandInFiles);
  response.set_free_files(kStandInFiles);
  response.set_name_max(kMaxName);
  return response;
}


}  // namespace memfuse::mirrord
