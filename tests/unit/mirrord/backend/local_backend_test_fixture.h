// What the local backend's tests share: a LocalBackend on a mirror
// directory of its own (umask 077, so that no mode depends on it), helpers
// that apply mutations and read the mirror back as a listing can tell it
// apart, and EXPECT_OK / EXPECT_PERMANENT for the Acks.
#ifndef MEMFUSE_TESTS_UNIT_MIRRORD_BACKEND_LOCAL_BACKEND_TEST_FIXTURE_H_
#define MEMFUSE_TESTS_UNIT_MIRRORD_BACKEND_LOCAL_BACKEND_TEST_FIXTURE_H_

#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/types/span.h"
#include "gtest/gtest.h"
#include "mirrord/backend/local_backend.h"
#include "tests/unit/mirrord/backend/mutations.h"

namespace memfuse::mirrord::local_backend_test {

namespace fs = std::filesystem;

inline constexpr uint64_t kRoot = 1;
inline constexpr uint64_t kSession = 0x5e5510;
inline constexpr uint32_t kBlock = 4096;

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

inline void WriteFile(const std::string& path, const std::string& data) {
  std::ofstream(path, std::ios::binary) << data;
}

inline struct stat Lstat(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(lstat(path.c_str(), &st), 0) << path << ": " << strerror(errno);
  return st;
}

inline std::string Xattr(const std::string& path, const std::string& name) {
  char buf[256];
  ssize_t n = lgetxattr(path.c_str(), name.c_str(), buf, sizeof(buf));
  return n < 0 ? "<" + std::string(strerror(errno)) + ">" : std::string(buf, n);
}

// Everything below `root` that a listing can tell apart: type, mode,
// owner, size, link count, mtime, contents, symlink target and xattrs.
inline std::string Snapshot(const std::string& root) {
  std::map<std::string, std::string> lines;
  for (auto it = fs::recursive_directory_iterator(root);
       it != fs::recursive_directory_iterator(); ++it) {
    const std::string path = it->path().string();
    struct stat st = Lstat(path);
    std::string line =
        absl::StrFormat("%o %d:%d n%d s%d m%d", st.st_mode, st.st_uid,
                        st.st_gid, st.st_nlink, st.st_size, st.st_mtim.tv_sec);
    if (S_ISREG(st.st_mode)) absl::StrAppend(&line, " [", ReadFile(path), "]");
    if (S_ISLNK(st.st_mode)) {
      absl::StrAppend(&line, " -> ", fs::read_symlink(path).string());
    }
    char names[1024];
    ssize_t n = llistxattr(path.c_str(), names, sizeof(names));
    for (ssize_t i = 0; i < n; i += strlen(names + i) + 1) {
      absl::StrAppend(&line, " ", names + i, "=", Xattr(path, names + i));
    }
    lines[path.substr(root.size())] = line;
  }
  std::string out;
  for (const auto& [path, line] : lines)
    absl::StrAppend(&out, path, " ", line, "\n");
  return out;
}

class LocalBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/memfuse-local-backend-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    base_ = tmpl;
    mirror_ = base_ + "/mirror";
    outside_ = base_ + "/outside";
    ASSERT_EQ(mkdir(outside_.c_str(), 0755), 0);
    old_umask_ = umask(077);  // modes must not depend on it
    OpenBackend();
    Handshake(kSession);
  }
  void TearDown() override {
    umask(old_umask_);
    backend_.reset();
    fs::remove_all(base_);
  }

  void OpenBackend() {
    absl::StatusOr<std::unique_ptr<LocalBackend>> b =
        LocalBackend::Open(mirror_);
    ASSERT_TRUE(b.ok()) << b.status();
    backend_ = std::move(*b);
  }

  pb::HandshakeResponse Handshake(uint64_t session,
                                  uint32_t block_size = kBlock) {
    pb::HandshakeRequest request;
    request.set_protocol_version(1);
    request.set_session_id(session);
    request.set_block_size(block_size);
    absl::StatusOr<pb::HandshakeResponse> r = backend_->Handshake(request);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : pb::HandshakeResponse();
  }

  // Applies `m` with the next seq unless it has one.
  pb::Ack Apply(pb::Mutation m) {
    if (m.seq() == 0) m.set_seq(++seq_);
    last_ = m;
    return backend_->Apply(m);
  }
  // Applies the last mutation again, same seq: a replay.
  pb::Ack ApplyAgain() { return backend_->Apply(last_); }

  // ReadBlock into a buffer of the length asked.
  absl::StatusOr<std::string> Read(const pb::ReadBlockRequest& r) {
    std::string out(r.length(), '\0');
    absl::StatusOr<uint64_t> n = backend_->ReadBlock(r, absl::MakeSpan(out));
    if (!n.ok()) return n.status();
    out.resize(*n);
    return out;
  }

  void Bind(uint64_t id, uint64_t parent, const std::string& name) {
    pb::Binding b;
    b.set_id(id);
    b.set_parent(parent);
    b.set_name(name);
    absl::Status s = backend_->Bind(b);
    ASSERT_TRUE(s.ok()) << s;
  }

  pb::ListDirectoryResponse List(uint64_t id, uint64_t first) {
    pb::ListDirectoryRequest request;
    request.set_id(id);
    request.set_first_child_id(first);
    absl::StatusOr<pb::ListDirectoryResponse> r =
        backend_->ListDirectory(request);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : pb::ListDirectoryResponse();
  }

  std::string M(const std::string& rel) { return mirror_ + "/" + rel; }

  std::string base_, mirror_, outside_;
  mode_t old_umask_ = 0;
  std::unique_ptr<LocalBackend> backend_;
  uint64_t seq_ = 0;
  pb::Mutation last_;
};

#define EXPECT_OK(ack)                        \
  do {                                        \
    const pb::Ack a_ = (ack);                 \
    EXPECT_EQ(a_.error(), 0) << a_.message(); \
  } while (0)

#define EXPECT_PERMANENT(ack, err)                \
  do {                                            \
    const pb::Ack a_ = (ack);                     \
    EXPECT_EQ(a_.error(), (err)) << a_.message(); \
    EXPECT_TRUE(a_.permanent()) << a_.message();  \
  } while (0)

}  // namespace memfuse::mirrord::local_backend_test

#endif  // MEMFUSE_TESTS_UNIT_MIRRORD_BACKEND_LOCAL_BACKEND_TEST_FIXTURE_H_
