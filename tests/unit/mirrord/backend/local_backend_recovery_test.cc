// Tests of the local backend's recovery and refusals: replay resuming after
// an agent restart, bad names and unknown ids refused without touching the
// mirror, symlinks planted in the mirror never followed, foreign content
// as a permanent conflict, and the repair of what was removed underneath.
#include "mirrord/backend/local_backend.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "tests/unit/mirrord/backend/local_backend_test_fixture.h"
#include "tests/unit/mirrord/backend/mutations.h"

namespace memfuse::mirrord::local_backend_test {
namespace {

TEST_F(LocalBackendTest, ResumesAfterARestartAndReplaysTheTail) {
  ASSERT_EQ(Apply(Create(kRoot, "d", 2, S_IFDIR | 0755)).error(), 0);  // 1
  ASSERT_EQ(Apply(Create(2, "f", 3, S_IFREG | 0644)).error(), 0);      // 2
  ASSERT_EQ(Apply(Write(3, 0, "v1")).error(), 0);                      // 3
  ASSERT_EQ(Apply(Sync(0)).error(), 0);                                // 4
  ASSERT_EQ(Apply(Write(3, 0, "v2")).error(), 0);                      // 5
  ASSERT_EQ(Apply(Rename(2, "f", kRoot, "g", 3)).error(), 0);          // 6
  ASSERT_EQ(Apply(Write(3, 2, "+")).error(), 0);                       // 7
  ASSERT_EQ(Apply(Create(kRoot, "x", 4, S_IFREG | 0600)).error(), 0);  // 8
  const std::string applied = Snapshot(mirror_);

  // A new agent process: the persisted state says where replay resumes.
  backend_.reset();
  OpenBackend();
  pb::HandshakeResponse r = Handshake(kSession);
  EXPECT_EQ(r.last_applied_seq(), 7u);  // stored before namespace op 8
  EXPECT_EQ(Handshake(kSession + 1).last_applied_seq(), 0u);  // other fsd
  r = Handshake(kSession);
  ASSERT_EQ(r.last_applied_seq(), 7u);
  // fsd binds what it knows as of seq 7 and resends the tail.
  Bind(2, kRoot, "d");
  Bind(3, kRoot, "g");
  pb::Mutation m8 = Create(kRoot, "x", 4, S_IFREG | 0600);
  m8.set_seq(8);
  EXPECT_OK(backend_->Apply(m8));
  // Older mutations resent anyway are not applied twice.
  pb::Mutation m6 = Rename(2, "f", kRoot, "g", 3);
  m6.set_seq(6);
  EXPECT_OK(backend_->Apply(m6));
  EXPECT_EQ(Snapshot(mirror_), applied);

  pb::Mutation m9 = Write(4, 0, "new");
  m9.set_seq(9);
  EXPECT_OK(backend_->Apply(m9));
  EXPECT_EQ(ReadFile(M("x")), "new");
  EXPECT_EQ(ReadFile(M("g")), "v2+");
}

TEST_F(LocalBackendTest, ReplaysEachNamespaceOpAfterARestart) {
  // For each op: apply it (and a write after it), restart, bind the state
  // before it, replay both: the mirror is the same.
  struct Case {
    std::string what;
    pb::Mutation op;
  };
  ASSERT_EQ(Apply(Create(kRoot, "d", 2, S_IFDIR | 0755)).error(), 0);
  ASSERT_EQ(Apply(Create(2, "f", 3, S_IFREG | 0644)).error(), 0);
  ASSERT_EQ(Apply(Create(kRoot, "e", 4, S_IFREG | 0644)).error(), 0);
  ASSERT_EQ(Apply(Write(3, 0, "f-data")).error(), 0);
  ASSERT_EQ(Apply(Write(4, 0, "e-data")).error(), 0);
  // Binding of the state the test keeps in step.
  std::vector<std::tuple<uint64_t, uint64_t, std::string>> bound = {
      {2, kRoot, "d"}, {3, 2, "f"}, {4, kRoot, "e"}};
  auto restart_and_replay = [&](const pb::Mutation& op, const pb::Mutation& w) {
    backend_.reset();
    OpenBackend();
    pb::HandshakeResponse r = Handshake(kSession);
    EXPECT_EQ(r.last_applied_seq(), op.seq() - 1) << op.DebugString();
    for (const auto& [id, parent, name] : bound) Bind(id, parent, name);
    EXPECT_OK(backend_->Apply(op));
    EXPECT_OK(backend_->Apply(w));
  };
  auto run = [&](pb::Mutation op, uint64_t write_id) {
    op.set_seq(++seq_);
    pb::Mutation w = Write(write_id, 0, "after " + std::to_string(op.seq()));
    w.set_seq(++seq_);
    ASSERT_EQ(backend_->Apply(op).error(), 0) << op.DebugString();
    ASSERT_EQ(backend_->Apply(w).error(), 0);
    const std::string once = Snapshot(mirror_);
    restart_and_replay(op, w);
    EXPECT_EQ(Snapshot(mirror_), once) << op.DebugString();
  };
  run(Create(2, "n", 5, S_IFREG | 0644), 5);
  bound.emplace_back(5, 2, "n");
  run(Link(5, kRoot, "n2"), 5);
  bound.emplace_back(5, kRoot, "n2");
  run(Rename(2, "f", kRoot, "e", 3, 4), 3);
  bound = {{2, kRoot, "d"}, {3, kRoot, "e"}, {5, 2, "n"}, {5, kRoot, "n2"}};
  run(Rename(kRoot, "e", 2, "n", 3, 5, RENAME_EXCHANGE), 3);
  bound = {{2, kRoot, "d"}, {3, 2, "n"}, {5, kRoot, "e"}, {5, kRoot, "n2"}};
  run(Remove(kRoot, "n2", 5), 5);
  bound = {{2, kRoot, "d"}, {3, 2, "n"}, {5, kRoot, "e"}};
  run(Remove(2, "n", 3), 5);
}

TEST_F(LocalBackendTest, RejectsBadNamesAndUnknownIdsLeavingTheMirror) {
  ASSERT_EQ(Apply(Create(kRoot, "d", 2, S_IFDIR | 0755)).error(), 0);
  const std::string before = Snapshot(mirror_);
  const std::string bad_names[] = {"a/b", std::string("a\0b", 3), ".", "..",
                                   ""};
  for (const std::string& name : bad_names) {
    EXPECT_PERMANENT(Apply(Create(kRoot, name, 10, S_IFREG | 0644)), EINVAL);
    EXPECT_PERMANENT(Apply(Link(2, kRoot, name)), EINVAL);
    EXPECT_PERMANENT(Apply(Rename(kRoot, "d", kRoot, name, 2)), EINVAL);
    EXPECT_PERMANENT(Apply(Remove(kRoot, name, 2)), EINVAL);
  }
  EXPECT_PERMANENT(
      Apply(Create(kRoot, std::string(256, 'n'), 10, S_IFREG | 0644)),
      ENAMETOOLONG);
  EXPECT_MISSING(Apply(Create(77, "x", 10, S_IFREG | 0644)), 10u);
  EXPECT_PERMANENT(Apply(Create(kRoot, "x", 0, S_IFREG | 0644)), EINVAL);
  EXPECT_PERMANENT(Apply(Create(kRoot, "x", kRoot, S_IFDIR | 0755)), EINVAL);
  EXPECT_PERMANENT(Apply(Create(kRoot, "x", 2, S_IFREG | 0644)), EINVAL);
  EXPECT_PERMANENT(Apply(Create(kRoot, "x", 10, 0644)), EINVAL);  // no type
  EXPECT_PERMANENT(Apply(Create(kRoot, "x", 10, S_IFLNK | 0777)), EINVAL);
  EXPECT_MISSING(Apply(Link(77, kRoot, "x")), 77u);
  EXPECT_PERMANENT(Apply(Remove(kRoot, "d", 77)), EINVAL);
  EXPECT_MISSING(Apply(Rename(kRoot, "d", 77, "x", 2)), 2u);
  EXPECT_PERMANENT(Apply(Rename(kRoot, "d", kRoot, "x", 2, 0, 4)), EINVAL);
  EXPECT_MISSING(Apply(SetAttr(1, MakeAttr(77, 0644))), 77u);
  EXPECT_MISSING(Apply(SetXattr(77, "user.a", "v")), 77u);
  EXPECT_PERMANENT(Apply(SetXattr(2, "user.memfuse.seq", "0 99")), EINVAL);
  EXPECT_PERMANENT(Apply(SetXattr(kRoot, "user.memfuse.seq", "0 99")), EINVAL);
  EXPECT_PERMANENT(Apply(SetXattr(2, "trusted.x", "v")), EINVAL);
  EXPECT_PERMANENT(Apply(RemoveXattr(kRoot, "user.memfuse.seq")), EINVAL);
  EXPECT_MISSING(Apply(Sync(77)), 77u);
  pb::Mutation empty;
  EXPECT_PERMANENT(Apply(empty), EINVAL);
  EXPECT_EQ(Snapshot(mirror_), before);
  // The replay state is still the agent's own, untouched by the requests.
  EXPECT_NE(Xattr(mirror_, "user.memfuse.seq"), "0 99");

  pb::StatusResponse status;
  backend_->FillStatus(&status);
  EXPECT_GT(status.errors_total(), 20u);
  EXPECT_TRUE(status.backend_healthy());
}

TEST_F(LocalBackendTest, NeverFollowsASymlinkPlantedInTheMirror) {
  ASSERT_EQ(Apply(Create(kRoot, "d", 2, S_IFDIR | 0755)).error(), 0);
  fs::create_directory_symlink(outside_, M("evil"));
  fs::create_directory_symlink(outside_, M("d/deep"));
  WriteFile(outside_ + "/target", "secret");
  fs::create_symlink(outside_ + "/target", M("leaf"));
  const std::string outside_before = Snapshot(outside_);
  const struct stat outside_st = Lstat(outside_);
  const struct stat target_st = Lstat(outside_ + "/target");

  pb::ListDirectoryResponse root = List(kRoot, 100);
  pb::ListDirectoryResponse d = List(2, 200);
  std::map<std::string, uint64_t> ids;
  for (const pb::DirEntry& e : root.entries()) ids[e.name()] = e.attr().id();
  for (const pb::DirEntry& e : d.entries()) ids[e.name()] = e.attr().id();
  ASSERT_TRUE(ids.count("evil") && ids.count("deep") && ids.count("leaf"));
  for (const char* link : {"evil", "deep"}) {
    const uint64_t id = ids[link];
    EXPECT_NE(Apply(Create(id, "f", 300, S_IFREG | 0644)).error(), 0);
    EXPECT_NE(Apply(Create(id, "sub", 301, S_IFDIR | 0755)).error(), 0);
    EXPECT_NE(Apply(Write(id, 0, "x")).error(), 0);
    pb::Attr attr = MakeAttr(id, S_IFDIR | 0777);
    attr.set_size(0);
    Apply(SetAttr(1 | 8 | 16 | 32, attr));
    EXPECT_NE(Apply(SetXattr(id, "user.x", "v")).error(), 0);
  }
  const uint64_t leaf = ids["leaf"];
  EXPECT_NE(Apply(Write(leaf, 0, "overwritten")).error(), 0);
  pb::Attr attr = MakeAttr(leaf, S_IFREG | 0777);
  attr.set_size(0);
  EXPECT_NE(Apply(SetAttr(8, attr)).error(), 0);
  Apply(SetAttr(1, attr));
  pb::ReadBlockRequest read;
  read.set_id(leaf);
  read.set_length(100);
  EXPECT_FALSE(Read(read).ok());

  EXPECT_EQ(Snapshot(outside_), outside_before);
  EXPECT_EQ(ReadFile(outside_ + "/target"), "secret");
  EXPECT_EQ(Lstat(outside_).st_mode, outside_st.st_mode);
  EXPECT_EQ(Lstat(outside_ + "/target").st_mode, target_st.st_mode);
  // Removing the link removes the link, not what it points to.
  EXPECT_OK(Apply(Remove(kRoot, "evil", ids["evil"])));
  EXPECT_FALSE(fs::exists(fs::symlink_status(M("evil"))));
  EXPECT_EQ(Snapshot(outside_), outside_before);
}

TEST_F(LocalBackendTest, ConflictsWithForeignContentArePermanent) {
  ASSERT_EQ(Apply(Create(kRoot, "d", 2, S_IFDIR | 0755)).error(), 0);
  ASSERT_EQ(mkdir(M("taken").c_str(), 0755), 0);
  EXPECT_PERMANENT(Apply(Create(kRoot, "taken", 3, S_IFREG | 0644)), EEXIST);
  WriteFile(M("d/stray"), "someone else's");
  EXPECT_PERMANENT(Apply(Remove(kRoot, "d", 2, true)), ENOTEMPTY);
  EXPECT_TRUE(fs::exists(M("d/stray")));
  // A name in the mirror that fsd does not say is that object.
  EXPECT_PERMANENT(Apply(Remove(2, "stray", 2)), EINVAL);
  EXPECT_TRUE(fs::exists(M("d/stray")));
}

TEST_F(LocalBackendTest, ADirectoryRemovedUnderneathIsMissingNotRetried) {
  ASSERT_EQ(Apply(Create(kRoot, "d", 2, S_IFDIR | 0755)).error(), 0);
  ASSERT_EQ(Apply(Create(2, "sub", 3, S_IFDIR | 0755)).error(), 0);
  ASSERT_EQ(Apply(Create(3, "f", 4, S_IFREG | 0644)).error(), 0);
  ASSERT_EQ(Apply(Write(4, 0, "before")).error(), 0);
  // Removed underneath by someone else, with the agent's descriptors of
  // it still cached: no retry brings it back, fsd must.
  fs::remove_all(M("d"));
  EXPECT_MISSING(Apply(Write(4, 0, "after")), 4u);
  EXPECT_MISSING(Apply(Create(3, "g", 5, S_IFREG | 0644)), 5u);
  // A removal in it is done already.
  EXPECT_OK(Apply(Remove(3, "f", 4)));
  EXPECT_FALSE(fs::exists(M("d")));
  pb::StatusResponse status;
  backend_->FillStatus(&status);
  EXPECT_EQ(status.missing_objects(), 2u);
  // fsd's repair: the chain again, the id bound where fsd says.
  pb::Mutation again = Create(kRoot, "d", 2, S_IFDIR | 0755);
  again.mutable_create()->set_repair(true);
  EXPECT_OK(Apply(again));
  again = Create(2, "sub", 3, S_IFDIR | 0755);
  again.mutable_create()->set_repair(true);
  EXPECT_OK(Apply(again));
  again = Create(3, "g", 5, S_IFREG | 0644);
  again.mutable_create()->set_repair(true);
  EXPECT_OK(Apply(again));
  EXPECT_OK(Apply(Write(5, 0, "repaired")));
  EXPECT_EQ(ReadFile(M("d/sub/g")), "repaired");
}

// A repair binds an id the agent knew elsewhere where fsd says it is now,
// and adopts an object of the same kind found there.
TEST_F(LocalBackendTest, ARepairCreateRebindsAndAdopts) {
  ASSERT_EQ(Apply(Create(kRoot, "old", 2, S_IFREG | 0644)).error(), 0);
  WriteFile(M("new"), "found there");
  EXPECT_PERMANENT(Apply(Create(kRoot, "new", 2, S_IFREG | 0644)), EINVAL);
  pb::Mutation repair = Create(kRoot, "new", 2, S_IFREG | 0644);
  repair.mutable_create()->set_repair(true);
  EXPECT_OK(Apply(repair));
  EXPECT_EQ(ReadFile(M("new")), "found there");
  EXPECT_OK(Apply(Write(2, 0, "FOUND")));
  EXPECT_EQ(ReadFile(M("new")), "FOUND there");
  EXPECT_EQ(ReadFile(M("old")), "");
}

}  // namespace
}  // namespace memfuse::mirrord::local_backend_test
