// Keeps a service manager (systemd, Type=notify) told what fsd is doing:
// READY=1 once the mount is up; then, every second, a STATUS= line with the
// cache and the mirror queue; STOPPING=1 at the first signal; during the
// stop, what is left to mirror, and EXTEND_TIMEOUT_USEC for as long as the
// mirror takes data, so that a finite TimeoutStopSec never cuts a drain
// that moves; WATCHDOG=1 when WatchdogSec= is set. Without a service manager
// it does nothing and starts no thread.
#ifndef MEMFUSE_FSD_SERVICE_STATUS_H_
#define MEMFUSE_FSD_SERVICE_STATUS_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "fsd/ops/ops.h"

namespace memfuse::fsd {

class ServiceStatus {
 public:
  // How long each sign of progress extends the stop timeout.
  static constexpr absl::Duration kStopExtension = absl::Seconds(30);

  // `ctx` (its budget and log, which may be null) outlives this object.
  ServiceStatus(std::string mountpoint, const ops::Context* ctx);
  ~ServiceStatus();
  ServiceStatus(const ServiceStatus&) = delete;
  ServiceStatus& operator=(const ServiceStatus&) = delete;

  void Mounted();                      // READY=1, and reports begin
  void Stopping();                     // STOPPING=1 (idempotent)
  void Draining(std::string_view line);  // the drain's progress line

 private:
  void Run();
  // The STATUS= line for the state now.
  std::string Line() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string mountpoint_;
  const ops::Context* const ctx_;
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  std::string drain_line_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace memfuse::fsd

#endif  // MEMFUSE_FSD_SERVICE_STATUS_H_
