#include "fsd/file_data.h"

#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "fsd/block_size.h"
#include "fsd/inode.h"
#include "gtest/gtest.h"

namespace memfuse::fsd {
namespace {

constexpr uint64_t kBlock = 4096;

class FileDataTest : public ::testing::Test {
 protected:
  std::string ReadAll(const FileData& data, uint64_t offset, uint64_t n) {
    std::string out(n, '?');
    data.Read(kBlock, offset, n, out.data());
    return out;
  }

  BlockBudget budget_{1 << 20};
};

TEST(BlockSizeTest, ABuffersSizeGrowsByPowersOfTwoUpToTheBlock) {
  constexpr uint64_t kBlock = 64 << 10;
  EXPECT_EQ(BlockBufferBytes(0, kBlock), 64u);
  EXPECT_EQ(BlockBufferBytes(1, kBlock), 64u);
  EXPECT_EQ(BlockBufferBytes(65, kBlock), 128u);
  EXPECT_EQ(BlockBufferBytes(5000, kBlock), 8192u);
  EXPECT_EQ(BlockBufferBytes(kBlock, kBlock), kBlock);
  EXPECT_EQ(BlockBufferBytes(kBlock + 1, kBlock), kBlock);
  // What the file data charges is what the dirty set charges for it.
  for (uint64_t n : {1u, 64u, 100u, 4096u, 40000u, 65536u}) {
    EXPECT_EQ(FileData::ChargeFor(n, kBlock), BlockBufferBytes(n, kBlock));
  }
}

TEST_F(FileDataTest, HolesReadAsZerosAndCostNothing) {
  FileData data(&budget_);
  ASSERT_TRUE(data.Write(kBlock, 10 * kBlock + 5, "abc", 3).ok());
  EXPECT_EQ(ReadAll(data, 0, 16), std::string(16, '\0'));
  EXPECT_EQ(ReadAll(data, 10 * kBlock + 4, 5), std::string("\0abc\0", 5));
  // Only the written block is charged, and only as much as it holds.
  EXPECT_LE(data.resident_bytes(), 64u);
  EXPECT_EQ(budget_.used(), data.resident_bytes());
}

TEST_F(FileDataTest, WritesAcrossBlocksAndGrowsSmallBuffers) {
  FileData data(&budget_);
  std::string payload;
  for (uint64_t i = 0; i < 3 * kBlock; ++i) payload.push_back('a' + i % 26);
  ASSERT_TRUE(data.Write(kBlock, 100, payload.data(), payload.size()).ok());
  EXPECT_EQ(ReadAll(data, 100, payload.size()), payload);
  // Appending to a small block keeps earlier bytes.
  FileData small(&budget_);
  ASSERT_TRUE(small.Write(kBlock, 0, "12345", 5).ok());
  ASSERT_TRUE(small.Write(kBlock, 5, std::string(300, 'x').data(), 300).ok());
  EXPECT_EQ(ReadAll(small, 0, 5), "12345");
  EXPECT_EQ(ReadAll(small, 5, 300), std::string(300, 'x'));
}

TEST_F(FileDataTest, FullBudgetGivesEnospcAndChangesNothing) {
  BlockBudget tiny(2 * kBlock);
  FileData data(&tiny);
  std::string three_blocks(3 * kBlock, 'z');
  absl::Status status =
      data.Write(kBlock, 0, three_blocks.data(), three_blocks.size());
  EXPECT_EQ(common::StatusToErrno(status), ENOSPC);
  EXPECT_EQ(tiny.used(), 0u);
  EXPECT_EQ(data.resident_bytes(), 0u);
  ASSERT_TRUE(data.Write(kBlock, 0, three_blocks.data(), 2 * kBlock).ok());
  EXPECT_EQ(tiny.used(), 2 * kBlock);
  data.Clear();
  EXPECT_EQ(tiny.used(), 0u);  // freeing makes room again
}

TEST_F(FileDataTest, TruncateFreesAndZeroesTheTail) {
  FileData data(&budget_);
  std::string payload(3 * kBlock, 'q');
  ASSERT_TRUE(data.Write(kBlock, 0, payload.data(), payload.size()).ok());
  data.Truncate(kBlock, kBlock + 10);
  EXPECT_EQ(data.resident_bytes(), 2 * kBlock);
  // Extending again must show zeros past the old cut, not stale bytes.
  EXPECT_EQ(ReadAll(data, kBlock + 8, 4), std::string("qq\0\0", 4));
  data.Truncate(kBlock, 0);
  EXPECT_EQ(data.resident_bytes(), 0u);
  EXPECT_EQ(budget_.used(), 0u);
}

TEST_F(FileDataTest, PunchHoleFreesWholeBlocksAndZeroesParts) {
  FileData data(&budget_);
  std::string payload(4 * kBlock, 'p');
  ASSERT_TRUE(data.Write(kBlock, 0, payload.data(), payload.size()).ok());
  data.PunchHole(kBlock, kBlock / 2, 2 * kBlock);
  EXPECT_EQ(data.resident_bytes(), 3 * kBlock);  // block 1 freed
  EXPECT_EQ(ReadAll(data, 0, kBlock / 2), std::string(kBlock / 2, 'p'));
  EXPECT_EQ(ReadAll(data, kBlock / 2, 2 * kBlock),
            std::string(2 * kBlock, '\0'));
  EXPECT_EQ(ReadAll(data, 2 * kBlock + kBlock / 2, kBlock / 2),
            std::string(kBlock / 2, 'p'));
}

TEST_F(FileDataTest, AllocateReservesUpFront) {
  BlockBudget budget(4 * kBlock);
  FileData data(&budget);
  EXPECT_EQ(common::StatusToErrno(data.Allocate(kBlock, 0, 5 * kBlock)),
            ENOSPC);
  EXPECT_EQ(budget.used(), 0u);
  ASSERT_TRUE(data.Allocate(kBlock, 0, 4 * kBlock).ok());
  EXPECT_EQ(budget.used(), 4 * kBlock);
  // Writing into allocated space needs nothing more.
  std::string payload(4 * kBlock, 'w');
  EXPECT_TRUE(data.Write(kBlock, 0, payload.data(), payload.size()).ok());
  EXPECT_EQ(ReadAll(data, 0, 4 * kBlock), payload);
}

// --- Blocks the mirror holds (lazy loading, eviction) ---

std::string Bytes(char c, uint64_t n) { return std::string(n, c); }

TEST_F(FileDataTest, BlocksBelowTheMirrorExtentAreMissingUntilInstalled) {
  FileData data(&budget_);
  data.SetMirrorExtent(2 * kBlock + 10);
  std::vector<FileData::Missing> missing;
  data.FindMissing(kBlock, 0, 2 * kBlock + 10, /*edges_only=*/false,
                   &missing);
  ASSERT_EQ(missing.size(), 3u);
  EXPECT_EQ(missing[2].index, 2u);
  EXPECT_EQ(missing[2].length, 10u);
  EXPECT_EQ(budget_.used(), 0u);  // nothing in memory yet

  CacheReservation room(&budget_, 0);
  ASSERT_TRUE(budget_.TryReserve(kBlock));
  room = CacheReservation(&budget_, kBlock);
  EXPECT_TRUE(data.Install(kBlock, missing[1], Bytes('b', kBlock), &room));
  EXPECT_EQ(room.bytes(), 0u);
  EXPECT_EQ(ReadAll(data, kBlock, kBlock), Bytes('b', kBlock));
  // Installed once: a second fetch of the same block is not taken.
  EXPECT_FALSE(data.Install(kBlock, missing[1], Bytes('X', kBlock), nullptr));
  EXPECT_EQ(ReadAll(data, kBlock, 4), "bbbb");

  // A write of a whole block replaces it without a fetch; a partial one
  // needs the mirror's bytes first.
  missing.clear();
  data.FindMissing(kBlock, 0, kBlock, /*edges_only=*/true, &missing);
  EXPECT_TRUE(missing.empty());
  data.FindMissing(kBlock, 5, 10, /*edges_only=*/true, &missing);
  ASSERT_EQ(missing.size(), 1u);
  EXPECT_EQ(missing[0].index, 0u);
  // The last block: writing all of the 10 bytes the mirror has is enough.
  missing.clear();
  data.FindMissing(kBlock, 2 * kBlock, 20, /*edges_only=*/true, &missing);
  EXPECT_TRUE(missing.empty());
}

TEST_F(FileDataTest, AFetchThatRacedAWriteAndAnEvictionIsDropped) {
  BlockCache cache;
  FileData data(&budget_, &cache);
  data.SetMirrorExtent(kBlock);
  FileData::Missing stale;
  ASSERT_TRUE(data.IsMissing(kBlock, 0, &stale));
  // Meanwhile: written whole, then evicted once the mirror had it.
  ASSERT_TRUE(data.Write(kBlock, 0, Bytes('n', kBlock).data(), kBlock).ok());
  EXPECT_EQ(data.EvictForCache(0), kBlock);
  EXPECT_EQ(budget_.used(), 0u);
  // The old fetch (of the old bytes) must not land.
  EXPECT_FALSE(data.Install(kBlock, stale, Bytes('o', kBlock), nullptr));
  FileData::Missing fresh;
  ASSERT_TRUE(data.IsMissing(kBlock, 0, &fresh));
  EXPECT_NE(fresh.gen, stale.gen);
  EXPECT_TRUE(data.Install(kBlock, fresh, Bytes('n', kBlock), nullptr));
  EXPECT_EQ(ReadAll(data, 0, 3), "nnn");
}

TEST_F(FileDataTest, TruncatingAMissingBlockHidesTheMirrorsOldTail) {
  FileData data(&budget_);
  data.SetMirrorExtent(kBlock);
  data.Truncate(kBlock, 100);
  FileData::Missing m;
  ASSERT_TRUE(data.IsMissing(kBlock, 0, &m));
  EXPECT_EQ(m.length, 100u);
  // The mirror may still have the old bytes past 100; they never show.
  EXPECT_TRUE(data.Install(kBlock, m, Bytes('m', kBlock), nullptr));
  EXPECT_EQ(ReadAll(data, 98, 4), std::string("mm\0\0", 4));

  // Evicted, then truncated further: the same.
  ASSERT_EQ(data.EvictForCache(0), 128u);
  data.Truncate(kBlock, 50);
  ASSERT_TRUE(data.IsMissing(kBlock, 0, &m));
  EXPECT_EQ(m.length, 50u);
}

TEST_F(FileDataTest, AFetchedBufferBecomesTheBlockOrIsRefittedAfterATruncate) {
  FileData data(&budget_);
  data.SetMirrorExtent(2 * kBlock);
  auto fetched = [](uint64_t capacity, char c, uint64_t filled) {
    FileData::Buffer buffer = FileData::NewBuffer(capacity);
    std::memset(buffer.get(), c, filled);
    return buffer;
  };
  FileData::Missing m;
  ASSERT_TRUE(data.IsMissing(kBlock, 0, &m));
  const uint64_t charge = FileData::ChargeFor(m.length, kBlock);
  ASSERT_EQ(charge, kBlock);
  // A short fetch (the mirror's file ended early): the rest reads as zeros
  // whatever the buffer held.
  FileData::Buffer buffer = fetched(charge, 'a', charge);
  EXPECT_TRUE(data.Install(kBlock, m, std::move(buffer), 10, nullptr));
  EXPECT_EQ(ReadAll(data, 8, 4), std::string("aa\0\0", 4));
  EXPECT_EQ(budget_.used(), kBlock);

  // Truncated while the second block was fetched: it costs what its new
  // length needs, not the whole buffer, and shows nothing past it.
  ASSERT_TRUE(data.IsMissing(kBlock, 1, &m));
  data.Truncate(kBlock, kBlock + 100);
  EXPECT_TRUE(data.Install(kBlock, m, fetched(kBlock, 'b', kBlock), kBlock,
                           nullptr));
  EXPECT_EQ(budget_.used(), kBlock + FileData::ChargeFor(100, kBlock));
  EXPECT_EQ(ReadAll(data, kBlock + 98, 4), std::string("bb\0\0", 4));
}

TEST_F(FileDataTest, PunchingAMissingBlockWholeMakesAHole) {
  FileData data(&budget_);
  data.SetMirrorExtent(3 * kBlock);
  data.PunchHole(kBlock, kBlock, kBlock);
  FileData::Missing m;
  EXPECT_TRUE(data.IsMissing(kBlock, 0, &m));
  EXPECT_FALSE(data.IsMissing(kBlock, 1, &m));
  EXPECT_TRUE(data.IsMissing(kBlock, 2, &m));
  EXPECT_EQ(ReadAll(data, kBlock, 8), Bytes('\0', 8));
}

TEST_F(FileDataTest, TheCacheSweepGivesReferencedBlocksASecondChance) {
  BlockCache cache;
  auto inode = std::make_shared<Inode>(7, S_IFREG | 0644, &budget_, &cache);
  // One thread: the inode's lock is not needed to reach its data here.
  FileData& data = [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS -> FileData& {
    return inode->data;
  }();
  data.SetOwner(inode);
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(
        data.Write(kBlock, i * kBlock, Bytes('a' + i, kBlock).data(), kBlock)
            .ok());
  }
  EXPECT_EQ(cache.size(), 4u);
  // Blocks 0..3 were all referenced when written; read block 2 again
  // after a first sweep cleared the bits.
  auto judge = [&](const std::shared_ptr<Inode>&, uint64_t index,
                   uint64_t* freed) {
    bool resident = false;
    if (data.TestAndClearReferenced(index, &resident) || !resident) {
      return BlockCache::Verdict::kKeep;
    }
    *freed = data.EvictForCache(index);
    return BlockCache::Verdict::kEvicted;
  };
  EXPECT_EQ(cache.Evict(kBlock, judge), kBlock);  // clears all, evicts one
  EXPECT_EQ(cache.size(), 3u);
  FileData::Missing m;
  EXPECT_TRUE(data.IsMissing(kBlock, 0, &m));  // the oldest went first
  EXPECT_EQ(ReadAll(data, 2 * kBlock, 1), "c");
  EXPECT_EQ(cache.Evict(2 * kBlock, judge), 2 * kBlock);
  EXPECT_FALSE(data.IsMissing(kBlock, 2, &m)) << "the block just read went";
  EXPECT_EQ(cache.evicted_blocks(), 3u);
  EXPECT_EQ(budget_.used(), kBlock);
}

}  // namespace
}  // namespace memfuse::fsd
