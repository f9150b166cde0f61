#include "fsd/service_status.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/service_notify.h"
#include "fsd/block_budget.h"
#include "fsd/mutation_log.h"
#include "fsd/status_report.h"
#include "fsd/units.h"

namespace memfuse::fsd {
namespace service = common::service;

ServiceStatus::ServiceStatus(std::string mountpoint, const ops::Context* ctx)
    : mountpoint_(std::move(mountpoint)), ctx_(ctx) {}

ServiceStatus::~ServiceStatus() {
  {
    absl::MutexLock l(&mu_);
    done_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void ServiceStatus::Mounted() {
  if (!service::Enabled()) return;
  {
    absl::MutexLock l(&mu_);
    service::Ready(Line());
  }
  thread_ = std::thread(&ServiceStatus::Run, this);
}

void ServiceStatus::Stopping() {
  absl::MutexLock l(&mu_);
  if (stopping_) return;
  stopping_ = true;
  service::Stopping(Line());
}

void ServiceStatus::Draining(std::string_view line) {
  absl::MutexLock l(&mu_);
  stopping_ = true;
  drain_line_ = std::string(line);
}

std::string ServiceStatus::Line() {
  const StatusReport report = StatusReport::Gather(
      ctx_->tree, ctx_->budget, ctx_->log, /*walk_tree=*/false);
  const MutationLog::Backlog b = report.mirror.value_or(MutationLog::Backlog{});
  if (stopping_) {
    if (!drain_line_.empty()) return drain_line_;
    if (!report.mirror.has_value()) {
      return absl::StrFormat("unmounting %s", mountpoint_);
    }
    return absl::StrFormat(
        "unmounting %s; then draining %s and %u changes to the mirror",
        mountpoint_, MiB(b.data_bytes), b.mutations);
  }
  std::string line = absl::StrFormat("mounted on %s", mountpoint_);
  if (report.cache.has_value()) {
    absl::StrAppendFormat(&line, "; cache %s of %s", MiB(report.cache->bytes),
                          MiB(report.cache->limit));
  }
  if (report.mirror.has_value()) {
    absl::StrAppendFormat(&line, "; dirty %s of %s; %u changes not mirrored",
                          MiB(b.dirty_bytes), MiB(report.dirty_limit),
                          b.mutations);
  }
  return line;
}

void ServiceStatus::Run() {
  const absl::Duration watchdog = service::WatchdogInterval();
  absl::Duration tick = absl::Seconds(1);
  if (watchdog > absl::ZeroDuration()) tick = std::min(tick, watchdog / 2);
  uint64_t acked_bytes = 0, last_acked = 0;
  absl::MutexLock l(&mu_);
  while (!mu_.AwaitWithTimeout(absl::Condition(&done_), tick)) {
    service::Status(Line());
    if (watchdog > absl::ZeroDuration()) service::Watchdog();
    if (ctx_->log == nullptr) continue;
    const MutationLog::Backlog b = ctx_->log->GetBacklog();
    // Each sign that the mirror takes data buys the stop more time.
    if (stopping_ && b.mutations > 0 &&
        (b.acked_bytes != acked_bytes || b.last_acked != last_acked)) {
      service::ExtendTimeout(kStopExtension);
    }
    acked_bytes = b.acked_bytes;
    last_acked = b.last_acked;
  }
}

}  // namespace memfuse::fsd
