#include "tests/testing/tree_compare.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

namespace memfuse::testing {
namespace {

constexpr size_t kChunk = 1 << 20;
constexpr size_t kMaxShownValue = 48;

std::string ErrnoText(int err) {
  const char* name = strerrorname_np(err);
  return absl::StrCat(name != nullptr ? name : absl::StrCat("errno ", err),
                      " (", strerror(err), ")");
}

const char* TypeName(mode_t mode) {
  switch (mode & S_IFMT) {
    case S_IFREG:
      return "regular file";
    case S_IFDIR:
      return "directory";
    case S_IFLNK:
      return "symlink";
    case S_IFIFO:
      return "FIFO";
    case S_IFSOCK:
      return "socket";
    case S_IFCHR:
      return "character device";
    case S_IFBLK:
      return "block device";
    default:
      return "unknown type";
  }
}

std::string FormatTime(const struct timespec& ts) {
  struct tm tm {};
  time_t secs = ts.tv_sec;
  gmtime_r(&secs, &tm);
  char buf[64];
  strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  return absl::StrFormat("%s.%09d", buf, ts.tv_nsec);
}

// A value for a message: C-escaped, cut to a readable length.
std::string ShowValue(absl::string_view v) {
  if (v.size() <= kMaxShownValue)
    return absl::StrCat("\"", absl::CHexEscape(v), "\"");
  return absl::StrCat("\"", absl::CHexEscape(v.substr(0, kMaxShownValue)),
                      "...\" (", v.size(), " bytes)");
}

std::string Join(const std::string& root, const std::string& rel) {
  return rel == "." ? root : absl::StrCat(root, "/", rel);
}

std::string Child(const std::string& rel, const std::string& name) {
  return rel == "." ? name : absl::StrCat(rel, "/", name);
}

// Reads until `n` bytes or end of file; returns the count or -errno.
ssize_t ReadFull(int fd, char* buf, size_t n) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = read(fd, buf + done, n - done);
    if (r < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (r == 0) break;
    done += r;
  }
  return static_cast<ssize_t>(done);
}

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

// The walk over both trees, collecting differences.
class Comparer {
 public:
  Comparer(const std::string& a, const std::string& b,
           const TreeCompareOptions& options)
      : roots_{a, b}, options_(options) {}

  std::vector<std::string> Run() {
    struct stat st[2];
    for (int side = 0; side < 2; ++side) {
      if (lstat(roots_[side].c_str(), &st[side]) != 0) {
        Add(".", absl::StrCat("lstat of root ", roots_[side],
                              " failed: ", ErrnoText(errno)));
        return std::move(differences_);
      }
      if (!S_ISDIR(st[side].st_mode)) {
        Add(".", absl::StrCat("root ", roots_[side], " is a ",
                              TypeName(st[side].st_mode)));
        return std::move(differences_);
      }
    }
    if (options_.compare_root) CompareAttributes(".", st[0], st[1]);
    CompareDirectory(".");
    if (options_.compare_hard_links) CompareLinkGroups();
    return std::move(differences_);
  }

 private:
  using InodeKey = std::pair<dev_t, ino_t>;

  bool Full() const {
    return options_.max_differences != 0 &&
           differences_.size() >= options_.max_differences;
  }

  void Add(const std::string& rel, const std::string& what) {
    if (Full()) return;
    differences_.push_back(absl::StrCat(rel, ": ", what));
  }

  std::string Path(int side, const std::string& rel) const {
    return Join(roots_[side], rel);
  }

  // Sorted names in directory `rel` of `side`, or nullopt (reported).
  std::optional<std::vector<std::string>> List(int side,
                                               const std::string& rel) {
    DIR* dir = opendir(Path(side, rel).c_str());
    if (dir == nullptr) {
      Add(rel, absl::StrCat("cannot list in ", SideName(side), ": ",
                            ErrnoText(errno)));
      return std::nullopt;
    }
    std::vector<std::string> names;
    errno = 0;
    while (struct dirent* e = readdir(dir)) {
      absl::string_view name = e->d_name;
      if (name != "." && name != "..") names.emplace_back(name);
      errno = 0;
    }
    int err = errno;
    closedir(dir);
    if (err != 0) {
      Add(rel, absl::StrCat("readdir in ", SideName(side),
                            " failed: ", ErrnoText(err)));
      return std::nullopt;
    }
    std::sort(names.begin(), names.end());
    return names;
  }

  static const char* SideName(int side) { return side == 0 ? "a" : "b"; }

  void CompareDirectory(const std::string& rel) {
    if (Full()) return;
    std::optional<std::vector<std::string>> names[2] = {List(0, rel),
                                                        List(1, rel)};
    if (!names[0] || !names[1]) return;
    auto ia = names[0]->begin(), ib = names[1]->begin();
    while (ia != names[0]->end() || ib != names[1]->end()) {
      if (Full()) return;
      if (ib == names[1]->end() || (ia != names[0]->end() && *ia < *ib)) {
        OnlyIn(0, Child(rel, *ia++));
      } else if (ia == names[0]->end() || *ib < *ia) {
        OnlyIn(1, Child(rel, *ib++));
      } else {
        CompareEntry(Child(rel, *ia));
        ++ia;
        ++ib;
      }
    }
  }

  void OnlyIn(int side, const std::string& rel) {
    struct stat st;
    std::string type = lstat(Path(side, rel).c_str(), &st) == 0
                           ? TypeName(st.st_mode)
                           : "vanished";
    Add(rel, absl::StrCat("only in ", SideName(side), " (", type, ")"));
  }

  void CompareEntry(const std::string& rel) {
    struct stat st[2];
    for (int side = 0; side < 2; ++side) {
      if (lstat(Path(side, rel).c_str(), &st[side]) != 0) {
        Add(rel, absl::StrCat("lstat in ", SideName(side),
                              " failed: ", ErrnoText(errno)));
        return;
      }
    }
    mode_t type = st[0].st_mode & S_IFMT;
    if (type != (st[1].st_mode & S_IFMT)) {
      Add(rel, absl::StrCat("type ", TypeName(st[0].st_mode), " vs ",
                            TypeName(st[1].st_mode)));
      return;
    }
    CompareAttributes(rel, st[0], st[1]);
    if (type != S_IFDIR) {
      for (int side = 0; side < 2; ++side) {
        InodeKey key{st[side].st_dev, st[side].st_ino};
        inode_of_[side][rel] = key;
        names_of_[side][key].push_back(rel);
      }
    }
    switch (type) {
      case S_IFREG:
        CompareContents(rel, st[0], st[1]);
        break;
      case S_IFLNK:
        CompareSymlinks(rel);
        break;
      case S_IFDIR:
        CompareDirectory(rel);
        break;
      default:
        break;
    }
  }

  // Everything but the contents; the types are equal.
  void CompareAttributes(const std::string& rel, const struct stat& a,
                         const struct stat& b) {
    if (options_.compare_mode && (a.st_mode & 07777) != (b.st_mode & 07777)) {
      Add(rel, absl::StrFormat("mode %04o vs %04o", a.st_mode & 07777,
                               b.st_mode & 07777));
    }
    if (options_.compare_owner) {
      if (a.st_uid != b.st_uid) {
        Add(rel, absl::StrCat("uid ", a.st_uid, " vs ", b.st_uid));
      }
      if (a.st_gid != b.st_gid) {
        Add(rel, absl::StrCat("gid ", a.st_gid, " vs ", b.st_gid));
      }
    }
    if ((S_ISCHR(a.st_mode) || S_ISBLK(a.st_mode)) && a.st_rdev != b.st_rdev) {
      Add(rel, absl::StrCat("rdev ", major(a.st_rdev), ":", minor(a.st_rdev),
                            " vs ", major(b.st_rdev), ":", minor(b.st_rdev)));
    }
    bool mtime;
    switch (a.st_mode & S_IFMT) {
      case S_IFDIR:
        mtime = options_.compare_dir_mtime;
        break;
      case S_IFLNK:
        mtime = options_.compare_symlink_mtime;
        break;
      default:
        mtime = options_.compare_file_mtime;
        break;
    }
    if (mtime && (a.st_mtim.tv_sec != b.st_mtim.tv_sec ||
                  a.st_mtim.tv_nsec != b.st_mtim.tv_nsec)) {
      Add(rel, absl::StrCat("mtime ", FormatTime(a.st_mtim), " vs ",
                            FormatTime(b.st_mtim)));
    }
    if (options_.compare_xattrs) CompareXattrs(rel);
  }

  bool IgnoredXattr(absl::string_view name) const {
    if (!absl::StartsWith(name, "user.")) return true;
    for (const std::string& prefix : options_.ignored_xattr_prefixes) {
      if (absl::StartsWith(name, prefix)) return true;
    }
    return false;
  }

  // The compared user.* xattrs of `rel` on `side`, or nullopt (reported).
  std::optional<std::map<std::string, std::string>> Xattrs(
      int side, const std::string& rel) {
    std::string path = Path(side, rel);
    std::string list;
    for (;;) {
      ssize_t n = llistxattr(path.c_str(), nullptr, 0);
      if (n < 0 && errno != ENOTSUP) {
        Add(rel, absl::StrCat("listxattr in ", SideName(side),
                              " failed: ", ErrnoText(errno)));
        return std::nullopt;
      }
      if (n <= 0) {  // none, or a filesystem without xattrs
        list.clear();
        break;
      }
      list.resize(n);
      n = llistxattr(path.c_str(), list.data(), list.size());
      if (n >= 0) {
        list.resize(n);
        break;
      }
      if (errno != ERANGE) {  // ERANGE: the list grew meanwhile; ask again
        Add(rel, absl::StrCat("listxattr in ", SideName(side),
                              " failed: ", ErrnoText(errno)));
        return std::nullopt;
      }
    }
    std::map<std::string, std::string> out;
    for (absl::string_view name : absl::StrSplit(list, '\0')) {
      if (name.empty() || IgnoredXattr(name)) continue;
      std::string key(name);
      std::string value;
      for (;;) {
        ssize_t n = lgetxattr(path.c_str(), key.c_str(), nullptr, 0);
        if (n < 0) {
          Add(rel, absl::StrCat("getxattr ", key, " in ", SideName(side),
                                " failed: ", ErrnoText(errno)));
          return std::nullopt;
        }
        value.resize(n);
        if (n == 0) break;
        n = lgetxattr(path.c_str(), key.c_str(), value.data(), value.size());
        if (n >= 0) {
          value.resize(n);
          break;
        }
        if (errno != ERANGE) {
          Add(rel, absl::StrCat("getxattr ", key, " in ", SideName(side),
                                " failed: ", ErrnoText(errno)));
          return std::nullopt;
        }
      }
      out.emplace(std::move(key), std::move(value));
    }
    return out;
  }

  void CompareXattrs(const std::string& rel) {
    std::optional<std::map<std::string, std::string>> x[2] = {Xattrs(0, rel),
                                                              Xattrs(1, rel)};
    if (!x[0] || !x[1]) return;
    auto ia = x[0]->begin(), ib = x[1]->begin();
    while (ia != x[0]->end() || ib != x[1]->end()) {
      if (ib == x[1]->end() || (ia != x[0]->end() && ia->first < ib->first)) {
        Add(rel, absl::StrCat("xattr ", ia->first, " only in a (value ",
                              ShowValue(ia->second), ")"));
        ++ia;
      } else if (ia == x[0]->end() || ib->first < ia->first) {
        Add(rel, absl::StrCat("xattr ", ib->first, " only in b (value ",
                              ShowValue(ib->second), ")"));
        ++ib;
      } else {
        if (ia->second != ib->second) {
          Add(rel, absl::StrCat("xattr ", ia->first, " value ",
                                ShowValue(ia->second), " vs ",
                                ShowValue(ib->second)));
        }
        ++ia;
        ++ib;
      }
    }
  }

  void CompareSymlinks(const std::string& rel) {
    std::string target[2];
    for (int side = 0; side < 2; ++side) {
      std::string buf(PATH_MAX + 1, '\0');
      ssize_t n = readlink(Path(side, rel).c_str(), buf.data(), buf.size());
      if (n < 0) {
        Add(rel, absl::StrCat("readlink in ", SideName(side),
                              " failed: ", ErrnoText(errno)));
        return;
      }
      buf.resize(n);
      target[side] = std::move(buf);
    }
    if (target[0] != target[1]) {
      Add(rel, absl::StrCat("symlink target ", ShowValue(target[0]), " vs ",
                            ShowValue(target[1])));
    }
  }

  void CompareContents(const std::string& rel, const struct stat& a,
                       const struct stat& b) {
    if (a.st_size != b.st_size) {
      Add(rel, absl::StrCat("size ", a.st_size, " vs ", b.st_size));
    }
    int fds[2];
    for (int side = 0; side < 2; ++side) {
      fds[side] = open(Path(side, rel).c_str(),
                       O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
      if (fds[side] < 0) {
        Add(rel, absl::StrCat("open in ", SideName(side),
                              " failed: ", ErrnoText(errno)));
        if (side == 1) close(fds[0]);
        return;
      }
    }
    Fd fa(fds[0]), fb(fds[1]);
    buffers_[0].resize(kChunk);
    buffers_[1].resize(kChunk);
    uint64_t offset = 0;
    for (;;) {
      ssize_t n[2];
      for (int side = 0; side < 2; ++side) {
        n[side] = ReadFull(fds[side], buffers_[side].data(), kChunk);
        if (n[side] < 0) {
          Add(rel, absl::StrCat("read in ", SideName(side), " at offset ",
                                offset, " failed: ", ErrnoText(-n[side])));
          return;
        }
      }
      size_t common = std::min(n[0], n[1]);
      auto [pa, pb] = std::mismatch(
          buffers_[0].data(), buffers_[0].data() + common, buffers_[1].data());
      if (pa != buffers_[0].data() + common) {
        uint64_t at = offset + (pa - buffers_[0].data());
        Add(rel, absl::StrFormat("contents differ at offset %d (byte 0x%02x "
                                 "vs 0x%02x)",
                                 at, static_cast<unsigned char>(*pa),
                                 static_cast<unsigned char>(*pb)));
        return;
      }
      offset += common;
      if (n[0] != n[1]) {
        // The sizes differ and one side ended: lstat said so already, unless
        // the file changed under us.
        if (a.st_size == b.st_size) {
          Add(rel, absl::StrCat("read ended at offset ", offset, " in ",
                                SideName(n[0] < n[1] ? 0 : 1),
                                " although both have size ", a.st_size));
        }
        return;
      }
      if (n[0] < static_cast<ssize_t>(kChunk)) return;  // both at end
    }
  }

  // The partition of the common non-directory paths into inodes must be the
  // same on both sides.
  void CompareLinkGroups() {
    auto common_group = [&](int side, const std::string& rel) {
      std::vector<std::string> group;
      for (const std::string& name : names_of_[side][inode_of_[side][rel]]) {
        if (inode_of_[1 - side].count(name)) group.push_back(name);
      }
      std::sort(group.begin(), group.end());
      return group;
    };
    std::set<std::pair<std::vector<std::string>, std::vector<std::string>>>
        reported;
    for (const auto& entry : inode_of_[0]) {
      const std::string& rel = entry.first;
      if (Full()) return;
      std::vector<std::string> ga = common_group(0, rel);
      std::vector<std::string> gb = common_group(1, rel);
      if (ga == gb || !reported.emplace(ga, gb).second) continue;
      auto others = [&](const std::vector<std::string>& g) {
        std::vector<std::string> o;
        for (const std::string& n : g) {
          if (n != rel) o.push_back(n);
        }
        return o.empty() ? std::string("no other name")
                         : absl::StrCat("{", absl::StrJoin(o, ", "), "}");
      };
      Add(rel, absl::StrCat("hard-linked with ", others(ga), " in a but with ",
                            others(gb), " in b"));
    }
  }

  const std::string roots_[2];
  const TreeCompareOptions& options_;
  std::vector<std::string> differences_;
  std::string buffers_[2];
  // Non-directory entries present on both sides with the same type.
  std::map<std::string, InodeKey> inode_of_[2];
  std::map<InodeKey, std::vector<std::string>> names_of_[2];
};

}  // namespace

std::vector<std::string> CompareTrees(const std::string& a,
                                      const std::string& b,
                                      const TreeCompareOptions& options) {
  return Comparer(a, b, options).Run();
}

std::string FormatDifferences(const std::vector<std::string>& differences,
                              size_t limit) {
  if (differences.empty()) return "no differences";
  std::string out =
      absl::StrCat(differences.size(),
                   differences.size() == 1 ? " difference:" : " differences:");
  for (size_t i = 0; i < differences.size() && i < limit; ++i) {
    absl::StrAppend(&out, "\n  ", differences[i]);
  }
  if (differences.size() > limit) {
    absl::StrAppend(&out, "\n  ... and ", differences.size() - limit, " more");
  }
  return out;
}

}  // namespace memfuse::testing
