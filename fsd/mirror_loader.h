// What --lazy-load false does at mount: every directory of the mirror
// listed before the mount is served, and then, in the background, file
// data read into the cache while it has room. (With lazy loading the Tree
// lists a directory at its first use and reads a block when it is asked
// for: tree_load.cc and tree_mirror.cc.)
//
// Thread-safe as the Tree is; each function is called from one thread.
#ifndef MEMFUSE_FSD_MIRROR_LOADER_H_
#define MEMFUSE_FSD_MIRROR_LOADER_H_

#include <atomic>

#include "absl/status/status.h"
#include "fsd/tree.h"

namespace memfuse::fsd {

// Lists every directory of the mirror into `tree`, breadth first.
absl::Status ListWholeMirror(Tree* tree);

// Reads the files' missing blocks while the cache has room, logging the
// progress about once a second, until done or `stop`.
void PrefetchMirror(Tree* tree, const std::atomic<bool>& stop);

}  // namespace memfuse::fsd

#endif  // MEMFUSE_FSD_MIRROR_LOADER_H_
