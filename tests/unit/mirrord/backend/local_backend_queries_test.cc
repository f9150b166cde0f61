// Tests of the local backend's answers to queries: block reads (direct,
// bypassing the page cache, and short at the end of a file), stats and
// symlink targets, directory listings that hand out ids, and statfs.
#include "mirrord/backend/local_backend.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "common/shared_region.h"
#include "common/unique_fd.h"
#include "gtest/gtest.h"
#include "tests/unit/mirrord/backend/local_backend_test_fixture.h"
#include "tests/unit/mirrord/backend/mutations.h"

namespace memfuse::mirrord::local_backend_test {
namespace {

using common::UniqueFd;

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
}  // namespace memfuse::mirrord::local_backend_test
