// rename(2) and renameat2(2) with its flags, compared with a native directory.
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "gtest/gtest.h"
#include "tests/testing/mount_fixture.h"
#include "tests/testing/posix_compare.h"

namespace memfuse::testing {
namespace {

using RenameTest = MountTest;

Outcome Rename2(const Dir& d, const char* from, const char* to,
                unsigned flags) {
  return Sys(
      renameat2(AT_FDCWD, d(from).c_str(), AT_FDCWD, d(to).c_str(), flags));
}

TEST_F(RenameTest, PlainAndOverExistingFile) {
  ExpectSameTrace("rename", [](const Dir& d, Trace& t) {
    t.Add("a", WriteFile(d("a"), "AAAA"));
    t.Add("rename a b", Sys(rename(d("a").c_str(), d("b").c_str())));
    t.Add("old name gone", Stat(d("a")));
    t.Add("new name has content", ReadFile(d("b")));
    t.Add("c", WriteFile(d("c"), "CC"));
    t.Add("rename c over b", Sys(rename(d("c").c_str(), d("b").c_str())));
    t.Add("b has c's content", ReadFile(d("b")));
    t.Add("c gone", Stat(d("c")));
    t.Add("rename missing", Sys(rename(d("zz").c_str(), d("b").c_str())));
    t.Add("rename into missing dir",
          Sys(rename(d("b").c_str(), d("nodir/b").c_str())));
    t.Add("listing", ListDir(d("")));
  });
}

TEST_F(RenameTest, AcrossDirectoriesUpdatesParents) {
  ExpectSameTrace("rename across dirs", [](const Dir& d, Trace& t) {
    t.Add("mkdir d1", Sys(mkdir(d("d1").c_str(), 0755)));
    t.Add("mkdir d2", Sys(mkdir(d("d2").c_str(), 0755)));
    t.Add("mkdir d1/sub", Sys(mkdir(d("d1/sub").c_str(), 0755)));
    t.Add("file in sub", WriteFile(d("d1/sub/f"), "deep"));
    t.Add("marker in d2", WriteFile(d("d2/marker"), "m"));
    t.Add("move file", Sys(rename(d("d1/sub/f").c_str(), d("d2/f").c_str())));
    t.Add("move dir", Sys(rename(d("d1/sub").c_str(), d("d2/sub").c_str())));
    t.Add("d1 nlink drops", Stat(d("d1")));
    t.Add("d2 nlink grows", Stat(d("d2")));
    t.Add("moved dir's .. is the new parent", Stat(d("d2/sub/../marker")));
    t.Add("moved file readable", ReadFile(d("d2/f")));
  });
  ExpectSame("tree", [](const Dir& d) { return TreeSummary(d("")); });
}

TEST_F(RenameTest, NoReplace) {
  ExpectSameTrace("RENAME_NOREPLACE", [](const Dir& d, Trace& t) {
    t.Add("a", WriteFile(d("a"), "A"));
    t.Add("b", WriteFile(d("b"), "B"));
    t.Add("noreplace onto existing", Rename2(d, "a", "b", RENAME_NOREPLACE));
    t.Add("b unchanged", ReadFile(d("b")));
    t.Add("a still there", ReadFile(d("a")));
    t.Add("noreplace onto new name", Rename2(d, "a", "c", RENAME_NOREPLACE));
    t.Add("c", ReadFile(d("c")));
    t.Add("noreplace|exchange is invalid",
          Rename2(d, "b", "c", RENAME_NOREPLACE | RENAME_EXCHANGE));
    t.Add("listing", ListDir(d("")));
  });
}

TEST_F(RenameTest, ExchangeFileAndDirectory) {
  ExpectSameTrace("RENAME_EXCHANGE", [](const Dir& d, Trace& t) {
    t.Add("file", WriteFile(d("f"), "file"));
    t.Add("dir", Sys(mkdir(d("dir").c_str(), 0700)));
    t.Add("child", WriteFile(d("dir/child"), "child"));
    t.Add("other dir", Sys(mkdir(d("other").c_str(), 0755)));
    t.Add("exchange f <-> dir", Rename2(d, "f", "dir", RENAME_EXCHANGE));
    t.Add("f is now the dir", Stat(d("f")));
    t.Add("dir is now the file", Stat(d("dir")));
    t.Add("child moved with dir", ReadFile(d("f/child")));
    t.Add("file content", ReadFile(d("dir")));
    t.Add("exchange across parents",
          Rename2(d, "f/child", "other", RENAME_EXCHANGE));
    t.Add("root nlink after exchange", Stat(d("f")));
    t.Add("other is the file now", ReadFile(d("f/other")));
    t.Add("exchange with missing", Rename2(d, "dir", "nope", RENAME_EXCHANGE));
  });
  ExpectSame("tree", [](const Dir& d) { return TreeSummary(d("")); });
}

TEST_F(RenameTest, DirectoryIntoItselfIsInvalid) {
  ExpectSameTrace("dir into own subdir", [](const Dir& d, Trace& t) {
    t.Add("mkdir a", Sys(mkdir(d("a").c_str(), 0755)));
    t.Add("mkdir a/b", Sys(mkdir(d("a/b").c_str(), 0755)));
    t.Add("a -> a/b/c", Sys(rename(d("a").c_str(), d("a/b/c").c_str())));
    t.Add("a -> a/c", Sys(rename(d("a").c_str(), d("a/c").c_str())));
    t.Add("exchange a <-> a/b", Rename2(d, "a", "a/b", RENAME_EXCHANGE));
    t.Add("a still there", Stat(d("a/b")));
  });
}

TEST_F(RenameTest, DirectoryReplacement) {
  ExpectSameTrace("dir replacement", [](const Dir& d, Trace& t) {
    t.Add("mkdir x", Sys(mkdir(d("x").c_str(), 0755)));
    t.Add("mkdir y", Sys(mkdir(d("y").c_str(), 0755)));
    t.Add("y/z", WriteFile(d("y/z"), "z"));
    t.Add("mkdir e", Sys(mkdir(d("e").c_str(), 0755)));
    t.Add("file", WriteFile(d("f"), "f"));
    t.Add("dir onto non-empty dir",
          Sys(rename(d("x").c_str(), d("y").c_str())));
    t.Add("file onto dir", Sys(rename(d("f").c_str(), d("e").c_str())));
    t.Add("dir onto file", Sys(rename(d("x").c_str(), d("f").c_str())));
    t.Add("dir onto empty dir", Sys(rename(d("x").c_str(), d("e").c_str())));
    t.Add("x gone", Stat(d("x")));
    t.Add("e is a dir", Stat(d("e")));
    t.Add("non-empty dir onto empty dir",
          Sys(rename(d("y").c_str(), d("e").c_str())));
    t.Add("e has z", ReadFile(d("e/z")));
  });
  ExpectSame("tree", [](const Dir& d) { return TreeSummary(d("")); });
}

TEST_F(RenameTest, RenameToSelfAndHardLinks) {
  ExpectSameTrace("rename to self", [](const Dir& d, Trace& t) {
    t.Add("f", WriteFile(d("f"), "self"));
    t.Add("rename f f", Sys(rename(d("f").c_str(), d("f").c_str())));
    t.Add("f still there", ReadFile(d("f")));
    t.Add("mkdir d", Sys(mkdir(d("d").c_str(), 0755)));
    t.Add("rename d d", Sys(rename(d("d").c_str(), d("d").c_str())));
    t.Add("d still there", Stat(d("d")));
    // Two names of one inode: rename does nothing and both names stay.
    t.Add("link", Sys(link(d("f").c_str(), d("g").c_str())));
    t.Add("rename f onto its own hard link",
          Sys(rename(d("f").c_str(), d("g").c_str())));
    t.Add("f stays", Stat(d("f")));
    t.Add("g stays", Stat(d("g")));
    t.Add("noreplace to self", Rename2(d, "f", "f", RENAME_NOREPLACE));
  });
}

TEST_F(RenameTest, OpenFileSurvivesRenameOver) {
  ExpectSameTrace("open victim", [](const Dir& d, Trace& t) {
    t.Add("victim", WriteFile(d("victim"), "old"));
    t.Add("new", WriteFile(d("new"), "new"));
    int fd = open(d("victim").c_str(), O_RDWR);
    t.Add("open victim", SysOk(fd));
    if (fd < 0) return;
    t.Add("rename new over victim",
          Sys(rename(d("new").c_str(), d("victim").c_str())));
    t.Add("name has new content", ReadFile(d("victim")));
    char buf[16] = {};
    t.Add("old inode still readable",
          SysWith(pread(fd, buf, sizeof(buf), 0), buf));
    t.Add("old inode writable", Sys(pwrite(fd, "OLD", 3, 0)));
    t.Add("fstat old inode (nlink 0)", Fstat(fd));
    close(fd);
    t.Add("name unaffected by write to old inode", ReadFile(d("victim")));
  });
}

}  // namespace
}  // namespace memfuse::testing
