// A workload with every kind of mutation, then the mirror compared with the
// mount; and the mirror surviving an unmount and serving a second mount.
//
// Oracles: the mount itself once the barrier returned (everything the
// mirror must equal, file mtimes included), and a native reference
// directory that received the same workload (what both must hold, except
// for times each side chose itself).
#include <sys/stat.h>

#include <string>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_fixture.h"
#include "tests/e2e/workload.h"
#include "tests/testing/mount_fixture.h"
#include "tests/testing/tree_compare.h"

namespace memfuse::testing {
namespace {

using MirrorWorkloadTest = E2eTest;

TEST_F(MirrorWorkloadTest, MirrorEqualsMountAfterEveryKindOfMutation) {
  absl::Status started = Mount();
  ASSERT_TRUE(started.ok()) << started;

  Ops reference(TempPath("reference"));
  ASSERT_EQ(mkdir(reference.root().c_str(), 0755), 0);
  RunRichWorkload(reference);
  ASSERT_EQ(reference.failures(), 0) << "the workload fails on a native dir";

  Ops on_mount(mount());
  ASSERT_TRUE(RunBounded("the workload on the mount", kWorkloadTimeout,
                         [&] { RunRichWorkload(on_mount); }));
  ASSERT_EQ(on_mount.failures(), 0);

  ASSERT_TRUE(MirrorCaughtUp());
  EXPECT_TRUE(TreesEqual(mount(), mirror(), MirrorCompareOptions()));
  EXPECT_TRUE(TreesEqual(reference.root(), mount(), ReferenceCompareOptions()))
      << "the mount itself does not hold what a native directory holds";
  // The agent it spawned took file data from the shared region (the
  // socket-mode tests cover data sent inline).
  EXPECT_TRUE(absl::StrContains(fs().Log(), "file data through a shared"))
      << fs().Log();
}

TEST_F(MirrorWorkloadTest, RemountServesTheMirrorAndKeepsMirroring) {
  // Small blocks the first time, the default the second: the mirror is
  // plain files, independent of the daemon's block size.
  absl::Status started = Mount({"--block-size", "64"});
  ASSERT_TRUE(started.ok()) << started;

  Ops reference(TempPath("reference"));
  ASSERT_EQ(mkdir(reference.root().c_str(), 0755), 0);
  RunRichWorkload(reference);
  ASSERT_EQ(reference.failures(), 0);
  {
    Ops on_mount(mount());
    ASSERT_TRUE(RunBounded("the workload on the mount", kWorkloadTimeout,
                           [&] { RunRichWorkload(on_mount); }));
    ASSERT_EQ(on_mount.failures(), 0);
  }
  ASSERT_TRUE(MirrorCaughtUp());
  EXPECT_TRUE(TreesEqual(mount(), mirror(), MirrorCompareOptions()));

  // What the mirror holds with the mount live; the unmount must not change
  // it (nothing was pending), and the next mount must show exactly it.
  std::string snapshot = TempPath("snapshot");
  absl::Status copied = CopyTree(mirror(), snapshot);
  ASSERT_TRUE(copied.ok()) << copied;

  ASSERT_TRUE(CleanExit(Unmount()));
  EXPECT_TRUE(TreesEqual(snapshot, mirror(), ExactCompareOptions()))
      << "the unmount changed the mirror";
  EXPECT_TRUE(
      TreesEqual(reference.root(), mirror(), ReferenceCompareOptions()));

  started = Mount();
  ASSERT_TRUE(started.ok()) << started;
  EXPECT_TRUE(TreesEqual(mirror(), mount(), ExactCompareOptions()))
      << "the second mount does not show the mirror as it is";
  EXPECT_TRUE(TreesEqual(reference.root(), mount(), ReferenceCompareOptions()));

  // Changes on the second mount reach the mirror too.
  RunFollowUpWorkload(reference);
  ASSERT_EQ(reference.failures(), 0);
  {
    Ops on_mount(mount());
    ASSERT_TRUE(RunBounded("the follow-up workload on the mount",
                           kWorkloadTimeout,
                           [&] { RunFollowUpWorkload(on_mount); }));
    ASSERT_EQ(on_mount.failures(), 0);
  }
  ASSERT_TRUE(MirrorCaughtUp());
  EXPECT_TRUE(TreesEqual(mount(), mirror(), MirrorCompareOptions()));
  EXPECT_TRUE(TreesEqual(reference.root(), mount(), ReferenceCompareOptions()));

  ASSERT_TRUE(CleanExit(Unmount()));
  EXPECT_TRUE(
      TreesEqual(reference.root(), mirror(), ReferenceCompareOptions()));
}

}  // namespace
}  // namespace memfuse::testing
