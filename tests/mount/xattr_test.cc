// Extended attributes in the user.* namespace, compared with a native
// directory. Values are kept under 4 KiB in compared steps because ext4 (the
// usual native side) stores at most one block of xattrs per inode.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "tests/testing/mount_fixture.h"
#include "tests/testing/posix_compare.h"

namespace memfuse::testing {
namespace {

using XattrTest = MountTest;

Outcome Get(const std::string& path, const char* name, size_t size = 4096) {
  std::string buf(size, '\0');
  ssize_t n = getxattr(path.c_str(), name, size ? buf.data() : nullptr, size);
  if (n < 0 || size == 0) return Sys(n);
  buf.resize(n);
  return SysWith(n, std::move(buf));
}

Outcome Set(const std::string& path, const char* name, absl::string_view value,
            int flags = 0) {
  return Sys(setxattr(path.c_str(), name, value.data(), value.size(), flags));
}

// Sorted user.* names (other namespaces, e.g. security.*, vary by system).
Outcome List(const std::string& path, size_t size = 4096) {
  std::string buf(size, '\0');
  ssize_t n = listxattr(path.c_str(), size ? buf.data() : nullptr, size);
  if (n < 0) return Sys(n);
  if (size == 0) return Outcome{n > 0 ? 1 : 0, 0, "size query"};
  std::vector<std::string> names;
  for (absl::string_view name :
       absl::StrSplit(absl::string_view(buf.data(), n), '\0')) {
    if (name.substr(0, 5) == "user.") names.emplace_back(name);
  }
  std::sort(names.begin(), names.end());
  return SysWith(0, absl::StrJoin(names, ","));
}

TEST_F(XattrTest, SetGetListRemove) {
  ExpectSameTrace("xattr", [](const Dir& d, Trace& t) {
    t.Add("file", WriteFile(d("f"), "x"));
    t.Add("get missing", Get(d("f"), "user.a"));
    t.Add("list empty", List(d("f")));
    t.Add("set user.a", Set(d("f"), "user.a", "value-a"));
    t.Add("set user.b", Set(d("f"), "user.b", std::string(3000, 'b')));
    t.Add("set empty value", Set(d("f"), "user.empty", ""));
    t.Add("get user.a", Get(d("f"), "user.a"));
    t.Add("get user.b", Get(d("f"), "user.b"));
    t.Add("get empty value", Get(d("f"), "user.empty"));
    t.Add("size query", Get(d("f"), "user.b", 0));
    t.Add("list", List(d("f")));
    t.Add("overwrite", Set(d("f"), "user.a", "v2"));
    t.Add("get overwritten (shorter)", Get(d("f"), "user.a"));
    t.Add("remove", Sys(removexattr(d("f").c_str(), "user.a")));
    t.Add("get removed", Get(d("f"), "user.a"));
    t.Add("remove again", Sys(removexattr(d("f").c_str(), "user.a")));
    t.Add("list after remove", List(d("f")));
    t.Add("binary value", Set(d("f"), "user.bin", std::string("\0\1\2\0", 4)));
    t.Add("get binary", Get(d("f"), "user.bin"));
  });
}

TEST_F(XattrTest, CreateAndReplaceFlags) {
  ExpectSameTrace("flags", [](const Dir& d, Trace& t) {
    t.Add("file", WriteFile(d("f"), "x"));
    t.Add("REPLACE missing", Set(d("f"), "user.x", "1", XATTR_REPLACE));
    t.Add("CREATE new", Set(d("f"), "user.x", "1", XATTR_CREATE));
    t.Add("CREATE existing", Set(d("f"), "user.x", "2", XATTR_CREATE));
    t.Add("value unchanged", Get(d("f"), "user.x"));
    t.Add("REPLACE existing", Set(d("f"), "user.x", "3", XATTR_REPLACE));
    t.Add("value replaced", Get(d("f"), "user.x"));
    t.Add("both flags",
          Set(d("f"), "user.x", "4", XATTR_CREATE | XATTR_REPLACE));
  });
}

TEST_F(XattrTest, BufferSizes) {
  ExpectSameTrace("sizes", [](const Dir& d, Trace& t) {
    t.Add("file", WriteFile(d("f"), "x"));
    t.Add("set", Set(d("f"), "user.long", std::string(100, 'v')));
    t.Add("get with small buffer", Get(d("f"), "user.long", 10));
    t.Add("get with exact buffer", Get(d("f"), "user.long", 100));
    t.Add("list with small buffer", List(d("f"), 3));
    t.Add("list size query", List(d("f"), 0));
    t.Add("value over 64 KiB",
          Set(d("f"), "user.huge", std::string(64 * 1024 + 1, 'h')));
    t.Add("name over 255 bytes",
          Set(d("f"), ("user." + std::string(251, 'n')).c_str(), "v"));
    t.Add("empty name", Set(d("f"), "", "v"));
  });
  // A value at the VFS limit must work on the mount (ext4 cannot store it).
  EXPECT_EQ(Set(mount_dir() + "/f", "user.max", std::string(64 * 1024, 'm')),
            Outcome{})
      << "a 64 KiB value";
  Outcome max = Get(mount_dir() + "/f", "user.max", 64 * 1024);
  EXPECT_EQ(max.ret, 64 * 1024) << ToString(max);
}

TEST_F(XattrTest, DirectoriesSymlinksAndDescriptors) {
  ExpectSameTrace("other objects", [](const Dir& d, Trace& t) {
    t.Add("mkdir", Sys(mkdir(d("dir").c_str(), 0755)));
    t.Add("set on dir", Set(d("dir"), "user.d", "dir-value"));
    t.Add("get on dir", Get(d("dir"), "user.d"));
    t.Add("list dir", List(d("dir")));
    t.Add("symlink", Sys(symlink("dir", d("link").c_str())));
    t.Add("get through link follows", Get(d("link"), "user.d"));
    t.Add("user.* on the link itself",
          Sys(lsetxattr(d("link").c_str(), "user.l", "v", 1, 0)));
    t.Add("fifo", Sys(mkfifo(d("fifo").c_str(), 0644)));
    t.Add("user.* on a fifo", Set(d("fifo"), "user.f", "v"));
    t.Add("file", WriteFile(d("f"), "x"));
    int fd = open(d("f").c_str(), O_RDONLY);
    t.Add("open", SysOk(fd));
    if (fd >= 0) {
      t.Add("fsetxattr", Sys(fsetxattr(fd, "user.fd", "fd-value", 8, 0)));
      char buf[32] = {};
      ssize_t n = fgetxattr(fd, "user.fd", buf, sizeof(buf));
      t.Add("fgetxattr", SysWith(n, std::string(buf, n > 0 ? n : 0)));
      t.Add("fremovexattr", Sys(fremovexattr(fd, "user.fd")));
      close(fd);
    }
    t.Add("xattr survives rename", Set(d("f"), "user.keep", "kept"));
    t.Add("rename", Sys(rename(d("f").c_str(), d("g").c_str())));
    t.Add("get after rename", Get(d("g"), "user.keep"));
    t.Add("hard link shares xattrs", Sys(link(d("g").c_str(), d("h").c_str())));
    t.Add("get via link", Get(d("h"), "user.keep"));
    t.Add("missing file", Get(d("nope"), "user.x"));
  });
}

}  // namespace
}  // namespace memfuse::testing
