// One file, directory, symlink or special file of the in-memory tree.
//
// Locking: fields marked "Tree" are guarded by the Tree's mutex (the
// namespace lock); fields guarded by `mu` hold the attributes and contents.
// Lock order: Tree::mu_ before Inode::mu. Inodes are shared_ptr-owned by the
// Tree's table, so an operation in flight keeps its inode alive even if the
// last name and the last kernel reference go away meanwhile.
#ifndef MEMFUSE_FSD_INODE_H_
#define MEMFUSE_FSD_INODE_H_

#include <fuse_lowlevel.h>
#include <sys/stat.h>
#include <time.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "fsd/directory.h"
#include "fsd/file_data.h"

namespace memfuse::fsd {

using XattrMap = std::map<std::string, std::string, std::less<>>;

struct Inode {
  Inode(fuse_ino_t ino, mode_t mode, BlockBudget* budget,
        BlockCache* cache = nullptr)
      : ino(ino), type(mode & S_IFMT), data(budget, cache), mode(mode) {}
  Inode(const Inode&) = delete;
  Inode& operator=(const Inode&) = delete;

  bool is_dir() const { return type == S_IFDIR; }
  bool is_reg() const { return type == S_IFREG; }

  const fuse_ino_t ino;  // stable id: never reused while fsd runs
  const mode_t type;     // S_IFMT bits

  // Tree: names pointing here (for a directory, 2 + subdirectories).
  uint32_t nlink = 0;
  // Tree: the containing directory (directories only, for ".." and the
  // rename-into-own-subtree check).
  fuse_ino_t parent = 0;
  // Tree: the entries, for a directory.
  std::unique_ptr<Directory> dir;
  // The kernel's lookup count; changed only with the Tree's mutex held
  // (shared for increments, exclusive for decrements), hence atomic.
  std::atomic<uint64_t> nlookup{0};

  // Tree: a directory of the mirror whose entries are not loaded yet (lazy
  // loading); it is listed before anything looks into it.
  bool unlisted = false;
  // Open file handles (open/create until release): an unlinked file still
  // open keeps its bytes, so they are fetched from the mirror first.
  // Incremented only under the Tree's mutex (shared), so that an unlink
  // deciding under it (exclusive) sees every open that precedes it.
  std::atomic<int> open_count{0};
  // Unlinks and renames fetching the bytes of this open file before it
  // loses its last name: while any holds it, its blocks are not evicted
  // (once the name is gone, `linked` keeps them). Each takes its pin back
  // when it returns, whether the name went or not.
  std::atomic<int> pins{0};
  // Where the last read ended, to recognize a sequential reader.
  std::atomic<uint64_t> read_end{0};

  // Immutable after creation: a symlink's target.
  std::string symlink_target;

  absl::Mutex mu;
  FileData data ABSL_GUARDED_BY(mu);
  mode_t mode ABSL_GUARDED_BY(mu);
  uid_t uid ABSL_GUARDED_BY(mu) = 0;
  gid_t gid ABSL_GUARDED_BY(mu) = 0;
  dev_t rdev ABSL_GUARDED_BY(mu) = 0;
  uint64_t size ABSL_GUARDED_BY(mu) = 0;
  timespec atime ABSL_GUARDED_BY(mu) = {};
  timespec mtime ABSL_GUARDED_BY(mu) = {};
  timespec ctime ABSL_GUARDED_BY(mu) = {};
  std::unique_ptr<XattrMap> xattrs ABSL_GUARDED_BY(mu);  // null: none
  // Has a name, so the mirror has it too: data and attribute changes are
  // mirrored only while this holds. Cleared with the last name (under the
  // tree lock and this lock), before the removal is sequenced, so no change
  // of an unlinked file is ever sequenced after its removal.
  bool linked ABSL_GUARDED_BY(mu) = false;
};

}  // namespace memfuse::fsd

#endif  // MEMFUSE_FSD_INODE_H_
