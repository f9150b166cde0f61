#include "tests/e2e/workload.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <functional>
#include <set>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/testing/posix_compare.h"

namespace memfuse::testing {
namespace {

// Failures reported per Ops / per workload before going quiet: the first
// ones say what broke, the rest would only bury them.
constexpr int kMaxReported = 20;

// Writes all of `data` at `offset` (pwrite may be short); false on error.
bool PWriteAll(int fd, absl::string_view data, off_t offset) {
  while (!data.empty()) {
    ssize_t n = pwrite(fd, data.data(), data.size(), offset);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = EIO;
      return false;
    }
    data.remove_prefix(n);
    offset += n;
  }
  return true;
}

// Where two byte strings first differ, for messages.
std::string DescribeDifference(const std::string& got,
                               const std::string& want) {
  size_t n = std::min(got.size(), want.size());
  size_t i = std::mismatch(got.begin(), got.begin() + n, want.begin()).first -
             got.begin();
  std::string s = absl::StrCat("size ", got.size(), ", expected ", want.size());
  if (i < n) {
    absl::StrAppend(&s, "; first difference at offset ", i);
  } else {
    absl::StrAppend(&s, "; the common prefix matches");
  }
  return s;
}

// Regular files under `dir` (relative to `root`), recursively.
void ListFiles(const std::string& root, const std::string& dir,
               std::vector<std::string>* out) {
  DIR* d = opendir(absl::StrCat(root, "/", dir).c_str());
  if (d == nullptr) {
    ADD_FAILURE() << "opendir " << root << "/" << dir << ": "
                  << ErrnoName(errno);
    return;
  }
  std::vector<std::string> names;
  while (struct dirent* e = readdir(d)) {
    absl::string_view name = e->d_name;
    if (name != "." && name != "..") names.emplace_back(name);
  }
  closedir(d);
  for (const std::string& name : names) {
    std::string rel = absl::StrCat(dir, "/", name);
    struct stat st;
    if (lstat(absl::StrCat(root, "/", rel).c_str(), &st) != 0) {
      ADD_FAILURE() << "lstat " << root << "/" << rel << ": "
                    << ErrnoName(errno);
    } else if (S_ISDIR(st.st_mode)) {
      ListFiles(root, rel, out);
    } else {
      out->push_back(rel);
    }
  }
}

}  // namespace

std::string StreamChunk(uint64_t seed, uint64_t index, size_t size) {
  return PatternBytes(seed * 1000003 + index, size);
}

bool FileHoldsStream(const std::string& path, uint64_t seed, uint64_t size,
                     std::string* why) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    *why = absl::StrCat("open ", path, ": ", ErrnoName(errno));
    return false;
  }
  struct stat st;
  fstat(fd, &st);
  bool ok = true;
  if (static_cast<uint64_t>(st.st_size) != size) {
    *why = absl::StrCat(path, ": size ", st.st_size, ", expected ", size);
    ok = false;
  }
  std::string buf(kMiB, '\0');
  for (uint64_t index = 0; ok && index * kMiB < size; ++index) {
    size_t len = std::min<uint64_t>(kMiB, size - index * kMiB);
    size_t got = 0;
    while (got < len) {
      ssize_t n = pread(fd, buf.data() + got, len - got, index * kMiB + got);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      got += n;
    }
    std::string want = StreamChunk(seed, index, len);
    if (got != len || buf.compare(0, len, want) != 0) {
      std::string have = buf.substr(0, got);
      *why = absl::StrCat(path, ": the 1 MiB chunk at offset ", index * kMiB,
                          " differs: ", DescribeDifference(have, want));
      ok = false;
    }
  }
  close(fd);
  return ok;
}

// --- Ops ---

std::string Ops::Path(absl::string_view rel) const {
  return absl::StrCat(root_, "/", rel);
}

bool Ops::Check(bool ok, absl::string_view op, absl::string_view rel) {
  if (ok) return true;
  int err = errno;
  if (++failures_ <= kMaxReported) {
    ADD_FAILURE() << root_ << ": " << op << " " << rel << ": "
                  << ErrnoName(err);
  }
  errno = err;
  return false;
}

void Ops::Mkdir(absl::string_view rel, mode_t mode) {
  Check(mkdir(Path(rel).c_str(), mode) == 0, "mkdir", rel);
}

void Ops::WriteFile(absl::string_view rel, absl::string_view data,
                    mode_t mode) {
  int fd = Open(rel, O_WRONLY | O_CREAT | O_TRUNC, mode);
  if (fd < 0) return;
  PWriteFd(fd, rel, 0, data);
  Close(fd, rel);
}

void Ops::WriteStream(absl::string_view rel, uint64_t seed, uint64_t size) {
  int fd = Open(rel, O_WRONLY | O_CREAT | O_TRUNC);
  if (fd < 0) return;
  for (uint64_t index = 0; index * kMiB < size; ++index) {
    std::string chunk =
        StreamChunk(seed, index, std::min<uint64_t>(kMiB, size - index * kMiB));
    // write(2), not pwrite: a plain sequential writer.
    absl::string_view rest = chunk;
    bool ok = true;
    while (ok && !rest.empty()) {
      ssize_t n = write(fd, rest.data(), rest.size());
      if (n < 0 && errno == EINTR) continue;
      ok = Check(n > 0, "write", rel);
      if (ok) rest.remove_prefix(n);
    }
    if (!ok) break;
  }
  Close(fd, rel);
}

void Ops::PWrite(absl::string_view rel, off_t offset, absl::string_view data) {
  int fd = Open(rel, O_WRONLY);
  if (fd < 0) return;
  PWriteFd(fd, rel, offset, data);
  Close(fd, rel);
}

void Ops::Truncate(absl::string_view rel, off_t size) {
  Check(truncate(Path(rel).c_str(), size) == 0, "truncate", rel);
}

void Ops::Rename(absl::string_view from, absl::string_view to, unsigned flags) {
  Check(renameat2(AT_FDCWD, Path(from).c_str(), AT_FDCWD, Path(to).c_str(),
                  flags) == 0,
        absl::StrCat("renameat2(flags=", flags, ") to ", to, " of"), from);
}

void Ops::RenameFails(absl::string_view from, absl::string_view to,
                      unsigned flags, int expected_errno) {
  int r = renameat2(AT_FDCWD, Path(from).c_str(), AT_FDCWD, Path(to).c_str(),
                    flags);
  int err = errno;
  if (r != -1 || err != expected_errno) {
    ++failures_;
    ADD_FAILURE() << root_ << ": renameat2(" << from << ", " << to
                  << ", flags=" << flags << ") returned " << r << " "
                  << (r == 0 ? "" : ErrnoName(err)) << ", expected "
                  << ErrnoName(expected_errno);
  }
}

void Ops::Link(absl::string_view from, absl::string_view to) {
  Check(link(Path(from).c_str(), Path(to).c_str()) == 0,
        absl::StrCat("link to ", to, " of"), from);
}

void Ops::Symlink(absl::string_view target, absl::string_view rel) {
  Check(symlink(std::string(target).c_str(), Path(rel).c_str()) == 0,
        absl::StrCat("symlink to ", target, " at"), rel);
}

void Ops::Mkfifo(absl::string_view rel, mode_t mode) {
  Check(mkfifo(Path(rel).c_str(), mode) == 0, "mkfifo", rel);
}

void Ops::Unlink(absl::string_view rel) {
  Check(unlink(Path(rel).c_str()) == 0, "unlink", rel);
}

void Ops::Rmdir(absl::string_view rel) {
  Check(rmdir(Path(rel).c_str()) == 0, "rmdir", rel);
}

void Ops::Chmod(absl::string_view rel, mode_t mode) {
  Check(chmod(Path(rel).c_str(), mode) == 0, absl::StrCat("chmod ", mode), rel);
}

void Ops::Chown(absl::string_view rel, uid_t uid, gid_t gid) {
  Check(lchown(Path(rel).c_str(), uid, gid) == 0,
        absl::StrCat("lchown ", uid, ":", gid), rel);
}

void Ops::SetXattr(absl::string_view rel, absl::string_view name,
                   absl::string_view value, int flags) {
  std::string n(name);
  Check(lsetxattr(Path(rel).c_str(), n.c_str(), value.data(), value.size(),
                  flags) == 0,
        absl::StrCat("lsetxattr ", name, " (flags ", flags, ")"), rel);
}

void Ops::RemoveXattr(absl::string_view rel, absl::string_view name) {
  std::string n(name);
  Check(lremovexattr(Path(rel).c_str(), n.c_str()) == 0,
        absl::StrCat("lremovexattr ", name), rel);
}

void Ops::SetTimes(absl::string_view rel, time_t sec, long nsec) {
  struct timespec ts[2] = {{sec, nsec}, {sec, nsec}};
  Check(utimensat(AT_FDCWD, Path(rel).c_str(), ts, AT_SYMLINK_NOFOLLOW) == 0,
        "utimensat", rel);
}

int Ops::Open(absl::string_view rel, int flags, mode_t mode) {
  int fd = open(Path(rel).c_str(), flags | O_CLOEXEC, mode);
  Check(fd >= 0, "open", rel);
  return fd;
}

void Ops::PWriteFd(int fd, absl::string_view rel, off_t offset,
                   absl::string_view data) {
  Check(PWriteAll(fd, data, offset), absl::StrCat("pwrite at ", offset, " to"),
        rel);
}

void Ops::Close(int fd, absl::string_view rel) {
  Check(close(fd) == 0, "close", rel);
}

std::string Ops::Read(absl::string_view rel, bool drop_cache) {
  int fd = Open(rel, O_RDONLY);
  if (fd < 0) return "";
  if (drop_cache) posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  std::string out;
  char buf[64 * 1024];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (!Check(n >= 0, "read", rel) || n == 0) break;
    out.append(buf, n);
  }
  close(fd);
  return out;
}

// --- the workloads ---

void RunRichWorkload(Ops& o) {
  // Nested directories, five levels.
  o.Mkdir("top");
  o.Mkdir("top/l1");
  o.Mkdir("top/l1/l2");
  o.Mkdir("top/l1/l2/l3");
  o.Mkdir("top/l1/l2/l3/l4");

  // A 20 MiB file and small files.
  o.WriteStream("top/l1/big", 1, 20 * kMiB);
  for (int i = 0; i < 40; ++i) {
    o.WriteFile(absl::StrCat("top/l1/l2/s", i),
                PatternBytes(100 + i, 37 * i + 1));
  }
  o.WriteFile("top/l1/l2/l3/l4/deep", "deep file\n");
  o.WriteFile("empty", "");

  // Overwrites in the middle (across block boundaries) and past the end.
  o.PWrite("top/l1/big", 5 * kMiB - 12345, PatternBytes(2, 300 * kKiB));
  o.PWrite("top/l1/big", 19 * kMiB + 1, PatternBytes(3, 2 * kMiB));
  o.PWrite("top/l1/l2/s7", 10, "MIDDLE");
  o.PWrite("top/l1/l2/s8", 500, "past the end, after a hole");

  // Truncates: shrink and extend.
  o.WriteStream("top/shrink", 4, 3 * kMiB);
  o.Truncate("top/shrink", kMiB + 1);
  o.WriteFile("top/extend", PatternBytes(5, 1000));
  o.Truncate("top/extend", 3 * kMiB + 5);
  o.PWrite("top/extend", 2 * kMiB, "in the hole");
  o.Truncate("top/l1/big", 15 * kMiB + 7);
  o.WriteFile("top/zeroed", "soon empty");
  o.Truncate("top/zeroed", 0);

  // A directory renamed right after many writes inside it (no fsync in
  // between), then moved under another parent, then written again.
  o.Mkdir("q");
  for (int i = 0; i < 150; ++i) {
    o.WriteFile(absl::StrCat("q/f", i),
                PatternBytes(200 + i, 4096 * (i % 16) + i));
  }
  o.Rename("q", "q-renamed");
  for (int i = 0; i < 20; ++i) {
    o.PWrite(absl::StrCat("q-renamed/f", i), 100, "after the rename");
  }
  o.Rename("q-renamed", "top/l1/l2/q-moved");
  o.WriteFile("top/l1/l2/q-moved/new", "written after the move");

  // A file kept open while its directory moves.
  int fd = o.Open("top/l1/l2/l3/open-across", O_CREAT | O_WRONLY | O_TRUNC);
  if (fd >= 0) {
    o.PWriteFd(fd, "open-across", 0, StreamChunk(6, 0, kMiB));
    o.Rename("top/l1/l2/l3", "top/l3-moved");
    o.PWriteFd(fd, "open-across", kMiB, StreamChunk(6, 1, kMiB));
    o.Close(fd, "open-across");
  }

  // Rename over an existing file, and a directory over an empty one.
  o.WriteFile("over-src", "source");
  o.WriteFile("top/over-dst", "destination, longer than the source");
  o.Rename("over-src", "top/over-dst");
  o.Mkdir("dir-src");
  o.WriteFile("dir-src/x", "x");
  o.Mkdir("top/dir-dst");
  o.Rename("dir-src", "top/dir-dst");

  // RENAME_EXCHANGE of two files, and of a directory with a file.
  o.WriteFile("ex1", "first");
  o.WriteFile("top/ex2", "second, different");
  o.Rename("ex1", "top/ex2", RENAME_EXCHANGE);
  o.Mkdir("exdir");
  o.WriteFile("exdir/inside", "in the directory");
  o.WriteFile("top/exfile", "a file");
  o.Rename("exdir", "top/exfile", RENAME_EXCHANGE);

  // RENAME_NOREPLACE: to a new name, and refused over an existing one.
  o.WriteFile("nr1", "no replace");
  o.Rename("nr1", "top/nr2", RENAME_NOREPLACE);
  o.WriteFile("nr3", "stays");
  o.RenameFails("nr3", "top/nr2", RENAME_NOREPLACE, EEXIST);

  // Hard links; the first name goes away; a write through another name.
  o.WriteFile("h1", PatternBytes(6, 70000));
  o.Link("h1", "top/l1/h2");
  o.Link("h1", "top/h3");
  o.Unlink("h1");
  o.PWrite("top/h3", 5, "written via h3");
  o.WriteFile("h4", "two names");
  o.Link("h4", "top/l3-moved/h5");

  // Symlinks: relative, absolute, dangling, to a directory.
  o.Symlink("top/l1/big", "sl-rel");
  o.Symlink("/etc/passwd", "top/sl-abs");
  o.Symlink("../nowhere/x", "top/l1/sl-dangling");
  o.Symlink("l1", "top/sl-dir");

  // FIFOs.
  o.Mkfifo("fifo", 0640);
  o.Mkfifo("top/l1/l2/fifo2", 0600);

  // User xattrs: create, replace, remove; binary, empty and long values.
  o.SetXattr("top/l1/l2/s1", "user.k1", "v1", XATTR_CREATE);
  o.SetXattr("top/l1/l2/s1", "user.k1", "v1, replaced", XATTR_REPLACE);
  o.SetXattr("top/l1/l2/s1", "user.k2", "second");
  o.SetXattr("top/l1", "user.dir", "on a directory");
  o.SetXattr("top/h3", "user.bin", absl::string_view("\0\x01\xff", 3));
  o.SetXattr("top/l1/l2/s2", "user.gone", "removed below");
  o.RemoveXattr("top/l1/l2/s2", "user.gone");
  o.SetXattr("top/l1/l2/s3", "user.big", PatternBytes(7, 3000));
  o.SetXattr("top/l1/l2/s3", "user.empty", "");

  // Modes, odd ones included.
  o.Chmod("top/l1/l2/s4", 0604);
  o.Chmod("top/l1/l2/s5", 0400);
  o.Chmod("top/l1/l2/s6", 0);
  o.Chmod("top/l1/l2/s9", 0755);
  o.Chmod("top/l3-moved", 0711);
  o.Chmod("top/dir-dst", 01777);
  o.Chmod("top/l1/l2/q-moved", 0750);

  // Owners: files, a directory, a symlink itself, a FIFO.
  o.Chown("top/l1/l2/s10", 1234, 5678);
  o.Chown("top/l1/l2/s11", 4321, 0);
  o.Chown("top/l3-moved", 4321, 8765);
  o.Chown("top/sl-abs", 2222, 3333);
  o.Chown("fifo", 1111, 2222);

  // Explicit past times (after the last write to each).
  o.SetTimes("top/l1/l2/s12", 946684800, 123456789);  // 2000-01-01
  o.SetTimes("top/l1/big", 1000000000, 1);
  o.SetTimes("top/h3", 1234567890, 999999999);  // three names
  o.SetTimes("top/l1/l2/s10", 86400, 0);
  o.SetTimes("top/sl-abs", 1500000000, 500);  // the symlink itself
  o.SetTimes("fifo", 1400000000, 0);

  // Unlink and rmdir, also of data just written.
  o.WriteStream("gone", 8, 2 * kMiB);
  o.Unlink("gone");
  o.Mkdir("gone-dir");
  o.Mkdir("gone-dir/sub");
  o.WriteFile("gone-dir/sub/f", "short-lived");
  o.Unlink("gone-dir/sub/f");
  o.Rmdir("gone-dir/sub");
  o.Rmdir("gone-dir");
  for (int i = 24; i < 40; i += 5) o.Unlink(absl::StrCat("top/l1/l2/s", i));
  o.Unlink("top/l1/l2/q-moved/f149");

  // An unlinked file still open and written: it must not reach the mirror.
  fd = o.Open("open-unlinked", O_CREAT | O_RDWR | O_TRUNC);
  if (fd >= 0) {
    o.PWriteFd(fd, "open-unlinked", 0, StreamChunk(9, 0, kMiB));
    o.Unlink("open-unlinked");
    o.PWriteFd(fd, "open-unlinked", kMiB, "more after the unlink");
    o.Close(fd, "open-unlinked");
  }
}

void RunFollowUpWorkload(Ops& o) {
  o.PWrite("top/l1/big", 15 * kMiB + 7, "appended after the remount");
  o.PWrite("top/l1/l2/s3", 3, "XYZ");
  o.Mkdir("after");
  o.Mkdir("after/deeper");
  o.WriteStream("after/deeper/new", 10, 3 * kMiB + 3);
  o.Rename("top/l3-moved", "after/l3");  // chowned, holds a hard link
  o.Chmod("top/l1/l2/s4", 0640);
  o.SetXattr("top/l1/l2/s1", "user.k1", "third value", XATTR_REPLACE);
  o.RemoveXattr("top/l1/l2/s1", "user.k2");
  o.Unlink("top/l1/h2");
  o.Link("top/h3", "after/h6");
  o.Unlink("top/l1/l2/q-moved/f0");
  o.Truncate("top/shrink", 10);
  o.Rename("top/ex2", "top/l1/l2/s5");
  o.SetTimes("after/deeper/new", 1600000000, 42);
}

void PopulateNativeTree(Ops& o) {
  o.Mkdir("docs");
  o.Mkdir("docs/a", 0750);
  o.Mkdir("docs/a/b", 0711);
  o.Mkdir("docs/a/b/c", 0700);
  o.Mkdir("shared", 01777);
  o.Mkdir("empty-dir", 0555);

  o.WriteFile("docs/readme.txt", "hello mirror\n");
  o.WriteStream("docs/a/five-mib", 11, 5 * kMiB + 17);
  o.WriteFile("docs/a/b/c/deep.bin", PatternBytes(12, 70000), 0600);
  o.WriteFile("empty", "", 0604);
  o.WriteFile("sparse", "");
  o.Truncate("sparse", 8 * kMiB);
  o.PWrite("sparse", 4 * kMiB, "in the middle of a hole");
  o.WriteFile("name with spaces", "spaces");
  o.WriteFile(
      "\xc3\xbcnic\xc3\xb8"
      "de-\xe5\x90\x8d\xe5\x89\x8d",
      "utf-8");
  o.WriteFile(std::string(255, 'L'), "a 255-byte name");
  o.WriteFile("exec", "#!/bin/sh\necho hi\n", 0755);
  o.Chmod("exec", 04755);

  o.WriteFile("docs/linked", "three names");
  o.Link("docs/linked", "docs/a/link2");
  o.Link("docs/linked", "shared/link3");

  o.Symlink("readme.txt", "docs/sym");
  o.Symlink("/nonexistent/abs", "abs-dangling");
  o.Symlink("docs/a/b", "dir-link");
  o.Mkfifo("docs/fifo", 0620);

  o.SetXattr("docs/readme.txt", "user.author", "the test");
  o.SetXattr("docs/a", "user.dir", "a directory's attribute");
  o.SetXattr("docs/linked", "user.bin", absl::string_view("\0\xfe", 2));
  o.SetXattr("empty", "user.empty", "");

  o.Chown("docs/a/b", 1000, 1000);
  o.Chown("docs/readme.txt", 1234, 5678);
  o.Chown("docs/sym", 4321, 8765);
  o.Chown("docs/fifo", 7, 8);
  o.Chown("shared/link3", 55, 66);

  SetDistinctTimes(o.root(), 1100000000);
}

void SetDistinctTimes(const std::string& root, time_t first) {
  long counter = 0;
  // Post-order, sorted, so that the result is deterministic.
  std::function<void(const std::string&)> visit = [&](const std::string& path) {
    struct stat st;
    if (lstat(path.c_str(), &st) != 0) {
      ADD_FAILURE() << "lstat " << path << ": " << ErrnoName(errno);
      return;
    }
    if (S_ISDIR(st.st_mode)) {
      std::vector<std::string> names;
      if (DIR* d = opendir(path.c_str())) {
        while (struct dirent* e = readdir(d)) {
          absl::string_view name = e->d_name;
          if (name != "." && name != "..") names.emplace_back(name);
        }
        closedir(d);
      }
      std::sort(names.begin(), names.end());
      for (const std::string& name : names) visit(path + "/" + name);
    }
    ++counter;
    struct timespec ts[2];
    ts[0] = ts[1] = {first + counter * 1000, (counter * 7919) % 1000000000};
    if (utimensat(AT_FDCWD, path.c_str(), ts, AT_SYMLINK_NOFOLLOW) != 0) {
      ADD_FAILURE() << "utimensat " << path << ": " << ErrnoName(errno);
    }
  };
  visit(root);
}

// --- ChurnWorkload ---

ChurnWorkload::ChurnWorkload(std::string root, uint64_t seed)
    : ops_(std::move(root)), rng_(seed) {
  ops_.Mkdir("churn");
}

void ChurnWorkload::Run(const std::atomic<bool>& stop, int min_rounds,
                        std::chrono::seconds max_time) {
  auto deadline = std::chrono::steady_clock::now() + max_time;
  while ((round_ < min_rounds || !stop.load()) &&
         std::chrono::steady_clock::now() < deadline &&
         ops_.failures() + read_failures_ < kMaxReported) {
    Round();
  }
}

const std::string& ChurnWorkload::RandomFile(absl::string_view prefix) {
  static const std::string kNone;
  std::vector<const std::string*> candidates;
  for (auto it = model_.lower_bound(std::string(prefix));
       it != model_.end() && absl::StartsWith(it->first, prefix); ++it) {
    candidates.push_back(&it->first);
  }
  if (candidates.empty()) return kNone;
  return *candidates[rng_() % candidates.size()];
}

void ChurnWorkload::WriteModelled(const std::string& rel, std::string data) {
  ops_.WriteFile(rel, data);
  bytes_written_ += data.size();
  model_[rel] = std::move(data);
}

void ChurnWorkload::CheckRead(const std::string& rel, bool drop_cache) {
  auto it = model_.find(rel);
  if (it == model_.end()) return;
  std::string got = ops_.Read(rel, drop_cache);
  ++reads_checked_;
  if (got != it->second && ++read_failures_ <= kMaxReported) {
    ADD_FAILURE() << "round " << round_ << ": read of " << ops_.Path(rel)
                  << " returned the wrong data: "
                  << DescribeDifference(got, it->second);
  }
}

void ChurnWorkload::Round() {
  int r = round_++;
  std::string dir = absl::StrCat("churn/r", r);
  ops_.Mkdir(dir);
  ops_.Mkdir(dir + "/sub");

  // Many small files and one of 1-2 MiB, each read back at once.
  for (int i = 0; i < 24; ++i) {
    std::string rel = absl::StrCat(dir, i % 3 == 0 ? "/sub/f" : "/f", i);
    WriteModelled(rel, PatternBytes(rng_(), rng_() % (64 * kKiB) + 1));
    CheckRead(rel, /*drop_cache=*/false);
  }
  WriteModelled(dir + "/big", PatternBytes(rng_(), kMiB + rng_() % kMiB));
  CheckRead(dir + "/big", false);

  // Overwrites inside files, one past the end (leaving a hole).
  for (int k = 0; k < 6; ++k) {
    std::string rel = RandomFile(dir + "/");
    if (rel.empty()) break;
    std::string& content = model_[rel];
    std::string data = PatternBytes(rng_(), rng_() % 8192 + 1);
    size_t offset =
        k == 5 ? content.size() + rng_() % 5000 : rng_() % (content.size() + 1);
    ops_.PWrite(rel, offset, data);
    bytes_written_ += data.size();
    if (content.size() < offset + data.size()) {
      content.resize(offset + data.size(), '\0');
    }
    content.replace(offset, data.size(), data);
  }
  // Truncates, shrinking or extending.
  for (int k = 0; k < 2; ++k) {
    std::string rel = RandomFile(dir + "/");
    if (rel.empty()) break;
    size_t size = rng_() % (2 * model_[rel].size() + 1);
    ops_.Truncate(rel, size);
    model_[rel].resize(size, '\0');
  }
  // A rename over another file of the round.
  std::string from = RandomFile(dir + "/");
  std::string to = RandomFile(dir + "/");
  if (!from.empty() && from != to) {
    ops_.Rename(from, to);
    model_[to] = std::move(model_[from]);
    model_.erase(from);
  }
  // The round's directory renamed right away, writes still queued.
  std::string done = absl::StrCat("churn/d", r);
  ops_.Rename(dir, done);
  std::string old_prefix = dir + "/";
  std::vector<std::string> moved;
  for (auto it = model_.lower_bound(old_prefix);
       it != model_.end() && absl::StartsWith(it->first, old_prefix); ++it) {
    moved.push_back(it->first);
  }
  for (const std::string& rel : moved) {
    auto node = model_.extract(rel);
    node.key() = absl::StrCat(done, "/", rel.substr(old_prefix.size()));
    model_.insert(std::move(node));
  }

  // Older files read back from the daemon.
  for (int k = 0; k < 8; ++k) {
    std::string rel = RandomFile("churn/");
    if (!rel.empty()) CheckRead(rel, /*drop_cache=*/true);
  }

  // Round r-4 goes away entirely (live data stays a few rounds).
  if (r >= 4) {
    std::string old = absl::StrCat("churn/d", r - 4);
    std::vector<std::string> doomed;
    for (auto it = model_.lower_bound(old + "/");
         it != model_.end() && absl::StartsWith(it->first, old + "/"); ++it) {
      doomed.push_back(it->first);
    }
    for (const std::string& rel : doomed) {
      ops_.Unlink(rel);
      model_.erase(rel);
    }
    ops_.Rmdir(old + "/sub");
    ops_.Rmdir(old);
  }
}

void ChurnWorkload::VerifyAll() {
  std::vector<std::string> files;
  ListFiles(ops_.root(), "churn", &files);
  std::set<std::string> on_disk(files.begin(), files.end());
  int reported = 0;
  for (const std::string& rel : on_disk) {
    if (!model_.count(rel) && ++reported <= 10) {
      ADD_FAILURE() << ops_.Path(rel) << " exists but the workload removed "
                    << "or never wrote it";
    }
  }
  for (const auto& [rel, content] : model_) {
    if (!on_disk.count(rel)) {
      if (++reported <= 10) {
        ADD_FAILURE() << ops_.Path(rel) << " is missing";
      }
      continue;
    }
    CheckRead(rel, /*drop_cache=*/true);
  }
}

}  // namespace memfuse::testing
