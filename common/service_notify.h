// Telling a service manager (systemd, Type=notify) what a daemon is doing,
// through sd_notify(3). Without NOTIFY_SOCKET in the environment (started by
// hand, by a test, or as fsd's child) every call does nothing.
//
// The manager's variables stay in the environment (sd_notify reads them at
// each call); a daemon that starts children gives them ChildEnvironment(),
// so that no child speaks for it. Thread-safe after Init().
#ifndef MEMFUSE_COMMON_SERVICE_NOTIFY_H_
#define MEMFUSE_COMMON_SERVICE_NOTIFY_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/time/time.h"

namespace memfuse::common::service {

// Call once, first thing in main(), before any thread starts.
void Init();

// The environment for a child process: this one's, without the service
// manager's variables (NOTIFY_SOCKET, WATCHDOG_*, LISTEN_*). Strings for
// execve(); call before fork.
std::vector<std::string> ChildEnvironment();

// True when a service manager listens.
bool Enabled();

// READY=1 with a STATUS= line: the service is up (systemctl start returns).
void Ready(std::string_view status);

// STATUS=: one line for `systemctl status`.
void Status(std::string_view status);

// STOPPING=1 with a STATUS= line.
void Stopping(std::string_view status);

// EXTEND_TIMEOUT_USEC: the current start or stop timeout ends no earlier
// than `by` from now (a stop that makes progress is not killed).
void ExtendTimeout(absl::Duration by);

// The watchdog's interval (WatchdogSec=), or zero when it is off. Ping at
// half of it.
absl::Duration WatchdogInterval();

// WATCHDOG=1.
void Watchdog();

}  // namespace memfuse::common::service

#endif  // MEMFUSE_COMMON_SERVICE_NOTIFY_H_
