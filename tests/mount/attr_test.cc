// Attributes: chmod, chown, truncate, utimensat and the ctime/mtime rules,
// compared with a native directory. Times are compared exactly where the
// caller sets them and as "advanced or not" where the filesystem does.
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <string>

#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "tests/testing/mount_fixture.h"
#include "tests/testing/posix_compare.h"

namespace memfuse::testing {
namespace {

using AttrTest = MountTest;

std::string FormatTime(const struct timespec& ts) {
  return absl::StrFormat("%d.%09d", ts.tv_sec, ts.tv_nsec);
}

bool After(const struct timespec& a, const struct timespec& b) {
  return a.tv_sec > b.tv_sec || (a.tv_sec == b.tv_sec && a.tv_nsec > b.tv_nsec);
}

// atime and mtime exactly.
Outcome Times(const std::string& path, bool follow = true) {
  struct stat st {};
  int ret = follow ? stat(path.c_str(), &st) : lstat(path.c_str(), &st);
  if (ret < 0) return Sys(ret);
  return SysWith(0, absl::StrFormat("atime=%s mtime=%s", FormatTime(st.st_atim),
                                    FormatTime(st.st_mtim)));
}

struct timespec Now() {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return ts;
}

// Waits (bounded) until the kernel's coarse clock, which native filesystems
// stamp times with, is past `t`, so a later change must show a later time.
void WaitForClockPast(const struct timespec& t) {
  ASSERT_TRUE(WaitFor(
      [&] {
        struct timespec now;
        clock_gettime(CLOCK_REALTIME_COARSE, &now);
        return After(now, t);
      },
      std::chrono::seconds(2), std::chrono::milliseconds(1)))
      << "the clock did not advance";
}

// Which of atime/mtime/ctime of `path` advanced past `before`.
Outcome Advanced(const std::string& path, const struct stat& before) {
  struct stat st {};
  if (stat(path.c_str(), &st) < 0) return Sys(-1);
  return SysWith(0, absl::StrFormat("mtime_advanced=%d ctime_advanced=%d",
                                    After(st.st_mtim, before.st_mtim),
                                    After(st.st_ctim, before.st_ctim)));
}

TEST_F(AttrTest, Chmod) {
  ExpectSameTrace("chmod", [](const Dir& d, Trace& t) {
    t.Add("file", WriteFile(d("f"), "x"));
    for (mode_t mode : {0600, 0777, 04755, 02755, 01644, 0}) {
      t.Add(absl::StrFormat("chmod 0%o", mode),
            Sys(chmod(d("f").c_str(), mode)));
      t.Add("stat", Stat(d("f")));
    }
    t.Add("mkdir", Sys(mkdir(d("d").c_str(), 0755)));
    t.Add("chmod dir 01777", Sys(chmod(d("d").c_str(), 01777)));
    t.Add("stat dir", Stat(d("d")));
    int fd = open(d("f").c_str(), O_RDONLY);
    t.Add("open mode-0 file as root", SysOk(fd));
    if (fd >= 0) {
      t.Add("fchmod", Sys(fchmod(fd, 0640)));
      t.Add("fstat", Fstat(fd));
      close(fd);
    }
    t.Add("chmod missing", Sys(chmod(d("nope").c_str(), 0644)));
    t.Add("symlink", Sys(symlink("f", d("l").c_str())));
    t.Add("chmod through symlink", Sys(chmod(d("l").c_str(), 0604)));
    t.Add("target changed", Stat(d("f")));
  });
}

TEST_F(AttrTest, Chown) {
  ExpectSameTrace("chown", [](const Dir& d, Trace& t) {
    t.Add("file", WriteFile(d("f"), "x"));
    t.Add("chown 1234:5678", Sys(chown(d("f").c_str(), 1234, 5678)));
    t.Add("stat", Stat(d("f")));
    t.Add("chown -1:42 keeps uid", Sys(chown(d("f").c_str(), -1, 42)));
    t.Add("stat", Stat(d("f")));
    t.Add("chown 7:-1 keeps gid", Sys(chown(d("f").c_str(), 7, -1)));
    t.Add("stat", Stat(d("f")));
    t.Add("symlink", Sys(symlink("f", d("l").c_str())));
    t.Add("lchown changes the link only", Sys(lchown(d("l").c_str(), 99, 98)));
    t.Add("lstat link", Lstat(d("l")));
    t.Add("target unchanged", Stat(d("f")));
    t.Add("mkdir", Sys(mkdir(d("d").c_str(), 0755)));
    t.Add("chown dir", Sys(chown(d("d").c_str(), 1, 2)));
    t.Add("stat dir", Stat(d("d")));
  });
}

TEST_F(AttrTest, ChownClearsSetuidAndSetgid) {
  ExpectSameTrace("chown kills suid", [](const Dir& d, Trace& t) {
    t.Add("file", WriteFile(d("f"), "x"));
    t.Add("chmod 06755", Sys(chmod(d("f").c_str(), 06755)));
    t.Add("chown", Sys(chown(d("f").c_str(), 1000, 1000)));
    t.Add("suid and sgid cleared", Stat(d("f")));
  });
}

TEST_F(AttrTest, TruncateUpAndDown) {
  const std::string data = PatternBytes(1, 10000);
  ExpectSameTrace("truncate", [&](const Dir& d, Trace& t) {
    t.Add("file", WriteFile(d("f"), data));
    t.Add("truncate down to 100", Sys(truncate(d("f").c_str(), 100)));
    t.Add("content", ReadFile(d("f")));
    t.Add("truncate up to 5000", Sys(truncate(d("f").c_str(), 5000)));
    t.Add("content zero-filled", ReadFile(d("f")));
    t.Add("stat", Stat(d("f")));
    int fd = open(d("f").c_str(), O_RDWR);
    t.Add("open", SysOk(fd));
    if (fd >= 0) {
      t.Add("ftruncate to 3", Sys(ftruncate(fd, 3)));
      t.Add("write at 10", Sys(pwrite(fd, "tail", 4, 10)));
      t.Add("fstat", Fstat(fd));
      t.Add("ftruncate negative", Sys(ftruncate(fd, -1)));
      close(fd);
    }
    t.Add("content", ReadFile(d("f")));
    t.Add("sparse truncate to 1 GiB", Sys(truncate(d("f").c_str(), 1 << 30)));
    t.Add("stat sparse", Stat(d("f")));
    fd = open(d("f").c_str(), O_RDONLY);
    if (fd >= 0) {
      char buf[8] = {1, 1, 1, 1, 1, 1, 1, 1};
      t.Add("read end of sparse file",
            SysWith(pread(fd, buf, sizeof(buf), (1 << 30) - 8),
                    std::string(buf, sizeof(buf))));
      close(fd);
    }
    t.Add("truncate to 0", Sys(truncate(d("f").c_str(), 0)));
    t.Add("empty", ReadFile(d("f")));
    t.Add("mkdir", Sys(mkdir(d("d").c_str(), 0755)));
    t.Add("truncate a dir", Sys(truncate(d("d").c_str(), 0)));
    t.Add("truncate missing", Sys(truncate(d("nope").c_str(), 0)));
  });
}

TEST_F(AttrTest, UtimensatExplicitAndOmit) {
  ExpectSameTrace("utimensat", [](const Dir& d, Trace& t) {
    t.Add("file", WriteFile(d("f"), "x"));
    struct timespec both[2] = {{1000000000, 123456789},
                               {1500000000, 987654321}};
    t.Add("set both", Sys(utimensat(AT_FDCWD, d("f").c_str(), both, 0)));
    t.Add("times exact", Times(d("f")));
    struct timespec omit_atime[2] = {{0, UTIME_OMIT}, {1600000000, 5}};
    t.Add("UTIME_OMIT atime",
          Sys(utimensat(AT_FDCWD, d("f").c_str(), omit_atime, 0)));
    t.Add("atime kept", Times(d("f")));
    struct timespec omit_mtime[2] = {{1700000000, 42}, {0, UTIME_OMIT}};
    t.Add("UTIME_OMIT mtime",
          Sys(utimensat(AT_FDCWD, d("f").c_str(), omit_mtime, 0)));
    t.Add("mtime kept", Times(d("f")));
    struct timespec pre_epoch[2] = {{-1, 0}, {-86400, 500}};
    t.Add("before 1970",
          Sys(utimensat(AT_FDCWD, d("f").c_str(), pre_epoch, 0)));
    t.Add("pre-epoch times", Times(d("f")));
    struct timespec bad[2] = {{0, 1000000000}, {0, 0}};
    t.Add("invalid nsec", Sys(utimensat(AT_FDCWD, d("f").c_str(), bad, 0)));
    t.Add("mkdir", Sys(mkdir(d("d").c_str(), 0755)));
    t.Add("dir times", Sys(utimensat(AT_FDCWD, d("d").c_str(), both, 0)));
    t.Add("dir times exact", Times(d("d")));
    t.Add("symlink", Sys(symlink("f", d("l").c_str())));
    t.Add("link times (nofollow)",
          Sys(utimensat(AT_FDCWD, d("l").c_str(), both, AT_SYMLINK_NOFOLLOW)));
    t.Add("link times exact", Times(d("l"), /*follow=*/false));
    t.Add("missing", Sys(utimensat(AT_FDCWD, d("nope").c_str(), both, 0)));
  });
}

TEST_F(AttrTest, UtimensatNow) {
  ExpectSameTrace("UTIME_NOW", [](const Dir& d, Trace& t) {
    t.Add("file", WriteFile(d("f"), "x"));
    struct timespec old[2] = {{1000000000, 0}, {1000000000, 0}};
    t.Add("set old", Sys(utimensat(AT_FDCWD, d("f").c_str(), old, 0)));
    struct timespec before = Now();
    before.tv_sec -= 1;  // the native side stamps with a coarse clock
    struct timespec now_mtime[2] = {{0, UTIME_OMIT}, {0, UTIME_NOW}};
    t.Add("UTIME_NOW mtime",
          Sys(utimensat(AT_FDCWD, d("f").c_str(), now_mtime, 0)));
    struct timespec after = Now();
    struct stat st {};
    stat(d("f").c_str(), &st);
    t.Add("mtime is now, atime kept",
          SysWith(0, absl::StrFormat(
                         "mtime_now=%d atime=%s",
                         After(st.st_mtim, before) && !After(st.st_mtim, after),
                         FormatTime(st.st_atim))));
    t.Add("NULL times (both now)",
          Sys(utimensat(AT_FDCWD, d("f").c_str(), nullptr, 0)));
    after = Now();
    stat(d("f").c_str(), &st);
    t.Add("both now",
          SysWith(0,
                  absl::StrFormat(
                      "atime_now=%d mtime_now=%d",
                      After(st.st_atim, before) && !After(st.st_atim, after),
                      After(st.st_mtim, before) && !After(st.st_mtim, after))));
  });
}

TEST_F(AttrTest, CtimeAndMtimeRules) {
  ExpectSameTrace("ctime", [](const Dir& d, Trace& t) {
    t.Add("file", WriteFile(d("f"), "x"));
    struct stat st {};
    auto step = [&](const char* name, auto&& op) {
      stat(d("f").c_str(), &st);
      WaitForClockPast(st.st_ctim);
      WaitForClockPast(st.st_mtim);
      t.Add(name, op());
      t.Add(std::string(name) + ": advanced", Advanced(d("f"), st));
    };
    step("chmod", [&] { return Sys(chmod(d("f").c_str(), 0600)); });
    step("chown", [&] { return Sys(chown(d("f").c_str(), 5, 5)); });
    // A size change: POSIX only requires the time update when the size
    // changes (ext4 also updates on same-size truncate, tmpfs does not).
    step("truncate", [&] { return Sys(truncate(d("f").c_str(), 0)); });
    step("write", [&] { return WriteFile(d("f"), "more data"); });
    step("read", [&] { return ReadFile(d("f")); });
    step("link", [&] { return Sys(link(d("f").c_str(), d("g").c_str())); });
    step("rename", [&] { return Sys(rename(d("g").c_str(), d("h").c_str())); });
    step("unlink other name", [&] { return Sys(unlink(d("h").c_str())); });
    struct timespec explicit_times[2] = {{1000, 0}, {2000, 0}};
    step("utimensat explicit", [&] {
      return Sys(utimensat(AT_FDCWD, d("f").c_str(), explicit_times, 0));
    });
    // A directory's mtime and ctime follow entries being added and removed.
    t.Add("mkdir", Sys(mkdir(d("dir").c_str(), 0755)));
    stat(d("dir").c_str(), &st);
    WaitForClockPast(st.st_ctim);
    t.Add("create in dir", WriteFile(d("dir/x"), "x"));
    t.Add("dir advanced after create", Advanced(d("dir"), st));
    stat(d("dir").c_str(), &st);
    WaitForClockPast(st.st_ctim);
    t.Add("unlink in dir", Sys(unlink(d("dir/x").c_str())));
    t.Add("dir advanced after unlink", Advanced(d("dir"), st));
  });
}

TEST_F(AttrTest, SetgidDirectoryInheritance) {
  // New entries in a setgid directory take the directory's group, and new
  // subdirectories keep the setgid bit: the filesystem (not the kernel's
  // FUSE layer) has to implement this.
  ExpectSameTrace("setgid dir", [](const Dir& d, Trace& t) {
    t.Add("mkdir", Sys(mkdir(d("g").c_str(), 0755)));
    t.Add("chown group 4242", Sys(chown(d("g").c_str(), 0, 4242)));
    t.Add("chmod 02775", Sys(chmod(d("g").c_str(), 02775)));
    t.Add("create file", WriteFile(d("g/file"), "x"));
    t.Add("file has the dir's group", Stat(d("g/file")));
    t.Add("mkdir sub", Sys(mkdir(d("g/sub").c_str(), 0755)));
    t.Add("sub has the group and setgid", Stat(d("g/sub")));
    t.Add("mknod fifo", Sys(mkfifo(d("g/sub/fifo").c_str(), 0644)));
    t.Add("fifo inherits through sub", Stat(d("g/sub/fifo")));
    t.Add("symlink", Sys(symlink("file", d("g/link").c_str())));
    t.Add("symlink group", Lstat(d("g/link")));
  });
}

TEST_F(AttrTest, UmaskAppliesToNewEntries) {
  mode_t old = umask(027);
  ExpectSameTrace("umask 027", [](const Dir& d, Trace& t) {
    t.Add("create 0666", WriteFile(d("f"), "x", 0666));
    t.Add("file mode 0640", Stat(d("f")));
    t.Add("mkdir 0777", Sys(mkdir(d("d").c_str(), 0777)));
    t.Add("dir mode 0750", Stat(d("d")));
    t.Add("mknod 0666", Sys(mknod(d("p").c_str(), S_IFIFO | 0666, 0)));
    t.Add("fifo mode 0640", Stat(d("p")));
    t.Add("chmod ignores umask", Sys(chmod(d("f").c_str(), 0666)));
    t.Add("mode 0666", Stat(d("f")));
  });
  umask(old);
}

TEST_F(AttrTest, SizeAndLinkCount) {
  ExpectSameTrace("st_size/st_nlink", [](const Dir& d, Trace& t) {
    int fd = open(d("f").c_str(), O_CREAT | O_RDWR, 0644);
    t.Add("create", SysOk(fd));
    if (fd < 0) return;
    t.Add("empty", Fstat(fd));
    t.Add("write 5 at 1000", Sys(pwrite(fd, "hello", 5, 1000)));
    t.Add("size 1005", Fstat(fd));
    t.Add("stat by path agrees", Stat(d("f")));
    t.Add("write inside", Sys(pwrite(fd, "x", 1, 10)));
    t.Add("size unchanged", Fstat(fd));
    t.Add("link", Sys(link(d("f").c_str(), d("g").c_str())));
    t.Add("nlink 2 via fd", Fstat(fd));
    t.Add("unlink both", Sys(unlink(d("f").c_str()) | unlink(d("g").c_str())));
    t.Add("nlink 0 via fd", Fstat(fd));
    close(fd);
  });
}

}  // namespace
}  // namespace memfuse::testing
