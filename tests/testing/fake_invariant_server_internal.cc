// The fake Invariant files server's building blocks (declared in
// fake_invariant_server_internal.h): kind names, file contents in shared
// chunks, the parsing of ids and query values, etags and JSON output.
//
// Thread-safety: nothing here locks. A Bytes is guarded by the server's
// mutex like the node that holds it; the free functions keep no state.
#include "tests/testing/fake_invariant_server_internal.h"

#include <httplib.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace memfuse::testing {

absl::string_view InvariantKindName(InvariantKind kind) {
  switch (kind) {
    case InvariantKind::kFile:
      return "File";
    case InvariantKind::kDirectory:
      return "Directory";
    case InvariantKind::kSymbolicLink:
      return "SymbolicLink";
  }
  return "File";
}

std::optional<InvariantKind> ParseInvariantKind(absl::string_view name) {
  for (InvariantKind kind : {InvariantKind::kFile, InvariantKind::kDirectory,
                             InvariantKind::kSymbolicLink}) {
    if (name == InvariantKindName(kind)) return kind;
  }
  return std::nullopt;
}

namespace fake_invariant_internal {

int64_t NowMs() { return absl::ToUnixMillis(absl::Now()); }

std::optional<uint64_t> ParseId(absl::string_view s) {
  uint64_t id = 0;
  if (s.empty() || s.size() > 19 ||
      !std::all_of(s.begin(), s.end(), absl::ascii_isdigit) ||
      !absl::SimpleAtoi(s, &id)) {
    return std::nullopt;
  }
  return id;
}

QueryNumber QueryUint(const httplib::Request& req, const char* key) {
  if (!req.has_param(key)) return {};
  const std::string v = req.get_param_value(key);
  if (v.empty()) return {};
  std::optional<uint64_t> n = ParseId(v);
  if (!n) return {false, std::nullopt};
  return {true, n};
}

std::string QueryString(const httplib::Request& req, const char* key) {
  return req.has_param(key) ? req.get_param_value(key) : std::string();
}

uint64_t Fnv1a(absl::string_view s, uint64_t h) {
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

std::string Dump(const Json& j) {
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::string Bytes::Read(uint64_t offset, uint64_t length) const {
  std::string out;
  if (offset >= size_) return out;
  length = std::min(length, size_ - offset);
  out.reserve(length);
  while (length > 0) {
    const Chunk& chunk = *chunks_[offset / kChunk];
    const uint64_t in = offset % kChunk;
    const uint64_t n = std::min<uint64_t>(length, kChunk - in);
    out.append(chunk.bytes, in, n);
    offset += n;
    length -= n;
  }
  return out;
}

void Bytes::Write(uint64_t offset, absl::string_view data) {
  if (data.empty()) return;
  if (size_ < offset + data.size()) Resize(offset + data.size());
  while (!data.empty()) {
    std::string& bytes = MutableChunk(offset / kChunk);
    const uint64_t in = offset % kChunk;
    const uint64_t n = std::min<uint64_t>(data.size(), kChunk - in);
    bytes.replace(in, n, data.data(), n);
    offset += n;
    data.remove_prefix(n);
  }
}

void Bytes::Resize(uint64_t size) {
  if (size == size_) return;
  const size_t count = (size + kChunk - 1) / kChunk;
  // The last chunk kept changes length when it is cut or, being the old
  // last one, when the file grows past it.
  const size_t last_kept = std::min(count, chunks_.size());
  chunks_.resize(count);
  for (size_t i = 0; i < count; ++i) {
    const uint64_t want = std::min<uint64_t>(kChunk, size - i * kChunk);
    if (i + 1 >= last_kept &&
        (chunks_[i] == nullptr || chunks_[i]->bytes.size() != want)) {
      if (chunks_[i] == nullptr) chunks_[i] = std::make_shared<Chunk>();
      MutableChunk(i).resize(want, '\0');
    }
  }
  size_ = size;
}

std::string& Bytes::MutableChunk(size_t i) {
  std::shared_ptr<Chunk>& chunk = chunks_[i];
  if (chunk.use_count() > 1) chunk = std::make_shared<Chunk>(*chunk);
  chunk->hash.reset();
  return chunk->bytes;
}

uint64_t Bytes::Hash(uint64_t seed) const {
  uint64_t h = seed;
  for (const std::shared_ptr<Chunk>& chunk : chunks_) {
    if (!chunk->hash) chunk->hash = Fnv1a(chunk->bytes);
    const uint64_t part = *chunk->hash;
    h = Fnv1a(
        absl::string_view(reinterpret_cast<const char*>(&part), sizeof part),
        h);
  }
  return h;
}

std::string EtagOf(InvariantKind kind, absl::string_view content) {
  return absl::StrCat(absl::Hex(Fnv1a(content, Fnv1a(InvariantKindName(kind))),
                                absl::kZeroPad16));
}

std::string EtagOf(const Bytes& content) {
  return absl::StrCat(
      absl::Hex(content.Hash(Fnv1a(InvariantKindName(InvariantKind::kFile))),
                absl::kZeroPad16));
}

}  // namespace fake_invariant_internal
}  // namespace memfuse::testing
