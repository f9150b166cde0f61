#include "mirrord/backend/http_backend.h"

#include <sys/stat.h>

#include <cerrno>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/testing/fake_invariant_server.h"
#include "tests/unit/mirrord/backend/mutations.h"

namespace memfuse::mirrord {
namespace {

using testing::ApiTree;
using testing::FakeInvariantServer;
using testing::Fault;
using testing::WalkApiTree;

constexpr uint64_t kRoot = 1;

class HttpBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(server_.Start().ok());
    HttpBackend::Options options;
    options.base_url = server_.base_url();
    absl::StatusOr<std::unique_ptr<HttpBackend>> backend =
        HttpBackend::Open(options);
    ASSERT_TRUE(backend.ok()) << backend.status();
    (*backend)->Start();
    backend_ = std::move(*backend);
    pb::HandshakeRequest hello;
    hello.set_session_id(42);
    hello.set_block_size(1 << 20);
    ASSERT_TRUE(backend_->Handshake(hello).ok());
  }

  pb::Ack Apply(pb::Mutation m) {
    m.set_seq(++seq_);
    return backend_->Apply(m);
  }
  ApiTree Tree() {
    absl::StatusOr<ApiTree> tree = WalkApiTree("127.0.0.1", server_.port());
    EXPECT_TRUE(tree.ok()) << tree.status();
    return tree.ok() ? *tree : ApiTree();
  }

  FakeInvariantServer server_;
  std::unique_ptr<HttpBackend> backend_;
  uint64_t seq_ = 0;
};

// The files API has no capacity call: a stand-in, marked as not measured.
TEST_F(HttpBackendTest, StatFsIsALargeStandIn) {
  absl::StatusOr<pb::StatFsResponse> r = backend_->StatFs();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->known());
  EXPECT_EQ(r->total_bytes(), uint64_t{1} << 50);
  EXPECT_EQ(r->free_bytes(), uint64_t{1} << 50);
  EXPECT_EQ(r->available_bytes(), uint64_t{1} << 50);
  EXPECT_GT(r->total_files(), 0u);
  EXPECT_EQ(r->name_max(), 255u);
}

TEST_F(HttpBackendTest, AnExchangeInterruptedHalfWayFinishesOnRetry) {
  ASSERT_EQ(Apply(Create(kRoot, "a", 2, S_IFREG | 0644)).error(), 0);
  ASSERT_EQ(Apply(Create(kRoot, "b", 3, S_IFREG | 0644)).error(), 0);
  ASSERT_EQ(Apply(Write(2, 0, "was a")).error(), 0);
  ASSERT_EQ(Apply(Write(3, 0, "was b")).error(), 0);
  pb::Mutation exchange;
  exchange.set_seq(++seq_);
  pb::Rename* r = exchange.mutable_rename();
  r->set_parent(kRoot);
  r->set_name("a");
  r->set_new_parent(kRoot);
  r->set_new_name("b");
  r->set_flags(2);  // RENAME_EXCHANGE
  r->set_id(2);
  r->set_replaced_id(3);
  // The second of its three renames (b to a) fails with a 500: transient.
  server_.InjectFault({Fault::Kind::kServerError, 1, "PUT files/rename/1/b"});
  pb::Ack ack = backend_->Apply(exchange);
  EXPECT_NE(ack.error(), 0);
  EXPECT_FALSE(ack.permanent()) << ack.message();
  // Retried, it finishes without redoing the first rename.
  ack = backend_->Apply(exchange);
  EXPECT_EQ(ack.error(), 0) << ack.message();
  ApiTree tree = Tree();
  ASSERT_TRUE(tree.contains("a") && tree.contains("b"));
  EXPECT_EQ(tree["a"].bytes, "was b");
  EXPECT_EQ(tree["b"].bytes, "was a");
  EXPECT_EQ(tree.size(), 2u) << "the name set aside is left behind";
  // Applied again (a replay): nothing changes.
  EXPECT_EQ(backend_->Apply(exchange).error(), 0);
  tree = Tree();
  EXPECT_EQ(tree["a"].bytes, "was b");
}

TEST_F(HttpBackendTest, NeverRemovesOrReplacesAServerDirectoryWithEntries) {
  ASSERT_EQ(Apply(Create(kRoot, "d", 2, S_IFDIR | 0755)).error(), 0);
  ASSERT_EQ(Apply(Create(kRoot, "e", 3, S_IFDIR | 0755)).error(), 0);
  // Another client puts a file in d behind fsd's back.
  ApiTree before = Tree();
  {
    const std::string path =
        absl::StrCat("files/", before["d"].node, "/theirs?kind=File");
    std::unique_ptr<HttpClient> client =
        *HttpClient::Create(server_.base_url());
    ASSERT_EQ(client->Put(path)->status, 200);
  }
  pb::Mutation rmdir;
  rmdir.mutable_remove()->set_parent(kRoot);
  rmdir.mutable_remove()->set_name("d");
  rmdir.mutable_remove()->set_id(2);
  rmdir.mutable_remove()->set_directory(true);
  pb::Ack ack = Apply(rmdir);
  EXPECT_EQ(ack.error(), ENOTEMPTY);
  EXPECT_TRUE(ack.permanent());
  pb::Mutation onto;
  pb::Rename* r = onto.mutable_rename();
  r->set_parent(kRoot);
  r->set_name("e");
  r->set_new_parent(kRoot);
  r->set_new_name("d");
  r->set_id(3);
  r->set_replaced_id(2);
  ack = Apply(onto);
  EXPECT_EQ(ack.error(), ENOTEMPTY);
  EXPECT_TRUE(Tree().contains("d/theirs"));
}

// Acknowledged means saved: a commit syncs, and one after the server lost
// unsaved changes says so (ABORTED) rather than vouching for them.
TEST_F(HttpBackendTest, ACommitSavesAndNoticesLostChanges) {
  ASSERT_EQ(Apply(Create(kRoot, "f", 2, S_IFREG | 0644)).error(), 0);
  ASSERT_EQ(Apply(Write(2, 0, "saved")).error(), 0);
  EXPECT_EQ(backend_->DurableSeq(), 0u);
  const int64_t syncs = server_.RequestCount(FakeInvariantServer::kSync);
  ASSERT_TRUE(backend_->Commit().ok());
  EXPECT_EQ(server_.RequestCount(FakeInvariantServer::kSync), syncs + 1);
  EXPECT_EQ(backend_->DurableSeq(), seq_);
  // Nothing new: no request.
  ASSERT_TRUE(backend_->Commit().ok());
  EXPECT_EQ(server_.RequestCount(FakeInvariantServer::kSync), syncs + 1);

  ASSERT_EQ(Apply(Write(2, 5, " and lost")).error(), 0);
  server_.Restart();  // drops the unsaved write, renumbers
  EXPECT_TRUE(absl::IsAborted(backend_->Commit()));
  EXPECT_EQ(backend_->DurableSeq(), seq_ - 1);
  // Applied again (what the server does with held mutations), it sticks.
  pb::Mutation again = Write(2, 5, " and lost");
  again.set_seq(seq_);
  ASSERT_EQ(backend_->Apply(again).error(), 0);
  ASSERT_TRUE(backend_->Commit().ok());
  EXPECT_EQ(backend_->DurableSeq(), seq_);
  server_.Restart();
  EXPECT_EQ(Tree()["f"].bytes, "saved and lost");
}

// Two unsaved writes to overlapping bytes are never left together.
TEST_F(HttpBackendTest, AnOverlappingWriteWaitsForACommit) {
  ASSERT_EQ(Apply(Create(kRoot, "f", 2, S_IFREG | 0644)).error(), 0);
  ASSERT_EQ(Apply(Write(2, 0, "0123456789")).error(), 0);
  EXPECT_FALSE(backend_->NeedsCommitBefore(Write(2, 10, "abc")));
  EXPECT_TRUE(backend_->NeedsCommitBefore(Write(2, 9, "abc")));
  EXPECT_TRUE(backend_->NeedsCommitBefore(Write(2, 0, "a")));
  EXPECT_FALSE(backend_->NeedsCommitBefore(Write(3, 0, "a")));
  EXPECT_TRUE(backend_->NeedsCommitBefore(Sync(0)));
  ASSERT_TRUE(backend_->Commit().ok());
  EXPECT_FALSE(backend_->NeedsCommitBefore(Write(2, 0, "a")));
}

TEST_F(HttpBackendTest, FindsItsObjectsByNameAfterTheServerRenumbers) {
  ASSERT_EQ(Apply(Create(kRoot, "dir", 2, S_IFDIR | 0755)).error(), 0);
  ASSERT_EQ(Apply(Create(2, "f", 3, S_IFREG | 0644)).error(), 0);
  ASSERT_EQ(Apply(Write(3, 0, "before")).error(), 0);
  const uint64_t old_node = Tree()["dir/f"].node;
  ASSERT_TRUE(backend_->Commit().ok());  // acknowledged: saved
  server_.Restart();
  ASSERT_EQ(Apply(Write(3, 6, " and after")).error(), 0);
  ApiTree tree = Tree();
  EXPECT_NE(tree["dir/f"].node, old_node);
  EXPECT_EQ(tree["dir/f"].bytes, "before and after");
  pb::ReadBlockRequest read;
  read.set_id(3);
  read.set_length(100);
  ASSERT_TRUE(backend_->Commit().ok());  // acknowledged: saved
  server_.Restart();
  std::string out(100, '\0');
  absl::StatusOr<uint64_t> n = backend_->ReadBlock(read, absl::MakeSpan(out));
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(out.substr(0, *n), "before and after");
}

// The API cannot punch: the range is written as zeros (in block-sized
// requests), the size kept; an unknown id is answered as a write's is.
TEST_F(HttpBackendTest, APunchedRangeReadsBackAsZeros) {
  constexpr uint64_t kMiB = 1 << 20;
  ASSERT_EQ(Apply(Create(kRoot, "f", 2, S_IFREG | 0644)).error(), 0);
  ASSERT_EQ(Apply(Write(2, 0, std::string(kMiB, 'a'))).error(), 0);
  ASSERT_EQ(Apply(Write(2, kMiB, std::string(kMiB, 'b'))).error(), 0);
  ASSERT_EQ(Apply(Write(2, 2 * kMiB, "tail")).error(), 0);
  // Across the boundary of two blocks.
  const pb::Ack punched = Apply(PunchHole(2, kMiB - 100, 300));
  EXPECT_EQ(punched.error(), 0) << punched.message();
  std::string expected = std::string(kMiB, 'a') + std::string(kMiB, 'b') +
                         "tail";
  expected.replace(kMiB - 100, 300, std::string(300, '\0'));
  const std::string bytes = Tree()["f"].bytes;
  EXPECT_EQ(bytes.size(), expected.size());
  EXPECT_TRUE(bytes == expected) << "the punched range differs";

  EXPECT_EQ(Apply(PunchHole(77, 0, 10)).error(),
            Apply(Write(77, 0, "x")).error());
  EXPECT_NE(Apply(PunchHole(2, uint64_t{1} << 63, 1)).error(), 0);
}

}  // namespace
}  // namespace memfuse::mirrord
