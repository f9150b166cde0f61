// Measures what a local mirror's filesystem can store (name length, room for
// user.* xattrs per object), for fsd to refuse at once on the mount what the
// mirror would refuse later. See common/xattr_space.h for the model.
//
// Thread-compatible: it works on an anonymous O_TMPFILE file of its own,
// which vanishes when the probe ends and never appears in the mirror.
#ifndef MEMFUSE_MIRRORD_BACKEND_MIRROR_LIMITS_H_
#define MEMFUSE_MIRRORD_BACKEND_MIRROR_LIMITS_H_

#include "mirror.pb.h"

namespace memfuse::mirrord {

namespace pb = ::memfuse::mirror::v1;

// The limits of the filesystem holding directory `dir_fd`. What cannot be
// measured (no O_TMPFILE there, an unexpected error) is left unknown.
pb::MirrorLimits ProbeMirrorLimits(int dir_fd);

}  // namespace memfuse::mirrord

#endif  // MEMFUSE_MIRRORD_BACKEND_MIRROR_LIMITS_H_
