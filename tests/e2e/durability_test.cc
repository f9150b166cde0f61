// What a program is promised about the mirror: fsync(2)/fdatasync(2) of a
// file return only once its data (and the directories leading to it) are in
// the mirror, read here straight from disk with no barrier or unmount in
// between; and SIGTERM drains everything written before the daemon exits.
#include <fcntl.h>
#include <linux/falloc.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_fixture.h"
#include "tests/e2e/workload.h"
#include "tests/testing/mount_fixture.h"
#include "tests/testing/posix_compare.h"

namespace memfuse::testing {
namespace {

using DrainTest = E2eTest;

std::string ReadNative(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Success when the native file `path` holds exactly `want`.
::testing::AssertionResult NativeFileHolds(const std::string& path,
                                           const std::string& want) {
  struct stat st;
  if (lstat(path.c_str(), &st) != 0) {
    return ::testing::AssertionFailure()
           << path << " is not in the mirror: " << ErrnoName(errno);
  }
  if (!S_ISREG(st.st_mode)) {
    return ::testing::AssertionFailure() << path << " is not a regular file";
  }
  std::string got = ReadNative(path);
  if (got == want) return ::testing::AssertionSuccess();
  size_t i = 0;
  while (i < got.size() && i < want.size() && got[i] == want[i]) ++i;
  return ::testing::AssertionFailure()
         << path << " holds " << got.size() << " bytes, expected "
         << want.size() << "; first difference at offset " << i;
}

class SyncingTest : public E2eTest {
 protected:
  // fsync(2) (or fdatasync(2)) of `fd` on a bounded thread; adds a failure
  // if it fails or hangs.
  void Sync(int fd, bool data_only) {
    const char* name = data_only ? "fdatasync" : "fsync";
    ASSERT_TRUE(RunBounded(name, kBarrierTimeout, [&] {
      int r = data_only ? fdatasync(fd) : fsync(fd);
      EXPECT_EQ(r, 0) << name << ": " << ErrnoName(errno);
    }));
  }

  int OpenOnMount(const std::string& rel) {
    int fd = open(absl::StrCat(mount(), "/", rel).c_str(),
                  O_CREAT | O_RDWR | O_CLOEXEC, 0644);
    EXPECT_GE(fd, 0) << rel << ": " << ErrnoName(errno);
    return fd;
  }

  void PWrite(int fd, const std::string& data, off_t offset) {
    ASSERT_EQ(pwrite(fd, data.data(), data.size(), offset),
              static_cast<ssize_t>(data.size()))
        << ErrnoName(errno);
  }

  void MkdirOnMount(const std::string& rel) {
    ASSERT_EQ(mkdir(absl::StrCat(mount(), "/", rel).c_str(), 0755), 0)
        << rel << ": " << ErrnoName(errno);
  }
};

using FsyncDurabilityTest = SyncingTest;

TEST_F(FsyncDurabilityTest, FsyncAndFdatasyncPutTheBytesInTheMirror) {
  absl::Status started = Mount();
  ASSERT_TRUE(started.ok()) << started;
  int fd = OpenOnMount("f");
  ASSERT_GE(fd, 0);
  UniqueFd closer(fd);

  std::string want = PatternBytes(21, kMiB + 77);
  ASSERT_NO_FATAL_FAILURE(PWrite(fd, want, 0));
  ASSERT_NO_FATAL_FAILURE(Sync(fd, /*data_only=*/false));
  EXPECT_TRUE(NativeFileHolds(mirror() + "/f", want)) << "after fsync";

  std::string patch = "changed, then fdatasync'ed";
  ASSERT_NO_FATAL_FAILURE(PWrite(fd, patch, 4093));
  want.replace(4093, patch.size(), patch);
  ASSERT_NO_FATAL_FAILURE(Sync(fd, /*data_only=*/true));
  EXPECT_TRUE(NativeFileHolds(mirror() + "/f", want)) << "after fdatasync";

  // Extending past a hole, then fdatasync (the size is data here).
  ASSERT_NO_FATAL_FAILURE(PWrite(fd, "tail", 3 * kMiB));
  want.resize(3 * kMiB, '\0');
  want += "tail";
  ASSERT_NO_FATAL_FAILURE(Sync(fd, /*data_only=*/true));
  EXPECT_TRUE(NativeFileHolds(mirror() + "/f", want))
      << "after extending and fdatasync";
}

// fallocate(PUNCH_HOLE) reaches a local mirror as a hole (SEEK_HOLE finds
// it), not as zeros written over allocated blocks.
TEST_F(FsyncDurabilityTest, APunchedHoleReachesTheMirrorAsAHole) {
  // The mirror's filesystem must be able to punch and to report holes.
  {
    const std::string probe = TempPath("probe");
    UniqueFd fd(open(probe.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0644));
    ASSERT_TRUE(fd.valid()) << ErrnoName(errno);
    const std::string bytes = PatternBytes(1, 3 * 65536);
    ASSERT_EQ(pwrite(fd.get(), bytes.data(), bytes.size(), 0),
              static_cast<ssize_t>(bytes.size()));
    ASSERT_EQ(fsync(fd.get()), 0);
    if (fallocate(fd.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 65536,
                  65536) != 0 ||
        lseek(fd.get(), 0, SEEK_HOLE) != 65536) {
      GTEST_SKIP() << "the filesystem of " << probe
                   << " cannot punch holes or does not report them";
    }
  }
  absl::Status started = Mount();
  ASSERT_TRUE(started.ok()) << started;
  int fd = OpenOnMount("f");
  ASSERT_GE(fd, 0);
  UniqueFd closer(fd);
  std::string want = PatternBytes(33, 6 * kMiB);
  ASSERT_NO_FATAL_FAILURE(PWrite(fd, want, 0));
  ASSERT_NO_FATAL_FAILURE(Sync(fd, /*data_only=*/false));

  // Blocks 2 to 4 (of 1 MiB) whole, and a page of each block beside them.
  const off_t offset = 2 * kMiB - 4096;
  const off_t length = 3 * kMiB + 2 * 4096;
  ASSERT_EQ(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset,
                      length),
            0)
      << ErrnoName(errno);
  want.replace(offset, length, std::string(length, '\0'));
  ASSERT_NO_FATAL_FAILURE(Sync(fd, /*data_only=*/false));

  std::string on_mount(want.size(), 'x');
  ASSERT_EQ(pread(fd, on_mount.data(), on_mount.size(), 0),
            static_cast<ssize_t>(want.size()));
  EXPECT_TRUE(on_mount == want) << "the mount's bytes differ";
  EXPECT_TRUE(NativeFileHolds(mirror() + "/f", want));
  UniqueFd mirrored(open((mirror() + "/f").c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(mirrored.valid()) << ErrnoName(errno);
  EXPECT_EQ(lseek(mirrored.get(), 0, SEEK_HOLE), offset)
      << "no hole in the mirror file";
  EXPECT_EQ(lseek(mirrored.get(), offset, SEEK_DATA), offset + length);
}

TEST_F(FsyncDurabilityTest, FsyncBringsTheDirectoriesLeadingToTheFile) {
  absl::Status started = Mount();
  ASSERT_TRUE(started.ok()) << started;
  ASSERT_NO_FATAL_FAILURE(MkdirOnMount("n1"));
  ASSERT_NO_FATAL_FAILURE(MkdirOnMount("n1/n2"));
  ASSERT_NO_FATAL_FAILURE(MkdirOnMount("n1/n2/n3"));
  int fd = OpenOnMount("n1/n2/n3/file");
  ASSERT_GE(fd, 0);
  UniqueFd closer(fd);
  std::string want = PatternBytes(22, 300000);
  ASSERT_NO_FATAL_FAILURE(PWrite(fd, want, 0));
  ASSERT_NO_FATAL_FAILURE(Sync(fd, /*data_only=*/false));

  for (const char* dir : {"/n1", "/n1/n2", "/n1/n2/n3"}) {
    struct stat st;
    ASSERT_EQ(lstat((mirror() + dir).c_str(), &st), 0)
        << "mirror" << dir << ": " << ErrnoName(errno);
    EXPECT_TRUE(S_ISDIR(st.st_mode)) << "mirror" << dir;
  }
  EXPECT_TRUE(NativeFileHolds(mirror() + "/n1/n2/n3/file", want));
}

TEST_F(FsyncDurabilityTest, FsyncAfterTheParentWasRenamed) {
  absl::Status started = Mount();
  ASSERT_TRUE(started.ok()) << started;
  ASSERT_NO_FATAL_FAILURE(MkdirOnMount("p"));
  ASSERT_NO_FATAL_FAILURE(MkdirOnMount("p/q"));
  int fd = OpenOnMount("p/q/f");
  ASSERT_GE(fd, 0);
  UniqueFd closer(fd);
  std::string want = PatternBytes(23, 100000);
  ASSERT_NO_FATAL_FAILURE(PWrite(fd, want, 0));
  ASSERT_NO_FATAL_FAILURE(Sync(fd, /*data_only=*/false));
  EXPECT_TRUE(NativeFileHolds(mirror() + "/p/q/f", want));

  ASSERT_EQ(rename((mount() + "/p").c_str(), (mount() + "/p2").c_str()), 0)
      << ErrnoName(errno);
  std::string more = PatternBytes(24, 50000);
  ASSERT_NO_FATAL_FAILURE(PWrite(fd, more, want.size()));
  want += more;
  ASSERT_NO_FATAL_FAILURE(Sync(fd, /*data_only=*/false));
  EXPECT_TRUE(NativeFileHolds(mirror() + "/p2/q/f", want))
      << "fsync must make the file reachable under its current path";
  struct stat st;
  EXPECT_NE(lstat((mirror() + "/p").c_str(), &st), 0)
      << "the old directory name is still in the mirror after fsync";
}

TEST_F(DrainTest, SigtermDrainsEverythingBeforeExit) {
  // A mirror slower than the writer, so that SIGTERM finds a backlog on any
  // machine and the drain's progress report is what the log shows.
  InjectAgentFaults({.write_delay = absl::Milliseconds(5)});
  absl::Status started = Mount();
  ASSERT_TRUE(started.ok()) << started;
  pid_t agent = WaitForMirrordChild();

  // 200 MiB, written as fast as the daemon takes it, no fsync; close(2)
  // hands the kernel's cached pages to the daemon.
  constexpr int kFiles = 4;
  constexpr uint64_t kSize = 50 * kMiB;
  Ops on_mount(mount());
  ASSERT_TRUE(RunBounded("writing 200 MiB", kWorkloadTimeout, [&] {
    on_mount.Mkdir("bulk");
    for (int i = 0; i < kFiles; ++i) {
      on_mount.WriteStream(absl::StrCat("bulk/f", i), 40 + i, kSize + i);
    }
  }));
  ASSERT_EQ(on_mount.failures(), 0);

  ASSERT_TRUE(CleanExit(fs().SignalAndWait(SIGTERM, kDrainTimeout)));
  for (int i = 0; i < kFiles; ++i) {
    std::string why;
    EXPECT_TRUE(FileHoldsStream(absl::StrCat(mirror(), "/bulk/f", i), 40 + i,
                                kSize + i, &why))
        << why;
  }

  // The progress report's wording is the daemon's; it must mention the
  // drain somewhere on stderr.
  std::string log = ReadNative(fs().log_path());
  EXPECT_TRUE(absl::StrContains(log, "mem-fuse: draining"))
      << "mem-fuse's output does not mention the drain:\n"
      << fs().Log();

  if (agent != 0) {
    EXPECT_TRUE(WaitFor([&] { return !ProcessAlive(agent, kMirrordComm); },
                        std::chrono::seconds(10)))
        << "mem-fuse-mirrord (pid " << agent << ") outlived mem-fuse";
  }
}

}  // namespace
}  // namespace memfuse::testing
