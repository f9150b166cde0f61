#include "mirrord/backend/confined_dir.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "common/status.h"
#include "gtest/gtest.h"

namespace memfuse::mirrord {
namespace {

namespace fs = std::filesystem;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A mirror root with a planted escape route beside a directory it must never
// reach.
class ConfinedDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/memfuse-confined-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    base_ = tmpl;
    root_ = base_ + "/mirror";
    outside_ = base_ + "/outside";
    fs::create_directories(root_ + "/a/b");
    fs::create_directories(outside_);
    std::ofstream(outside_ + "/secret") << "untouched";
    fs::create_directory_symlink(outside_, root_ + "/abs");  // absolute
    fs::create_directory_symlink("../../outside", root_ + "/a/up");
    fs::create_directory_symlink("b", root_ + "/a/inside");
    fs::create_symlink(outside_ + "/secret", root_ + "/a/b/leaf");
  }
  void TearDown() override { fs::remove_all(base_); }

  int Errno(const absl::Status& s) { return common::StatusToErrno(s); }

  std::string base_, root_, outside_;
};

TEST_F(ConfinedDirTest, ResolvesRealDirectories) {
  absl::StatusOr<ConfinedDir> dir = ConfinedDir::Open(root_, false);
  ASSERT_TRUE(dir.ok()) << dir.status();
  absl::StatusOr<common::UniqueFd> b = dir->OpenDir({"a", "b"});
  ASSERT_TRUE(b.ok()) << b.status();
  absl::StatusOr<common::UniqueFd> f =
      dir->OpenLeaf(b->get(), "new", O_WRONLY | O_CREAT | O_EXCL, 0644);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_TRUE(fs::exists(root_ + "/a/b/new"));
  EXPECT_TRUE(dir->OpenDir({}).ok());  // the root itself
}

TEST_F(ConfinedDirTest, NeverFollowsASymlinkInThePath) {
  ConfinedDir dir = *ConfinedDir::Open(root_, false);
  for (const auto& path : std::vector<std::vector<std::string>>{
           {"abs"}, {"a", "up"}, {"a", "inside"}}) {
    absl::StatusOr<common::UniqueFd> fd = dir.OpenDir(path);
    EXPECT_FALSE(fd.ok()) << path.back() << " was followed";
    EXPECT_TRUE(Errno(fd.status()) == ELOOP || Errno(fd.status()) == EXDEV)
        << fd.status();
  }
}

TEST_F(ConfinedDirTest, NeverWritesThroughASymlinkLeaf) {
  ConfinedDir dir = *ConfinedDir::Open(root_, false);
  common::UniqueFd b = *dir.OpenDir({"a", "b"});
  for (int flags : {O_WRONLY | O_TRUNC, O_WRONLY | O_CREAT, O_RDWR}) {
    absl::StatusOr<common::UniqueFd> fd = dir.OpenLeaf(b.get(), "leaf", flags,
                                                       0644);
    EXPECT_EQ(Errno(fd.status()), ELOOP);
  }
  EXPECT_EQ(ReadAll(outside_ + "/secret"), "untouched");
}

TEST_F(ConfinedDirTest, RejectsNamesThatAreNotOneComponent) {
  ConfinedDir dir = *ConfinedDir::Open(root_, false);
  for (const std::string& bad :
       {std::string(".."), std::string("."), std::string(""),
        std::string("a/b"), std::string("x\0y", 3), std::string(256, 'n')}) {
    absl::StatusOr<common::UniqueFd> fd = dir.OpenDir({bad});
    EXPECT_EQ(fd.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(dir.OpenLeaf(dir.root(), bad, O_RDONLY).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
  EXPECT_TRUE(ValidateName(std::string(255, 'n')).ok());
  EXPECT_TRUE(ValidateName("caf\xc3\xa9 %?#").ok());
}

TEST_F(ConfinedDirTest, CreatesAMissingRoot) {
  const std::string fresh = base_ + "/fresh";
  ASSERT_TRUE(ConfinedDir::Open(fresh, true).ok());
  EXPECT_TRUE(fs::is_directory(fresh));
  EXPECT_EQ(Errno(ConfinedDir::Open(base_ + "/missing", false).status()),
            ENOENT);
}

}  // namespace
}  // namespace memfuse::mirrord
