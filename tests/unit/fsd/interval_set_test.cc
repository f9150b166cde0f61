#include "fsd/interval_set.h"

#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace memfuse::fsd {
namespace {

using Intervals = std::vector<IntervalSet::Interval>;

TEST(IntervalSetTest, MergesOverlappingAndTouching) {
  IntervalSet set;
  set.Add(10, 20);
  set.Add(30, 40);
  EXPECT_EQ(set.ToVector(), (Intervals{{10, 20}, {30, 40}}));
  set.Add(20, 30);  // touches both
  EXPECT_EQ(set.ToVector(), (Intervals{{10, 40}}));
  set.Add(5, 12);
  set.Add(35, 50);
  EXPECT_EQ(set.ToVector(), (Intervals{{5, 50}}));
  EXPECT_EQ(set.bytes(), 45u);
  set.Add(7, 9);  // inside
  EXPECT_EQ(set.ToVector(), (Intervals{{5, 50}}));
  set.Add(0, 0);  // empty
  EXPECT_EQ(set.size(), 1u);
}

TEST(IntervalSetTest, HotRangeRewrittenStaysOneInterval) {
  IntervalSet set;
  for (int i = 0; i < 1000; ++i) set.Add(4096, 8192);
  EXPECT_EQ(set.ToVector(), (Intervals{{4096, 8192}}));
  EXPECT_EQ(set.bytes(), 4096u);
}

TEST(IntervalSetTest, RemoveSplitsAndTruncates) {
  IntervalSet set;
  set.Add(0, 100);
  set.Remove(40, 60);
  EXPECT_EQ(set.ToVector(), (Intervals{{0, 40}, {60, 100}}));
  EXPECT_FALSE(set.Contains(50));
  EXPECT_TRUE(set.Contains(39));
  EXPECT_TRUE(set.Contains(60));
  EXPECT_FALSE(set.Contains(100));
  set.Add(200, 300);
  set.TruncateTo(80);
  EXPECT_EQ(set.ToVector(), (Intervals{{0, 40}, {60, 80}}));
  EXPECT_EQ(set.bytes(), 60u);
  set.Remove(0, 1000);
  EXPECT_TRUE(set.empty());
  EXPECT_EQ(set.bytes(), 0u);
}

TEST(IntervalSetTest, AgreesWithAByteModel) {
  // Random adds and removes against a plain bitmap of 512 bytes.
  std::mt19937 rng(42);
  IntervalSet set;
  std::vector<bool> model(512, false);
  for (int step = 0; step < 5000; ++step) {
    const uint64_t a = rng() % 512;
    const uint64_t b = a + rng() % (512 - a) + 1;
    if (rng() % 3 == 0) {
      set.Remove(a, b);
      for (uint64_t i = a; i < b; ++i) model[i] = false;
    } else {
      set.Add(a, b);
      for (uint64_t i = a; i < b; ++i) model[i] = true;
    }
    uint64_t bytes = 0;
    for (uint64_t i = 0; i < 512; ++i) {
      ASSERT_EQ(set.Contains(i), model[i]) << "step " << step << " byte " << i;
      bytes += model[i];
    }
    ASSERT_EQ(set.bytes(), bytes);
    // Merged: no two intervals touch.
    const Intervals v = set.ToVector();
    for (size_t i = 1; i < v.size(); ++i) ASSERT_LT(v[i - 1].second, v[i].first);
  }
}

}  // namespace
}  // namespace memfuse::fsd
