#include "mirrord/backend/fd_cache.h"

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>

#include "gtest/gtest.h"

namespace memfuse::mirrord {
namespace {

common::UniqueFd OpenNull() {
  return common::UniqueFd(open("/dev/null", O_RDONLY | O_CLOEXEC));
}

size_t OpenDescriptors() {
  size_t n = 0;
  for ([[maybe_unused]] const auto& e :
       std::filesystem::directory_iterator("/proc/self/fd")) {
    ++n;
  }
  return n;
}

bool IsOpen(int fd) { return fcntl(fd, F_GETFD) != -1; }

TEST(FdCacheTest, HoldsAtMostCapacityDescriptors) {
  const size_t before = OpenDescriptors();
  {
    FdCache cache(10);
    for (uint64_t id = 1; id <= 1000; ++id) cache.Put(id, OpenNull());
    EXPECT_EQ(cache.size(), 10u);
    EXPECT_LE(OpenDescriptors(), before + 10);
  }
  EXPECT_EQ(OpenDescriptors(), before);  // all closed with the cache
}

TEST(FdCacheTest, EvictsTheLeastRecentlyUsed) {
  FdCache cache(2);
  cache.Put(1, OpenNull());
  cache.Put(2, OpenNull());
  ASSERT_NE(cache.Get(1), nullptr);  // 2 is now the oldest
  cache.Put(3, OpenNull());
  EXPECT_NE(cache.Get(1), nullptr);
  EXPECT_EQ(cache.Get(2), nullptr);
  EXPECT_NE(cache.Get(3), nullptr);
}

TEST(FdCacheTest, AnEvictedDescriptorInUseStaysOpenUntilReleased) {
  FdCache cache(1);
  FdCache::SharedFd in_use = cache.Put(1, OpenNull());
  const int fd = in_use->get();
  cache.Put(2, OpenNull());  // evicts 1
  EXPECT_EQ(cache.Get(1), nullptr);
  EXPECT_TRUE(IsOpen(fd));
  in_use.reset();
  EXPECT_FALSE(IsOpen(fd));
}

TEST(FdCacheTest, PutReplacesAndEraseCloses) {
  FdCache cache(4);
  const int first = cache.Put(7, OpenNull())->get();
  const int second = cache.Put(7, OpenNull())->get();
  EXPECT_FALSE(IsOpen(first));
  EXPECT_EQ(cache.size(), 1u);
  EXPECT_EQ(cache.Get(7)->get(), second);
  cache.Erase(7);
  EXPECT_EQ(cache.Get(7), nullptr);
  EXPECT_FALSE(IsOpen(second));
  cache.Erase(99);  // absent: nothing happens
}

TEST(FdCacheTest, ClearClosesEverythingNotInUse) {
  FdCache cache(4);
  const int a = cache.Put(1, OpenNull())->get();
  FdCache::SharedFd held = cache.Put(2, OpenNull());
  cache.Clear();
  EXPECT_EQ(cache.size(), 0u);
  EXPECT_EQ(cache.Get(1), nullptr);
  EXPECT_FALSE(IsOpen(a));
  EXPECT_TRUE(IsOpen(held->get()));  // closed when its user lets go
}

}  // namespace
}  // namespace memfuse::mirrord
