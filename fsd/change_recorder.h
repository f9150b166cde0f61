// The Tree's changes as the mirror is told them: each method builds one
// mutation message and appends it to the MutationLog. With the file
// message built at send time (WriteMessage), this is the only fsd code
// outside the mirror client that builds mirror.pb.h messages, so the
// shape of what the mirror receives is read in one place.
//
// The Tree calls these while holding the locks that order the change
// (the tree lock for namespace changes, the inode's lock for data and
// attributes), so the log's sequence is the order the Tree performed
// them in (DESIGN.md, invariant 1). Without a mirror the recorder is
// inactive and every method does nothing.
//
// Thread-safe: holds no state of its own beyond the log pointer, which is
// set once before requests are served.
#ifndef MEMFUSE_FSD_CHANGE_RECORDER_H_
#define MEMFUSE_FSD_CHANGE_RECORDER_H_

#include <fuse_lowlevel.h>

#include <cstdint>
#include <memory>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "fsd/inode.h"
#include "fsd/mutation_log.h"
#include "mirror.pb.h"

namespace memfuse::fsd {

// The mirror's view of `inode`'s attributes.
void FillAttr(const Inode& inode, pb::Attr* attr)
    ABSL_SHARED_LOCKS_REQUIRED(inode.mu);

class ChangeRecorder {
 public:
  ChangeRecorder() = default;
  ChangeRecorder(const ChangeRecorder&) = delete;
  ChangeRecorder& operator=(const ChangeRecorder&) = delete;

  // From now on changes go to `log`. Call before serving requests.
  void SetLog(MutationLog* log) { log_ = log; }
  // Whether there is a mirror to tell.
  bool active() const { return log_ != nullptr; }

  // `inode` was created as `name` in `parent` (a symlink with its
  // target). With `repair`, it is re-created because the mirror lost it.
  void Created(fuse_ino_t parent, std::string_view name, const Inode& inode,
               bool repair = false) ABSL_SHARED_LOCKS_REQUIRED(inode.mu);
  void Linked(fuse_ino_t ino, fuse_ino_t new_parent, std::string_view new_name);
  // `gone`: the object losing its last name with it, or 0 (see
  // MutationLog::Append).
  void Removed(fuse_ino_t parent, std::string_view name, fuse_ino_t ino,
               bool directory, uint64_t gone);
  struct Rename {
    fuse_ino_t parent;
    std::string_view name;
    fuse_ino_t new_parent;
    std::string_view new_name;
    unsigned int flags;
    fuse_ino_t ino;
    fuse_ino_t replaced;  // the object at the new name, or 0
  };
  void Renamed(const Rename& rename, uint64_t gone);
  // The attributes in `mask` (FUSE_SET_ATTR_* bits) of `inode` as they are
  // now; nothing for an object without a name.
  void AttrsChanged(const Inode& inode, uint32_t mask)
      ABSL_SHARED_LOCKS_REQUIRED(inode.mu);
  void HolePunched(fuse_ino_t ino, uint64_t offset, uint64_t length);
  void XattrSet(fuse_ino_t ino, std::string_view name, std::string_view value);
  void XattrRemoved(fuse_ino_t ino, std::string_view name);
  // [offset, offset + length) of `inode` was written: marked dirty, and
  // sent later with the bytes it holds then (WriteMessage).
  // REQUIRES: the inode's lock is held (orders this against truncates).
  void Written(const std::shared_ptr<Inode>& inode, uint64_t offset,
               uint64_t length);

  // The Write message for a data slot, built when it is sent: the newest
  // bytes of [offset, offset + length) below the file's size, and its
  // times. The bytes go into `write->data`, or to `out` (room for `length`
  // bytes) when it is given. Returns how many bytes there were.
  static uint64_t WriteMessage(Inode& inode, uint64_t block_size,
                               uint64_t offset, uint64_t length,
                               pb::Write* write, char* out = nullptr)
      ABSL_LOCKS_EXCLUDED(inode.mu);

 private:
  MutationLog* log_ = nullptr;  // null: no mirror
};

}  // namespace memfuse::fsd

#endif  // MEMFUSE_FSD_CHANGE_RECORDER_H_
