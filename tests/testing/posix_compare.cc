#include "tests/testing/posix_compare.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace memfuse::testing {
namespace {

// Long data (file contents) is shortened in messages; the full value is still
// compared.
constexpr size_t kMaxShownData = 96;

std::string ShortData(const std::string& data) {
  if (data.size() <= kMaxShownData) return absl::CHexEscape(data);
  return absl::StrCat(absl::CHexEscape(data.substr(0, kMaxShownData)), "... (",
                      data.size(), " bytes)");
}

std::string StatSummary(const struct stat& st) {
  std::string s = absl::StrFormat("mode=0%o nlink=%d uid=%d gid=%d", st.st_mode,
                                  st.st_nlink, st.st_uid, st.st_gid);
  if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) {
    absl::StrAppendFormat(&s, " rdev=%d:%d", major(st.st_rdev),
                          minor(st.st_rdev));
  }
  if (!S_ISDIR(st.st_mode)) absl::StrAppend(&s, " size=", st.st_size);
  return s;
}

Outcome StatOutcome(int ret, const struct stat& st) {
  if (ret < 0) return Sys(ret);
  return SysWith(0, StatSummary(st));
}

uint64_t Fnv1a(absl::string_view data) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : data) h = (h ^ c) * 0x100000001b3ULL;
  return h;
}

// Index of the first differing byte, for messages about long data.
std::string FirstDifference(const std::string& a, const std::string& b) {
  size_t n = std::min(a.size(), b.size());
  size_t i = 0;
  while (i < n && a[i] == b[i]) ++i;
  if (i == n && a.size() == b.size()) return "";
  return absl::StrCat(" (data first differs at byte ", i, ", sizes ", a.size(),
                      " vs ", b.size(), ")");
}

}  // namespace

std::string ErrnoName(int err) {
  if (err == 0) return "0";
  const char* name = strerrorname_np(err);
  return absl::StrCat(name != nullptr ? name : absl::StrCat("errno ", err),
                      " (", strerror(err), ")");
}

std::string ToString(const Outcome& outcome) {
  std::string s = absl::StrCat("ret=", outcome.ret);
  if (outcome.err != 0) absl::StrAppend(&s, " errno=", ErrnoName(outcome.err));
  if (!outcome.data.empty()) {
    absl::StrAppend(&s, " data=\"", ShortData(outcome.data), "\"");
  }
  return s;
}

void PrintTo(const Outcome& outcome, std::ostream* os) {
  *os << ToString(outcome);
}

Outcome Sys(int64_t ret) { return Outcome{ret, ret < 0 ? errno : 0, ""}; }

Outcome SysOk(int64_t ret) {
  Outcome o = Sys(ret);
  if (o.ret > 0) o.ret = 0;
  return o;
}

Outcome SysWith(int64_t ret, std::string data) {
  Outcome o = Sys(ret);
  o.data = std::move(data);
  return o;
}

std::string Dir::operator()(absl::string_view rel) const {
  if (rel.empty()) return root_;
  return absl::StrCat(root_, "/", rel);
}

Outcome Lstat(const std::string& path) {
  struct stat st {};
  int ret = lstat(path.c_str(), &st);
  return StatOutcome(ret, st);
}

Outcome Stat(const std::string& path) {
  struct stat st {};
  int ret = stat(path.c_str(), &st);
  return StatOutcome(ret, st);
}

Outcome Fstat(int fd) {
  struct stat st {};
  int ret = fstat(fd, &st);
  return StatOutcome(ret, st);
}

Outcome ReadFile(const std::string& path) {
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return Sys(-1);
  std::string data;
  char buf[1 << 16];
  for (;;) {
    ssize_t n = read(fd.get(), buf, sizeof(buf));
    if (n < 0) return Sys(-1);
    if (n == 0) break;
    data.append(buf, n);
  }
  return Outcome{0, 0, std::move(data)};
}

Outcome WriteFile(const std::string& path, absl::string_view content,
                  mode_t mode) {
  UniqueFd fd(
      open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode));
  if (!fd.valid()) return Sys(-1);
  size_t done = 0;
  while (done < content.size()) {
    ssize_t n = write(fd.get(), content.data() + done, content.size() - done);
    if (n < 0) return Sys(-1);
    done += n;
  }
  return fd.Close();
}

Outcome ListDir(const std::string& path) {
  DIR* dir = opendir(path.c_str());
  if (dir == nullptr) return Sys(-1);
  std::vector<std::string> names;
  errno = 0;
  while (struct dirent* e = readdir(dir)) {
    absl::string_view name = e->d_name;
    if (name != "." && name != "..") names.emplace_back(name);
  }
  int err = errno;
  closedir(dir);
  if (err != 0) return Outcome{-1, err, ""};
  std::sort(names.begin(), names.end());
  return Outcome{0, 0, absl::StrJoin(names, "\n")};
}

Outcome ReadLink(const std::string& path) {
  char buf[PATH_MAX + 1];
  ssize_t n = readlink(path.c_str(), buf, sizeof(buf));
  if (n < 0) return Sys(-1);
  return Outcome{n, 0, std::string(buf, n)};
}

Outcome TreeSummary(const std::string& root) {
  std::vector<std::string> lines;
  std::vector<std::string> pending = {""};
  while (!pending.empty()) {
    std::string rel = std::move(pending.back());
    pending.pop_back();
    std::string dir_path = rel.empty() ? root : absl::StrCat(root, "/", rel);
    Outcome listing = ListDir(dir_path);
    if (listing.ret < 0) {
      lines.push_back(absl::StrCat(rel, ": ", ToString(listing)));
      continue;
    }
    if (listing.data.empty()) continue;
    for (absl::string_view name : absl::StrSplit(listing.data, '\n')) {
      std::string child =
          rel.empty() ? std::string(name) : absl::StrCat(rel, "/", name);
      std::string path = absl::StrCat(root, "/", child);
      struct stat st {};
      if (lstat(path.c_str(), &st) != 0) {
        lines.push_back(absl::StrCat(child, ": ", ErrnoName(errno)));
        continue;
      }
      std::string line = absl::StrCat(child, ": ", StatSummary(st));
      if (S_ISREG(st.st_mode)) {
        Outcome content = ReadFile(path);
        absl::StrAppend(&line, " content=",
                        content.ret < 0
                            ? ErrnoName(content.err)
                            : absl::StrCat(absl::Hex(Fnv1a(content.data))));
      } else if (S_ISLNK(st.st_mode)) {
        absl::StrAppend(&line, " -> ", ReadLink(path).data);
      } else if (S_ISDIR(st.st_mode)) {
        pending.push_back(child);
      }
      lines.push_back(std::move(line));
    }
  }
  std::sort(lines.begin(), lines.end());
  return Outcome{0, 0, absl::StrJoin(lines, "\n")};
}

const Outcome& Trace::Add(std::string step, Outcome outcome) {
  steps_.emplace_back(std::move(step), std::move(outcome));
  return steps_.back().second;
}

std::string DiffTraces(const Trace& expected, const Trace& actual) {
  std::string diff;
  const auto& e = expected.steps();
  const auto& a = actual.steps();
  for (size_t i = 0; i < std::max(e.size(), a.size()); ++i) {
    if (i >= e.size()) {
      absl::StrAppend(&diff, "  extra step on mount: \"", a[i].first, "\"\n");
      continue;
    }
    if (i >= a.size()) {
      absl::StrAppend(&diff, "  step missing on mount: \"", e[i].first, "\"\n");
      continue;
    }
    if (e[i].first != a[i].first) {
      absl::StrAppend(&diff, "  step #", i, " diverged: native \"", e[i].first,
                      "\" vs mount \"", a[i].first, "\"\n");
      break;
    }
    if (e[i].second != a[i].second) {
      absl::StrAppend(&diff, "  step \"", e[i].first, "\": native ",
                      ToString(e[i].second), ", mount ", ToString(a[i].second),
                      FirstDifference(e[i].second.data, a[i].second.data),
                      "\n");
    }
  }
  return diff;
}

std::string PatternBytes(uint64_t seed, size_t size) {
  std::string out(size, '\0');
  // splitmix64: fast, and different seeds give unrelated streams.
  uint64_t state = seed * 0x9E3779B97F4A7C15ULL + 0x632BE59BD9B4E019ULL;
  for (size_t i = 0; i < size; i += 8) {
    uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    std::memcpy(&out[i], &z, std::min<size_t>(8, size - i));
  }
  return out;
}

UniqueFd& UniqueFd::operator=(UniqueFd&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) close(fd_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

UniqueFd::~UniqueFd() {
  if (fd_ >= 0) close(fd_);
}

Outcome UniqueFd::Close() {
  int ret = close(std::exchange(fd_, -1));
  return Sys(ret);
}

}  // namespace memfuse::testing
