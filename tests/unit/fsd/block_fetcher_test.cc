// The block fetcher on its own (fsd/block_fetcher.h), with the fake mirror
// reader (fake_reader.h), whose reads can be held on a latch: one read per block however
// many ask, eviction of clean blocks only, and what a failed read is for
// the program. Also the dirty set's counting and its write limit
// (fsd/dirty_set.h).
#include "fsd/block_fetcher.h"

#include <sys/stat.h>

#include <atomic>
#include <cerrno>
#include <memory>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "common/status.h"
#include "fsd/dirty_set.h"
#include "gtest/gtest.h"
#include "tests/unit/fsd/fake_reader.h"

namespace memfuse::fsd {
namespace {

using common::StatusToErrno;

constexpr uint64_t kBlock = 4096;

using testing::FakeReader;

class BlockFetcherTest : public ::testing::Test {
 protected:
  explicit BlockFetcherTest(uint64_t cache_blocks = 2)
      : budget_(cache_blocks * kBlock) {
    fetcher_.SetLog(&log_);
    fetcher_.SetReader(&reader_);
    fetcher_.SetRoomWaits(absl::Milliseconds(100), absl::Milliseconds(100));
  }
  ~BlockFetcherTest() override {
    reader_.Release();
    log_.Shutdown();
    fetcher_.Stop();
  }

  // A mirror file of `blocks` whole blocks, none of them held.
  std::shared_ptr<Inode> MirrorFile(uint64_t id, uint64_t blocks) {
    auto inode = std::make_shared<Inode>(id, S_IFREG | 0644, &budget_,
                                         fetcher_.cache());
    absl::MutexLock l(&inode->mu);
    inode->data.SetOwner(inode);
    inode->size = blocks * kBlock;
    inode->linked = true;
    inode->data.SetMirrorExtent(inode->size);
    return inode;
  }
  static FileData::Missing MissingBlock(const std::shared_ptr<Inode>& inode,
                                        uint64_t index) {
    FileData::Missing m;
    absl::ReaderMutexLock l(&inode->mu);
    EXPECT_TRUE(inode->data.IsMissing(kBlock, index, &m))
        << "block " << index << " is held";
    return m;
  }
  static bool Held(const std::shared_ptr<Inode>& inode, uint64_t index) {
    FileData::Missing m;
    absl::ReaderMutexLock l(&inode->mu);
    return !inode->data.IsMissing(kBlock, index, &m);
  }

  BlockBudget budget_;
  MutationLog log_{kBlock};
  FakeReader reader_;
  BlockFetcher fetcher_{kBlock, &budget_};
};

TEST_F(BlockFetcherTest, TwoAskersOfOneBlockShareOneRead) {
  std::shared_ptr<Inode> file = MirrorFile(7, 2);
  const FileData::Missing block = MissingBlock(file, 0);
  reader_.HoldFirstReadOf(7);
  absl::Status first_status;
  std::thread first([&] {
    first_status =
        fetcher_.FetchOne(file, block, BlockFetcher::Room::kWaitForRead);
  });
  ASSERT_TRUE(reader_.WaitHeld());  // the first read is in flight, held
  absl::Status second_status;
  absl::Notification second_returned;
  std::thread second([&] {
    second_status =
        fetcher_.FetchOne(file, block, BlockFetcher::Room::kWaitForRead);
    second_returned.Notify();
  });
  // The second asker joins the flight: it cannot return before the read.
  EXPECT_FALSE(
      second_returned.WaitForNotificationWithTimeout(absl::Milliseconds(50)));
  reader_.Release();
  first.join();
  second.join();
  EXPECT_TRUE(first_status.ok()) << first_status;
  EXPECT_TRUE(second_status.ok()) << second_status;
  EXPECT_EQ(reader_.reads(), 1);
  EXPECT_TRUE(Held(file, 0));
  EXPECT_EQ(fetcher_.GetStats().blocks_fetched, 1u);
}

TEST_F(BlockFetcherTest, EvictsCleanBlocksButNeverADirtyOne) {
  std::shared_ptr<Inode> file = MirrorFile(7, 3);
  ASSERT_TRUE(fetcher_
                  .Fetch(file, {MissingBlock(file, 0), MissingBlock(file, 1)},
                         BlockFetcher::Room::kWaitForRead)
                  .ok());
  // Block 1 is written and not yet acknowledged by the mirror.
  {
    absl::MutexLock l(&file->mu);
    log_.AppendWrite(file, kBlock, 10);
  }
  // The cache holds two blocks: the third evicts the clean one.
  ASSERT_TRUE(fetcher_
                  .FetchOne(file, MissingBlock(file, 2),
                            BlockFetcher::Room::kWaitForRead)
                  .ok());
  EXPECT_FALSE(Held(file, 0)) << "the clean block was not the one evicted";
  EXPECT_TRUE(Held(file, 1)) << "a dirty block was evicted";
  EXPECT_TRUE(Held(file, 2));
  EXPECT_EQ(fetcher_.GetStats().blocks_evicted, 1u);

  // Block 2 is dirty too now: nothing can make room, so a read waiting
  // for the mirror gives up after its bound with EIO.
  {
    absl::MutexLock l(&file->mu);
    log_.AppendWrite(file, 2 * kBlock, 10);
  }
  absl::Status waited = fetcher_.FetchOne(file, MissingBlock(file, 0),
                                          BlockFetcher::Room::kWaitForRead);
  EXPECT_EQ(StatusToErrno(waited), EIO) << waited;
  EXPECT_TRUE(Held(file, 1));
  EXPECT_TRUE(Held(file, 2));
  // Without waiting: ENOSPC at once.
  EXPECT_EQ(StatusToErrno(fetcher_.FetchOne(file, MissingBlock(file, 0),
                                            BlockFetcher::Room::kEvict)),
            ENOSPC);
}

TEST_F(BlockFetcherTest, AFailedReadIsAnIoErrorForTheProgram) {
  std::shared_ptr<Inode> file = MirrorFile(7, 1);
  reader_.FailWith(absl::UnavailableError("agent gone"));
  EXPECT_EQ(StatusToErrno(fetcher_.FetchOne(file, MissingBlock(file, 0),
                                            BlockFetcher::Room::kWaitForRead)),
            EIO);
  EXPECT_FALSE(Held(file, 0));
  EXPECT_EQ(fetcher_.GetStats().blocks_fetched, 0u);
}

TEST(DirtySetTest, ABlockIsCleanOnlyWhenItsLastSlotIsAcknowledged) {
  DirtySet dirty(kBlock, 0);
  dirty.Mark(7, 0, 100, /*new_slot=*/true);
  dirty.Mark(7, 0, 2000, /*new_slot=*/false);  // widened
  dirty.Mark(7, 0, 50, /*new_slot=*/true);     // a second slot
  EXPECT_EQ(dirty.GetStats().bytes, 2048u);
  EXPECT_FALSE(dirty.Clean(7, 0));
  EXPECT_TRUE(dirty.Contains(7, 0));
  EXPECT_TRUE(dirty.Clean(7, 0));
  EXPECT_FALSE(dirty.Contains(7, 0));
  EXPECT_EQ(dirty.GetStats().bytes, 0u);
  EXPECT_EQ(dirty.GetStats().peak, 2048u);
  EXPECT_FALSE(dirty.Clean(7, 0)) << "cleaned twice";
}

TEST(DirtySetTest, AWriterPastTheLimitWaitsForAClean) {
  DirtySet dirty(kBlock, 2 * kBlock);
  dirty.Mark(7, 0, kBlock, true);
  dirty.Mark(7, 1, kBlock, true);
  std::atomic<bool> reserved{false};
  std::thread writer([&] {
    DirtySet::Reservation room = dirty.Reserve(kBlock);
    reserved = true;
  });
  // Counted as waiting: it stays blocked until a block is clean.
  while (dirty.GetStats().waits == 0) std::this_thread::yield();
  EXPECT_FALSE(reserved);
  EXPECT_TRUE(dirty.Clean(7, 1));
  writer.join();
  EXPECT_TRUE(reserved);

  // A reservation holds its room until it goes; Shutdown lets waiters go.
  DirtySet::Reservation held = dirty.Reserve(kBlock);
  std::thread late([&] { DirtySet::Reservation room = dirty.Reserve(kBlock); });
  while (dirty.GetStats().waits == 1) std::this_thread::yield();
  dirty.Shutdown();
  late.join();
}

}  // namespace
}  // namespace memfuse::fsd
