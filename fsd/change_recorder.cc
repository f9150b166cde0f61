// The mutation messages of the Tree's changes (change_recorder.h).
#include "fsd/change_recorder.h"

#include <algorithm>
#include <string>
#include <utility>

#include "fsd/tree_rules.h"

namespace memfuse::fsd {

using tree_rules::Nanos;

void FillAttr(const Inode& inode, pb::Attr* attr) {
  attr->set_id(inode.ino);
  attr->set_mode(inode.mode);
  attr->set_uid(inode.uid);
  attr->set_gid(inode.gid);
  attr->set_rdev(inode.rdev);
  attr->set_size(inode.size);
  attr->set_atime_ns(Nanos(inode.atime));
  attr->set_mtime_ns(Nanos(inode.mtime));
  attr->set_ctime_ns(Nanos(inode.ctime));
}

void ChangeRecorder::Created(fuse_ino_t parent, std::string_view name,
                             const Inode& inode, bool repair) {
  if (log_ == nullptr) return;
  pb::Mutation m;
  pb::Create* create = m.mutable_create();
  create->set_parent(parent);
  create->set_name(name.data(), name.size());
  // The bytes follow as writes: the mirror creates the object empty.
  FillAttr(inode, create->mutable_attr());
  create->mutable_attr()->set_size(0);
  if (!inode.symlink_target.empty()) {
    create->set_symlink_target(inode.symlink_target);
  }
  if (repair) create->set_repair(true);
  log_->Append(std::move(m));
}

void ChangeRecorder::Linked(fuse_ino_t ino, fuse_ino_t new_parent,
                            std::string_view new_name) {
  if (log_ == nullptr) return;
  pb::Mutation m;
  pb::Link* link = m.mutable_link();
  link->set_id(ino);
  link->set_new_parent(new_parent);
  link->set_new_name(new_name.data(), new_name.size());
  log_->Append(std::move(m));
}

void ChangeRecorder::Removed(fuse_ino_t parent, std::string_view name,
                             fuse_ino_t ino, bool directory, uint64_t gone) {
  if (log_ == nullptr) return;
  pb::Mutation m;
  pb::Remove* remove = m.mutable_remove();
  remove->set_parent(parent);
  remove->set_name(name.data(), name.size());
  remove->set_id(ino);
  remove->set_directory(directory);
  log_->Append(std::move(m), gone);
}

void ChangeRecorder::Renamed(const Rename& r, uint64_t gone) {
  if (log_ == nullptr) return;
  pb::Mutation m;
  pb::Rename* rename = m.mutable_rename();
  rename->set_parent(r.parent);
  rename->set_name(r.name.data(), r.name.size());
  rename->set_new_parent(r.new_parent);
  rename->set_new_name(r.new_name.data(), r.new_name.size());
  rename->set_flags(r.flags);
  rename->set_id(r.ino);
  rename->set_replaced_id(r.replaced);
  log_->Append(std::move(m), gone);
}

void ChangeRecorder::AttrsChanged(const Inode& inode, uint32_t mask) {
  if (log_ == nullptr || !inode.linked || mask == 0) return;
  pb::Mutation m;
  pb::SetAttr* set = m.mutable_set_attr();
  set->set_mask(mask);
  FillAttr(inode, set->mutable_attr());
  log_->Append(std::move(m));
}

void ChangeRecorder::HolePunched(fuse_ino_t ino, uint64_t offset,
                                 uint64_t length) {
  if (log_ == nullptr) return;
  pb::Mutation m;
  pb::PunchHole* punch = m.mutable_punch_hole();
  punch->set_id(ino);
  punch->set_offset(offset);
  punch->set_length(length);
  log_->Append(std::move(m));
}

void ChangeRecorder::XattrSet(fuse_ino_t ino, std::string_view name,
                              std::string_view value) {
  if (log_ == nullptr) return;
  pb::Mutation m;
  pb::SetXattr* set = m.mutable_set_xattr();
  set->set_id(ino);
  set->set_name(name.data(), name.size());
  set->set_value(value.data(), value.size());
  log_->Append(std::move(m));
}

void ChangeRecorder::XattrRemoved(fuse_ino_t ino, std::string_view name) {
  if (log_ == nullptr) return;
  pb::Mutation m;
  pb::RemoveXattr* remove = m.mutable_remove_xattr();
  remove->set_id(ino);
  remove->set_name(name.data(), name.size());
  log_->Append(std::move(m));
}

void ChangeRecorder::Written(const std::shared_ptr<Inode>& inode,
                             uint64_t offset, uint64_t length) {
  if (log_ == nullptr) return;
  log_->AppendWrite(inode, offset, length);
}

uint64_t ChangeRecorder::WriteMessage(Inode& inode, uint64_t block_size,
                                      uint64_t offset, uint64_t length,
                                      pb::Write* write, char* out) {
  write->set_id(inode.ino);
  write->set_offset(offset);
  absl::ReaderMutexLock il(&inode.mu);
  const uint64_t end = std::min(offset + length, inode.size);
  const uint64_t count = end > offset ? end - offset : 0;
  if (count > 0) {
    if (out == nullptr) {
      std::string* data = write->mutable_data();
      data->resize(count);
      out = data->data();
    }
    inode.data.Read(block_size, offset, count, out);
  }
  write->set_atime_ns(Nanos(inode.atime));
  write->set_mtime_ns(Nanos(inode.mtime));
  return count;
}

}  // namespace memfuse::fsd
