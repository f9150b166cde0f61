#include "common/xattr_space.h"

#include <vector>

#include "gtest/gtest.h"

namespace memfuse::common {
namespace {

// The figures ext4 gives: a 16-byte header, the name without "user." and
// the value, each rounded up to 4 bytes.
TEST(XattrSpaceTest, CostIsExt4s) {
  EXPECT_EQ(XattrCost(6, 0), 20u);    // "user.p", empty
  EXPECT_EQ(XattrCost(10, 12), 36u);  // "user.var_0" = "orig-value-0"
  EXPECT_EQ(XattrCost(11, 13), 40u);  // "user.var_10" = "orig-value-10"
  EXPECT_EQ(XattrCost(9, 4040), 4060u);
}

// ext4 with 256-byte inodes and 4 KiB blocks: 88 bytes in the inode, then
// 4060 in the block; 207 empty one-letter attributes fit, not 208.
TEST(XattrSpaceTest, FirstFitOverTheRegions) {
  const std::vector<uint64_t> ext4 = {88, 4060};
  EXPECT_TRUE(XattrsFit(ext4, std::vector<uint64_t>(207, 20)));
  EXPECT_FALSE(XattrsFit(ext4, std::vector<uint64_t>(208, 20)));
  // An attribute goes whole into one region: 3 of 60 do not fit in 88 +
  // 100 although 180 <= 188.
  EXPECT_FALSE(XattrsFit(std::vector<uint64_t>{88, 100}, {60, 60, 60}));
  // The order counts: the first region with room takes each attribute.
  EXPECT_TRUE(XattrsFit(std::vector<uint64_t>{40, 100}, {40, 100}));
  EXPECT_FALSE(XattrsFit(std::vector<uint64_t>{100, 40}, {40, 100}));
  EXPECT_FALSE(XattrsFit(ext4, {4061}));
  // No regions: unbounded.
  EXPECT_TRUE(XattrsFit({}, std::vector<uint64_t>(100000, 4060)));
}

}  // namespace
}  // namespace memfuse::common
