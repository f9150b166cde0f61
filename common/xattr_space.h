// How much room a file of the mirror's filesystem has for user.* extended
// attributes, so that fsd can refuse at once, with the errno that filesystem
// gives, a setxattr the mirror could never store (instead of accepting it and
// having the agent refuse it later, when the program has long moved on).
//
// The model is ext4's, the filesystem these mirrors live on most: each
// attribute takes a fixed entry header plus its name without the "user."
// prefix, and its value, each rounded up to 4 bytes; an object has a few
// separate regions (ext4: the space left in the inode, then one block), and
// an attribute goes whole into the first region with room for it. The agent
// measures the regions on the mirror itself (mirrord/backend/mirror_limits),
// so the figures are that filesystem's own; on filesystems whose room is
// large or unbounded (XFS, ext4 with ea_inode) it reports no regions and
// only the per-value limit applies. Where the model is off, the agent's
// refusal of the one object remains the backstop.
//
// Thread-safe (pure functions).
#ifndef MEMFUSE_COMMON_XATTR_SPACE_H_
#define MEMFUSE_COMMON_XATTR_SPACE_H_

#include <cstddef>
#include <cstdint>

#include "absl/types/span.h"

namespace memfuse::common {

// The room one user.* attribute takes: `name_size` counts the whole name,
// "user." included; `value_size` the value's bytes.
uint64_t XattrCost(size_t name_size, size_t value_size);

// Whether attributes of these costs, placed in this order, each into the
// first of `regions` (sizes, in the filesystem's order) with room left, all
// fit. No regions: room is unbounded, always true.
bool XattrsFit(absl::Span<const uint64_t> regions,
               absl::Span<const uint64_t> costs);

}  // namespace memfuse::common

#endif  // MEMFUSE_COMMON_XATTR_SPACE_H_
