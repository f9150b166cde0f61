#include "mirrord/backend/id_map.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace memfuse::mirrord {
namespace {

constexpr uint64_t kRoot = 1;
using Components = std::vector<std::string>;

std::string PathOf(const IdMap& map, uint64_t id) {
  absl::StatusOr<IdMap::Location> loc = map.Locate(id);
  if (!loc.ok()) return "<" + std::string(loc.status().message()) + ">";
  std::string path;
  for (const std::string& c : loc->parent) path += c + "/";
  return path + loc->name;
}

TEST(IdMapTest, ResolvesNestedNames) {
  IdMap map(kRoot);
  ASSERT_TRUE(map.AddLink(2, kRoot, "a").ok());
  ASSERT_TRUE(map.AddLink(3, 2, "b").ok());
  ASSERT_TRUE(map.AddLink(4, 3, "f").ok());
  EXPECT_EQ(PathOf(map, 4), "a/b/f");
  absl::StatusOr<IdMap::Location> loc = map.Locate(4);
  EXPECT_EQ(loc->parent, (Components{"a", "b"}));
  EXPECT_EQ(loc->name, "f");
  EXPECT_EQ(PathOf(map, kRoot), "");
}

TEST(IdMapTest, QueuedWriteFollowsItsFileThroughADirectoryRename) {
  // The Rust tool resolved paths when its worker ran; a rename of a parent
  // in between sent the write elsewhere. Ids make that impossible.
  IdMap map(kRoot);
  ASSERT_TRUE(map.AddLink(2, kRoot, "dir").ok());
  ASSERT_TRUE(map.AddLink(3, 2, "sub").ok());
  ASSERT_TRUE(map.AddLink(4, 3, "file").ok());
  ASSERT_TRUE(map.AddLink(5, kRoot, "other").ok());
  ASSERT_TRUE(map.Rename(2, kRoot, "dir", 5, "moved", 0, false).ok());
  ASSERT_TRUE(map.AddLink(6, kRoot, "dir").ok());  // a new "dir" appears
  ASSERT_TRUE(map.AddLink(7, 6, "sub").ok());
  EXPECT_EQ(PathOf(map, 4), "other/moved/sub/file");
}

TEST(IdMapTest, HardLinksAndRemoval) {
  IdMap map(kRoot);
  ASSERT_TRUE(map.AddLink(2, kRoot, "d").ok());
  ASSERT_TRUE(map.AddLink(3, kRoot, "f").ok());
  ASSERT_TRUE(map.AddLink(3, 2, "g").ok());
  ASSERT_TRUE(map.AddLink(3, 2, "g").ok());  // replayed: no duplicate
  ASSERT_TRUE(map.RemoveLink(3, kRoot, "f").ok());
  EXPECT_EQ(PathOf(map, 3), "d/g");  // the other name
  EXPECT_FALSE(map.RemoveLink(3, kRoot, "f").ok());
  ASSERT_TRUE(map.RemoveLink(3, 2, "g").ok());
  EXPECT_FALSE(map.Contains(3));
}

TEST(IdMapTest, RenameReplacingAndExchanging) {
  IdMap map(kRoot);
  ASSERT_TRUE(map.AddLink(2, kRoot, "a").ok());
  ASSERT_TRUE(map.AddLink(3, kRoot, "b").ok());
  ASSERT_TRUE(map.Rename(2, kRoot, "a", kRoot, "b", 3, false).ok());
  EXPECT_EQ(PathOf(map, 2), "b");
  EXPECT_FALSE(map.Contains(3));
  ASSERT_TRUE(map.AddLink(4, kRoot, "d").ok());
  ASSERT_TRUE(map.AddLink(5, 4, "x").ok());
  ASSERT_TRUE(map.Rename(2, kRoot, "b", 4, "x", 5, true).ok());
  EXPECT_EQ(PathOf(map, 2), "d/x");
  EXPECT_EQ(PathOf(map, 5), "b");
}

TEST(IdMapTest, RejectsWhatCannotBe) {
  IdMap map(kRoot);
  ASSERT_TRUE(map.AddLink(2, kRoot, "a").ok());
  ASSERT_TRUE(map.AddLink(3, 2, "b").ok());
  EXPECT_EQ(map.AddLink(4, 99, "x").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(map.AddLink(4, kRoot, "..").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(map.AddLink(4, kRoot, "x/y").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(map.AddLink(kRoot, 2, "root").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(map.Rename(2, kRoot, "a", 3, "loop", 0, false).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(map.Rename(2, kRoot, "wrong", kRoot, "z", 0, false).code(),
            absl::StatusCode::kNotFound);
  ASSERT_TRUE(map.AddLink(4, kRoot, "t").ok());
  EXPECT_EQ(map.Rename(2, kRoot, "wrong", kRoot, "t", 4, false).code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(PathOf(map, 4), "t");  // the target kept its name
  EXPECT_EQ(PathOf(map, 3), "a/b");  // nothing changed
  EXPECT_FALSE(map.Locate(77).ok());
}

TEST(IdMapTest, QueriesAndChecksWithoutChanging) {
  IdMap map(kRoot);
  ASSERT_TRUE(map.AddLink(2, kRoot, "a").ok());
  ASSERT_TRUE(map.AddLink(3, 2, "f").ok());
  ASSERT_TRUE(map.AddLink(3, kRoot, "g").ok());
  EXPECT_TRUE(map.HasLink(3, 2, "f"));
  EXPECT_TRUE(map.HasLink(3, kRoot, "g"));
  EXPECT_FALSE(map.HasLink(3, kRoot, "f"));
  EXPECT_FALSE(map.HasLink(9, kRoot, "g"));
  absl::StatusOr<std::pair<uint64_t, std::string>> first = map.FirstLink(3);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->first, 2u);
  EXPECT_EQ(first->second, "f");
  EXPECT_EQ(map.FirstLink(kRoot).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(map.FirstLink(9).status().code(), absl::StatusCode::kNotFound);

  EXPECT_TRUE(map.CheckRename(3, 2, "f", kRoot, "h", 0, false).ok());
  EXPECT_EQ(map.CheckRename(3, 2, "f", kRoot, "a", 4, false).code(),
            absl::StatusCode::kNotFound);  // 4 is not named "a"
  EXPECT_EQ(map.CheckRename(3, kRoot, "f", kRoot, "h", 0, false).code(),
            absl::StatusCode::kNotFound);  // 3 is not named "f" there
  EXPECT_EQ(map.CheckRename(2, kRoot, "a", 2, "x", 0, false).code(),
            absl::StatusCode::kInvalidArgument);  // below itself
  EXPECT_EQ(map.CheckRename(3, 2, "f", kRoot, "g", 0, true).code(),
            absl::StatusCode::kInvalidArgument);  // exchange without other
  EXPECT_EQ(PathOf(map, 3), "a/f");  // nothing changed

  map.Clear();
  EXPECT_FALSE(map.Contains(2));
  EXPECT_FALSE(map.Contains(3));
  EXPECT_TRUE(map.Contains(kRoot));
  EXPECT_TRUE(map.AddLink(2, kRoot, "again").ok());
}

}  // namespace
}  // namespace memfuse::mirrord
