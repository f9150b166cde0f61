// Bounded memory with a mirror: resident blocks stay within --cache-size
// however much data passes through, because clean (acknowledged) blocks are
// evicted and fetched back from the mirror when read again.
//
//  - 1 GiB written through a 64 MiB cache and read back: every byte right,
//    in the mount and in the mirror, and fsd's peak RSS (VmHWM) bounded by
//    the cache plus a fixed overhead;
//  - readers and writers of files three times the cache, concurrently, for a
//    bounded time: every read checked against a model while the run goes on,
//    and every byte at the end, in the mount and in the mirror.
//
// A full cache without a mirror (ENOSPC, deleting makes room) is
// tests/mount/enospc_test.cc.
#include <fcntl.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_fixture.h"
#include "tests/e2e/workload.h"
#include "tests/testing/mount_fixture.h"
#include "tests/testing/posix_compare.h"

namespace memfuse::testing {
namespace {

// Success when the status reports both and `peak` <= `limit`.
::testing::AssertionResult AtMost(const DaemonStatus& status,
                                  const std::string& peak,
                                  const std::string& limit) {
  if (!status[peak] || !status[limit]) {
    return ::testing::AssertionFailure()
           << "the status lacks " << peak << " or " << limit << ":\n"
           << status.text();
  }
  if (*status[peak] > *status[limit]) {
    return ::testing::AssertionFailure()
           << peak << " " << *status[peak] << " > " << limit << " "
           << *status[limit] << ":\n"
           << status.text();
  }
  return ::testing::AssertionSuccess();
}

// A "Name:   N kB" line of /proc/PID/status, in bytes.
std::optional<uint64_t> ProcStatusBytes(pid_t pid, absl::string_view name) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (!absl::StartsWith(line, absl::StrCat(name, ":"))) continue;
    std::vector<absl::string_view> fields =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    uint64_t kib = 0;
    if (fields.size() >= 2 && absl::SimpleAtoi(fields[1], &kib)) {
      return kib * 1024;
    }
  }
  return std::nullopt;
}

// Drops the kernel's cached pages of `path`, so that the next reads reach
// the daemon (the pages are clean once the file was closed or fsync'ed).
void DropPageCache(const std::string& path) {
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(fd.valid()) << path << ": " << ErrnoName(errno);
  EXPECT_EQ(posix_fadvise(fd.get(), 0, 0, POSIX_FADV_DONTNEED), 0) << path;
}

bool PWriteAll(int fd, absl::string_view data, off_t offset) {
  while (!data.empty()) {
    ssize_t n = pwrite(fd, data.data(), data.size(), offset);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(n);
    offset += n;
  }
  return true;
}

// Reads exactly `len` bytes at `offset` (short only at end of file or on an
// error, with errno set then).
std::string PReadAll(int fd, off_t offset, size_t len) {
  std::string out(len, '\0');
  size_t got = 0;
  while (got < len) {
    ssize_t n = pread(fd, out.data() + got, len - got, offset + got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += n;
  }
  out.resize(got);
  return out;
}

// Where bytes read from file offset `offset` first differ from the expected
// ones, for messages.
std::string FirstDifference(const std::string& got, const std::string& want,
                            uint64_t offset = 0) {
  size_t n = std::min(got.size(), want.size());
  size_t i = 0;
  while (i < n && got[i] == want[i]) ++i;
  if (i == n && got.size() == want.size()) return "no difference";
  return absl::StrCat("size ", got.size(), " (want ", want.size(),
                      "), first difference at file offset ", offset + i);
}

using CacheTest = E2eTest;

// --- 1 GiB through a 64 MiB cache ---

constexpr uint64_t kSmallCacheMiB = 64;
// fsd's peak RSS beyond --cache-size: the shared data region it copies sent
// blocks into (about 36 MiB with the default block size, resident once
// touched), gRPC's threads and buffers, and the binary with its libraries.
constexpr uint64_t kOverheadMiB = 90;
constexpr uint64_t kGiB = 1024 * kMiB;
constexpr uint64_t kGigabyteSeed = 31;
// Only a hang reaches it: 1 GiB written, then read back, at disk speed.
constexpr std::chrono::seconds kGigabyteTimeout{240};

TEST_F(CacheTest, GigabyteThroughASmallCacheStaysSmall) {
  absl::Status started =
      Mount({"--cache-size", absl::StrCat(kSmallCacheMiB),
             "--cache-max-write-size", "32"});
  ASSERT_TRUE(started.ok()) << started;
  const std::string big = mount() + "/big";

  Ops on_mount(mount());
  ASSERT_TRUE(RunBounded("writing 1 GiB", kGigabyteTimeout, [&] {
    on_mount.WriteStream("big", kGigabyteSeed, kGiB);
  }));
  ASSERT_EQ(on_mount.failures(), 0);
  ASSERT_TRUE(MirrorCaughtUp(kGigabyteTimeout));

  // Read back from the daemon, not from the kernel's copy of what was
  // written: all but the last 64 MiB must come from the mirror again.
  ASSERT_NO_FATAL_FAILURE(DropPageCache(big));
  bool read_back = false;
  std::string why;
  ASSERT_TRUE(RunBounded("reading 1 GiB back", kGigabyteTimeout, [&] {
    read_back = FileHoldsStream(big, kGigabyteSeed, kGiB, &why);
  }));
  EXPECT_TRUE(read_back) << "through the mount: " << why;
  EXPECT_TRUE(FileHoldsStream(mirror() + "/big", kGigabyteSeed, kGiB, &why))
      << "in the mirror: " << why;

  const DaemonStatus status(mount());
  EXPECT_EQ(status["cache_limit"], kSmallCacheMiB * kMiB) << status.text();
  EXPECT_GT(status["blocks_evicted"], 0u) << status.text();
  EXPECT_GT(status["blocks_fetched"], 0u) << status.text();
  EXPECT_TRUE(AtMost(status, "cache_peak", "cache_limit"));
  EXPECT_TRUE(AtMost(status, "dirty_peak", "dirty_limit"));

  // The daemon's own peak, from the kernel: the agent is another process.
  std::optional<uint64_t> hwm = ProcStatusBytes(fs().pid(), "VmHWM");
  ASSERT_TRUE(hwm.has_value()) << "no VmHWM in /proc/" << fs().pid()
                               << "/status";
  EXPECT_LT(*hwm, (kSmallCacheMiB + kOverheadMiB) * kMiB)
      << "mem-fuse's peak RSS is " << *hwm / kMiB << " MiB with a "
      << kSmallCacheMiB << " MiB cache (allowed overhead " << kOverheadMiB
      << " MiB); status:\n"
      << status.text();
  std::cout << "mem-fuse VmHWM " << *hwm / kMiB << " MiB, cache "
            << kSmallCacheMiB << " MiB\n";

  ASSERT_TRUE(CleanExit(Unmount()));
}

// --- readers and writers of files larger than the cache ---

constexpr int kFiles = 6;
constexpr uint64_t kFileSize = 8 * kMiB;  // 48 MiB in all, 3x the cache
constexpr uint64_t kBlock = 64 * kKiB;    // --block-size 64
// A writer writes inside one region at a time and holds it meanwhile, so the
// model and the file change in the same order.
constexpr uint64_t kRegion = kMiB;
constexpr int kRegions = kFileSize / kRegion;
constexpr int kWriters = 3;
constexpr int kReaders = 3;
constexpr std::chrono::seconds kRunTime{10};

uint64_t Mix(uint64_t z) {
  z += 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// What write `generation` puts at [offset, offset + len) of file `file`:
// each byte depends on all three, so a byte from another file, place or
// write shows.
std::string Content(int file, uint64_t offset, size_t len,
                    uint64_t generation) {
  const uint64_t key = Mix(generation * kFiles + file);
  std::string out(len, '\0');
  uint64_t word = 0;
  for (size_t i = 0; i < len; ++i) {
    const uint64_t o = offset + i;
    if (i == 0 || o % 8 == 0) word = Mix(key ^ (o / 8));
    out[i] = static_cast<char>(word >> (8 * (o % 8)));
  }
  return out;
}

// The expected contents of one file, and for each region a sequence number
// that is odd while a writer writes there (a seqlock: a reader that saw the
// same even numbers before and after its read knows no write overlapped it).
struct ModelFile {
  absl::Mutex mu;
  std::string bytes ABSL_GUARDED_BY(mu);
  std::array<std::atomic<uint64_t>, kRegions> seq{};
  std::array<absl::Mutex, kRegions> writer;  // held for a write in the region
};

struct RunCounts {
  std::atomic<uint64_t> writes{0};
  std::atomic<uint64_t> write_errors{0};
  std::atomic<uint64_t> reads_checked{0};
  std::atomic<uint64_t> reads_skipped{0};  // a write overlapped them
  std::atomic<uint64_t> read_errors{0};
  std::atomic<uint64_t> mismatches{0};
};

constexpr uint64_t kMaxReported = 10;

std::string FilePath(const std::string& root, int file) {
  return absl::StrCat(root, "/f", file);
}

TEST_F(CacheTest, ReadersAndWritersOfFilesLargerThanTheCache) {
  absl::Status started = Mount({"--cache-size", "16", "--cache-max-write-size",
                                "8", "--block-size", "64"});
  ASSERT_TRUE(started.ok()) << started;

  // Generation 0: every file written whole, already three times the cache.
  std::array<ModelFile, kFiles> model;
  std::array<UniqueFd, kFiles> fds;  // O_DIRECT: every I/O reaches fsd
  for (int f = 0; f < kFiles; ++f) {
    absl::MutexLock lock(&model[f].mu);
    model[f].bytes = Content(f, 0, kFileSize, 0);
  }
  ASSERT_TRUE(RunBounded("writing the files", kWorkloadTimeout, [&] {
    for (int f = 0; f < kFiles; ++f) {
      const std::string path = FilePath(mount(), f);
      fds[f] = UniqueFd(
          open(path.c_str(), O_RDWR | O_CREAT | O_DIRECT | O_CLOEXEC, 0644));
      ASSERT_TRUE(fds[f].valid()) << path << ": " << ErrnoName(errno);
      absl::MutexLock lock(&model[f].mu);
      for (uint64_t o = 0; o < kFileSize; o += kMiB) {
        ASSERT_TRUE(PWriteAll(fds[f].get(),
                              absl::string_view(model[f].bytes).substr(o, kMiB),
                              o))
            << path << " at " << o << ": " << ErrnoName(errno);
      }
    }
  }));
  ASSERT_FALSE(HasFatalFailure());

  const uint32_t seed =
      static_cast<uint32_t>(::testing::UnitTest::GetInstance()->random_seed());
  const auto deadline = std::chrono::steady_clock::now() + kRunTime;
  std::atomic<uint64_t> generation{0};
  RunCounts counts;

  auto writer = [&](int id, const std::atomic<bool>& stop) {
    std::mt19937_64 rng(seed * 100 + id);
    while (!stop && std::chrono::steady_clock::now() < deadline) {
      const int f = rng() % kFiles;
      const int r = rng() % kRegions;
      const uint64_t region_start = r * kRegion;
      uint64_t offset = 0;
      uint64_t len = 0;
      if (rng() % 2 == 0) {  // whole blocks
        offset = region_start + (rng() % (kRegion / kBlock)) * kBlock;
        len = std::min<uint64_t>((1 + rng() % 4) * kBlock,
                                 region_start + kRegion - offset);
      } else {  // anywhere, any length, across block boundaries
        offset = region_start + rng() % kRegion;
        len = 1 + rng() % std::min<uint64_t>(3 * kBlock,
                                              region_start + kRegion - offset);
      }
      const uint64_t gen = ++generation;
      const std::string data = Content(f, offset, len, gen);
      ModelFile& m = model[f];
      absl::MutexLock own(&m.writer[r]);
      m.seq[r].fetch_add(1);  // odd: writing
      const bool ok = PWriteAll(fds[f].get(), data, offset);
      const int err = errno;
      if (ok) {
        absl::MutexLock lock(&m.mu);
        m.bytes.replace(offset, len, data);
      }
      m.seq[r].fetch_add(1);  // even: done
      if (ok) {
        ++counts.writes;
      } else if (++counts.write_errors <= kMaxReported) {
        ADD_FAILURE() << "pwrite f" << f << " [" << offset << ", +" << len
                      << "): " << ErrnoName(err);
      }
    }
  };

  auto reader = [&](int id, const std::atomic<bool>& stop) {
    std::mt19937_64 rng(seed * 100 + 50 + id);
    while (!stop && std::chrono::steady_clock::now() < deadline) {
      const int f = rng() % kFiles;
      const uint64_t offset = rng() % kFileSize;
      const uint64_t len =
          1 + rng() % std::min<uint64_t>(8 * kBlock, kFileSize - offset);
      const int first = offset / kRegion;
      const int last = (offset + len - 1) / kRegion;
      ModelFile& m = model[f];
      std::array<uint64_t, kRegions> before{};
      bool quiet = true;
      for (int r = first; r <= last; ++r) {
        before[r] = m.seq[r].load();
        quiet = quiet && before[r] % 2 == 0;
      }
      std::string want;
      {
        absl::MutexLock lock(&m.mu);
        want = m.bytes.substr(offset, len);
      }
      const std::string got = PReadAll(fds[f].get(), offset, len);
      const int err = errno;
      for (int r = first; r <= last; ++r) {
        quiet = quiet && m.seq[r].load() == before[r];
      }
      if (got.size() != len) {
        if (++counts.read_errors <= kMaxReported) {
          ADD_FAILURE() << "pread f" << f << " [" << offset << ", +" << len
                        << "): got " << got.size() << " bytes, "
                        << ErrnoName(err);
        }
      } else if (!quiet) {
        ++counts.reads_skipped;
      } else if (got != want) {
        if (++counts.mismatches <= kMaxReported) {
          ADD_FAILURE() << "read of f" << f << " [" << offset << ", +" << len
                        << ") while the others ran: "
                        << FirstDifference(got, want, offset);
        }
      } else {
        ++counts.reads_checked;
      }
    }
  };

  std::vector<std::unique_ptr<Worker>> workers;
  for (int i = 0; i < kWriters; ++i) {
    workers.push_back(StartWorker(
        [&writer, i](const std::atomic<bool>& stop) { writer(i, stop); }));
  }
  for (int i = 0; i < kReaders; ++i) {
    workers.push_back(StartWorker(
        [&reader, i](const std::atomic<bool>& stop) { reader(i, stop); }));
  }
  // Each stops by itself at the deadline; only a hang reaches the timeout.
  for (size_t i = 0; i < workers.size(); ++i) {
    ASSERT_TRUE(workers[i]->Join(
        absl::StrCat(i < kWriters ? "writer " : "reader ", i),
        kRunTime + kWorkloadTimeout));
  }
  std::cout << "seed " << seed << ": " << counts.writes << " writes, "
            << counts.reads_checked << " reads checked, "
            << counts.reads_skipped << " skipped (a write overlapped)\n";
  EXPECT_EQ(counts.write_errors, 0u);
  EXPECT_EQ(counts.read_errors, 0u);
  EXPECT_EQ(counts.mismatches, 0u) << "seed " << seed;
  EXPECT_GT(counts.writes, 0u);
  EXPECT_GT(counts.reads_checked, 0u);
  for (UniqueFd& fd : fds) {
    EXPECT_EQ(fd.Close(), Outcome{}) << "close after the run";
  }

  // Every byte of every file, from the daemon.
  auto verify_all = [&](const std::string& root, absl::string_view where) {
    for (int f = 0; f < kFiles; ++f) {
      const std::string path = FilePath(root, f);
      UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
      ASSERT_TRUE(fd.valid()) << path << ": " << ErrnoName(errno);
      posix_fadvise(fd.get(), 0, 0, POSIX_FADV_DONTNEED);
      const std::string got = PReadAll(fd.get(), 0, kFileSize + 1);
      absl::MutexLock lock(&model[f].mu);
      EXPECT_TRUE(got == model[f].bytes)
          << where << ": " << path << ": " << FirstDifference(got, model[f].bytes);
    }
  };
  ASSERT_TRUE(RunBounded("reading every file back", kWorkloadTimeout,
                         [&] { verify_all(mount(), "through the mount"); }));
  ASSERT_TRUE(MirrorCaughtUp());

  const DaemonStatus status(mount());
  EXPECT_GT(status["blocks_evicted"], 0u) << status.text();
  EXPECT_GT(status["blocks_fetched"], 0u) << status.text();
  EXPECT_TRUE(AtMost(status, "cache_peak", "cache_limit"));
  EXPECT_TRUE(AtMost(status, "dirty_peak", "dirty_limit"));

  ASSERT_TRUE(CleanExit(Unmount()));
  verify_all(mirror(), "in the mirror after unmount");
}

}  // namespace
}  // namespace memfuse::testing
