// The FUSE low-level operation table of fsd.
//
// Each handler is a thin shell: it calls one Tree method, which returns a
// Status, and only the handler replies. Handlers run on libfuse's worker
// threads and hold no lock while replying (the Tree releases its locks
// before returning), since a reply can make the kernel send FORGET at once.
#ifndef MEMFUSE_FSD_OPS_OPS_H_
#define MEMFUSE_FSD_OPS_OPS_H_

#ifndef FUSE_USE_VERSION
#define FUSE_USE_VERSION 314
#endif
#include <fuse_lowlevel.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "fsd/block_budget.h"
#include "fsd/mutation_log.h"
#include "fsd/tree.h"

namespace memfuse::fsd {
class MirrorClient;
}  // namespace memfuse::fsd

namespace memfuse::fsd::ops {

// What every handler reaches through fuse_req_userdata().
struct Context {
  Tree* tree;
  // The mirror's durability barriers (fsync); null without a mirror.
  MirrorClient* mirror = nullptr;
  // For the status shown as the root's user.memfuse.status xattr.
  const BlockBudget* budget = nullptr;
  MutationLog* log = nullptr;  // null without a mirror
  // The kernel keeps mtime/ctime of files written through its writeback
  // cache and sends them with SETATTR (set at INIT).
  bool kernel_times = false;
  // How long the kernel may cache entries and attributes: fsd is the only
  // writer of its tree, so everything the kernel caches stays true until
  // the kernel itself changes it.
  double timeout = 86400.0;
};

// The complete operation table.
const fuse_lowlevel_ops& OperationTable();

// Helpers shared by the op families.
Context& ContextOf(fuse_req_t req);
Caller CallerOf(fuse_req_t req);
void ReplyStatus(fuse_req_t req, const absl::Status& status);
// fsync(2) of `ino` (FUSE_ROOT_ID: the whole mount): waits for the mirror.
void ReplySync(fuse_req_t req, fuse_ino_t ino);
// Replies with an entry; if the kernel did not take it (interrupted), the
// lookup it would have held is forgotten again.
void ReplyEntry(fuse_req_t req, const absl::StatusOr<struct stat>& st);
fuse_entry_param EntryParam(const Context& ctx, const struct stat& st);

// Fill in one family of operations each (entry_ops.cc, attr_ops.cc, ...).
void AddEntryOps(fuse_lowlevel_ops& ops);
void AddAttrOps(fuse_lowlevel_ops& ops);
void AddDirOps(fuse_lowlevel_ops& ops);
void AddFileOps(fuse_lowlevel_ops& ops);
void AddXattrOps(fuse_lowlevel_ops& ops);

}  // namespace memfuse::fsd::ops

#endif  // MEMFUSE_FSD_OPS_OPS_H_
