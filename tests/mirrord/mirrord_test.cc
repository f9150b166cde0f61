// Process-level tests of mem-fuse-mirrord: the real binary, started as a
// child (--listen, --fd, or under systemd-socket-activate), driven by a
// gRPC client. They run as root (the uid and --user tests need it).
//
// The binary doubles as the unprivileged probe of the uid test:
// `mirrord_tests --probe-handshake SOCKET` handshakes once and exits 0 on
// success, 3 on failure.
#include <fcntl.h>
#include <grp.h>
#include <grpcpp/create_channel_posix.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "tests/mirrord/mirrord_process.h"
#include "tests/testing/fake_invariant_server.h"

namespace memfuse::mirrord_test {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using std::chrono::seconds;
using memfuse::testing::FakeInvariantServer;

constexpr uint64_t kRoot = 1;
constexpr uint64_t kSession = 0xfeedf00d;
constexpr uint32_t kBlock = 64 * 1024;  // what Handshake() announces
constexpr int kNobody = 65534;
constexpr auto kTimeout = seconds(10);

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

bool RunningUnderCi() {
  const char* ci = getenv("CI");
  return ci != nullptr && std::string(ci) == "true";
}

class MirrordTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "these tests run as root";
    ASSERT_EQ(access(MirrordBinary().c_str(), X_OK), 0)
        << MirrordBinary() << " is missing: build mem-fuse-mirrord";
    absl::StatusOr<ScratchDir> dir = ScratchDir::Create("memfuse-mirrord");
    ASSERT_TRUE(dir.ok()) << dir.status();
    dir_.emplace(std::move(*dir));
    mirror_ = dir_->path() + "/mirror";
    outside_ = dir_->path() + "/outside";
    socket_ = dir_->path() + "/mirrord.sock";
    log_ = dir_->path() + "/mirrord.log";
    ASSERT_EQ(mkdir(outside_.c_str(), 0755), 0);
  }

  // Starts the agent on socket_ and waits until it serves.
  std::unique_ptr<MirrordProcess> Start(std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {MirrordBinary(), "--mirror", mirror_,
                                     "--listen", socket_};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return StartArgv(argv, "serving mirror");
  }

  std::unique_ptr<MirrordProcess> StartArgv(
      const std::vector<std::string>& argv, const std::string& ready_line,
      int pass_fd = -1, int as_fd = -1) {
    const size_t log_before = ReadFile(log_).size();
    absl::StatusOr<std::unique_ptr<MirrordProcess>> p =
        MirrordProcess::Start(argv, log_, pass_fd, as_fd);
    EXPECT_TRUE(p.ok()) << p.status();
    if (!p.ok()) return nullptr;
    MirrordProcess* process = p->get();
    const bool ready = WaitFor(
        [&] {
          return ReadFile(log_).find(ready_line, log_before) !=
                     std::string::npos ||
                 process->Wait(milliseconds(0)).has_value();
        },
        kTimeout);
    EXPECT_TRUE(ready) << "not ready in time; log:\n" << process->Log();
    EXPECT_FALSE(process->Wait(milliseconds(0)).has_value())
        << "exited early; log:\n"
        << process->Log();
    return std::move(*p);
  }

  std::string Log() { return ReadFile(log_); }

  std::optional<ScratchDir> dir_;
  std::string mirror_, outside_, socket_, log_;
};

void ExpectAllOk(const absl::StatusOr<std::vector<pb::Ack>>& acks) {
  ASSERT_TRUE(acks.ok()) << acks.status();
  for (const pb::Ack& ack : *acks) {
    EXPECT_EQ(ack.error(), 0) << "seq " << ack.seq() << ": " << ack.message();
  }
}

TEST_F(MirrordTest, RejectsInvalidInputAndLeavesTheMirror) {
  auto agent = Start();
  ASSERT_NE(agent, nullptr);
  auto stub = ConnectUnix(socket_);
  ASSERT_TRUE(Handshake(stub.get(), kSession).ok());
  ExpectAllOk(ApplyAll(stub.get(), {CreateOp(1, kRoot, "d", 2, S_IFDIR | 0755),
                                    CreateOp(2, 2, "f", 3, S_IFREG | 0644),
                                    WriteOp(3, 3, 0, "kept")}));
  const std::string before = Snapshot(mirror_);
  ASSERT_NE(before, "");

  std::vector<pb::Mutation> bad;
  uint64_t seq = 3;
  for (const std::string& name :
       {std::string("a/b"), std::string("a\0b", 3), std::string("."),
        std::string(".."), std::string(256, 'n'), std::string()}) {
    bad.push_back(CreateOp(++seq, kRoot, name, 10, S_IFREG | 0644));
    bad.push_back(RenameOp(++seq, 2, "f", kRoot, name, 3));
  }
  bad.push_back(CreateOp(++seq, 99, "x", 10, S_IFREG | 0644));  // parent
  bad.push_back(WriteOp(++seq, 77, 0, "x"));                    // id
  bad.push_back(RenameOp(++seq, kRoot, "d", kRoot, "e", 77));
  bad.push_back(WriteOp(++seq, 3, 0, std::string(kBlock + 1, 'x')));
  pb::Mutation reserved;
  reserved.set_seq(++seq);
  reserved.mutable_set_xattr()->set_id(kRoot);
  reserved.mutable_set_xattr()->set_name("user.memfuse.seq");
  reserved.mutable_set_xattr()->set_value("0 999999");
  bad.push_back(reserved);
  reserved.set_seq(++seq);
  reserved.mutable_set_xattr()->set_id(3);
  bad.push_back(reserved);
  pb::Mutation remove;
  remove.set_seq(++seq);
  remove.mutable_remove()->set_parent(kRoot);
  remove.mutable_remove()->set_name("d");
  remove.mutable_remove()->set_id(3);  // "d" is not object 3
  remove.mutable_remove()->set_directory(true);
  bad.push_back(remove);
  pb::Mutation no_op;
  no_op.set_seq(++seq);
  bad.push_back(no_op);

  absl::StatusOr<std::vector<pb::Ack>> acks = ApplyAll(stub.get(), bad);
  ASSERT_TRUE(acks.ok()) << acks.status();
  for (size_t i = 0; i < acks->size(); ++i) {
    const pb::Ack& ack = (*acks)[i];
    EXPECT_EQ(ack.seq(), bad[i].seq());
    EXPECT_NE(ack.error(), 0) << bad[i].ShortDebugString();
    EXPECT_TRUE(ack.permanent()) << bad[i].ShortDebugString();
  }
  EXPECT_EQ(Snapshot(mirror_), before);
  EXPECT_TRUE(absl::StrContains(Log(), "rejected"));

  // The agent is none the worse: a valid mutation still applies, and the
  // reserved xattr still says what the agent stored.
  ExpectAllOk(ApplyAll(stub.get(), {WriteOp(++seq, 3, 4, "!")}));
  EXPECT_EQ(ReadFile(mirror_ + "/d/f"), "kept!");
  // (and the forged "user.memfuse.seq" did not become the replay state)
  EXPECT_LE(Handshake(stub.get(), kSession)->last_applied_seq(), seq);
}

TEST_F(MirrordTest, NeverWritesThroughAPlantedSymlink) {
  auto agent = Start();
  ASSERT_NE(agent, nullptr);
  fs::create_directory_symlink(outside_, mirror_ + "/evil");
  const std::string outside_before = Snapshot(outside_);
  auto stub = ConnectUnix(socket_);
  ASSERT_TRUE(Handshake(stub.get(), kSession).ok());

  pb::ListDirectoryRequest list;
  list.set_id(kRoot);
  list.set_first_child_id(100);
  pb::ListDirectoryResponse listed;
  ASSERT_TRUE(stub->ListDirectory(Context().get(), list, &listed).ok());
  ASSERT_EQ(listed.entries_size(), 1);
  ASSERT_EQ(listed.entries(0).name(), "evil");
  const uint64_t evil = listed.entries(0).attr().id();
  EXPECT_TRUE(S_ISLNK(listed.entries(0).attr().mode()));

  absl::StatusOr<std::vector<pb::Ack>> acks =
      ApplyAll(stub.get(), {CreateOp(1, evil, "f", 200, S_IFREG | 0644),
                            CreateOp(2, evil, "sub", 201, S_IFDIR | 0755),
                            WriteOp(3, evil, 0, "through the link")});
  ASSERT_TRUE(acks.ok()) << acks.status();
  for (const pb::Ack& ack : *acks) {
    EXPECT_NE(ack.error(), 0) << "seq " << ack.seq();
    EXPECT_TRUE(ack.permanent()) << "seq " << ack.seq();
  }
  EXPECT_EQ(Snapshot(outside_), outside_before);
  EXPECT_TRUE(fs::is_empty(outside_));
}

TEST_F(MirrordTest, AppliesMutationsAndServesThemBack) {
  auto agent = Start();
  ASSERT_NE(agent, nullptr);
  auto stub = ConnectUnix(socket_);
  absl::StatusOr<pb::HandshakeResponse> hello = Handshake(stub.get(), kSession);
  ASSERT_TRUE(hello.ok()) << hello.status();
  EXPECT_EQ(hello->backend_kind(), "local");
  EXPECT_EQ(hello->backend_description(), mirror_);
  EXPECT_EQ(hello->last_applied_seq(), 0u);

  ExpectAllOk(ApplyAll(
      stub.get(),
      {CreateOp(1, kRoot, "d", 2, S_IFDIR | 0750),
       CreateOp(2, 2, "f", 3, S_IFREG | 0640), WriteOp(3, 3, 0, "hello"),
       WriteOp(4, 3, 5, " world"), RenameOp(5, 2, "f", kRoot, "g", 3),
       CreateOp(6, kRoot, "l", 4, S_IFLNK | 0777, "g"), SyncOp(7, 3),
       SyncOp(8, 0)}));
  EXPECT_TRUE(fs::is_directory(mirror_ + "/d"));
  EXPECT_EQ(fs::status(mirror_ + "/d").permissions(), fs::perms(0750));
  EXPECT_EQ(ReadFile(mirror_ + "/g"), "hello world");
  EXPECT_FALSE(fs::exists(mirror_ + "/d/f"));
  EXPECT_EQ(fs::read_symlink(mirror_ + "/l"), "g");

  // A new session (another fsd) lists the mirror and reads it back.
  ASSERT_TRUE(Handshake(stub.get(), kSession + 1).ok());
  pb::ListDirectoryRequest list;
  list.set_id(kRoot);
  list.set_first_child_id(2);
  pb::ListDirectoryResponse listed;
  ASSERT_TRUE(stub->ListDirectory(Context().get(), list, &listed).ok());
  std::map<std::string, uint64_t> ids;
  for (const pb::DirEntry& e : listed.entries()) ids[e.name()] = e.attr().id();
  EXPECT_EQ(ids,
            (std::map<std::string, uint64_t>{{"d", 2}, {"g", 3}, {"l", 4}}));
  pb::ReadBlockRequest read;
  read.set_id(ids["g"]);
  read.set_length(kBlock);
  pb::ReadBlockResponse block;
  ASSERT_TRUE(stub->ReadBlock(Context().get(), read, &block).ok());
  EXPECT_EQ(block.data(), "hello world");
  pb::ReadLinkRequest link;
  link.set_id(ids["l"]);
  pb::ReadLinkResponse target;
  ASSERT_TRUE(stub->ReadLink(Context().get(), link, &target).ok());
  EXPECT_EQ(target.target(), "g");
  pb::StatusResponse status;
  ASSERT_TRUE(stub->GetStatus(Context().get(), {}, &status).ok());
  EXPECT_TRUE(status.backend_healthy());
  EXPECT_EQ(status.blocks_read(), 1u);
  EXPECT_EQ(status.directories_listed(), 1u);
}

TEST_F(MirrordTest, ResumesAfterSigkillAndReplaysTheTail) {
  auto agent = Start();
  ASSERT_NE(agent, nullptr);
  {
    auto stub = ConnectUnix(socket_);
    ASSERT_TRUE(Handshake(stub.get(), kSession).ok());
    ExpectAllOk(ApplyAll(
        stub.get(),
        {CreateOp(1, kRoot, "d", 2, S_IFDIR | 0755),
         CreateOp(2, 2, "f", 3, S_IFREG | 0644), WriteOp(3, 3, 0, "one"),
         SyncOp(4, 0), RenameOp(5, 2, "f", kRoot, "g", 3),
         WriteOp(6, 3, 0, "two"), CreateOp(7, kRoot, "h", 4, S_IFREG | 0644)}));
  }
  ASSERT_TRUE(agent->SignalAndWait(SIGKILL, kTimeout).has_value());
  agent.reset();

  // The socket file is stale now; a new agent replaces it.
  agent = Start();
  ASSERT_NE(agent, nullptr);
  auto stub = ConnectUnix(socket_);
  absl::StatusOr<pb::HandshakeResponse> other = Handshake(stub.get(), 1234);
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_EQ(other->last_applied_seq(), 0u);  // not that fsd's state
  absl::StatusOr<pb::HandshakeResponse> hello = Handshake(stub.get(), kSession);
  ASSERT_TRUE(hello.ok()) << hello.status();
  // Stored before the last namespace mutation (7): 6 and before applied.
  ASSERT_EQ(hello->last_applied_seq(), 6u);
  // fsd binds its objects as of seq 6 and resends everything after it.
  ASSERT_TRUE(BindAll(stub.get(),
                      {MakeBinding(2, kRoot, "d"), MakeBinding(3, kRoot, "g")})
                  .ok());
  ExpectAllOk(ApplyAll(
      stub.get(),
      {CreateOp(7, kRoot, "h", 4, S_IFREG | 0644), WriteOp(8, 4, 0, "hh"),
       RenameOp(9, kRoot, "g", 2, "g2", 3), SyncOp(10, 0)}));
  EXPECT_EQ(ReadFile(mirror_ + "/d/g2"), "two");
  EXPECT_EQ(ReadFile(mirror_ + "/h"), "hh");
  EXPECT_FALSE(fs::exists(mirror_ + "/g"));
  EXPECT_EQ(Handshake(stub.get(), kSession)->last_applied_seq(), 10u);
}

TEST_F(MirrordTest, ServesASocketFromSystemdActivation) {
  if (system("command -v systemd-socket-activate >/dev/null 2>&1") != 0) {
    if (RunningUnderCi()) FAIL() << "systemd-socket-activate is not installed";
    GTEST_SKIP() << "systemd-socket-activate is not installed";
  }
  // It listens, and on the first connection execs the agent (same pid)
  // with the socket as fd 3 and LISTEN_FDS=1, LISTEN_PID=its pid.
  absl::StatusOr<std::unique_ptr<MirrordProcess>> agent =
      MirrordProcess::Start({"systemd-socket-activate", "-l", socket_,
                             MirrordBinary(), "--mirror", mirror_},
                            log_);
  ASSERT_TRUE(agent.ok()) << agent.status();
  ASSERT_TRUE(WaitFor([&] { return fs::is_socket(socket_); }, kTimeout))
      << Log();
  auto stub = ConnectUnix(socket_);
  absl::StatusOr<pb::HandshakeResponse> hello = Handshake(stub.get(), kSession);
  ASSERT_TRUE(hello.ok()) << hello.status() << "\n" << Log();
  ExpectAllOk(
      ApplyAll(stub.get(), {CreateOp(1, kRoot, "activated", 2, S_IFREG | 0644),
                            WriteOp(2, 2, 0, "yes")}));
  EXPECT_EQ(ReadFile(mirror_ + "/activated"), "yes");
  EXPECT_TRUE(absl::StrContains(Log(), "the socket systemd passed")) << Log();
  std::optional<Exit> exit = (*agent)->SignalAndWait(SIGTERM, kTimeout);
  ASSERT_TRUE(exit.has_value());
  EXPECT_TRUE(exit->exited && exit->code_or_signal == 0) << ToString(*exit);
}

// Runs the probe as uid/gid `uid` against `socket`; returns its exit code.
int ProbeAs(int uid, const std::string& socket) {
  const pid_t pid = fork();
  if (pid == 0) {
    if (setgroups(0, nullptr) != 0 || setgid(uid) != 0 || setuid(uid) != 0) {
      _exit(125);
    }
    execl("/proc/self/exe", "mirrord_tests", "--probe-handshake",
          socket.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  int status = 0;
  // Bounded by the probe's own deadline.
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

TEST_F(MirrordTest, RefusesPeersOfOtherUids) {
  auto agent = Start();
  ASSERT_NE(agent, nullptr);
  struct stat st {};
  ASSERT_EQ(stat(socket_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  // Open the file to everyone: the peer check alone must refuse.
  ASSERT_EQ(chmod(socket_.c_str(), 0666), 0);
  EXPECT_EQ(ProbeAs(kNobody, socket_), 3);
  EXPECT_TRUE(WaitFor(
      [&] {
        return absl::StrContains(Log(), "refused a connection: peer uid 65534");
      },
      kTimeout))
      << Log();
  auto stub = ConnectUnix(socket_);
  EXPECT_TRUE(Handshake(stub.get(), kSession).ok());  // root is allowed

  // --allow-uid replaces the default set.
  const std::string other_socket = dir_->path() + "/other.sock";
  auto allowing = StartArgv({MirrordBinary(), "--mirror", mirror_, "--listen",
                             other_socket, "--allow-uid", "65534"},
                            "serving mirror");
  ASSERT_NE(allowing, nullptr);
  ASSERT_EQ(chmod(other_socket.c_str(), 0666), 0);
  EXPECT_EQ(ProbeAs(kNobody, other_socket), 0);
  EXPECT_FALSE(Handshake(ConnectUnix(other_socket).get(), kSession,
                         /*wait_for_ready=*/false)
                   .ok());
}

TEST_F(MirrordTest, DropsToTheGivenUser) {
  ASSERT_EQ(mkdir(mirror_.c_str(), 0755), 0);
  ASSERT_EQ(chown(mirror_.c_str(), kNobody, kNobody), 0);
  auto agent = Start({"--user", "nobody"});
  ASSERT_NE(agent, nullptr);
  const std::string status =
      ReadFile(absl::StrCat("/proc/", agent->pid(), "/status"));
  EXPECT_TRUE(absl::StrContains(status, "\nUid:\t65534\t65534\t65534\t65534\n"))
      << status;
  EXPECT_TRUE(absl::StrContains(status, "\nGid:\t65534\t65534\t65534\t65534\n"))
      << status;
  struct stat st {};
  ASSERT_EQ(stat(socket_.c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, static_cast<uid_t>(kNobody));
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  auto stub = ConnectUnix(socket_);
  ASSERT_TRUE(Handshake(stub.get(), kSession).ok());
  pb::Mutation xattr;
  xattr.set_seq(5);
  xattr.mutable_set_xattr()->set_id(2);
  xattr.mutable_set_xattr()->set_name("user.k");
  xattr.mutable_set_xattr()->set_value("v");
  // fsd (root) may make a read-only directory and still create in it.
  ExpectAllOk(ApplyAll(
      stub.get(),
      {CreateOp(1, kRoot, "owned", 2, S_IFREG | 0640), WriteOp(2, 2, 0, "data"),
       CreateOp(3, kRoot, "ro", 3, S_IFDIR | 0555),
       CreateOp(4, 3, "inside", 4, S_IFREG | 0444), xattr,
       WriteOp(6, 4, 0, "ro file"), SyncOp(7, 0)}));
  ASSERT_EQ(stat((mirror_ + "/owned").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, static_cast<uid_t>(kNobody));  // not root's 0
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  EXPECT_EQ(ReadFile(mirror_ + "/owned"), "data");
  EXPECT_EQ(ReadFile(mirror_ + "/ro/inside"), "ro file");
  ASSERT_EQ(stat((mirror_ + "/ro").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0555u);
  char value[8];
  EXPECT_EQ(getxattr((mirror_ + "/owned").c_str(), "user.k", value, 8), 1);
  EXPECT_TRUE(absl::StrContains(Log(), "running as nobody"));

  std::optional<Exit> exit = agent->SignalAndWait(SIGTERM, kTimeout);
  ASSERT_TRUE(exit.has_value());
  EXPECT_TRUE(exit->exited && exit->code_or_signal == 0) << ToString(*exit);
}

// An HTTP agent started as root becomes nobody, a user other daemons
// share: they may not talk to it for that.
TEST_F(MirrordTest, AnHttpAgentBecomesNobodyAndNobodyMayNotConnect) {
  FakeInvariantServer server;
  ASSERT_TRUE(server.Start().ok());
  auto agent = StartArgv({MirrordBinary(), "--mirror", server.base_url(),
                          "--listen", socket_},
                         "serving mirror");
  ASSERT_NE(agent, nullptr);
  const std::string status =
      ReadFile(absl::StrCat("/proc/", agent->pid(), "/status"));
  EXPECT_TRUE(absl::StrContains(status, "\nUid:\t65534\t65534\t65534\t65534\n"))
      << status;
  EXPECT_TRUE(absl::StrContains(Log(), "running as nobody"));
  ASSERT_EQ(chmod(socket_.c_str(), 0666), 0);
  EXPECT_EQ(ProbeAs(kNobody, socket_), 3);
  EXPECT_TRUE(Handshake(ConnectUnix(socket_).get(), kSession).ok());
  std::optional<Exit> exit = agent->SignalAndWait(SIGTERM, kTimeout);
  ASSERT_TRUE(exit.has_value());
  EXPECT_TRUE(exit->exited && exit->code_or_signal == 0) << ToString(*exit);
  server.Stop();
}

TEST_F(MirrordTest, AMirrorTheUserCannotWriteIsAnErrorAtStart) {
  ASSERT_EQ(mkdir(mirror_.c_str(), 0755), 0);  // root's
  absl::StatusOr<CommandResult> r = RunCommand(
      {MirrordBinary(), "--mirror", mirror_, "--listen", socket_, "--user",
       "nobody"},
      kTimeout);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->exit.exited && r->exit.code_or_signal == 1)
      << ToString(r->exit) << ": " << r->output;
  EXPECT_TRUE(absl::StrContains(r->output, "not writable")) << r->output;
}

TEST_F(MirrordTest, BadFlagsExitTwoWithOneLine) {
  const std::vector<std::vector<std::string>> cases = {
      {MirrordBinary(), "--listen", socket_},
      {MirrordBinary(), "--mirror", mirror_, "--listen", socket_, "--fd", "3"},
      {MirrordBinary(), "--mirror", "ftp://x", "--listen", socket_},
      {MirrordBinary(), "--mirror", "https://localhost:1", "--listen", socket_},
      {MirrordBinary(), "--mirror", mirror_, "--root", "3", "--listen",
       socket_},
      {MirrordBinary(), "--mirror", mirror_, "--fd", "42"},
      {MirrordBinary(), "--mirror", mirror_, "--listen", socket_, "--user",
       "no-such-user-here"},
      {MirrordBinary(), "--mirror", mirror_, "--fd", "-1"},
      {MirrordBinary(), "--mirror", mirror_, "--listen", socket_,
       "--allow-uid", "-1"},
      {MirrordBinary(), "--mirror", "http://127.0.0.1:1", "--root",
       "99999999999999999999", "--listen", socket_},
  };
  for (const std::vector<std::string>& argv : cases) {
    absl::StatusOr<CommandResult> r = RunCommand(argv, kTimeout);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_TRUE(r->exit.exited && r->exit.code_or_signal == 2)
        << ToString(r->exit) << ": " << r->output;
    EXPECT_EQ(std::count(r->output.begin(), r->output.end(), '\n'), 1)
        << r->output;
    EXPECT_TRUE(absl::StrContains(r->output, "--")) << r->output;
  }
  EXPECT_FALSE(fs::exists(mirror_));  // nothing made on bad input
  EXPECT_FALSE(fs::exists(socket_));
}

// An HTTP mirror that does not answer: a clear error and exit 1 within the
// connect timeout, never a hang. (Port 1 on loopback: nothing listens.)
TEST_F(MirrordTest, AnUnreachableHttpMirrorFailsWithinSeconds) {
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<CommandResult> r = RunCommand(
      {MirrordBinary(), "--mirror", "http://127.0.0.1:1", "--listen", socket_},
      kTimeout);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  EXPECT_TRUE(r->exit.exited && r->exit.code_or_signal == 1)
      << ToString(r->exit) << ": " << r->output;
  EXPECT_TRUE(absl::StrContains(r->output, "http://127.0.0.1:1")) << r->output;
  EXPECT_FALSE(fs::exists(socket_));
}

TEST_F(MirrordTest, FdModeExitsWhenThePeerCloses) {
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
  auto agent = StartArgv({MirrordBinary(), "--mirror", mirror_, "--fd", "3"},
                         "serving mirror", fds[1], 3);
  close(fds[1]);
  ASSERT_NE(agent, nullptr);
  const int client_fd = fds[0];
  {
    auto stub = pb::Mirror::NewStub(
        grpc::CreateInsecureChannelFromFd("mirrord", client_fd));
    ASSERT_TRUE(Handshake(stub.get(), kSession).ok());
    ExpectAllOk(ApplyAll(stub.get(),
                         {CreateOp(1, kRoot, "via-fd", 2, S_IFDIR | 0755)}));
    EXPECT_TRUE(fs::is_directory(mirror_ + "/via-fd"));
    // The peer goes (as when fsd exits).
    shutdown(client_fd, SHUT_RDWR);
    std::optional<Exit> exit = agent->Wait(kTimeout);
    ASSERT_TRUE(exit.has_value()) << "still running; log:\n" << Log();
    EXPECT_TRUE(exit->exited && exit->code_or_signal == 0) << ToString(*exit);
  }
  EXPECT_TRUE(absl::StrContains(Log(), "closed the connection")) << Log();
}

TEST_F(MirrordTest, SigtermExitsCleanly) {
  auto agent = Start();
  ASSERT_NE(agent, nullptr);
  auto stub = ConnectUnix(socket_);
  ASSERT_TRUE(Handshake(stub.get(), kSession).ok());
  // An Apply stream waiting for its next mutation does not hold the exit up.
  std::unique_ptr<grpc::ClientContext> context = Context();
  auto stream = stub->Apply(context.get());
  ASSERT_TRUE(stream->Write(CreateOp(1, kRoot, "x", 2, S_IFREG | 0644)));
  pb::Ack ack;
  ASSERT_TRUE(stream->Read(&ack));
  EXPECT_EQ(ack.error(), 0);
  std::optional<Exit> exit = agent->SignalAndWait(SIGTERM, kTimeout);
  ASSERT_TRUE(exit.has_value()) << "did not stop; log:\n" << Log();
  EXPECT_TRUE(exit->exited && exit->code_or_signal == 0) << ToString(*exit);
  EXPECT_FALSE(stream->Read(&ack));
  stream->Finish().IgnoreError();
  EXPECT_FALSE(fs::exists(socket_));  // its socket file went with it
  EXPECT_TRUE(absl::StrContains(Log(), "stopped"));
}

// The child of ProbeAs(): one handshake, no waiting for a connection.
int ProbeHandshake(const std::string& socket) {
  absl::StatusOr<pb::HandshakeResponse> hello =
      Handshake(ConnectUnix(socket).get(), kSession, /*wait_for_ready=*/false);
  std::cerr << "probe as uid " << getuid() << ": " << hello.status() << "\n";
  return hello.ok() ? 0 : 3;
}

}  // namespace
}  // namespace memfuse::mirrord_test

int main(int argc, char** argv) {
  if (argc == 3 && std::string(argv[1]) == "--probe-handshake") {
    return memfuse::mirrord_test::ProbeHandshake(argv[2]);
  }
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
