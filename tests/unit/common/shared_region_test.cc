#include "common/shared_region.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <optional>
#include <vector>

#include "gtest/gtest.h"

namespace memfuse::common {
namespace {

constexpr uint64_t kPage = kRegionAlign;

TEST(RegionAllocatorTest, HandsOutAlignedRangesUntilFull) {
  RegionAllocator ranges(8 * kPage);
  std::optional<uint64_t> a = ranges.Allocate(1);
  std::optional<uint64_t> b = ranges.Allocate(kPage + 1);  // two pages
  std::optional<uint64_t> c = ranges.Allocate(5 * kPage);
  ASSERT_TRUE(a && b && c);
  EXPECT_EQ(*a, 0u);
  EXPECT_EQ(*b, kPage);
  EXPECT_EQ(*c, 3 * kPage);
  EXPECT_EQ(ranges.used(), 8 * kPage);
  EXPECT_FALSE(ranges.Allocate(1));  // full: the caller sends inline
  EXPECT_FALSE(RegionAllocator(kPage).Allocate(kPage + 1));  // never fits
}

TEST(RegionAllocatorTest, SpaceComesBackOldestFirstAndWrapsAround) {
  RegionAllocator ranges(8 * kPage);
  uint64_t a = *ranges.Allocate(3 * kPage);
  uint64_t b = *ranges.Allocate(3 * kPage);
  // Freed out of order: b's room waits for a.
  ranges.Free(b);
  EXPECT_EQ(ranges.used(), 3 * kPage);
  EXPECT_FALSE(ranges.Allocate(3 * kPage));  // only 2 pages at the end
  ranges.Free(a);
  EXPECT_EQ(ranges.used(), 0u);
  // Empty again: starts over at 0.
  EXPECT_EQ(*ranges.Allocate(6 * kPage), 0u);
  uint64_t d = *ranges.Allocate(2 * kPage);
  EXPECT_EQ(d, 6 * kPage);
  // Wrap-around: the oldest (at 0) freed makes room at the start while
  // the newest stays at the end.
  ranges.Free(0);
  std::optional<uint64_t> e = ranges.Allocate(4 * kPage);
  ASSERT_TRUE(e);
  EXPECT_EQ(*e, 0u);
  std::optional<uint64_t> f = ranges.Allocate(2 * kPage);
  ASSERT_TRUE(f);
  EXPECT_EQ(*f, 4 * kPage);
  EXPECT_FALSE(ranges.Allocate(1));  // [6, 8) still holds d
  ranges.Free(d);
  EXPECT_FALSE(ranges.Allocate(3 * kPage));  // 2 pages at the end only
  EXPECT_EQ(*ranges.Allocate(2 * kPage), 6 * kPage);
}

TEST(SharedRegionTest, TheAgentSeesWhatFsdWrites) {
  absl::StatusOr<std::unique_ptr<SharedRegion>> region =
      SharedRegion::Create(3 * kPage - 5);
  ASSERT_TRUE(region.ok()) << region.status();
  EXPECT_EQ((*region)->size(), 3 * kPage);
  // Sealed: fsd itself can no longer shrink or grow it.
  EXPECT_NE(ftruncate((*region)->fd(), kPage), 0);
  EXPECT_NE(ftruncate((*region)->fd(), 4 * kPage), 0);

  absl::StatusOr<std::unique_ptr<MappedRegion>> mapped =
      MappedRegion::Map(UniqueFd(fcntl((*region)->fd(), F_DUPFD_CLOEXEC, 0)));
  ASSERT_TRUE(mapped.ok()) << mapped.status();
  EXPECT_EQ((*mapped)->size(), 3 * kPage);
  std::memcpy((*region)->data() + kPage, "block", 5);
  absl::StatusOr<absl::string_view> view = (*mapped)->View(kPage, 5);
  ASSERT_TRUE(view.ok()) << view.status();
  EXPECT_EQ(*view, "block");
  EXPECT_TRUE((*mapped)->View(3 * kPage, 0).ok());
  EXPECT_FALSE((*mapped)->View(3 * kPage - 1, 2).ok());
  EXPECT_FALSE((*mapped)->View(3 * kPage + 1, 0).ok());
  EXPECT_FALSE((*mapped)->View(1, UINT64_MAX).ok());
}

TEST(SharedRegionTest, FsdSeesWhatTheAgentReadsIntoIt) {
  absl::StatusOr<std::unique_ptr<SharedRegion>> region =
      SharedRegion::Create(2 * kPage);
  ASSERT_TRUE(region.ok()) << region.status();
  absl::StatusOr<std::unique_ptr<MappedRegion>> mapped =
      MappedRegion::Map(UniqueFd(fcntl((*region)->fd(), F_DUPFD_CLOEXEC, 0)));
  ASSERT_TRUE(mapped.ok()) << mapped.status();
  absl::StatusOr<absl::Span<char>> out = (*mapped)->MutableView(kPage, 5);
  ASSERT_TRUE(out.ok()) << out.status();
  std::memcpy(out->data(), "fetch", 5);
  EXPECT_EQ(std::string_view((*region)->data() + kPage, 5), "fetch");
  EXPECT_FALSE((*mapped)->MutableView(2 * kPage - 1, 2).ok());
  EXPECT_FALSE((*mapped)->MutableView(1, UINT64_MAX).ok());
}

TEST(SharedRegionTest, TheAgentRefusesARegionThatCanShrink) {
  // Unsealed, a region could be truncated under the agent's mapping and
  // make it fault.
  UniqueFd memfd(memfd_create("unsealed", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  ASSERT_TRUE(memfd.valid());
  ASSERT_EQ(ftruncate(memfd.get(), kPage), 0);
  ASSERT_EQ(fcntl(memfd.get(), F_ADD_SEALS, F_SEAL_GROW), 0);
  EXPECT_FALSE(MappedRegion::Map(std::move(memfd)).ok());
  // Not a memfd at all.
  UniqueFd file(open("/dev/null", O_RDONLY | O_CLOEXEC));
  EXPECT_FALSE(MappedRegion::Map(std::move(file)).ok());
}

}  // namespace
}  // namespace memfuse::common
