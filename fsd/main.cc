// mem-fuse (fsd): parse flags, mount, run.
#include <linux/capability.h>
#include <malloc.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <memory>

#include "common/capabilities.h"
#include "common/service_notify.h"
#include "fsd/block_budget.h"
#include "fsd/mirror_client.h"
#include "fsd/mutation_log.h"
#include "fsd/options.h"
#include "fsd/ops/ops.h"
#include "fsd/service_status.h"
#include "fsd/session.h"
#include "fsd/tree.h"
#include "glog/logging.h"

int main(int argc, char** argv) {
  // Up to 64 FUSE threads, each of which would get a malloc arena of its
  // own that keeps what was freed in it (gRPC's and protobuf's message
  // buffers): a few arenas keep fsd's memory near --cache-size. Blocks
  // themselves come from huge pages (fsd/block_memory.h).
  mallopt(M_ARENA_MAX, 2);
  memfuse::common::service::Init();
  using namespace memfuse::fsd;
  ParseResult parsed = ParseOptions(argc, argv);
  if (!parsed.options) {
    (parsed.exit_code == 0 ? std::cout : std::cerr) << parsed.message
                                                     << std::flush;
    if (parsed.exit_code != 0) std::cerr << "\n";
    return parsed.exit_code;
  }
  const Options& options = *parsed.options;

  FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv[0]);

  // Root's fsd keeps what it needs for its whole life, and no more (before
  // any thread starts: capabilities are per thread):
  //   CAP_SYS_ADMIN      mount and unmount; the agent's mount namespace
  //   CAP_SYS_CHROOT     the agent's way back when that namespace fails
  //   CAP_DAC_OVERRIDE   reach a mountpoint and mirror of any mode
  //   CAP_CHOWN, CAP_FOWNER, CAP_FSETID, CAP_MKNOD
  //                      what a local mirror's agent keeps (an agent it
  //                      starts again gets at most what fsd has)
  //   CAP_SETUID, CAP_SETGID, CAP_SETPCAP
  //                      the agent's change of user and its own drop
  //   CAP_KILL           end an agent that runs as another user
  // The rest (raw I/O, modules, ptrace, the network's administration,
  // ...) leaves every set, its children's too.
  if (memfuse::common::HasCapability(CAP_SETPCAP)) {
    if (absl::Status kept = memfuse::common::KeepOnlyCapabilities(
            {CAP_SYS_ADMIN, CAP_SYS_CHROOT, CAP_DAC_OVERRIDE, CAP_CHOWN,
             CAP_FOWNER, CAP_FSETID, CAP_MKNOD, CAP_SETUID, CAP_SETGID,
             CAP_SETPCAP, CAP_KILL});
        !kept.ok()) {
      std::cerr << "mem-fuse: dropping capabilities: " << kept.message()
                << "\n";
      return 1;
    }
  }

  BlockBudget budget(options.cache_bytes());
  Tree tree(options.block_bytes(), &budget,
            Caller{geteuid(), getegid()});
  ops::Context ctx{&tree};
  ctx.budget = &budget;

  MutationLog log(options.block_bytes(), options.write_limit_bytes());
  std::unique_ptr<MirrorClient> mirror;
  if (options.has_mirror()) {
    tree.SetMirrorLog(&log);
    mirror = std::make_unique<MirrorClient>(options, &tree, &log);
    tree.SetMirrorReader(mirror->reader());
    if (absl::Status started = mirror->Start(); !started.ok()) {
      std::cerr << "mem-fuse: mirror " << options.mirror
                << options.mirror_socket << ": " << started.message() << "\n";
      return 1;
    }
    ctx.mirror = mirror.get();
    ctx.log = &log;
  }

  ServiceStatus service(options.mountpoint, &ctx);
  SessionHooks hooks;
  hooks.on_mounted = [&service] { service.Mounted(); };
  hooks.on_stopping = [&service] { service.Stopping(); };
  hooks.on_forced = [&mirror] {
    if (mirror != nullptr) mirror->Abandon();
  };
  absl::Status status = RunSession(options, &ctx, std::move(hooks));
  service.Stopping();  // also after an unmount that was not a signal
  int code = 0;
  if (!status.ok()) {
    std::cerr << "mem-fuse: " << status.message() << "\n";
    // A FUSE option libfuse rejects is bad input, like a bad flag.
    code = status.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  if (mirror != nullptr) {
    // Nothing accepted on the mount is dropped on the way out.
    if (!mirror->Drain(ForcedExit(), [&service](std::string_view line) {
          service.Draining(line);
        })) {
      // A forced exit: what was not mirrored has been listed. Nothing is
      // waited for any more (a send blocked on an agent that reads nothing
      // would hold an orderly stop); a spawned agent ends with fsd.
      google::FlushLogFiles(google::GLOG_INFO);
      std::fflush(nullptr);
      _exit(1);
    }
    tree.StopMirrorReads();
    mirror->Stop();
  }
  return code;
}
