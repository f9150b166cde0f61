// File I/O: open flags, pread/pwrite with holes and block boundaries, fsync,
// fallocate, SEEK_DATA/SEEK_HOLE, copy_file_range, unlinked-but-open files and
// a large file. Compared with a native directory where semantics are fixed by
// POSIX/Linux; hole granularity is filesystem-specific and checked per side.
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/testing/mount_fixture.h"
#include "tests/testing/posix_compare.h"

namespace memfuse::testing {
namespace {

constexpr int64_t kKiB = 1024;
constexpr int64_t kMiB = 1024 * kKiB;

using IoTest = MountTest;

// The daemon with 4 KiB blocks, so that small files span many blocks.
class SmallBlockIoTest : public MountTest {
 protected:
  std::vector<std::string> MountArgs() const override {
    return {"--block-size", "4"};
  }
};

// Writes back and evicts `path`'s page cache so the next read comes from the
// filesystem itself (on the mount: from the daemon, not the kernel's copy).
void DropCache(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0) << path << ": " << ErrnoName(errno);
  EXPECT_EQ(fsync(fd), 0) << ErrnoName(errno);
  EXPECT_EQ(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
  close(fd);
}

Outcome PRead(int fd, size_t len, off_t off) {
  std::string buf(len, '\x7f');
  ssize_t n = pread(fd, buf.data(), len, off);
  if (n < 0) return Sys(n);
  buf.resize(n);
  return SysWith(n, std::move(buf));
}

Outcome PWrite(int fd, absl::string_view data, off_t off) {
  return Sys(pwrite(fd, data.data(), data.size(), off));
}

Outcome Seek(int fd, off_t off, int whence) {
  return Sys(lseek(fd, off, whence));
}

TEST_F(IoTest, OpenFlags) {
  ExpectSameTrace("open flags", [](const Dir& d, Trace& t) {
    t.Add("O_CREAT|O_EXCL new",
          SysOk(open(d("f").c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644)));
    t.Add("O_CREAT|O_EXCL existing",
          SysOk(open(d("f").c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644)));
    t.Add("O_CREAT existing ok",
          SysOk(open(d("f").c_str(), O_CREAT | O_WRONLY, 0600)));
    t.Add("content", WriteFile(d("f"), "0123456789"));
    int fd = open(d("f").c_str(), O_WRONLY | O_TRUNC);
    t.Add("O_TRUNC", SysOk(fd));
    t.Add("truncated", Stat(d("f")));
    if (fd >= 0) close(fd);
    t.Add("content again", WriteFile(d("f"), "0123456789"));
    fd = open(d("f").c_str(), O_RDONLY | O_TRUNC);
    t.Add("O_RDONLY|O_TRUNC truncates on Linux", SysOk(fd));
    if (fd >= 0) close(fd);
    t.Add("after O_RDONLY|O_TRUNC", Stat(d("f")));
    t.Add("content for append", WriteFile(d("f"), "abc"));
    fd = open(d("f").c_str(), O_WRONLY | O_APPEND);
    t.Add("O_APPEND", SysOk(fd));
    if (fd >= 0) {
      t.Add("append write", Sys(write(fd, "def", 3)));
      t.Add("lseek to 0", Seek(fd, 0, SEEK_SET));
      t.Add("write still appends", Sys(write(fd, "ghi", 3)));
      t.Add("pwrite with O_APPEND appends on Linux", PWrite(fd, "jk", 0));
      t.Add("offset after append", Seek(fd, 0, SEEK_CUR));
      char c;
      t.Add("read on O_WRONLY", Sys(read(fd, &c, 1)));
      close(fd);
    }
    t.Add("appended content", ReadFile(d("f")));
    fd = open(d("f").c_str(), O_RDONLY);
    if (fd >= 0) {
      t.Add("write on O_RDONLY", Sys(write(fd, "x", 1)));
      close(fd);
    }
    // O_APPEND on two descriptors interleaves, never overwrites.
    int a = open(d("g").c_str(), O_CREAT | O_WRONLY | O_APPEND, 0644);
    int b = open(d("g").c_str(), O_WRONLY | O_APPEND);
    if (a >= 0 && b >= 0) {
      for (int i = 0; i < 10; ++i) {
        t.Add("append a", Sys(write(a, "AA", 2)));
        t.Add("append b", Sys(write(b, "B", 1)));
      }
    }
    if (a >= 0) close(a);
    if (b >= 0) close(b);
    t.Add("interleaved appends", ReadFile(d("g")));
  });
}

TEST_F(IoTest, PreadPwriteHolesAndBlockBoundaries) {
  // The default block is 1 MiB: write across its boundaries and leave holes.
  const std::string a = PatternBytes(11, 3 * kKiB);
  const std::string b = PatternBytes(12, 2 * kMiB + 17);
  ExpectSameTrace("pread/pwrite", [&](const Dir& d, Trace& t) {
    int fd = open(d("f").c_str(), O_CREAT | O_RDWR, 0644);
    t.Add("create", SysOk(fd));
    if (fd < 0) return;
    t.Add("write at 0", PWrite(fd, a, 0));
    t.Add("write across 1 MiB boundary", PWrite(fd, a, kMiB - 1000));
    t.Add("write spanning 2 boundaries", PWrite(fd, b, 3 * kMiB - 5));
    t.Add("write after a hole", PWrite(fd, "end", 9 * kMiB + 3));
    t.Add("size", Fstat(fd));
    t.Add("read start", PRead(fd, 5000, 0));
    t.Add("read across boundary", PRead(fd, 4000, kMiB - 2000));
    t.Add("read hole", PRead(fd, 4096, 6 * kMiB));
    t.Add("read hole into data", PRead(fd, 100, 9 * kMiB - 50));
    t.Add("read past EOF", PRead(fd, 100, 10 * kMiB));
    t.Add("short read at EOF", PRead(fd, 100, 9 * kMiB));
    t.Add("overwrite middle", PWrite(fd, "XYZ", 3 * kMiB + 1));
    t.Add("pwrite negative offset", PWrite(fd, "x", -1));
    close(fd);
    DropCache(d("f"));
    t.Add("whole file from the filesystem", ReadFile(d("f")));
  });
}

TEST_F(SmallBlockIoTest, RandomWritesOverManyBlocks) {
  // Deterministic random unaligned writes over 1 MiB (256 blocks of 4 KiB).
  struct Op {
    off_t off;
    std::string data;
  };
  std::vector<Op> ops;
  std::mt19937_64 rng(42);
  for (int i = 0; i < 400; ++i) {
    off_t off = rng() % kMiB;
    size_t len = 1 + rng() % (3 * 4096 + 100);
    ops.push_back({off, PatternBytes(i, len)});
  }
  ExpectSameTrace("random writes", [&](const Dir& d, Trace& t) {
    int fd = open(d("f").c_str(), O_CREAT | O_RDWR, 0644);
    t.Add("create", SysOk(fd));
    if (fd < 0) return;
    for (size_t i = 0; i < ops.size(); ++i) {
      t.Add(absl::StrCat("write #", i), PWrite(fd, ops[i].data, ops[i].off));
    }
    t.Add("size", Fstat(fd));
    t.Add("truncate inside a block", Sys(ftruncate(fd, kMiB / 2 + 123)));
    t.Add("write beyond, leaving a hole", PWrite(fd, "tail", kMiB + 4095));
    t.Add("fsync", Sys(fsync(fd)));
    close(fd);
    DropCache(d("f"));
    t.Add("content", ReadFile(d("f")));
    fd = open(d("f").c_str(), O_RDONLY);
    if (fd < 0) return;
    std::mt19937_64 reads(7);
    for (int i = 0; i < 100; ++i) {
      off_t off = reads() % (kMiB + 5000);
      size_t len = 1 + reads() % 20000;
      t.Add(absl::StrCat("read #", i), PRead(fd, len, off));
    }
    close(fd);
  });
}

TEST_F(IoTest, FsyncAndFdatasync) {
  ExpectSameTrace("fsync", [](const Dir& d, Trace& t) {
    int fd = open(d("f").c_str(), O_CREAT | O_RDWR, 0644);
    t.Add("create", SysOk(fd));
    if (fd < 0) return;
    t.Add("write", PWrite(fd, "data", 0));
    t.Add("fsync", Sys(fsync(fd)));
    t.Add("fdatasync", Sys(fdatasync(fd)));
    close(fd);
    int dfd = open(d("").c_str(), O_RDONLY | O_DIRECTORY);
    t.Add("open dir", SysOk(dfd));
    if (dfd >= 0) {
      t.Add("fsync dir", Sys(fsync(dfd)));
      t.Add("syncfs", Sys(syncfs(dfd)));
      close(dfd);
    }
    t.Add("content", ReadFile(d("f")));
  });
}

TEST_F(IoTest, Fallocate) {
  const std::string data = PatternBytes(3, 3 * kMiB);
  ExpectSameTrace("fallocate", [&](const Dir& d, Trace& t) {
    int fd = open(d("f").c_str(), O_CREAT | O_RDWR, 0644);
    t.Add("create", SysOk(fd));
    if (fd < 0) return;
    t.Add("mode 0 extends", Sys(fallocate(fd, 0, 0, kMiB + 10)));
    t.Add("size after mode 0", Fstat(fd));
    t.Add("allocated range reads zeros", PRead(fd, 64, kMiB));
    t.Add("KEEP_SIZE past EOF",
          Sys(fallocate(fd, FALLOC_FL_KEEP_SIZE, 2 * kMiB, kMiB)));
    t.Add("size unchanged", Fstat(fd));
    t.Add("write data", PWrite(fd, data, 0));
    t.Add("punch hole (keep size)",
          Sys(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                        kMiB - 100, kMiB + 300)));
    t.Add("size after punch", Fstat(fd));
    t.Add("punch without KEEP_SIZE",
          Sys(fallocate(fd, FALLOC_FL_PUNCH_HOLE, 0, 10)));
    t.Add("invalid length", Sys(fallocate(fd, 0, 0, 0)));
    t.Add("negative offset", Sys(fallocate(fd, 0, -1, 10)));
    close(fd);
    DropCache(d("f"));
    t.Add("content: zeros only in the punched range", ReadFile(d("f")));
    fd = open(d("f").c_str(), O_RDWR);
    if (fd < 0) return;
    t.Add("punch everything",
          Sys(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0,
                        4 * kMiB)));
    close(fd);
    DropCache(d("f"));
    t.Add("fully punched file reads zeros", ReadFile(d("f")));
    int dfd = open(d("").c_str(), O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
      t.Add("fallocate on a dir", Sys(fallocate(dfd, 0, 0, 10)));
      close(dfd);
    }
  });
  // Independent of comparison: punched content must be all zeros.
  Outcome punched = ReadFile(mount_dir() + "/f");
  EXPECT_TRUE(punched.data == std::string(3 * kMiB, '\0'))
      << "fully punched file on the mount: " << ToString(punched);
}

// What must hold on any filesystem, whatever its hole granularity. Without
// `fsync_first` this is what a program sees right after writing (cp's sparse
// detection does exactly this): with the kernel's writeback cache the data may
// still be only in the page cache, and must count as data all the same.
void CheckSeekDataHoleInvariants(const std::string& path, bool fsync_first) {
  SCOPED_TRACE(absl::StrCat(path, fsync_first ? " (after fsync)" : ""));
  int fd = open(path.c_str(), O_CREAT | O_RDWR | O_TRUNC, 0644);
  ASSERT_GE(fd, 0) << ErrnoName(errno);
  const off_t far = 8 * kMiB;
  const std::string block(4 * kKiB, 'd');
  ASSERT_EQ(pwrite(fd, block.data(), block.size(), 0), 4 * kKiB);
  ASSERT_EQ(pwrite(fd, block.data(), block.size(), far), 4 * kKiB);
  const off_t size = far + 4 * kKiB;
  if (fsync_first) {
    ASSERT_EQ(fsync(fd), 0) << ErrnoName(errno);
  }

  EXPECT_EQ(Seek(fd, 0, SEEK_DATA), Outcome{});
  Outcome hole = Seek(fd, 0, SEEK_HOLE);
  EXPECT_GE(hole.ret, 4 * kKiB)
      << "SEEK_HOLE went back into written data: " << ToString(hole);
  EXPECT_LE(hole.ret, size) << ToString(hole);
  Outcome data = Seek(fd, 64 * kKiB, SEEK_DATA);
  EXPECT_GE(data.ret, 64 * kKiB) << ToString(data);
  EXPECT_LE(data.ret, far) << "SEEK_DATA skipped the data at 8 MiB: "
                           << ToString(data);
  Outcome at_data = Seek(fd, far + 100, SEEK_HOLE);
  EXPECT_GE(at_data.ret, far + 100)
      << "SEEK_HOLE inside the last data block: " << ToString(at_data);
  EXPECT_EQ(Seek(fd, far + 100, SEEK_DATA), (Outcome{far + 100, 0, ""}))
      << "SEEK_DATA inside the last data block";
  EXPECT_EQ(Seek(fd, size, SEEK_DATA), (Outcome{-1, ENXIO, ""}))
      << "SEEK_DATA at EOF";
  EXPECT_EQ(Seek(fd, size + 5000, SEEK_DATA), (Outcome{-1, ENXIO, ""}))
      << "SEEK_DATA past EOF";
  EXPECT_EQ(Seek(fd, size + 5000, SEEK_HOLE), (Outcome{-1, ENXIO, ""}))
      << "SEEK_HOLE past EOF";
  EXPECT_EQ(Seek(fd, size - 1, SEEK_HOLE), (Outcome{size, 0, ""}))
      << "SEEK_HOLE in the last byte: the EOF is a hole";
  close(fd);
}

TEST_F(IoTest, SeekDataHoleInvariants) {
  CheckSeekDataHoleInvariants(native_dir() + "/f", /*fsync_first=*/false);
  CheckSeekDataHoleInvariants(mount_dir() + "/f", /*fsync_first=*/false);
}

TEST_F(IoTest, SeekDataHoleInvariantsAfterFsync) {
  CheckSeekDataHoleInvariants(native_dir() + "/f", /*fsync_first=*/true);
  CheckSeekDataHoleInvariants(mount_dir() + "/f", /*fsync_first=*/true);
}

TEST_F(SmallBlockIoTest, SeekDataHoleInvariants) {
  // Many small blocks must not change what lseek reports: the kernel answers
  // SEEK_DATA/SEEK_HOLE itself (fsd cannot see pages still in the writeback
  // cache), treating everything before EOF as data.
  CheckSeekDataHoleInvariants(mount_dir() + "/f", /*fsync_first=*/false);
  int fd = open((mount_dir() + "/f").c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(
      fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4 * kKiB), 0)
      << ErrnoName(errno);
  EXPECT_EQ(Seek(fd, 0, SEEK_DATA), (Outcome{0, 0, ""}))
      << "a punched range still reads (as zeros) before EOF";
  close(fd);
}

TEST_F(IoTest, CopyFileRange) {
  const std::string src = PatternBytes(5, 3 * kMiB + 333);
  ExpectSameTrace("copy_file_range", [&](const Dir& d, Trace& t) {
    t.Add("source", WriteFile(d("src"), src));
    int in = open(d("src").c_str(), O_RDONLY);
    int out = open(d("dst").c_str(), O_CREAT | O_RDWR, 0644);
    t.Add("open both", SysOk(in < 0 || out < 0 ? -1 : 0));
    if (in < 0 || out < 0) return;
    t.Add("prefix", PWrite(out, "prefix", 0));
    // Copy may be short; loop until all requested bytes are done.
    loff_t off_in = 100, off_out = 3;
    int64_t want = 2 * kMiB + 7, done = 0;
    while (done < want) {
      ssize_t n = copy_file_range(in, &off_in, out, &off_out, want - done, 0);
      if (n <= 0) {
        t.Add("copy_file_range", Sys(n));
        break;
      }
      done += n;
    }
    t.Add("copied bytes", Outcome{done, 0, ""});
    t.Add("offsets advanced", Outcome{off_in * 10000000 + off_out, 0, ""});
    t.Add("zero-length copy",
          Sys(copy_file_range(in, nullptr, out, nullptr, 0, 0)));
    loff_t at_eof = src.size();
    t.Add("copy from source EOF",
          Sys(copy_file_range(in, &at_eof, out, nullptr, 100, 0)));
    close(in);
    close(out);
    DropCache(d("dst"));
    t.Add("destination", ReadFile(d("dst")));
  });
}

TEST_F(IoTest, UnlinkedOpenFileStaysUsable) {
  ExpectSameTrace("unlinked but open", [](const Dir& d, Trace& t) {
    int fd = open(d("f").c_str(), O_CREAT | O_RDWR, 0644);
    t.Add("create", SysOk(fd));
    if (fd < 0) return;
    t.Add("write", PWrite(fd, PatternBytes(9, 300000), 0));
    t.Add("unlink", Sys(unlink(d("f").c_str())));
    t.Add("name gone", Stat(d("f")));
    t.Add("listing empty", ListDir(d("")));
    t.Add("fstat nlink 0", Fstat(fd));
    t.Add("read after unlink", PRead(fd, 300000, 0));
    t.Add("write after unlink", PWrite(fd, "more", 2 * kMiB));
    t.Add("fsync after unlink", Sys(fsync(fd)));
    t.Add("ftruncate after unlink", Sys(ftruncate(fd, 1000)));
    t.Add("fstat size", Fstat(fd));
    t.Add("read again", PRead(fd, 2000, 0));
    t.Add("fchmod after unlink", Sys(fchmod(fd, 0600)));
    t.Add("new file under the same name", WriteFile(d("f"), "new"));
    t.Add("old fd still the old file", PRead(fd, 10, 0));
    t.Add("close", Sys(close(fd)));
    t.Add("new file intact", ReadFile(d("f")));
  });
}

TEST_F(IoTest, SharedMmapWritesReachTheFile) {
  const std::string base = PatternBytes(21, 3 * kMiB);
  ExpectSameTrace("mmap", [&](const Dir& d, Trace& t) {
    t.Add("file", WriteFile(d("f"), base));
    int fd = open(d("f").c_str(), O_RDWR);
    t.Add("open", SysOk(fd));
    if (fd < 0) return;
    void* map =
        mmap(nullptr, 3 * kMiB, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    t.Add("mmap shared", SysOk(map == MAP_FAILED ? -1 : 0));
    if (map != MAP_FAILED) {
      char* p = static_cast<char*>(map);
      // Stores across a block boundary and in the last page.
      memcpy(p + kMiB - 10, "across-the-boundary", 19);
      memcpy(p + 3 * kMiB - 4, "END!", 4);
      t.Add("mapped read sees file", SysWith(0, std::string(p + 100, 16)));
      t.Add("msync", Sys(msync(map, 3 * kMiB, MS_SYNC)));
      munmap(map, 3 * kMiB);
    }
    close(fd);
    DropCache(d("f"));
    t.Add("stores visible through read(2)", ReadFile(d("f")));
  });
}

TEST_F(IoTest, DirectIo) {
  // O_DIRECT bypasses the page cache; aligned buffers work on both.
  ExpectSameTrace("O_DIRECT", [](const Dir& d, Trace& t) {
    int fd = open(d("f").c_str(), O_CREAT | O_RDWR | O_DIRECT, 0644);
    t.Add("open O_DIRECT", SysOk(fd));
    if (fd < 0) return;
    void* buf = nullptr;
    if (posix_memalign(&buf, 4096, 8192) != 0) return;
    std::string pattern = PatternBytes(31, 8192);
    memcpy(buf, pattern.data(), 8192);
    t.Add("aligned pwrite", Sys(pwrite(fd, buf, 8192, 4096)));
    memset(buf, 0, 8192);
    t.Add("aligned pread", Sys(pread(fd, buf, 8192, 4096)));
    t.Add("data", SysWith(0, std::string(static_cast<char*>(buf), 8192)));
    free(buf);
    close(fd);
    t.Add("buffered view", ReadFile(d("f")));
  });
}

TEST_F(IoTest, BigFileChecksum) {
  constexpr int64_t kSize = 64 * kMiB;
  const std::string path = mount_dir() + "/big";
  int fd = open(path.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
  ASSERT_GE(fd, 0) << ErrnoName(errno);
  for (int64_t off = 0; off < kSize; off += kMiB) {
    std::string chunk = PatternBytes(1000 + off / kMiB, kMiB);
    ASSERT_EQ(write(fd, chunk.data(), chunk.size()), kMiB)
        << "at " << off << ": " << ErrnoName(errno);
  }
  ASSERT_EQ(fsync(fd), 0) << ErrnoName(errno);
  ASSERT_EQ(close(fd), 0) << ErrnoName(errno);
  DropCache(path);

  struct stat st {};
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_size, kSize);
  fd = open(path.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  std::string chunk(kMiB, '\0');
  for (int64_t off = 0; off < kSize; off += kMiB) {
    ssize_t got = 0;
    while (got < kMiB) {
      ssize_t n = read(fd, chunk.data() + got, kMiB - got);
      ASSERT_GT(n, 0) << "at " << off + got << ": " << ErrnoName(errno);
      got += n;
    }
    ASSERT_TRUE(chunk == PatternBytes(1000 + off / kMiB, kMiB))
        << "content differs in MiB #" << off / kMiB;
  }
  char c;
  EXPECT_EQ(read(fd, &c, 1), 0) << "data past 64 MiB";
  close(fd);
}

}  // namespace
}  // namespace memfuse::testing
