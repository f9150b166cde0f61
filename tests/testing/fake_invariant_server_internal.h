// Private to the fake Invariant files server (the fake_invariant_server*.cc
// files), not for tests: what its files share — the node, reply and route
// types, file contents kept in shared chunks, the parsing of ids and query
// values, etags and JSON output.
//
// Thread-safety: nothing here locks. A Node (and the Bytes in it) is
// guarded by the server's mutex like the rest of its tree; the free
// functions keep no state.
#ifndef MEMFUSE_TESTS_TESTING_FAKE_INVARIANT_SERVER_INTERNAL_H_
#define MEMFUSE_TESTS_TESTING_FAKE_INVARIANT_SERVER_INTERNAL_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"
#include "tests/testing/fake_invariant_server.h"

namespace memfuse::testing {
namespace fake_invariant_internal {

using Json = nlohmann::ordered_json;

inline constexpr char kJsonType[] = "application/json; charset=utf-8";
inline constexpr char kTextType[] = "text/plain; charset=utf-8";
inline constexpr char kBytesType[] = "application/octet-stream";

inline constexpr char kUnrecognizedNode[] = "Unrecognized node";
inline constexpr char kNotFound[] = "Not Found";
inline constexpr char kBadNumber[] = "Expected a non-negative number";

// Files are kept in memory: a write or size far beyond anything a test
// needs is refused rather than allocated.
inline constexpr uint64_t kMaxFileSize = uint64_t{1} << 34;

int64_t NowMs();

// An id in a URL path: decimal digits only.
std::optional<uint64_t> ParseId(absl::string_view s);

// A non-negative integer query value, like the real server's parseInt:
// absent or empty is nullopt, anything else must be a number.
struct QueryNumber {
  bool ok = true;
  std::optional<uint64_t> value;
};
QueryNumber QueryUint(const httplib::Request& req, const char* key);

std::string QueryString(const httplib::Request& req, const char* key);

// 64-bit FNV-1a: stable across runs, unlike absl::Hash.
uint64_t Fnv1a(absl::string_view s, uint64_t h = 14695981039346656037ull);

// Names are whatever bytes came in a URL path: never throws on bad UTF-8.
std::string Dump(const Json& j);

// File contents in chunks that a copy shares: saving copies a tree of
// pointers, and a write then copies only the chunks it changes that the
// saved tree still holds. Each chunk's hash is kept until the chunk
// changes, so a save hashes only what was written since the last one.
// Not thread-safe: the server's mutex guards every Bytes.
class Bytes {
 public:
  uint64_t size() const { return size_; }

  // Up to `length` bytes from `offset`, fewer at the end.
  std::string Read(uint64_t offset, uint64_t length) const;
  // A gap between the end and `offset` reads as zeros.
  void Write(uint64_t offset, absl::string_view data);
  // Truncates, or extends with zeros.
  void Resize(uint64_t size);
  // A hash of the contents, after `seed`; stable across runs.
  uint64_t Hash(uint64_t seed) const;

 private:
  static constexpr uint64_t kChunk = 256 << 10;

  struct Chunk {
    std::string bytes;
    // Of `bytes`, once computed.
    mutable std::optional<uint64_t> hash;
  };

  // Chunk i, copied first if a copy of this Bytes shares it.
  std::string& MutableChunk(size_t i);

  // Every chunk but the last holds kChunk bytes; none is empty.
  std::vector<std::shared_ptr<Chunk>> chunks_;
  uint64_t size_ = 0;
};

std::string EtagOf(InvariantKind kind, absl::string_view content);
std::string EtagOf(const Bytes& content);

}  // namespace fake_invariant_internal

struct FakeInvariantServer::Node {
  uint64_t id = 0;
  InvariantKind kind = InvariantKind::kFile;
  int64_t create_ms = 0;
  int64_t modify_ms = 0;
  bool executable = false;
  bool writable = true;
  // Files.
  fake_invariant_internal::Bytes data;
  // Symbolic links.
  std::string target;
  // Directories: name -> node id.
  std::map<std::string, uint64_t> entries;
  // The etag as of the last save (sync), as the real server reports it.
  std::string etag;
  // Directory entries naming this node (the root has one of its own).
  int links = 0;
};

struct FakeInvariantServer::Reply {
  int status = 200;
  std::string body;
  std::string content_type = fake_invariant_internal::kTextType;

  static Reply Json(const nlohmann::ordered_json& j) {
    return {200, fake_invariant_internal::Dump(j),
            fake_invariant_internal::kJsonType};
  }
  static Reply Text(int status, std::string body) {
    return {status, std::move(body), fake_invariant_internal::kTextType};
  }
  static Reply Empty() { return {200, "", fake_invariant_internal::kTextType}; }
};

struct FakeInvariantServer::Route {
  // One of the counter keys, kNoRoute included.
  absl::string_view key = kNoRoute;
  uint64_t id = 0;
  // Exactly the bytes of the path segment: never percent-decoded.
  std::string name;
};

}  // namespace memfuse::testing

#endif  // MEMFUSE_TESTS_TESTING_FAKE_INVARIANT_SERVER_INTERNAL_H_
