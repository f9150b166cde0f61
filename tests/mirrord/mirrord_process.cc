#include "tests/mirrord/mirrord_process.h"

#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

#ifndef MEMFUSE_BIN_DIR
#error "MEMFUSE_BIN_DIR must name the directory holding mem-fuse-mirrord"
#endif

namespace memfuse::mirrord_test {
namespace {

namespace fs = std::filesystem;

absl::Status Errno(const std::string& what) {
  return absl::InternalError(absl::StrCat(what, ": ", std::strerror(errno)));
}

Exit Decode(int status) {
  if (WIFEXITED(status)) return Exit{true, WEXITSTATUS(status)};
  return Exit{false, WIFSIGNALED(status) ? WTERMSIG(status) : -1};
}

// Forks and execs `argv` with stdout/stderr on `out_fd`; the child gets
// SIGKILL if the test process dies.
absl::StatusOr<pid_t> Spawn(const std::vector<std::string>& argv, int out_fd,
                            int pass_fd, int as_fd) {
  std::vector<char*> args;
  for (const std::string& a : argv)
    args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) return Errno("fork");
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(126);
    // The test binary may have signals blocked; the agent must not inherit.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    const int null_fd = open("/dev/null", O_RDONLY);
    if (null_fd >= 0) dup2(null_fd, STDIN_FILENO);
    dup2(out_fd, STDOUT_FILENO);
    dup2(out_fd, STDERR_FILENO);
    if (pass_fd >= 0) {
      if (pass_fd == as_fd) {
        fcntl(as_fd, F_SETFD, 0);
      } else {
        dup2(pass_fd, as_fd);  // dup2 clears close-on-exec
      }
    }
    execvp(args[0], args.data());
    _exit(127);
  }
  return pid;
}

}  // namespace

std::string MirrordBinary() { return MEMFUSE_BIN_DIR "/mem-fuse-mirrord"; }

bool WaitFor(const std::function<bool()>& condition,
             std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (condition()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return condition();
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

// --- ScratchDir ---

absl::StatusOr<ScratchDir> ScratchDir::Create(const std::string& prefix) {
  std::string templ = absl::StrCat("/tmp/", prefix, "-XXXXXX");
  if (mkdtemp(templ.data()) == nullptr) return Errno("mkdtemp");
  if (chmod(templ.c_str(), 0755) != 0) return Errno("chmod");
  return ScratchDir(std::move(templ));
}

ScratchDir::ScratchDir(ScratchDir&& other) noexcept
    : path_(std::exchange(other.path_, "")) {}

ScratchDir::~ScratchDir() {
  if (path_.empty()) return;
  std::error_code ec;
  fs::remove_all(path_, ec);
  if (ec) std::cerr << "warning: removing " << path_ << ": " << ec.message();
}

std::string ToString(const Exit& exit) {
  return exit.exited ? absl::StrCat("exit code ", exit.code_or_signal)
                     : absl::StrCat("killed by signal ", exit.code_or_signal);
}

// --- MirrordProcess ---

absl::StatusOr<std::unique_ptr<MirrordProcess>> MirrordProcess::Start(
    const std::vector<std::string>& argv, const std::string& log_path,
    int pass_fd, int as_fd) {
  const int out_fd =
      open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (out_fd < 0) return Errno(absl::StrCat("open ", log_path));
  absl::StatusOr<pid_t> pid = Spawn(argv, out_fd, pass_fd, as_fd);
  close(out_fd);
  if (!pid.ok()) return pid.status();
  return std::unique_ptr<MirrordProcess>(new MirrordProcess(*pid, log_path));
}

MirrordProcess::~MirrordProcess() {
  if (exit_.has_value()) return;
  kill(pid_, SIGKILL);
  int status = 0;
  waitpid(pid_, &status, 0);
}

std::string MirrordProcess::Log() const {
  std::ifstream in(log_path_);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::optional<Exit> MirrordProcess::Wait(std::chrono::milliseconds timeout) {
  if (exit_.has_value()) return exit_;
  WaitFor(
      [&] {
        int status = 0;
        const pid_t r = waitpid(pid_, &status, WNOHANG);
        if (r == pid_) exit_ = Decode(status);
        if (r < 0 && errno == ECHILD) exit_ = Exit{false, -1};
        return exit_.has_value();
      },
      timeout);
  return exit_;
}

std::optional<Exit> MirrordProcess::SignalAndWait(
    int sig, std::chrono::milliseconds timeout) {
  if (!exit_.has_value()) kill(pid_, sig);
  return Wait(timeout);
}

absl::StatusOr<CommandResult> RunCommand(const std::vector<std::string>& argv,
                                         std::chrono::milliseconds timeout) {
  char log[] = "/tmp/memfuse-command-XXXXXX";
  const int fd = mkstemp(log);
  if (fd < 0) return Errno("mkstemp");
  close(fd);
  absl::StatusOr<std::unique_ptr<MirrordProcess>> process =
      MirrordProcess::Start(argv, log);
  if (!process.ok()) {
    unlink(log);
    return process.status();
  }
  std::optional<Exit> exit = (*process)->Wait(timeout);
  std::string output = (*process)->Log();
  process->reset();
  unlink(log);
  if (!exit.has_value()) {
    return absl::DeadlineExceededError(
        absl::StrCat(argv[0], " did not finish; output: ", output));
  }
  return CommandResult{*exit, std::move(output)};
}

// --- the client ---

std::unique_ptr<pb::Mirror::Stub> ConnectUnix(const std::string& path) {
  return pb::Mirror::NewStub(grpc::CreateChannel(
      absl::StrCat("unix:", path), grpc::InsecureChannelCredentials()));
}

std::unique_ptr<grpc::ClientContext> Context(bool wait_for_ready) {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_wait_for_ready(wait_for_ready);
  context->set_deadline(std::chrono::system_clock::now() +
                        std::chrono::seconds(10));
  return context;
}

absl::StatusOr<pb::HandshakeResponse> Handshake(pb::Mirror::Stub* stub,
                                                uint64_t session,
                                                bool wait_for_ready) {
  pb::HandshakeRequest request;
  request.set_protocol_version(1);
  request.set_session_id(session);
  request.set_block_size(64 * 1024);
  pb::HandshakeResponse response;
  grpc::Status status =
      stub->Handshake(Context(wait_for_ready).get(), request, &response);
  if (!status.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                        status.error_message());
  }
  return response;
}

absl::StatusOr<std::vector<pb::Ack>> ApplyAll(
    pb::Mirror::Stub* stub, const std::vector<pb::Mutation>& mutations) {
  std::unique_ptr<grpc::ClientContext> context = Context();
  auto stream = stub->Apply(context.get());
  std::vector<pb::Ack> acks;
  for (const pb::Mutation& m : mutations) {
    pb::Ack ack;
    if (!stream->Write(m) || !stream->Read(&ack)) break;
    acks.push_back(ack);
  }
  stream->WritesDone();
  grpc::Status status = stream->Finish();
  if (!status.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                        status.error_message());
  }
  if (acks.size() != mutations.size()) {
    return absl::InternalError("the stream ended early");
  }
  return acks;
}

absl::Status BindAll(pb::Mirror::Stub* stub,
                     const std::vector<pb::Binding>& bindings) {
  std::unique_ptr<grpc::ClientContext> context = Context();
  pb::BindResponse response;
  auto writer = stub->Bind(context.get(), &response);
  for (const pb::Binding& b : bindings) {
    if (!writer->Write(b)) break;
  }
  writer->WritesDone();
  grpc::Status status = writer->Finish();
  if (!status.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                        status.error_message());
  }
  return absl::OkStatus();
}

pb::Mutation CreateOp(uint64_t seq, uint64_t parent, const std::string& name,
                      uint64_t id, uint32_t mode, const std::string& target) {
  pb::Mutation m;
  m.set_seq(seq);
  pb::Create* c = m.mutable_create();
  c->set_parent(parent);
  c->set_name(name);
  c->set_symlink_target(target);
  pb::Attr* a = c->mutable_attr();
  a->set_id(id);
  a->set_mode(mode);
  a->set_mtime_ns(1600000000000000000);
  a->set_atime_ns(1600000000000000000);
  return m;
}

pb::Mutation WriteOp(uint64_t seq, uint64_t id, uint64_t offset,
                     const std::string& data) {
  pb::Mutation m;
  m.set_seq(seq);
  m.mutable_write()->set_id(id);
  m.mutable_write()->set_offset(offset);
  m.mutable_write()->set_data(data);
  m.mutable_write()->set_mtime_ns(1600000000000000000);
  m.mutable_write()->set_atime_ns(1600000000000000000);
  return m;
}

pb::Mutation RenameOp(uint64_t seq, uint64_t parent, const std::string& name,
                      uint64_t new_parent, const std::string& new_name,
                      uint64_t id) {
  pb::Mutation m;
  m.set_seq(seq);
  pb::Rename* r = m.mutable_rename();
  r->set_parent(parent);
  r->set_name(name);
  r->set_new_parent(new_parent);
  r->set_new_name(new_name);
  r->set_id(id);
  return m;
}

pb::Mutation SyncOp(uint64_t seq, uint64_t id) {
  pb::Mutation m;
  m.set_seq(seq);
  m.mutable_sync()->set_id(id);
  return m;
}

pb::Binding MakeBinding(uint64_t id, uint64_t parent, const std::string& name) {
  pb::Binding b;
  b.set_id(id);
  b.set_parent(parent);
  b.set_name(name);
  return b;
}

std::string Snapshot(const std::string& root) {
  std::map<std::string, std::string> lines;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(root, ec);
       it != fs::recursive_directory_iterator(); it.increment(ec)) {
    const std::string path = it->path().string();
    struct stat st {};
    lstat(path.c_str(), &st);
    std::string line = absl::StrFormat("%o %d:%d s%d", st.st_mode, st.st_uid,
                                       st.st_gid, st.st_size);
    if (S_ISREG(st.st_mode)) {
      std::ifstream in(path, std::ios::binary);
      absl::StrAppend(&line, " [",
                      std::string(std::istreambuf_iterator<char>(in), {}), "]");
    }
    lines[path.substr(root.size())] = line;
  }
  std::string out;
  for (const auto& [path, line] : lines)
    absl::StrAppend(&out, path, " ", line, "\n");
  return out;
}

}  // namespace memfuse::mirrord_test
