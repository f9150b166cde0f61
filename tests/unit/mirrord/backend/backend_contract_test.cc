// What every backend promises fsd, tested the same way against each: the
// local mirror (a real directory) and the HTTP mirror (the fake server on
// 127.0.0.1). A malformed mutation is refused for good; a replay of what
// was applied is not applied twice, and a new session replays from the
// start; bindings name their object; a change to an object the backend
// does not know, or whose place in the mirror is gone, is never
// acknowledged as applied: it is answered with the object for fsd to
// re-create (Ack.missing_id), and a repair Create makes it exist again.
// What one object will not take is refused for that object alone, for good;
// a range past the largest file offset is refused with Linux's errno; a
// listing binds ids the same way (ids_needed, hard links, a replay).
// (BackendBase holds these once; the test holds both backends to them.)
#include <stdlib.h>
#include <sys/stat.h>

#include <cerrno>
#include <filesystem>
#include <memory>
#include <string>

#include "common/status.h"
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
  pb::HandshakeResponse Hello(uint64_t session) {
    pb::HandshakeRequest hello;
    hello.set_protocol_version(1);
    hello.set_session_id(session);
    hello.set_block_size(1 << 20);
    absl::StatusOr<pb::HandshakeResponse> response =
        mirror_.backend->Handshake(hello);
    EXPECT_TRUE(response.ok()) << response.status();
    return response.value_or(pb::HandshakeResponse());
  }
  std::string Read(uint64_t id) {
    pb::ReadBlockRequest read;
    read.set_id(id);
    read.set_length(64);
    std::string out(64, '\0');
    absl::StatusOr<uint64_t> got =
        mirror_.backend->ReadBlock(read, absl::MakeSpan(out));
    EXPECT_TRUE(got.ok()) << got.status();
    return got.ok() ? out.substr(0, *got) : "";
  }
  pb::Ack ApplyAt(uint64_t seq, pb::Mutation m) {
    m.set_seq(seq);
    pb::Ack ack = mirror_.backend->Apply(m);
    EXPECT_TRUE(mirror_.backend->Commit().ok());
    return ack;
  }
  pb::Ack Apply(pb::Mutation m) {
    m.set_seq(++seq_);
    pb::Ack ack = mirror_.backend->Apply(m);
    EXPECT_TRUE(mirror_.backend->Commit().ok());
    return ack;
  }
  pb::ListDirectoryResponse List(uint64_t id, uint64_t first,
                                 uint64_t max_new_ids = 0) {
    pb::ListDirectoryRequest request;
    request.set_id(id);
    request.set_first_child_id(first);
    request.set_max_new_ids(max_new_ids);
    absl::StatusOr<pb::ListDirectoryResponse> r =
        mirror_.backend->ListDirectory(request);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.value_or(pb::ListDirectoryResponse());
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

TYPED_TEST(BackendContractTest, AMalformedMutationIsRefusedForGood) {
  pb::Mutation no_seq = Write(kRoot, 0, "x");
  no_seq.set_seq(0);
  pb::Ack ack = this->mirror_.backend->Apply(no_seq);
  EXPECT_EQ(ack.error(), EINVAL) << ack.message();
  EXPECT_TRUE(ack.permanent());
  pb::Mutation empty;
  empty.set_seq(++this->seq_);
  ack = this->mirror_.backend->Apply(empty);
  EXPECT_EQ(ack.error(), EINVAL) << ack.message();
  EXPECT_TRUE(ack.permanent());
}

TYPED_TEST(BackendContractTest, AReplayIsNotAppliedTwiceAndANewSessionStartsOver) {
  ASSERT_EQ(this->ApplyAt(1, Create(kRoot, "f", 2, S_IFREG | 0644)).error(),
            0);
  ASSERT_EQ(this->ApplyAt(2, Write(2, 0, "abc")).error(), 0);
  ASSERT_EQ(this->ApplyAt(3, Sync(0)).error(), 0);
  // The same session again (fsd reconnected): everything up to the sync is
  // applied, and a resent write is acknowledged without being applied.
  EXPECT_EQ(this->Hello(7).last_applied_seq(), 3u);
  pb::Binding f;
  f.set_id(2);
  f.set_parent(kRoot);
  f.set_name("f");
  ASSERT_TRUE(this->mirror_.backend->Bind(f).ok());
  EXPECT_EQ(this->ApplyAt(2, Write(2, 0, "zzz")).error(), 0);
  EXPECT_EQ(this->Read(2), "abc");
  EXPECT_EQ(this->ApplyAt(4, Write(2, 0, "new")).error(), 0);
  EXPECT_EQ(this->Read(2), "new");
  // Another session (a new fsd): nothing is taken as applied.
  EXPECT_EQ(this->Hello(8).last_applied_seq(), 0u);
}

TYPED_TEST(BackendContractTest, BindingsNameTheirObject) {
  pb::Binding bad;
  bad.set_id(9);
  bad.set_parent(kRoot);
  bad.set_name("a/b");
  EXPECT_EQ(this->mirror_.backend->Bind(bad).code(),
            absl::StatusCode::kInvalidArgument);
  bad.set_name("..");
  EXPECT_EQ(this->mirror_.backend->Bind(bad).code(),
            absl::StatusCode::kInvalidArgument);
  // Until bound, an object the mirror holds is unknown to the session.
  ASSERT_EQ(this->Apply(Create(kRoot, "g", 4, S_IFREG | 0644)).error(), 0);
  this->Hello(11);
  EXPECT_MISSING(this->Apply(Write(4, 0, "data")), 4u);
  pb::Binding g;
  g.set_id(4);
  g.set_parent(kRoot);
  g.set_name("g");
  ASSERT_TRUE(this->mirror_.backend->Bind(g).ok());
  EXPECT_EQ(this->Apply(Write(4, 0, "data")).error(), 0);
  EXPECT_EQ(this->Read(4), "data");
}

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

TYPED_TEST(BackendContractTest, WhatOneObjectWillNotTakeIsRefusedForIt) {
  ASSERT_EQ(this->Apply(Create(kRoot, "f", 2, S_IFREG | 0644)).error(), 0);
  ASSERT_EQ(this->Apply(Create(kRoot, "g", 3, S_IFREG | 0644)).error(), 0);
  ASSERT_EQ(this->Apply(Write(2, 0, "kept")).error(), 0);
  // Another kind of object in the way of a create, another object at the
  // name a link wants: refused for good, the mirror untouched.
  pb::Ack ack = this->Apply(Create(kRoot, "f", 4, S_IFDIR | 0755));
  EXPECT_EQ(ack.error(), EEXIST) << ack.message();
  EXPECT_TRUE(ack.permanent()) << ack.message();
  EXPECT_EQ(ack.missing_id(), 0u) << ack.message();
  ack = this->Apply(Link(2, kRoot, "g"));
  EXPECT_EQ(ack.error(), EEXIST) << ack.message();
  EXPECT_TRUE(ack.permanent()) << ack.message();
  // An id fsd already gave another object: bad input.
  ack = this->Apply(Create(kRoot, "h", 3, S_IFREG | 0644));
  EXPECT_EQ(ack.error(), EINVAL) << ack.message();
  EXPECT_TRUE(ack.permanent()) << ack.message();
  // The queue goes on.
  EXPECT_EQ(this->Apply(Write(2, 4, "!")).error(), 0);
  EXPECT_EQ(this->Read(2), "kept!");
}

TYPED_TEST(BackendContractTest, UnknownIdsInReadsAreRefused) {
  pb::ListDirectoryRequest list;
  list.set_id(77);
  list.set_first_child_id(100);
  EXPECT_EQ(this->mirror_.backend->ListDirectory(list).status().code(),
            absl::StatusCode::kInvalidArgument);
  list.set_id(kRoot);
  list.set_first_child_id(kRoot);  // not a new id
  EXPECT_EQ(this->mirror_.backend->ListDirectory(list).status().code(),
            absl::StatusCode::kInvalidArgument);
  pb::StatRequest stat;
  stat.set_id(78);
  EXPECT_EQ(common::StatusToErrno(this->mirror_.backend->Stat(stat).status()),
            ENOENT);
  pb::ReadBlockRequest read;
  read.set_id(79);
  read.set_length(8);
  std::string out(8, '\0');
  EXPECT_EQ(common::StatusToErrno(
                this->mirror_.backend->ReadBlock(read, absl::MakeSpan(out))
                    .status()),
            ENOENT);
}

TYPED_TEST(BackendContractTest, RangesPastTheLargestOffsetGetLinuxsErrno) {
  ASSERT_EQ(this->Apply(Create(kRoot, "f", 2, S_IFREG | 0644)).error(), 0);
  ASSERT_EQ(this->Apply(Write(2, 0, "kept")).error(), 0);
  constexpr uint64_t kMax = uint64_t{INT64_MAX};
  auto expect_refused = [&](pb::Mutation m, int err) {
    const pb::Ack ack = this->Apply(std::move(m));
    EXPECT_EQ(ack.error(), err) << ack.message();
    EXPECT_TRUE(ack.permanent()) << ack.message();
  };
  // pwrite(2): a range past the largest loff_t is EINVAL.
  expect_refused(Write(2, kMax - 2, "abcd"), EINVAL);
  expect_refused(Write(2, kMax + 1, "a"), EINVAL);
  // fallocate(2): an offset or length below zero is EINVAL, an end past
  // the largest offset EFBIG.
  expect_refused(PunchHole(2, kMax + 1, 1), EINVAL);
  expect_refused(PunchHole(2, 0, kMax + 1), EINVAL);
  expect_refused(PunchHole(2, kMax - 1, 4), EFBIG);
  // ftruncate(2) to a negative length: EINVAL.
  pb::Attr attr = MakeAttr(2, S_IFREG | 0644);
  attr.set_size(kMax + 1);
  expect_refused(SetAttr(kSetSize, attr), EINVAL);
  // Also for an object the mirror does not know: the range is wrong first.
  expect_refused(Write(60, kMax, "a"), EINVAL);
  EXPECT_EQ(this->Read(2), "kept");
}

TYPED_TEST(BackendContractTest, AListingBindsNewIdsInNameOrder) {
  ASSERT_EQ(this->Apply(Create(kRoot, "d", 2, S_IFDIR | 0755)).error(), 0);
  ASSERT_EQ(this->Apply(Create(kRoot, "a", 3, S_IFREG | 0644)).error(), 0);
  ASSERT_EQ(this->Apply(Write(3, 0, "A")).error(), 0);
  ASSERT_EQ(this->Apply(Link(3, kRoot, "b")).error(), 0);
  ASSERT_EQ(this->Apply(Sync(0)).error(), 0);
  // A new fsd knows nothing of it but the root.
  this->Hello(12);

  // Too few ids: nothing bound, and how many it takes (the two names of
  // one file take one).
  pb::ListDirectoryResponse few = this->List(kRoot, 10, 1);
  EXPECT_EQ(few.ids_needed(), 2u);
  EXPECT_EQ(few.entries_size(), 0);
  pb::ListDirectoryRequest unbound;
  unbound.set_id(11);  // the directory, had that listing bound it
  unbound.set_first_child_id(20);
  EXPECT_EQ(this->mirror_.backend->ListDirectory(unbound).status().code(),
            absl::StatusCode::kInvalidArgument);

  pb::ListDirectoryResponse root = this->List(kRoot, 10, 2);
  EXPECT_EQ(root.ids_needed(), 0u);
  ASSERT_EQ(root.entries_size(), 3);
  EXPECT_EQ(root.entries(0).name(), "a");
  EXPECT_EQ(root.entries(0).attr().id(), 10u);
  EXPECT_EQ(root.entries(0).attr().nlink(), 2u);
  EXPECT_EQ(root.entries(1).name(), "b");
  EXPECT_EQ(root.entries(1).attr().id(), 10u);
  EXPECT_EQ(root.entries(2).name(), "d");
  EXPECT_EQ(root.entries(2).attr().id(), 11u);
  EXPECT_TRUE(S_ISDIR(root.entries(2).attr().mode()));
  EXPECT_EQ(root.next_free_id(), 12u);

  // fsd asks again (its answer was lost): the same ids, nothing more.
  pb::ListDirectoryResponse again = this->List(kRoot, 10, 2);
  ASSERT_EQ(again.entries_size(), 3);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(again.entries(i).name(), root.entries(i).name());
    EXPECT_EQ(again.entries(i).attr().id(), root.entries(i).attr().id())
        << again.entries(i).name();
  }
  EXPECT_EQ(again.next_free_id(), 12u);

  // The ids name the objects.
  EXPECT_EQ(this->Read(10), "A");
  pb::StatRequest stat;
  stat.set_id(11);
  absl::StatusOr<pb::StatResponse> d = this->mirror_.backend->Stat(stat);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_TRUE(S_ISDIR(d->attr().mode()));
  EXPECT_EQ(this->Apply(Create(11, "inside", 12, S_IFREG | 0644)).error(), 0);
}

}  // namespace
}  // namespace memfuse::mirrord
