// Command-line options of the mem-fuse daemon (fsd).
//
// Parsing is separate from main() so that it can be unit-tested: bad input is
// reported as one line naming the flag, and main() exits with code 2.
#ifndef MEMFUSE_FSD_OPTIONS_H_
#define MEMFUSE_FSD_OPTIONS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace memfuse::fsd {

struct Options {
  std::string mountpoint;
  std::string mirror;                  // empty: no mirror
  // What the spawned agent gets as its --mirror: the local mirror
  // directory, absolute (from --mirror /path or file://), or an http URL.
  std::string mirror_spec;
  // A separately started mirrord's socket (--mirror-socket).
  std::string mirror_socket;
  uint64_t cache_size_mb = 512;        // resident file data
  uint64_t cache_max_write_size_mb = 256;  // dirty data, only with a mirror
  bool lazy_load = true;
  bool http_mirror = false;            // --mirror http://
  std::optional<uint64_t> root_node;   // only with an http mirror
  uint64_t block_size_kb = 1024;
  std::vector<std::string> fuse_options;  // from -o, split at commas
  bool debug = false;

  bool has_mirror() const {
    return !mirror_spec.empty() || !mirror_socket.empty();
  }
  uint64_t cache_bytes() const { return cache_size_mb << 20; }
  uint64_t block_bytes() const { return block_size_kb << 10; }
  uint64_t write_limit_bytes() const { return cache_max_write_size_mb << 20; }
};

// The outcome of parsing argv: either options to run with, or an exit (for
// --help/--version with code 0, for bad input with code 2 and `message`).
struct ParseResult {
  std::optional<Options> options;
  int exit_code = 0;
  std::string message;  // what to print (stdout for code 0, stderr otherwise)
};

ParseResult ParseOptions(int argc, const char* const* argv);

}  // namespace memfuse::fsd

#endif  // MEMFUSE_FSD_OPTIONS_H_
