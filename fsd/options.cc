#include "fsd/options.h"

#include <sys/stat.h>
#include <unistd.h>

#include <climits>

#include <cerrno>
#include <cstring>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "common/numeric_flag.h"

namespace memfuse::fsd {
namespace {

using common::WholeNumber;

constexpr uint64_t kMaxBlockSizeKb = 64 * 1024;
// Sizes in MB whose bytes still fit in 64 bits.
constexpr uint64_t kMaxMegabytes = UINT64_MAX >> 20;

ParseResult Fail(std::string message) {
  return ParseResult{std::nullopt, 2,
                     absl::StrCat("mem-fuse: ", message, " (see --help)")};
}

bool IsPowerOfTwo(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

}  // namespace

ParseResult ParseOptions(int argc, const char* const* argv) {
  Options o;
  std::optional<uint64_t> write_limit;
  std::vector<std::string> raw_fuse_options;

  CLI::App app(
      "mem-fuse: an in-memory FUSE filesystem, optionally a write-back cache "
      "in front of a mirror.\nRuns in the foreground; Ctrl-C, SIGTERM or "
      "`fusermount3 -u MOUNTPOINT` unmounts (with a mirror, after sending it "
      "everything; a second signal exits at once).\nfsync of the mount's root "
      "directory waits until the mirror has everything.",
      "mem-fuse");
  app.set_version_flag("--version", "mem-fuse " MEMFUSE_VERSION);
  app.add_option("MOUNTPOINT", o.mountpoint, "Existing directory to mount on")
      ->required();
  app.add_option("--mirror", o.mirror,
                 "Mirror to write back to: /path or file:///path (created if "
                 "missing; its content appears on the mount) or "
                 "http://host:port (an Invariant files server). Starts the "
                 "mirror agent mem-fuse-mirrord as a child process");
  app.add_option("--mirror-socket", o.mirror_socket,
                 "Instead of --mirror: the Unix socket of a mem-fuse-mirrord "
                 "started separately (systemd, Kubernetes, a second "
                 "terminal); reconnects when it restarts");
  app.add_option("--cache-size", o.cache_size_mb,
                 "Resident file data limit in MB; without a mirror this is "
                 "the filesystem's size")
      ->capture_default_str()
      ->transform(WholeNumber(1, kMaxMegabytes));
  app.add_option("--cache-max-write-size", write_limit,
                 "Dirty (not yet mirrored) data limit in MB, from two blocks "
                 "up to the cache size [default: half the cache]. Writers "
                 "wait for the mirror when it is reached. Without a mirror "
                 "nothing is dirty and a full cache is ENOSPC")
      ->transform(WholeNumber(1, kMaxMegabytes));
  std::optional<std::string> lazy_load;
  app.add_option("--lazy-load", lazy_load,
                 "true|false: with true (the default) a directory of the "
                 "mirror is listed when first used and a file's blocks are "
                 "read when first read; with false every directory is "
                 "listed at mount and file data is read in the background "
                 "until the cache is full");
  app.add_option("--root", o.root_node,
                 "With --mirror http://: the server's node to mount as the "
                 "root [default: 1]")
      ->transform(WholeNumber(1, UINT64_MAX));
  app.add_option("--block-size", o.block_size_kb,
                 "Block size in KB: a power of two from 4 to 65536")
      ->capture_default_str()
      ->transform(WholeNumber(4, kMaxBlockSizeKb));
  app.add_option("-o", raw_fuse_options,
                 "FUSE mount options, comma-separated (e.g. -o ro)")
      ->allow_extra_args(false);
  app.add_flag("--debug", o.debug, "Log every FUSE request to stderr");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    return ParseResult{std::nullopt, 0, app.help()};
  } catch (const CLI::CallForVersion&) {
    return ParseResult{std::nullopt, 0, "mem-fuse " MEMFUSE_VERSION "\n"};
  } catch (const CLI::ParseError& e) {
    return Fail(e.what());
  }

  if (!o.mirror.empty() && !o.mirror_socket.empty()) {
    return Fail("--mirror and --mirror-socket exclude each other");
  }
  if (!o.mirror.empty()) {
    std::string dir = o.mirror;
    if (absl::StartsWith(dir, "file://")) {
      dir = dir.substr(strlen("file://"));
      if (!absl::StartsWith(dir, "/")) {
        return Fail(absl::StrCat("--mirror ", o.mirror,
                                 ": a file:// URL needs an absolute path"));
      }
    } else if (absl::StartsWith(dir, "https://")) {
      return Fail(absl::StrCat("--mirror ", o.mirror,
                               ": https is not supported; use http://"));
    } else if (absl::StartsWith(dir, "http://")) {
      if (dir.size() == strlen("http://") || dir[strlen("http://")] == '/' ||
          dir[strlen("http://")] == ':') {
        return Fail(absl::StrCat("--mirror ", o.mirror,
                                 ": expected http://host:port"));
      }
      o.mirror_spec = dir;
      o.http_mirror = true;
    } else if (dir.find("://") != std::string::npos) {
      return Fail(absl::StrCat("--mirror ", o.mirror,
                               ": expected /path, file:///path or "
                               "http://host:port"));
    }
    // An http URL goes to the agent as it is (the agent checks that the
    // server answers); a path is made absolute.
    if (!o.http_mirror) {
      if (dir.empty()) return Fail("--mirror: empty path");
      if (!absl::StartsWith(dir, "/")) {
        char cwd[PATH_MAX];
        if (getcwd(cwd, sizeof(cwd)) == nullptr) {
          return Fail(absl::StrCat("--mirror ", o.mirror, ": ",
                                   std::strerror(errno)));
        }
        dir = absl::StrCat(cwd, "/", dir);
      }
      o.mirror_spec = dir;
    }
  }
  if (lazy_load.has_value()) {
    if (*lazy_load == "false" || *lazy_load == "0") {
      o.lazy_load = false;
    } else if (*lazy_load == "true" || *lazy_load == "1") {
      o.lazy_load = true;
    } else {
      return Fail(absl::StrCat("--lazy-load ", *lazy_load,
                               ": expected true or false"));
    }
  }
  if (o.root_node.has_value()) {
    if (!o.http_mirror) return Fail("--root needs an http --mirror");
    if (*o.root_node == 0) return Fail("--root 0: node ids start at 1");
  }
  if (o.cache_size_mb == 0) return Fail("--cache-size must be at least 1");
  if (o.block_size_kb < 4 || !IsPowerOfTwo(o.block_size_kb) ||
      o.block_size_kb > kMaxBlockSizeKb) {
    return Fail(absl::StrCat("--block-size ", o.block_size_kb,
                             ": must be a power of two from 4 to ",
                             kMaxBlockSizeKb, " KB"));
  }
  if (write_limit.has_value()) {
    if (*write_limit == 0) {
      return Fail("--cache-max-write-size must be at least 1");
    }
    if (*write_limit > o.cache_size_mb) {
      return Fail(absl::StrCat("--cache-max-write-size ", *write_limit,
                               " exceeds --cache-size ", o.cache_size_mb));
    }
    o.cache_max_write_size_mb = *write_limit;
  } else {
    // Half the cache, but room for two blocks where the cache has it.
    const uint64_t two_blocks_mb = ((2 * o.block_bytes()) + (1 << 20) - 1) >> 20;
    o.cache_max_write_size_mb =
        std::min(o.cache_size_mb,
                 std::max<uint64_t>(o.cache_size_mb / 2, two_blocks_mb));
  }
  // Writers wait for room for whole blocks; fewer than two would let one
  // block in flight stall every writer. (Without a mirror nothing is dirty.)
  if ((!o.mirror.empty() || !o.mirror_socket.empty()) &&
      o.write_limit_bytes() < 2 * o.block_bytes()) {
    return Fail(absl::StrCat(
        "--cache-max-write-size ", o.cache_max_write_size_mb,
        " MB holds fewer than two blocks of --block-size ", o.block_size_kb,
        " KB", write_limit.has_value() ? "" : " (half of --cache-size)"));
  }
  for (const std::string& group : raw_fuse_options) {
    for (absl::string_view opt : absl::StrSplit(group, ',', absl::SkipEmpty())) {
      o.fuse_options.emplace_back(opt);
    }
  }

  struct stat st;
  if (stat(o.mountpoint.c_str(), &st) != 0) {
    return Fail(absl::StrCat("mount point ", o.mountpoint, ": ",
                             std::strerror(errno)));
  }
  if (!S_ISDIR(st.st_mode)) {
    return Fail(absl::StrCat("mount point ", o.mountpoint,
                             ": not a directory"));
  }
  return ParseResult{std::move(o), 0, ""};
}

}  // namespace memfuse::fsd
