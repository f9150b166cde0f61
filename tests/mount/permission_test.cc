// Permission checks for an unprivileged user (uid/gid 65534) on the mount
// (default_permissions, allow_other) compared with a native directory. The
// unprivileged steps run in a forked child that drops every id, because
// setresuid in the test process could not be undone.
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/fsuid.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "tests/testing/mount_fixture.h"
#include "tests/testing/posix_compare.h"

namespace memfuse::testing {
namespace {

constexpr uid_t kNobody = 65534;

using PermissionTest = MountTest;

// Runs `fn` as uid/gid `id` (no supplementary groups, no capabilities) in a
// forked child and returns its trace. Step data is not transferred, only the
// step name, return value and errno. The child is bounded to 30 s.
Trace RunAsUser(uid_t id, const std::function<void(Trace&)>& fn) {
  Trace result;
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    result.Add("pipe", Sys(-1));
    return result;
  }
  pid_t pid = fork();
  if (pid < 0) {
    result.Add("fork", Sys(-1));
    return result;
  }
  if (pid == 0) {
    close(fds[0]);
    Trace t;
    if (setgroups(0, nullptr) != 0 || setresgid(id, id, id) != 0 ||
        setresuid(id, id, id) != 0) {
      t.Add("drop privileges", Sys(-1));
    } else {
      setfsuid(id);  // follows euid already; explicit so the intent is clear
      fn(t);
    }
    std::string out;
    for (const auto& [step, o] : t.steps()) {
      absl::StrAppend(&out, o.ret, " ", o.err, " ", step, "\n");
    }
    for (size_t done = 0; done < out.size();) {
      ssize_t n = write(fds[1], out.data() + done, out.size() - done);
      if (n <= 0) break;
      done += n;
    }
    _exit(0);
  }
  close(fds[1]);
  std::string out;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    struct pollfd p = {fds[0], POLLIN, 0};
    if (left.count() <= 0 || poll(&p, 1, left.count()) <= 0) {
      kill(pid, SIGKILL);
      result.Add("child timed out", Outcome{-1, ETIMEDOUT, ""});
      break;
    }
    char buf[4096];
    ssize_t n = read(fds[0], buf, sizeof(buf));
    if (n <= 0) break;
    out.append(buf, n);
  }
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);  // it has exited or was killed above
  for (absl::string_view line : absl::StrSplit(out, '\n', absl::SkipEmpty())) {
    std::vector<absl::string_view> parts =
        absl::StrSplit(line, absl::MaxSplits(' ', 2));
    Outcome o;
    if (parts.size() == 3 && absl::SimpleAtoi(parts[0], &o.ret) &&
        absl::SimpleAtoi(parts[1], &o.err)) {
      result.Add(std::string(parts[2]), o);
    }
  }
  return result;
}

// Owner-only objects and shared ones, created by root on both sides.
void CreateTree(const Dir& d, Trace& t) {
  t.Add("root 0755", Sys(chmod(d("").c_str(), 0755)));
  t.Add("private dir", Sys(mkdir(d("private").c_str(), 0700)));
  t.Add("file in private", WriteFile(d("private/f"), "p"));
  t.Add("secret", WriteFile(d("secret"), "secret"));
  t.Add("secret 0600", Sys(chmod(d("secret").c_str(), 0600)));
  t.Add("public", WriteFile(d("public"), "public"));
  t.Add("public 0644", Sys(chmod(d("public").c_str(), 0644)));
  t.Add("pubdir", Sys(mkdir(d("pubdir").c_str(), 0755)));
  t.Add("pubdir 0755", Sys(chmod(d("pubdir").c_str(), 0755)));
  t.Add("open dir", Sys(mkdir(d("open").c_str(), 0777)));
  t.Add("open 0777", Sys(chmod(d("open").c_str(), 0777)));
  t.Add("sticky dir", Sys(mkdir(d("sticky").c_str(), 0777)));
  t.Add("sticky 01777", Sys(chmod(d("sticky").c_str(), 01777)));
  t.Add("root's file in sticky", WriteFile(d("sticky/rootfile"), "r"));
  t.Add("rootfile 0666", Sys(chmod(d("sticky/rootfile").c_str(), 0666)));
  t.Add("setuid file", WriteFile(d("open/suid"), "s"));
  t.Add("setuid 04777", Sys(chmod(d("open/suid").c_str(), 04777)));
}

// What uid 65534 tries.
void UnprivilegedSteps(const Dir& d, Trace& t) {
  t.Add("stat private dir", Stat(d("private")));
  t.Add("opendir private", SysOk(opendir(d("private").c_str()) ? 0 : -1));
  t.Add("stat inside private", Stat(d("private/f")));
  t.Add("read secret", SysOk(open(d("secret").c_str(), O_RDONLY)));
  t.Add("read public", ReadFile(d("public")));
  t.Add("write public", SysOk(open(d("public").c_str(), O_WRONLY)));
  t.Add("access public R_OK", Sys(access(d("public").c_str(), R_OK)));
  t.Add("access public W_OK", Sys(access(d("public").c_str(), W_OK)));
  t.Add("truncate public", Sys(truncate(d("public").c_str(), 0)));
  t.Add("chmod public", Sys(chmod(d("public").c_str(), 0777)));
  t.Add("chown public", Sys(chown(d("public").c_str(), kNobody, kNobody)));
  t.Add("utimensat now on public",
        Sys(utimensat(AT_FDCWD, d("public").c_str(), nullptr, 0)));
  struct timespec times[2] = {{1, 0}, {2, 0}};
  t.Add("utimensat explicit on public",
        Sys(utimensat(AT_FDCWD, d("public").c_str(), times, 0)));
  t.Add("setxattr public",
        Sys(setxattr(d("public").c_str(), "user.x", "v", 1, 0)));
  t.Add("create in pubdir",
        SysOk(open(d("pubdir/new").c_str(), O_CREAT | O_WRONLY, 0644)));
  t.Add("mkdir in pubdir", Sys(mkdir(d("pubdir/nd").c_str(), 0755)));
  t.Add("symlink in pubdir", Sys(symlink("x", d("pubdir/l").c_str())));
  t.Add("unlink public", Sys(unlink(d("public").c_str())));
  t.Add("rename public", Sys(rename(d("public").c_str(), d("open/p").c_str())));
  t.Add("hard link to public",
        Sys(link(d("public").c_str(), d("open/h").c_str())));
  t.Add("create in open dir", WriteFile(d("open/mine"), "mine"));
  t.Add("own file stat (owner is the caller)", Stat(d("open/mine")));
  t.Add("chmod own file", Sys(chmod(d("open/mine").c_str(), 0600)));
  t.Add("mkdir own dir", Sys(mkdir(d("open/mydir").c_str(), 0700)));
  t.Add("own dir stat", Stat(d("open/mydir")));
  t.Add("chown own file to root", Sys(chown(d("open/mine").c_str(), 0, 0)));
  t.Add("create in sticky", WriteFile(d("sticky/mine"), "m"));
  t.Add("unlink root's file in sticky",
        Sys(unlink(d("sticky/rootfile").c_str())));
  t.Add("rename root's file in sticky",
        Sys(rename(d("sticky/rootfile").c_str(), d("sticky/x").c_str())));
  t.Add("write root's 0666 file", WriteFile(d("sticky/rootfile"), "w"));
  t.Add("unlink own file in sticky", Sys(unlink(d("sticky/mine").c_str())));
  // Writing to someone else's setuid file drops the bit (checked by root in
  // the tree comparison afterwards).
  int fd = open(d("open/suid").c_str(), O_WRONLY | O_APPEND);
  t.Add("open setuid file", SysOk(fd));
  if (fd >= 0) {
    t.Add("write setuid file", Sys(write(fd, "x", 1)));
    close(fd);
  }
}

TEST_F(PermissionTest, UnprivilegedUserSeesSameErrors) {
  ExpectSameTrace("setup as root", CreateTree);
  Trace native = RunAsUser(
      kNobody, [&](Trace& t) { UnprivilegedSteps(Dir(native_dir()), t); });
  Trace mounted = RunAsUser(
      kNobody, [&](Trace& t) { UnprivilegedSteps(Dir(mount_dir()), t); });
  ASSERT_FALSE(native.steps().empty());
  EXPECT_EQ(native.steps().front().first, "stat private dir")
      << "could not become uid " << kNobody;
  std::string diff = DiffTraces(native, mounted);
  EXPECT_TRUE(diff.empty()) << "as uid " << kNobody << ":\n" << diff;
  ExpectSame("setuid bit after another user's write",
             [](const Dir& d) { return Stat(d("open/suid")); });
  // What root sees afterwards, e.g. that a denied write changed nothing.
  ExpectSame("tree", [](const Dir& d) { return TreeSummary(d("")); });
}

TEST_F(PermissionTest, EaccesOnOwnerOnlyObjects) {
  // Explicit expectations, so that a mount that denied or allowed everything
  // cannot pass by accident even if the native side misbehaved.
  ExpectSameTrace("setup as root", CreateTree);
  Trace t = RunAsUser(kNobody, [&](Trace& trace) {
    Dir d(mount_dir());
    trace.Add("opendir 0700 dir",
              SysOk(opendir(d("private").c_str()) ? 0 : -1));
    trace.Add("open 0600 file", SysOk(open(d("secret").c_str(), O_RDONLY)));
    trace.Add("open 0644 file", SysOk(open(d("public").c_str(), O_RDONLY)));
  });
  ASSERT_EQ(t.steps().size(), 3u) << DiffTraces(Trace(), t);
  EXPECT_EQ(t.steps()[0].second.err, EACCES) << ToString(t.steps()[0].second);
  EXPECT_EQ(t.steps()[1].second.err, EACCES) << ToString(t.steps()[1].second);
  EXPECT_EQ(t.steps()[2].second, Outcome{})
      << "allow_other/default_permissions: " << ToString(t.steps()[2].second);
}

}  // namespace
}  // namespace memfuse::testing
