#include "fsd/tree.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>

#include <cerrno>
#include <set>
#include <string>
#include <vector>

#include "common/status.h"
#include "gtest/gtest.h"

namespace memfuse::fsd {
namespace {

using common::StatusToErrno;

constexpr uint64_t kBlock = 4096;

class TreeTest : public ::testing::Test {
 protected:
  fuse_ino_t Make(fuse_ino_t parent, const std::string& name, mode_t mode) {
    absl::StatusOr<struct stat> st =
        tree_.MakeNode(parent, name, mode, 0, "target", Caller{1000, 1000});
    EXPECT_TRUE(st.ok()) << name << ": " << st.status();
    return st.ok() ? st->st_ino : 0;
  }
  fuse_ino_t Dir(fuse_ino_t parent, const std::string& name) {
    return Make(parent, name, S_IFDIR | 0755);
  }
  fuse_ino_t File(fuse_ino_t parent, const std::string& name) {
    return Make(parent, name, S_IFREG | 0644);
  }
  int Errno(const absl::Status& s) { return StatusToErrno(s); }
  template <typename T>
  int Errno(const absl::StatusOr<T>& s) { return StatusToErrno(s.status()); }
  nlink_t Nlink(fuse_ino_t ino) { return tree_.GetAttr(ino)->st_nlink; }
  std::set<std::string> List(fuse_ino_t dir) {
    std::set<std::string> names;
    EXPECT_TRUE(tree_.ReadDir(dir, 0, false,
                              [&](std::string_view name, const struct stat&,
                                  uint64_t, bool is_dot) {
                                if (!is_dot) names.emplace(name);
                                return true;
                              })
                    .ok());
    return names;
  }

  BlockBudget budget_{64 << 20};
  Tree tree_{kBlock, &budget_};
};

TEST_F(TreeTest, CreateLookupAndErrors) {
  const fuse_ino_t d = Dir(FUSE_ROOT_ID, "d");
  const fuse_ino_t f = File(d, "f");
  EXPECT_EQ(tree_.Lookup(d, "f")->st_ino, f);
  EXPECT_EQ(Errno(tree_.Lookup(d, "nope")), ENOENT);
  EXPECT_EQ(Errno(tree_.Lookup(f, "x")), ENOTDIR);
  EXPECT_EQ(Errno(tree_.MakeNode(d, "f", S_IFREG | 0644, 0, {}, {})), EEXIST);
  EXPECT_EQ(Errno(tree_.MakeNode(d, std::string(256, 'n'), S_IFREG, 0, {}, {})),
            ENAMETOOLONG);
  EXPECT_TRUE(tree_.MakeNode(d, std::string(255, 'n'), S_IFREG, 0, {}, {}).ok());
  const struct stat st = *tree_.GetAttr(f);
  EXPECT_EQ(st.st_uid, 1000u);
  EXPECT_EQ(st.st_mode, S_IFREG | 0644);
  EXPECT_EQ(Nlink(FUSE_ROOT_ID), 3u);  // ".", "..", and d's ".."
}

TEST_F(TreeTest, SymlinkAndSpecialFiles) {
  const fuse_ino_t l = Make(FUSE_ROOT_ID, "l", S_IFLNK | 0777);
  EXPECT_EQ(*tree_.ReadLink(l), "target");
  EXPECT_EQ(tree_.GetAttr(l)->st_size, 6);
  const fuse_ino_t f = File(FUSE_ROOT_ID, "f");
  EXPECT_EQ(Errno(tree_.ReadLink(f)), EINVAL);
  absl::StatusOr<struct stat> dev =
      tree_.MakeNode(FUSE_ROOT_ID, "dev", S_IFCHR | 0600, makedev(1, 3), {}, {});
  ASSERT_TRUE(dev.ok());
  EXPECT_EQ(dev->st_rdev, makedev(1, 3));
  EXPECT_TRUE(S_ISFIFO(
      tree_.MakeNode(FUSE_ROOT_ID, "p", S_IFIFO | 0600, 0, {}, {})->st_mode));
}

TEST_F(TreeTest, SetgidDirectoryPassesGroupDown) {
  const fuse_ino_t d = Dir(FUSE_ROOT_ID, "d");
  struct stat attr{};
  attr.st_mode = 02775;
  attr.st_gid = 4242;
  ASSERT_TRUE(
      tree_.SetAttr(d, attr, FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_GID).ok());
  const fuse_ino_t sub = Dir(d, "sub");
  EXPECT_EQ(tree_.GetAttr(sub)->st_gid, 4242u);
  EXPECT_TRUE(tree_.GetAttr(sub)->st_mode & S_ISGID);
  EXPECT_EQ(tree_.GetAttr(File(d, "f"))->st_gid, 4242u);
}

TEST_F(TreeTest, UnlinkRmdirSemantics) {
  const fuse_ino_t d = Dir(FUSE_ROOT_ID, "d");
  File(d, "f");
  EXPECT_EQ(Errno(tree_.Rmdir(FUSE_ROOT_ID, "d")), ENOTEMPTY);
  EXPECT_EQ(Errno(tree_.Unlink(FUSE_ROOT_ID, "d")), EISDIR);
  EXPECT_EQ(Errno(tree_.Rmdir(d, "f")), ENOTDIR);
  EXPECT_EQ(Errno(tree_.Unlink(d, "zz")), ENOENT);
  ASSERT_TRUE(tree_.Unlink(d, "f").ok());
  ASSERT_TRUE(tree_.Rmdir(FUSE_ROOT_ID, "d").ok());
  EXPECT_EQ(Nlink(FUSE_ROOT_ID), 2u);
  // A removed directory still referenced by the kernel can't get entries.
  EXPECT_EQ(Errno(tree_.MakeNode(d, "x", S_IFREG, 0, {}, {})), ENOENT);
}

TEST_F(TreeTest, HardLinksCountAndShareData) {
  const fuse_ino_t f = File(FUSE_ROOT_ID, "f");
  ASSERT_TRUE(tree_.Write(f, 0, "data", 4).ok());
  ASSERT_TRUE(tree_.Link(f, FUSE_ROOT_ID, "g").ok());
  EXPECT_EQ(Nlink(f), 2u);
  const fuse_ino_t d = Dir(FUSE_ROOT_ID, "d");
  EXPECT_EQ(Errno(tree_.Link(d, FUSE_ROOT_ID, "dlink")), EPERM);
  EXPECT_EQ(Errno(tree_.Link(f, FUSE_ROOT_ID, "g")), EEXIST);
  ASSERT_TRUE(tree_.Unlink(FUSE_ROOT_ID, "f").ok());
  char buf[4];
  ASSERT_EQ(*tree_.Read(tree_.Lookup(FUSE_ROOT_ID, "g")->st_ino, 0, 4, buf), 4u);
  EXPECT_EQ(std::string(buf, 4), "data");
  EXPECT_EQ(Nlink(f), 1u);
}

TEST_F(TreeTest, UnlinkedFileLivesUntilLastForgetThenFreesItsBlocks) {
  const fuse_ino_t f = File(FUSE_ROOT_ID, "f");  // lookup count 1
  std::string payload(3 * kBlock, 'x');
  ASSERT_TRUE(tree_.Write(f, 0, payload.data(), payload.size()).ok());
  const uint64_t inodes = tree_.GetUsage().inodes;
  ASSERT_TRUE(tree_.Unlink(FUSE_ROOT_ID, "f").ok());
  // Still open: readable and writable.
  ASSERT_TRUE(tree_.Write(f, 0, "y", 1).ok());
  char c;
  ASSERT_EQ(*tree_.Read(f, 0, 1, &c), 1u);
  EXPECT_EQ(c, 'y');
  EXPECT_EQ(budget_.used(), 3 * kBlock);
  tree_.Forget(f, 1);
  EXPECT_EQ(budget_.used(), 0u);
  EXPECT_EQ(tree_.GetUsage().inodes, inodes - 1);
}

TEST_F(TreeTest, RenameSemantics) {
  const fuse_ino_t a = Dir(FUSE_ROOT_ID, "a");
  const fuse_ino_t b = Dir(FUSE_ROOT_ID, "b");
  const fuse_ino_t sub = Dir(a, "sub");
  const fuse_ino_t f = File(FUSE_ROOT_ID, "f");
  File(FUSE_ROOT_ID, "g");
  File(b, "inside");
  // Into its own subtree.
  EXPECT_EQ(Errno(tree_.Rename(FUSE_ROOT_ID, "a", sub, "x", 0)), EINVAL);
  EXPECT_EQ(Errno(tree_.Rename(FUSE_ROOT_ID, "a", a, "x", 0)), EINVAL);
  // Type clashes and non-empty targets.
  EXPECT_EQ(Errno(tree_.Rename(FUSE_ROOT_ID, "f", FUSE_ROOT_ID, "a", 0)),
            EISDIR);
  EXPECT_EQ(Errno(tree_.Rename(FUSE_ROOT_ID, "a", FUSE_ROOT_ID, "f", 0)),
            ENOTDIR);
  EXPECT_EQ(Errno(tree_.Rename(FUSE_ROOT_ID, "a", FUSE_ROOT_ID, "b", 0)),
            ENOTEMPTY);
  EXPECT_EQ(Errno(tree_.Rename(FUSE_ROOT_ID, "f", FUSE_ROOT_ID, "g",
                               RENAME_NOREPLACE)),
            EEXIST);
  EXPECT_EQ(Errno(tree_.Rename(FUSE_ROOT_ID, "f", FUSE_ROOT_ID, "g",
                               RENAME_NOREPLACE | RENAME_EXCHANGE)),
            EINVAL);
  EXPECT_EQ(Errno(tree_.Rename(FUSE_ROOT_ID, "nope", FUSE_ROOT_ID, "g", 0)),
            ENOENT);
  // Replacing a file; the replaced one is gone from the namespace.
  ASSERT_TRUE(tree_.Rename(FUSE_ROOT_ID, "f", FUSE_ROOT_ID, "g", 0).ok());
  EXPECT_EQ(tree_.Lookup(FUSE_ROOT_ID, "g")->st_ino, f);
  EXPECT_EQ(Errno(tree_.Lookup(FUSE_ROOT_ID, "f")), ENOENT);
  // Moving a directory fixes both parents' link counts and "..".
  ASSERT_TRUE(tree_.Rename(a, "sub", b, "sub", 0).ok());
  EXPECT_EQ(Nlink(a), 2u);
  EXPECT_EQ(Nlink(b), 3u);
  EXPECT_EQ(Errno(tree_.Rename(FUSE_ROOT_ID, "b", sub, "b", 0)), EINVAL);
  // Replacing an empty directory.
  ASSERT_TRUE(tree_.Rename(b, "sub", FUSE_ROOT_ID, "a", 0).ok());
  EXPECT_EQ(tree_.Lookup(FUSE_ROOT_ID, "a")->st_ino, sub);
  EXPECT_EQ(Nlink(FUSE_ROOT_ID), 4u);  // a (now sub) and b
  // Renaming onto a hard link of itself does nothing.
  ASSERT_TRUE(tree_.Link(f, FUSE_ROOT_ID, "f2").ok());
  ASSERT_TRUE(tree_.Rename(FUSE_ROOT_ID, "g", FUSE_ROOT_ID, "f2", 0).ok());
  EXPECT_EQ(List(FUSE_ROOT_ID), (std::set<std::string>{"a", "b", "g", "f2"}));
}

TEST_F(TreeTest, RenameExchange) {
  const fuse_ino_t d = Dir(FUSE_ROOT_ID, "d");
  const fuse_ino_t e = Dir(FUSE_ROOT_ID, "e");
  const fuse_ino_t f = File(e, "f");
  EXPECT_EQ(Errno(tree_.Rename(FUSE_ROOT_ID, "d", e, "missing",
                               RENAME_EXCHANGE)),
            ENOENT);
  // Directory d <-> file e/f: d moves into e, f moves to the root.
  ASSERT_TRUE(tree_.Rename(FUSE_ROOT_ID, "d", e, "f", RENAME_EXCHANGE).ok());
  EXPECT_EQ(tree_.Lookup(FUSE_ROOT_ID, "d")->st_ino, f);
  EXPECT_EQ(tree_.Lookup(e, "f")->st_ino, d);
  EXPECT_EQ(Nlink(e), 3u);
  EXPECT_EQ(Nlink(FUSE_ROOT_ID), 3u);
  // A directory can't be exchanged into its own subtree.
  EXPECT_EQ(Errno(tree_.Rename(FUSE_ROOT_ID, "e", d, "x", RENAME_EXCHANGE)),
            ENOENT);
  File(d, "x");
  EXPECT_EQ(Errno(tree_.Rename(FUSE_ROOT_ID, "e", d, "x", RENAME_EXCHANGE)),
            EINVAL);
}

TEST_F(TreeTest, ReadDirPlusCountsLookupsAndOffsetsResume) {
  const fuse_ino_t d = Dir(FUSE_ROOT_ID, "d");
  for (int i = 0; i < 50; ++i) File(d, "f" + std::to_string(i));
  // Read 10 entries at a time, deleting what was listed, like rm -rf.
  uint64_t cookie = 0;
  int seen = 0;
  std::vector<std::pair<fuse_ino_t, std::string>> batch;
  do {
    batch.clear();
    ASSERT_TRUE(tree_.ReadDir(d, cookie, true,
                              [&](std::string_view name, const struct stat& st,
                                  uint64_t next, bool is_dot) {
                                if (batch.size() == 10) return false;
                                cookie = next;
                                if (!is_dot) batch.emplace_back(st.st_ino,
                                                                name);
                                return true;
                              })
                    .ok());
    for (auto& [ino, name] : batch) {
      ASSERT_TRUE(tree_.Unlink(d, name).ok());
      tree_.Forget(ino, 2);  // from MakeNode and from readdirplus
    }
    seen += static_cast<int>(batch.size());
  } while (!batch.empty());
  EXPECT_EQ(seen, 50);
  EXPECT_TRUE(List(d).empty());
  EXPECT_EQ(tree_.GetUsage().inodes, 2u);  // root and d: nothing leaked
}

TEST_F(TreeTest, SetAttrTruncateAndTimes) {
  const fuse_ino_t f = File(FUSE_ROOT_ID, "f");
  std::string payload(2 * kBlock, 'x');
  ASSERT_TRUE(tree_.Write(f, 0, payload.data(), payload.size()).ok());
  struct stat attr{};
  attr.st_size = 10;
  attr.st_mtim = {1000, 5};
  ASSERT_TRUE(
      tree_.SetAttr(f, attr, FUSE_SET_ATTR_SIZE | FUSE_SET_ATTR_MTIME).ok());
  const struct stat st = *tree_.GetAttr(f);
  EXPECT_EQ(st.st_size, 10);
  EXPECT_EQ(st.st_mtim.tv_sec, 1000);
  EXPECT_EQ(st.st_mtim.tv_nsec, 5);
  attr.st_size = 100;
  ASSERT_TRUE(tree_.SetAttr(f, attr, FUSE_SET_ATTR_SIZE).ok());
  char buf[100];
  ASSERT_EQ(*tree_.Read(f, 0, 100, buf), 100u);
  EXPECT_EQ(std::string(buf, 10), std::string(10, 'x'));
  EXPECT_EQ(std::string(buf + 10, 90), std::string(90, '\0'));
  const fuse_ino_t d = Dir(FUSE_ROOT_ID, "d");
  EXPECT_EQ(Errno(tree_.SetAttr(d, attr, FUSE_SET_ATTR_SIZE)), EISDIR);
}

TEST_F(TreeTest, OpenTruncAndFallocate) {
  const fuse_ino_t f = File(FUSE_ROOT_ID, "f");
  ASSERT_TRUE(tree_.Write(f, 0, "abc", 3).ok());
  ASSERT_TRUE(tree_.Open(f, O_RDWR | O_TRUNC).ok());
  EXPECT_EQ(tree_.GetAttr(f)->st_size, 0);
  ASSERT_TRUE(tree_.Fallocate(f, 0, 0, 3 * kBlock).ok());
  EXPECT_EQ(tree_.GetAttr(f)->st_size, 3 * kBlock);
  ASSERT_TRUE(tree_.Fallocate(f, FALLOC_FL_KEEP_SIZE, 0, 5 * kBlock).ok());
  EXPECT_EQ(tree_.GetAttr(f)->st_size, 3 * kBlock);
  ASSERT_TRUE(tree_.Fallocate(f, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                              0, kBlock).ok());
  EXPECT_EQ(budget_.used(), 4 * kBlock);  // the punched block was freed
  EXPECT_EQ(Errno(tree_.Fallocate(f, FALLOC_FL_PUNCH_HOLE, 0, kBlock)),
            EOPNOTSUPP);
}

TEST_F(TreeTest, CopyFileRange) {
  const fuse_ino_t a = File(FUSE_ROOT_ID, "a");
  const fuse_ino_t b = File(FUSE_ROOT_ID, "b");
  std::string payload;
  for (int i = 0; i < 5000; ++i) payload.push_back('0' + i % 10);
  ASSERT_TRUE(tree_.Write(a, 0, payload.data(), payload.size()).ok());
  EXPECT_EQ(*tree_.CopyFileRange(a, 1000, b, 10, 10000), 4000u);  // to EOF
  std::string out(4010, '?');
  ASSERT_EQ(*tree_.Read(b, 0, out.size(), out.data()), 4010u);
  EXPECT_EQ(out.substr(0, 10), std::string(10, '\0'));
  EXPECT_EQ(out.substr(10), payload.substr(1000));
}

TEST_F(TreeTest, Xattrs) {
  const fuse_ino_t f = File(FUSE_ROOT_ID, "f");
  EXPECT_EQ(Errno(tree_.GetXattr(f, "user.a")), ENODATA);
  EXPECT_EQ(Errno(tree_.SetXattr(f, "user.a", "1", XATTR_REPLACE)), ENODATA);
  ASSERT_TRUE(tree_.SetXattr(f, "user.a", "1", XATTR_CREATE).ok());
  EXPECT_EQ(Errno(tree_.SetXattr(f, "user.a", "2", XATTR_CREATE)), EEXIST);
  ASSERT_TRUE(tree_.SetXattr(f, "user.a", "2", XATTR_REPLACE).ok());
  ASSERT_TRUE(tree_.SetXattr(f, "trusted.b", std::string("\0x", 2), 0).ok());
  EXPECT_EQ(*tree_.GetXattr(f, "user.a"), "2");
  EXPECT_EQ(*tree_.GetXattr(f, "trusted.b"), std::string("\0x", 2));
  EXPECT_EQ(*tree_.ListXattr(f), std::string("trusted.b\0user.a\0", 17));
  EXPECT_EQ(Errno(tree_.SetXattr(f, "bogus.c", "1", 0)), EOPNOTSUPP);
  ASSERT_TRUE(tree_.RemoveXattr(f, "user.a").ok());
  EXPECT_EQ(Errno(tree_.RemoveXattr(f, "user.a")), ENODATA);
}

}  // namespace
}  // namespace memfuse::fsd
