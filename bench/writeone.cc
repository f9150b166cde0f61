// writeone: times writing one file the way cp, dd and tar do: a fresh file
// (O_CREAT | O_TRUNC, nothing preallocated), sequential writes of one size,
// buffered or O_DIRECT, and the time until close(2) returns, which for a
// buffered writer on FUSE includes the kernel sending what it buffered.
//
// Used by bench/run for the "incl. close" and O_DIRECT rows. Prints one line
// of space-separated key=value pairs on stdout:
//   mib=256 bs=1048576 direct=0 write_seconds=0.08 close_seconds=0.21
//   mib_per_s=1219
// (mib_per_s counts the time until close returned). Any failing syscall
// aborts with a message naming the file and errno: a benchmark must not
// report a rate for writes that did not happen.

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "CLI/CLI.hpp"

namespace {

[[noreturn]] void Die(const std::string& what, const std::string& path) {
  std::fprintf(stderr, "writeone: %s %s: %s\n", what.c_str(), path.c_str(),
               std::strerror(errno));
  std::exit(1);
}

double Since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() -
                                       start)
      .count();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"writeone: time writing one fresh file, until close returns"};
  std::string path;
  uint64_t mib = 256;
  uint64_t bs = 1 << 20;
  bool direct = false;
  bool keep_size = false;
  app.add_option("file", path, "the file to write (created or truncated)")
      ->required();
  app.add_option("--mib", mib, "MiB to write")->check(CLI::Range(1, 1 << 20));
  app.add_option("--bs", bs, "bytes per write (a multiple of 4096)")
      ->check(CLI::Range(4096, 64 << 20));
  app.add_flag("--direct", direct, "O_DIRECT writes");
  app.add_flag("--no-truncate", keep_size,
               "open without O_TRUNC (a file that cannot be truncated, such "
               "as the mount point of libfuse's null example)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (bs % 4096 != 0) {
    std::fprintf(stderr, "writeone: --bs must be a multiple of 4096\n");
    return 2;
  }

  void* buffer = nullptr;
  if (posix_memalign(&buffer, 4096, bs) != 0) Die("allocate", "buffer");
  // Not zeros: a filesystem must not get away with recognizing them.
  for (uint64_t i = 0; i < bs; ++i) {
    static_cast<unsigned char*>(buffer)[i] = static_cast<unsigned char>(i * 7 + 1);
  }

  int flags = O_WRONLY | O_CREAT | O_CLOEXEC;
  if (!keep_size) flags |= O_TRUNC;
  if (direct) flags |= O_DIRECT;
  const auto start = std::chrono::steady_clock::now();
  const int fd = open(path.c_str(), flags, 0644);
  if (fd < 0) Die("open", path);
  const uint64_t total = mib << 20;
  for (uint64_t done = 0; done < total;) {
    const ssize_t n = pwrite(fd, buffer, bs, static_cast<off_t>(done));
    if (n < 0) {
      if (errno == EINTR) continue;
      Die("write", path);
    }
    if (n == 0) {
      errno = EIO;
      Die("write (nothing written)", path);
    }
    done += static_cast<uint64_t>(n);
  }
  const double write_seconds = Since(start);
  if (close(fd) != 0) Die("close", path);
  const double close_seconds = Since(start);
  std::free(buffer);
  std::printf(
      "mib=%llu bs=%llu direct=%d write_seconds=%.6f close_seconds=%.6f "
      "mib_per_s=%.0f\n",
      static_cast<unsigned long long>(mib), static_cast<unsigned long long>(bs),
      direct ? 1 : 0, write_seconds, close_seconds,
      close_seconds > 0 ? static_cast<double>(mib) / close_seconds : 0.0);
  return 0;
}
