// What every backend promises fsd, tested the same way against each: the
// local mirror (a real directory) and the HTTP mirror (the fake server on
// 127.0.0.1). A change to an object the backend does not know, or whose
// place in the mirror is gone, is never acknowledged as applied: it is
// answered with the object for fsd to re-create (Ack.missing_id), and a
// repair Create makes it exist again.
#include <stdlib.h>
#include <sys/stat.h>

#include <cerrno>
#include <filesystem>
#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "mirrord/backend/http_backend.h"
#include "mirrord/backend/local_backend.h"
#include "tests/testing/fake_invariant_server.h"
#include "tests/unit/mirrord/backend/mutations.h"

namespace memfuse::mirrord {
namespace {

constexpr uint64_t kRoot = 1;

struct LocalMirror {
  ~LocalMirror() {
    backend.reset();
    if (!base.empty()) std::filesystem::remove_all(base);
  }
  absl::Status Open() {
    char name[] = "/tmp/memfuse-contract-XXXXXX";
    if (mkdtemp(name) == nullptr) return absl::InternalError("mkdtemp");
    base = name;
    absl::StatusOr<std::unique_ptr<LocalBackend>> b =
        LocalBackend::Open(base + "/mirror");
    if (!b.ok()) return b.status();
    (*b)->Start();
    backend = std::move(*b);
    return absl::OkStatus();
  }
  // Removes directory `name` of the mirror's root behind the backend.
  void RemoveUnderneath(const std::string& name) {
    std::filesystem::remove_all(base + "/mirror/" + name);
  }
  std::string base;
  std::unique_ptr<Backend> backend;
};

struct HttpMirror {
  absl::Status Open() {
    if (absl::Status started = server.Start(); !started.ok()) return started;
    HttpBackend::Options options;
    options.base_url = server.base_url();
    absl::StatusOr<std::unique_ptr<HttpBackend>> b = HttpBackend::Open(options);
    if (!b.ok()) return b.status();
    backend = std::move(*b);
    return absl::OkStatus();
  }
  // Another client's removal, through the API, saved.
  void RemoveUnderneath(const std::string& name) {
    absl::StatusOr<std::unique_ptr<HttpClient>> client =
        HttpClient::Create(server.base_url(), HttpOptions());
    ASSERT_TRUE(client.ok());
    ASSERT_TRUE((*client)->Post("files/remove/1/" + name, "").ok());
    ASSERT_TRUE((*client)->Put("files/sync", "").ok());
  }
  testing::FakeInvariantServer server;
  std::unique_ptr<Backend> backend;
};

template <typename Mirror>
class BackendContractTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(mirror_.Open().ok());
    pb::HandshakeRequest hello;
    hello.set_protocol_version(1);
    hello.set_session_id(7);
    hello.set_block_size(1 << 20);
    ASSERT_TRUE(mirror_.backend->Handshake(hello).ok());
  }
  pb::Ack Apply(pb::Mutation m) {
    m.set_seq(++seq_);
    pb::Ack ack = mirror_.backend->Apply(m);
    EXPECT_TRUE(mirror_.backend->Commit().ok());
    return ack;
  }
  static pb::Mutation Repair(pb::Mutation create) {
    create.mutable_create()->set_repair(true);
    return create;
  }

  Mirror mirror_;
  uint64_t seq_ = 0;
};

using Mirrors = ::testing::Types<LocalMirror, HttpMirror>;
TYPED_TEST_SUITE(BackendContractTest, Mirrors);

TYPED_TEST(BackendContractTest, ChangesToUnknownIdsAreMissingNeverApplied) {
  EXPECT_MISSING(this->Apply(Write(50, 0, "data")), 50u);
  EXPECT_MISSING(this->Apply(SetAttr(kSetMode, MakeAttr(51, S_IFREG | 0600))),
                 51u);
  EXPECT_MISSING(this->Apply(Create(52, "x", 53, S_IFREG | 0644)), 53u);
  EXPECT_MISSING(this->Apply(Link(54, kRoot, "y")), 54u);
  EXPECT_MISSING(this->Apply(Rename(kRoot, "nothing", kRoot, "z", 55)), 55u);
  // Removing what is not there is done.
  EXPECT_EQ(this->Apply(Remove(kRoot, "nothing", 56)).error(), 0);
}

TYPED_TEST(BackendContractTest, ADirectoryGoneUnderneathIsRepairedByCreates) {
  ASSERT_EQ(this->Apply(Create(kRoot, "d", 2, S_IFDIR | 0755)).error(), 0);
  ASSERT_EQ(this->Apply(Create(2, "f", 3, S_IFREG | 0644)).error(), 0);
  ASSERT_EQ(this->Apply(Write(3, 0, "one")).error(), 0);
  this->mirror_.RemoveUnderneath("d");
  EXPECT_MISSING(this->Apply(Write(3, 0, "two")), 3u);
  // fsd's repair: the directory, the file, its bytes.
  EXPECT_EQ(this->Apply(this->Repair(Create(kRoot, "d", 2, S_IFDIR | 0755)))
                .error(),
            0);
  EXPECT_EQ(
      this->Apply(this->Repair(Create(2, "f", 3, S_IFREG | 0644))).error(), 0);
  EXPECT_EQ(this->Apply(Write(3, 0, "two")).error(), 0);
  pb::ReadBlockRequest read;
  read.set_id(3);
  read.set_length(16);
  std::string out(16, '\0');
  absl::StatusOr<uint64_t> got =
      this->mirror_.backend->ReadBlock(read, absl::MakeSpan(out));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(out.substr(0, *got), "two");
}

}  // namespace
}  // namespace memfuse::mirrord
