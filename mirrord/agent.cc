// The agent's run, for mem-fuse-mirrord's main (and a test build of it):
// parse flags, open the mirror and the socket, drop privileges, serve until
// SIGTERM/SIGINT (or, with --fd, until the peer goes).
//
// With --user, the mirror root and the listening socket are opened as root
// first; the socket file is then handed to that user (0600), so exactly the
// uids allowed by default can reach it: root (fsd usually runs as root for
// /dev/fuse) and the agent's own. A mirror directory created here is given
// to that user too; an existing one is left as it is.
#include "mirrord/agent.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/capabilities.h"
#include "common/service_notify.h"
#include "common/unique_fd.h"
#include "glog/logging.h"
#include "mirrord/backend/http_backend.h"
#include "mirrord/backend/local_backend.h"
#include "mirrord/confine.h"
#include "mirrord/launch.h"
#include "mirrord/listener.h"
#include "mirrord/server.h"

namespace {

using memfuse::common::UniqueFd;
namespace mirrord = memfuse::mirrord;

int BadInput(const std::string& message) {
  std::cerr << "mem-fuse-mirrord: " << message << " (see --help)\n";
  return 2;
}

int Fatal(const std::string& message) {
  std::cerr << "mem-fuse-mirrord: " << message << "\n";
  return 1;
}

// READY=1 once constructed, then STATUS= (and WATCHDOG=1 when
// WatchdogSec= is set) from a thread of its own until Stop(): the last
// change applied, and the one being retried with its error. Does nothing
// without a service manager.
class ServiceReport {
 public:
  ServiceReport(mirrord::MirrorService* service, std::string serving)
      : service_(service), serving_(std::move(serving)) {
    if (!memfuse::common::service::Enabled()) return;
    memfuse::common::service::Ready(serving_);
    thread_ = std::thread([this] { Run(); });
  }
  ~ServiceReport() { Stop(); }

  void Stop() {
    {
      absl::MutexLock l(&mu_);
      if (done_) return;
      done_ = true;
    }
    if (thread_.joinable()) thread_.join();
    memfuse::common::service::Stopping(
        "stopping: finishing the change being applied");
  }

 private:
  void Run() {
    namespace service = memfuse::common::service;
    const absl::Duration watchdog = service::WatchdogInterval();
    absl::Duration tick = absl::Seconds(2);
    if (watchdog > absl::ZeroDuration()) tick = std::min(tick, watchdog / 2);
    absl::MutexLock l(&mu_);
    while (!mu_.AwaitWithTimeout(absl::Condition(&done_), tick)) {
      memfuse::mirror::v1::StatusRequest request;
      memfuse::mirror::v1::StatusResponse status;
      service_->GetStatus(nullptr, &request, &status);
      std::string line = absl::StrCat(serving_, "; applied up to change ",
                                      status.last_applied_seq());
      if (!status.retrying().empty()) {
        absl::StrAppend(&line, "; retrying ", status.retrying(), ": ",
                        status.retrying_error(), " (",
                        status.retrying_attempts(), " attempts)");
      } else if (!status.backend_healthy()) {
        absl::StrAppend(&line, "; mirror failing: ", status.last_error());
      }
      service::Status(line);
      if (watchdog > absl::ZeroDuration()) service::Watchdog();
    }
  }

  mirrord::MirrorService* const service_;
  const std::string serving_;
  absl::Mutex mu_;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

// The user an HTTP agent started as root becomes when --user does not say:
// `nobody`, or uid and gid 65534 where there is no such entry.
mirrord::User UnprivilegedUser() {
  absl::StatusOr<mirrord::User> nobody = mirrord::LookUpUser("nobody");
  if (nobody.ok()) return *nobody;
  return mirrord::User{"nobody", 65534, 65534};
}

// Trees a confined HTTP agent may still read: the TLS trust store, where
// Debian and others keep it.
std::vector<std::string> TrustStorePaths() {
  return {"/etc/ssl", "/usr/share/ca-certificates", "/usr/lib/ssl",
          "/etc/pki"};
}

// Files every confined agent still reads: the local time zone (log lines),
// the CPUs online (thread pools), the clock's rate (abseil's timers),
// and the kernel's overcommit policy (glibc's allocator).
std::vector<std::string> RuntimeReadPaths() {
  return {"/etc/localtime", "/sys/devices/system/cpu",
          "/proc/sys/vm/overcommit_memory"};
}

int Run(const mirrord::Options& options, const mirrord::AgentHooks& hooks) {
  const bool local = options.mirror_url.empty();
  const uid_t started_as = getuid();
  std::optional<mirrord::User> user;
  if (!options.user.empty()) {
    if (geteuid() != 0) {
      return BadInput("--user needs the agent to start as root");
    }
    absl::StatusOr<mirrord::User> found = mirrord::LookUpUser(options.user);
    if (!found.ok()) {
      return BadInput(absl::StrCat("--user ", options.user, ": ",
                                   found.status().message()));
    }
    user = *found;
  } else if (!local && geteuid() == 0) {
    // An HTTP mirror needs nothing of root's.
    user = UnprivilegedUser();
  }
  if (options.fd >= 0) {
    struct stat st;
    if (fstat(options.fd, &st) != 0 || !S_ISSOCK(st.st_mode)) {
      return BadInput(
          absl::StrCat("--fd ", options.fd, ": not an open socket"));
    }
  }

  // The mirror: opened before any drop; a local one is created for the
  // user if missing, an HTTP one must answer now (within its connect
  // timeout), never a hang.
  std::unique_ptr<mirrord::Backend> backend;
  mirrord::ConfinePlan plan;
  plan.kind = local ? mirrord::MirrorKind::kLocal : mirrord::MirrorKind::kHttp;
  plan.keep_capabilities = mirrord::MirrorCapabilities(local);
  plan.user = user;
  plan.seccomp = mirrord::SeccompModeFromEnvironment();
  plan.read_only_paths = RuntimeReadPaths();
  const std::string mirror_name = local ? options.mirror_path
                                        : options.mirror_url;
  if (!local) {
    mirrord::HttpBackend::Options http;
    http.base_url = options.mirror_url;
    http.root_node = options.root_node;
    // The owner shown for the server's files: whoever started the agent,
    // or the user --user names.
    http.uid = !options.user.empty() ? user->uid : geteuid();
    http.gid = !options.user.empty() ? user->gid : getegid();
    if (hooks.adjust_http) hooks.adjust_http(&http);
    absl::StatusOr<std::unique_ptr<mirrord::HttpBackend>> opened =
        mirrord::HttpBackend::Open(std::move(http));
    if (!opened.ok()) {
      return Fatal(absl::StrCat("mirror ", opened.status().message()));
    }
    // Once confined, the agent reads neither /etc/hosts nor resolv.conf.
    if (absl::Status pinned = (*opened)->client().PinAddress(); !pinned.ok()) {
      return Fatal(absl::StrCat("mirror ", options.mirror_url, ": ",
                                pinned.message()));
    }
    plan.tcp_port = (*opened)->client().port();
    if ((*opened)->client().https()) {
      for (std::string& path : TrustStorePaths()) {
        plan.read_only_paths.push_back(std::move(path));
      }
    }
    backend = std::move(*opened);
  } else {
    if (user.has_value() && mkdir(options.mirror_path.c_str(), 0755) == 0 &&
        chown(options.mirror_path.c_str(), user->uid, user->gid) != 0) {
      return Fatal(absl::StrCat("mirror ", options.mirror_path,
                                ": chown: ", std::strerror(errno)));
    }
    absl::StatusOr<std::unique_ptr<mirrord::LocalBackend>> opened =
        mirrord::LocalBackend::Open(options.mirror_path,
                                    hooks.env != nullptr
                                        ? hooks.env
                                        : mirrord::Env::Default());
    if (!opened.ok()) {
      return Fatal(absl::StrCat("mirror ", options.mirror_path, ": ",
                                opened.status().message()));
    }
    plan.mirror_root_fd = (*opened)->root_fd();
    backend = std::move(*opened);
  }

  // The way in.
  UniqueFd listen_fd;
  std::string where;
  // --listen: the socket file, removed at exit if it is still ours,
  // through its directory (opened now: the agent cannot name it later).
  UniqueFd socket_dir;
  std::string socket_name;
  ino_t socket_ino = 0;
  if (!options.listen_path.empty()) {
    // The socket file goes to the agent's user, so that it may remove it
    // at exit where the directory lets owners do so (/tmp); who may talk
    // to it is the peer check's to say (below).
    absl::StatusOr<UniqueFd> fd = mirrord::ListenOnPath(
        options.listen_path, user ? user->uid : static_cast<uid_t>(-1),
        user ? user->gid : static_cast<gid_t>(-1));
    if (!fd.ok()) {
      return Fatal(absl::StrCat("--listen ", options.listen_path, ": ",
                                fd.status().message()));
    }
    listen_fd = std::move(*fd);
    where = options.listen_path;
    const size_t slash = options.listen_path.rfind('/');
    const std::string dir = slash == std::string::npos ? "."
                            : slash == 0 ? "/"
                                         : options.listen_path.substr(0, slash);
    socket_name = options.listen_path.substr(slash + 1);
    socket_dir = UniqueFd(open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    struct stat st;
    if (socket_dir.valid() &&
        fstatat(socket_dir.get(), socket_name.c_str(), &st,
                AT_SYMLINK_NOFOLLOW) == 0) {
      socket_ino = st.st_ino;
    }
    plan.socket_dir_fd = socket_dir.get();
  } else if (options.activation) {
    absl::StatusOr<UniqueFd> fd = mirrord::TakeActivationSocket();
    if (!fd.ok()) return Fatal(std::string(fd.status().message()));
    listen_fd = std::move(*fd);
    where = "the socket systemd passed";
  } else {
    where = absl::StrCat("fd ", options.fd);
  }

  // From here on the agent holds only what its mirror needs, and parses
  // nothing from fsd before this point.
  absl::StatusOr<mirrord::ConfineReport> confined = mirrord::Confine(plan);
  if (!confined.ok()) {
    return Fatal(absl::StrCat("confining the agent: ",
                              confined.status().message()));
  }
  if (user.has_value()) {
    LOG(INFO) << "running as " << user->name << " (uid " << user->uid
              << ", gid " << user->gid << ")";
  }
  for (const std::string& skipped : confined->skipped) {
    LOG(WARNING) << skipped;
  }
  LOG(INFO) << "confined: uid " << geteuid() << ", capabilities "
            << memfuse::common::CapabilityNames(
                   geteuid() == 0 ? plan.keep_capabilities : std::vector<int>{})
            << (confined->mount_namespace ? ", own mount namespace" : "")
            << (confined->landlock_abi > 0
                    ? absl::StrCat(", Landlock ABI ", confined->landlock_abi)
                    : std::string())
            << ", seccomp"
            << (plan.seccomp == mirrord::SeccompMode::kLog ? " (log only)"
                                                            : "");
  // A mirror the agent cannot write would stall fsd behind endless
  // retries: say so now instead.
  if (local && faccessat(plan.mirror_root_fd, ".", W_OK | X_OK, 0) != 0) {
    if (errno == EACCES) {
      return Fatal(absl::StrCat("mirror ", options.mirror_path,
                                ": not writable by uid ", geteuid(),
                                " (see --user)"));
    }
    LOG(WARNING) << "mirror " << options.mirror_path
                 << " is not writable: " << std::strerror(errno);
  }
  backend->Start();
  absl::flat_hash_set<uid_t> allowed(options.allow_uids.begin(),
                                     options.allow_uids.end());
  // By default root and the agent's own user may connect; when that user
  // is nobody by default (an HTTP agent started as root), not nobody,
  // which other daemons share, but whoever started the agent.
  if (allowed.empty()) {
    allowed = {0, !options.user.empty() ? user->uid : started_as};
  }

  if (options.fd >= 0) {
    absl::Status peer = mirrord::CheckPeer(options.fd, allowed);
    if (!peer.ok()) {
      return Fatal(absl::StrCat("--fd ", options.fd, ": ", peer.message()));
    }
  }

  // The data region: a bad one is refused (writes then carry their data
  // inline, which fsd learns from the handshake), never fatal.
  std::unique_ptr<memfuse::common::MappedRegion> region;
  if (options.data_fd >= 0) {
    absl::StatusOr<std::unique_ptr<memfuse::common::MappedRegion>> mapped =
        memfuse::common::MappedRegion::Map(UniqueFd(options.data_fd));
    if (mapped.ok()) {
      region = std::move(*mapped);
      backend->set_shared_region(region.get());
    } else {
      LOG(WARNING) << "--data-fd " << options.data_fd << ": "
                   << mapped.status().message()
                   << "; file data will come over the socket";
    }
  }

  mirrord::MirrorService service(backend.get());
  std::unique_ptr<grpc::Server> server = mirrord::StartServer(&service);
  if (server == nullptr) return Fatal("cannot start the gRPC server");
  LOG(INFO) << "serving mirror " << mirror_name << " on " << where;

  // A service manager (Type=notify) learns that the socket is served, and
  // then, every few seconds, where the agent stands.
  const std::string serving =
      absl::StrCat("serving mirror ", mirror_name, " on ", where);
  ServiceReport report(&service, serving);

  mirrord::ServeOptions serve;
  serve.server = server.get();
  serve.allowed_uids = &allowed;
  serve.listen_fd = listen_fd.get();
  serve.connected_fd = options.fd;
  absl::StatusOr<mirrord::StopReason> stopped = mirrord::Serve(serve);

  // The Apply stream's current mutation is finished (and acknowledged)
  // when Stop() returns; what is left (reads, idle connections) is cut.
  report.Stop();
  service.Stop();
  server->Shutdown(absl::ToChronoTime(absl::Now()));
  server.reset();

  if (socket_ino != 0) {
    // Remove the socket file if it is still ours (and we still may).
    struct stat st;
    if (fstatat(socket_dir.get(), socket_name.c_str(), &st,
                AT_SYMLINK_NOFOLLOW) == 0 &&
        st.st_ino == socket_ino) {
      unlinkat(socket_dir.get(), socket_name.c_str(), 0);
    }
  }
  if (!stopped.ok()) {
    LOG(ERROR) << "serving failed: " << stopped.status();
    return 1;
  }
  LOG(INFO) << "stopped";
  return 0;
}

}  // namespace

namespace memfuse::mirrord {

int RunAgent(int argc, char** argv, const AgentHooks& hooks) {
  // Before any thread exists: SIGTERM and SIGINT arrive through a signalfd
  // in the serve loop, never as asynchronous handlers.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  mirrord::ParseResult parsed =
      mirrord::ParseOptions(argc, argv, mirrord::ActivationOffered());
  if (!parsed.options) {
    (parsed.exit_code == 0 ? std::cout : std::cerr) << parsed.message;
    if (parsed.exit_code != 0) std::cerr << "\n";
    return parsed.exit_code;
  }
  memfuse::common::service::Init();
  FLAGS_logtostderr = true;
  if (parsed.options->verbose) FLAGS_v = 1;
  google::InitGoogleLogging(argv[0]);
  return Run(*parsed.options, hooks);
}

}  // namespace memfuse::mirrord
