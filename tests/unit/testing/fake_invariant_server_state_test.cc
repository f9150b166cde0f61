// Tests of the fake Invariant files server's saves and restarts: etags that
// change only at a save, a restart that keeps only what was saved and
// renumbers every node, the save timer, and the unsaved writes that
// overlap (counted, and scrambled when asked).
#include "tests/testing/fake_invariant_server.h"

#include <httplib.h>

#include <algorithm>
#include <cstdint>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "tests/unit/testing/fake_invariant_server_test_fixture.h"

namespace memfuse::testing::fake_invariant_test {
namespace {

using S = FakeInvariantServer;

TEST_F(FakeInvariantServerTest, EtagChangesOnlyAtSync) {
  const uint64_t f = Create(1, "f");
  const Json before = Info(f);
  Ok(Post(absl::StrCat("/files/", f), "new contents"));
  const Json written = Info(f);
  EXPECT_EQ(written["size"], 12);
  EXPECT_EQ(written["etag"], before["etag"]);

  ExpectStatus(Put("/files/sync"), 200, "");
  const Json saved = Info(f);
  EXPECT_NE(saved["etag"], before["etag"]);
  // Same content, same etag.
  ExpectStatus(Put("/files/sync"), 200, "");
  EXPECT_EQ(Info(f)["etag"], saved["etag"]);
}

TEST_F(FakeInvariantServerTest, RestartRenumbersIdsAndKeepsWhatWasSaved) {
  const uint64_t d = Create(1, "d", "kind=Directory");
  const uint64_t f = Create(d, "f");
  Ok(Post(absl::StrCat("/files/", f), "kept"));
  server_.Save();

  server_.Restart();
  for (uint64_t old : {d, f}) {
    ExpectStatus(Get(absl::StrCat("/files/info/", old)), 400,
                 "Unrecognized node");
  }
  EXPECT_EQ(Info(1)["kind"], "Directory");
  const uint64_t new_d = Ok(Get("/files/lookup/1/d"))["node"].get<uint64_t>();
  const uint64_t new_f =
      Ok(Get(absl::StrCat("/files/lookup/", new_d, "/f")))["node"]
          .get<uint64_t>();
  EXPECT_GT(new_d, f);
  EXPECT_GT(new_f, f);
  EXPECT_EQ(Read(new_f), "kept");
  // New nodes continue above the renumbered ones.
  EXPECT_GT(Create(1, "g"), std::max(new_d, new_f));
}

TEST_F(FakeInvariantServerTest, RestartLosesEverythingNotSaved) {
  const uint64_t keep = Create(1, "keep");
  Ok(Post(absl::StrCat("/files/", keep), "kept"));
  const uint64_t removed = Create(1, "removed");
  const uint64_t d = Create(1, "d", "kind=Directory");
  Create(d, "inner");
  Create(1, "old-name");
  ExpectStatus(Put("/files/sync"), 200, "");
  EXPECT_EQ(server_.UnsavedChanges(), 0);
  const Json saved_keep = Info(keep);

  // Every kind of change, none of them saved.
  Ok(Post(absl::StrCat("/files/", keep), "overwritten and longer"));
  Ok(Post(absl::StrCat("/files/attributes/", keep),
          R"({"executable": true, "modifyTime": 5})"));
  Ok(Put(absl::StrCat("/files/size/", keep, "?size=2")));
  const uint64_t fresh = Create(1, "fresh");
  Ok(Post(absl::StrCat("/files/", fresh), "never saved"));
  Create(1, "newdir", "kind=Directory");
  EXPECT_EQ(Ok(Post(absl::StrCat("/files/remove/1/removed"))), true);
  EXPECT_EQ(Ok(Post("/files/remove/1/d")), true);
  ExpectStatus(Put("/files/rename/1/old-name?newParent=1&newName=new-name"),
               200, "");
  ExpectStatus(Put(absl::StrCat("/files/link/1/hard?node=", keep)), 200, "");
  EXPECT_EQ(server_.UnsavedChanges(), 10);
  EXPECT_EQ(Names(1), (std::set<std::string>{"fresh", "hard", "keep",
                                             "new-name", "newdir"}));

  server_.Restart();
  EXPECT_EQ(server_.UnsavedChanges(), 0);
  EXPECT_EQ(Names(1),
            (std::set<std::string>{"d", "keep", "old-name", "removed"}));
  const Json keep_info = Ok(Get("/files/lookup/1/keep"));
  EXPECT_EQ(Read(keep_info["node"].get<uint64_t>()), "kept");
  EXPECT_EQ(keep_info["executable"], false);
  EXPECT_EQ(keep_info["modifyTime"], saved_keep["modifyTime"]);
  EXPECT_EQ(keep_info["etag"], saved_keep["etag"]);
  const uint64_t new_d = Ok(Get("/files/lookup/1/d"))["node"].get<uint64_t>();
  EXPECT_EQ(Names(new_d), (std::set<std::string>{"inner"}));
  EXPECT_NE(Ok(Get("/files/lookup/1/removed"))["node"], removed);
  EXPECT_EQ(server_.NodeCount(), 6u);
}

TEST_F(FakeInvariantServerTest, ASyncMakesChangesSurviveARestart) {
  const uint64_t synced = Create(1, "synced");
  Ok(Post(absl::StrCat("/files/", synced), "first"));
  ExpectStatus(Put("/files/sync"), 200, "");
  // Written after the sync: lost, while the synced bytes stay.
  Ok(Post(absl::StrCat("/files/", synced, "?offset=5"), " and second"));
  const uint64_t unsynced = Create(1, "unsynced");
  Ok(Post(absl::StrCat("/files/", unsynced), "lost"));
  EXPECT_EQ(Read(synced), "first and second");

  server_.Restart();
  EXPECT_EQ(Names(1), (std::set<std::string>{"synced"}));
  EXPECT_EQ(Read(Ok(Get("/files/lookup/1/synced"))["node"].get<uint64_t>()),
            "first");

  // What the restarted server loaded is saved: a second restart loses
  // nothing more.
  server_.Restart();
  EXPECT_EQ(Names(1), (std::set<std::string>{"synced"}));
}

TEST_F(FakeInvariantServerTest, RestartWithDowntimeDropsUnsavedChanges) {
  Create(1, "saved", "kind=Directory");
  server_.Save();
  Create(1, "unsaved", "kind=Directory");
  EXPECT_EQ(Ok(Post("/files/remove/1/saved")), true);
  ASSERT_TRUE(server_.Restart(absl::Milliseconds(50)).ok());
  EXPECT_EQ(Names(1), (std::set<std::string>{"saved"}));
}

TEST_F(FakeInvariantServerTest, LargeFilesKeepTheirSavedBytesWhileWritten) {
  // Contents are shared with the saved tree in chunks: writes after a save,
  // across chunk boundaries, must not reach the saved copy.
  std::string saved(700 * 1024, '\0');
  for (size_t i = 0; i < saved.size(); ++i) saved[i] = static_cast<char>(i);
  const uint64_t f = Create(1, "big");
  Ok(Post(absl::StrCat("/files/", f), saved));
  server_.Save();
  const Json saved_info = Info(f);

  std::string live = saved;
  const std::string patch(100 * 1024, 'p');
  live.replace(250 * 1024, patch.size(), patch);
  Ok(Post(absl::StrCat("/files/", f, "?offset=", 250 * 1024), patch));
  EXPECT_EQ(Read(f), live);
  // Truncated inside a chunk, extended with zeros past the old end.
  Ok(Put(absl::StrCat("/files/size/", f, "?size=", 300 * 1024 + 7)));
  Ok(Put(absl::StrCat("/files/size/", f, "?size=", 900 * 1024)));
  live.resize(300 * 1024 + 7);
  live.resize(900 * 1024, '\0');
  EXPECT_EQ(Read(f), live);
  ExpectStatus(Get(absl::StrCat("/files/", f, "?offset=", 262143, "&length=3")),
               200, live.substr(262143, 3));
  server_.Save();
  EXPECT_NE(Info(f)["etag"], saved_info["etag"]);

  // Back to the first contents: the same etag as when they were saved.
  Ok(Put(absl::StrCat("/files/size/", f, "?size=0")));
  Ok(Post(absl::StrCat("/files/", f), saved));
  server_.Save();
  EXPECT_EQ(Info(f)["etag"], saved_info["etag"]);
  Ok(Post(absl::StrCat("/files/", f, "?offset=1000"), "unsaved"));
  server_.Restart();
  EXPECT_EQ(Read(Ok(Get("/files/lookup/1/big"))["node"].get<uint64_t>()),
            saved);
}

TEST_F(FakeInvariantServerTest, CountsSavesSyncsAndUnsavedChanges) {
  EXPECT_EQ(server_.UnsavedChanges(), 0);
  const uint64_t f = Create(1, "f");
  Ok(Post(absl::StrCat("/files/", f), "x"));
  // Reads and refused or empty-handed requests change nothing.
  Read(f);
  Info(f);
  Post("/files/999", "x");
  Put("/files/1/x?kind=Socket");
  EXPECT_EQ(Ok(Post("/files/remove/1/absent")), false);
  ExpectStatus(Put("/files/rename/1/f?newParent=1&newName=f"), 200, "");
  EXPECT_EQ(server_.UnsavedChanges(), 2);
  EXPECT_EQ(server_.SaveCount(), 0);

  ExpectStatus(Put("/files/sync"), 200, "");
  EXPECT_EQ(server_.UnsavedChanges(), 0);
  EXPECT_EQ(server_.SyncCount(), 1);
  EXPECT_EQ(server_.SaveCount(), 1);
  server_.Save();
  EXPECT_EQ(server_.SyncCount(), 1);
  EXPECT_EQ(server_.SaveCount(), 2);
  // A sync refused by a fault saves nothing; one whose answer is cut does.
  Create(1, "g");
  server_.InjectFault({Fault::Kind::kServerError, 1, "PUT files/sync"});
  ExpectStatus(Put("/files/sync"), 500, "Injected server error");
  EXPECT_EQ(server_.UnsavedChanges(), 1);
  server_.InjectFault({Fault::Kind::kTruncatedBody, 1, "PUT files/sync"});
  EXPECT_FALSE(Put("/files/sync"));
  EXPECT_EQ(server_.UnsavedChanges(), 0);
  EXPECT_EQ(server_.SyncCount(), 2);
  EXPECT_EQ(server_.RequestCount(S::kSync), 3);

  server_.ResetCounters();
  EXPECT_EQ(server_.SaveCount(), 0);
  EXPECT_EQ(server_.SyncCount(), 0);
}

TEST(FakeInvariantServerSaveTimerTest, SavesOnItsOwnEveryInterval) {
  EXPECT_EQ(S::Options().save_interval, absl::Seconds(5));
  S::Options options;
  options.save_interval = absl::Milliseconds(50);
  FakeInvariantServer server(options);
  ASSERT_TRUE(server.Start().ok());
  auto client = NewClient(server.port());
  httplib::Result created =
      client->Put("/files/1/f?kind=File", "", "text/plain");
  ASSERT_TRUE(created && created->status == 200);
  const uint64_t f = Json::parse(created->body).value("node", uint64_t{0});
  httplib::Result written = client->Post(absl::StrCat("/files/", f), "timed",
                                         "application/octet-stream");
  ASSERT_TRUE(written && written->status == 200);

  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (server.UnsavedChanges() > 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  ASSERT_EQ(server.UnsavedChanges(), 0) << "the timer did not save";
  EXPECT_GE(server.SaveCount(), 1);
  EXPECT_EQ(server.SyncCount(), 0);
  server.Restart();
  httplib::Result found = client->Get("/files/lookup/1/f");
  ASSERT_TRUE(found && found->status == 200);
  httplib::Result read = client->Get(absl::StrCat(
      "/files/", Json::parse(found->body).value("node", uint64_t{0})));
  ASSERT_TRUE(read);
  EXPECT_EQ(read->body, "timed");
  // Stop ends the timer's thread too (a hang here is the failure).
  server.Stop();
}

TEST_F(FakeInvariantServerTest, CountsWritesOverlappingUnsavedOnes) {
  const uint64_t f = Create(1, "f");
  const std::string path = absl::StrCat("/files/", f);
  Ok(Post(path + "?offset=0", "aaaa"));
  Ok(Post(path + "?offset=4", "bbbb"));  // touches, does not overlap
  Ok(Post(path + "?offset=10", ""));     // empty: no range
  EXPECT_EQ(server_.OverlappingUnsavedWrites(), 0);
  Ok(Post(path + "?offset=7", "cc"));  // [7, 9) over [4, 8)
  EXPECT_EQ(server_.OverlappingUnsavedWrites(), 1);
  // Another file's ranges are its own.
  const uint64_t g = Create(1, "g");
  Ok(Post(absl::StrCat("/files/", g), "aaaa"));
  EXPECT_EQ(server_.OverlappingUnsavedWrites(), 1);

  // A save forgets every range.
  server_.Save();
  Ok(Post(path + "?offset=0", "dddddddd"));
  Ok(Post(path + "?offset=20", "zz"));
  EXPECT_EQ(server_.OverlappingUnsavedWrites(), 1);
  // A truncation forgets what lies beyond the new size, whole ranges and
  // the tail of one.
  Ok(Put(absl::StrCat("/files/size/", f, "?size=3")));
  Ok(Post(path + "?offset=3", "eeee"));
  EXPECT_EQ(server_.OverlappingUnsavedWrites(), 1);
  Ok(Post(absl::StrCat("/files/attributes/", f), R"({"size": 5})"));
  Ok(Post(path + "?offset=5", "ff"));
  EXPECT_EQ(server_.OverlappingUnsavedWrites(), 1);
  Ok(Post(path + "?offset=4", "gg"));  // over two earlier writes: counted once
  EXPECT_EQ(server_.OverlappingUnsavedWrites(), 2);
  // Not scrambled by default: the newest bytes win.
  EXPECT_EQ(Read(f), "dddeggf");
}

TEST(FakeInvariantServerScrambleTest, OverlappingUnsavedWritesKeepOlderBytes) {
  S::Options options = SavingOnlyWhenAsked();
  options.scramble_overlaps = true;
  FakeInvariantServer server(options);
  ASSERT_TRUE(server.Start().ok());
  auto client = NewClient(server.port());
  httplib::Result created =
      client->Put("/files/1/f?kind=File", "", "text/plain");
  ASSERT_TRUE(created && created->status == 200);
  const std::string path = absl::StrCat(
      "/files/", Json::parse(created->body).value("node", uint64_t{0}));
  auto write = [&](uint64_t offset, const std::string& bytes) {
    httplib::Result r = client->Post(absl::StrCat(path, "?offset=", offset),
                                     bytes, "application/octet-stream");
    ASSERT_TRUE(r && r->status == 200);
  };
  auto read = [&] {
    httplib::Result r = client->Get(path);
    return r ? r->body : "transport error";
  };

  write(0, "AAAAAAAA");
  write(2, "BBBB");  // entirely over the older write: lost
  EXPECT_EQ(read(), "AAAAAAAA");
  write(6, "CCCC");  // [6, 8) keeps the older bytes, [8, 10) is new
  EXPECT_EQ(read(), "AAAAAAAACC");
  EXPECT_EQ(server.OverlappingUnsavedWrites(), 2);

  // After a save the same write lands as written.
  server.Save();
  write(2, "BBBB");
  EXPECT_EQ(read(), "AABBBBAACC");
  EXPECT_EQ(server.OverlappingUnsavedWrites(), 2);
}

}  // namespace
}  // namespace memfuse::testing::fake_invariant_test
