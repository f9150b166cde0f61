// Tests of the local backend applying fsd's mutations to the mirror:
// the handshake, creates of every kind with exact attributes, writes (big,
// oversized, from the shared region), punched holes, attributes and
// xattrs, hard links, renames and exchanges, replays of each op, and the
// seq a sync records.
#include "mirrord/backend/local_backend.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <memory>
#include <string>

#include "common/shared_region.h"
#include "common/unique_fd.h"
#include "gtest/gtest.h"
#include "tests/unit/mirrord/backend/local_backend_test_fixture.h"
#include "tests/unit/mirrord/backend/mutations.h"

namespace memfuse::mirrord::local_backend_test {
namespace {

using common::UniqueFd;

TEST_F(LocalBackendTest, HandshakeDescribesTheMirror) {
  ASSERT_EQ(lsetxattr(mirror_.c_str(), "user.color", "blue", 4, 0), 0);
  pb::HandshakeResponse r = Handshake(42);
  EXPECT_EQ(r.protocol_version(), 1u);
  EXPECT_EQ(r.backend_kind(), "local");
  EXPECT_EQ(r.backend_description(), mirror_);
  EXPECT_EQ(r.root().id(), kRoot);
  EXPECT_TRUE(S_ISDIR(r.root().mode()));
  EXPECT_EQ(r.last_applied_seq(), 0u);
  EXPECT_TRUE(r.needs_bindings());
  ASSERT_EQ(r.root_xattrs_size(), 1);
  EXPECT_EQ(r.root_xattrs(0).name(), "user.color");
  EXPECT_EQ(r.root_xattrs(0).value(), "blue");
}

TEST_F(LocalBackendTest, OpenCreatesTheMirrorDirectory) {
  struct stat st = Lstat(mirror_);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0755u);
}

TEST_F(LocalBackendTest, CreatesEveryKindWithExactAttributes) {
  EXPECT_OK(Apply(Create(kRoot, "f", 2, S_IFREG | 04751)));
  EXPECT_OK(Apply(Create(kRoot, "d", 3, S_IFDIR | 0705)));
  EXPECT_OK(Apply(Create(3, "l", 4, S_IFLNK | 0777, "../f")));
  EXPECT_OK(Apply(Create(3, "p", 5, S_IFIFO | 0622)));
  EXPECT_OK(Apply(Create(3, "s", 6, S_IFSOCK | 0600)));

  struct stat f = Lstat(M("f"));
  EXPECT_TRUE(S_ISREG(f.st_mode));
  EXPECT_EQ(f.st_mode & 07777, 04751u);  // umask 077 did not apply
  EXPECT_EQ(f.st_size, 0);
  EXPECT_EQ(f.st_mtim.tv_sec, kTime / 1000000000);
  EXPECT_EQ(f.st_mtim.tv_nsec, kTime % 1000000000);
  EXPECT_EQ(Lstat(M("d")).st_mode & 07777, 0705u);
  EXPECT_EQ(fs::read_symlink(M("d/l")), "../f");
  EXPECT_EQ(Lstat(M("d/l")).st_mtim.tv_sec, kTime / 1000000000);
  EXPECT_TRUE(S_ISFIFO(Lstat(M("d/p")).st_mode));
  EXPECT_EQ(Lstat(M("d/p")).st_mode & 07777, 0622u);
  EXPECT_TRUE(S_ISSOCK(Lstat(M("d/s")).st_mode));
  // The directory's times were set when it was made; entries made in it
  // since changed them, as on the mount until fsd sends its own.

  if (geteuid() == 0) {
    pb::Mutation dev = Create(3, "null", 7, S_IFCHR | 0666);
    dev.mutable_create()->mutable_attr()->set_rdev(makedev(1, 3));
    dev.mutable_create()->mutable_attr()->set_uid(1234);
    dev.mutable_create()->mutable_attr()->set_gid(5678);
    EXPECT_OK(Apply(dev));
    struct stat st = Lstat(M("d/null"));
    EXPECT_TRUE(S_ISCHR(st.st_mode));
    EXPECT_EQ(st.st_rdev, makedev(1, 3));
    EXPECT_EQ(st.st_uid, 1234u);
    EXPECT_EQ(st.st_gid, 5678u);
  }
}

TEST_F(LocalBackendTest, WritesAndSetsAttributes) {
  ASSERT_EQ(Apply(Create(kRoot, "f", 2, S_IFREG | 0644)).error(), 0);
  EXPECT_OK(Apply(Write(2, 0, "hello world")));
  EXPECT_OK(Apply(Write(2, 6, "WORLD")));
  EXPECT_OK(Apply(Write(2, 20, "x")));  // leaves a hole
  EXPECT_EQ(ReadFile(M("f")),
            std::string("hello WORLD") + std::string(9, '\0') + "x");
  EXPECT_EQ(Lstat(M("f")).st_mtim.tv_sec, kTime / 1000000000);
  // Both times 0: no times are set (and an empty such write is a no-op,
  // even for an id never seen).
  pb::Mutation untimed = Write(2, 0, "H");
  untimed.mutable_write()->set_atime_ns(0);
  untimed.mutable_write()->set_mtime_ns(0);
  EXPECT_OK(Apply(untimed));
  EXPECT_EQ(ReadFile(M("f")).substr(0, 5), "Hello");
  ASSERT_EQ(
      utimensat(AT_FDCWD, M("f").c_str(),
                std::array<timespec, 2>{timespec{5, 0}, timespec{6, 0}}.data(),
                0),
      0);
  untimed.mutable_write()->clear_data();
  EXPECT_OK(Apply(untimed));
  untimed.mutable_write()->set_id(12345);
  EXPECT_OK(Apply(untimed));
  EXPECT_EQ(Lstat(M("f")).st_mtim.tv_sec, 6);

  pb::Attr attr = MakeAttr(2, S_IFREG | 0600);
  attr.set_size(5);
  attr.set_atime_ns(1000000000);
  attr.set_mtime_ns(2000000000);
  EXPECT_OK(Apply(SetAttr(1 | 8 | 16 | 32, attr)));
  struct stat st = Lstat(M("f"));
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(st.st_size, 5);
  EXPECT_EQ(st.st_atim.tv_sec, 1);
  EXPECT_EQ(st.st_mtim.tv_sec, 2);
  EXPECT_EQ(ReadFile(M("f")), "Hello");

  attr.set_size(8);  // extends with zeros
  EXPECT_OK(Apply(SetAttr(8, attr)));
  EXPECT_EQ(ReadFile(M("f")), std::string("Hello\0\0\0", 8));

  if (geteuid() == 0) {
    attr.set_uid(4321);
    attr.set_gid(8765);
    EXPECT_OK(Apply(SetAttr(2 | 4, attr)));
    EXPECT_EQ(Lstat(M("f")).st_uid, 4321u);
    EXPECT_EQ(Lstat(M("f")).st_gid, 8765u);
  }
  // The root's attributes too.
  pb::Attr root = MakeAttr(kRoot, S_IFDIR | 0711);
  EXPECT_OK(Apply(SetAttr(1, root)));
  EXPECT_EQ(Lstat(mirror_).st_mode & 07777, 0711u);
}

TEST_F(LocalBackendTest, RejectsOversizedAndOverflowingWrites) {
  ASSERT_EQ(Apply(Create(kRoot, "f", 2, S_IFREG | 0644)).error(), 0);
  const std::string before = Snapshot(mirror_);
  EXPECT_PERMANENT(Apply(Write(2, 0, std::string(kBlock + 1, 'x'))), EINVAL);
  pb::Ack ack = Apply(Write(2, uint64_t{INT64_MAX} - 2, "abcd"));
  EXPECT_NE(ack.error(), 0);
  EXPECT_TRUE(ack.permanent());
  ack = Apply(Write(2, uint64_t{1} << 63, "a"));
  EXPECT_NE(ack.error(), 0);
  EXPECT_TRUE(ack.permanent());
  EXPECT_MISSING(Apply(Write(99, 0, "a")), 99u);  // unknown id
  EXPECT_EQ(Snapshot(mirror_), before);
}

// A punch makes a hole in the mirror file (where its filesystem can punch;
// zeros where it cannot), keeping the size; bad requests are refused as
// writes are.
TEST_F(LocalBackendTest, PunchesHolesKeepingTheSize) {
  ASSERT_EQ(Apply(Create(kRoot, "f", 2, S_IFREG | 0644)).error(), 0);
  std::string expected;
  for (int i = 0; i < 4; ++i) {
    const std::string block(kBlock, static_cast<char>('a' + i));
    EXPECT_OK(Apply(Write(2, i * kBlock, block)));
    expected += block;
  }
  EXPECT_OK(Apply(Sync(2)));
  const blkcnt_t blocks_before = Lstat(M("f")).st_blocks;
  EXPECT_OK(Apply(PunchHole(2, kBlock, 2 * kBlock)));
  expected.replace(kBlock, 2 * kBlock, std::string(2 * kBlock, '\0'));
  EXPECT_EQ(ReadFile(M("f")), expected);
  EXPECT_OK(ApplyAgain());  // a replay
  EXPECT_EQ(ReadFile(M("f")), expected);
  // Past the end: the size stays.
  EXPECT_OK(Apply(PunchHole(2, 3 * kBlock + 10, 10 * kBlock)));
  expected.replace(3 * kBlock + 10, kBlock - 10, std::string(kBlock - 10, '\0'));
  EXPECT_EQ(ReadFile(M("f")), expected);

  // Where the filesystem punches, the blocks are gone and SEEK_HOLE finds
  // the hole.
  const int fd = open(M("f").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  const off_t hole = lseek(fd, 0, SEEK_HOLE);
  close(fd);
  if (Lstat(M("f")).st_blocks < blocks_before) {
    EXPECT_EQ(hole, static_cast<off_t>(kBlock));
  }

  const std::string before = Snapshot(mirror_);
  EXPECT_MISSING(Apply(PunchHole(99, 0, 10)), 99u);  // unknown id
  pb::Ack ack = Apply(PunchHole(2, uint64_t{1} << 63, 1));
  EXPECT_NE(ack.error(), 0);
  EXPECT_TRUE(ack.permanent());
  EXPECT_EQ(Snapshot(mirror_), before);
}

// Big writes take the direct I/O path for their aligned middle and the page
// cache for the rest; whatever the alignment, the file holds exactly what
// was written, also when the two paths overlap the same pages in turn.
TEST_F(LocalBackendTest, BigWritesAtAnyAlignmentLandExactly) {
  constexpr uint32_t kBig = 1 << 20;
  Handshake(kSession + 1, kBig);
  ASSERT_EQ(Apply(Create(kRoot, "f", 2, S_IFREG | 0644)).error(), 0);
  std::string model;
  auto write = [&](uint64_t offset, size_t length, char seed) {
    std::string data(length, '\0');
    for (size_t i = 0; i < length; ++i) {
      data[i] = static_cast<char>(seed + i * 7 + (i >> 12));
    }
    if (model.size() < offset + length) model.resize(offset + length, '\0');
    model.replace(offset, length, data);
    EXPECT_OK(Apply(Write(2, offset, data)));
  };
  write(0, kBig, 'a');                  // aligned, whole block
  write(3 * 4096 + 17, 300 << 10, 'b');  // unaligned head and tail
  write(5, 11, 'c');                    // small, inside a direct range
  write(kBig - 100, 200 << 10, 'd');    // across the old end of file
  write(2 * kBig + 4095, 64 << 10, 'e');  // past a hole; too little aligned
  write(7, 128 << 10, 'f');             // over the first small write
  EXPECT_EQ(ReadFile(M("f")), model);
}

TEST_F(LocalBackendTest, WritesTakeTheirBytesFromTheSharedRegion) {
  absl::StatusOr<std::unique_ptr<common::SharedRegion>> region =
      common::SharedRegion::Create(1 << 20);
  ASSERT_TRUE(region.ok()) << region.status();
  UniqueFd agent_fd(fcntl((*region)->fd(), F_DUPFD_CLOEXEC, 0));
  absl::StatusOr<std::unique_ptr<common::MappedRegion>> mapped =
      common::MappedRegion::Map(std::move(agent_fd));
  ASSERT_TRUE(mapped.ok()) << mapped.status();

  ASSERT_EQ(Apply(Create(kRoot, "f", 2, S_IFREG | 0644)).error(), 0);
  auto region_write = [](uint64_t id, uint64_t offset, uint64_t at,
                         uint32_t length) {
    pb::Mutation m = Write(id, offset, "");
    m.mutable_write()->set_shared_offset(at);
    m.mutable_write()->set_shared_length(length);
    return m;
  };
  std::memcpy((*region)->data() + 8192, "from the region", 15);
  // Without a region the agent refuses, and writes nothing.
  EXPECT_PERMANENT(Apply(region_write(2, 0, 8192, 15)), EINVAL);
  EXPECT_EQ(ReadFile(M("f")), "");

  backend_->set_shared_region(mapped->get());
  EXPECT_OK(Apply(region_write(2, 4, 8192, 15)));
  EXPECT_EQ(ReadFile(M("f")), std::string(4, '\0') + "from the region");

  const std::string before = Snapshot(mirror_);
  // Ranges outside the region, and a write with both kinds of data.
  EXPECT_PERMANENT(Apply(region_write(2, 0, (1 << 20) - 4, 8)), EINVAL);
  EXPECT_PERMANENT(Apply(region_write(2, 0, uint64_t{1} << 62, 1)), EINVAL);
  pb::Mutation both = region_write(2, 0, 8192, 15);
  both.mutable_write()->set_data("inline");
  EXPECT_PERMANENT(Apply(both), EINVAL);
  EXPECT_EQ(Snapshot(mirror_), before);
  backend_->set_shared_region(nullptr);
}

TEST_F(LocalBackendTest, HardLinksShareTheFile) {
  ASSERT_EQ(Apply(Create(kRoot, "f", 2, S_IFREG | 0644)).error(), 0);
  ASSERT_EQ(Apply(Create(kRoot, "d", 3, S_IFDIR | 0755)).error(), 0);
  EXPECT_OK(Apply(Link(2, 3, "g")));
  EXPECT_EQ(Lstat(M("f")).st_ino, Lstat(M("d/g")).st_ino);
  EXPECT_EQ(Lstat(M("f")).st_nlink, 2u);
  EXPECT_OK(Apply(Remove(kRoot, "f", 2)));
  EXPECT_FALSE(fs::exists(M("f")));
  EXPECT_OK(Apply(Write(2, 0, "still here")));  // through its other name
  EXPECT_EQ(ReadFile(M("d/g")), "still here");
  // A directory cannot be linked; another object in the way is a conflict.
  EXPECT_PERMANENT(Apply(Link(3, kRoot, "dd")), EPERM);
  ASSERT_EQ(Apply(Create(kRoot, "other", 4, S_IFREG | 0644)).error(), 0);
  EXPECT_PERMANENT(Apply(Link(2, kRoot, "other")), EEXIST);
}

TEST_F(LocalBackendTest, ChangesToAnUnlinkedOpenFileAreNoOps) {
  ASSERT_EQ(Apply(Create(kRoot, "tmp", 2, S_IFREG | 0600)).error(), 0);
  ASSERT_EQ(Apply(Write(2, 0, "scratch")).error(), 0);
  ASSERT_EQ(Apply(Remove(kRoot, "tmp", 2)).error(), 0);
  const std::string before = Snapshot(mirror_);
  // fsd still has it open, and writes on.
  EXPECT_OK(Apply(Write(2, 7, " more")));
  pb::Attr attr = MakeAttr(2, S_IFREG | 0600);
  attr.set_size(1);
  EXPECT_OK(Apply(SetAttr(8, attr)));
  EXPECT_OK(Apply(SetXattr(2, "user.x", "v")));
  EXPECT_OK(Apply(Sync(2)));
  EXPECT_EQ(Snapshot(mirror_), before);
  // An id never seen is for fsd to repair.
  EXPECT_MISSING(Apply(Write(3, 0, "x")), 3u);
}

TEST_F(LocalBackendTest, RenamesFollowIds) {
  ASSERT_EQ(Apply(Create(kRoot, "a", 2, S_IFDIR | 0755)).error(), 0);
  ASSERT_EQ(Apply(Create(2, "f", 3, S_IFREG | 0644)).error(), 0);
  ASSERT_EQ(Apply(Create(kRoot, "b", 4, S_IFDIR | 0755)).error(), 0);
  ASSERT_EQ(Apply(Create(4, "t", 5, S_IFREG | 0644)).error(), 0);
  // A queued write follows its file through a rename of its directory.
  EXPECT_OK(Apply(Rename(kRoot, "a", 4, "moved", 2)));
  EXPECT_OK(Apply(Write(3, 0, "data")));
  EXPECT_EQ(ReadFile(M("b/moved/f")), "data");
  // Replacing a target.
  EXPECT_OK(Apply(Rename(2, "f", 4, "t", 3, 5)));
  EXPECT_EQ(ReadFile(M("b/t")), "data");
  EXPECT_OK(Apply(Write(5, 0, "x")));  // 5 is gone: nothing to write to
  EXPECT_EQ(ReadFile(M("b/t")), "data");
  // NOREPLACE onto something there.
  ASSERT_EQ(Apply(Create(kRoot, "c", 6, S_IFREG | 0644)).error(), 0);
  EXPECT_PERMANENT(Apply(Rename(kRoot, "c", 4, "t", 6, 0, RENAME_NOREPLACE)),
                   EEXIST);
  EXPECT_TRUE(fs::exists(M("c")));
  // A directory below itself.
  EXPECT_PERMANENT(Apply(Rename(kRoot, "b", 2, "loop", 4)), EINVAL);
}

TEST_F(LocalBackendTest, ExchangesSwapObjectsAndIds) {
  ASSERT_EQ(Apply(Create(kRoot, "x", 2, S_IFREG | 0644)).error(), 0);
  ASSERT_EQ(Apply(Create(kRoot, "d", 3, S_IFDIR | 0755)).error(), 0);
  ASSERT_EQ(Apply(Create(3, "y", 4, S_IFDIR | 0700)).error(), 0);
  EXPECT_OK(Apply(Rename(kRoot, "x", 3, "y", 2, 4, RENAME_EXCHANGE)));
  EXPECT_TRUE(S_ISDIR(Lstat(M("x")).st_mode));
  EXPECT_TRUE(S_ISREG(Lstat(M("d/y")).st_mode));
  EXPECT_OK(ApplyAgain());  // replayed: not swapped back
  EXPECT_TRUE(S_ISDIR(Lstat(M("x")).st_mode));
  EXPECT_TRUE(S_ISREG(Lstat(M("d/y")).st_mode));
  EXPECT_OK(Apply(Write(2, 0, "file")));
  EXPECT_EQ(ReadFile(M("d/y")), "file");
  EXPECT_OK(Apply(Create(4, "inner", 5, S_IFREG | 0644)));
  EXPECT_TRUE(fs::exists(M("x/inner")));
}

TEST_F(LocalBackendTest, EveryNamespaceOpIsSafeToApplyTwice) {
  EXPECT_OK(Apply(Create(kRoot, "d", 2, S_IFDIR | 0755)));
  EXPECT_OK(ApplyAgain());
  EXPECT_OK(Apply(Create(2, "f", 3, S_IFREG | 0640)));
  EXPECT_OK(Apply(Write(3, 0, "content")));
  // Replayed after a write: the data stays (no truncation), attrs re-set.
  EXPECT_OK(ApplyAgain());
  EXPECT_OK(backend_->Apply([&] {
    pb::Mutation m = Create(2, "f", 3, S_IFREG | 0640);
    m.set_seq(seq_ - 1);
    return m;
  }()));
  EXPECT_EQ(ReadFile(M("d/f")), "content");
  EXPECT_OK(Apply(Create(2, "l", 4, S_IFLNK | 0777, "f")));
  EXPECT_OK(ApplyAgain());
  EXPECT_OK(Apply(Link(3, kRoot, "hard")));
  EXPECT_OK(ApplyAgain());
  EXPECT_EQ(Lstat(M("hard")).st_nlink, 2u);
  EXPECT_OK(Apply(Rename(2, "f", kRoot, "g", 3)));
  EXPECT_OK(ApplyAgain());
  EXPECT_EQ(ReadFile(M("g")), "content");
  EXPECT_OK(Apply(Remove(kRoot, "hard", 3)));
  EXPECT_OK(ApplyAgain());
  EXPECT_OK(Apply(Remove(2, "l", 4)));
  EXPECT_OK(ApplyAgain());
  EXPECT_OK(Apply(Remove(kRoot, "d", 2, true)));
  EXPECT_OK(ApplyAgain());
  EXPECT_FALSE(fs::exists(M("d")));
  EXPECT_EQ(ReadFile(M("g")), "content");
  EXPECT_OK(Apply(Write(3, 7, "!")));  // the id still resolves
  EXPECT_EQ(ReadFile(M("g")), "content!");
}

TEST_F(LocalBackendTest, UserXattrs) {
  ASSERT_EQ(Apply(Create(kRoot, "f", 2, S_IFREG | 0644)).error(), 0);
  ASSERT_EQ(Apply(Create(kRoot, "d", 3, S_IFDIR | 0755)).error(), 0);
  ASSERT_EQ(Apply(Create(kRoot, "l", 4, S_IFLNK | 0777, "f")).error(), 0);
  ASSERT_EQ(Apply(Create(kRoot, "p", 5, S_IFIFO | 0644)).error(), 0);
  EXPECT_OK(Apply(SetXattr(2, "user.a", std::string("v\0w", 3))));
  EXPECT_OK(Apply(SetXattr(3, "user.b", "dir")));
  EXPECT_OK(Apply(SetXattr(kRoot, "user.c", "root")));
  EXPECT_EQ(Xattr(M("f"), "user.a"), std::string("v\0w", 3));
  EXPECT_EQ(Xattr(M("d"), "user.b"), "dir");
  EXPECT_EQ(Xattr(mirror_, "user.c"), "root");
  EXPECT_PERMANENT(Apply(SetXattr(4, "user.a", "v")), EPERM);
  EXPECT_PERMANENT(Apply(SetXattr(5, "user.a", "v")), EPERM);
  EXPECT_OK(Apply(RemoveXattr(2, "user.a")));
  EXPECT_OK(ApplyAgain());  // absent: fine
  EXPECT_OK(Apply(RemoveXattr(3, "user.never")));
  EXPECT_NE(Xattr(M("f"), "user.a").substr(0, 1), "v");
  // The agent's own never shows.
  pb::HandshakeResponse r = Handshake(kSession);
  ASSERT_EQ(r.root_xattrs_size(), 1);
  EXPECT_EQ(r.root_xattrs(0).name(), "user.c");
}

TEST_F(LocalBackendTest, SyncRecordsTheSeq) {
  ASSERT_EQ(Apply(Create(kRoot, "d", 2, S_IFDIR | 0755)).error(), 0);
  ASSERT_EQ(Apply(Create(2, "f", 3, S_IFREG | 0644)).error(), 0);
  ASSERT_EQ(Apply(Write(3, 0, "x")).error(), 0);
  EXPECT_OK(Apply(Sync(3)));
  EXPECT_EQ(Handshake(kSession).last_applied_seq(), 4u);
  Bind(2, kRoot, "d");
  pb::Mutation sync = Sync(2);
  sync.set_seq(5);
  EXPECT_OK(backend_->Apply(sync));
  sync.set_seq(6);
  sync.mutable_sync()->set_id(0);
  EXPECT_OK(backend_->Apply(sync));
  EXPECT_EQ(Handshake(kSession).last_applied_seq(), 6u);
}

}  // namespace
}  // namespace memfuse::mirrord::local_backend_test
