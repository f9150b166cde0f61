// Name-space operations (lookup, create, mknod, mkdir, symlink, link, unlink,
// rmdir), each run on the mount and on a native directory with the results
// and errno compared.
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "gtest/gtest.h"
#include "tests/testing/mount_fixture.h"
#include "tests/testing/posix_compare.h"

namespace memfuse::testing {
namespace {

using EntryTest = MountTest;

TEST_F(EntryTest, CreateAndLookup) {
  ExpectSameTrace("create", [](const Dir& d, Trace& t) {
    t.Add("lookup missing", Stat(d("f")));
    t.Add("create",
          SysOk(open(d("f").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0640)));
    t.Add("stat", Stat(d("f")));
    t.Add("create O_EXCL existing",
          SysOk(open(d("f").c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644)));
    t.Add("lookup below a file", Stat(d("f/x")));
    t.Add("create below a file",
          SysOk(open(d("f/x").c_str(), O_CREAT | O_WRONLY, 0644)));
    t.Add("create in missing dir",
          SysOk(open(d("nodir/x").c_str(), O_CREAT | O_WRONLY, 0644)));
    t.Add("open missing without O_CREAT",
          SysOk(open(d("g").c_str(), O_RDONLY)));
    t.Add("trailing slash on a file", Stat(d("f/")));
  });
  ExpectSame("tree", [](const Dir& d) { return TreeSummary(d("")); });
}

TEST_F(EntryTest, MknodSpecialFiles) {
  ExpectSameTrace("mknod", [](const Dir& d, Trace& t) {
    t.Add("regular", Sys(mknod(d("reg").c_str(), S_IFREG | 0644, 0)));
    t.Add("fifo", Sys(mknod(d("fifo").c_str(), S_IFIFO | 0600, 0)));
    t.Add("socket", Sys(mknod(d("sock").c_str(), S_IFSOCK | 0755, 0)));
    t.Add("char device",
          Sys(mknod(d("chr").c_str(), S_IFCHR | 0666, makedev(1, 3))));
    t.Add("block device",
          Sys(mknod(d("blk").c_str(), S_IFBLK | 0660, makedev(8, 17))));
    t.Add("existing", Sys(mknod(d("fifo").c_str(), S_IFIFO | 0600, 0)));
    t.Add("mkfifo", Sys(mkfifo(d("fifo2").c_str(), 0644)));
    for (const char* name : {"reg", "fifo", "sock", "chr", "blk", "fifo2"}) {
      t.Add(std::string("lstat ") + name, Lstat(d(name)));
    }
    // A FIFO opened non-blocking for reading works without a writer.
    int fd = open(d("fifo").c_str(), O_RDONLY | O_NONBLOCK);
    t.Add("open fifo O_NONBLOCK", SysOk(fd));
    if (fd >= 0) close(fd);
  });
  ExpectSame("tree", [](const Dir& d) { return TreeSummary(d("")); });
}

TEST_F(EntryTest, MkdirAndDirectoryLinkCount) {
  ExpectSameTrace("mkdir", [](const Dir& d, Trace& t) {
    t.Add("mkdir", Sys(mkdir(d("d").c_str(), 0750)));
    t.Add("stat empty dir", Stat(d("d")));
    t.Add("mkdir child a", Sys(mkdir(d("d/a").c_str(), 0755)));
    t.Add("mkdir child b", Sys(mkdir(d("d/b").c_str(), 0755)));
    t.Add("file child", WriteFile(d("d/f"), "x"));
    t.Add("stat dir with 2 subdirs (nlink 4)", Stat(d("d")));
    t.Add("rmdir a", Sys(rmdir(d("d/a").c_str())));
    t.Add("stat dir with 1 subdir (nlink 3)", Stat(d("d")));
    t.Add("mkdir existing", Sys(mkdir(d("d").c_str(), 0755)));
    t.Add("mkdir over file", Sys(mkdir(d("d/f").c_str(), 0755)));
    t.Add("mkdir in missing parent", Sys(mkdir(d("x/y").c_str(), 0755)));
    t.Add("mkdir below a file", Sys(mkdir(d("d/f/y").c_str(), 0755)));
    t.Add("dot-dot resolves to parent", Stat(d("d/b/../f")));
  });
  ExpectSame("tree", [](const Dir& d) { return TreeSummary(d("")); });
}

TEST_F(EntryTest, SymlinkAndReadlink) {
  const std::string long_target(4000, 't');
  ExpectSameTrace("symlink", [&](const Dir& d, Trace& t) {
    t.Add("dangling symlink", Sys(symlink("does/not/exist", d("dl").c_str())));
    t.Add("readlink", ReadLink(d("dl")));
    t.Add("lstat link (size = target length)", Lstat(d("dl")));
    t.Add("stat follows dangling", Stat(d("dl")));
    t.Add("target file", WriteFile(d("f"), "hello"));
    t.Add("symlink to file", Sys(symlink("f", d("l").c_str())));
    t.Add("stat follows", Stat(d("l")));
    t.Add("read through link", ReadFile(d("l")));
    t.Add("open O_NOFOLLOW on link",
          SysOk(open(d("l").c_str(), O_RDONLY | O_NOFOLLOW)));
    t.Add("readlink on a file", ReadLink(d("f")));
    t.Add("symlink existing name", Sys(symlink("x", d("f").c_str())));
    t.Add("long target", Sys(symlink(long_target.c_str(), d("long").c_str())));
    t.Add("readlink long", ReadLink(d("long")));
    t.Add("symlink to dir", Sys(mkdir(d("dir").c_str(), 0755)));
    t.Add("dir link", Sys(symlink("dir", d("dl2").c_str())));
    t.Add("create through dir link", WriteFile(d("dl2/inside"), "abc"));
    t.Add("read via real path", ReadFile(d("dir/inside")));
    t.Add("unlink link keeps target", Sys(unlink(d("l").c_str())));
    t.Add("target still there", ReadFile(d("f")));
  });
  ExpectSame("tree", [](const Dir& d) { return TreeSummary(d("")); });
}

TEST_F(EntryTest, HardLinkCounts) {
  ExpectSameTrace("link", [](const Dir& d, Trace& t) {
    t.Add("file", WriteFile(d("f"), "content"));
    t.Add("link", Sys(link(d("f").c_str(), d("g").c_str())));
    t.Add("stat f (nlink 2)", Stat(d("f")));
    t.Add("stat g (nlink 2)", Stat(d("g")));
    t.Add("mkdir sub", Sys(mkdir(d("sub").c_str(), 0755)));
    t.Add("link into subdir", Sys(link(d("f").c_str(), d("sub/h").c_str())));
    t.Add("stat (nlink 3)", Stat(d("sub/h")));
    t.Add("write through g", WriteFile(d("g"), "changed"));
    t.Add("read through f", ReadFile(d("f")));
    t.Add("unlink f", Sys(unlink(d("f").c_str())));
    t.Add("stat g (nlink 2)", Stat(d("g")));
    t.Add("read g", ReadFile(d("g")));
    t.Add("link existing name", Sys(link(d("g").c_str(), d("sub/h").c_str())));
    t.Add("link missing source", Sys(link(d("f").c_str(), d("x").c_str())));
    t.Add("link a directory", Sys(link(d("sub").c_str(), d("sub2").c_str())));
    t.Add("symlink then hard-link it", Sys(symlink("g", d("sl").c_str())));
    t.Add("link of symlink", Sys(link(d("sl").c_str(), d("sl2").c_str())));
    t.Add("lstat symlink (nlink 2)", Lstat(d("sl")));
    t.Add("fifo", Sys(mkfifo(d("fifo").c_str(), 0600)));
    t.Add("link fifo", Sys(link(d("fifo").c_str(), d("fifo2").c_str())));
    t.Add("lstat fifo (nlink 2)", Lstat(d("fifo2")));
  });
  ExpectSame("tree", [](const Dir& d) { return TreeSummary(d("")); });
}

TEST_F(EntryTest, UnlinkAndRmdirErrors) {
  ExpectSameTrace("unlink/rmdir", [](const Dir& d, Trace& t) {
    t.Add("mkdir", Sys(mkdir(d("d").c_str(), 0755)));
    t.Add("file in d", WriteFile(d("d/f"), "x"));
    t.Add("file", WriteFile(d("f"), "x"));
    t.Add("unlink a directory", Sys(unlink(d("d").c_str())));
    t.Add("rmdir a file", Sys(rmdir(d("f").c_str())));
    t.Add("rmdir non-empty", Sys(rmdir(d("d").c_str())));
    t.Add("unlink missing", Sys(unlink(d("missing").c_str())));
    t.Add("rmdir missing", Sys(rmdir(d("missing").c_str())));
    t.Add("unlink below a file", Sys(unlink(d("f/x").c_str())));
    t.Add("rmdir dot", Sys(rmdir(d("d/.").c_str())));
    t.Add("unlink d/f", Sys(unlink(d("d/f").c_str())));
    t.Add("stat unlinked", Stat(d("d/f")));
    t.Add("rmdir now empty", Sys(rmdir(d("d").c_str())));
    t.Add("stat removed dir", Stat(d("d")));
    t.Add("unlink f", Sys(unlink(d("f").c_str())));
    t.Add("listing empty", ListDir(d("")));
  });
}

TEST_F(EntryTest, OpenTypeErrors) {
  ExpectSameTrace("open", [](const Dir& d, Trace& t) {
    t.Add("mkdir", Sys(mkdir(d("d").c_str(), 0755)));
    t.Add("file", WriteFile(d("f"), "x"));
    t.Add("open dir for writing", SysOk(open(d("d").c_str(), O_WRONLY)));
    t.Add("O_CREAT on a dir",
          SysOk(open(d("d").c_str(), O_CREAT | O_RDWR, 0644)));
    t.Add("O_DIRECTORY on a file",
          SysOk(open(d("f").c_str(), O_RDONLY | O_DIRECTORY)));
    int fd = open(d("d").c_str(), O_RDONLY | O_DIRECTORY);
    t.Add("O_DIRECTORY on a dir", SysOk(fd));
    if (fd >= 0) {
      char c;
      t.Add("read(2) on a dir", Sys(read(fd, &c, 1)));
      close(fd);
    }
  });
}

TEST_F(EntryTest, NameTooLong) {
  const std::string max_name(255, 'n');
  const std::string too_long(256, 'n');
  ExpectSameTrace("long names", [&](const Dir& d, Trace& t) {
    t.Add("create 255-byte name", WriteFile(d(max_name), "ok"));
    t.Add("stat 255-byte name", Stat(d(max_name)));
    t.Add("lookup 256-byte name", Stat(d(too_long)));
    t.Add("create 256-byte name",
          SysOk(open(d(too_long).c_str(), O_CREAT | O_WRONLY, 0644)));
    t.Add("mkdir 256-byte name", Sys(mkdir(d(too_long).c_str(), 0755)));
    t.Add("mknod 256-byte name",
          Sys(mknod(d(too_long).c_str(), S_IFIFO | 0644, 0)));
    t.Add("symlink 256-byte name", Sys(symlink("x", d(too_long).c_str())));
    t.Add("link to 256-byte name",
          Sys(link(d(max_name).c_str(), d(too_long).c_str())));
    t.Add("rename to 256-byte name",
          Sys(rename(d(max_name).c_str(), d(too_long).c_str())));
    t.Add("unlink 256-byte name", Sys(unlink(d(too_long).c_str())));
    t.Add("listing", ListDir(d("")));
  });
}

TEST_F(EntryTest, FifoAndUnixSocketWork) {
  ExpectSameTrace("fifo and socket use", [](const Dir& d, Trace& t) {
    // The kernel runs FIFOs and sockets; the filesystem only stores the node,
    // which must come back with the right type for open/connect to work.
    t.Add("mkfifo", Sys(mkfifo(d("fifo").c_str(), 0600)));
    int fd = open(d("fifo").c_str(), O_RDWR | O_NONBLOCK);
    t.Add("open fifo", SysOk(fd));
    if (fd >= 0) {
      t.Add("write fifo", Sys(write(fd, "through", 7)));
      char buf[16] = {};
      ssize_t n = read(fd, buf, sizeof(buf));
      t.Add("read fifo", SysWith(n, std::string(buf, n > 0 ? n : 0)));
      close(fd);
    }
    int server = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int client = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un addr {};
    addr.sun_family = AF_UNIX;
    std::string path = d("sock");
    if (path.size() >= sizeof(addr.sun_path)) {
      t.Add("socket path fits", Outcome{-1, ENAMETOOLONG, path});
      return;
    }
    memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    t.Add("bind",
          Sys(bind(server, reinterpret_cast<sockaddr*>(&addr), sizeof(addr))));
    t.Add("socket node", Lstat(path));
    t.Add("listen", Sys(listen(server, 1)));
    t.Add("connect", Sys(connect(client, reinterpret_cast<sockaddr*>(&addr),
                                 sizeof(addr))));
    int conn = accept4(server, nullptr, nullptr, SOCK_CLOEXEC);
    t.Add("accept", SysOk(conn));
    t.Add("send", Sys(send(client, "hi", 2, 0)));
    char buf[4] = {};
    ssize_t n = conn >= 0 ? recv(conn, buf, sizeof(buf), 0) : -1;
    t.Add("recv", SysWith(n, std::string(buf, n > 0 ? n : 0)));
    int other = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    t.Add("bind existing path",
          Sys(bind(other, reinterpret_cast<sockaddr*>(&addr), sizeof(addr))));
    for (int f : {server, client, conn, other}) {
      if (f >= 0) close(f);
    }
  });
}

// Dropping the kernel's dentry and inode caches makes it FORGET (in batches)
// every inode it no longer needs; the daemon must keep them all and answer
// fresh lookups with the same data. Needs root (which the mount tests have).
TEST_F(EntryTest, LookupsAfterKernelForgetsInodes) {
  constexpr int kFiles = 2000;
  ASSERT_EQ(mkdir((mount_dir() + "/d").c_str(), 0755), 0);
  for (int i = 0; i < kFiles; ++i) {
    std::string name = mount_dir() + "/d/f" + std::to_string(i);
    ASSERT_EQ(WriteFile(name, PatternBytes(i, i % 5000)), Outcome{}) << name;
  }
  ASSERT_EQ(
      link((mount_dir() + "/d/f1").c_str(), (mount_dir() + "/d/hard").c_str()),
      0);
  ASSERT_EQ(symlink("f2", (mount_dir() + "/d/soft").c_str()), 0);
  // Held open across the forget: must survive with its lookup count.
  int held = open((mount_dir() + "/d/f3").c_str(), O_RDONLY);
  ASSERT_GE(held, 0);
  sync();
  int fd = open("/proc/sys/vm/drop_caches", O_WRONLY);
  ASSERT_GE(fd, 0) << "need root to drop caches: " << ErrnoName(errno);
  ASSERT_EQ(write(fd, "2", 1), 1) << ErrnoName(errno);
  close(fd);
  for (int i = 0; i < kFiles; ++i) {
    std::string name = mount_dir() + "/d/f" + std::to_string(i);
    Outcome content = ReadFile(name);
    ASSERT_TRUE(content.ret == 0 && content.data == PatternBytes(i, i % 5000))
        << name << ": " << ToString(content);
  }
  EXPECT_EQ(Stat(mount_dir() + "/d/hard"), Stat(mount_dir() + "/d/f1"));
  EXPECT_EQ(ReadLink(mount_dir() + "/d/soft").data, "f2");
  char c;
  EXPECT_EQ(pread(held, &c, 1, 0), 1) << ErrnoName(errno);
  close(held);
  Outcome listing = ListDir(mount_dir() + "/d");
  EXPECT_EQ(std::count(listing.data.begin(), listing.data.end(), '\n') + 1,
            kFiles + 2);
}

}  // namespace
}  // namespace memfuse::testing
