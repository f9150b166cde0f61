#include "fsd/mutation_log.h"

#include <linux/falloc.h>
#include <sys/stat.h>

#include <atomic>
#include <memory>
#include <thread>
#include <string>

#include "fsd/block_budget.h"
#include "fsd/inode.h"
#include "fsd/tree.h"
#include "gtest/gtest.h"

namespace memfuse::fsd {
namespace {

constexpr uint64_t kBlock = 4096;

pb::Mutation Create(uint64_t parent, const std::string& name, uint64_t id) {
  pb::Mutation m;
  m.mutable_create()->set_parent(parent);
  m.mutable_create()->set_name(name);
  m.mutable_create()->mutable_attr()->set_id(id);
  m.mutable_create()->mutable_attr()->set_mode(S_IFREG | 0644);
  return m;
}

pb::Ack AckOf(uint64_t seq, int error = 0) {
  pb::Ack ack;
  ack.set_seq(seq);
  ack.set_error(error);
  ack.set_permanent(error != 0);
  return ack;
}

class MutationLogTest : public ::testing::Test {
 protected:
  std::shared_ptr<Inode> NewFile(uint64_t ino) {
    return std::make_shared<Inode>(ino, S_IFREG | 0644, &budget_);
  }
  MutationLog::ToSend Take() {
    std::optional<MutationLog::ToSend> out =
        log_.TakeNext(absl::ZeroDuration());
    EXPECT_TRUE(out.has_value());
    return out.value_or(MutationLog::ToSend{});
  }

  BlockBudget budget_{1 << 20};
  MutationLog log_{kBlock};
};

TEST_F(MutationLogTest, RewritesOfOneBlockWidenOneUnsentSlot) {
  auto file = NewFile(7);
  EXPECT_EQ(log_.Append(Create(1, "f", 7)), 1u);
  for (int i = 0; i < 1000; ++i) log_.AppendWrite(file, 100, 10);
  log_.AppendWrite(file, 50, 10);
  log_.AppendWrite(file, 4000, 200);  // spills into the second block
  EXPECT_EQ(log_.GetBacklog().mutations, 3u);  // create + two blocks

  EXPECT_TRUE(Take().message->has_create());
  MutationLog::ToSend first = Take();
  EXPECT_EQ(first.message, nullptr);
  EXPECT_EQ(first.seq, 2u);
  EXPECT_EQ(first.offset, 50u);
  EXPECT_EQ(first.length, kBlock - 50);
  MutationLog::ToSend second = Take();
  EXPECT_EQ(second.offset, kBlock);
  EXPECT_EQ(second.length, 4200 - kBlock);
  EXPECT_FALSE(log_.TakeNext(absl::ZeroDuration()).has_value());

  // Sent slots are closed: a new write to the block gets a new slot.
  log_.AppendWrite(file, 0, 1);
  EXPECT_EQ(Take().seq, 4u);
}

TEST_F(MutationLogTest, SizeChangeClosesSlotsToLaterWrites) {
  auto file = NewFile(7);
  log_.AppendWrite(file, 0, 100);  // seq 1
  pb::Mutation truncate;
  truncate.mutable_set_attr()->set_mask(FUSE_SET_ATTR_SIZE);
  truncate.mutable_set_attr()->mutable_attr()->set_id(7);
  log_.Append(truncate);           // seq 2
  log_.AppendWrite(file, 0, 100);  // must come after the truncate: seq 3
  EXPECT_EQ(log_.GetBacklog().mutations, 3u);
  EXPECT_EQ(Take().seq, 1u);
  EXPECT_TRUE(Take().message->has_set_attr());
  EXPECT_EQ(Take().seq, 3u);
}

TEST_F(MutationLogTest, UnacknowledgedMutationsAreResentAfterRewind) {
  log_.Append(Create(1, "a", 2));
  log_.Append(Create(1, "b", 3));
  log_.Append(Create(1, "c", 4));
  for (int i = 0; i < 3; ++i) Take();
  log_.Acked(AckOf(1));
  EXPECT_EQ(log_.GetBacklog().mutations, 2u);

  // The agent restarted having applied up to 2 (its ack was lost).
  log_.Rewind(2);
  MutationLog::ToSend again = Take();
  EXPECT_EQ(again.seq, 3u);
  EXPECT_EQ(again.message->seq(), 3u);
  EXPECT_EQ(again.message->create().name(), "c");
  log_.Acked(AckOf(3));
  EXPECT_TRUE(log_.WaitEmpty(absl::ZeroDuration()));
}

TEST_F(MutationLogTest, BuiltDataIsResentAsBuilt) {
  auto file = NewFile(9);
  log_.AppendWrite(file, 0, 10);
  MutationLog::ToSend out = Take();
  auto built = std::make_shared<pb::Mutation>();
  built->set_seq(out.seq);
  built->mutable_write()->set_id(9);
  built->mutable_write()->set_data("0123456789");
  log_.KeepForResend(out.seq, built);
  log_.Rewind(0);
  MutationLog::ToSend again = Take();
  ASSERT_NE(again.message, nullptr);
  EXPECT_EQ(again.message->write().data(), "0123456789");
  EXPECT_EQ(log_.GetBacklog().data_bytes, 10u);
  log_.Acked(AckOf(out.seq));
  EXPECT_EQ(log_.GetBacklog().data_bytes, 0u);
  EXPECT_EQ(log_.GetBacklog().acked_bytes, 10u);
}

TEST_F(MutationLogTest, SyncBarrierReportsRefusals) {
  pb::Mutation sync;
  sync.mutable_sync()->set_id(5);
  const uint64_t seq = log_.Append(sync);
  Take();
  log_.Acked(AckOf(seq, EIO));
  EXPECT_EQ(log_.WaitApplied(seq), EIO);

  auto file = NewFile(6);
  log_.AppendWrite(file, 0, 1);
  Take();
  log_.Acked(AckOf(seq + 1, ENOSPC));
  EXPECT_EQ(log_.FailedErrno(6), ENOSPC);
  EXPECT_EQ(log_.FailedErrno(5), 0);
}

TEST_F(MutationLogTest, InflightBytesAreBounded) {
  auto file = NewFile(6);
  const uint64_t blocks = MutationLog::kMaxInflightBytes / kBlock + 10;
  log_.AppendWrite(file, 0, blocks * kBlock);
  uint64_t taken = 0;
  while (log_.TakeNext(absl::ZeroDuration()).has_value()) ++taken;
  EXPECT_LT(taken, blocks);
  log_.Acked(AckOf(1));
  EXPECT_TRUE(log_.TakeNext(absl::ZeroDuration()).has_value());
}

// The bindings sent to a restarted agent describe the mirror as of the last
// applied mutation, not the tree now.
TEST(MirrorBindingsTest, UndoesUnacknowledgedNamespaceChanges) {
  BlockBudget budget(1 << 20);
  Tree tree(kBlock, &budget);
  MutationLog log(kBlock);
  tree.SetMirrorLog(&log);
  auto a = tree.MakeNode(FUSE_ROOT_ID, "a", S_IFDIR | 0755, 0, {}, {});
  ASSERT_TRUE(a.ok());
  auto f = tree.MakeNode(a->st_ino, "f", S_IFREG | 0644, 0, {}, {});
  ASSERT_TRUE(f.ok());
  while (log.TakeNext(absl::ZeroDuration()).has_value()) {
  }
  log.Acked(AckOf(2));  // the mirror has a/ and a/f

  ASSERT_TRUE(tree.Rename(FUSE_ROOT_ID, "a", FUSE_ROOT_ID, "b", 0).ok());
  ASSERT_TRUE(tree.MakeNode(FUSE_ROOT_ID, "new", S_IFREG | 0644, 0, {}, {})
                  .ok());
  ASSERT_TRUE(tree.Unlink(a->st_ino, "f").ok());

  std::vector<pb::Binding> bindings = tree.MirrorBindings(&log);
  ASSERT_EQ(bindings.size(), 2u);
  EXPECT_EQ(bindings[0].id(), a->st_ino);
  EXPECT_EQ(bindings[0].parent(), FUSE_ROOT_ID);
  EXPECT_EQ(bindings[0].name(), "a");
  EXPECT_EQ(bindings[1].id(), f->st_ino);
  EXPECT_EQ(bindings[1].parent(), a->st_ino);
  EXPECT_EQ(bindings[1].name(), "f");
}

}  // namespace
}  // namespace memfuse::fsd

namespace memfuse::fsd {
namespace {

// Dirty blocks count with the buffer that holds them, from the write until
// the slot carrying their last version is acknowledged.
TEST(MutationLogDirtyTest, BlocksStayDirtyUntilTheirLastSlotIsAcked) {
  BlockBudget budget(1 << 20);
  MutationLog log(kBlock, 4 * kBlock);
  auto file = std::make_shared<Inode>(7, S_IFREG | 0644, &budget);
  EXPECT_EQ(log.dirty().Charge(0, 100), 128u);
  EXPECT_EQ(log.dirty().Charge(kBlock - 1, 2), kBlock + 64);
  EXPECT_EQ(log.dirty().Charge(0, 3 * kBlock), 3 * kBlock);

  log.AppendWrite(file, 0, 100);    // seq 1: block 0, 128 bytes
  log.AppendWrite(file, 0, 1000);   // widens seq 1: 1024
  EXPECT_EQ(log.GetBacklog().dirty_bytes, 1024u);
  std::optional<MutationLog::ToSend> first =
      log.TakeNext(absl::ZeroDuration());
  ASSERT_TRUE(first.has_value());
  log.AppendWrite(file, 2000, 100);  // seq 2: block 0 again, now 4096
  log.AppendWrite(file, kBlock, 10);  // seq 3: block 1
  EXPECT_EQ(log.GetBacklog().dirty_bytes, kBlock + 64);

  pb::Ack ack;
  ack.set_seq(1);
  log.Acked(ack);  // block 0's newer version is not acked yet
  EXPECT_EQ(log.GetBacklog().dirty_bytes, kBlock + 64);
  ack.set_seq(2);
  log.Acked(ack);
  EXPECT_EQ(log.GetBacklog().dirty_bytes, 64u);
  ack.set_seq(3);
  log.Acked(ack);
  EXPECT_EQ(log.GetBacklog().dirty_bytes, 0u);
  EXPECT_EQ(log.GetBacklog().dirty_peak, kBlock + 64);
}

TEST(MutationLogDirtyTest, WritersWaitForRoomUntilAcksFreeIt) {
  BlockBudget budget(1 << 20);
  MutationLog log(kBlock, 2 * kBlock);
  auto file = std::make_shared<Inode>(7, S_IFREG | 0644, &budget);
  {
    DirtySet::Reservation room = log.dirty().Reserve(2 * kBlock);
    log.AppendWrite(file, 0, 2 * kBlock);  // seqs 1, 2
  }
  EXPECT_EQ(log.GetBacklog().dirty_bytes, 2 * kBlock);

  std::atomic<bool> wrote{false};
  std::thread writer([&] {
    DirtySet::Reservation room = log.dirty().Reserve(kBlock);
    log.AppendWrite(file, 2 * kBlock, kBlock);
    wrote = true;
  });
  // Once it is counted as waiting it must stay blocked until an ack.
  while (log.GetBacklog().dirty_waits == 0) absl::SleepFor(absl::Milliseconds(1));
  EXPECT_FALSE(wrote) << "a writer passed the dirty limit";
  pb::Ack ack;
  ack.set_seq(1);
  log.Acked(ack);  // one block clean: room for the writer
  writer.join();
  EXPECT_TRUE(wrote);
  EXPECT_EQ(log.GetBacklog().dirty_bytes, 2 * kBlock);
  EXPECT_EQ(log.GetBacklog().dirty_peak, 2 * kBlock);
  EXPECT_EQ(log.GetBacklog().dirty_waits, 1u);

  // Shutdown lets every waiter go.
  std::thread late(
      [&] { DirtySet::Reservation room = log.dirty().Reserve(kBlock); });
  while (log.GetBacklog().dirty_waits == 1) absl::SleepFor(absl::Milliseconds(1));
  log.Shutdown();
  late.join();
}

TEST_F(MutationLogTest, ABlockIsCleanOnlyWhenTheMirrorHasItsBytes) {
  auto file = NewFile(7);
  log_.Append(Create(1, "f", 7));
  log_.AppendWrite(file, 0, 10);
  EXPECT_FALSE(log_.IsBlockClean(7, 0)) << "written, not acknowledged";
  EXPECT_TRUE(log_.IsBlockClean(7, 1)) << "another block";
  log_.Acked(AckOf(2));
  EXPECT_TRUE(log_.IsBlockClean(7, 0));

  // A size change not yet applied: the mirror's bytes past it may differ.
  pb::Mutation truncate;
  truncate.mutable_set_attr()->mutable_attr()->set_id(7);
  truncate.mutable_set_attr()->set_mask(FUSE_SET_ATTR_SIZE);
  const uint64_t seq = log_.Append(truncate);
  EXPECT_FALSE(log_.IsBlockClean(7, 0));
  log_.Acked(AckOf(seq));
  EXPECT_TRUE(log_.IsBlockClean(7, 0));

  // Data the mirror refused for good is never only there.
  log_.AppendWrite(file, 0, 10);
  log_.Acked(AckOf(seq + 1, EIO));
  EXPECT_FALSE(log_.IsBlockClean(7, 0));
}

}  // namespace
}  // namespace memfuse::fsd

namespace memfuse::fsd {
namespace {

pb::Mutation SetSize(uint64_t id, uint64_t size) {
  pb::Mutation m;
  m.mutable_set_attr()->set_mask(FUSE_SET_ATTR_SIZE);
  m.mutable_set_attr()->mutable_attr()->set_id(id);
  m.mutable_set_attr()->mutable_attr()->set_size(size);
  return m;
}

pb::Mutation SyncOf(uint64_t id) {
  pb::Mutation m;
  m.mutable_sync()->set_id(id);
  return m;
}

// A refusal of a file's data is reported to the fsync that covers it, and
// forgotten once the file's content is replaced: after a truncate to 0, the
// file's blocks are evictable again and its later fsyncs succeed.
TEST_F(MutationLogTest, ARefusalIsForgottenOnceTheFileIsTruncatedToZero) {
  auto file = NewFile(7);
  log_.AppendWrite(file, 0, 10);                     // seq 1: refused
  const uint64_t covering = log_.Append(SyncOf(7));  // seq 2
  log_.Acked(AckOf(1, EFBIG));
  log_.Acked(AckOf(covering));
  EXPECT_NE(log_.WaitApplied(covering), 0) << "the fsync covering it";
  EXPECT_FALSE(log_.IsBlockClean(7, 0));

  const uint64_t truncate = log_.Append(SetSize(7, 0));
  log_.AppendWrite(file, 0, 10);
  const uint64_t later = log_.Append(SyncOf(7));
  log_.Acked(AckOf(later));
  EXPECT_GT(later, truncate);
  EXPECT_EQ(log_.WaitApplied(later), 0) << "data written after the truncate";
  EXPECT_EQ(log_.FailedErrno(7), 0);
  EXPECT_TRUE(log_.IsBlockClean(7, 0));
}

// The fsync whose barrier comes after refused data reports it even when a
// truncate after the barrier is acknowledged before the fsync looks.
TEST_F(MutationLogTest, TheCoveringFsyncReportsARefusalForgottenAfterIt) {
  auto file = NewFile(7);
  log_.AppendWrite(file, 0, 10);                     // seq 1: refused
  const uint64_t covering = log_.Append(SyncOf(7));  // seq 2
  const uint64_t truncate = log_.Append(SetSize(7, 0));
  log_.Acked(AckOf(1, EFBIG));
  log_.Acked(AckOf(truncate));
  EXPECT_NE(log_.WaitApplied(covering), 0);
  EXPECT_TRUE(log_.IsBlockClean(7, 0));
}

// A truncate to a size other than 0 keeps part of what was refused, and a
// refused attribute is not content: neither is forgotten by a truncate.
TEST_F(MutationLogTest, OnlyAFullReplacementForgetsARefusal) {
  auto file = NewFile(7);
  log_.AppendWrite(file, 0, 10);
  log_.Acked(AckOf(1, EFBIG));
  log_.Acked(AckOf(log_.Append(SetSize(7, 5))));
  EXPECT_EQ(log_.FailedErrno(7), EFBIG);

  pb::Mutation xattr;
  xattr.mutable_set_xattr()->set_id(8);
  xattr.mutable_set_xattr()->set_name("user.big");
  log_.Acked(AckOf(log_.Append(xattr), ENOSPC));
  log_.Acked(AckOf(log_.Append(SetSize(8, 0))));
  EXPECT_EQ(log_.FailedErrno(8), ENOSPC);
}

// Nothing of a file is left in the mirror once its last name is removed:
// its refusals go with it.
TEST_F(MutationLogTest, ARefusalIsForgottenWithTheFilesLastName) {
  auto file = NewFile(7);
  log_.AppendWrite(file, 0, 10);
  log_.Acked(AckOf(1, EFBIG));
  pb::Mutation remove;
  remove.mutable_remove()->set_parent(1);
  remove.mutable_remove()->set_name("f");
  remove.mutable_remove()->set_id(7);
  const uint64_t seq = log_.Append(remove, /*gone=*/7);
  EXPECT_EQ(log_.FailedErrno(7), EFBIG) << "until the removal is applied";
  log_.Acked(AckOf(seq));
  EXPECT_EQ(log_.FailedErrno(7), 0);
}

pb::Mutation Punch(uint64_t id, uint64_t offset, uint64_t length) {
  pb::Mutation m;
  m.mutable_punch_hole()->set_id(id);
  m.mutable_punch_hole()->set_offset(offset);
  m.mutable_punch_hole()->set_length(length);
  return m;
}

// A punch orders like a size change: a write after it is not widened into
// a slot before it (the punch would zero it), and the file's blocks stay
// unevictable until the punch is applied. It dirties nothing.
TEST_F(MutationLogTest, APunchClosesSlotsAndHoldsBlocksUntilApplied) {
  auto file = NewFile(7);
  log_.AppendWrite(file, 0, 100);                          // seq 1
  const uint64_t punch = log_.Append(Punch(7, 10, 20));     // seq 2
  const uint64_t dirty = log_.GetBacklog().dirty_bytes;
  log_.AppendWrite(file, 10, 5);                           // seq 3, not 1
  EXPECT_EQ(log_.GetBacklog().mutations, 3u);
  EXPECT_EQ(Take().seq, 1u);
  EXPECT_TRUE(Take().message->has_punch_hole());
  EXPECT_EQ(Take().seq, 3u);
  EXPECT_EQ(log_.GetBacklog().dirty_bytes, dirty);
  log_.Acked(AckOf(1));
  EXPECT_FALSE(log_.IsBlockClean(7, 5)) << "punched, not applied";
  log_.Acked(AckOf(punch));
  EXPECT_TRUE(log_.IsBlockClean(7, 5));
}

// fallocate(PUNCH_HOLE) through the tree is a punch, not a write of zeros:
// at the dirty limit it adds nothing dirty.
TEST(MutationLogDirtyTest, APunchIsNotADirtyLimitBypass) {
  BlockBudget budget(1 << 20);
  Tree tree(kBlock, &budget);
  MutationLog log(kBlock, 2 * kBlock);
  tree.SetMirrorLog(&log);
  auto f = tree.MakeNode(FUSE_ROOT_ID, "f", S_IFREG | 0644, 0, {}, {});
  ASSERT_TRUE(f.ok());
  const std::string data(3 * kBlock, 'd');
  ASSERT_TRUE(tree.Write(f->st_ino, 0, data.data(), kBlock).ok());
  ASSERT_TRUE(tree.Write(f->st_ino, kBlock, data.data(), kBlock).ok());
  struct stat grow = {};
  grow.st_size = 3 * kBlock;
  ASSERT_TRUE(tree.SetAttr(f->st_ino, grow, FUSE_SET_ATTR_SIZE).ok());
  ASSERT_EQ(log.GetBacklog().dirty_bytes, 2 * kBlock);  // at the limit

  ASSERT_TRUE(tree.Fallocate(f->st_ino,
                             FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                             2 * kBlock + 10, 100)
                  .ok());
  EXPECT_EQ(log.GetBacklog().dirty_bytes, 2 * kBlock);
  bool punched = false;
  while (auto out = log.TakeNext(absl::ZeroDuration())) {
    if (out->message != nullptr && out->message->has_punch_hole()) {
      punched = true;
      EXPECT_EQ(out->message->punch_hole().id(), f->st_ino);
      EXPECT_EQ(out->message->punch_hole().offset(), 2 * kBlock + 10);
      EXPECT_EQ(out->message->punch_hole().length(), 100u);
    }
  }
  EXPECT_TRUE(punched);
}

}  // namespace
}  // namespace memfuse::fsd
