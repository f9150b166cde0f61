// What the mirror is told of the Tree's changes (fsd/change_recorder.h):
// a Tree with a real MutationLog, each change read back as the sender
// takes it.
#include "fsd/change_recorder.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/stat.h>

#include <memory>
#include <optional>
#include <string>

#include "fsd/block_budget.h"
#include "fsd/mutation_log.h"
#include "fsd/tree.h"
#include "gtest/gtest.h"

namespace memfuse::fsd {
namespace {

constexpr uint64_t kBlock = 4096;

class ChangeRecorderTest : public ::testing::Test {
 protected:
  ChangeRecorderTest() { tree_.SetMirrorLog(&log_); }
  ~ChangeRecorderTest() override { log_.Shutdown(); }

  // The next thing the sender would send (a data slot has no message).
  MutationLog::ToSend Next() {
    if (auto out = log_.TakeNext(absl::ZeroDuration())) return *out;
    ADD_FAILURE() << "nothing to send";
    return {};
  }

  BlockBudget budget_{1 << 20};
  MutationLog log_{kBlock};
  Tree tree_{kBlock, &budget_};
};

TEST_F(ChangeRecorderTest, ASymlinkIsCreatedEmptyWithItsTarget) {
  absl::StatusOr<struct stat> link = tree_.MakeNode(
      FUSE_ROOT_ID, "l", S_IFLNK | 0777, 0, "target/path", Caller{7, 8});
  ASSERT_TRUE(link.ok());
  const MutationLog::ToSend out = Next();
  ASSERT_NE(out.message, nullptr);
  ASSERT_TRUE(out.message->has_create());
  const pb::Create& create = out.message->create();
  EXPECT_EQ(create.parent(), FUSE_ROOT_ID);
  EXPECT_EQ(create.name(), "l");
  EXPECT_EQ(create.symlink_target(), "target/path");
  EXPECT_EQ(create.attr().id(), link->st_ino);
  // The size is the target's here; the mirror makes it from the target.
  EXPECT_EQ(create.attr().size(), 0u);
  EXPECT_EQ(create.attr().uid(), 7u);
  EXPECT_FALSE(create.repair());
}

TEST_F(ChangeRecorderTest, ARenameOverAFileNamesWhatItReplacesAndWhatGoes) {
  const struct stat a =
      *tree_.MakeNode(FUSE_ROOT_ID, "a", S_IFREG | 0644, 0, {}, {});
  const struct stat b =
      *tree_.MakeNode(FUSE_ROOT_ID, "b", S_IFREG | 0644, 0, {}, {});
  Next();
  Next();
  ASSERT_TRUE(tree_.Rename(FUSE_ROOT_ID, "a", FUSE_ROOT_ID, "b", 0).ok());
  const MutationLog::ToSend out = Next();
  ASSERT_NE(out.message, nullptr);
  ASSERT_TRUE(out.message->has_rename());
  const pb::Rename& rename = out.message->rename();
  EXPECT_EQ(rename.name(), "a");
  EXPECT_EQ(rename.new_name(), "b");
  EXPECT_EQ(rename.id(), a.st_ino);
  EXPECT_EQ(rename.replaced_id(), b.st_ino);
}

TEST_F(ChangeRecorderTest, AWriteIsSentWithTheNewestBytesBelowTheSize) {
  const struct stat f =
      *tree_.MakeNode(FUSE_ROOT_ID, "f", S_IFREG | 0644, 0, {}, {});
  Next();
  ASSERT_TRUE(tree_.Open(f.st_ino, O_RDWR).ok());
  ASSERT_EQ(*tree_.Write(f.st_ino, 0, "aaaaaaaa", 8), 8u);
  // Rewritten before it is sent: one slot, the newest bytes.
  ASSERT_EQ(*tree_.Write(f.st_ino, 2, "BB", 2), 2u);
  const MutationLog::ToSend slot = Next();
  ASSERT_EQ(slot.message, nullptr);
  ASSERT_NE(slot.inode, nullptr);
  EXPECT_EQ(slot.offset, 0u);
  EXPECT_EQ(slot.length, 8u);

  // Shrunk after the write was recorded: only what is left is sent.
  struct stat attr = {};
  attr.st_size = 5;
  ASSERT_TRUE(tree_.SetAttr(f.st_ino, attr, FUSE_SET_ATTR_SIZE).ok());
  pb::Write write;
  EXPECT_EQ(ChangeRecorder::WriteMessage(*slot.inode, kBlock, slot.offset,
                                         slot.length, &write),
            5u);
  EXPECT_EQ(write.id(), f.st_ino);
  EXPECT_EQ(write.data(), "aaBBa");

  char out[8] = {};
  pb::Write into_region;
  EXPECT_EQ(ChangeRecorder::WriteMessage(*slot.inode, kBlock, 1, 8,
                                         &into_region, out),
            4u);
  EXPECT_EQ(std::string(out, 4), "aBBa");
  EXPECT_TRUE(into_region.data().empty());
}

TEST_F(ChangeRecorderTest, XattrsOutsideUserAreNotSent) {
  const struct stat f =
      *tree_.MakeNode(FUSE_ROOT_ID, "f", S_IFREG | 0644, 0, {}, {});
  Next();
  ASSERT_TRUE(tree_.SetXattr(f.st_ino, "trusted.x", "1", 0).ok());
  ASSERT_TRUE(tree_.SetXattr(f.st_ino, "user.y", "2", 0).ok());
  ASSERT_TRUE(tree_.RemoveXattr(f.st_ino, "user.y").ok());
  const MutationLog::ToSend set = Next();
  ASSERT_NE(set.message, nullptr);
  ASSERT_TRUE(set.message->has_set_xattr());
  EXPECT_EQ(set.message->set_xattr().name(), "user.y");
  EXPECT_EQ(set.message->set_xattr().value(), "2");
  const MutationLog::ToSend removed = Next();
  ASSERT_NE(removed.message, nullptr);
  ASSERT_TRUE(removed.message->has_remove_xattr());
  EXPECT_EQ(removed.message->remove_xattr().name(), "user.y");
  EXPECT_FALSE(log_.TakeNext(absl::ZeroDuration()).has_value());
}

}  // namespace
}  // namespace memfuse::fsd
