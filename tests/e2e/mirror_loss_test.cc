// Acknowledged means kept (DESIGN.md, invariant 3), end to end: a server
// that restarts and drops what it had not saved, a local mirror whose
// directory is removed underneath, and a drain that cannot make progress
// saying why.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_fixture.h"
#include "tests/e2e/server_tree.h"
#include "tests/e2e/workload.h"
#include "tests/testing/fake_invariant_server.h"
#include "tests/testing/mount_fixture.h"

namespace memfuse::testing {
namespace {

std::string ReadWhole(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream out;
  out << in.rdbuf();
  return out.str();
}

uint64_t Unacked(const std::string& mount) {
  return DaemonStatus(mount)["unacked_changes"].value_or(~uint64_t{0});
}

// The files of the scenario: 12 of 1–6 MiB in a few directories.
struct Planted {
  std::string path;
  uint64_t seed;
  uint64_t size;
};

std::vector<Planted> FirstFiles() {
  const char* dirs[] = {"keep", "keep/deeper", "other"};
  std::vector<Planted> files;
  for (int i = 0; i < 12; ++i) {
    files.push_back({absl::StrCat(dirs[i % 3], "/f", i), 100u + i,
                     (1 + i % 6) * kMiB + 17 * i});
  }
  return files;
}

class HttpLossTest : public E2eTest {
 protected:
  void SetUp() override {
    E2eTest::SetUp();
    // A server that saves only when asked: what a restart drops is exactly
    // what no sync covered.
    FakeInvariantServer::Options options;
    options.save_interval = absl::ZeroDuration();
    server_ = std::make_unique<FakeInvariantServer>(options);
    ASSERT_TRUE(server_->Start().ok());
  }
  void TearDown() override {
    E2eTest::TearDown();
    server_->Stop();
  }

  // Writes the first files, waits until the mount says the mirror has all
  // of it, restarts the server (dropping what it did not save), optionally
  // kills the agent at the same time, writes six more files into one of
  // the directories, unmounts, and checks that a fresh mount of the server
  // (after yet another restart) holds every byte.
  void RestartScenario(bool kill_agent_too) {
    ASSERT_TRUE(MountMirror(server_->base_url(), {"--cache-size", "64"}).ok());
    Ops ops(mount());
    std::vector<Planted> files = FirstFiles();
    ASSERT_TRUE(RunBounded("the first files", kWorkloadTimeout, [&] {
      ops.Mkdir("keep");
      ops.Mkdir("keep/deeper");
      ops.Mkdir("other");
      for (const Planted& f : files) ops.WriteStream(f.path, f.seed, f.size);
    }));
    ASSERT_EQ(ops.failures(), 0);
    ASSERT_TRUE(WaitFor([&] { return Unacked(mount()) == 0; },
                        std::chrono::seconds(60)))
        << DaemonStatus(mount()).text();

    pid_t agent = kill_agent_too ? WaitForMirrordChild() : 0;
    if (kill_agent_too) {
      ASSERT_NE(agent, 0);
    }
    server_->Stop();
    if (agent != 0) {
      ASSERT_EQ(kill(agent, SIGKILL), 0);
    }
    ASSERT_TRUE(server_->Restart(absl::Seconds(1)).ok());

    ASSERT_TRUE(RunBounded("the files after the restart", kWorkloadTimeout,
                           [&] {
                             for (int i = 0; i < 6; ++i) {
                               Planted f{absl::StrCat("keep/after", i),
                                         300u + i, (1 + i) * kMiB / 2 + i};
                               ops.WriteStream(f.path, f.seed, f.size);
                               files.push_back(f);
                             }
                           }));
    ASSERT_EQ(ops.failures(), 0);
    ASSERT_TRUE(CleanExit(Unmount()));

    // Whatever the server did not save is gone after this restart: the
    // drain must have left everything saved.
    ASSERT_TRUE(server_->Restart(absl::Seconds(0)).ok());
    ASSERT_TRUE(MountMirror(server_->base_url()).ok());
    for (const Planted& f : files) {
      std::string why;
      EXPECT_TRUE(
          FileHoldsStream(mount() + "/" + f.path, f.seed, f.size, &why))
          << f.path << ": " << why;
    }
    EXPECT_TRUE(MountEqualsServer(mount(), *server_));
    ASSERT_TRUE(CleanExit(Unmount()));
  }

  std::unique_ptr<FakeInvariantServer> server_;
};

TEST_F(HttpLossTest, AServerRestartLosesNothingAcknowledged) {
  RestartScenario(/*kill_agent_too=*/false);
  EXPECT_GT(server_->RequestCount(FakeInvariantServer::kSync), 0);
}

TEST_F(HttpLossTest, AServerAndAgentRestartLoseNothingAcknowledged) {
  RestartScenario(/*kill_agent_too=*/true);
}

// Unsaved changes dropped by a restart in the middle of a stream of writes
// are applied again before they are acknowledged.
TEST_F(HttpLossTest, ChangesDroppedBeforeTheirSyncAreAppliedAgain) {
  ASSERT_TRUE(MountMirror(server_->base_url(),
                          {"--cache-size", "64", "--cache-max-write-size", "8"})
                  .ok());
  Ops ops(mount());
  constexpr uint64_t kSize = 48 * kMiB;
  std::unique_ptr<Worker> writer = StartWorker(
      [&](const std::atomic<bool>&) { ops.WriteStream("big", 9, kSize); });
  ASSERT_TRUE(WaitFor(
      [&] {
        return DaemonStatus(mount())["mirrored_data_bytes"].value_or(0) >
               4 * kMiB;
      },
      std::chrono::seconds(60)));
  // Twice, while the writer runs: down and back, every unsaved change lost.
  ASSERT_TRUE(server_->Restart(absl::Milliseconds(500)).ok());
  ASSERT_TRUE(server_->Restart(absl::Milliseconds(200)).ok());
  ASSERT_TRUE(writer->Join("the writer", kWorkloadTimeout));
  ASSERT_EQ(ops.failures(), 0);
  ASSERT_TRUE(CleanExit(Unmount()));
  ASSERT_TRUE(server_->Restart(absl::Seconds(0)).ok());
  ASSERT_TRUE(MountMirror(server_->base_url()).ok());
  std::string why;
  EXPECT_TRUE(FileHoldsStream(mount() + "/big", 9, kSize, &why)) << why;
  ASSERT_TRUE(CleanExit(Unmount()));
}

// A drain that cannot reach the server says, every second, which change it
// is stuck on and why; a second SIGTERM ends it, naming what was lost.
TEST_F(HttpLossTest, AStuckDrainNamesTheChangeAndASecondSignalEndsIt) {
  ASSERT_TRUE(MountMirror(server_->base_url()).ok());
  Ops ops(mount());
  ops.Mkdir("dir");
  ASSERT_TRUE(MirrorCaughtUp());
  server_->Stop();
  ops.WriteFile("dir/unsent", "these bytes cannot reach the server");
  ASSERT_EQ(ops.failures(), 0);
  ASSERT_EQ(kill(fs().pid(), SIGTERM), 0);
  ASSERT_TRUE(WaitFor(
      [&] {
        return absl::StrContains(ReadWhole(fs().log_path()),
                                 "stuck on create /dir/unsent");
      },
      std::chrono::seconds(30)))
      << fs().Log();
  const std::string log = ReadWhole(fs().log_path());
  EXPECT_TRUE(absl::StrContains(log, "attempts)") ||
              absl::StrContains(log, "does not answer"))
      << log;
  std::optional<ExitInfo> exit =
      fs().SignalAndWait(SIGTERM, std::chrono::seconds(20));
  ASSERT_TRUE(exit.has_value()) << "a second SIGTERM did not end mem-fuse";
  EXPECT_FALSE(exit->exited && exit->code_or_signal == 0) << ToString(*exit);
  EXPECT_TRUE(absl::StrContains(ReadWhole(fs().log_path()), "NOT mirrored"))
      << fs().Log();
}

using LocalLossTest = E2eTest;

// A directory of the local mirror removed underneath: the next changes of
// the files in it find it gone, and fsd re-creates the directories and the
// files from what it holds.
TEST_F(LocalLossTest, ADirectoryRemovedUnderneathIsRecreated) {
  ASSERT_TRUE(Mount().ok());
  Ops ops(mount());
  ops.Mkdir("d");
  ops.Mkdir("d/e");
  ops.WriteStream("d/a", 1, 3 * kMiB + 5);
  ops.WriteStream("d/e/b", 2, 2 * kMiB);
  ops.SetXattr("d/a", "user.kept", "yes");
  ASSERT_EQ(ops.failures(), 0);
  ASSERT_TRUE(MirrorCaughtUp());

  std::error_code error;
  std::filesystem::remove_all(mirror() + "/d", error);
  ASSERT_FALSE(error) << error.message();

  ops.PWrite("d/a", 3 * kMiB + 5, "appended");
  ops.PWrite("d/e/b", 100, "overwritten");
  ops.WriteFile("d/e/c", "new after the removal");
  ASSERT_EQ(ops.failures(), 0);
  ASSERT_TRUE(MirrorCaughtUp());
  EXPECT_TRUE(TreesEqual(mount(), mirror(), MirrorCompareOptions()));
  const DaemonStatus status(mount());
  EXPECT_GE(status["mirror_repairs"].value_or(0), 1u) << status.text();
  EXPECT_EQ(status["mirror_lost_bytes"].value_or(1), 0u) << status.text();
  ASSERT_TRUE(CleanExit(Unmount()));
}

// A file evicted from the cache and then removed from the mirror: what
// only the mirror held is lost; that is said and counted, never retried
// forever, and the rest of the queue goes on.
TEST_F(LocalLossTest, BytesOnlyTheMirrorHeldAreRefusedForGood) {
  ASSERT_TRUE(Mount({"--cache-size", "16", "--cache-max-write-size", "4"})
                  .ok());
  Ops ops(mount());
  ops.WriteStream("gone", 3, 24 * kMiB);  // more than the cache holds
  ASSERT_EQ(ops.failures(), 0);
  ASSERT_TRUE(MirrorCaughtUp());
  ASSERT_EQ(unlink((mirror() + "/gone").c_str()), 0);
  // A whole block: written without reading the old one.
  ops.PWrite("gone", 0, std::string(kMiB, 'x'));
  ops.WriteFile("other", "the queue goes on");
  ASSERT_EQ(ops.failures(), 0);
  ASSERT_TRUE(MirrorCaughtUp());
  EXPECT_EQ(ReadWhole(mirror() + "/other"), "the queue goes on");
  struct stat st;
  ASSERT_EQ(stat((mirror() + "/gone").c_str(), &st), 0)
      << "the file was not re-created";
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), 24 * kMiB);
  const DaemonStatus status(mount());
  EXPECT_GE(status["mirror_refused_objects"].value_or(0), 1u)
      << status.text();
  EXPECT_GT(status["mirror_lost_bytes"].value_or(0), 0u) << status.text();
  EXPECT_TRUE(absl::StrContains(ReadWhole(fs().log_path()), "/gone"))
      << fs().Log();
  ASSERT_TRUE(CleanExit(Unmount()));
}

}  // namespace
}  // namespace memfuse::testing
