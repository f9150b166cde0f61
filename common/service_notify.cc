#include "common/service_notify.h"

#include <systemd/sd-daemon.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

extern char** environ;

namespace memfuse::common::service {
namespace {

// Set by Init() and only read after it.
bool g_enabled = false;
uint64_t g_watchdog_usec = 0;

// A STATUS= value is one line.
std::string OneLine(std::string_view text) {
  std::string line(text);
  for (char& c : line) {
    if (c == '\n') c = ' ';
  }
  return line;
}

void Send(const std::string& message) {
  if (g_enabled) sd_notify(/*unset_environment=*/0, message.c_str());
}

}  // namespace

void Init() {
  g_enabled = getenv("NOTIFY_SOCKET") != nullptr;
  uint64_t usec = 0;
  if (sd_watchdog_enabled(/*unset_environment=*/0, &usec) > 0) {
    g_watchdog_usec = usec;
  }
}

std::vector<std::string> ChildEnvironment() {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const absl::string_view var(*e);
    if (absl::StartsWith(var, "NOTIFY_SOCKET=") ||
        absl::StartsWith(var, "WATCHDOG_") ||
        absl::StartsWith(var, "LISTEN_")) {
      continue;
    }
    env.emplace_back(var);
  }
  return env;
}

bool Enabled() { return g_enabled; }

void Ready(std::string_view status) {
  Send(absl::StrCat("READY=1\nSTATUS=", OneLine(status)));
}

void Status(std::string_view status) {
  Send(absl::StrCat("STATUS=", OneLine(status)));
}

void Stopping(std::string_view status) {
  Send(absl::StrCat("STOPPING=1\nSTATUS=", OneLine(status)));
}

void ExtendTimeout(absl::Duration by) {
  Send(absl::StrCat("EXTEND_TIMEOUT_USEC=", absl::ToInt64Microseconds(by)));
}

absl::Duration WatchdogInterval() {
  return absl::Microseconds(g_watchdog_usec);
}

void Watchdog() { Send("WATCHDOG=1"); }

}  // namespace memfuse::common::service
