// Directory listing: exact contents and types, deletion while iterating over
// 100,000 entries (what `rm -rf` does), and telldir/seekdir positions that stay
// valid while the directory changes. Entry order is filesystem-specific, so
// the iteration tests check POSIX guarantees on each side instead of
// comparing orders.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "tests/testing/mount_fixture.h"
#include "tests/testing/posix_compare.h"

namespace memfuse::testing {
namespace {

using DirTest = MountTest;

// Names of varying length, so readdir buffers pack differently.
std::string EntryName(int i) {
  return absl::StrCat("e", i, "-", std::string(i % 40, 'x'));
}

// Creates `count` empty files in `dir` (mknod avoids an open/close pair).
void Populate(const std::string& dir, int first, int count) {
  for (int i = first; i < first + count; ++i) {
    std::string path = absl::StrCat(dir, "/", EntryName(i));
    ASSERT_EQ(mknod(path.c_str(), S_IFREG | 0644, 0), 0)
        << path << ": " << ErrnoName(errno);
  }
}

// Sorted "name type" lines, including "." and "..".
Outcome ListWithTypes(const std::string& path) {
  DIR* dir = opendir(path.c_str());
  if (dir == nullptr) return Sys(-1);
  std::vector<std::string> entries;
  errno = 0;
  while (struct dirent* e = readdir(dir)) {
    entries.push_back(absl::StrCat(e->d_name, " type=", e->d_type));
  }
  int err = errno;
  closedir(dir);
  if (err != 0) return Outcome{-1, err, ""};
  std::sort(entries.begin(), entries.end());
  return Outcome{static_cast<int64_t>(entries.size()), 0,
                 absl::StrJoin(entries, "\n")};
}

// Every name in `dir` except "." and "..", in readdir order.
std::vector<std::string> ReadRemaining(DIR* dir) {
  std::vector<std::string> names;
  while (struct dirent* e = readdir(dir)) {
    absl::string_view name = e->d_name;
    if (name != "." && name != "..") names.emplace_back(name);
  }
  return names;
}

TEST_F(DirTest, ReaddirListsExactlyTheEntries) {
  ExpectSameTrace("readdir", [](const Dir& d, Trace& t) {
    t.Add("empty dir has . and ..", ListWithTypes(d("")));
    t.Add("file", WriteFile(d("file"), "x"));
    t.Add("dir", Sys(mkdir(d("dir").c_str(), 0755)));
    t.Add("symlink", Sys(symlink("file", d("link").c_str())));
    t.Add("fifo", Sys(mkfifo(d("fifo").c_str(), 0644)));
    t.Add("socket", Sys(mknod(d("sock").c_str(), S_IFSOCK | 0644, 0)));
    t.Add("nested", WriteFile(d("dir/inner"), "y"));
    t.Add("listing with types", ListWithTypes(d("")));
    t.Add("subdir listing", ListWithTypes(d("dir")));
    t.Add("unlink", Sys(unlink(d("fifo").c_str())));
    t.Add("rename", Sys(rename(d("file").c_str(), d("renamed").c_str())));
    t.Add("listing after changes", ListWithTypes(d("")));
    t.Add("opendir a file",
          SysOk(opendir(d("renamed").c_str()) == nullptr ? -1 : 0));
    t.Add("opendir missing",
          SysOk(opendir(d("missing").c_str()) == nullptr ? -1 : 0));
  });
  // Enough entries to need several getdents calls.
  for (const std::string& base : {native_dir(), mount_dir()}) {
    ASSERT_EQ(mkdir((base + "/many").c_str(), 0755), 0);
    Populate(base + "/many", 0, 3000);
  }
  ExpectSame("3000-entry listing",
             [](const Dir& d) { return ListWithTypes(d("many")); });
}

// Deletes every entry while iterating, the way rm -rf does, rewinding until a
// pass finds nothing. Returns the number of passes that removed something.
struct RemovalReport {
  int productive_passes = 0;
  int removed = 0;
  int duplicates = 0;
  std::vector<std::string> errors;
};

RemovalReport RemoveWhileIterating(const std::string& path) {
  RemovalReport report;
  DIR* dir = opendir(path.c_str());
  if (dir == nullptr) {
    report.errors.push_back(absl::StrCat("opendir: ", ErrnoName(errno)));
    return report;
  }
  absl::flat_hash_set<std::string> seen;
  for (int pass = 0; pass < 10; ++pass) {
    int removed_now = 0;
    errno = 0;
    while (struct dirent* e = readdir(dir)) {
      absl::string_view name = e->d_name;
      if (name == "." || name == "..") continue;
      if (!seen.insert(std::string(name)).second) ++report.duplicates;
      if (unlinkat(dirfd(dir), e->d_name, 0) == 0) {
        ++removed_now;
      } else if (report.errors.size() < 10) {
        report.errors.push_back(
            absl::StrCat("unlink ", name, ": ", ErrnoName(errno)));
      }
      errno = 0;
    }
    if (errno != 0) {
      report.errors.push_back(absl::StrCat("readdir: ", ErrnoName(errno)));
    }
    if (removed_now == 0) break;
    ++report.productive_passes;
    report.removed += removed_now;
    rewinddir(dir);
  }
  closedir(dir);
  return report;
}

TEST_F(DirTest, RmRfOfHundredThousandEntries) {
  constexpr int kEntries = 100000;
  const std::string big = mount_dir() + "/big";
  ASSERT_EQ(mkdir(big.c_str(), 0755), 0) << ErrnoName(errno);
  ASSERT_NO_FATAL_FAILURE(Populate(big, 0, kEntries));

  DIR* dir = opendir(big.c_str());
  ASSERT_NE(dir, nullptr);
  std::vector<std::string> listed = ReadRemaining(dir);
  closedir(dir);
  EXPECT_EQ(listed.size(), kEntries);
  std::set<std::string> unique(listed.begin(), listed.end());
  EXPECT_EQ(unique.size(), kEntries) << "readdir returned duplicates";
  EXPECT_TRUE(unique.count(EntryName(0)) && unique.count(EntryName(99999)));

  RemovalReport report = RemoveWhileIterating(big);
  EXPECT_EQ(report.removed, kEntries);
  EXPECT_EQ(report.productive_passes, 1)
      << "entries not yet returned were skipped by the first pass (unstable "
         "readdir offsets)";
  EXPECT_EQ(report.duplicates, 0);
  EXPECT_TRUE(report.errors.empty()) << absl::StrJoin(report.errors, "\n");
  EXPECT_EQ(ListDir(big), Outcome{}) << "directory not empty";
  EXPECT_EQ(Sys(rmdir(big.c_str())), Outcome{});
  EXPECT_EQ(Stat(big).err, ENOENT);
}

// Like fts (GNU rm): read a batch of names, delete them, then continue the
// same directory stream. The stream's position must survive the deletions.
TEST_F(DirTest, BatchedDeletionContinuesTheStream) {
  constexpr int kEntries = 20000;
  constexpr size_t kBatch = 1000;
  for (const std::string& base : {native_dir(), mount_dir()}) {
    SCOPED_TRACE(base);
    const std::string path = base + "/batch";
    ASSERT_EQ(mkdir(path.c_str(), 0755), 0);
    ASSERT_NO_FATAL_FAILURE(Populate(path, 0, kEntries));
    DIR* dir = opendir(path.c_str());
    ASSERT_NE(dir, nullptr);
    int removed = 0;
    for (;;) {
      std::vector<std::string> batch;
      while (batch.size() < kBatch) {
        struct dirent* e = readdir(dir);
        if (e == nullptr) break;
        absl::string_view name = e->d_name;
        if (name != "." && name != "..") batch.emplace_back(name);
      }
      if (batch.empty()) break;
      for (const std::string& name : batch) {
        if (unlinkat(dirfd(dir), name.c_str(), 0) == 0) ++removed;
      }
    }
    closedir(dir);
    EXPECT_EQ(removed, kEntries) << "one pass of the stream missed entries";
    Outcome left = ListDir(path);
    EXPECT_EQ(left.data, "") << "left behind after one pass";
    EXPECT_EQ(Sys(rmdir(path.c_str())), Outcome{});
  }
}

// Checks, on one side, that a telldir position stays meaningful while entries
// are added and removed elsewhere in the directory.
void CheckSeekdirStability(const std::string& path) {
  SCOPED_TRACE(path);
  ASSERT_EQ(mkdir(path.c_str(), 0755), 0);
  ASSERT_NO_FATAL_FAILURE(Populate(path, 0, 1000));
  DIR* dir = opendir(path.c_str());
  ASSERT_NE(dir, nullptr);
  std::vector<std::string> before;
  while (before.size() < 400) {
    struct dirent* e = readdir(dir);
    ASSERT_NE(e, nullptr);
    absl::string_view name = e->d_name;
    if (name != "." && name != "..") before.emplace_back(name);
  }
  long pos = telldir(dir);
  ASSERT_GE(pos, 0);
  std::vector<std::string> after = ReadRemaining(dir);
  EXPECT_EQ(before.size() + after.size(), 1000u);

  // Unchanged directory: seekdir replays exactly the same tail.
  seekdir(dir, pos);
  EXPECT_EQ(ReadRemaining(dir), after);

  // Change the directory: remove 100 entries on each side of the position
  // and add 200 new ones.
  std::set<std::string> removed;
  for (int i = 0; i < 100; ++i) {
    for (const std::string& name : {before[i * 3], after[i * 5]}) {
      ASSERT_EQ(unlinkat(dirfd(dir), name.c_str(), 0), 0) << name;
      removed.insert(name);
    }
  }
  ASSERT_NO_FATAL_FAILURE(Populate(path, 5000, 200));
  std::set<std::string> added;
  for (int i = 5000; i < 5200; ++i) added.insert(EntryName(i));

  seekdir(dir, pos);
  std::vector<std::string> tail = ReadRemaining(dir);
  std::set<std::string> tail_set(tail.begin(), tail.end());
  EXPECT_EQ(tail_set.size(), tail.size()) << "duplicates after seekdir";
  for (const std::string& name : after) {
    if (!removed.count(name)) {
      EXPECT_TRUE(tail_set.count(name))
          << "unchanged entry " << name << " lost after seekdir";
    }
  }
  for (const std::string& name : before) {
    if (!removed.count(name)) {
      EXPECT_FALSE(tail_set.count(name))
          << "entry " << name << " from before the position came back";
    }
  }
  for (const std::string& name : tail) {
    EXPECT_TRUE(added.count(name) ||
                std::find(after.begin(), after.end(), name) != after.end())
        << "unknown entry " << name;
  }
  closedir(dir);

  // Clean up, then the directory itself goes.
  RemovalReport report = RemoveWhileIterating(path);
  EXPECT_EQ(report.removed, 1000 - 200 + 200);
  EXPECT_EQ(Sys(rmdir(path.c_str())), Outcome{});
}

TEST_F(DirTest, TelldirSeekdirStableWhileChanging) {
  CheckSeekdirStability(native_dir() + "/d");
  CheckSeekdirStability(mount_dir() + "/d");
}

TEST_F(DirTest, FsyncDirAndReaddirAfterRewind) {
  ExpectSameTrace("rewinddir", [](const Dir& d, Trace& t) {
    t.Add("mkdir", Sys(mkdir(d("d").c_str(), 0755)));
    t.Add("a", WriteFile(d("d/a"), "a"));
    DIR* dir = opendir(d("d").c_str());
    t.Add("opendir", SysOk(dir == nullptr ? -1 : 0));
    if (dir == nullptr) return;
    std::vector<std::string> first = ReadRemaining(dir);
    t.Add("first read", SysWith(0, absl::StrJoin(first, ",")));
    t.Add("add b", WriteFile(d("d/b"), "b"));
    rewinddir(dir);
    std::vector<std::string> second = ReadRemaining(dir);
    std::sort(second.begin(), second.end());
    t.Add("rewind sees the new entry", SysWith(0, absl::StrJoin(second, ",")));
    t.Add("fsync dir", Sys(fsync(dirfd(dir))));
    closedir(dir);
  });
}

}  // namespace
}  // namespace memfuse::testing
