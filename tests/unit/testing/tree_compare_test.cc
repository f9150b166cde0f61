#include "tests/testing/tree_compare.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace memfuse::testing {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::StartsWith;

constexpr size_t kBigSize = 3 * 1024 * 1024 + 123;  // spans 1 MiB chunks

std::string Err() { return strerror(errno); }

// Bytes that differ at every offset from a shifted copy of themselves.
std::string Pattern(size_t size, unsigned seed) {
  std::string s(size, '\0');
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < size; ++i) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    s[i] = static_cast<char>(x);
  }
  return s;
}

void WriteFile(const std::string& path, const std::string& data) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0) << path << ": " << Err();
  ASSERT_EQ(write(fd, data.data(), data.size()),
            static_cast<ssize_t>(data.size()))
      << path;
  ASSERT_EQ(close(fd), 0);
}

void SetTimes(const std::string& path, time_t sec, long nsec) {
  struct timespec ts[2] = {{sec, nsec}, {sec, nsec}};
  ASSERT_EQ(utimensat(AT_FDCWD, path.c_str(), ts, AT_SYMLINK_NOFOLLOW), 0)
      << path << ": " << Err();
}

bool IsRoot() { return geteuid() == 0; }

// Two temp dirs, each holding a root "t" with the same rich tree, and a
// sibling "outside" (different on each side) that a relative symlink in the
// tree points at: the comparison must never follow it.
class TreeCompareTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (int side = 0; side < 2; ++side) {
      char templ[] = "/tmp/memfuse-treecmp-XXXXXX";
      ASSERT_NE(mkdtemp(templ), nullptr) << Err();
      base_[side] = templ;
      root_[side] = base_[side] + "/t";
      ASSERT_NO_FATAL_FAILURE(Populate(root_[side]));
      std::string outside = base_[side] + "/outside";
      ASSERT_EQ(mkdir(outside.c_str(), 0755), 0);
      ASSERT_NO_FATAL_FAILURE(
          WriteFile(absl::StrCat(outside, "/only-", side), "x"));
    }
    all_.compare_dir_mtime = true;
    all_.compare_symlink_mtime = true;
  }

  void TearDown() override {
    for (const std::string& base : base_) {
      if (base.empty()) continue;
      std::error_code ec;
      std::filesystem::remove_all(base, ec);
    }
  }

  // The same tree on both sides, every time set explicitly (children before
  // their directory, whose mtime they change).
  static void Populate(const std::string& r) {
    ASSERT_EQ(mkdir(r.c_str(), 0755), 0) << r << ": " << Err();
    ASSERT_EQ(mkdir((r + "/d1").c_str(), 0755), 0);
    ASSERT_EQ(mkdir((r + "/d1/d2").c_str(), 0711), 0);
    ASSERT_EQ(mkdir((r + "/d1/d2/d3").c_str(), 0700), 0);
    ASSERT_EQ(mkdir((r + "/empty").c_str(), 0755), 0);
    ASSERT_NO_FATAL_FAILURE(WriteFile(r + "/small", "hello"));
    ASSERT_NO_FATAL_FAILURE(WriteFile(r + "/empty-file", ""));
    ASSERT_NO_FATAL_FAILURE(WriteFile(r + "/d1/big", Pattern(kBigSize, 7)));
    ASSERT_NO_FATAL_FAILURE(WriteFile(r + "/d1/d2/d3/deep", "deep"));
    ASSERT_NO_FATAL_FAILURE(WriteFile(r + "/d1/linked", "two names"));
    ASSERT_EQ(link((r + "/d1/linked").c_str(), (r + "/d1/d2/link2").c_str()),
              0);
    ASSERT_NO_FATAL_FAILURE(WriteFile(r + "/d1/other", "two names"));
    ASSERT_EQ(symlink("small", (r + "/sym").c_str()), 0);
    ASSERT_EQ(symlink("../outside", (r + "/out").c_str()), 0);
    ASSERT_EQ(symlink("dangling/target", (r + "/d1/dangling").c_str()), 0);
    ASSERT_EQ(mkfifo((r + "/fifo").c_str(), 0640), 0);
    ASSERT_EQ(chmod((r + "/small").c_str(), 0604), 0);
    ASSERT_EQ(setxattr((r + "/small").c_str(), "user.color", "blue", 4, 0), 0)
        << Err();
    ASSERT_EQ(setxattr((r + "/d1").c_str(), "user.empty", "", 0, 0), 0);
    ASSERT_EQ(setxattr((r + "/d1").c_str(), "user.bin", "\0\1\2", 3, 0), 0);
    ASSERT_EQ(setxattr(r.c_str(), "user.memfuse.seq", "1", 1, 0), 0);
    if (IsRoot()) {
      ASSERT_EQ(lchown((r + "/d1/other").c_str(), 1234, 5678), 0);
      ASSERT_EQ(lchown((r + "/sym").c_str(), 4321, 8765), 0);
    }
    const char* post_order[] = {
        "small",    "empty-file", "d1/big", "d1/d2/d3/deep", "d1/linked",
        "d1/other", "sym",        "out",    "d1/dangling",   "fifo",
        "d1/d2/d3", "d1/d2",      "d1",     "empty"};
    time_t t = 1000000000;
    for (const char* rel : post_order) {
      ASSERT_NO_FATAL_FAILURE(SetTimes(r + "/" + rel, t, 123456789));
      t += 1000;
    }
    ASSERT_NO_FATAL_FAILURE(SetTimes(r, t, 5));
  }

  std::string A(const std::string& rel) const { return root_[0] + "/" + rel; }
  std::string B(const std::string& rel) const { return root_[1] + "/" + rel; }

  std::vector<std::string> Compare() const {
    return CompareTrees(root_[0], root_[1], all_);
  }

  std::string base_[2];
  std::string root_[2];
  TreeCompareOptions all_;  // every check on
};

// The differences, printed on failure.
#define EXPECT_NO_DIFFERENCES(diffs) \
  EXPECT_THAT(diffs, IsEmpty()) << FormatDifferences(diffs)

TEST_F(TreeCompareTest, EqualTreesHaveNoDifferences) {
  EXPECT_NO_DIFFERENCES(Compare());
  EXPECT_NO_DIFFERENCES(CompareTrees(root_[0], root_[1]));
  EXPECT_NO_DIFFERENCES(CompareTrees(root_[0], root_[0], all_));
}

TEST_F(TreeCompareTest, NameOnlyInOneTree) {
  ASSERT_EQ(unlink(B("d1/d2/d3/deep").c_str()), 0);
  ASSERT_EQ(mkdir(B("d1/new-dir").c_str(), 0755), 0);
  TreeCompareOptions opts;  // dir mtimes changed: default options
  EXPECT_THAT(CompareTrees(root_[0], root_[1], opts),
              ElementsAre("d1/d2/d3/deep: only in a (regular file)",
                          "d1/new-dir: only in b (directory)"));
}

TEST_F(TreeCompareTest, TypeDiffers) {
  ASSERT_EQ(unlink(B("fifo").c_str()), 0);
  ASSERT_EQ(mkdir(B("fifo").c_str(), 0640), 0);
  EXPECT_THAT(CompareTrees(root_[0], root_[1]),
              ElementsAre("fifo: type FIFO vs directory"));
}

TEST_F(TreeCompareTest, ModeDiffers) {
  ASSERT_EQ(chmod(B("d1/d2").c_str(), 0755), 0);
  EXPECT_THAT(Compare(), ElementsAre("d1/d2: mode 0711 vs 0755"));
  TreeCompareOptions opts = all_;
  opts.compare_mode = false;
  EXPECT_NO_DIFFERENCES(CompareTrees(root_[0], root_[1], opts));
}

TEST_F(TreeCompareTest, SetuidBitsAreModeBits) {
  ASSERT_EQ(chmod(A("small").c_str(), 04604), 0);
  EXPECT_THAT(Compare(), ElementsAre("small: mode 4604 vs 0604"));
}

TEST_F(TreeCompareTest, OwnerDiffers) {
  if (!IsRoot()) GTEST_SKIP() << "chown needs root";
  ASSERT_EQ(lchown(B("d1/other").c_str(), 1234, 999), 0);
  ASSERT_EQ(lchown(B("sym").c_str(), 1, 8765), 0);
  EXPECT_THAT(Compare(),
              ElementsAre("d1/other: gid 5678 vs 999", "sym: uid 4321 vs 1"));
  TreeCompareOptions opts = all_;
  opts.compare_owner = false;
  EXPECT_NO_DIFFERENCES(CompareTrees(root_[0], root_[1], opts));
}

TEST_F(TreeCompareTest, SizeDiffers) {
  ASSERT_EQ(truncate(B("d1/big").c_str(), kBigSize + 2), 0);
  SetTimes(B("d1/big"), 1000002000, 123456789);
  EXPECT_THAT(Compare(), ElementsAre(absl::StrCat("d1/big: size ", kBigSize,
                                                  " vs ", kBigSize + 2)));
}

TEST_F(TreeCompareTest, ShrunkFileReportsSizeAndFirstDifference) {
  ASSERT_EQ(truncate(B("d1/big").c_str(), 10), 0);
  ASSERT_EQ(truncate(B("d1/big").c_str(), 20), 0);  // bytes 10..19 now zero
  SetTimes(B("d1/big"), 1000002000, 123456789);
  std::vector<std::string> diffs = Compare();
  ASSERT_EQ(diffs.size(), 2u) << FormatDifferences(diffs);
  EXPECT_EQ(diffs[0], absl::StrCat("d1/big: size ", kBigSize, " vs 20"));
  std::string big = Pattern(kBigSize, 7);
  size_t first = 10;
  while (big[first] == 0) ++first;
  EXPECT_THAT(diffs[1], StartsWith(absl::StrCat(
                            "d1/big: contents differ at offset ", first)));
}

TEST_F(TreeCompareTest, ContentsDifferInALaterChunk) {
  const off_t offset = 2 * 1024 * 1024 + 17;
  int fd = open(B("d1/big").c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  char byte = ~Pattern(kBigSize, 7)[offset];
  ASSERT_EQ(pwrite(fd, &byte, 1, offset), 1);
  close(fd);
  SetTimes(B("d1/big"), 1000002000, 123456789);
  std::vector<std::string> diffs = Compare();
  ASSERT_EQ(diffs.size(), 1u) << FormatDifferences(diffs);
  EXPECT_THAT(diffs[0],
              StartsWith(absl::StrCat("d1/big: contents differ at offset ",
                                      offset, " (byte 0x")));
}

TEST_F(TreeCompareTest, SameSizeSmallFileDiffers) {
  ASSERT_NO_FATAL_FAILURE(WriteFile(B("d1/d2/d3/deep"), "DEEP"));
  SetTimes(B("d1/d2/d3/deep"), 1000003000, 123456789);
  EXPECT_THAT(Compare(),
              ElementsAre("d1/d2/d3/deep: contents differ at offset 0 (byte "
                          "0x64 vs 0x44)"));
}

TEST_F(TreeCompareTest, SymlinkTargetDiffers) {
  ASSERT_EQ(unlink(B("d1/dangling").c_str()), 0);
  ASSERT_EQ(symlink("elsewhere", B("d1/dangling").c_str()), 0);
  SetTimes(B("d1/dangling"), 1000008000, 123456789);
  SetTimes(B("d1"), 1000012000, 123456789);
  EXPECT_THAT(Compare(), ElementsAre("d1/dangling: symlink target "
                                     "\"dangling/target\" vs \"elsewhere\""));
}

TEST_F(TreeCompareTest, SymlinksAreNeverFollowed) {
  // "out" points at ../outside, which holds different files on each side;
  // "sym" points at a file: comparing it as a symlink must not read "small".
  EXPECT_NO_DIFFERENCES(Compare());
}

TEST_F(TreeCompareTest, FileMtimeDiffers) {
  SetTimes(B("small"), 1000000000, 123456788);
  std::vector<std::string> diffs = CompareTrees(root_[0], root_[1]);
  ASSERT_EQ(diffs.size(), 1u) << FormatDifferences(diffs);
  EXPECT_EQ(diffs[0],
            "small: mtime 2001-09-09 01:46:40.123456789 vs 2001-09-09 "
            "01:46:40.123456788");
  TreeCompareOptions opts;
  opts.compare_file_mtime = false;
  EXPECT_NO_DIFFERENCES(CompareTrees(root_[0], root_[1], opts));
}

TEST_F(TreeCompareTest, FifoMtimeCountsAsFileMtime) {
  SetTimes(B("fifo"), 5, 0);
  EXPECT_THAT(CompareTrees(root_[0], root_[1]),
              ElementsAre(AllOf(StartsWith("fifo: mtime "))));
}

TEST_F(TreeCompareTest, SymlinkMtimeIsAnOption) {
  SetTimes(B("sym"), 5, 0);
  EXPECT_NO_DIFFERENCES(CompareTrees(root_[0], root_[1]));  // default: off
  EXPECT_THAT(Compare(), ElementsAre(StartsWith("sym: mtime ")));
}

TEST_F(TreeCompareTest, DirectoryMtimeIsAnOption) {
  SetTimes(B("d1/d2/d3"), 5, 0);
  EXPECT_NO_DIFFERENCES(CompareTrees(root_[0], root_[1]));  // default: off
  EXPECT_THAT(Compare(), ElementsAre(StartsWith("d1/d2/d3: mtime ")));
}

TEST_F(TreeCompareTest, XattrValueDiffers) {
  ASSERT_EQ(setxattr(B("small").c_str(), "user.color", "red", 3, 0), 0);
  EXPECT_THAT(Compare(), ElementsAre("small: xattr user.color value "
                                     "\"blue\" vs \"red\""));
}

TEST_F(TreeCompareTest, XattrMissingOrExtra) {
  ASSERT_EQ(removexattr(B("d1").c_str(), "user.bin"), 0);
  ASSERT_EQ(setxattr(B("d1/d2/d3").c_str(), "user.new", "v", 1, 0), 0);
  EXPECT_THAT(Compare(),
              ElementsAre("d1: xattr user.bin only in a (value "
                          "\"\\x00\\x01\\x02\")",
                          "d1/d2/d3: xattr user.new only in b (value \"v\")"));
  TreeCompareOptions opts = all_;
  opts.compare_xattrs = false;
  EXPECT_NO_DIFFERENCES(CompareTrees(root_[0], root_[1], opts));
}

TEST_F(TreeCompareTest, LongXattrValuesAreShortened) {
  std::string long_value(1000, 'x');
  ASSERT_EQ(setxattr(B("small").c_str(), "user.color", long_value.data(),
                     long_value.size(), 0),
            0);
  std::vector<std::string> diffs = Compare();
  ASSERT_EQ(diffs.size(), 1u);
  EXPECT_THAT(diffs[0], HasSubstr("(1000 bytes)"));
  EXPECT_LT(diffs[0].size(), 200u);
}

TEST_F(TreeCompareTest, MemfuseXattrsAreIgnored) {
  ASSERT_EQ(setxattr(B("").c_str(), "user.memfuse.seq", "999", 3, 0), 0);
  ASSERT_EQ(setxattr(B("d1").c_str(), "user.memfuse.id", "7", 1, 0), 0);
  EXPECT_NO_DIFFERENCES(Compare());
  TreeCompareOptions opts = all_;
  opts.ignored_xattr_prefixes.clear();
  EXPECT_THAT(CompareTrees(root_[0], root_[1], opts),
              ElementsAre(".: xattr user.memfuse.seq value \"1\" vs \"999\"",
                          "d1: xattr user.memfuse.id only in b (value \"7\")"));
}

TEST_F(TreeCompareTest, DeviceNumbersDiffer) {
  if (mknod(A("dev").c_str(), S_IFCHR | 0600, makedev(1, 3)) != 0 ||
      mknod(B("dev").c_str(), S_IFCHR | 0600, makedev(1, 5)) != 0) {
    GTEST_SKIP() << "mknod of a device: " << Err();
  }
  SetTimes(A("dev"), 5, 0);
  SetTimes(B("dev"), 5, 0);
  EXPECT_THAT(CompareTrees(root_[0], root_[1]),
              ElementsAre("dev: rdev 1:3 vs 1:5"));
}

TEST_F(TreeCompareTest, HardLinkBroken) {
  // b: d1/d2/link2 becomes a separate file with the same bytes and times.
  ASSERT_EQ(unlink(B("d1/d2/link2").c_str()), 0);
  ASSERT_NO_FATAL_FAILURE(WriteFile(B("d1/d2/link2"), "two names"));
  SetTimes(B("d1/d2/link2"), 1000004000, 123456789);
  TreeCompareOptions opts;  // d1/d2's mtime changed
  EXPECT_THAT(CompareTrees(root_[0], root_[1], opts),
              ElementsAre("d1/d2/link2: hard-linked with {d1/linked} in a but "
                          "with no other name in b",
                          "d1/linked: hard-linked with {d1/d2/link2} in a but "
                          "with no other name in b"));
  opts.compare_hard_links = false;
  EXPECT_NO_DIFFERENCES(CompareTrees(root_[0], root_[1], opts));
}

TEST_F(TreeCompareTest, HardLinkAdded) {
  // b: d1/other (same bytes as d1/linked) becomes a third name of it.
  if (IsRoot()) {
    ASSERT_EQ(lchown(B("d1/linked").c_str(), 1234, 5678), 0);
  }
  ASSERT_EQ(unlink(B("d1/other").c_str()), 0);
  ASSERT_EQ(link(B("d1/linked").c_str(), B("d1/other").c_str()), 0);
  SetTimes(B("d1/other"), 1000006000, 123456789);  // linked's time too now
  SetTimes(A("d1/linked"), 1000006000, 123456789);
  SetTimes(A("d1/other"), 1000006000, 123456789);
  if (IsRoot()) {
    ASSERT_EQ(lchown(A("d1/linked").c_str(), 1234, 5678), 0);
  }
  TreeCompareOptions opts;
  std::vector<std::string> diffs = CompareTrees(root_[0], root_[1], opts);
  // One line per distinct pair of groups: d1/linked's pair is link2's.
  EXPECT_THAT(diffs,
              ElementsAre("d1/d2/link2: hard-linked with {d1/linked} in a but "
                          "with {d1/linked, d1/other} in b",
                          "d1/other: hard-linked with no other name in a but "
                          "with {d1/d2/link2, d1/linked} in b"))
      << FormatDifferences(diffs);
}

TEST_F(TreeCompareTest, RootAttributesAreAnOption) {
  ASSERT_EQ(chmod(root_[1].c_str(), 0700), 0);
  EXPECT_THAT(Compare(), ElementsAre(".: mode 0755 vs 0700"));
  TreeCompareOptions opts = all_;
  opts.compare_root = false;
  EXPECT_NO_DIFFERENCES(CompareTrees(root_[0], root_[1], opts));
}

TEST_F(TreeCompareTest, MissingRootIsADifference) {
  std::vector<std::string> diffs =
      CompareTrees(root_[0], base_[1] + "/no-such-dir");
  ASSERT_EQ(diffs.size(), 1u);
  EXPECT_THAT(diffs[0],
              AllOf(StartsWith(".: lstat of root "), HasSubstr("ENOENT")));
}

TEST_F(TreeCompareTest, StopsAtMaxDifferences) {
  for (int i = 0; i < 50; ++i) {
    ASSERT_NO_FATAL_FAILURE(WriteFile(B(absl::StrCat("extra", i)), ""));
  }
  TreeCompareOptions opts;
  EXPECT_EQ(CompareTrees(root_[0], root_[1], opts).size(), 50u);
  opts.max_differences = 10;
  EXPECT_EQ(CompareTrees(root_[0], root_[1], opts).size(), 10u);
}

TEST(FormatDifferencesTest, ShowsAtMostTheLimit) {
  EXPECT_EQ(FormatDifferences({}), "no differences");
  EXPECT_EQ(FormatDifferences({"x: only in a"}),
            "1 difference:\n  x: only in a");
  EXPECT_EQ(FormatDifferences({"a", "b", "c"}, 2),
            "3 differences:\n  a\n  b\n  ... and 1 more");
}

}  // namespace
}  // namespace memfuse::testing
