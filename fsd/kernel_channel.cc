#include "fsd/kernel_channel.h"

#include <linux/fuse.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"

namespace memfuse::fsd {
namespace {

// One mount per process: the hooks' state.
Tree* g_tree = nullptr;
fuse_session* g_session = nullptr;
// The unique id of the INIT request whose reply gets KILLPRIV_V2; 0 if the
// kernel does not offer it.
std::atomic<uint64_t> g_init_unique{0};

template <typename T>
const T* Argument(const char* buf, ssize_t len) {
  if (static_cast<size_t>(len) < sizeof(fuse_in_header) + sizeof(T)) {
    return nullptr;
  }
  return reinterpret_cast<const T*>(buf + sizeof(fuse_in_header));
}

ssize_t ReadRequest(int fd, void* buf, size_t buf_len, void*) {
  const ssize_t n = read(fd, buf, buf_len);
  if (n < static_cast<ssize_t>(sizeof(fuse_in_header))) return n;
  const char* bytes = static_cast<const char*>(buf);
  fuse_in_header header;
  std::memcpy(&header, bytes, sizeof(header));
  bool kill = false;
  switch (header.opcode) {
    case FUSE_INIT: {
      // fuse_init_in grew over time; only its first flags word is needed.
      if (static_cast<size_t>(n) >=
          sizeof(header) + offsetof(fuse_init_in, flags) + sizeof(uint32_t)) {
        uint32_t flags;
        std::memcpy(&flags, bytes + sizeof(header) + offsetof(fuse_init_in, flags),
                    sizeof(flags));
        if (flags & FUSE_HANDLE_KILLPRIV_V2) g_init_unique = header.unique;
      }
      break;
    }
    case FUSE_WRITE:
      if (auto* in = Argument<fuse_write_in>(bytes, n)) {
        kill = in->write_flags & FUSE_WRITE_KILL_SUIDGID;
      }
      break;
    case FUSE_SETATTR:
      if (auto* in = Argument<fuse_setattr_in>(bytes, n)) {
        kill = in->valid & FATTR_KILL_SUIDGID;
      }
      break;
    case FUSE_OPEN:
      if (auto* in = Argument<fuse_open_in>(bytes, n)) {
        kill = in->open_flags & FUSE_OPEN_KILL_SUIDGID;
      }
      break;
    default:
      break;
  }
  // Before libfuse dispatches the request, so the handler sees the result;
  // the kernel keeps the old mode cached unless told (attributes only: no
  // page or inode lock is taken, so the request in flight cannot block it).
  if (kill && g_tree->KillSuidGid(header.nodeid)) {
    fuse_lowlevel_notify_inval_inode(g_session, header.nodeid, -1, 0);
  }
  return n;
}

ssize_t WriteReply(int fd, iovec* iov, int count, void*) {
  const uint64_t init_unique = g_init_unique.load();
  if (init_unique != 0 && count >= 2 &&
      iov[0].iov_len >= sizeof(fuse_out_header) &&
      iov[1].iov_len >= offsetof(fuse_init_out, flags) + sizeof(uint32_t)) {
    const auto* out = static_cast<const fuse_out_header*>(iov[0].iov_base);
    if (out->unique == init_unique && out->error == 0) {
      char* init = static_cast<char*>(iov[1].iov_base);
      uint32_t flags;
      std::memcpy(&flags, init + offsetof(fuse_init_out, flags), sizeof(flags));
      flags &= ~FUSE_HANDLE_KILLPRIV;
      flags |= FUSE_HANDLE_KILLPRIV_V2;
      std::memcpy(init + offsetof(fuse_init_out, flags), &flags, sizeof(flags));
      g_init_unique = 0;
      VLOG(1) << "negotiated FUSE_HANDLE_KILLPRIV_V2";
    }
  }
  return writev(fd, iov, count);
}

}  // namespace

absl::Status InstallKernelChannelHooks(fuse_session* se, Tree* tree) {
  g_tree = tree;
  g_session = se;
  static const fuse_custom_io io = {
      .writev = WriteReply,
      .read = ReadRequest,
      .splice_receive = nullptr,
      .splice_send = nullptr,
  };
  const int rc = fuse_session_custom_io(se, &io, fuse_session_fd(se));
  if (rc != 0) {
    return absl::InternalError(
        absl::StrCat("cannot hook the FUSE channel: ", std::strerror(-rc)));
  }
  return absl::OkStatus();
}

}  // namespace memfuse::fsd
