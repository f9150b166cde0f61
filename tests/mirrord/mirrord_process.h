// Helpers for the process-level tests of mem-fuse-mirrord: temp dirs, the
// real agent binary run as a child, and a gRPC client of it.
//
// Cleanup is unconditional: a MirrordProcess ends only the PID it started
// (SIGKILL, then waitpid) when destroyed; a ScratchDir removes its tree.
// Every wait is bounded.
//
// Threading: each object belongs to the test thread that made it.
#ifndef MEMFUSE_TESTS_MIRRORD_MIRRORD_PROCESS_H_
#define MEMFUSE_TESTS_MIRRORD_MIRRORD_PROCESS_H_

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "mirror.grpc.pb.h"

namespace memfuse::mirrord_test {

namespace pb = ::memfuse::mirror::v1;

// MEMFUSE_BIN_DIR "/mem-fuse-mirrord".
std::string MirrordBinary();

// Polls `condition` every 10 ms until it holds or `timeout` passes.
bool WaitFor(const std::function<bool()>& condition,
             std::chrono::milliseconds timeout);

// A mkdtemp directory under /tmp (mode 0755), removed with all it holds.
class ScratchDir {
 public:
  static absl::StatusOr<ScratchDir> Create(const std::string& prefix);
  ScratchDir(ScratchDir&& other) noexcept;
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  ~ScratchDir();
  const std::string& path() const { return path_; }

 private:
  explicit ScratchDir(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

struct Exit {
  bool exited = false;  // false: killed by a signal
  int code_or_signal = 0;
};
std::string ToString(const Exit& exit);

// A child process with stdout and stderr in a log file.
class MirrordProcess {
 public:
  // Starts `argv` (argv[0] a path). `pass_fd`, if >= 0, is the child's
  // descriptor `as_fd` (dup2'ed, close-on-exec cleared).
  static absl::StatusOr<std::unique_ptr<MirrordProcess>> Start(
      const std::vector<std::string>& argv, const std::string& log_path,
      int pass_fd = -1, int as_fd = -1);

  MirrordProcess(const MirrordProcess&) = delete;
  MirrordProcess& operator=(const MirrordProcess&) = delete;
  ~MirrordProcess();  // SIGKILL and reap, if still running

  pid_t pid() const { return pid_; }
  std::string Log() const;

  // Waits at most `timeout` for the exit; nullopt if still running.
  std::optional<Exit> Wait(std::chrono::milliseconds timeout);
  // Sends `sig`, then Wait(timeout).
  std::optional<Exit> SignalAndWait(int sig, std::chrono::milliseconds timeout);

 private:
  MirrordProcess(pid_t pid, std::string log_path)
      : pid_(pid), log_path_(std::move(log_path)) {}
  pid_t pid_;
  std::string log_path_;
  std::optional<Exit> exit_;
};

// Runs `argv` to completion (killed after `timeout`): exit and output.
struct CommandResult {
  Exit exit;
  std::string output;
};
absl::StatusOr<CommandResult> RunCommand(const std::vector<std::string>& argv,
                                         std::chrono::milliseconds timeout);

// A client of the agent at Unix socket `path`.
std::unique_ptr<pb::Mirror::Stub> ConnectUnix(const std::string& path);

// A context whose calls take at most 10 s, waiting for the connection
// unless `wait_for_ready` is false (then a refused one fails at once).
std::unique_ptr<grpc::ClientContext> Context(bool wait_for_ready = true);

// Handshake with protocol 1 and a 64 KiB block size.
absl::StatusOr<pb::HandshakeResponse> Handshake(pb::Mirror::Stub* stub,
                                                uint64_t session,
                                                bool wait_for_ready = true);

// Sends `mutations` on one Apply stream, one at a time, and returns their
// acks (an error if the stream breaks first).
absl::StatusOr<std::vector<pb::Ack>> ApplyAll(
    pb::Mirror::Stub* stub, const std::vector<pb::Mutation>& mutations);

// Sends `bindings` on one Bind stream.
absl::Status BindAll(pb::Mirror::Stub* stub,
                     const std::vector<pb::Binding>& bindings);

// Mutations and bindings, built.
pb::Mutation CreateOp(uint64_t seq, uint64_t parent, const std::string& name,
                      uint64_t id, uint32_t mode,
                      const std::string& target = "");
pb::Mutation WriteOp(uint64_t seq, uint64_t id, uint64_t offset,
                     const std::string& data);
pb::Mutation RenameOp(uint64_t seq, uint64_t parent, const std::string& name,
                      uint64_t new_parent, const std::string& new_name,
                      uint64_t id);
pb::Mutation SyncOp(uint64_t seq, uint64_t id);
pb::Binding MakeBinding(uint64_t id, uint64_t parent, const std::string& name);

// Every path below `root` with its type, mode, owner, size and contents:
// two equal snapshots mean nothing changed.
std::string Snapshot(const std::string& root);

}  // namespace memfuse::mirrord_test

#endif  // MEMFUSE_TESTS_MIRRORD_MIRRORD_PROCESS_H_
