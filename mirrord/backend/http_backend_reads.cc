// The HTTP backend's reads: attributes from the server's info, the
// entries of a directory (BackendBase binds their ids), blocks, symlink targets, stat,
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

absl::StatusOr<std::vector<BackendBase::ListedEntry>>
HttpBackend::ReadDirectory(uint64_t dir_id) {
  ASSIGN_OR_RETURN(json entries, WithNodes([&]() -> absl::StatusOr<json> {
                     ASSIGN_OR_RETURN(uint64_t node, NodeOf(dir_id));
                     return SendJson(Method::kGet,
                                     absl::StrCat("files/directory/", node));
                   }));
  if (!entries.is_array()) {
    return absl::DataLossError(absl::StrCat("the listing of directory ", dir_id,
                                            " is not a JSON array"));
  }
  std::vector<ListedEntry> found;
  // A file's link count: its names in this directory (the API tells no
  // more).
  absl::flat_hash_map<uint64_t, uint32_t> links;
  std::vector<bool> is_file;
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
    const json& info = entry["info"];
    const std::string kind = info.value("kind", "");
    ListedEntry& f = found.emplace_back();
    f.object = {0, info.value("node", uint64_t{0})};
    // Any name of a node other than a directory may be one of several.
    f.linkable = kind != "Directory";
    *f.entry.mutable_attr() = AttrFromInfo(info, 0);
    is_file.push_back(kind == "File");
    if (kind == "File") ++links[f.object.second];
    if (kind == "SymbolicLink") {
      f.entry.set_symlink_target(info.value("target", std::string()));
    }
    f.entry.set_name(std::move(name));
  }
  for (size_t i = 0; i < found.size(); ++i) {
    if (is_file[i]) {
      found[i].entry.mutable_attr()->set_nlink(links[found[i].object.second]);
    }
  }
  return found;
}

uint64_t HttpBackend::LinkedIdLocked(const ListedEntry& listed) {
  auto bound = id_of_node_.find(listed.object.second);
  return bound != id_of_node_.end() ? bound->second : 0;
}

void HttpBackend::ListedLocked(uint64_t id, const ListedEntry& listed) {
  const uint64_t node = listed.object.second;
  node_of_[id] = node;
  id_of_node_[node] = id;
  // The server refuses writes to it (AttrFromInfo: no write bit).
  const uint32_t mode = listed.entry.attr().mode();
  if (S_ISREG(mode) && (mode & 0200) == 0) read_only_.insert(id);
}

absl::StatusOr<uint64_t> HttpBackend::ReadBytes(
    const pb::ReadBlockRequest& request, absl::Span<char> out) {
  const uint64_t length = out.size();
  return WithNodes([&]() -> absl::StatusOr<uint64_t> {
    ASSIGN_OR_RETURN(uint64_t node, NodeOf(request.id()));
    const std::string path = absl::StrCat(
        "files/", node, "?offset=", request.offset(), "&length=", length);
    ASSIGN_OR_RETURN(HttpResponse response,
                     Checked(Method::kGet, path, http_->ReadInto(path, out)));
    return std::min(response.bytes, length);
  });
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
