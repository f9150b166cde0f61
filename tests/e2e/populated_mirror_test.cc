// A mirror that already holds a tree before the first mount (made directly
// on disk, as a user's existing directory would be): the mount shows it
// exactly (names, types, modes, owners, all mtimes, symlink targets, hard
// links, user xattrs, contents), mounting and unmounting leave it as it
// was, and changes to the loaded objects are mirrored to the right files.
#include <stdio.h>
#include <sys/stat.h>
#include <sys/xattr.h>

#include <string>

#include "gtest/gtest.h"
#include "tests/e2e/e2e_fixture.h"
#include "tests/e2e/workload.h"
#include "tests/testing/mount_fixture.h"
#include "tests/testing/tree_compare.h"

namespace memfuse::testing {
namespace {

using PopulatedMirrorTest = E2eTest;

void PopulateMirror(const std::string& mirror) {
  ASSERT_EQ(mkdir(mirror.c_str(), 0755), 0);
  Ops ops(mirror);
  PopulateNativeTree(ops);
  ASSERT_EQ(ops.failures(), 0) << "populating the mirror on disk failed";
}

TEST_F(PopulatedMirrorTest, MountShowsTheMirrorExactly) {
  ASSERT_NO_FATAL_FAILURE(PopulateMirror(mirror()));
  std::string before = TempPath("before");
  absl::Status copied = CopyTree(mirror(), before);
  ASSERT_TRUE(copied.ok()) << copied;
  ASSERT_TRUE(TreesEqual(before, mirror(), ExactCompareOptions()))
      << "cp -a does not preserve what the comparison checks";

  absl::Status started = Mount();
  ASSERT_TRUE(started.ok()) << started;
  EXPECT_TRUE(TreesEqual(mirror(), mount(), ExactCompareOptions()));

  ASSERT_TRUE(CleanExit(Unmount()));
  EXPECT_TRUE(TreesEqual(before, mirror(), ExactCompareOptions()))
      << "mounting and unmounting changed the mirror";
}

TEST_F(PopulatedMirrorTest, ChangesToLoadedObjectsReachTheirFiles) {
  ASSERT_NO_FATAL_FAILURE(PopulateMirror(mirror()));
  std::string reference = TempPath("reference");
  absl::Status copied = CopyTree(mirror(), reference);
  ASSERT_TRUE(copied.ok()) << copied;

  absl::Status started = Mount();
  ASSERT_TRUE(started.ok()) << started;

  // Each call names objects that were loaded, not created, by the daemon.
  auto change = [](Ops& o) {
    o.PWrite("docs/a/five-mib", 2 * kMiB + 3, "overwritten after load");
    o.PWrite("docs/linked", 0, "THREE");  // all three names
    o.Rename("docs/a", "moved-a");        // with b/c and a hard link inside
    o.WriteFile("moved-a/b/c/new", "created in a loaded directory");
    o.Unlink("shared/link3");
    o.Truncate("sparse", kMiB);
    o.Chmod("docs/readme.txt", 0600);
    o.Chown("moved-a/b", 2000, 2000);
    o.SetXattr("docs/readme.txt", "user.author", "replaced", XATTR_REPLACE);
    o.RemoveXattr("empty", "user.empty");
    o.Rename("docs/sym", "docs/sym-renamed");
    o.Rename("name with spaces", "exec", RENAME_EXCHANGE);
    o.Rmdir("empty-dir");
    o.SetTimes("moved-a/five-mib", 1700000000, 7);
  };
  Ops reference_ops(reference);
  change(reference_ops);
  ASSERT_EQ(reference_ops.failures(), 0);
  Ops on_mount(mount());
  ASSERT_TRUE(RunBounded("changes on the mount", kWorkloadTimeout,
                         [&] { change(on_mount); }));
  ASSERT_EQ(on_mount.failures(), 0);

  ASSERT_TRUE(MirrorCaughtUp());
  EXPECT_TRUE(TreesEqual(mount(), mirror(), MirrorCompareOptions()));
  EXPECT_TRUE(TreesEqual(reference, mirror(), ReferenceCompareOptions()));
}

}  // namespace
}  // namespace memfuse::testing
