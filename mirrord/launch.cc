#include "mirrord/launch.h"

#include <grp.h>
#include <pwd.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>
#include <climits>

#include "CLI/CLI.hpp"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/numeric_flag.h"
#include "common/status.h"

namespace memfuse::mirrord {
namespace {

ParseResult Fail(absl::string_view message) {
  return ParseResult{
      std::nullopt, 2,
      absl::StrCat("mem-fuse-mirrord: ", message, " (see --help)")};
}

// The local mirror's path from a --mirror SPEC, or why not.
absl::StatusOr<std::string> LocalMirrorPath(const std::string& spec) {
  std::string path = spec;
  if (absl::StartsWith(spec, "file://")) path = spec.substr(7);
  if (!absl::StartsWith(path, "/")) {
    return absl::InvalidArgumentError(
        absl::StrCat("--mirror ", spec,
                     ": expected /absolute/path, file:///absolute/path or "
                     "http://host:port"));
  }
  return path;
}

// An http:// SPEC: scheme, a host, an optional port, nothing else odd.
absl::Status CheckHttpUrl(const std::string& spec) {
  const absl::string_view rest = absl::string_view(spec).substr(7);
  const absl::string_view host = rest.substr(0, rest.find('/'));
  if (host.empty() || host.front() == ':' ||
      host.find_first_of("?#@ ") != absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("--mirror ", spec, ": expected http://host:port"));
  }
  return absl::OkStatus();
}

}  // namespace

ParseResult ParseOptions(int argc, const char* const* argv,
                         bool activation_offered) {
  Options o;
  std::string mirror;
  std::optional<int> fd;
  std::optional<int> data_fd;
  CLI::App app(
      "mem-fuse-mirrord: the mirror agent of mem-fuse. Applies the mutations "
      "fsd streams to a mirror, and serves the mirror's contents back for "
      "lazy loading.\nConnections come from --listen PATH, --fd N, or a "
      "socket passed by systemd (LISTEN_FDS). SIGTERM or SIGINT: finish the "
      "mutation in progress, then exit.",
      "mem-fuse-mirrord");
  app.set_version_flag("--version", "mem-fuse-mirrord " MEMFUSE_VERSION);
  app.add_option("--mirror", mirror,
                 "Mirror: /path or file:///path (a local directory, created "
                 "if missing), or http://host:port (an Invariant files "
                 "server)");
  std::optional<uint64_t> root;
  app.add_option("--root", root,
                 "With an http mirror: the server's node to show as the "
                 "root [default: 1]")
      ->transform(common::WholeNumber(1, UINT64_MAX));
  app.add_option("--listen", o.listen_path,
                 "Unix socket to create and accept connections on (0600)");
  app.add_option("--fd", fd,
                 "An already connected socket to serve; exits when it closes")
      ->transform(common::WholeNumber(0, INT_MAX));
  app.add_option("--data-fd", data_fd,
                 "A sealed memfd shared with fsd, from which writes that "
                 "name it take their data (mem-fuse passes it when it spawns "
                 "the agent)")
      ->transform(common::WholeNumber(0, INT_MAX));
  app.add_option("--user", o.user,
                 "After opening the mirror and the socket, run as this user "
                 "(needs root; an HTTP mirror's agent started as root "
                 "becomes nobody unless this names another, root included)");
  app.add_option("--allow-uid", o.allow_uids,
                 "A uid allowed to connect (repeatable); default: 0 and the "
                 "agent's own uid")
      ->take_all()
      // (uid_t)-1 is no user: it means "unchanged" to chown and setresuid.
      ->transform(common::WholeNumber(0, UINT32_MAX - 1));
  app.add_flag("--verbose", o.verbose, "Log more (glog -v 1)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    return ParseResult{std::nullopt, 0, app.help()};
  } catch (const CLI::CallForVersion&) {
    return ParseResult{std::nullopt, 0,
                       "mem-fuse-mirrord " MEMFUSE_VERSION "\n"};
  } catch (const CLI::ParseError& e) {
    return Fail(e.what());
  }

  if (mirror.empty()) return Fail("--mirror is required");
  if (absl::StartsWith(mirror, "https://")) {
    return Fail(absl::StrCat("--mirror ", mirror,
                             ": https is not supported; use http://"));
  }
  if (absl::StartsWith(mirror, "http://")) {
    absl::Status url = CheckHttpUrl(mirror);
    if (!url.ok()) return Fail(url.message());
    o.mirror_url = mirror;
    if (root.has_value()) {
      if (*root == 0) return Fail("--root 0: node ids start at 1");
      o.root_node = *root;
    }
  } else {
    if (root.has_value()) return Fail("--root needs an http --mirror");
    absl::StatusOr<std::string> path = LocalMirrorPath(mirror);
    if (!path.ok()) return Fail(path.status().message());
    o.mirror_path = std::move(*path);
  }

  o.activation = activation_offered;
  const int ways = (o.listen_path.empty() ? 0 : 1) + (fd.has_value() ? 1 : 0) +
                   (o.activation ? 1 : 0);
  if (ways != 1) {
    return Fail(absl::StrCat(
        "give exactly one of --listen PATH, --fd N or a socket from systemd "
        "(LISTEN_FDS); got ",
        ways == 0 ? "none" : "several"));
  }
  if (fd.has_value()) {
    if (*fd < 0) return Fail(absl::StrCat("--fd ", *fd, ": not a descriptor"));
    o.fd = *fd;
  }
  if (data_fd.has_value()) {
    if (*data_fd < 0 || (fd.has_value() && *data_fd == *fd)) {
      return Fail(absl::StrCat("--data-fd ", *data_fd, ": not a descriptor"));
    }
    o.data_fd = *data_fd;
  }
  if (!o.listen_path.empty() && !absl::StartsWith(o.listen_path, "/")) {
    // The agent may change users; a relative path is a trap.
    return Fail(absl::StrCat("--listen ", o.listen_path,
                             ": expected an absolute path"));
  }
  return ParseResult{std::move(o), 0, ""};
}

absl::StatusOr<User> LookUpUser(const std::string& name) {
  std::vector<char> buf(16384);
  passwd pw{};
  passwd* found = nullptr;
  const int err = getpwnam_r(name.c_str(), &pw, buf.data(), buf.size(), &found);
  if (err != 0) return common::ErrnoStatus(err, absl::StrCat("user ", name));
  if (found == nullptr) {
    return absl::NotFoundError(absl::StrCat("no such user ", name));
  }
  return User{name, pw.pw_uid, pw.pw_gid};
}

absl::Status DropPrivileges(const User& user) {
  if (initgroups(user.name.c_str(), user.gid) != 0) {
    return common::ErrnoStatus(errno, "initgroups");
  }
  if (setresgid(user.gid, user.gid, user.gid) != 0) {
    return common::ErrnoStatus(errno, "setresgid");
  }
  if (setresuid(user.uid, user.uid, user.uid) != 0) {
    return common::ErrnoStatus(errno, "setresuid");
  }
  uid_t ruid, euid, suid;
  gid_t rgid, egid, sgid;
  if (getresuid(&ruid, &euid, &suid) != 0 ||
      getresgid(&rgid, &egid, &sgid) != 0 || ruid != user.uid ||
      euid != user.uid || suid != user.uid || rgid != user.gid ||
      egid != user.gid || sgid != user.gid) {
    return absl::InternalError("the privilege drop did not take");
  }
  if (user.uid != 0 && setuid(0) == 0) {
    return absl::InternalError("root could be regained after the drop");
  }
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    return common::ErrnoStatus(errno, "PR_SET_NO_NEW_PRIVS");
  }
  return absl::OkStatus();
}

}  // namespace memfuse::mirrord
