// WalkApiTree (see fake_invariant_server.h): a tree read through the
// Invariant files HTTP API, as any client would read it, for the tests to
// compare with what they expect. It reads the server only through HTTP.
//
// Thread-safety: keeps no state; each call has its own connection.
#include "tests/testing/fake_invariant_server.h"

#include <httplib.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "tests/testing/fake_invariant_server_internal.h"

namespace memfuse::testing {
namespace {

using fake_invariant_internal::Dump;
using fake_invariant_internal::Json;

absl::StatusOr<std::string> Get(httplib::Client& client,
                                const std::string& path) {
  httplib::Result result = client.Get(path);
  if (!result) {
    return absl::UnavailableError(
        absl::StrCat("GET ", path, ": ", httplib::to_string(result.error())));
  }
  if (result->status != 200) {
    return absl::FailedPreconditionError(
        absl::StrCat("GET ", path, ": ", result->status, " ", result->body));
  }
  return std::move(result->body);
}

}  // namespace

absl::StatusOr<ApiTree> WalkApiTree(const std::string& host, int port,
                                    uint64_t root) {
  httplib::Client client(host, port);
  client.set_keep_alive(true);
  client.set_tcp_nodelay(true);
  client.set_connection_timeout(std::chrono::seconds(5));
  client.set_read_timeout(std::chrono::seconds(30));

  ApiTree tree;
  absl::flat_hash_set<uint64_t> seen_dirs = {root};
  std::vector<std::pair<uint64_t, std::string>> pending = {{root, ""}};
  while (!pending.empty()) {
    const uint64_t dir = pending.back().first;
    const std::string prefix = std::move(pending.back().second);
    pending.pop_back();
    absl::StatusOr<std::string> listing =
        Get(client, absl::StrCat("/files/directory/", dir));
    if (!listing.ok()) return listing.status();
    const Json entries = Json::parse(*listing, nullptr, false);
    if (entries.is_discarded() || !entries.is_array()) {
      return absl::DataLossError(
          absl::StrCat("directory ", dir, ": not a JSON array"));
    }
    for (const Json& e : entries) {
      auto bad = [&](absl::string_view why) {
        return absl::DataLossError(
            absl::StrCat("directory ", dir, ": ", why, ": ", Dump(e)));
      };
      if (!e.is_object() || !e.contains("name") || !e["name"].is_string() ||
          !e.contains("info") || !e["info"].is_object()) {
        return bad("malformed entry");
      }
      const std::string name = e["name"].get<std::string>();
      if (name.empty() || absl::StrContains(name, '/')) return bad("bad name");
      const Json& info = e["info"];
      ApiEntry entry;
      std::optional<InvariantKind> kind;
      if (!info.contains("node") || !info["node"].is_number_unsigned() ||
          !info.contains("kind") || !info["kind"].is_string() ||
          !(kind = ParseInvariantKind(info["kind"].get<std::string>()))) {
        return bad("malformed info");
      }
      entry.node = info["node"].get<uint64_t>();
      entry.kind = *kind;
      entry.executable = info.value("executable", false);
      entry.writable = info.value("writable", true);
      entry.modify_time_ms = info.value("modifyTime", int64_t{0});
      const std::string path =
          prefix.empty() ? name : absl::StrCat(prefix, "/", name);
      switch (entry.kind) {
        case InvariantKind::kFile: {
          if (!info.contains("size") || !info["size"].is_number_unsigned()) {
            return bad("file without a size");
          }
          entry.size = info["size"].get<uint64_t>();
          absl::StatusOr<std::string> bytes =
              Get(client, absl::StrCat("/files/", entry.node,
                                       "?offset=0&length=", entry.size));
          if (!bytes.ok()) return bytes.status();
          if (bytes->size() != entry.size) {
            return absl::DataLossError(
                absl::StrCat(path, ": read ", bytes->size(), " bytes, size is ",
                             entry.size));
          }
          entry.bytes = *std::move(bytes);
          break;
        }
        case InvariantKind::kSymbolicLink:
          if (!info.contains("target") || !info["target"].is_string()) {
            return bad("symbolic link without a target");
          }
          entry.target = info["target"].get<std::string>();
          break;
        case InvariantKind::kDirectory:
          if (!seen_dirs.insert(entry.node).second) {
            return bad("directory met twice");
          }
          pending.emplace_back(entry.node, path);
          break;
      }
      if (!tree.emplace(path, std::move(entry)).second) {
        return bad("duplicate path");
      }
    }
  }
  return tree;
}

}  // namespace memfuse::testing
