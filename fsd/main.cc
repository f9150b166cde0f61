// mem-fuse (fsd): parse flags, mount, run.
#include <cstdio>
#include <iostream>

#include "fsd/block_budget.h"
#include "fsd/options.h"
#include "fsd/ops/ops.h"
#include "fsd/session.h"
#include "fsd/tree.h"
#include "glog/logging.h"

int main(int argc, char** argv) {
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
  absl::Status status = RunSession(options, &ctx);
  if (!status.ok()) {
    std::cerr << "mem-fuse: " << status.message() << "\n";
    // A FUSE option libfuse rejects is bad input, like a bad flag.
    return status.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  return 0;
}
