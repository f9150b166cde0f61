#include "fsd/file_data.h"

#include <cerrno>
#include <string>

#include "common/status.h"
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

}  // namespace
}  // namespace memfuse::fsd
