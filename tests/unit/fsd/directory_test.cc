#include "fsd/directory.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace memfuse::fsd {
namespace {

std::vector<std::string> NamesAfter(const Directory& dir, uint64_t cookie) {
  std::vector<std::string> names;
  for (auto it = dir.After(cookie); it != dir.end(); ++it) {
    names.push_back(it->second.name);
  }
  return names;
}

TEST(DirectoryTest, FindAddRemoveReplace) {
  Directory dir;
  EXPECT_EQ(dir.Find("a"), 0u);
  dir.Add("a", 10);
  dir.Add("b", 11);
  EXPECT_EQ(dir.Find("a"), 10u);
  EXPECT_EQ(dir.size(), 2u);
  dir.Replace("a", 12);
  EXPECT_EQ(dir.Find("a"), 12u);
  dir.Remove("a");
  EXPECT_EQ(dir.Find("a"), 0u);
  EXPECT_EQ(dir.Find("b"), 11u);
  dir.Remove("b");
  EXPECT_TRUE(dir.empty());
}

TEST(DirectoryTest, CookiesSurviveRemovalOfOtherEntries) {
  Directory dir;
  for (int i = 0; i < 100; ++i) dir.Add("f" + std::to_string(i), 100 + i);
  // A reader has consumed the first 10 entries; then entries before and
  // after its position disappear and new ones arrive.
  auto it = dir.After(Directory::kFirstCookie - 1);
  for (int i = 0; i < 9; ++i) ++it;
  const uint64_t resume = it->first;
  EXPECT_EQ(it->second.name, "f9");
  for (int i = 0; i < 10; ++i) dir.Remove("f" + std::to_string(i));
  dir.Remove("f50");
  dir.Add("new", 999);
  std::vector<std::string> rest = NamesAfter(dir, resume);
  ASSERT_EQ(rest.size(), 90u);  // f10..f99 without f50, plus "new"
  EXPECT_EQ(rest.front(), "f10");
  EXPECT_EQ(rest.back(), "new");
}

TEST(DirectoryTest, RemovingWhileIteratingReachesEveryEntry) {
  // What rm -rf does: list a batch, unlink it, list again from the cookie.
  Directory dir;
  for (int i = 0; i < 10000; ++i) dir.Add("e" + std::to_string(i), i + 2);
  uint64_t cookie = 2;
  int removed = 0;
  while (true) {
    std::vector<std::string> batch;
    uint64_t last = cookie;
    for (auto it = dir.After(cookie); it != dir.end() && batch.size() < 37;
         ++it) {
      batch.push_back(it->second.name);
      last = it->first;
    }
    if (batch.empty()) break;
    for (const std::string& name : batch) dir.Remove(name);
    removed += static_cast<int>(batch.size());
    cookie = last;
  }
  EXPECT_EQ(removed, 10000);
  EXPECT_TRUE(dir.empty());
}

}  // namespace
}  // namespace memfuse::fsd
