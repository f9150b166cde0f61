// metaops: times creating, stat-ing and unlinking many empty files.
//
// Used by bench/run for the metadata rows (20,000 files in one directory) and
// for the RSS-per-file row (100,000 files in 10 directories, created only).
// Files live in DIR/d0 .. DIR/d<dirs-1>, named f<index> zero-padded to the
// width of the largest index in a directory, so every name has one length.
// Each phase is timed with a monotonic clock and printed as one line of
// space-separated key=value pairs on stdout:
//   phase=create files=20000 dirs=1 name_len=6 seconds=0.12 ops_per_s=162000
// Any failing syscall aborts the run with a message naming the file and errno:
// a benchmark must not report a rate for operations that did not happen.

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"

namespace {

struct Layout {
  std::string root;
  int files = 0;
  int dirs = 1;
  int per_dir = 0;
  int width = 1;
};

[[noreturn]] void Die(const std::string& what, const std::string& path) {
  std::fprintf(stderr, "metaops: %s %s: %s\n", what.c_str(), path.c_str(),
               std::strerror(errno));
  std::exit(1);
}

std::string DirPath(const Layout& layout, int d) {
  return layout.root + "/d" + std::to_string(d);
}

std::string FileName(const Layout& layout, int i) {
  std::string digits = std::to_string(i);
  return "f" + std::string(layout.width - digits.size(), '0') + digits;
}

// Opens every directory (creating them first when `create` is set); the fds
// stay open for the whole phase so only the per-file operation is timed.
std::vector<int> OpenDirs(const Layout& layout, bool create) {
  std::vector<int> fds;
  for (int d = 0; d < layout.dirs; ++d) {
    std::string path = DirPath(layout, d);
    if (create && mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) {
      Die("mkdir", path);
    }
    int fd = open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) Die("open", path);
    fds.push_back(fd);
  }
  return fds;
}

void CloseDirs(const std::vector<int>& fds) {
  for (int fd : fds) close(fd);
}

// Runs `op(dirfd, name)` for every file and prints the phase's rate.
template <typename Op>
void RunPhase(const char* phase, const Layout& layout,
              const std::vector<int>& dir_fds, Op op) {
  std::vector<std::string> names;
  names.reserve(layout.per_dir);
  for (int i = 0; i < layout.per_dir; ++i) {
    names.push_back(FileName(layout, i));
  }
  const auto start = std::chrono::steady_clock::now();
  for (int d = 0; d < layout.dirs; ++d) {
    for (const std::string& name : names) {
      op(dir_fds[d], name, d);
    }
  }
  const auto end = std::chrono::steady_clock::now();
  const double seconds = std::chrono::duration<double>(end - start).count();
  const int ops = layout.per_dir * layout.dirs;
  std::printf(
      "phase=%s files=%d dirs=%d name_len=%d seconds=%.6f ops_per_s=%.0f\n",
      phase, ops, layout.dirs, layout.width + 1, seconds,
      seconds > 0 ? ops / seconds : 0.0);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "Times creating, stat-ing and unlinking empty files; prints one "
      "key=value line per phase."};
  Layout layout;
  layout.files = 20000;
  std::vector<std::string> phases = {"create", "stat", "unlink"};
  app.add_option("dir", layout.root, "existing directory to work in")
      ->required()
      ->check(CLI::ExistingDirectory);
  app.add_option("--files", layout.files, "total number of files")
      ->check(CLI::PositiveNumber);
  app.add_option("--dirs", layout.dirs,
                 "spread the files over this many subdirectories")
      ->check(CLI::PositiveNumber);
  app.add_option("--phases", phases, "phases to run, in order")
      ->delimiter(',')
      ->check(CLI::IsMember({"create", "stat", "unlink"}));
  CLI11_PARSE(app, argc, argv);

  if (layout.files % layout.dirs != 0) {
    std::fprintf(stderr, "metaops: --files must be a multiple of --dirs\n");
    return 2;
  }
  layout.per_dir = layout.files / layout.dirs;
  layout.width = static_cast<int>(std::to_string(layout.per_dir - 1).size());

  for (const std::string& phase : phases) {
    const bool create = phase == "create";
    std::vector<int> dir_fds = OpenDirs(layout, create);
    if (create) {
      RunPhase("create", layout, dir_fds,
               [&](int dirfd, const std::string& name, int d) {
                 int fd = openat(dirfd, name.c_str(),
                                 O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
                 if (fd < 0) Die("create", DirPath(layout, d) + "/" + name);
                 close(fd);
               });
    } else if (phase == "stat") {
      auto stat_one = [&](int dirfd, const std::string& name, int d) {
        struct stat st;
        if (fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW)) {
          Die("stat", DirPath(layout, d) + "/" + name);
        }
      };
      // "Warm" means attributes cached (BENCHMARKS.md): one untimed pass
      // first. On FUSE with writeback caching, close() drops the cached
      // block count, so the first stat of a just-written file always asks
      // the daemon.
      for (int d = 0; d < layout.dirs; ++d) {
        for (int i = 0; i < layout.per_dir; ++i) {
          stat_one(dir_fds[d], FileName(layout, i), d);
        }
      }
      RunPhase("stat", layout, dir_fds, stat_one);
    } else {
      RunPhase("unlink", layout, dir_fds,
               [&](int dirfd, const std::string& name, int d) {
                 if (unlinkat(dirfd, name.c_str(), 0) != 0) {
                   Die("unlink", DirPath(layout, d) + "/" + name);
                 }
               });
    }
    CloseDirs(dir_fds);
    if (phase == "unlink") {
      for (int d = 0; d < layout.dirs; ++d) {
        std::string path = DirPath(layout, d);
        if (rmdir(path.c_str()) != 0) Die("rmdir", path);
      }
    }
  }
  return 0;
}
