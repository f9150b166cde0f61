#include "tests/e2e/server_tree.h"

#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "mirrord/backend/http_client.h"

namespace memfuse::testing {
namespace {

using mirrord::EncodePathName;

// What the server can hold of one entry of the mount.
struct Seen {
  InvariantKind kind = InvariantKind::kFile;
  uint64_t size = 0;
  std::string bytes;
  std::string target;
  bool executable = false;
};

std::map<std::string, Seen>* walk_into = nullptr;
std::string walk_root;

int Visit(const char* path, const struct stat* st, int type, struct FTW*) {
  const std::string full(path);
  if (full == walk_root) return 0;
  // The key as the server lists it: each component encoded.
  std::vector<std::string> parts =
      absl::StrSplit(full.substr(walk_root.size() + 1), '/');
  for (std::string& part : parts) part = EncodePathName(part);
  Seen seen;
  if (S_ISDIR(st->st_mode)) {
    seen.kind = InvariantKind::kDirectory;
  } else if (S_ISLNK(st->st_mode)) {
    seen.kind = InvariantKind::kSymbolicLink;
    char target[PATH_MAX];
    const ssize_t n = readlink(path, target, sizeof(target));
    if (n >= 0) seen.target.assign(target, n);
  } else if (S_ISREG(st->st_mode)) {
    seen.size = st->st_size;
    seen.executable = (st->st_mode & 0111) != 0;
    const int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      seen.bytes.resize(st->st_size);
      size_t done = 0;
      while (done < seen.bytes.size()) {
        const ssize_t n =
            pread(fd, seen.bytes.data() + done, seen.bytes.size() - done, done);
        if (n <= 0) break;
        done += n;
      }
      seen.bytes.resize(done);
      close(fd);
    }
  } else {
    return 0;  // FIFOs and the like live in fsd only
  }
  (*walk_into)[absl::StrJoin(parts, "/")] = std::move(seen);
  (void)type;
  return 0;
}

// The mount as the server should hold it.
std::map<std::string, Seen> WalkMount(const std::string& root) {
  std::map<std::string, Seen> out;
  walk_into = &out;
  walk_root = root;
  nftw(root.c_str(), Visit, 32, FTW_PHYS);
  walk_into = nullptr;
  return out;
}

}  // namespace

::testing::AssertionResult MountEqualsServer(
    const std::string& mount, const FakeInvariantServer& server,
    uint64_t root) {
  absl::StatusOr<ApiTree> api = WalkApiTree("127.0.0.1", server.port(), root);
  if (!api.ok()) {
    return ::testing::AssertionFailure()
           << "walking the server: " << api.status();
  }
  const std::map<std::string, Seen> local = WalkMount(mount);
  std::vector<std::string> differences;
  for (const auto& [path, seen] : local) {
    auto it = api->find(path);
    if (it == api->end()) {
      differences.push_back(absl::StrCat(path, ": not on the server"));
      continue;
    }
    const ApiEntry& remote = it->second;
    if (remote.kind != seen.kind) {
      differences.push_back(
          absl::StrCat(path, ": kind ", InvariantKindName(remote.kind)));
    } else if (seen.kind == InvariantKind::kFile) {
      if (remote.size != seen.size || remote.bytes != seen.bytes) {
        differences.push_back(absl::StrCat(path, ": ", remote.size,
                                           " bytes on the server, ", seen.size,
                                           " on the mount, or other bytes"));
      }
      if (remote.executable != seen.executable) {
        differences.push_back(
            absl::StrCat(path, ": executable ", remote.executable));
      }
    } else if (seen.kind == InvariantKind::kSymbolicLink &&
               remote.target != seen.target) {
      differences.push_back(
          absl::StrCat(path, ": target ", remote.target, " vs ", seen.target));
    }
  }
  for (const auto& [path, remote] : *api) {
    if (!local.contains(path)) {
      differences.push_back(absl::StrCat(path, ": only on the server"));
    }
  }
  if (differences.empty()) return ::testing::AssertionSuccess();
  if (differences.size() > 20) differences.resize(20);
  return ::testing::AssertionFailure() << absl::StrJoin(differences, "\n");
}


}  // namespace memfuse::testing
