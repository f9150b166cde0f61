#include "mirrord/backend/local_backend.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/shared_region.h"
#include "common/unique_fd.h"
#include "gtest/gtest.h"
#include "tests/unit/mirrord/backend/mutations.h"

namespace memfuse::mirrord {
namespace {

namespace fs = std::filesystem;
using common::UniqueFd;

constexpr uint64_t kRoot = 1;
constexpr uint64_t kSession = 0x5e5510;
constexpr uint32_t kBlock = 4096;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteFile(const std::string& path, const std::string& data) {
  std::ofstream(path, std::ios::binary) << data;
}

struct stat Lstat(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(lstat(path.c_str(), &st), 0) << path << ": " << strerror(errno);
  return st;
}

std::string Xattr(const std::string& path, const std::string& name) {
  char buf[256];
  ssize_t n = lgetxattr(path.c_str(), name.c_str(), buf, sizeof(buf));
  return n < 0 ? "<" + std::string(strerror(errno)) + ">" : std::string(buf, n);
}

// Everything below `root` that a listing can tell apart: type, mode,
// owner, size, link count, mtime, contents, symlink target and xattrs.
std::string Snapshot(const std::string& root) {
  std::map<std::string, std::string> lines;
  for (auto it = fs::recursive_directory_iterator(root);
       it != fs::recursive_directory_iterator(); ++it) {
    const std::string path = it->path().string();
    struct stat st = Lstat(path);
    std::string line =
        absl::StrFormat("%o %d:%d n%d s%d m%d", st.st_mode, st.st_uid,
                        st.st_gid, st.st_nlink, st.st_size, st.st_mtim.tv_sec);
    if (S_ISREG(st.st_mode)) absl::StrAppend(&line, " [", ReadFile(path), "]");
    if (S_ISLNK(st.st_mode)) {
      absl::StrAppend(&line, " -> ", fs::read_symlink(path).string());
    }
    char names[1024];
    ssize_t n = llistxattr(path.c_str(), names, sizeof(names));
    for (ssize_t i = 0; i < n; i += strlen(names + i) + 1) {
      absl::StrAppend(&line, " ", names + i, "=", Xattr(path, names + i));
    }
    lines[path.substr(root.size())] = line;
  }
  std::string out;
  for (const auto& [path, line] : lines)
    absl::StrAppend(&out, path, " ", line, "\n");
  return out;
}

class LocalBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/memfuse-local-backend-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    base_ = tmpl;
    mirror_ = base_ + "/mirror";
    outside_ = base_ + "/outside";
    ASSERT_EQ(mkdir(outside_.c_str(), 0755), 0);
    old_umask_ = umask(077);  // modes must not depend on it
    OpenBackend();
    Handshake(kSession);
  }
  void TearDown() override {
    umask(old_umask_);
    backend_.reset();
    fs::remove_all(base_);
  }

  void OpenBackend() {
    absl::StatusOr<std::unique_ptr<LocalBackend>> b =
        LocalBackend::Open(mirror_);
    ASSERT_TRUE(b.ok()) << b.status();
    backend_ = std::move(*b);
  }

  pb::HandshakeResponse Handshake(uint64_t session,
                                  uint32_t block_size = kBlock) {
    pb::HandshakeRequest request;
    request.set_protocol_version(1);
    request.set_session_id(session);
    request.set_block_size(block_size);
    absl::StatusOr<pb::HandshakeResponse> r = backend_->Handshake(request);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : pb::HandshakeResponse();
  }

  // Applies `m` with the next seq unless it has one.
  pb::Ack Apply(pb::Mutation m) {
    if (m.seq() == 0) m.set_seq(++seq_);
    last_ = m;
    return backend_->Apply(m);
  }
  // Applies the last mutation again, same seq: a replay.
  pb::Ack ApplyAgain() { return backend_->Apply(last_); }

  // ReadBlock into a buffer of the length asked.
  absl::StatusOr<std::string> Read(const pb::ReadBlockRequest& r) {
    std::string out(r.length(), '\0');
    absl::StatusOr<uint64_t> n = backend_->ReadBlock(r, absl::MakeSpan(out));
    if (!n.ok()) return n.status();
    out.resize(*n);
    return out;
  }

  void Bind(uint64_t id, uint64_t parent, const std::string& name) {
    pb::Binding b;
    b.set_id(id);
    b.set_parent(parent);
    b.set_name(name);
    absl::Status s = backend_->Bind(b);
    ASSERT_TRUE(s.ok()) << s;
  }

  pb::ListDirectoryResponse List(uint64_t id, uint64_t first) {
    pb::ListDirectoryRequest request;
    request.set_id(id);
    request.set_first_child_id(first);
    absl::StatusOr<pb::ListDirectoryResponse> r =
        backend_->ListDirectory(request);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : pb::ListDirectoryResponse();
  }

  std::string M(const std::string& rel) { return mirror_ + "/" + rel; }

  std::string base_, mirror_, outside_;
  mode_t old_umask_ = 0;
  std::unique_ptr<LocalBackend> backend_;
  uint64_t seq_ = 0;
  pb::Mutation last_;
};

#define EXPECT_OK(ack)                        \
  do {                                        \
    const pb::Ack a_ = (ack);                 \
    EXPECT_EQ(a_.error(), 0) << a_.message(); \
  } while (0)

#define EXPECT_PERMANENT(ack, err)                \
  do {                                            \
    const pb::Ack a_ = (ack);                     \
    EXPECT_EQ(a_.error(), (err)) << a_.message(); \
    EXPECT_TRUE(a_.permanent()) << a_.message();  \
  } while (0)

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

// Blocks read into page-aligned memory (fsd's data region) come straight
// from the disk: right bytes, a short read at the end of the file, and the
// file's pages not pulled into the page cache (fsd is the cache).
TEST_F(LocalBackendTest, AlignedBlockReadsBypassThePageCache) {
  constexpr uint64_t kBlock = 256 << 10;
  std::string content(kBlock + 5000, '\0');
  for (size_t i = 0; i < content.size(); ++i) content[i] = char(i * 7 + 3);
  ASSERT_EQ(Apply(Create(kRoot, "f", 2, S_IFREG | 0644)).error(), 0);
  // Written behind the agent's back (its writes are one 4 KiB block each).
  std::ofstream(M("f"), std::ios::binary) << content;
  UniqueFd file(open(M("f").c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(file.valid());
  ASSERT_EQ(fdatasync(file.get()), 0);
  ASSERT_EQ(posix_fadvise(file.get(), 0, 0, POSIX_FADV_DONTNEED), 0);

  absl::StatusOr<std::unique_ptr<common::SharedRegion>> region =
      common::SharedRegion::Create(2 * kBlock);
  ASSERT_TRUE(region.ok()) << region.status();
  char* out = (*region)->data();
  pb::ReadBlockRequest r;
  r.set_id(2);
  r.set_length(kBlock);
  absl::StatusOr<uint64_t> n = backend_->ReadBlock(r, absl::MakeSpan(out, kBlock));
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, kBlock);
  EXPECT_EQ(std::string_view(out, kBlock), content.substr(0, kBlock));
  r.set_offset(kBlock);
  n = backend_->ReadBlock(r, absl::MakeSpan(out + kBlock, kBlock));
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 5000u);
  EXPECT_EQ(std::string_view(out + kBlock, 5000), content.substr(kBlock));

  // Which of the file's pages are cached now.
  void* map = mmap(nullptr, content.size(), PROT_READ, MAP_SHARED, file.get(), 0);
  ASSERT_NE(map, MAP_FAILED);
  std::vector<unsigned char> resident((content.size() + 4095) / 4096);
  ASSERT_EQ(mincore(map, content.size(), resident.data()), 0);
  munmap(map, content.size());
  size_t cached = 0;
  for (unsigned char page : resident) cached += page & 1;
  struct statfs fs;
  ASSERT_EQ(fstatfs(file.get(), &fs), 0);
  if (fs.f_type == 0x01021994 /* TMPFS_MAGIC: always in memory */) {
    GTEST_SKIP() << "the mirror is on tmpfs";
  }
  EXPECT_EQ(cached, 0u) << "pages of the file in the page cache after "
                           "direct reads";
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

TEST_F(LocalBackendTest, ResumesAfterARestartAndReplaysTheTail) {
  ASSERT_EQ(Apply(Create(kRoot, "d", 2, S_IFDIR | 0755)).error(), 0);  // 1
  ASSERT_EQ(Apply(Create(2, "f", 3, S_IFREG | 0644)).error(), 0);      // 2
  ASSERT_EQ(Apply(Write(3, 0, "v1")).error(), 0);                      // 3
  ASSERT_EQ(Apply(Sync(0)).error(), 0);                                // 4
  ASSERT_EQ(Apply(Write(3, 0, "v2")).error(), 0);                      // 5
  ASSERT_EQ(Apply(Rename(2, "f", kRoot, "g", 3)).error(), 0);          // 6
  ASSERT_EQ(Apply(Write(3, 2, "+")).error(), 0);                       // 7
  ASSERT_EQ(Apply(Create(kRoot, "x", 4, S_IFREG | 0600)).error(), 0);  // 8
  const std::string applied = Snapshot(mirror_);

  // A new agent process: the persisted state says where replay resumes.
  backend_.reset();
  OpenBackend();
  pb::HandshakeResponse r = Handshake(kSession);
  EXPECT_EQ(r.last_applied_seq(), 7u);  // stored before namespace op 8
  EXPECT_EQ(Handshake(kSession + 1).last_applied_seq(), 0u);  // other fsd
  r = Handshake(kSession);
  ASSERT_EQ(r.last_applied_seq(), 7u);
  // fsd binds what it knows as of seq 7 and resends the tail.
  Bind(2, kRoot, "d");
  Bind(3, kRoot, "g");
  pb::Mutation m8 = Create(kRoot, "x", 4, S_IFREG | 0600);
  m8.set_seq(8);
  EXPECT_OK(backend_->Apply(m8));
  // Older mutations resent anyway are not applied twice.
  pb::Mutation m6 = Rename(2, "f", kRoot, "g", 3);
  m6.set_seq(6);
  EXPECT_OK(backend_->Apply(m6));
  EXPECT_EQ(Snapshot(mirror_), applied);

  pb::Mutation m9 = Write(4, 0, "new");
  m9.set_seq(9);
  EXPECT_OK(backend_->Apply(m9));
  EXPECT_EQ(ReadFile(M("x")), "new");
  EXPECT_EQ(ReadFile(M("g")), "v2+");
}

TEST_F(LocalBackendTest, ReplaysEachNamespaceOpAfterARestart) {
  // For each op: apply it (and a write after it), restart, bind the state
  // before it, replay both: the mirror is the same.
  struct Case {
    std::string what;
    pb::Mutation op;
  };
  ASSERT_EQ(Apply(Create(kRoot, "d", 2, S_IFDIR | 0755)).error(), 0);
  ASSERT_EQ(Apply(Create(2, "f", 3, S_IFREG | 0644)).error(), 0);
  ASSERT_EQ(Apply(Create(kRoot, "e", 4, S_IFREG | 0644)).error(), 0);
  ASSERT_EQ(Apply(Write(3, 0, "f-data")).error(), 0);
  ASSERT_EQ(Apply(Write(4, 0, "e-data")).error(), 0);
  // Binding of the state the test keeps in step.
  std::vector<std::tuple<uint64_t, uint64_t, std::string>> bound = {
      {2, kRoot, "d"}, {3, 2, "f"}, {4, kRoot, "e"}};
  auto restart_and_replay = [&](const pb::Mutation& op, const pb::Mutation& w) {
    backend_.reset();
    OpenBackend();
    pb::HandshakeResponse r = Handshake(kSession);
    EXPECT_EQ(r.last_applied_seq(), op.seq() - 1) << op.DebugString();
    for (const auto& [id, parent, name] : bound) Bind(id, parent, name);
    EXPECT_OK(backend_->Apply(op));
    EXPECT_OK(backend_->Apply(w));
  };
  auto run = [&](pb::Mutation op, uint64_t write_id) {
    op.set_seq(++seq_);
    pb::Mutation w = Write(write_id, 0, "after " + std::to_string(op.seq()));
    w.set_seq(++seq_);
    ASSERT_EQ(backend_->Apply(op).error(), 0) << op.DebugString();
    ASSERT_EQ(backend_->Apply(w).error(), 0);
    const std::string once = Snapshot(mirror_);
    restart_and_replay(op, w);
    EXPECT_EQ(Snapshot(mirror_), once) << op.DebugString();
  };
  run(Create(2, "n", 5, S_IFREG | 0644), 5);
  bound.emplace_back(5, 2, "n");
  run(Link(5, kRoot, "n2"), 5);
  bound.emplace_back(5, kRoot, "n2");
  run(Rename(2, "f", kRoot, "e", 3, 4), 3);
  bound = {{2, kRoot, "d"}, {3, kRoot, "e"}, {5, 2, "n"}, {5, kRoot, "n2"}};
  run(Rename(kRoot, "e", 2, "n", 3, 5, RENAME_EXCHANGE), 3);
  bound = {{2, kRoot, "d"}, {3, 2, "n"}, {5, kRoot, "e"}, {5, kRoot, "n2"}};
  run(Remove(kRoot, "n2", 5), 5);
  bound = {{2, kRoot, "d"}, {3, 2, "n"}, {5, kRoot, "e"}};
  run(Remove(2, "n", 3), 5);
}

TEST_F(LocalBackendTest, RejectsBadNamesAndUnknownIdsLeavingTheMirror) {
  ASSERT_EQ(Apply(Create(kRoot, "d", 2, S_IFDIR | 0755)).error(), 0);
  const std::string before = Snapshot(mirror_);
  const std::string bad_names[] = {"a/b", std::string("a\0b", 3), ".", "..",
                                   ""};
  for (const std::string& name : bad_names) {
    EXPECT_PERMANENT(Apply(Create(kRoot, name, 10, S_IFREG | 0644)), EINVAL);
    EXPECT_PERMANENT(Apply(Link(2, kRoot, name)), EINVAL);
    EXPECT_PERMANENT(Apply(Rename(kRoot, "d", kRoot, name, 2)), EINVAL);
    EXPECT_PERMANENT(Apply(Remove(kRoot, name, 2)), EINVAL);
  }
  EXPECT_PERMANENT(
      Apply(Create(kRoot, std::string(256, 'n'), 10, S_IFREG | 0644)),
      ENAMETOOLONG);
  EXPECT_MISSING(Apply(Create(77, "x", 10, S_IFREG | 0644)), 10u);
  EXPECT_PERMANENT(Apply(Create(kRoot, "x", 0, S_IFREG | 0644)), EINVAL);
  EXPECT_PERMANENT(Apply(Create(kRoot, "x", kRoot, S_IFDIR | 0755)), EINVAL);
  EXPECT_PERMANENT(Apply(Create(kRoot, "x", 2, S_IFREG | 0644)), EINVAL);
  EXPECT_PERMANENT(Apply(Create(kRoot, "x", 10, 0644)), EINVAL);  // no type
  EXPECT_PERMANENT(Apply(Create(kRoot, "x", 10, S_IFLNK | 0777)), EINVAL);
  EXPECT_MISSING(Apply(Link(77, kRoot, "x")), 77u);
  EXPECT_PERMANENT(Apply(Remove(kRoot, "d", 77)), EINVAL);
  EXPECT_MISSING(Apply(Rename(kRoot, "d", 77, "x", 2)), 2u);
  EXPECT_PERMANENT(Apply(Rename(kRoot, "d", kRoot, "x", 2, 0, 4)), EINVAL);
  EXPECT_MISSING(Apply(SetAttr(1, MakeAttr(77, 0644))), 77u);
  EXPECT_MISSING(Apply(SetXattr(77, "user.a", "v")), 77u);
  EXPECT_PERMANENT(Apply(SetXattr(2, "user.memfuse.seq", "0 99")), EINVAL);
  EXPECT_PERMANENT(Apply(SetXattr(kRoot, "user.memfuse.seq", "0 99")), EINVAL);
  EXPECT_PERMANENT(Apply(SetXattr(2, "trusted.x", "v")), EINVAL);
  EXPECT_PERMANENT(Apply(RemoveXattr(kRoot, "user.memfuse.seq")), EINVAL);
  EXPECT_MISSING(Apply(Sync(77)), 77u);
  pb::Mutation empty;
  EXPECT_PERMANENT(Apply(empty), EINVAL);
  EXPECT_EQ(Snapshot(mirror_), before);
  // The replay state is still the agent's own, untouched by the requests.
  EXPECT_NE(Xattr(mirror_, "user.memfuse.seq"), "0 99");

  pb::StatusResponse status;
  backend_->FillStatus(&status);
  EXPECT_GT(status.errors_total(), 20u);
  EXPECT_TRUE(status.backend_healthy());
}

TEST_F(LocalBackendTest, NeverFollowsASymlinkPlantedInTheMirror) {
  ASSERT_EQ(Apply(Create(kRoot, "d", 2, S_IFDIR | 0755)).error(), 0);
  fs::create_directory_symlink(outside_, M("evil"));
  fs::create_directory_symlink(outside_, M("d/deep"));
  WriteFile(outside_ + "/target", "secret");
  fs::create_symlink(outside_ + "/target", M("leaf"));
  const std::string outside_before = Snapshot(outside_);
  const struct stat outside_st = Lstat(outside_);
  const struct stat target_st = Lstat(outside_ + "/target");

  pb::ListDirectoryResponse root = List(kRoot, 100);
  pb::ListDirectoryResponse d = List(2, 200);
  std::map<std::string, uint64_t> ids;
  for (const pb::DirEntry& e : root.entries()) ids[e.name()] = e.attr().id();
  for (const pb::DirEntry& e : d.entries()) ids[e.name()] = e.attr().id();
  ASSERT_TRUE(ids.count("evil") && ids.count("deep") && ids.count("leaf"));
  for (const char* link : {"evil", "deep"}) {
    const uint64_t id = ids[link];
    EXPECT_NE(Apply(Create(id, "f", 300, S_IFREG | 0644)).error(), 0);
    EXPECT_NE(Apply(Create(id, "sub", 301, S_IFDIR | 0755)).error(), 0);
    EXPECT_NE(Apply(Write(id, 0, "x")).error(), 0);
    pb::Attr attr = MakeAttr(id, S_IFDIR | 0777);
    attr.set_size(0);
    Apply(SetAttr(1 | 8 | 16 | 32, attr));
    EXPECT_NE(Apply(SetXattr(id, "user.x", "v")).error(), 0);
  }
  const uint64_t leaf = ids["leaf"];
  EXPECT_NE(Apply(Write(leaf, 0, "overwritten")).error(), 0);
  pb::Attr attr = MakeAttr(leaf, S_IFREG | 0777);
  attr.set_size(0);
  EXPECT_NE(Apply(SetAttr(8, attr)).error(), 0);
  Apply(SetAttr(1, attr));
  pb::ReadBlockRequest read;
  read.set_id(leaf);
  read.set_length(100);
  EXPECT_FALSE(Read(read).ok());

  EXPECT_EQ(Snapshot(outside_), outside_before);
  EXPECT_EQ(ReadFile(outside_ + "/target"), "secret");
  EXPECT_EQ(Lstat(outside_).st_mode, outside_st.st_mode);
  EXPECT_EQ(Lstat(outside_ + "/target").st_mode, target_st.st_mode);
  // Removing the link removes the link, not what it points to.
  EXPECT_OK(Apply(Remove(kRoot, "evil", ids["evil"])));
  EXPECT_FALSE(fs::exists(fs::symlink_status(M("evil"))));
  EXPECT_EQ(Snapshot(outside_), outside_before);
}

TEST_F(LocalBackendTest, ConflictsWithForeignContentArePermanent) {
  ASSERT_EQ(Apply(Create(kRoot, "d", 2, S_IFDIR | 0755)).error(), 0);
  ASSERT_EQ(mkdir(M("taken").c_str(), 0755), 0);
  EXPECT_PERMANENT(Apply(Create(kRoot, "taken", 3, S_IFREG | 0644)), EEXIST);
  WriteFile(M("d/stray"), "someone else's");
  EXPECT_PERMANENT(Apply(Remove(kRoot, "d", 2, true)), ENOTEMPTY);
  EXPECT_TRUE(fs::exists(M("d/stray")));
  // A name in the mirror that fsd does not say is that object.
  EXPECT_PERMANENT(Apply(Remove(2, "stray", 2)), EINVAL);
  EXPECT_TRUE(fs::exists(M("d/stray")));
}

TEST_F(LocalBackendTest, ADirectoryRemovedUnderneathIsMissingNotRetried) {
  ASSERT_EQ(Apply(Create(kRoot, "d", 2, S_IFDIR | 0755)).error(), 0);
  ASSERT_EQ(Apply(Create(2, "sub", 3, S_IFDIR | 0755)).error(), 0);
  ASSERT_EQ(Apply(Create(3, "f", 4, S_IFREG | 0644)).error(), 0);
  ASSERT_EQ(Apply(Write(4, 0, "before")).error(), 0);
  // Removed underneath by someone else, with the agent's descriptors of
  // it still cached: no retry brings it back, fsd must.
  fs::remove_all(M("d"));
  EXPECT_MISSING(Apply(Write(4, 0, "after")), 4u);
  EXPECT_MISSING(Apply(Create(3, "g", 5, S_IFREG | 0644)), 5u);
  // A removal in it is done already.
  EXPECT_OK(Apply(Remove(3, "f", 4)));
  EXPECT_FALSE(fs::exists(M("d")));
  pb::StatusResponse status;
  backend_->FillStatus(&status);
  EXPECT_EQ(status.missing_objects(), 2u);
  // fsd's repair: the chain again, the id bound where fsd says.
  pb::Mutation again = Create(kRoot, "d", 2, S_IFDIR | 0755);
  again.mutable_create()->set_repair(true);
  EXPECT_OK(Apply(again));
  again = Create(2, "sub", 3, S_IFDIR | 0755);
  again.mutable_create()->set_repair(true);
  EXPECT_OK(Apply(again));
  again = Create(3, "g", 5, S_IFREG | 0644);
  again.mutable_create()->set_repair(true);
  EXPECT_OK(Apply(again));
  EXPECT_OK(Apply(Write(5, 0, "repaired")));
  EXPECT_EQ(ReadFile(M("d/sub/g")), "repaired");
}

// A repair binds an id the agent knew elsewhere where fsd says it is now,
// and adopts an object of the same kind found there.
TEST_F(LocalBackendTest, ARepairCreateRebindsAndAdopts) {
  ASSERT_EQ(Apply(Create(kRoot, "old", 2, S_IFREG | 0644)).error(), 0);
  WriteFile(M("new"), "found there");
  EXPECT_PERMANENT(Apply(Create(kRoot, "new", 2, S_IFREG | 0644)), EINVAL);
  pb::Mutation repair = Create(kRoot, "new", 2, S_IFREG | 0644);
  repair.mutable_create()->set_repair(true);
  EXPECT_OK(Apply(repair));
  EXPECT_EQ(ReadFile(M("new")), "found there");
  EXPECT_OK(Apply(Write(2, 0, "FOUND")));
  EXPECT_EQ(ReadFile(M("new")), "FOUND there");
  EXPECT_EQ(ReadFile(M("old")), "");
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

TEST_F(LocalBackendTest, AListingOverItsIdsBindsNothingAndSaysHowMany) {
  fs::create_directories(M("d"));
  WriteFile(M("d/x"), "x");
  WriteFile(M("d/y"), "y");
  WriteFile(M("z"), "z");

  pb::ListDirectoryRequest request;
  request.set_id(kRoot);
  request.set_first_child_id(10);
  request.set_max_new_ids(1);
  absl::StatusOr<pb::ListDirectoryResponse> r =
      backend_->ListDirectory(request);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->ids_needed(), 2u);
  EXPECT_EQ(r->entries_size(), 0);

  // Nothing was bound: the same ids are free for the real listing.
  request.set_max_new_ids(2);
  r = backend_->ListDirectory(request);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->ids_needed(), 0u);
  ASSERT_EQ(r->entries_size(), 2);
  EXPECT_EQ(r->entries(0).attr().id(), 10u);
  EXPECT_EQ(r->entries(1).attr().id(), 11u);
  EXPECT_EQ(r->next_free_id(), 12u);
}

TEST_F(LocalBackendTest, ListsDirectoriesWithIdsHardLinksAndXattrs) {
  fs::create_directories(M("b/sub"));
  WriteFile(M("a"), "aaa");
  ASSERT_EQ(link(M("a").c_str(), M("b/a-link").c_str()), 0);
  ASSERT_EQ(link(M("a").c_str(), M("c-link").c_str()), 0);
  fs::create_symlink("a", M("s"));
  ASSERT_EQ(lsetxattr(M("a").c_str(), "user.k", "v", 1, 0), 0);
  ASSERT_EQ(lsetxattr(M("b").c_str(), "user.memfuse.private", "x", 1, 0), 0);
  ASSERT_EQ(lsetxattr(M("b").c_str(), "user.dir", "yes", 3, 0), 0);
  ASSERT_EQ(chmod(M("a").c_str(), 0640), 0);

  pb::ListDirectoryResponse root = List(kRoot, 10);
  ASSERT_EQ(root.entries_size(), 4);
  EXPECT_EQ(root.entries(0).name(), "a");
  EXPECT_EQ(root.entries(0).attr().id(), 10u);
  EXPECT_EQ(root.entries(0).attr().mode(), S_IFREG | 0640u);
  EXPECT_EQ(root.entries(0).attr().size(), 3u);
  EXPECT_EQ(root.entries(0).attr().nlink(), 3u);
  ASSERT_EQ(root.entries(0).xattrs_size(), 1);
  EXPECT_EQ(root.entries(0).xattrs(0).name(), "user.k");
  EXPECT_EQ(root.entries(1).name(), "b");
  EXPECT_EQ(root.entries(1).attr().id(), 11u);
  ASSERT_EQ(root.entries(1).xattrs_size(), 1);
  EXPECT_EQ(root.entries(1).xattrs(0).name(), "user.dir");
  EXPECT_EQ(root.entries(2).name(), "c-link");
  EXPECT_EQ(root.entries(2).attr().id(), 10u);  // the same file as "a"
  EXPECT_EQ(root.entries(3).name(), "s");
  EXPECT_EQ(root.entries(3).attr().id(), 12u);
  EXPECT_EQ(root.entries(3).symlink_target(), "a");
  EXPECT_EQ(root.next_free_id(), 13u);

  pb::ListDirectoryResponse b = List(11, 13);
  ASSERT_EQ(b.entries_size(), 2);
  EXPECT_EQ(b.entries(0).name(), "a-link");
  EXPECT_EQ(b.entries(0).attr().id(), 10u);  // found in an earlier listing
  EXPECT_EQ(b.entries(1).name(), "sub");
  EXPECT_EQ(b.entries(1).attr().id(), 13u);
  EXPECT_EQ(b.next_free_id(), 14u);

  // The ids work for mutations and reads.
  EXPECT_OK(Apply(Write(10, 0, "AAA")));
  EXPECT_EQ(ReadFile(M("b/a-link")), "AAA");
  pb::ReadLinkRequest rl;
  rl.set_id(12);
  EXPECT_EQ(backend_->ReadLink(rl)->target(), "a");
  pb::StatRequest sr;
  sr.set_id(13);
  EXPECT_TRUE(S_ISDIR(backend_->Stat(sr)->attr().mode()));

  // After a restart, a bound file's other names keep its id too.
  Handshake(kSession);
  Bind(20, kRoot, "a");
  Bind(21, kRoot, "b");
  pb::ListDirectoryResponse again = List(21, 30);
  EXPECT_EQ(again.entries(0).attr().id(), 20u);
  EXPECT_EQ(again.entries(1).attr().id(), 30u);
  EXPECT_EQ(again.next_free_id(), 31u);

  pb::ListDirectoryRequest bad;
  bad.set_id(999);
  bad.set_first_child_id(50);
  EXPECT_FALSE(backend_->ListDirectory(bad).ok());
}

// statfs(2) on a mirrored mount reports the mirror's filesystem.
TEST_F(LocalBackendTest, StatFsIsTheMirrorsFilesystem) {
  absl::StatusOr<pb::StatFsResponse> r = backend_->StatFs();
  ASSERT_TRUE(r.ok()) << r.status();
  struct statvfs st;
  ASSERT_EQ(statvfs(mirror_.c_str(), &st), 0);
  EXPECT_TRUE(r->known());
  EXPECT_EQ(r->total_bytes(), uint64_t{st.f_blocks} * st.f_frsize);
  EXPECT_EQ(r->total_files(), st.f_files);
  EXPECT_EQ(r->name_max(), st.f_namemax);
  // Other programs share /tmp's filesystem: free space may move a little.
  const double tolerance = 256.0 * (1 << 20);
  EXPECT_NEAR(static_cast<double>(r->free_bytes()),
              static_cast<double>(uint64_t{st.f_bfree} * st.f_frsize),
              tolerance);
  EXPECT_NEAR(static_cast<double>(r->available_bytes()),
              static_cast<double>(uint64_t{st.f_bavail} * st.f_frsize),
              tolerance);
  EXPECT_LE(r->available_bytes(), r->free_bytes());
  EXPECT_LE(r->free_bytes(), r->total_bytes());
}

// On a filesystem of its own, exact figures: its size, and the space and
// inode a file written through the backend takes.
TEST_F(LocalBackendTest, StatFsCountsWhatTheMirrorHolds) {
  const std::string small = base_ + "/small";
  ASSERT_EQ(mkdir(small.c_str(), 0755), 0);
  if (mount("memfuse-test", small.c_str(), "tmpfs", 0,
            "size=32m,nr_inodes=1000") != 0) {
    GTEST_SKIP() << "cannot mount a tmpfs here: " << strerror(errno);
  }
  absl::Cleanup unmount = [&] { umount2(small.c_str(), MNT_DETACH); };
  absl::StatusOr<std::unique_ptr<LocalBackend>> opened =
      LocalBackend::Open(small + "/mirror");
  ASSERT_TRUE(opened.ok()) << opened.status();
  std::unique_ptr<LocalBackend> backend = std::move(*opened);
  pb::HandshakeRequest hello;
  hello.set_protocol_version(1);
  hello.set_session_id(kSession);
  hello.set_block_size(1 << 20);
  ASSERT_TRUE(backend->Handshake(hello).ok());

  absl::StatusOr<pb::StatFsResponse> before = backend->StatFs();
  ASSERT_TRUE(before.ok()) << before.status();
  EXPECT_TRUE(before->known());
  EXPECT_EQ(before->total_bytes(), uint64_t{32} << 20);
  EXPECT_EQ(before->total_files(), 1000u);

  pb::Mutation create = Create(kRoot, "f", 2, S_IFREG | 0644);
  create.set_seq(1);
  ASSERT_EQ(backend->Apply(create).error(), 0);
  const std::string mib(1 << 20, 'x');
  for (uint64_t i = 0; i < 4; ++i) {
    pb::Mutation write = Write(2, i << 20, mib);
    write.set_seq(2 + i);
    ASSERT_EQ(backend->Apply(write).error(), 0);
  }
  absl::StatusOr<pb::StatFsResponse> after = backend->StatFs();
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->total_bytes(), before->total_bytes());
  EXPECT_EQ(before->free_bytes() - after->free_bytes(), uint64_t{4} << 20);
  EXPECT_EQ(before->available_bytes() - after->available_bytes(),
            uint64_t{4} << 20);
  // The file, and on recent kernels the replay state xattr too (tmpfs
  // charges xattrs to its inode budget).
  EXPECT_GE(before->free_files() - after->free_files(), 1u);
  EXPECT_LE(before->free_files() - after->free_files(), 2u);
  backend.reset();
}

TEST_F(LocalBackendTest, ReadsBlocksLinksAndStats) {
  ASSERT_EQ(Apply(Create(kRoot, "f", 2, S_IFREG | 0644)).error(), 0);
  ASSERT_EQ(Apply(Write(2, 0, "0123456789")).error(), 0);
  pb::ReadBlockRequest r;
  r.set_id(2);
  r.set_offset(4);
  r.set_length(4);
  EXPECT_EQ(*Read(r), "4567");
  r.set_length(100);
  EXPECT_EQ(*Read(r), "456789");  // short at EOF
  r.set_offset(50);
  EXPECT_EQ(*Read(r), "");
  r.set_length(LocalBackend::kMaxReadLength + 1);
  char one;
  EXPECT_EQ(backend_->ReadBlock(r, absl::MakeSpan(&one, 1)).status().code(),
            absl::StatusCode::kInvalidArgument);
  r.set_id(kRoot);
  r.set_length(1);
  EXPECT_FALSE(Read(r).ok());

  pb::StatRequest s;
  s.set_id(2);
  absl::StatusOr<pb::StatResponse> st = backend_->Stat(s);
  ASSERT_TRUE(st.ok()) << st.status();
  EXPECT_EQ(st->attr().id(), 2u);
  EXPECT_EQ(st->attr().size(), 10u);
  EXPECT_EQ(st->attr().mtime_ns(), kTime);
  s.set_id(kRoot);
  EXPECT_TRUE(S_ISDIR(backend_->Stat(s)->attr().mode()));
  pb::ReadLinkRequest l;
  l.set_id(2);
  EXPECT_FALSE(backend_->ReadLink(l).ok());

  pb::StatusResponse status;
  backend_->FillStatus(&status);
  EXPECT_EQ(status.blocks_read(), 3u);
  EXPECT_EQ(status.last_applied_seq(), 2u);
}

}  // namespace
}  // namespace memfuse::mirrord
