// kill -9 of the mirror agent in the middle of a write-heavy workload, several
// times: the daemon keeps serving (every read of the workload is checked
// against its model), respawns the agent it spawned or reconnects to one
// restarted on the same socket, resends what was not acknowledged, and once
// the mirror caught up it equals the mount.
//
// The kills come at random moments (random pauses; the seed is gtest's
// --gtest_random_seed, printed on failure so a run can be repeated).
#include <signal.h>

#include <atomic>
#include <chrono>
#include <iostream>
#include <optional>
#include <random>
#include <string>
#include <thread>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_fixture.h"
#include "tests/e2e/workload.h"
#include "tests/testing/mount_fixture.h"
#include "tests/testing/posix_compare.h"
#include "tests/testing/tree_compare.h"

namespace memfuse::testing {
namespace {

// Small limits so that the dirty limit is reached while the agent is down:
// writers must then wait, and resume once it is back.
const std::vector<std::string> kSmallCache = {"--cache-size",           "256",
                                              "--cache-max-write-size", "32",
                                              "--block-size",           "64"};

constexpr int kMinRounds = 6;
constexpr std::chrono::seconds kMaxChurn{60};

class AgentRestartTest : public E2eTest {
 protected:
  void SetUp() override {
    E2eTest::SetUp();
    seed_ = static_cast<uint32_t>(
        ::testing::UnitTest::GetInstance()->random_seed());
    rng_.seed(seed_);
  }

  // A random pause of [min, max) ms: the point is a random moment in the
  // workload, not waiting for anything.
  void RandomPause(int min_ms, int max_ms) {
    std::this_thread::sleep_for(
        std::chrono::milliseconds(min_ms + rng_() % (max_ms - min_ms)));
  }

  // Starts the churn workload on the mount in a Worker.
  std::unique_ptr<Worker> StartChurn(std::optional<ChurnWorkload>* churn) {
    return StartWorker([this, churn](const std::atomic<bool>& stop) {
      churn->emplace(mount(), seed_);
      (*churn)->Run(stop, kMinRounds, kMaxChurn);
    });
  }

  // Joins the workload, reads everything back, waits for the mirror and
  // compares it with the mount.
  void FinishAndCompare(Worker& worker, std::optional<ChurnWorkload>& churn,
                        int kills) {
    worker.RequestStop();
    ASSERT_TRUE(worker.Join("the churn workload", kWorkloadTimeout));
    ASSERT_TRUE(churn.has_value());
    std::cout << "churn: " << churn->rounds() << " rounds, "
              << churn->bytes_written() / kMiB << " MiB written, "
              << churn->reads_checked() << " reads checked, " << kills
              << " agent kills (seed " << seed_ << ")\n";
    ASSERT_TRUE(RunBounded("reading every file back", kWorkloadTimeout,
                           [&] { churn->VerifyAll(); }));
    ASSERT_TRUE(MirrorCaughtUp());
    EXPECT_TRUE(TreesEqual(mount(), mirror(), MirrorCompareOptions()));
  }

  uint32_t seed_ = 0;
  std::mt19937 rng_;
};

TEST_F(AgentRestartTest, SpawnedAgentKilledRepeatedly) {
  absl::Status started = Mount(kSmallCache);
  ASSERT_TRUE(started.ok()) << started;
  pid_t agent = WaitForMirrordChild();
  ASSERT_NE(agent, 0) << "mem-fuse (pid " << fs().pid()
                      << ") has no live child process named " << kMirrordComm
                      << "*";

  std::optional<ChurnWorkload> churn;
  std::unique_ptr<Worker> worker = StartChurn(&churn);
  constexpr int kKills = 4;
  int kills = 0;
  for (; kills < kKills && !worker->done(); ++kills) {
    RandomPause(150, 800);
    if (kill(agent, SIGKILL) != 0) {
      ASSERT_EQ(errno, ESRCH) << ErrnoName(errno);  // it died by itself
    }
    pid_t next = WaitForMirrordChild(/*not_this=*/agent);
    ASSERT_NE(next, 0) << "mem-fuse did not respawn mem-fuse-mirrord within "
                       << kRespawnTimeout.count() << " s of kill -9 of pid "
                       << agent << " (kill " << kills + 1 << ")";
    agent = next;
  }
  // Keep writing a little after the last restart.
  RandomPause(200, 500);
  ASSERT_NO_FATAL_FAILURE(FinishAndCompare(*worker, churn, kills));
  EXPECT_EQ(kills, kKills) << "the workload ended before all kills";

  ASSERT_TRUE(CleanExit(Unmount()));
}

TEST_F(AgentRestartTest, SocketAgentKilledAndRestarted) {
  std::string socket = TempPath("mirrord.sock");
  absl::Status started = StartAgent(socket);
  ASSERT_TRUE(started.ok()) << started;
  started = MountWithSocket(socket, kSmallCache);
  ASSERT_TRUE(started.ok()) << started;
  EXPECT_TRUE(absl::StrContains(fs().Log(), "file data over the socket"))
      << fs().Log();

  std::optional<ChurnWorkload> churn;
  std::unique_ptr<Worker> worker = StartChurn(&churn);
  constexpr int kKills = 2;
  int kills = 0;
  for (; kills < kKills && !worker->done(); ++kills) {
    RandomPause(200, 800);
    std::optional<ExitInfo> exit = agent()->SignalAndWait(SIGKILL);
    ASSERT_TRUE(exit.has_value()) << "mem-fuse-mirrord survived SIGKILL?";
    // Down for a while: the daemon must keep serving and retry.
    RandomPause(100, 600);
    // Restarted on the same path; the killed agent's socket file is still
    // there, as after any crash.
    started = StartAgent(socket);
    ASSERT_TRUE(started.ok()) << started;
  }
  RandomPause(200, 500);
  ASSERT_NO_FATAL_FAILURE(FinishAndCompare(*worker, churn, kills));
  EXPECT_EQ(kills, kKills) << "the workload ended before all kills";

  ASSERT_TRUE(CleanExit(Unmount()));
}

}  // namespace
}  // namespace memfuse::testing
