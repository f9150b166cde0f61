// The daemon's life cycle as a user sees it: SIGTERM, SIGINT and
// `fusermount3 -u` unmount cleanly with exit code 0, and bad command lines
// are refused with exit code 2 before anything is mounted.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "tests/testing/mount_fixture.h"
#include "tests/testing/posix_compare.h"

namespace memfuse::testing {
namespace {

std::unique_ptr<MountedFs> StartOrNull(const std::vector<std::string>& args) {
  absl::StatusOr<std::unique_ptr<MountedFs>> fs = MountedFs::Start(args);
  EXPECT_TRUE(fs.ok()) << fs.status();
  return fs.ok() ? std::move(*fs) : nullptr;
}

void ExpectCleanExitOn(int sig) {
  std::unique_ptr<MountedFs> fs = StartOrNull({});
  ASSERT_NE(fs, nullptr);
  ASSERT_EQ(WriteFile(fs->path() + "/f", "data"), Outcome{});
  std::optional<ExitInfo> exit = fs->SignalAndWait(sig);
  ASSERT_TRUE(exit.has_value()) << "no exit within 10 s of signal " << sig;
  EXPECT_TRUE(exit->exited && exit->code_or_signal == 0)
      << ToString(*exit) << "\n"
      << fs->Log();
  EXPECT_FALSE(fs->IsMounted()) << "still mounted after exit";
}

TEST(LifecycleTest, SigtermUnmountsAndExitsZero) {
  MEMFUSE_REQUIRE_FUSE();
  ExpectCleanExitOn(SIGTERM);
}

TEST(LifecycleTest, SigintUnmountsAndExitsZero) {
  MEMFUSE_REQUIRE_FUSE();
  ExpectCleanExitOn(SIGINT);
}

TEST(LifecycleTest, FusermountUnmountExitsZero) {
  MEMFUSE_REQUIRE_FUSE();
  std::unique_ptr<MountedFs> fs = StartOrNull({});
  ASSERT_NE(fs, nullptr);
  absl::StatusOr<ExitInfo> exit = fs->UnmountAndWait();
  ASSERT_TRUE(exit.ok()) << exit.status() << "\n" << fs->Log();
  EXPECT_TRUE(exit->exited && exit->code_or_signal == 0)
      << ToString(*exit) << "\n"
      << fs->Log();
  EXPECT_FALSE(fs->IsMounted());
}

// The kernel's dirty-page allowance for the mount (its bdi's max_bytes,
// named by the device number in mountinfo) is raised from the FUSE default
// of 1% of the write-back cache to min(cache size, 512 MiB).
uint64_t MountWritebackLimit(const std::string& path) {
  std::ifstream mountinfo("/proc/self/mountinfo");
  std::string line, device;
  while (std::getline(mountinfo, line)) {
    std::vector<std::string> fields = absl::StrSplit(line, ' ');
    if (fields.size() > 4 && fields[4] == path) device = fields[2];
  }
  std::ifstream knob("/sys/class/bdi/" + device + "/max_bytes");
  uint64_t bytes = 0;
  knob >> bytes;
  return bytes;
}

TEST(LifecycleTest, RaisesKernelWritebackLimitToTheCache) {
  MEMFUSE_REQUIRE_FUSE();
  std::unique_ptr<MountedFs> small = StartOrNull({"--cache-size", "64"});
  ASSERT_NE(small, nullptr);
  std::unique_ptr<MountedFs> big = StartOrNull({"--cache-size", "4096"});
  ASSERT_NE(big, nullptr);
  // The kernel stores the limit as a ratio, so it reads back rounded.
  EXPECT_NEAR(static_cast<double>(MountWritebackLimit(small->path())),
              64.0 * (1 << 20), 1 << 20);
  EXPECT_NEAR(static_cast<double>(MountWritebackLimit(big->path())),
              512.0 * (1 << 20), 1 << 20);
}

TEST(LifecycleTest, TwoMountsAreIndependent) {
  MEMFUSE_REQUIRE_FUSE();
  std::unique_ptr<MountedFs> a = StartOrNull({});
  std::unique_ptr<MountedFs> b = StartOrNull({});
  ASSERT_TRUE(a != nullptr && b != nullptr);
  ASSERT_EQ(WriteFile(a->path() + "/only-in-a", "a"), Outcome{});
  EXPECT_EQ(Stat(b->path() + "/only-in-a").err, ENOENT);
}

// Bad input: exit code 2 and one line naming the problem, nothing mounted.
void ExpectRefused(const std::vector<std::string>& args,
                   absl::string_view must_mention) {
  std::vector<std::string> argv = {MemFuseBinary()};
  argv.insert(argv.end(), args.begin(), args.end());
  absl::StatusOr<CommandResult> r = RunCommand(argv, std::chrono::seconds(10));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->exit.exited && r->exit.code_or_signal == 2)
      << absl::StrJoin(argv, " ") << ": " << ToString(r->exit) << "\n"
      << r->output;
  EXPECT_TRUE(absl::StrContains(r->output, must_mention))
      << "message should name \"" << must_mention << "\": " << r->output;
}

class BadCommandLineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<TempDir> dir = TempDir::Create("memfuse-badflags");
    ASSERT_TRUE(dir.ok()) << dir.status();
    dir_.emplace(std::move(*dir));
  }
  void TearDown() override {
    // Nothing may have been mounted on it; if something was (a bug), undo it
    // so the temp dir can be removed.
    if (dir_ && IsMountPoint(dir_->path())) {
      ADD_FAILURE() << "a refused command line mounted " << dir_->path();
      (void)RunCommand({"fusermount3", "-u", "-z", dir_->path()},
                       std::chrono::seconds(10));
    }
  }
  std::string dir() const { return dir_->path(); }

  std::optional<TempDir> dir_;
};

TEST_F(BadCommandLineTest, MissingMountPoint) {
  ExpectRefused({dir() + "/does-not-exist"}, "does-not-exist");
}

TEST_F(BadCommandLineTest, MountPointIsAFile) {
  std::string file = dir() + "/file";
  ASSERT_EQ(WriteFile(file, "x"), Outcome{});
  ExpectRefused({file}, "file");
}

TEST_F(BadCommandLineTest, BlockSizeNotPowerOfTwoMultipleOf4) {
  ExpectRefused({dir(), "--block-size", "3"}, "block-size");
  ExpectRefused({dir(), "--block-size", "12"}, "block-size");
  ExpectRefused({dir(), "--block-size", "0"}, "block-size");
}

TEST_F(BadCommandLineTest, NonNumericCacheSize) {
  ExpectRefused({dir(), "--cache-size", "lots"}, "cache-size");
}

// A negative size once wrapped to a cache of 2^64 - 5 MB and mounted.
TEST_F(BadCommandLineTest, NegativeOrOverflowingNumbers) {
  ExpectRefused({dir(), "--cache-size", "-5"}, "--cache-size");
  ExpectRefused({dir(), "--cache-size", "99999999999999999999"},
                "--cache-size");
  ExpectRefused({dir(), "--cache-size", "17592186044416"}, "--cache-size");
  ExpectRefused({dir(), "--cache-max-write-size", "-1"},
                "--cache-max-write-size");
  ExpectRefused({dir(), "--block-size", "12abc"}, "--block-size");
}

TEST_F(BadCommandLineTest, UnknownFlag) {
  ExpectRefused({dir(), "--no-such-flag"}, "no-such-flag");
}

TEST(CommandLineTest, HelpExitsZero) {
  absl::StatusOr<CommandResult> r =
      RunCommand({MemFuseBinary(), "--help"}, std::chrono::seconds(10));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->exit.exited && r->exit.code_or_signal == 0)
      << ToString(r->exit);
  EXPECT_TRUE(absl::StrContains(r->output, "--cache-size")) << r->output;
}

}  // namespace
}  // namespace memfuse::testing
