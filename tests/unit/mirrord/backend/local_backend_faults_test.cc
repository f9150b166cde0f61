// The local backend meeting a failing disk, through a FaultEnv: an EIO or
// ENOSPC on write, fsync or rename is a transient failure (the Ack's error
// is the errno, not permanent: the server retries it), leaves the mirror as
// it was and the replay state where it was, marks the backend unhealthy,
// and the same mutation applied again once the disk is back succeeds. A
// permission refused on one object while the root takes changes is refused
// for that object alone (permanent), not retried forever.
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "mirrord/backend/local_backend.h"
#include "tests/testing/fault_env.h"
#include "tests/unit/mirrord/backend/mutations.h"

namespace memfuse::mirrord {
namespace {

using Call = testing::FaultEnv::Call;

constexpr uint64_t kRoot = 1;
constexpr uint64_t kSession = 0xfa0175;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

bool Exists(const std::string& path) {
  struct stat st;
  return lstat(path.c_str(), &st) == 0;
}

class LocalBackendFaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/memfuse-local-faults-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    base_ = tmpl;
    mirror_ = base_ + "/mirror";
    absl::StatusOr<std::unique_ptr<LocalBackend>> b =
        LocalBackend::Open(mirror_, &env_);
    ASSERT_TRUE(b.ok()) << b.status();
    backend_ = std::move(*b);
    ASSERT_EQ(Handshake().last_applied_seq(), 0u);
    ASSERT_EQ(Apply(Create(kRoot, "d", 2, S_IFDIR | 0755)).error(), 0);
    ASSERT_EQ(Apply(Create(2, "f", 3, S_IFREG | 0644)).error(), 0);
    ASSERT_EQ(Apply(Write(3, 0, "before")).error(), 0);
    ASSERT_EQ(Apply(Sync(0)).error(), 0);
  }
  void TearDown() override {
    backend_.reset();
    std::filesystem::remove_all(base_);
  }

  pb::HandshakeResponse Handshake() {
    pb::HandshakeRequest request;
    request.set_protocol_version(1);
    request.set_session_id(kSession);
    request.set_block_size(4096);
    absl::StatusOr<pb::HandshakeResponse> r = backend_->Handshake(request);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.value_or(pb::HandshakeResponse());
  }
  pb::Ack Apply(pb::Mutation m) {
    m.set_seq(++seq_);
    last_ = m;
    return backend_->Apply(m);
  }
  // The server's retry: the same mutation, same seq.
  pb::Ack Retry() { return backend_->Apply(last_); }
  pb::StatusResponse Status() {
    pb::StatusResponse status;
    backend_->FillStatus(&status);
    return status;
  }
  // Applied up to `seq` as a reconnecting fsd would learn it.
  uint64_t ResumesAfter() { return Handshake().last_applied_seq(); }
  void BindAll() {
    for (const auto& [id, parent, name] :
         {std::tuple<uint64_t, uint64_t, std::string>{2, kRoot, "d"},
          {3, 2, "f"}}) {
      pb::Binding b;
      b.set_id(id);
      b.set_parent(parent);
      b.set_name(name);
      ASSERT_TRUE(backend_->Bind(b).ok());
    }
  }
  std::string M(const std::string& rel) { return mirror_ + "/" + rel; }

  testing::FaultEnv env_;
  std::string base_, mirror_;
  std::unique_ptr<LocalBackend> backend_;
  uint64_t seq_ = 0;
  pb::Mutation last_;
};

// A transient failure as the server sees it: the errno, retry allowed.
#define EXPECT_TRANSIENT(ack, err)                  \
  do {                                              \
    const pb::Ack a_ = (ack);                       \
    EXPECT_EQ(a_.error(), (err)) << a_.message();   \
    EXPECT_FALSE(a_.permanent()) << a_.message();   \
    EXPECT_EQ(a_.missing_id(), 0u) << a_.message(); \
  } while (0)

class WriteFaultTest : public LocalBackendFaultTest,
                       public ::testing::WithParamInterface<int> {};

TEST_P(WriteFaultTest, IsRetriedAndLandsOnceTheDiskIsBack) {
  const int err = GetParam();
  env_.Fail(Call::kWrite, err);
  EXPECT_TRANSIENT(Apply(Write(3, 0, "after!")), err);
  EXPECT_EQ(ReadFile(M("d/f")), "before");
  EXPECT_FALSE(Status().backend_healthy());
  EXPECT_NE(Status().last_error().find("pwrite"), std::string::npos)
      << Status().last_error();
  // Still failing: still transient, never given up on.
  EXPECT_TRANSIENT(Retry(), err);
  env_.Clear();
  EXPECT_EQ(Retry().error(), 0);
  EXPECT_EQ(ReadFile(M("d/f")), "after!");
  EXPECT_TRUE(Status().backend_healthy());
}

TEST_P(WriteFaultTest, APunchIsRetried) {
  // fallocate's own failure is transient as a write's.
  const int err = GetParam();
  env_.Fail(Call::kPunchHole, err, 1);
  EXPECT_TRANSIENT(Apply(PunchHole(3, 0, 2)), err);
  EXPECT_EQ(ReadFile(M("d/f")), "before");
  EXPECT_EQ(Retry().error(), 0);
  EXPECT_EQ(ReadFile(M("d/f")), std::string("\0\0fore", 6));
}

TEST_P(WriteFaultTest, ATruncateIsRetried) {
  const int err = GetParam();
  env_.Fail(Call::kTruncate, err, 1);
  pb::Attr attr = MakeAttr(3, S_IFREG | 0644);
  attr.set_size(2);
  EXPECT_TRANSIENT(Apply(SetAttr(kSetSize, attr)), err);
  EXPECT_EQ(ReadFile(M("d/f")), "before");
  EXPECT_EQ(Retry().error(), 0);
  EXPECT_EQ(ReadFile(M("d/f")), "be");
}

TEST_P(WriteFaultTest, AFailedFsyncRecordsNothingAsDurable) {
  const int err = GetParam();
  ASSERT_EQ(Apply(Write(3, 0, "after!")).error(), 0);
  const uint64_t write_seq = seq_;
  env_.Fail(Call::kSync, err);
  EXPECT_TRANSIENT(Apply(Sync(3)), err);
  EXPECT_NE(Status().last_error().find("fsync"), std::string::npos)
      << Status().last_error();
  EXPECT_TRANSIENT(Apply(Sync(0)), err);
  EXPECT_FALSE(Status().backend_healthy());
  // Nothing after the first sync (seq 4) is recorded as applied: a
  // reconnecting fsd resends from there.
  EXPECT_EQ(ResumesAfter(), 4u);
  BindAll();
  env_.Clear();
  pb::Mutation sync = Sync(3);
  sync.set_seq(write_seq + 1);
  EXPECT_EQ(backend_->Apply(sync).error(), 0);
  EXPECT_EQ(ResumesAfter(), write_seq + 1);
}

TEST_P(WriteFaultTest, ARenameIsRetriedAndAppliedOnce) {
  const int err = GetParam();
  env_.Fail(Call::kRename, err, 2);
  EXPECT_TRANSIENT(Apply(Rename(2, "f", kRoot, "g", 3)), err);
  EXPECT_TRUE(Exists(M("d/f")));
  EXPECT_FALSE(Exists(M("g")));
  EXPECT_TRANSIENT(Retry(), err);
  EXPECT_EQ(Retry().error(), 0);
  EXPECT_FALSE(Exists(M("d/f")));
  EXPECT_EQ(ReadFile(M("g")), "before");
  EXPECT_EQ(env_.calls(Call::kRename), 3);
  // The file is known under its new name.
  EXPECT_EQ(Apply(Write(3, 6, "+")).error(), 0);
  EXPECT_EQ(ReadFile(M("g")), "before+");
}

TEST_P(WriteFaultTest, AnExchangeIsRetried) {
  const int err = GetParam();
  ASSERT_EQ(Apply(Create(kRoot, "h", 4, S_IFREG | 0644)).error(), 0);
  env_.Fail(Call::kRename, err, 1);
  EXPECT_TRANSIENT(Apply(Rename(2, "f", kRoot, "h", 3, 4, RENAME_EXCHANGE)),
                   err);
  EXPECT_EQ(ReadFile(M("d/f")), "before");
  EXPECT_EQ(Retry().error(), 0);
  EXPECT_EQ(ReadFile(M("h")), "before");
  EXPECT_EQ(ReadFile(M("d/f")), "");
}

TEST_P(WriteFaultTest, CreatesLinksAndRemovesAreRetried) {
  const int err = GetParam();
  env_.Fail(Call::kCreate, err, 1);
  EXPECT_TRANSIENT(Apply(Create(2, "new", 5, S_IFDIR | 0755)), err);
  EXPECT_FALSE(Exists(M("d/new")));
  EXPECT_EQ(Retry().error(), 0);
  EXPECT_TRUE(Exists(M("d/new")));

  env_.Fail(Call::kLink, err, 1);
  EXPECT_TRANSIENT(Apply(Link(3, kRoot, "f2")), err);
  EXPECT_FALSE(Exists(M("f2")));
  EXPECT_EQ(Retry().error(), 0);
  EXPECT_EQ(ReadFile(M("f2")), "before");

  env_.Fail(Call::kRemove, err, 1);
  EXPECT_TRANSIENT(Apply(Remove(kRoot, "f2", 3)), err);
  EXPECT_TRUE(Exists(M("f2")));
  EXPECT_EQ(Retry().error(), 0);
  EXPECT_FALSE(Exists(M("f2")));
}

INSTANTIATE_TEST_SUITE_P(EioAndEnospc, WriteFaultTest,
                         ::testing::Values(EIO, ENOSPC),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return std::string(info.param == EIO ? "Eio"
                                                                : "Enospc");
                         });

TEST_F(LocalBackendFaultTest, APermissionRefusedOnOneObjectIsRefusedForIt) {
  // The root takes changes (the test's user may write it): one file that
  // will not is no reason to hold the queue.
  env_.Fail(Call::kWrite, EACCES);
  const pb::Ack ack = Apply(Write(3, 0, "after!"));
  EXPECT_EQ(ack.error(), EACCES) << ack.message();
  EXPECT_TRUE(ack.permanent()) << ack.message();
  EXPECT_NE(ack.message().find("this object only"), std::string::npos)
      << ack.message();
  EXPECT_EQ(ReadFile(M("d/f")), "before");
  // Refused and done: the next change goes on.
  env_.Clear();
  EXPECT_EQ(Apply(Write(3, 0, "later")).error(), 0);
}

TEST_F(LocalBackendFaultTest, AnErrorNoRetryMendsIsPermanent) {
  // EINVAL from the disk (a filesystem refusing the operation) never gets
  // better with waiting.
  env_.Fail(Call::kWrite, EINVAL, 1);
  const pb::Ack ack = Apply(Write(3, 0, "after!"));
  EXPECT_EQ(ack.error(), EINVAL) << ack.message();
  EXPECT_TRUE(ack.permanent()) << ack.message();
  EXPECT_EQ(ReadFile(M("d/f")), "before");
}

}  // namespace
}  // namespace memfuse::mirrord
