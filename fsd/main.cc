// mem-fuse (fsd): parse flags, mount, run.
#include <malloc.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <memory>

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
  // themselves are mappings of their own (FileData::NewBuffer).
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
    tree.SetMirrorReader(mirror.get());
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
