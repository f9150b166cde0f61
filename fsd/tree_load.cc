// What the Tree takes from the mirror and gives it: usage, the root's and
// listed entries loaded, and the bindings a new agent is sent.
// Thread-safety as Tree's (tree.h).
#include "fsd/tree.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/xattr.h>

#include <algorithm>
#include <cerrno>
#include <ctime>

#include "common/status.h"
#include "common/xattr_space.h"
#include "glog/logging.h"
#include "fsd/tree_rules.h"

namespace memfuse::fsd {

using common::ErrnoStatus;
using namespace tree_rules;  // NOLINT: the Tree's own rules

Tree::Usage Tree::GetUsage() {
  absl::ReaderMutexLock l(&mu_);
  return Usage{table_.size(), budget_->used(), budget_->limit()};
}

void Tree::LoadRoot(
    const pb::Attr& attr,
    const google::protobuf::RepeatedPtrField<pb::XattrEntry>& xattrs) {
  InodePtr root = Find(FUSE_ROOT_ID);
  {
    absl::MutexLock l(&mu_);
    root->unlisted = true;
  }
  absl::MutexLock il(&root->mu);
  root->mode = S_IFDIR | (attr.mode() & 07777);
  root->uid = attr.uid();
  root->gid = attr.gid();
  root->atime = FromNanos(attr.atime_ns());
  root->mtime = FromNanos(attr.mtime_ns());
  root->ctime = FromNanos(attr.ctime_ns());
  for (const pb::XattrEntry& x : xattrs) {
    if (!root->xattrs) root->xattrs = std::make_unique<XattrMap>();
    (*root->xattrs)[x.name()] = x.value();
  }
}

absl::Status Tree::LoadEntry(fuse_ino_t parent, const pb::DirEntry& entry) {
  absl::MutexLock l(&mu_);
  ASSIGN_OR_RETURN(Inode * dir, GetDirLocked(parent));
  return LoadEntryLocked(*dir, entry);
}

absl::Status Tree::LoadEntryLocked(Inode& dir, const pb::DirEntry& entry) {
  const std::string& name = entry.name();
  RETURN_IF_ERROR(ValidateName(name));
  const pb::Attr& attr = entry.attr();
  const fuse_ino_t id = attr.id();
  if (id <= FUSE_ROOT_ID) return ErrnoStatus(EINVAL);
  if (dir.dir->Find(name) != 0) return ErrnoStatus(EEXIST);
  if (auto it = table_.find(id); it != table_.end()) {
    Inode& inode = *it->second;
    if (inode.is_dir()) return ErrnoStatus(EINVAL);
    dir.dir->Add(name, id);
    ++inode.nlink;
    return absl::OkStatus();
  }
  const mode_t type = attr.mode() & S_IFMT;
  InodePtr inode = NewInode(id, attr.mode());
  {
    absl::MutexLock il(&inode->mu);
    inode->uid = attr.uid();
    inode->gid = attr.gid();
    inode->rdev = (type == S_IFCHR || type == S_IFBLK) ? attr.rdev() : 0;
    inode->size = (type == S_IFREG || type == S_IFLNK) ? attr.size() : 0;
    inode->atime = FromNanos(attr.atime_ns());
    inode->mtime = FromNanos(attr.mtime_ns());
    inode->ctime = FromNanos(attr.ctime_ns());
    inode->linked = true;
    for (const pb::XattrEntry& x : entry.xattrs()) {
      if (!inode->xattrs) inode->xattrs = std::make_unique<XattrMap>();
      (*inode->xattrs)[x.name()] = x.value();
    }
    if (type == S_IFLNK) inode->size = entry.symlink_target().size();
    if (type == S_IFREG) inode->data.SetMirrorExtent(attr.size());
  }
  if (type == S_IFLNK) inode->symlink_target = entry.symlink_target();
  Inode& added = *inode;
  AddNewLocked(dir, name, std::move(inode));
  if (type == S_IFDIR) {
    // Until it is listed, its link count is the mirror's.
    added.unlisted = true;
    added.nlink = std::max<uint32_t>(2, attr.nlink());
  }
  next_ino_ = std::max<fuse_ino_t>(next_ino_, id + 1);
  return absl::OkStatus();
}

std::vector<pb::Binding> Tree::MirrorBindings(MutationLog* log) {
  using Key = std::pair<uint64_t, std::string>;
  absl::flat_hash_map<Key, uint64_t> names;
  std::vector<pb::Mutation> unacked;
  {
    absl::ReaderMutexLock l(&mu_);
    for (const auto& [ino, inode] : table_) {
      if (!inode->is_dir() || inode->nlink == 0) continue;
      for (auto it = inode->dir->After(0); it != inode->dir->end(); ++it) {
        names[Key(ino, it->second.name)] = it->second.ino;
      }
    }
    unacked = log->UnackedNamespaceOps();
  }
  // Undo, newest first, what the mirror has not applied yet.
  for (auto m = unacked.rbegin(); m != unacked.rend(); ++m) {
    switch (m->op_case()) {
      case pb::Mutation::kCreate:
        names.erase(Key(m->create().parent(), m->create().name()));
        break;
      case pb::Mutation::kLink:
        names.erase(Key(m->link().new_parent(), m->link().new_name()));
        break;
      case pb::Mutation::kRemove:
        names[Key(m->remove().parent(), m->remove().name())] = m->remove().id();
        break;
      case pb::Mutation::kRename: {
        const pb::Rename& r = m->rename();
        const Key from(r.parent(), r.name());
        const Key to(r.new_parent(), r.new_name());
        names.erase(to);
        names[from] = r.id();
        if (r.replaced_id() != 0) names[to] = r.replaced_id();
        break;
      }
      default:
        break;
    }
  }
  // Parents before children: breadth first from the root.
  absl::flat_hash_map<uint64_t, std::vector<const Key*>> by_parent;
  for (const auto& [key, id] : names) by_parent[key.first].push_back(&key);
  std::vector<pb::Binding> out;
  out.reserve(names.size());
  std::vector<uint64_t> frontier = {FUSE_ROOT_ID};
  absl::flat_hash_map<uint64_t, bool> visited;
  while (!frontier.empty()) {
    std::vector<uint64_t> next;
    for (uint64_t dir : frontier) {
      auto it = by_parent.find(dir);
      if (it == by_parent.end()) continue;
      for (const Key* key : it->second) {
        const uint64_t id = names[*key];
        pb::Binding& b = out.emplace_back();
        b.set_id(id);
        b.set_parent(dir);
        b.set_name(key->second);
        if (by_parent.contains(id) && !visited[id]) {
          visited[id] = true;
          next.push_back(id);
        }
      }
    }
    frontier = std::move(next);
  }
  return out;
}

}  // namespace memfuse::fsd
