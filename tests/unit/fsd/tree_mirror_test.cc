// The Tree's side of the mirror (tree_mirror.cc): lazy blocks, eviction and
// the waits for room, with a fake MirrorReader standing in for the agent.
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/stat.h>

#include <atomic>
#include <functional>
#include <cerrno>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/status.h"
#include "fsd/mutation_log.h"
#include "fsd/tree.h"
#include "gtest/gtest.h"
#include "tests/unit/fsd/fake_reader.h"

namespace memfuse::fsd {
namespace {

using common::StatusToErrno;

constexpr uint64_t kBlock = 4096;

using testing::FakeReader;
using testing::MirrorByte;

class TreeMirrorTest : public ::testing::Test {
 protected:
  explicit TreeMirrorTest(uint64_t cache_blocks = 6,
                          uint64_t dirty_blocks = 0)
      : budget_(cache_blocks * kBlock),
        log_(kBlock, dirty_blocks * kBlock) {
    tree_.SetMirrorLog(&log_);
    tree_.SetMirrorReader(&reader_);
  }
  ~TreeMirrorTest() override {
    reader_.Release();
    log_.Shutdown();
    tree_.StopMirrorReads();
  }

  // A file of the mirror, named `name` in the root, loaded lazily (every
  // block missing) and looked up once (the kernel's reference).
  void Load(const std::string& name, uint64_t id, uint64_t size) {
    pb::DirEntry entry;
    entry.set_name(name);
    entry.mutable_attr()->set_id(id);
    entry.mutable_attr()->set_mode(S_IFREG | 0644);
    entry.mutable_attr()->set_size(size);
    entry.mutable_attr()->set_nlink(1);
    ASSERT_TRUE(tree_.LoadEntry(FUSE_ROOT_ID, entry).ok());
    ASSERT_TRUE(tree_.Lookup(FUSE_ROOT_ID, name).ok());
  }
  // Reads all of `id` and checks it holds the mirror's bytes.
  absl::Status ReadsBack(uint64_t id, uint64_t size) {
    std::string got(size, '\0');
    absl::StatusOr<size_t> n = tree_.Read(id, 0, size, got.data());
    if (!n.ok()) return n.status();
    if (*n != size) return absl::InternalError("short read");
    for (uint64_t i = 0; i < size; ++i) {
      if (got[i] != MirrorByte(id, i)) {
        return absl::InternalError(absl::StrCat("byte ", i, " differs"));
      }
    }
    return absl::OkStatus();
  }

  BlockBudget budget_;
  MutationLog log_;
  FakeReader reader_;
  Tree tree_{kBlock, &budget_};
};

// An unlink of an open file fetches its missing bytes first (the mirror
// drops them with the name). The decision must be made for the file the
// name holds when it goes, not for the one it held when the fetch began:
// here the name is moved away and another open file takes it while the
// first fetch is held.
TEST_F(TreeMirrorTest, UnlinkFetchesTheOpenFileTheNameHoldsWhenItGoes) {
  constexpr uint64_t kX = 10, kY = 11, kW = 12;
  Load("x", kX, 2 * kBlock);
  Load("y", kY, 2 * kBlock);
  Load("w", kW, 3 * kBlock);
  ASSERT_TRUE(tree_.Opened(kX).ok());
  ASSERT_TRUE(tree_.Opened(kY).ok());
  reader_.HoldFirstReadOf(kX);

  absl::Status unlinked;
  std::thread unlinker(
      [&] { unlinked = tree_.Unlink(FUSE_ROOT_ID, "x"); });
  ASSERT_TRUE(reader_.WaitHeld());
  // While x's bytes are being read: x moves to z, y takes the name x.
  ASSERT_TRUE(tree_.Rename(FUSE_ROOT_ID, "x", FUSE_ROOT_ID, "z", 0).ok());
  ASSERT_TRUE(tree_.Rename(FUSE_ROOT_ID, "y", FUSE_ROOT_ID, "x", 0).ok());
  reader_.Release();
  unlinker.join();
  ASSERT_TRUE(unlinked.ok()) << unlinked;
  EXPECT_EQ(StatusToErrno(tree_.Lookup(FUSE_ROOT_ID, "x").status()), ENOENT);
  reader_.Drop(kY);  // the mirror applied the unlink

  // y lost its last name while open: every byte is still readable.
  EXPECT_TRUE(ReadsBack(kY, 2 * kBlock).ok()) << ReadsBack(kY, 2 * kBlock);
  // x (now z) kept its name: its blocks are clean and may be evicted to
  // make room (6 blocks: y's 2 stay, x's 2 must give way to w's 3).
  EXPECT_TRUE(ReadsBack(kX, 2 * kBlock).ok());
  EXPECT_TRUE(ReadsBack(kW, 3 * kBlock).ok()) << ReadsBack(kW, 3 * kBlock);
  EXPECT_GT(tree_.GetCacheStats().blocks_evicted, 0u);
}

// A rename that fails leaves the file it would have replaced as it was:
// evictable like any other.
TEST_F(TreeMirrorTest, AFailedRenameDoesNotPinTheFileItWouldReplace) {
  constexpr uint64_t kT = 10, kW = 12;
  Load("t", kT, 3 * kBlock);
  Load("w", kW, 4 * kBlock);
  ASSERT_TRUE(tree_.Opened(kT).ok());
  // No "nosuch": ENOENT, after t's bytes may have been fetched.
  EXPECT_EQ(StatusToErrno(tree_.Rename(FUSE_ROOT_ID, "nosuch", FUSE_ROOT_ID,
                                       "t", 0)),
            ENOENT);
  EXPECT_TRUE(ReadsBack(kT, 3 * kBlock).ok());
  // w needs 4 of the 6 blocks: t's must be evicted. (Were t pinned, w's
  // blocks would evict each other for ever: then t is closed and removed.)
  absl::Status read;
  absl::Notification done;
  std::thread reader([&] {
    read = ReadsBack(kW, 4 * kBlock);
    done.Notify();
  });
  if (!done.WaitForNotificationWithTimeout(absl::Seconds(10))) {
    ADD_FAILURE() << "t's blocks are never evicted";
    tree_.Released(kT);
    EXPECT_TRUE(tree_.Unlink(FUSE_ROOT_ID, "t").ok());
    tree_.Forget(kT, 1);
  }
  reader.join();
  EXPECT_TRUE(read.ok()) << read;
}

// An open that reaches fsd after the unlink of the file's last name (the
// kernel resolved the name before) must not hand out a file whose bytes
// the mirror dropped.
TEST_F(TreeMirrorTest, AnOpenAfterTheLastNameWentNeverReadsDroppedBytes) {
  constexpr uint64_t kF = 10;
  Load("f", kF, 2 * kBlock);
  ASSERT_TRUE(tree_.Unlink(FUSE_ROOT_ID, "f").ok());
  reader_.Drop(kF);
  absl::Status opened = tree_.Opened(kF);
  if (opened.ok()) {
    EXPECT_TRUE(ReadsBack(kF, 2 * kBlock).ok());
    tree_.Released(kF);
  } else {
    EXPECT_EQ(StatusToErrno(opened), ENOENT) << opened;
  }
  // A file whose bytes are all in memory opens after its last name went.
  ASSERT_TRUE(tree_.MakeNode(FUSE_ROOT_ID, "g", S_IFREG | 0644, 0, {}, {}).ok());
  const fuse_ino_t g = tree_.Lookup(FUSE_ROOT_ID, "g")->st_ino;
  ASSERT_TRUE(tree_.Write(g, 0, "abc", 3).ok());
  ASSERT_TRUE(tree_.Unlink(FUSE_ROOT_ID, "g").ok());
  EXPECT_TRUE(tree_.Opened(g).ok());
}

// A cache of 4 blocks, filled with dirty blocks the mirror does not
// acknowledge (the agent is down).
class RoomWaitTest : public TreeMirrorTest {
 protected:
  RoomWaitTest() : TreeMirrorTest(/*cache_blocks=*/4) {}

  void FillWithDirtyBlocks() {
    ASSERT_TRUE(
        tree_.MakeNode(FUSE_ROOT_ID, "hot", S_IFREG | 0644, 0, {}, {}).ok());
    hot_ = tree_.Lookup(FUSE_ROOT_ID, "hot")->st_ino;
    const std::string block(kBlock, 'h');
    for (uint64_t i = 0; i < 4; ++i) {
      ASSERT_TRUE(tree_.Write(hot_, i * kBlock, block.data(), kBlock).ok());
    }
    ASSERT_EQ(budget_.used(), budget_.limit());
  }
  // The mirror comes back and acknowledges everything.
  void AckAll() {
    while (log_.TakeNext(absl::ZeroDuration()).has_value()) {
    }
    const MutationLog::Backlog b = log_.GetBacklog();
    pb::Ack ack;
    ack.set_seq(b.last_acked + b.mutations);
    log_.Acked(ack);
  }
  // Runs `op` on a thread; true if it returned within `bound`. If it did
  // not, the mirror acknowledges everything so that it returns.
  bool ReturnsWithin(absl::Duration bound, std::function<void()> op) {
    absl::Notification done;
    std::thread t([&] {
      op();
      done.Notify();
    });
    const bool in_time = done.WaitForNotificationWithTimeout(bound);
    if (!in_time) AckAll();
    t.join();
    return in_time;
  }

  fuse_ino_t hot_ = 0;
};

// With nothing the mirror acknowledges, a read that needs room waits its
// bound and fails with EIO, and a write its own; both are counted.
TEST_F(RoomWaitTest, WaitsForAMirrorThatAcknowledgesNothingEndAtTheBound) {
  tree_.SetRoomWaits(absl::Milliseconds(200), absl::Milliseconds(300));
  Load("cold", 10, kBlock);
  ASSERT_NO_FATAL_FAILURE(FillWithDirtyBlocks());

  absl::Status read;
  absl::Time start = absl::Now();
  ASSERT_TRUE(ReturnsWithin(absl::Seconds(10), [&] {
    std::string out(kBlock, '\0');
    read = tree_.Read(10, 0, kBlock, out.data()).status();
  })) << "a read waited past its bound";
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(200));
  EXPECT_EQ(StatusToErrno(read), EIO) << read;

  absl::Status wrote;
  start = absl::Now();
  ASSERT_TRUE(ReturnsWithin(absl::Seconds(10), [&] {
    wrote = tree_.Write(hot_, 4 * kBlock, "x", 1).status();
  })) << "a write waited past its bound";
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(300));
  EXPECT_EQ(StatusToErrno(wrote), EIO) << wrote;
  EXPECT_EQ(tree_.GetCacheStats().cache_waits, 2u);
}

// A read waiting for room goes on as soon as an acknowledgement makes a
// block evictable.
TEST_F(RoomWaitTest, AWaitingReadWakesWhenTheMirrorAcknowledges) {
  Load("cold", 10, kBlock);
  ASSERT_NO_FATAL_FAILURE(FillWithDirtyBlocks());
  absl::Status read;
  absl::Notification done;
  std::thread reader([&] {
    std::string out(kBlock, '\0');
    absl::StatusOr<size_t> n = tree_.Read(10, 0, kBlock, out.data());
    read = n.status();
    if (n.ok() && out[0] != MirrorByte(10, 0)) read = absl::DataLossError("");
    done.Notify();
  });
  const absl::Time give_up = absl::Now() + absl::Seconds(10);
  while (tree_.GetCacheStats().cache_waits == 0 && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  EXPECT_EQ(tree_.GetCacheStats().cache_waits, 1u);
  EXPECT_FALSE(done.HasBeenNotified()) << "read with the cache full";
  AckAll();
  EXPECT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(1)))
      << "the read did not wake within a second of the acknowledgement";
  reader.join();
  EXPECT_TRUE(read.ok()) << read;
}

// What the agent says the mirror can store bounds what the mount takes:
// longer names and xattrs beyond an object's room are refused at once,
// with the errno the mirror's filesystem gives.
TEST_F(TreeMirrorTest, RefusesWhatTheMirrorCannotStore) {
  pb::MirrorLimits limits;
  limits.set_name_max(8);
  limits.add_xattr_regions(88);   // ext4: the inode's room,
  limits.add_xattr_regions(200);  // then one (here small) block
  limits.set_xattr_full_errno(ENOSPC);
  tree_.SetMirrorLimits(limits);
  EXPECT_EQ(tree_.name_max(), 8u);
  EXPECT_EQ(StatusToErrno(tree_.MakeNode(FUSE_ROOT_ID, "ninechars",
                                         S_IFREG | 0644, 0, {}, {})
                              .status()),
            ENAMETOOLONG);
  absl::StatusOr<struct stat> file =
      tree_.MakeNode(FUSE_ROOT_ID, "eight_ch", S_IFREG | 0644, 0, {}, {});
  ASSERT_TRUE(file.ok()) << file.status();
  const fuse_ino_t ino = file->st_ino;
  EXPECT_EQ(StatusToErrno(tree_.Rename(FUSE_ROOT_ID, "eight_ch", FUSE_ROOT_ID,
                                       "ninechars", 0)),
            ENAMETOOLONG);

  // "user.aN" with 16 bytes costs 20 + 16 = 36: two in the inode (72 of
  // 88), five in the block (180 of 200), and no eighth.
  const std::string value(16, 'v');
  for (int i = 0; i < 7; ++i) {
    EXPECT_TRUE(tree_.SetXattr(ino, absl::StrCat("user.a", i), value, 0).ok())
        << i;
  }
  EXPECT_EQ(StatusToErrno(tree_.SetXattr(ino, "user.a7", value, 0)), ENOSPC);
  // Replacing a value with one as large, or a smaller one, still fits;
  // one that outgrows its region does not.
  EXPECT_TRUE(tree_.SetXattr(ino, "user.a6", std::string(12, 'w'), 0).ok());
  EXPECT_EQ(StatusToErrno(tree_.SetXattr(ino, "user.a0", std::string(200, 'w'),
                                         0)),
            ENOSPC);
  // Removing one makes room again; trusted.* and security.* are not the
  // mirror's to store, and nothing else is limited.
  ASSERT_TRUE(tree_.RemoveXattr(ino, "user.a3").ok());
  EXPECT_TRUE(tree_.SetXattr(ino, "user.a7", value, 0).ok());
  EXPECT_TRUE(tree_.SetXattr(ino, "trusted.big", std::string(1000, 't'), 0)
                  .ok());

  // A mirror that cannot store user xattrs at all.
  limits.set_xattrs_refused_errno(EOPNOTSUPP);
  tree_.SetMirrorLimits(limits);
  EXPECT_EQ(StatusToErrno(tree_.SetXattr(FUSE_ROOT_ID, "user.x", "1", 0)),
            EOPNOTSUPP);
  // No limits known: Linux's own.
  tree_.SetMirrorLimits(pb::MirrorLimits());
  EXPECT_EQ(tree_.name_max(), Tree::kMaxNameLength);
  EXPECT_TRUE(tree_.SetXattr(ino, "user.b", std::string(4000, 'v'), 0).ok());
}

}  // namespace
}  // namespace memfuse::fsd
