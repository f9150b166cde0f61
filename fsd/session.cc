#include "fsd/session.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <thread>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "fsd/kernel_channel.h"
#include "glog/logging.h"

namespace memfuse::fsd {
namespace {

// The kernel lets a FUSE mount hold only 1% of its write-back cache in dirty
// pages (about 48 MB here) before writers wait for the daemon, which leaves
// the cores idle between batches. fsd takes written data at memory speed, so
// it lets the kernel buffer up to `bytes` for this mount instead.
//
// The mount's bdi is named by its device number, read from mountinfo: a
// stat() of the mount point would wait for this very daemon.
void RaiseWritebackLimit(const std::string& mountpoint, uint64_t bytes) {
  char real[PATH_MAX];
  if (realpath(mountpoint.c_str(), real) == nullptr) return;
  std::ifstream mountinfo("/proc/self/mountinfo");
  std::string line, device;
  while (std::getline(mountinfo, line)) {
    // "ID PARENT MAJ:MIN ROOT MOUNTPOINT ..." with octal escapes (\040).
    std::vector<std::string> fields = absl::StrSplit(line, ' ');
    if (fields.size() < 5) continue;
    std::string point;
    for (size_t i = 0; i < fields[4].size(); ++i) {
      if (fields[4][i] == '\\' && i + 3 < fields[4].size()) {
        point.push_back(static_cast<char>(std::stoi(fields[4].substr(i + 1, 3),
                                                    nullptr, 8)));
        i += 3;
      } else {
        point.push_back(fields[4][i]);
      }
    }
    if (point == real) device = fields[2];  // the last one is ours
  }
  if (device.empty()) return;
  const std::string knob = absl::StrCat("/sys/class/bdi/", device, "/max_bytes");
  std::ofstream out(knob);
  out << bytes;
  out.close();
  if (!out) {
    LOG(INFO) << "kernel write-back buffer for this mount left at its default"
              << " (cannot write " << knob << ")";
  }
}

std::atomic<bool> g_forced{false};
std::atomic<int> g_signals{0};
std::atomic<bool> g_mounted{false};
int g_event_fd = -1;

void OnSignal(int) {
  const int saved = errno;
  if (!g_mounted.load() || g_signals.fetch_add(1) > 0) g_forced = true;
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(g_event_fd, &one, sizeof(one));
  errno = saved;
}

void OnWake(int) {}  // only interrupts the loop thread's wait

void InstallSignalHandlers() {
  g_event_fd = eventfd(0, EFD_CLOEXEC);
  struct sigaction sa = {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaction(sig, &sa, nullptr);
  sa.sa_handler = OnWake;
  sigaction(SIGUSR1, &sa, nullptr);
  sa.sa_handler = SIG_IGN;
  sigaction(SIGPIPE, &sa, nullptr);
}

// Unmounts like umount(8): the kernel writes its dirty pages back to the
// still running loop first, then the loop sees the device go away.
bool UnmountCleanly(const std::string& mountpoint) {
  if (geteuid() == 0) return umount2(mountpoint.c_str(), 0) == 0;
  const pid_t pid = fork();
  if (pid < 0) return false;
  if (pid == 0) {
    const int null = open("/dev/null", O_WRONLY);
    if (null >= 0) dup2(null, STDERR_FILENO);
    execlp("fusermount3", "fusermount3", "-u", mountpoint.c_str(),
           static_cast<char*>(nullptr));
    _exit(127);
  }
  int status;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

// Set by the thread flushing a busy mount once syncfs returned.
std::atomic<bool> g_flushed{false};

// Waits for signals during the session and turns the first into an
// unmount. Ends when `done` is set and the event fd written.
void WatchSignals(fuse_session* se, std::string mountpoint,
                  pthread_t loop_thread, const std::atomic<bool>* done,
                  const SessionHooks* hooks) {
  bool unmounting = false;
  auto end_loop = [&] {
    fuse_session_exit(se);
    pthread_kill(loop_thread, SIGUSR1);
  };
  while (true) {
    uint64_t count;
    if (read(g_event_fd, &count, sizeof(count)) < 0 && errno == EINTR) {
      continue;
    }
    if (done->load()) return;
    if (g_forced) {
      // A second signal: nothing waits for the mirror any more, and the
      // loop ends even if the flush never returns.
      LOG(WARNING) << "second signal: ending without waiting for the mirror";
      if (hooks->on_forced) hooks->on_forced();
      end_loop();
      continue;
    }
    if (g_flushed) {
      end_loop();
      continue;
    }
    if (unmounting) continue;
    unmounting = true;
    LOG(INFO) << "signal received: unmounting " << mountpoint;
    if (hooks->on_stopping) hooks->on_stopping();
    // On a thread of its own: the unmount and the flush write the kernel's
    // dirty pages back, which waits for the mirror at the dirty limit, and
    // a second signal must still be heard meanwhile. It touches nothing but
    // the event fd, which lives as long as the process.
    std::thread([mountpoint] {
      if (UnmountCleanly(mountpoint)) return;  // the loop ends by itself
      LOG(WARNING) << mountpoint << " is busy: flushing and detaching it";
      const int fd = open(mountpoint.c_str(), O_RDONLY | O_DIRECTORY);
      if (fd >= 0) {
        syncfs(fd);
        close(fd);
      }
      g_flushed = true;
      const uint64_t one = 1;
      [[maybe_unused]] ssize_t n = write(g_event_fd, &one, sizeof(one));
    }).detach();
  }
}

}  // namespace

const std::atomic<bool>& ForcedExit() { return g_forced; }

absl::Status RunSession(const Options& options, ops::Context* ctx,
                        SessionHooks hooks) {
  std::vector<std::string> mount_options = {
      "default_permissions", "fsname=mem-fuse", "subtype=mem-fuse"};
  // Root mounts are shared machine-wide, as a disk would be; permissions are
  // still enforced by default_permissions.
  if (geteuid() == 0) mount_options.push_back("allow_other");
  mount_options.insert(mount_options.end(), options.fuse_options.begin(),
                       options.fuse_options.end());

  std::vector<std::string> args = {"mem-fuse", "-o",
                                   absl::StrJoin(mount_options, ",")};
  if (options.debug) args.push_back("-d");
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  fuse_args fargs = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());

  const fuse_lowlevel_ops& table = ops::OperationTable();
  fuse_session* se = fuse_session_new(&fargs, &table, sizeof(table), ctx);
  if (se == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot start FUSE with options -o ",
                     absl::StrJoin(mount_options, ",")));
  }
  absl::Cleanup destroy = [se] { fuse_session_destroy(se); };
  InstallSignalHandlers();
  if (fuse_session_mount(se, options.mountpoint.c_str()) != 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot mount on ", options.mountpoint,
                     " (is /dev/fuse usable, and fusermount3 installed?)"));
  }
  absl::Cleanup unmount = [se] { fuse_session_unmount(se); };
  if (absl::Status hooked = InstallKernelChannelHooks(se, ctx->tree);
      !hooked.ok()) {
    return hooked;
  }
  // With a mirror, pages the kernel holds dirty are not mirrored yet
  // either: they are bounded by the write limit like fsd's own.
  uint64_t writeback = std::min<uint64_t>(options.cache_bytes(), 512 << 20);
  if (options.has_mirror()) {
    writeback = std::min(writeback, options.write_limit_bytes());
  }
  RaiseWritebackLimit(options.mountpoint, writeback);
  LOG(INFO) << "mounted on " << options.mountpoint << " (cache "
            << options.cache_size_mb << " MB, block " << options.block_size_kb
            << " KB, "
            << (options.has_mirror() ? "mirrored" : "no mirror") << ")";

  std::atomic<bool> done{false};
  g_mounted = true;
  std::thread watcher(WatchSignals, se, options.mountpoint, pthread_self(),
                      &done, &hooks);
  absl::Cleanup stop_watcher = [&] {
    g_mounted = false;
    done = true;
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t n = write(g_event_fd, &one, sizeof(one));
    watcher.join();
  };

  std::unique_ptr<fuse_loop_config, void (*)(fuse_loop_config*)> loop(
      fuse_loop_cfg_create(), fuse_loop_cfg_destroy);
  fuse_loop_cfg_set_clone_fd(loop.get(), 1);
  fuse_loop_cfg_set_idle_threads(loop.get(), 8);
  // Writes waiting at the dirty limit each hold a worker (the kernel sends
  // up to 12 background writes at once); with libfuse's default of 10
  // workers they could leave none for reads and lookups.
  fuse_loop_cfg_set_max_threads(loop.get(), 64);
  if (hooks.on_mounted) hooks.on_mounted();
  const int rc = fuse_session_loop_mt(se, loop.get());
  LOG(INFO) << "unmounting " << options.mountpoint;
  if (rc != 0 && rc != SIGINT && rc != SIGTERM && rc != SIGHUP) {
    return absl::InternalError(absl::StrCat("FUSE loop failed: ", rc));
  }
  return absl::OkStatus();
}

}  // namespace memfuse::fsd
