// fsd's figures for operators (fsd/status_report.h): what the status xattr
// shows, from a real Tree and MutationLog.
#include "fsd/status_report.h"

#include <sys/stat.h>

#include <string>

#include "gtest/gtest.h"

namespace memfuse::fsd {
namespace {

constexpr uint64_t kBlock = 4096;

TEST(StatusReportTest, ShowsTheCacheTheTreeAndTheQueueUnderStableNames) {
  BlockBudget budget(64 * kBlock);
  MutationLog log(kBlock, 8 * kBlock);
  Tree tree(kBlock, &budget);
  tree.SetMirrorLog(&log);
  const struct stat f =
      *tree.MakeNode(FUSE_ROOT_ID, "f", S_IFREG | 0644, 0, {}, {});
  ASSERT_TRUE(tree.Open(f.st_ino, 0).ok());
  ASSERT_EQ(*tree.Write(f.st_ino, 0, "abc", 3), 3u);

  const StatusReport report = StatusReport::Gather(&tree, &budget, &log);
  ASSERT_TRUE(report.cache.has_value());
  EXPECT_EQ(report.cache->limit, 64 * kBlock);
  EXPECT_GT(report.cache->bytes, 0u);
  ASSERT_TRUE(report.mirror.has_value());
  EXPECT_EQ(report.mirror->mutations, 2u);  // the create and the write
  EXPECT_GT(report.mirror->dirty_bytes, 0u);
  EXPECT_EQ(report.metadata.inodes, 2u);

  const std::string text = report.Text();
  for (const char* line :
       {"cache_limit 262144\n", "dirty_limit 32768\n", "inodes 2\n",
        "unacked_changes 2\n", "dir_entries 1\n"}) {
    EXPECT_NE(text.find(line), std::string::npos) << line << " in\n" << text;
  }
  log.Shutdown();
}

TEST(StatusReportTest, WithoutAMirrorOrATreeWalkThoseFiguresAreLeftOut) {
  BlockBudget budget(64 * kBlock);
  Tree tree(kBlock, &budget);
  ASSERT_TRUE(tree.MakeNode(FUSE_ROOT_ID, "d", S_IFDIR | 0755, 0, {}, {}).ok());
  const StatusReport report = StatusReport::Gather(&tree, nullptr, nullptr,
                                                   /*walk_tree=*/false);
  EXPECT_FALSE(report.cache.has_value());
  EXPECT_FALSE(report.mirror.has_value());
  EXPECT_EQ(report.metadata.inodes, 0u);
  const std::string text = report.Text();
  EXPECT_EQ(text.find("unacked_changes"), std::string::npos) << text;
  EXPECT_EQ(text.find("cache_limit"), std::string::npos) << text;
}

}  // namespace
}  // namespace memfuse::fsd
