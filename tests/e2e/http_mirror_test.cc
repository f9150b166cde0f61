// The HTTP mirror end to end: mem-fuse and the agent it spawns against a
// fake Invariant files server (tests/testing/fake_invariant_server.h) on
// 127.0.0.1, and the mount compared with the server's tree walked through
// the API (names, kinds, sizes, bytes, symlink targets, executable bits).
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "mirrord/backend/http_client.h"
#include "tests/e2e/e2e_fixture.h"
#include "tests/e2e/server_tree.h"
#include "tests/e2e/workload.h"
#include "tests/testing/fake_invariant_server.h"
#include "tests/testing/mount_fixture.h"

namespace memfuse::testing {
namespace {

using mirrord::EncodePathName;

uint64_t FileSize(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 ? st.st_size : 0;
}

// Data bytes the agent has acknowledged since the mount.
uint64_t MirroredBytes(const std::string& mount) {
  return DaemonStatus(mount)["mirrored_data_bytes"].value_or(0);
}

class HttpMirrorTest : public E2eTest {
 protected:
  void SetUp() override {
    E2eTest::SetUp();
    ASSERT_TRUE(server_.Start().ok());
  }
  void TearDown() override {
    E2eTest::TearDown();
    server_.Stop();
  }
  std::string url() const { return server_.base_url(); }

  FakeInvariantServer server_;
};

TEST_F(HttpMirrorTest, TheServerEqualsTheMountAfterEveryKindOfMutation) {
  ASSERT_TRUE(MountMirror(url()).ok());
  Ops on_mount(mount());
  ASSERT_TRUE(RunBounded("the workload on the mount", kWorkloadTimeout,
                         [&] { RunRichWorkload(on_mount); }));
  ASSERT_EQ(on_mount.failures(), 0);
  ASSERT_TRUE(MirrorCaughtUp());
  EXPECT_TRUE(MountEqualsServer(mount(), server_));
  EXPECT_GT(server_.RequestCount(FakeInvariantServer::kSync), 0);

  // A fresh mount lists the server again: the same tree (but the FIFOs,
  // owners and xattrs, which only the first fsd held).
  ASSERT_TRUE(CleanExit(Unmount()));
  ASSERT_TRUE(MountMirror(url()).ok());
  EXPECT_TRUE(MountEqualsServer(mount(), server_));
  // Changes after the remount (RunFollowUpWorkload minus the xattrs the
  // server does not keep).
  Ops again(mount());
  again.PWrite("top/l1/big", 15 * kMiB + 7, "appended after the remount");
  again.PWrite("top/l1/l2/s3", 3, "XYZ");
  again.Mkdir("after");
  again.Mkdir("after/deeper");
  again.WriteStream("after/deeper/new", 10, 3 * kMiB + 3);
  again.Rename("top/l3-moved", "after/l3");
  again.Chmod("top/l1/l2/s4", 0750);
  again.Unlink("top/l1/h2");
  EXPECT_EQ(again.failures(), 0);
  ASSERT_TRUE(MirrorCaughtUp());
  EXPECT_TRUE(MountEqualsServer(mount(), server_));
  ASSERT_TRUE(CleanExit(Unmount()));
}

TEST_F(HttpMirrorTest, NamesRoundTripThroughTheServer) {
  ASSERT_TRUE(MountMirror(url()).ok());
  const std::vector<std::string> names = {
      "plain.txt",
      "with space",
      "100%",
      "%41",
      "what?",
      "#hash",
      "a+b",
      "caf\xc3\xa9",
      "\xe6\x97\xa5\xe6\x9c\xac",
      "semi;colon&amp=",
  };
  Ops ops(mount());
  ops.Mkdir("odd dir?");
  for (const std::string& name : names) {
    ops.WriteFile(absl::StrCat("odd dir?/", name), name);
  }
  ASSERT_EQ(ops.failures(), 0);
  ASSERT_TRUE(MirrorCaughtUp());
  // Plain names are stored as they are, for other clients of the server.
  absl::StatusOr<ApiTree> api = WalkApiTree("127.0.0.1", server_.port());
  ASSERT_TRUE(api.ok()) << api.status();
  EXPECT_TRUE(api->contains("odd%20dir%3F/plain.txt"));
  ASSERT_TRUE(CleanExit(Unmount()));

  // Listed again by a fresh mount: every name comes back byte for byte.
  ASSERT_TRUE(MountMirror(url()).ok());
  Ops fresh(mount());
  for (const std::string& name : names) {
    EXPECT_EQ(fresh.Read(absl::StrCat("odd dir?/", name)), name) << name;
  }
  EXPECT_TRUE(MountEqualsServer(mount(), server_));
  ASSERT_TRUE(CleanExit(Unmount()));
}

// The server replaces on create and rename and removes recursively: none of
// that may reach it for what POSIX refuses.
TEST_F(HttpMirrorTest, PosixIsKeptByTheClientNotTrustedToTheServer) {
  ASSERT_TRUE(MountMirror(url()).ok());
  Ops ops(mount());
  ops.Mkdir("full");
  ops.WriteFile("full/keep", "kept");
  ops.Mkdir("other");
  ops.WriteFile("file", "data");
  ASSERT_TRUE(MirrorCaughtUp());
  const std::string root = mount();
  errno = 0;
  EXPECT_EQ(open((root + "/file").c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644),
            -1);
  EXPECT_EQ(errno, EEXIST);
  EXPECT_EQ(rmdir((root + "/full").c_str()), -1);
  EXPECT_EQ(errno, ENOTEMPTY);
  EXPECT_EQ(rename((root + "/other").c_str(), (root + "/full").c_str()), -1);
  EXPECT_EQ(errno, ENOTEMPTY);
  EXPECT_EQ(mkdir((root + "/full").c_str(), 0755), -1);
  EXPECT_EQ(errno, EEXIST);
  ASSERT_TRUE(MirrorCaughtUp());
  absl::StatusOr<ApiTree> api = WalkApiTree("127.0.0.1", server_.port());
  ASSERT_TRUE(api.ok()) << api.status();
  ASSERT_TRUE(api->contains("full/keep"));
  EXPECT_EQ(api->at("full/keep").bytes, "kept");
  EXPECT_EQ(api->at("file").bytes, "data");
  EXPECT_TRUE(MountEqualsServer(mount(), server_));
  ASSERT_TRUE(CleanExit(Unmount()));
}

TEST_F(HttpMirrorTest, SequentialWritesCostAboutOneRequestPerBlock) {
  ASSERT_TRUE(MountMirror(url(), {"--block-size", "256"}).ok());
  Ops ops(mount());
  constexpr uint64_t kSize = 16 * kMiB;
  ASSERT_TRUE(MirrorCaughtUp());
  server_.ResetCounters();
  ops.WriteStream("big", 7, kSize);
  ASSERT_EQ(ops.failures(), 0);
  ASSERT_TRUE(MirrorCaughtUp());
  const int64_t writes = server_.RequestCount(FakeInvariantServer::kWrite);
  const int64_t total = server_.TotalRequests();
  EXPECT_EQ(server_.BytesWritten(), static_cast<int64_t>(kSize));
  // 64 blocks of 256 KiB: one POST each, plus a handful for the create.
  // The group commits (syncs) come every few hundred milliseconds while
  // writes arrive, so their number follows the machine's speed, and each
  // commit sets the file's times and reads back its info: those are
  // bounded by the commits, and the commits by the writes.
  const int64_t syncs = server_.RequestCount(FakeInvariantServer::kSync);
  const int64_t times =
      server_.RequestCount(FakeInvariantServer::kSetAttributes);
  const int64_t infos = server_.RequestCount(FakeInvariantServer::kInfo);
  std::string counts;
  for (absl::string_view kind :
       {FakeInvariantServer::kInfo, FakeInvariantServer::kList,
        FakeInvariantServer::kLookup, FakeInvariantServer::kRead,
        FakeInvariantServer::kWrite, FakeInvariantServer::kCreate,
        FakeInvariantServer::kSetAttributes, FakeInvariantServer::kSetSize,
        FakeInvariantServer::kSync, FakeInvariantServer::kNoRoute}) {
    absl::StrAppend(&counts, " ", kind, ": ", server_.RequestCount(kind), ";");
  }
  EXPECT_LE(writes, 64 + 2) << counts;
  EXPECT_LE(syncs, writes) << counts;
  EXPECT_LE(times, syncs + 2) << "more than one per commit:" << counts;
  EXPECT_LE(infos, syncs + 2) << "more than one per commit:" << counts;
  EXPECT_LE(total - syncs - times - infos, writes + 6)
      << "requests besides the writes and the commits:" << counts;
  std::string why;
  EXPECT_TRUE(FileHoldsStream(mount() + "/big", 7, kSize, &why)) << why;
  ASSERT_TRUE(CleanExit(Unmount()));
}

TEST_F(HttpMirrorTest, AServerRestartWithNewIdsLosesNothing) {
  ASSERT_TRUE(
      MountMirror(url(), {"--cache-size", "64", "--cache-max-write-size", "8"})
          .ok());
  ChurnWorkload churn(mount(), 11);
  std::unique_ptr<Worker> worker =
      StartWorker([&](const std::atomic<bool>& stop) {
        churn.Run(stop, /*min_rounds=*/4, std::chrono::seconds(60));
      });
  // And a writer of four times the dirty limit, which must wait for the
  // server to come back.
  Ops streams(mount());
  constexpr uint64_t kStream = 32 * kMiB;
  std::unique_ptr<Worker> writer = StartWorker([&](const std::atomic<bool>&) {
    streams.WriteStream("stream", 5, kStream);
  });
  // Once the writer is under way: down for three seconds, back with every
  // node id changed.
  ASSERT_TRUE(WaitFor([&] { return FileSize(mount() + "/stream") > kMiB; },
                      std::chrono::seconds(30)));
  ASSERT_TRUE(server_.Restart(absl::Seconds(3)).ok());
  // Once the server has taken data again: renumbered once more, serving.
  const uint64_t mirrored = MirroredBytes(mount());
  ASSERT_TRUE(WaitFor([&] { return MirroredBytes(mount()) > mirrored; },
                      std::chrono::seconds(30)));
  server_.Restart();
  ASSERT_TRUE(writer->Join("the stream writer", kWorkloadTimeout));
  EXPECT_EQ(streams.failures(), 0);
  worker->RequestStop();
  ASSERT_TRUE(worker->Join("the churn workload", kWorkloadTimeout));
  EXPECT_GE(churn.rounds(), 4);
  ASSERT_TRUE(MirrorCaughtUp());
  churn.VerifyAll();
  std::string why;
  EXPECT_TRUE(FileHoldsStream(mount() + "/stream", 5, kStream, &why)) << why;
  EXPECT_TRUE(MountEqualsServer(mount(), server_));
  const DaemonStatus status(mount());
  EXPECT_LE(status["dirty_peak"].value_or(0), 8 * kMiB) << status.text();
  EXPECT_GT(status["dirty_waits"].value_or(0), 0u)
      << "no writer waited while the server was down\n"
      << status.text();
  ASSERT_TRUE(CleanExit(Unmount()));
}

// kill -9 of the agent: fsd respawns it, the new agent knows nothing (the
// server keeps no replay state of ours) and gets everything
// unacknowledged again; every mutation is safe to apply twice.
TEST_F(HttpMirrorTest, TheAgentKilledRepeatedlyLosesNothing) {
  ASSERT_TRUE(MountMirror(url(), {"--cache-size", "64"}).ok());
  pid_t agent = WaitForMirrordChild();
  ASSERT_NE(agent, 0);
  ChurnWorkload churn(mount(), 23);
  std::unique_ptr<Worker> worker =
      StartWorker([&](const std::atomic<bool>& stop) {
        churn.Run(stop, /*min_rounds=*/4, std::chrono::seconds(60));
      });
  for (int kills = 0; kills < 3 && !worker->done(); ++kills) {
    // Each kill once the current agent has applied some of the workload.
    const uint64_t mirrored = MirroredBytes(mount());
    ASSERT_TRUE(WaitFor([&] { return MirroredBytes(mount()) > mirrored; },
                        std::chrono::seconds(30)));
    if (kill(agent, SIGKILL) != 0) {
      ASSERT_EQ(errno, ESRCH);  // it died by itself
    }
    const pid_t next = WaitForMirrordChild(/*not_this=*/agent);
    ASSERT_NE(next, 0) << "no new agent after kill -9 of " << agent;
    agent = next;
  }
  worker->RequestStop();
  ASSERT_TRUE(worker->Join("the churn workload", kWorkloadTimeout));
  ASSERT_TRUE(MirrorCaughtUp());
  churn.VerifyAll();
  EXPECT_TRUE(MountEqualsServer(mount(), server_));
  ASSERT_TRUE(CleanExit(Unmount()));
}

// The agent started on its own (systemd, Kubernetes), fsd reaching it with
// --mirror-socket; and an eager mount (--lazy-load false) of what the
// server then holds.
TEST_F(HttpMirrorTest, ASeparateAgentAndAnEagerMount) {
  const std::string socket = TempPath("mirrord.sock");
  ASSERT_TRUE(StartAgentFor(url(), socket).ok());
  ASSERT_TRUE(MountWithSocket(socket).ok());
  Ops ops(mount());
  ops.Mkdir("a");
  ops.Mkdir("a/b");
  ops.WriteFile("a/b/f", "through the socket");
  ops.WriteStream("a/big", 4, 3 * kMiB);
  ops.Symlink("b/f", "a/link");
  ASSERT_EQ(ops.failures(), 0);
  ASSERT_TRUE(MirrorCaughtUp());
  EXPECT_TRUE(MountEqualsServer(mount(), server_));
  ASSERT_TRUE(CleanExit(Unmount()));

  ASSERT_TRUE(MountMirror(url(), {"--lazy-load", "false"}).ok());
  // Everything was listed at mount: looking around lists nothing more.
  const DaemonStatus loaded(mount());
  EXPECT_EQ(loaded["dirs_listed"], 3u) << loaded.text();
  EXPECT_TRUE(MountEqualsServer(mount(), server_));
  const DaemonStatus after(mount());
  EXPECT_EQ(after["dirs_listed"], 3u) << after.text();
  ASSERT_TRUE(CleanExit(Unmount()));
}

TEST_F(HttpMirrorTest, EvictedBlocksComeBackFromTheServer) {
  ASSERT_TRUE(
      MountMirror(url(), {"--cache-size", "16", "--cache-max-write-size", "8",
                          "--block-size", "256"})
          .ok());
  constexpr uint64_t kSize = 48 * kMiB;  // three times the cache
  Ops ops(mount());
  ASSERT_TRUE(RunBounded("writing", kWorkloadTimeout,
                         [&] { ops.WriteStream("big", 3, kSize); }));
  ASSERT_EQ(ops.failures(), 0);
  ASSERT_TRUE(MirrorCaughtUp());
  const std::string big = mount() + "/big";
  {
    const int fd = open(big.c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
  }
  server_.ResetCounters();
  std::string why;
  EXPECT_TRUE(FileHoldsStream(big, 3, kSize, &why)) << why;
  const DaemonStatus status(mount());
  EXPECT_GT(status["blocks_evicted"].value_or(0), 0u) << status.text();
  EXPECT_GT(status["blocks_fetched"].value_or(0), 0u) << status.text();
  EXPECT_GT(server_.RequestCount(FakeInvariantServer::kRead), 0);
  EXPECT_LE(status["cache_peak"].value_or(0), 16 * kMiB) << status.text();
  ASSERT_TRUE(CleanExit(Unmount()));
}

// The files API cannot tell a server's capacity: statfs reports a large
// stand-in (1 PiB), never the cache's size, and fallocate past the cache
// works as with a local mirror.
TEST_F(HttpMirrorTest, StatFsIsALargeStandInNotTheCache) {
  ASSERT_TRUE(MountMirror(url(), {"--cache-size", "64"}).ok());
  struct statvfs st;
  ASSERT_EQ(statvfs(mount().c_str(), &st), 0) << strerror(errno);
  constexpr uint64_t kPiB = uint64_t{1} << 50;
  EXPECT_EQ(uint64_t{st.f_blocks} * st.f_frsize, kPiB);
  EXPECT_EQ(uint64_t{st.f_bavail} * st.f_frsize, kPiB);
  EXPECT_EQ(st.f_namemax, 255u);
  const std::string path = mount() + "/big";
  const int fd = open(path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0) << strerror(errno);
  EXPECT_EQ(fallocate(fd, 0, 0, 100 * kMiB), 0) << strerror(errno);
  close(fd);
  ASSERT_TRUE(MirrorCaughtUp());
  absl::StatusOr<ApiTree> api = WalkApiTree("127.0.0.1", server_.port());
  ASSERT_TRUE(api.ok()) << api.status();
  ASSERT_TRUE(api->contains("big"));
  EXPECT_EQ((*api)["big"].size, 100 * kMiB);
  ASSERT_TRUE(CleanExit(Unmount()));
}

TEST_F(HttpMirrorTest, BadAnswersGiveEioAndLoseNothing) {
  ASSERT_TRUE(MountMirror(url()).ok());
  Ops ops(mount());
  ops.Mkdir("d");
  ops.WriteFile("d/f", std::string(300000, 'x'));
  ASSERT_TRUE(MirrorCaughtUp());
  ASSERT_TRUE(CleanExit(Unmount()));

  // A fresh mount: the listing and the block come from the server.
  ASSERT_TRUE(MountMirror(url()).ok());
  server_.InjectFault({Fault::Kind::kMalformedJson, 1, "GET files/directory"});
  struct stat st;
  EXPECT_EQ(stat((mount() + "/d").c_str(), &st), -1);
  EXPECT_EQ(errno, EIO);
  // Answered properly the next time.
  EXPECT_EQ(stat((mount() + "/d/f").c_str(), &st), 0) << strerror(errno);

  // Every answer cut short: the kernel's readahead and its own retry of
  // the page both fail.
  const int fd = open((mount() + "/d/f").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  server_.InjectFault({Fault::Kind::kTruncatedBody, 100, "GET files/"});
  char buffer[4096];
  EXPECT_EQ(pread(fd, buffer, sizeof(buffer), 0), -1);
  EXPECT_EQ(errno, EIO);
  server_.ClearFaults();
  // The write path: a failed answer is retried, the data arrives.
  server_.InjectFault({Fault::Kind::kServerError, 2, "POST files/"});
  server_.InjectFault({Fault::Kind::kTruncatedBody, 1, "POST files/"});
  ops = Ops(mount());
  ops.PWrite("d/f", 10, "fresh");
  ASSERT_TRUE(MirrorCaughtUp());
  EXPECT_EQ(pread(fd, buffer, 20, 0), 20);
  EXPECT_EQ(std::string(buffer, 20), "xxxxxxxxxxfreshxxxxx");
  close(fd);
  EXPECT_TRUE(MountEqualsServer(mount(), server_));
  ASSERT_TRUE(CleanExit(Unmount()));
  EXPECT_NE(fs().Log().find("not JSON"), std::string::npos) << fs().Log();
}

TEST_F(HttpMirrorTest, SlowAnswersTimeOutWithEio) {
  InjectAgentFaults({.http_timeout = absl::Milliseconds(500)});
  absl::Status mounted = MountMirror(url());
  ASSERT_TRUE(mounted.ok()) << mounted;
  server_.InjectFault(
      {Fault::Kind::kDelay, 1, "GET files/directory", absl::Seconds(2)});
  const auto start = std::chrono::steady_clock::now();
  struct stat st;
  EXPECT_EQ(stat((mount() + "/anything").c_str(), &st), -1);
  EXPECT_EQ(errno, EIO);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  ASSERT_TRUE(CleanExit(Unmount()));
}

TEST_F(HttpMirrorTest, RootMountsASubtree) {
  ASSERT_TRUE(MountMirror(url()).ok());
  Ops ops(mount());
  ops.Mkdir("outside");
  ops.Mkdir("sub");
  ops.WriteFile("sub/inside", "in");
  ASSERT_TRUE(MirrorCaughtUp());
  ASSERT_TRUE(CleanExit(Unmount()));
  absl::StatusOr<ApiTree> api = WalkApiTree("127.0.0.1", server_.port());
  ASSERT_TRUE(api.ok()) << api.status();
  const uint64_t sub = api->at("sub").node;

  ASSERT_TRUE(MountMirror(url(), {"--root", absl::StrCat(sub)}).ok());
  Ops in_sub(mount());
  EXPECT_EQ(in_sub.Read("inside"), "in");
  struct stat st;
  EXPECT_EQ(stat((mount() + "/outside").c_str(), &st), -1);
  in_sub.WriteFile("new", "made under the root");
  ASSERT_TRUE(MirrorCaughtUp());
  EXPECT_TRUE(MountEqualsServer(mount(), server_, sub));
  ASSERT_TRUE(CleanExit(Unmount()));
}

TEST_F(HttpMirrorTest, AnUnreachableServerFailsTheMountQuickly) {
  server_.Stop();
  const auto start = std::chrono::steady_clock::now();
  absl::Status mounted = MountMirror(url());
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_FALSE(mounted.ok());
  EXPECT_LT(took, std::chrono::seconds(6));
  EXPECT_NE(mounted.message().find("127.0.0.1"), std::string::npos) << mounted;
}

}  // namespace
}  // namespace memfuse::testing
