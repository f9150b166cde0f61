#include "common/peer_credentials.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "common/status.h"
#include "common/unique_fd.h"
#include "gtest/gtest.h"

namespace memfuse::common {
namespace {

TEST(PeerCredentialsTest, NamesTheConnectingProcess) {
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
  UniqueFd a(fds[0]), b(fds[1]);
  absl::StatusOr<ucred> cred = PeerCredentials(a.get());
  ASSERT_TRUE(cred.ok()) << cred.status();
  EXPECT_EQ(cred->pid, getpid());
  EXPECT_EQ(cred->uid, geteuid());
  EXPECT_EQ(cred->gid, getegid());
}

TEST(PeerCredentialsTest, NotASocketIsAnError) {
  int pipe_fds[2];
  ASSERT_EQ(pipe(pipe_fds), 0);
  UniqueFd r(pipe_fds[0]), w(pipe_fds[1]);
  EXPECT_EQ(StatusToErrno(PeerCredentials(r.get()).status()), ENOTSOCK);
}

}  // namespace
}  // namespace memfuse::common
