// fake-invariant-server: a FakeInvariantServer on 127.0.0.1 for benchmarks
// and manual debugging. Prints "listening on 127.0.0.1:PORT" as its first
// line on stdout once it accepts connections, and serves until SIGINT or
// SIGTERM. SIGUSR1 prints its counters as one line on stdout
// ("requests N writes N bytes_written N reads N bytes_read N syncs N saves N
// overlapping_writes N unsaved_changes N"), for the benchmarks' requests per
// MiB. Like the real server it saves lazily, every --save-interval-ms and at
// `PUT files/sync`; as a process that never restarts, that only shows in
// etags and in the counters.
#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <iostream>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "tests/testing/fake_invariant_server.h"

int main(int argc, char** argv) {
  CLI::App app(
      "fake-invariant-server: an in-memory fake of the Invariant files HTTP "
      "API on 127.0.0.1, for tests and benchmarks of the http mirror. "
      "Serves until SIGINT or SIGTERM.",
      "fake-invariant-server");
  int port = 0;
  app.add_option("--port", port, "TCP port on 127.0.0.1; 0 picks a free one")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  int save_interval_ms = 5000;
  app.add_option("--save-interval-ms", save_interval_ms,
                 "how often unsaved changes are saved on their own; 0: only "
                 "at PUT files/sync")
      ->check(CLI::Range(0, 24 * 3600 * 1000))
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }

  // Block the stop signals before any thread starts, so that every thread
  // inherits the mask and sigwait below receives them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  memfuse::testing::FakeInvariantServer::Options options;
  options.port = port;
  options.save_interval = absl::Milliseconds(save_interval_ms);
  memfuse::testing::FakeInvariantServer server(options);
  if (absl::Status started = server.Start(); !started.ok()) {
    std::cerr << "fake-invariant-server: " << started.message() << "\n";
    return 1;
  }
  std::cout << "listening on 127.0.0.1:" << server.port() << std::endl;

  using Server = memfuse::testing::FakeInvariantServer;
  int signal_number = 0;
  while (sigwait(&stop_signals, &signal_number) == 0 &&
         signal_number == SIGUSR1) {
    std::cout << "requests " << server.TotalRequests() << " writes "
              << server.RequestCount(Server::kWrite) << " bytes_written "
              << server.BytesWritten() << " reads "
              << server.RequestCount(Server::kRead) << " bytes_read "
              << server.BytesRead() << " syncs " << server.SyncCount()
              << " saves " << server.SaveCount() << " overlapping_writes "
              << server.OverlappingUnsavedWrites() << " unsaved_changes "
              << server.UnsavedChanges() << std::endl;
  }
  server.Stop();
  return 0;
}
