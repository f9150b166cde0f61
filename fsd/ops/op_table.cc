#include "fsd/ops/ops.h"

#include <cerrno>

#include "common/status.h"
#include "fsd/mirror_client.h"
#include "glog/logging.h"

namespace memfuse::fsd::ops {
namespace {

void Init(void* userdata, fuse_conn_info* conn) {
  // The kernel's help, where it has it: it caches pages and attributes and
  // writes back in big batches, so most operations never reach fsd.
  const unsigned wanted[] = {
      FUSE_CAP_WRITEBACK_CACHE, FUSE_CAP_ATOMIC_O_TRUNC,
      FUSE_CAP_PARALLEL_DIROPS, FUSE_CAP_READDIRPLUS,
      FUSE_CAP_READDIRPLUS_AUTO, FUSE_CAP_CACHE_SYMLINKS,
      FUSE_CAP_ASYNC_READ,
  };
  for (unsigned cap : wanted) {
    if (conn->capable & cap) conn->want |= cap;
  }
  // fsd's data never changes behind the kernel's back.
  conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
  // Killing setuid/setgid: either the kernel does it (and asks fsd for
  // security.capability on every write), or, with KILLPRIV_V2 negotiated by
  // kernel_channel.cc, fsd does it when the kernel flags a request. v1
  // would leave it to fsd without saying when, so it is never wanted.
  conn->want &= ~FUSE_CAP_HANDLE_KILLPRIV;
  conn->max_write = 1 << 20;
  conn->max_readahead = 1 << 20;
  conn->time_gran = 1;
  static_cast<Context*>(userdata)->kernel_times =
      (conn->want & FUSE_CAP_WRITEBACK_CACHE) != 0;
}

}  // namespace

Context& ContextOf(fuse_req_t req) {
  return *static_cast<Context*>(fuse_req_userdata(req));
}

Caller CallerOf(fuse_req_t req) {
  const fuse_ctx* ctx = fuse_req_ctx(req);
  return Caller{ctx->uid, ctx->gid};
}

void ReplyStatus(fuse_req_t req, const absl::Status& status) {
  fuse_reply_err(req, common::StatusToErrno(status));
}

void ReplySync(fuse_req_t req, fuse_ino_t ino) {
  MirrorClient* mirror = ContextOf(req).mirror;
  // Without a mirror everything is as durable as it will ever be.
  if (mirror == nullptr) {
    fuse_reply_err(req, 0);
    return;
  }
  // A signal to the program waiting (FUSE_INTERRUPT) ends the wait with
  // EINTR: a mirror that does not answer never leaves it unkillable.
  struct Interrupt {
    std::atomic<bool> fired{false};
    MutationLog* log;
  } interrupt{false, ContextOf(req).log};
  fuse_req_interrupt_func(
      req,
      [](fuse_req_t, void* data) {
        auto* i = static_cast<Interrupt*>(data);
        i->fired = true;
        i->log->Wake();
      },
      &interrupt);
  const absl::Status synced =
      mirror->Sync(ino == FUSE_ROOT_ID ? 0 : ino, &interrupt.fired);
  fuse_req_interrupt_func(req, nullptr, nullptr);  // before `interrupt` goes
  ReplyStatus(req, synced);
}

fuse_entry_param EntryParam(const Context& ctx, const struct stat& st) {
  fuse_entry_param e{};
  e.ino = st.st_ino;
  e.attr = st;
  e.attr_timeout = ctx.timeout;
  e.entry_timeout = ctx.timeout;
  return e;
}

void ReplyEntry(fuse_req_t req, const absl::StatusOr<struct stat>& st) {
  if (!st.ok()) {
    ReplyStatus(req, st.status());
    return;
  }
  Context& ctx = ContextOf(req);
  fuse_entry_param e = EntryParam(ctx, *st);
  if (fuse_reply_entry(req, &e) == -ENOENT) ctx.tree->Forget(e.ino, 1);
}

const fuse_lowlevel_ops& OperationTable() {
  static const fuse_lowlevel_ops table = [] {
    fuse_lowlevel_ops ops{};
    ops.init = Init;
    AddEntryOps(ops);
    AddAttrOps(ops);
    AddDirOps(ops);
    AddFileOps(ops);
    AddXattrOps(ops);
    return ops;
  }();
  return table;
}

}  // namespace memfuse::fsd::ops
