// Several threads create, write, truncate, rename and delete files and
// directories in one shared tree for a bounded time. Each thread only touches
// names it created, so its own model of what it wrote is exact even though
// the directories are shared. At the end the tree must hold exactly the
// modelled files with exactly the modelled contents, and deleting everything
// must give all the space (and inodes) back.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "tests/testing/mount_fixture.h"
#include "tests/testing/posix_compare.h"

namespace memfuse::testing {
namespace {

constexpr int kThreads = 4;
constexpr int kSharedDirs = 6;
constexpr auto kRunTime = std::chrono::seconds(5);
constexpr size_t kMaxLiveFiles = 60;  // per thread, bounds memory use
constexpr size_t kMaxFileSize = 300 * 1024;

// 64 KiB blocks: files span several blocks and memory stays small.
class ConcurrencyTest : public MountTest {
 protected:
  std::vector<std::string> MountArgs() const override {
    return {"--block-size", "64"};
  }
};

// A file's identity survives renames; its content is a function of
// (id, generation, size), and PatternBytes is prefix-stable, so truncation
// and appends keep it a pure function of the model.
struct FileState {
  uint64_t id = 0;
  uint32_t gen = 0;
  size_t size = 0;
};

uint64_t Seed(const FileState& f) { return (f.id << 20) ^ f.gen; }

std::string Content(const FileState& f) {
  return PatternBytes(Seed(f), f.size);
}

// One worker: its rng, its model (relative path -> state) and own dirs.
class Worker {
 public:
  Worker(int index, std::string root)
      : index_(index), root_(std::move(root)), rng_(1000 + index) {}

  // Runs random operations until `deadline`; stops at the first error.
  void Run(std::chrono::steady_clock::time_point deadline) {
    while (std::chrono::steady_clock::now() < deadline && errors_.empty()) {
      switch (rng_() % 10) {
        case 0:
        case 1:
          Create();
          break;
        case 2:
          Overwrite();
          break;
        case 3:
          Resize();
          break;
        case 4:
        case 5:
          RenameFile();
          break;
        case 6:
          Delete();
          break;
        case 7:
          DirOp();
          break;
        default:
          Verify();
          break;
      }
      ++ops_;
    }
  }

  const std::map<std::string, FileState>& files() const { return files_; }
  const std::set<std::string>& dirs() const { return dirs_; }
  const std::vector<std::string>& errors() const { return errors_; }
  int ops() const { return ops_; }

 private:
  std::string Abs(const std::string& rel) const { return root_ + "/" + rel; }

  void Fail(absl::string_view op, const std::string& rel, int err) {
    errors_.push_back(absl::StrCat("thread ", index_, " ", op, " ", rel, ": ",
                                   ErrnoName(err)));
  }

  // A parent for a new entry: a shared dir or one of our own dirs.
  std::string PickParent() {
    if (!dirs_.empty() && rng_() % 3 == 0) {
      auto it = dirs_.begin();
      std::advance(it, rng_() % dirs_.size());
      return *it;
    }
    return absl::StrCat("s", rng_() % kSharedDirs);
  }

  std::string NewName(absl::string_view kind) {
    return absl::StrCat("t", index_, "-", kind, next_name_++);
  }

  // A random own file, or end() when there is none.
  std::map<std::string, FileState>::iterator PickFile() {
    if (files_.empty()) return files_.end();
    auto it = files_.begin();
    std::advance(it, rng_() % files_.size());
    return it;
  }

  bool WriteAll(const std::string& rel, int flags, absl::string_view data,
                off_t offset) {
    int fd = open(Abs(rel).c_str(), flags | O_WRONLY | O_CLOEXEC, 0644);
    if (fd < 0) {
      Fail("open", rel, errno);
      return false;
    }
    size_t done = 0;
    while (done < data.size()) {
      ssize_t n =
          pwrite(fd, data.data() + done, data.size() - done, offset + done);
      if (n <= 0) {
        Fail("pwrite", rel, errno);
        close(fd);
        return false;
      }
      done += n;
    }
    if (close(fd) != 0) {
      Fail("close", rel, errno);
      return false;
    }
    return true;
  }

  void Create() {
    if (files_.size() >= kMaxLiveFiles) return Delete();
    FileState f{next_id_++ + (static_cast<uint64_t>(index_) << 32), 0,
                rng_() % kMaxFileSize};
    std::string rel = PickParent() + "/" + NewName("f");
    if (WriteAll(rel, O_CREAT | O_EXCL, Content(f), 0)) files_[rel] = f;
  }

  void Overwrite() {
    auto it = PickFile();
    if (it == files_.end()) return Create();
    FileState f = it->second;
    ++f.gen;
    f.size = rng_() % kMaxFileSize;
    if (WriteAll(it->first, O_TRUNC, Content(f), 0)) it->second = f;
  }

  // Truncates down, or appends (extending with more of the same pattern).
  void Resize() {
    auto it = PickFile();
    if (it == files_.end()) return Create();
    FileState f = it->second;
    size_t new_size = rng_() % kMaxFileSize;
    if (new_size < f.size) {
      if (truncate(Abs(it->first).c_str(), new_size) != 0) {
        return Fail("truncate", it->first, errno);
      }
      it->second.size = new_size;
      return;
    }
    std::string grown = PatternBytes(Seed(f), new_size);
    if (WriteAll(it->first, 0, absl::string_view(grown).substr(f.size),
                 f.size)) {
      it->second.size = new_size;
    }
  }

  void RenameFile() {
    auto it = PickFile();
    if (it == files_.end()) return Create();
    std::string to;
    auto victim = PickFile();
    // Sometimes over another of our files, else to a fresh name.
    if (rng_() % 4 == 0 && victim != it) {
      to = victim->first;
    } else {
      to = PickParent() + "/" + NewName("r");
    }
    if (rename(Abs(it->first).c_str(), Abs(to).c_str()) != 0) {
      return Fail("rename", absl::StrCat(it->first, " -> ", to), errno);
    }
    FileState f = it->second;
    files_.erase(it);
    files_[to] = f;  // replaces the victim, if any
  }

  void Delete() {
    auto it = PickFile();
    if (it == files_.end()) return;
    if (unlink(Abs(it->first).c_str()) != 0) {
      return Fail("unlink", it->first, errno);
    }
    files_.erase(it);
  }

  // mkdir a new own dir, move one (with its contents) to another shared dir,
  // or remove one with everything in it.
  void DirOp() {
    uint64_t choice = rng_() % 3;
    if (dirs_.empty() || (choice == 0 && dirs_.size() < 8)) {
      std::string rel =
          absl::StrCat("s", rng_() % kSharedDirs, "/", NewName("d"));
      if (mkdir(Abs(rel).c_str(), 0755) != 0) return Fail("mkdir", rel, errno);
      dirs_.insert(rel);
      return;
    }
    auto it = dirs_.begin();
    std::advance(it, rng_() % dirs_.size());
    std::string dir = *it;
    std::string prefix = dir + "/";
    if (choice == 1) {
      std::string to =
          absl::StrCat("s", rng_() % kSharedDirs, "/", NewName("d"));
      if (rename(Abs(dir).c_str(), Abs(to).c_str()) != 0) {
        return Fail("rename dir", absl::StrCat(dir, " -> ", to), errno);
      }
      dirs_.erase(it);
      dirs_.insert(to);
      std::map<std::string, FileState> moved;
      for (auto f = files_.begin(); f != files_.end();) {
        if (absl::StartsWith(f->first, prefix)) {
          moved[to + "/" + f->first.substr(prefix.size())] = f->second;
          f = files_.erase(f);
        } else {
          ++f;
        }
      }
      files_.merge(moved);
      return;
    }
    for (auto f = files_.begin(); f != files_.end();) {
      if (absl::StartsWith(f->first, prefix)) {
        if (unlink(Abs(f->first).c_str()) != 0) {
          return Fail("unlink", f->first, errno);
        }
        f = files_.erase(f);
      } else {
        ++f;
      }
    }
    if (rmdir(Abs(dir).c_str()) != 0) return Fail("rmdir", dir, errno);
    dirs_.erase(it);
  }

  void Verify() {
    auto it = PickFile();
    if (it == files_.end()) return;
    Outcome got = ReadFile(Abs(it->first));
    if (got.ret < 0) return Fail("read", it->first, got.err);
    if (got.data != Content(it->second)) {
      errors_.push_back(absl::StrCat(
          "thread ", index_, " read ", it->first, ": content differs (size ",
          got.data.size(), ", want ", it->second.size, ")"));
    }
  }

  const int index_;
  const std::string root_;
  std::mt19937_64 rng_;
  std::map<std::string, FileState> files_;
  std::set<std::string> dirs_;
  std::vector<std::string> errors_;
  uint64_t next_id_ = 1;
  uint64_t next_name_ = 0;
  int ops_ = 0;
};

void DropCache(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY);
  if (fd < 0) return;
  fsync(fd);
  posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  close(fd);
}

struct statvfs StatvfsOf(const std::string& path) {
  struct statvfs st {};
  EXPECT_EQ(statvfs(path.c_str(), &st), 0) << ErrnoName(errno);
  return st;
}

TEST_F(ConcurrencyTest, RandomTreeOperationsStayConsistent) {
  const std::string root = mount_dir() + "/c";
  const struct statvfs start = StatvfsOf(mount_dir());
  ASSERT_EQ(mkdir(root.c_str(), 0755), 0);
  for (int i = 0; i < kSharedDirs; ++i) {
    ASSERT_EQ(mkdir(absl::StrCat(root, "/s", i).c_str(), 0755), 0);
  }

  std::vector<std::unique_ptr<Worker>> workers;
  for (int i = 0; i < kThreads; ++i) {
    workers.push_back(std::make_unique<Worker>(i, root));
  }
  auto deadline = std::chrono::steady_clock::now() + kRunTime;
  std::vector<std::thread> threads;
  for (auto& w : workers) {
    threads.emplace_back([&w, deadline] { w->Run(deadline); });
  }
  for (std::thread& t : threads) t.join();

  std::map<std::string, FileState> want_files;
  std::set<std::string> want_dirs;
  int total_ops = 0;
  for (int i = 0; i < kSharedDirs; ++i) want_dirs.insert(absl::StrCat("s", i));
  for (auto& w : workers) {
    EXPECT_TRUE(w->errors().empty()) << absl::StrJoin(w->errors(), "\n");
    want_files.insert(w->files().begin(), w->files().end());
    want_dirs.insert(w->dirs().begin(), w->dirs().end());
    total_ops += w->ops();
  }
  EXPECT_GT(total_ops, 100) << "the workers barely ran";
  RecordProperty("operations", total_ops);
  RecordProperty("surviving_files", static_cast<int>(want_files.size()));

  // The walk finds exactly the modelled tree.
  std::set<std::string> got_files, got_dirs, got_other;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(root, ec);
       !ec && it != std::filesystem::recursive_directory_iterator();
       it.increment(ec)) {
    std::string rel = it->path().lexically_relative(root).string();
    if (it->is_directory()) {
      got_dirs.insert(rel);
    } else if (it->is_regular_file()) {
      got_files.insert(rel);
    } else {
      got_other.insert(rel);
    }
  }
  ASSERT_FALSE(ec) << "walking the tree: " << ec.message();
  std::set<std::string> want_file_names;
  for (const auto& [rel, f] : want_files) want_file_names.insert(rel);
  EXPECT_EQ(got_files, want_file_names);
  EXPECT_EQ(got_dirs, want_dirs);
  EXPECT_TRUE(got_other.empty());

  // Every file has exactly the modelled size and content, read back from the
  // daemon rather than the kernel's page cache.
  for (const auto& [rel, f] : want_files) {
    std::string path = root + "/" + rel;
    int fd = open(path.c_str(), O_RDONLY);
    ASSERT_GE(fd, 0) << rel << ": " << ErrnoName(errno);
    struct stat st {};
    EXPECT_EQ(fstat(fd, &st), 0);
    EXPECT_EQ(static_cast<size_t>(st.st_size), f.size) << rel;
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
    Outcome content = ReadFile(path);
    EXPECT_TRUE(content.ret == 0 && content.data == Content(f))
        << rel << ": " << ToString(content) << ", want " << f.size
        << " bytes of generation " << f.gen;
  }

  // Removing everything gives all blocks (and inodes, if counted) back.
  std::filesystem::remove_all(root, ec);
  ASSERT_FALSE(ec) << ec.message();
  bool freed = WaitFor(
      [&] {
        struct statvfs now = StatvfsOf(mount_dir());
        return now.f_bfree == start.f_bfree &&
               (start.f_files == 0 || now.f_ffree == start.f_ffree);
      },
      std::chrono::seconds(10));
  struct statvfs end = StatvfsOf(mount_dir());
  EXPECT_TRUE(freed) << "leak: f_bfree " << start.f_bfree << " -> "
                     << end.f_bfree << ", f_ffree " << start.f_ffree << " -> "
                     << end.f_ffree << " (f_files " << start.f_files << ")";
}

// O_APPEND writes from several threads (own descriptors) never overwrite each
// other: the file ends up with every record exactly once, none torn.
TEST_F(ConcurrencyTest, ConcurrentAppendsToOneFile) {
  constexpr int kRecords = 2000;
  constexpr size_t kRecordSize = 100;
  const std::string path = mount_dir() + "/log";
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      int fd = open(path.c_str(), O_CREAT | O_WRONLY | O_APPEND, 0644);
      if (fd < 0) {
        ++failures;
        return;
      }
      for (int r = 0; r < kRecords; ++r) {
        std::string rec = absl::StrCat("t", i, " r", r, " ");
        rec.resize(kRecordSize - 1, static_cast<char>('a' + i));
        rec += '\n';
        if (write(fd, rec.data(), rec.size()) !=
            static_cast<ssize_t>(rec.size())) {
          ++failures;
        }
      }
      if (close(fd) != 0) ++failures;
    });
  }
  for (std::thread& t : threads) t.join();
  ASSERT_EQ(failures.load(), 0);
  DropCache(path);
  Outcome content = ReadFile(path);
  ASSERT_EQ(content.data.size(), kThreads * kRecords * kRecordSize)
      << "appends overwrote each other";
  std::vector<int> next(kThreads, 0);
  for (size_t off = 0; off < content.data.size(); off += kRecordSize) {
    std::string rec = content.data.substr(off, kRecordSize);
    int t = -1, r = -1;
    ASSERT_EQ(sscanf(rec.c_str(), "t%d r%d ", &t, &r), 2)
        << "torn record at " << off << ": " << rec;
    ASSERT_TRUE(t >= 0 && t < kThreads) << rec;
    // Each thread's records appear in its own order.
    EXPECT_EQ(r, next[t]) << "thread " << t << " at offset " << off;
    next[t] = r + 1;
    EXPECT_EQ(rec.back(), '\n') << "torn record at " << off;
  }
}

}  // namespace
}  // namespace memfuse::testing
