// Mutations as fsd sends them, for the backends' tests.
#ifndef MEMFUSE_TESTS_UNIT_MIRRORD_BACKEND_MUTATIONS_H_
#define MEMFUSE_TESTS_UNIT_MIRRORD_BACKEND_MUTATIONS_H_

#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <string>

#include "mirror.pb.h"

namespace memfuse::mirrord {

namespace pb = ::memfuse::mirror::v1;

// The times every attr and write below carries (ns since the epoch).
inline constexpr int64_t kTime = 1600000000123456789;

inline pb::Attr MakeAttr(uint64_t id, uint32_t mode) {
  pb::Attr attr;
  attr.set_id(id);
  attr.set_mode(mode);
  attr.set_uid(getuid());
  attr.set_gid(getgid());
  attr.set_atime_ns(kTime);
  attr.set_mtime_ns(kTime);
  return attr;
}
inline pb::Mutation Create(uint64_t parent, const std::string& name,
                           uint64_t id, uint32_t mode,
                           const std::string& target = "") {
  pb::Mutation m;
  m.mutable_create()->set_parent(parent);
  m.mutable_create()->set_name(name);
  *m.mutable_create()->mutable_attr() = MakeAttr(id, mode);
  m.mutable_create()->set_symlink_target(target);
  return m;
}
inline pb::Mutation Write(uint64_t id, uint64_t offset,
                          const std::string& data) {
  pb::Mutation m;
  m.mutable_write()->set_id(id);
  m.mutable_write()->set_offset(offset);
  m.mutable_write()->set_data(data);
  m.mutable_write()->set_atime_ns(kTime);
  m.mutable_write()->set_mtime_ns(kTime);
  return m;
}
inline pb::Mutation Link(uint64_t id, uint64_t new_parent,
                         const std::string& new_name) {
  pb::Mutation m;
  m.mutable_link()->set_id(id);
  m.mutable_link()->set_new_parent(new_parent);
  m.mutable_link()->set_new_name(new_name);
  return m;
}
inline pb::Mutation Remove(uint64_t parent, const std::string& name,
                           uint64_t id, bool directory = false) {
  pb::Mutation m;
  m.mutable_remove()->set_parent(parent);
  m.mutable_remove()->set_name(name);
  m.mutable_remove()->set_id(id);
  m.mutable_remove()->set_directory(directory);
  return m;
}
inline pb::Mutation Rename(uint64_t parent, const std::string& name,
                           uint64_t new_parent, const std::string& new_name,
                           uint64_t id, uint64_t replaced = 0,
                           uint32_t flags = 0) {
  pb::Mutation m;
  pb::Rename* r = m.mutable_rename();
  r->set_parent(parent);
  r->set_name(name);
  r->set_new_parent(new_parent);
  r->set_new_name(new_name);
  r->set_id(id);
  r->set_replaced_id(replaced);
  r->set_flags(flags);
  return m;
}
inline pb::Mutation SetXattr(uint64_t id, const std::string& name,
                             const std::string& value) {
  pb::Mutation m;
  m.mutable_set_xattr()->set_id(id);
  m.mutable_set_xattr()->set_name(name);
  m.mutable_set_xattr()->set_value(value);
  return m;
}
inline pb::Mutation RemoveXattr(uint64_t id, const std::string& name) {
  pb::Mutation m;
  m.mutable_remove_xattr()->set_id(id);
  m.mutable_remove_xattr()->set_name(name);
  return m;
}
inline pb::Mutation SetAttr(uint32_t mask, const pb::Attr& attr) {
  pb::Mutation m;
  m.mutable_set_attr()->set_mask(mask);
  *m.mutable_set_attr()->mutable_attr() = attr;
  return m;
}
inline pb::Mutation PunchHole(uint64_t id, uint64_t offset, uint64_t length) {
  pb::Mutation m;
  m.mutable_punch_hole()->set_id(id);
  m.mutable_punch_hole()->set_offset(offset);
  m.mutable_punch_hole()->set_length(length);
  return m;
}
inline pb::Mutation Sync(uint64_t id) {
  pb::Mutation m;
  m.mutable_sync()->set_id(id);
  return m;
}

// The mirror does not have what the mutation needs: fsd is to re-create
// object `id` (Ack.missing_id).
#define EXPECT_MISSING(ack, id)                       \
  do {                                                \
    const pb::Ack a_ = (ack);                         \
    EXPECT_EQ(a_.error(), ENOENT) << a_.message();    \
    EXPECT_TRUE(a_.permanent()) << a_.message();      \
    EXPECT_EQ(a_.missing_id(), (id)) << a_.message(); \
  } while (0)

}  // namespace memfuse::mirrord

#endif  // MEMFUSE_TESTS_UNIT_MIRRORD_BACKEND_MUTATIONS_H_
