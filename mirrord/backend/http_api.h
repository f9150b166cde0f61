// The HTTP backend's mapping of the mirror onto the Invariant files API,
// shared by the backend's files (http_backend*.cc) and by nothing else:
// the server's answers as errnos, its milliseconds, the paths names go in,
// and HttpBackend::WithNodes (a retry after the server forgot its node
// ids).
//
// Thread-safe: the functions touch only their arguments.
#ifndef MEMFUSE_MIRRORD_BACKEND_HTTP_API_H_
#define MEMFUSE_MIRRORD_BACKEND_HTTP_API_H_

#include <cerrno>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "glog/logging.h"
#include "mirrord/backend/http_backend.h"
#include "mirrord/backend/http_client.h"

namespace memfuse::mirrord {
namespace http {

// The server forgot a node id (it restarted): NOT_FOUND with this message.
inline constexpr absl::string_view kStaleNode = "Unrecognized node";
// How long a file's mtime may wait after its last write.
inline constexpr absl::Duration kTimesDelay = absl::Milliseconds(200);
// Longest error body quoted in a log line.
inline constexpr size_t kMaxQuotedBody = 200;

inline bool IsStaleNode(const absl::Status& status) {
  return absl::IsNotFound(status) &&
         absl::StrContains(status.message(), kStaleNode);
}

inline const char* MethodName(int method) {
  switch (method) {
    case 0:
      return "GET";
    case 1:
      return "PUT";
    default:
      return "POST";
  }
}

// An errno for a 4xx answer, from its code and the server's words.
inline int ErrnoForAnswer(long code, absl::string_view body) {
  if (code == 404) return ENOENT;
  if (absl::StrContains(body, "exists")) return EEXIST;
  if (absl::StrContains(body, "not a directory") ||
      absl::StrContains(body, "Not a directory")) {
    return ENOTDIR;
  }
  if (absl::StrContains(body, "writable")) return EACCES;
  if (absl::StrContains(body, "not a file") ||
      absl::StrContains(body, "Not a file")) {
    return EISDIR;
  }
  if (code == 401 || code == 403) return EACCES;
  if (code == 413) return EFBIG;
  return EINVAL;
}

inline int64_t MsToNs(int64_t ms) { return ms * 1000000; }
inline int64_t NsToMs(int64_t ns) { return ns / 1000000; }

// Where a name goes in a path: "files/lookup/12/a%20b".
inline std::string NamePath(const char* route, uint64_t node, std::string_view name) {
  return absl::StrCat("files/", route, node, "/", EncodePathName(name));
}

}  // namespace http

template <typename Op>
auto HttpBackend::WithNodes(Op op) -> decltype(op()) {
  auto status_of = [](const auto& result) -> absl::Status {
    if constexpr (std::is_same_v<std::decay_t<decltype(result)>,
                                 absl::Status>) {
      return result;
    } else {
      return result.status();
    }
  };
  auto result = op();
  if (!http::IsStaleNode(status_of(result))) return result;
  LOG(WARNING) << "the server no longer knows its node ids (it restarted?): "
                  "finding every object again by name";
  ForgetNodes();
  result = op();
  // Still unknown (the root node itself is gone): worth a retry later.
  if (http::IsStaleNode(status_of(result))) {
    return absl::UnavailableError(status_of(result).message());
  }
  return result;
}

}  // namespace memfuse::mirrord

#endif  // MEMFUSE_MIRRORD_BACKEND_HTTP_API_H_
