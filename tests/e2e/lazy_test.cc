// Lazy loading (--lazy-load true, the default): a mount lists nothing from
// the mirror at start; a directory is listed the first time a name is looked
// up in it, it is read, or a name is created or removed in it; a file's
// blocks are fetched when read, only those (plus readahead). The root's
// user.memfuse.status counts both (dirs_listed, blocks_fetched), which is
// how these tests see what was fetched; what a program sees must not differ
// from an eager mount (--lazy-load false), which lists every directory at
// mount and prefetches contents in the background.
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <algorithm>
#include <optional>
#include <string>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_fixture.h"
#include "tests/e2e/workload.h"
#include "tests/testing/mount_fixture.h"
#include "tests/testing/posix_compare.h"
#include "tests/testing/tree_compare.h"

namespace memfuse::testing {
namespace {

std::optional<uint64_t> StatusValue(const std::string& mount,
                                    const std::string& name) {
  return DaemonStatus(mount)[name];
}

// Creates `path` holding `content` with plain syscalls (preparing a big
// mirror quickly); false on error, errno set.
bool MakeFile(const std::string& path, absl::string_view content) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return false;
  bool ok = write(fd, content.data(), content.size()) ==
            static_cast<ssize_t>(content.size());
  return close(fd) == 0 && ok;
}

// "d042/s7/f055 ok\n": 16 bytes naming the file.
std::string SmallContent(int dir, int sub, int file) {
  return absl::StrFormat("d%03d/s%d/f%03d ok\n", dir, sub, file);
}

// root/dDDD/sS/fFFF for `dirs` x `subs` x `files` (root/dDDD/fFFF when
// `subs` is 0), each holding SmallContent. Returns how many directories it
// made, the root included when `make_root`.
int MakeNestedTree(const std::string& root, int dirs, int subs, int files,
                   bool make_root = true) {
  int made = 0;
  auto mkdir_ok = [&](const std::string& path) {
    if (mkdir(path.c_str(), 0755) != 0) {
      ADD_FAILURE() << "mkdir " << path << ": " << ErrnoName(errno);
      return false;
    }
    ++made;
    return true;
  };
  if (make_root && !mkdir_ok(root)) return made;
  for (int d = 0; d < dirs; ++d) {
    const std::string dir = absl::StrFormat("%s/d%03d", root, d);
    if (!mkdir_ok(dir)) return made;
    for (int s = 0; s < std::max(subs, 1); ++s) {
      const std::string sub = subs == 0 ? dir : absl::StrCat(dir, "/s", s);
      if (subs > 0 && !mkdir_ok(sub)) return made;
      for (int f = 0; f < files; ++f) {
        const std::string path = absl::StrFormat("%s/f%03d", sub, f);
        if (!MakeFile(path, SmallContent(d, s, f))) {
          ADD_FAILURE() << "creating " << path << ": " << ErrnoName(errno);
          return made;
        }
      }
    }
  }
  return made;
}

using LazyTest = E2eTest;

TEST_F(LazyTest, OnlyTheLookedUpDirectoriesAreListed) {
  // The mirror on a tmpfs of its own: 100,000 files are made in a second or
  // two there, where on a busy disk they can take half a minute. Detached
  // lazily at the end (the agent may still hold it until TearDown).
  ASSERT_EQ(mkdir(mirror().c_str(), 0755), 0);
  ASSERT_EQ(::mount("memfuse-lazy-test", mirror().c_str(), "tmpfs", 0,
                    "size=1g,nr_inodes=0,mode=0755"),
            0)
      << ErrnoName(errno);
  absl::Cleanup detach = [&] { umount2(mirror().c_str(), MNT_DETACH); };
  // 100 x 10 directories of 100 files: 100,000 files, 1,101 directories
  // (the root exists already).
  ASSERT_EQ(MakeNestedTree(mirror(), 100, 10, 100, /*make_root=*/false),
            100 + 100 * 10);
  absl::Status started = Mount();
  ASSERT_TRUE(started.ok()) << started;
  EXPECT_EQ(StatusValue(mount(), "dirs_listed"), 0u)
      << "a lazy mount listed directories before anything was looked up";
  EXPECT_EQ(StatusValue(mount(), "blocks_fetched"), 0u);

  // The lookups of d042, s7 and f055 list the root, d042 and d042/s7.
  const std::string file = mount() + "/d042/s7/f055";
  struct stat st;
  ASSERT_EQ(stat(file.c_str(), &st), 0) << ErrnoName(errno);
  EXPECT_EQ(st.st_size, 16);
  EXPECT_EQ(StatusValue(mount(), "dirs_listed"), 3u);
  EXPECT_EQ(StatusValue(mount(), "blocks_fetched"), 0u)
      << "a stat fetched file data";
  // In memory: the root, its 100 entries, d042's 10 and s7's 100.
  EXPECT_EQ(StatusValue(mount(), "inodes"), 211u);
  EXPECT_EQ(StatusValue(mount(), "dir_entries"), 210u);
  const uint64_t metadata =
      StatusValue(mount(), "metadata_bytes").value_or(0);
  EXPECT_GT(metadata, 211u * 100);
  EXPECT_EQ(ReadFile(file), (Outcome{0, 0, SmallContent(42, 7, 55)}));
  EXPECT_EQ(StatusValue(mount(), "blocks_fetched"), 1u);
  EXPECT_EQ(StatusValue(mount(), "dirs_listed"), 3u);

  // Reading d001 lists it, and none of its subdirectories.
  EXPECT_EQ(ListDir(mount() + "/d001"),
            (Outcome{0, 0, "s0\ns1\ns2\ns3\ns4\ns5\ns6\ns7\ns8\ns9"}));
  EXPECT_EQ(StatusValue(mount(), "dirs_listed"), 4u);
  EXPECT_EQ(StatusValue(mount(), "inodes"), 221u);
  EXPECT_GT(StatusValue(mount(), "metadata_bytes").value_or(0), metadata);

  ASSERT_TRUE(CleanExit(Unmount()));
}

TEST_F(LazyTest, EagerListsEverythingAtMount) {
  // 20 directories of 50 files, the first of each empty, the rest 16 bytes
  // (one block each); plus one file of 3 blocks and a bit.
  constexpr int kDirs = 20;
  constexpr int kFiles = 50;
  constexpr uint64_t kBigSize = 3 * kMiB + 5;  // the default 1 MiB blocks
  ASSERT_EQ(MakeNestedTree(mirror(), kDirs, 0, kFiles), 1 + kDirs);
  for (int d = 0; d < kDirs; ++d) {
    const std::string path = absl::StrFormat("%s/d%03d/f000", mirror(), d);
    ASSERT_EQ(truncate(path.c_str(), 0), 0) << path << ": " << ErrnoName(errno);
  }
  Ops in_mirror(mirror());
  in_mirror.WriteStream("d000/big", 5, kBigSize);
  ASSERT_EQ(in_mirror.failures(), 0);
  const uint64_t kBlocks = kDirs * (kFiles - 1) + 4;

  absl::Status started = Mount({"--lazy-load", "false"});
  ASSERT_TRUE(started.ok()) << started;
  EXPECT_EQ(StatusValue(mount(), "dirs_listed"), 1u + kDirs)
      << "an eager mount must list every directory before it serves";

  // Contents are prefetched in the background, every block once.
  auto fetched = [&] { return StatusValue(mount(), "blocks_fetched"); };
  WaitFor(
      [&] {
        std::optional<uint64_t> n = fetched();
        return !n.has_value() || *n >= kBlocks;
      },
      std::chrono::seconds(30));
  EXPECT_GE(fetched(), kBlocks) << "the background prefetch did not fetch "
                                   "every block of the mirror";
  EXPECT_TRUE(WaitFor(
      [&] {
        return absl::StrContains(absl::AsciiStrToLower(fs().Log()),
                                 "prefetch");
      },
      std::chrono::seconds(10)))
      << "the log does not mention the prefetch:\n"
      << fs().Log();

  // Reading everything is served from memory: nothing more is fetched or
  // listed, and the mount shows the mirror exactly.
  EXPECT_TRUE(TreesEqual(mirror(), mount(), ExactCompareOptions()));
  EXPECT_EQ(StatusValue(mount(), "blocks_fetched"), kBlocks);
  EXPECT_EQ(StatusValue(mount(), "dirs_listed"), 1u + kDirs);

  ASSERT_TRUE(CleanExit(Unmount()));
}

TEST_F(LazyTest, CreatingInAnUnlistedDirectorySeesItsEntries) {
  Ops m(mirror());
  ASSERT_EQ(mkdir(mirror().c_str(), 0755), 0);
  for (absl::string_view dir : {"x", "full", "deep", "deep/sub", "full2", "w",
                                "v", "u"}) {
    m.Mkdir(dir);
  }
  for (absl::string_view file : {"x/y", "full/keep", "full2/f", "w/a", "w/b",
                                 "v/a", "v/b", "u/a", "u/c"}) {
    m.WriteFile(file, absl::StrCat("contents of ", file));
  }
  ASSERT_EQ(m.failures(), 0);

  absl::Status started = Mount();
  ASSERT_TRUE(started.ok()) << started;
  const Dir mnt(mount());
  auto listed = [&] { return StatusValue(mount(), "dirs_listed"); };
  EXPECT_EQ(listed(), 0u);

  // The name exists in the mirror: O_EXCL must see it (root and x listed).
  EXPECT_EQ(Sys(open(mnt("x/y").c_str(),
                     O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644)),
            (Outcome{-1, EEXIST, ""}));
  EXPECT_EQ(listed(), 2u);
  EXPECT_EQ(Sys(mkdir(mnt("x/z").c_str(), 0755)), Outcome{});

  // Never listed before: emptiness must be asked of the mirror.
  EXPECT_EQ(Sys(rmdir(mnt("full").c_str())), (Outcome{-1, ENOTEMPTY, ""}));
  EXPECT_EQ(listed(), 3u);
  EXPECT_EQ(Sys(rmdir(mnt("deep").c_str())), (Outcome{-1, ENOTEMPTY, ""}))
      << "deep holds only an empty directory";
  EXPECT_EQ(listed(), 4u);
  EXPECT_EQ(Sys(rename(mnt("x/z").c_str(), mnt("full2").c_str())),
            (Outcome{-1, ENOTEMPTY, ""}))
      << "a directory renamed over a non-empty unlisted one";
  EXPECT_EQ(listed(), 5u);

  // Created, removed or renamed away in an unlisted directory: the mirror's
  // other entries are still there.
  EXPECT_EQ(WriteFile(mnt("w/new"), "new"), Outcome{});
  EXPECT_EQ(listed(), 6u);
  EXPECT_EQ(ListDir(mnt("w")), (Outcome{0, 0, "a\nb\nnew"}));
  EXPECT_EQ(Sys(unlink(mnt("v/a").c_str())), Outcome{});
  EXPECT_EQ(listed(), 7u);
  EXPECT_EQ(ListDir(mnt("v")), (Outcome{0, 0, "b"}));
  EXPECT_EQ(Sys(rename(mnt("u/a").c_str(), mnt("x/moved").c_str())),
            Outcome{});
  EXPECT_EQ(listed(), 8u);
  EXPECT_EQ(ListDir(mnt("u")), (Outcome{0, 0, "c"}));
  EXPECT_EQ(ListDir(mnt("x")), (Outcome{0, 0, "moved\ny\nz"}));
  EXPECT_EQ(ReadFile(mnt("x/moved")), (Outcome{0, 0, "contents of u/a"}));
  EXPECT_EQ(ListDir(mount()),
            (Outcome{0, 0, "deep\nfull\nfull2\nu\nv\nw\nx"}));

  ASSERT_TRUE(MirrorCaughtUp());
  EXPECT_TRUE(TreesEqual(mount(), mirror(), MirrorCompareOptions()));
  ASSERT_TRUE(CleanExit(Unmount()));
  const Dir mir(mirror());
  EXPECT_EQ(ListDir(mir("x")), (Outcome{0, 0, "moved\ny\nz"}));
  EXPECT_EQ(ListDir(mir("full")), (Outcome{0, 0, "keep"}));
  EXPECT_EQ(ListDir(mir("deep")), (Outcome{0, 0, "sub"}));
  EXPECT_EQ(ListDir(mir("full2")), (Outcome{0, 0, "f"}));
  EXPECT_EQ(ListDir(mir("w")), (Outcome{0, 0, "a\nb\nnew"}));
  EXPECT_EQ(ListDir(mir("v")), (Outcome{0, 0, "b"}));
  EXPECT_EQ(ListDir(mir("u")), (Outcome{0, 0, "c"}));
}

TEST_F(LazyTest, ColdFileReadsOnlyTheBlocksRead) {
  constexpr uint64_t kSize = 64 * kMiB;  // 64 blocks of 1 MiB
  constexpr uint64_t kSeed = 77;
  ASSERT_EQ(mkdir(mirror().c_str(), 0755), 0);
  Ops in_mirror(mirror());
  in_mirror.WriteStream("cold", kSeed, kSize);
  ASSERT_EQ(in_mirror.failures(), 0);

  absl::Status started = Mount({"--block-size", "1024"});
  ASSERT_TRUE(started.ok()) << started;
  const std::string file = mount() + "/cold";

  // 1 MiB in the middle: its block, and at most a readahead window more.
  {
    UniqueFd fd(open(file.c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(fd.valid()) << ErrnoName(errno);
    std::string buf(kMiB, '\0');
    ASSERT_TRUE(RunBounded("a 1 MiB read", kWorkloadTimeout, [&] {
      EXPECT_EQ(pread(fd.get(), buf.data(), kMiB, 32 * kMiB),
                static_cast<ssize_t>(kMiB))
          << ErrnoName(errno);
    }));
    EXPECT_TRUE(buf == StreamChunk(kSeed, 32, kMiB))
        << "the 1 MiB at 32 MiB differs from the mirror's";
  }
  const std::optional<uint64_t> fetched =
      StatusValue(mount(), "blocks_fetched");
  ASSERT_TRUE(fetched.has_value()) << "no blocks_fetched in the status";
  EXPECT_GE(*fetched, 1u);
  // The kernel may read ahead a little after the 1 MiB, which looks
  // sequential to fsd and starts its own 8 MiB readahead from there.
  EXPECT_LE(*fetched, 17u) << "a 1 MiB read of a cold 64 MiB file fetched "
                          << *fetched << " blocks";

  // Then all of it, in order: every block once, none twice.
  bool same = false;
  std::string why;
  ASSERT_TRUE(RunBounded("reading the file", kWorkloadTimeout, [&] {
    same = FileHoldsStream(file, kSeed, kSize, &why);
  }));
  EXPECT_TRUE(same) << why;
  EXPECT_EQ(StatusValue(mount(), "blocks_fetched"), kSize / kMiB);
  EXPECT_EQ(StatusValue(mount(), "blocks_evicted"), 0u);
  ASSERT_TRUE(CleanExit(Unmount()));
}

}  // namespace
}  // namespace memfuse::testing
