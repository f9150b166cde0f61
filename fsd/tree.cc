// The Tree's inode table and namespace: lookup, create, link, attributes,
// unlink, rmdir, rename, readdir. Its files' data, xattrs and what it
// loads from and binds to the mirror are in tree_file.cc, tree_xattr.cc
// and tree_load.cc.
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

Tree::Tree(uint64_t block_size, BlockBudget* budget, Caller root_owner)
    : block_size_(block_size), budget_(budget), fetcher_(block_size, budget) {
  InodePtr root = NewInode(FUSE_ROOT_ID, S_IFDIR | 0755);
  root->nlink = 2;
  root->parent = FUSE_ROOT_ID;
  root->dir = std::make_unique<Directory>();
  root->nlookup = 1;  // the kernel holds the root without looking it up
  {
    absl::MutexLock l(&root->mu);
    root->uid = root_owner.uid;
    root->gid = root_owner.gid;
    root->atime = root->mtime = root->ctime = Now();
    root->linked = true;
  }
  absl::MutexLock l(&mu_);
  table_.emplace(FUSE_ROOT_ID, std::move(root));
}

Tree::InodePtr Tree::NewInode(fuse_ino_t ino, mode_t mode) {
  auto inode = std::make_shared<Inode>(ino, mode, budget_,
                                       log_ != nullptr ? fetcher_.cache() : nullptr);
  {
    absl::MutexLock il(&inode->mu);
    inode->data.SetOwner(inode);
  }
  return inode;
}

Tree::InodePtr Tree::Find(fuse_ino_t ino) {
  absl::ReaderMutexLock l(&mu_);
  auto it = table_.find(ino);
  CHECK(it != table_.end()) << "unknown inode " << ino;
  return it->second;
}

Inode& Tree::GetLocked(fuse_ino_t ino) {
  auto it = table_.find(ino);
  CHECK(it != table_.end()) << "unknown inode " << ino;
  return *it->second;
}

absl::StatusOr<Inode*> Tree::GetDirLocked(fuse_ino_t ino) {
  Inode& inode = GetLocked(ino);
  if (!inode.is_dir()) return ErrnoStatus(ENOTDIR);
  if (inode.nlink == 0) return ErrnoStatus(ENOENT);
  return &inode;
}

void Tree::FillStatLocked(const Inode& inode, struct stat* st) {
  *st = {};
  st->st_ino = inode.ino;
  st->st_mode = inode.mode;
  st->st_nlink = inode.nlink;
  st->st_uid = inode.uid;
  st->st_gid = inode.gid;
  st->st_rdev = inode.rdev;
  st->st_size = static_cast<off_t>(inode.size);
  st->st_blksize = 4096;
  st->st_blocks = static_cast<blkcnt_t>((inode.data.resident_bytes() + 511) / 512);
  st->st_atim = inode.atime;
  st->st_mtim = inode.mtime;
  st->st_ctim = inode.ctime;
}

struct stat Tree::StatForEntryLocked(Inode& inode) {
  struct stat st;
  {
    absl::ReaderMutexLock l(&inode.mu);
    FillStatLocked(inode, &st);
  }
  inode.nlookup.fetch_add(1, std::memory_order_relaxed);
  return st;
}

void Tree::TouchDirLocked(Inode& dir) {
  absl::MutexLock l(&dir.mu);
  dir.mtime = dir.ctime = Now();
}

void Tree::TouchCtimeLocked(Inode& inode) {
  absl::MutexLock l(&inode.mu);
  inode.ctime = Now();
}

void Tree::DropLinkLocked(Inode& inode, std::vector<InodePtr>* doomed) {
  CHECK_GT(inode.nlink, 0u) << "inode " << inode.ino;
  inode.nlink = inode.is_dir() ? 0 : inode.nlink - 1;
  {
    absl::MutexLock l(&inode.mu);
    inode.ctime = Now();
    if (inode.nlink == 0) inode.linked = false;
  }
  MaybeFreeLocked(inode, doomed);
}

void Tree::MaybeFreeLocked(Inode& inode, std::vector<InodePtr>* doomed) {
  if (inode.nlink != 0 || inode.nlookup.load() != 0) return;
  auto it = table_.find(inode.ino);
  CHECK(it != table_.end());
  doomed->push_back(std::move(it->second));
  table_.erase(it);
}

void Tree::AddNewLocked(Inode& dir, std::string_view name, InodePtr inode) {
  if (inode->is_dir()) {
    inode->dir = std::make_unique<Directory>();
    inode->parent = dir.ino;
    inode->nlink = 2;
    ++dir.nlink;
  } else {
    inode->nlink = 1;
  }
  dir.dir->Add(name, inode->ino);
  const fuse_ino_t ino = inode->ino;
  table_.emplace(ino, std::move(inode));
}

bool Tree::IsWithinLocked(fuse_ino_t ino, fuse_ino_t ancestor) {
  while (true) {
    if (ino == ancestor) return true;
    if (ino == FUSE_ROOT_ID) return false;
    ino = GetLocked(ino).parent;
  }
}

absl::StatusOr<struct stat> Tree::Lookup(fuse_ino_t parent,
                                         std::string_view name) {
  RETURN_IF_ERROR(ValidateName(name, name_max()));
  RETURN_IF_ERROR(EnsureListed(parent));
  absl::ReaderMutexLock l(&mu_);
  ASSIGN_OR_RETURN(Inode * dir, GetDirLocked(parent));
  fuse_ino_t ino = dir->dir->Find(name);
  if (ino == 0) return ErrnoStatus(ENOENT);
  return StatForEntryLocked(GetLocked(ino));
}

absl::StatusOr<struct stat> Tree::MakeNode(fuse_ino_t parent,
                                           std::string_view name, mode_t mode,
                                           dev_t rdev,
                                           std::string_view symlink_target,
                                           const Caller& caller) {
  RETURN_IF_ERROR(ValidateName(name, name_max()));
  const mode_t type = mode & S_IFMT;
  switch (type) {
    case S_IFREG: case S_IFDIR: case S_IFLNK: case S_IFIFO: case S_IFSOCK:
    case S_IFCHR: case S_IFBLK:
      break;
    default:
      return ErrnoStatus(EINVAL);
  }
  RETURN_IF_ERROR(EnsureListed(parent));
  absl::MutexLock l(&mu_);
  ASSIGN_OR_RETURN(Inode * dir, GetDirLocked(parent));
  if (dir->dir->Find(name) != 0) return ErrnoStatus(EEXIST);

  InodePtr inode = NewInode(next_ino_++, mode);
  gid_t gid = caller.gid;
  mode_t perm = mode & 07777;
  {
    absl::ReaderMutexLock dl(&dir->mu);
    if (dir->mode & S_ISGID) {  // BSD group semantics, as Linux does
      gid = dir->gid;
      if (type == S_IFDIR) perm |= S_ISGID;
    }
  }
  const timespec now = Now();
  {
    absl::MutexLock il(&inode->mu);
    inode->mode = type | (type == S_IFLNK ? 0777 : perm);
    inode->uid = caller.uid;
    inode->gid = gid;
    inode->rdev = (type == S_IFCHR || type == S_IFBLK) ? rdev : 0;
    inode->atime = inode->mtime = inode->ctime = now;
    if (type == S_IFLNK) inode->size = symlink_target.size();
    inode->linked = true;
    if (type == S_IFLNK) inode->symlink_target = symlink_target;
    recorder_.Created(parent, name, *inode);
  }
  Inode& created = *inode;
  AddNewLocked(*dir, name, std::move(inode));
  TouchDirLocked(*dir);
  return StatForEntryLocked(created);
}

absl::StatusOr<struct stat> Tree::Link(fuse_ino_t ino, fuse_ino_t new_parent,
                                       std::string_view new_name) {
  RETURN_IF_ERROR(ValidateName(new_name, name_max()));
  RETURN_IF_ERROR(EnsureListed(new_parent));
  absl::MutexLock l(&mu_);
  Inode& inode = GetLocked(ino);
  if (inode.is_dir()) return ErrnoStatus(EPERM);
  ASSIGN_OR_RETURN(Inode * dir, GetDirLocked(new_parent));
  if (dir->dir->Find(new_name) != 0) return ErrnoStatus(EEXIST);
  if (inode.nlink == 0) return ErrnoStatus(ENOENT);  // as Linux, for O_TMPFILE
  dir->dir->Add(new_name, ino);
  ++inode.nlink;
  TouchCtimeLocked(inode);
  TouchDirLocked(*dir);
  recorder_.Linked(ino, new_parent, new_name);
  return StatForEntryLocked(inode);
}

void Tree::Forget(fuse_ino_t ino, uint64_t count) {
  std::vector<InodePtr> doomed;
  absl::MutexLock l(&mu_);
  Inode& inode = GetLocked(ino);
  const uint64_t had = inode.nlookup.load();
  CHECK_GE(had, count) << "lookup count of inode " << ino << " below zero";
  inode.nlookup.store(had - count);
  MaybeFreeLocked(inode, &doomed);
}

absl::StatusOr<struct stat> Tree::GetAttr(fuse_ino_t ino) {
  absl::ReaderMutexLock l(&mu_);
  Inode& inode = GetLocked(ino);
  absl::ReaderMutexLock il(&inode.mu);
  struct stat st;
  FillStatLocked(inode, &st);
  return st;
}

absl::StatusOr<struct stat> Tree::SetAttr(fuse_ino_t ino,
                                          const struct stat& attr,
                                          int to_set) {
  absl::ReaderMutexLock l(&mu_);
  Inode& inode = GetLocked(ino);
  absl::MutexLock il(&inode.mu);
  if (to_set & FUSE_SET_ATTR_SIZE) {
    if (inode.is_dir()) return ErrnoStatus(EISDIR);
    if (!inode.is_reg()) return ErrnoStatus(EINVAL);
    const uint64_t size = static_cast<uint64_t>(attr.st_size);
    if (size < inode.size) inode.data.Truncate(block_size_, size);
    inode.size = size;
  }
  if (to_set & FUSE_SET_ATTR_MODE) {
    inode.mode = inode.type | (attr.st_mode & 07777);
  }
  if (to_set & FUSE_SET_ATTR_UID) inode.uid = attr.st_uid;
  if (to_set & FUSE_SET_ATTR_GID) inode.gid = attr.st_gid;
  const timespec now = Now();
  if (to_set & FUSE_SET_ATTR_ATIME_NOW) {
    inode.atime = now;
  } else if (to_set & FUSE_SET_ATTR_ATIME) {
    inode.atime = attr.st_atim;
  }
  if (to_set & FUSE_SET_ATTR_MTIME_NOW) {
    inode.mtime = now;
  } else if (to_set & FUSE_SET_ATTR_MTIME) {
    inode.mtime = attr.st_mtim;
  } else if (to_set & FUSE_SET_ATTR_SIZE) {
    inode.mtime = now;  // truncate(2) changes mtime
  }
  if (to_set & FUSE_SET_ATTR_CTIME) {
    inode.ctime = attr.st_ctim;
  } else {
    inode.ctime = now;
  }
  uint32_t mask = to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID |
                            FUSE_SET_ATTR_GID | FUSE_SET_ATTR_SIZE);
  if (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_ATIME_NOW)) {
    mask |= FUSE_SET_ATTR_ATIME;
  }
  if (to_set & (FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_MTIME_NOW |
                FUSE_SET_ATTR_SIZE)) {
    mask |= FUSE_SET_ATTR_MTIME;
  }
  recorder_.AttrsChanged(inode, mask);
  struct stat st;
  FillStatLocked(inode, &st);
  return st;
}

absl::StatusOr<std::string> Tree::ReadLink(fuse_ino_t ino) {
  InodePtr inode = Find(ino);
  if (inode->type != S_IFLNK) return ErrnoStatus(EINVAL);
  return inode->symlink_target;
}

absl::Status Tree::Unlink(fuse_ino_t parent, std::string_view name) {
  RETURN_IF_ERROR(ValidateName(name, name_max()));
  RETURN_IF_ERROR(EnsureListed(parent));
  VictimPin pin;
  std::vector<InodePtr> doomed;
  while (true) {
    InodePtr fetch;
    {
      absl::MutexLock l(&mu_);
      ASSIGN_OR_RETURN(Inode * dir, GetDirLocked(parent));
      const fuse_ino_t ino = dir->dir->Find(name);
      if (ino == 0) return ErrnoStatus(ENOENT);
      Inode& inode = GetLocked(ino);
      if (inode.is_dir()) return ErrnoStatus(EISDIR);
      if (MustFetchBeforeLastNameLocked(inode, pin)) {
        fetch = table_.at(ino);
      } else {
        dir->dir->Remove(name);
        TouchDirLocked(*dir);
        DropLinkLocked(inode, &doomed);
        recorder_.Removed(parent, name, ino, /*directory=*/false,
                  inode.nlink == 0 ? ino : 0);
        return absl::OkStatus();
      }
    }
    FetchBeforeLastName(fetch, &pin);
  }
}

absl::Status Tree::Rmdir(fuse_ino_t parent, std::string_view name) {
  RETURN_IF_ERROR(ValidateName(name, name_max()));
  RETURN_IF_ERROR(EnsureListed(parent));
  std::vector<InodePtr> doomed;
  // The directory's emptiness is only known once it is listed; a name
  // replaced meanwhile by another unlisted directory is listed in turn.
  while (true) {
    RETURN_IF_ERROR(ListBeforeRemoval(parent, name));
    absl::MutexLock l(&mu_);
    ASSIGN_OR_RETURN(Inode * dir, GetDirLocked(parent));
    const fuse_ino_t ino = dir->dir->Find(name);
    if (ino == 0) return ErrnoStatus(ENOENT);
    Inode& inode = GetLocked(ino);
    if (!inode.is_dir()) return ErrnoStatus(ENOTDIR);
    if (inode.unlisted) continue;
    return RmdirLocked(*dir, parent, name, inode, &doomed);
  }
}

absl::Status Tree::RmdirLocked(Inode& dir_inode, fuse_ino_t parent,
                               std::string_view name, Inode& inode,
                               std::vector<InodePtr>* doomed_out) {
  Inode* dir = &dir_inode;
  const fuse_ino_t ino = inode.ino;
  if (!inode.dir->empty()) return ErrnoStatus(ENOTEMPTY);
  dir->dir->Remove(name);
  --dir->nlink;
  TouchDirLocked(*dir);
  DropLinkLocked(inode, doomed_out);
  recorder_.Removed(parent, name, ino, /*directory=*/true, ino);
  return absl::OkStatus();
}

absl::Status Tree::Rename(fuse_ino_t parent, std::string_view name,
                          fuse_ino_t new_parent, std::string_view new_name,
                          unsigned int flags) {
  if (flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE)) {
    return ErrnoStatus(EINVAL);
  }
  if ((flags & RENAME_NOREPLACE) && (flags & RENAME_EXCHANGE)) {
    return ErrnoStatus(EINVAL);
  }
  RETURN_IF_ERROR(ValidateName(name, name_max()));
  RETURN_IF_ERROR(ValidateName(new_name, name_max()));
  RETURN_IF_ERROR(EnsureListed(parent));
  RETURN_IF_ERROR(EnsureListed(new_parent));
  VictimPin pin;
  std::vector<InodePtr> doomed;
  while (true) {
    if (!(flags & RENAME_EXCHANGE)) {
      RETURN_IF_ERROR(ListBeforeRemoval(new_parent, new_name));
    }
    InodePtr fetch;
    {
      absl::MutexLock l(&mu_);
      ASSIGN_OR_RETURN(Inode * old_dir, GetDirLocked(parent));
      ASSIGN_OR_RETURN(Inode * new_dir, GetDirLocked(new_parent));
      const fuse_ino_t ino = old_dir->dir->Find(name);
      const fuse_ino_t target_ino = new_dir->dir->Find(new_name);
      if (target_ino != 0 && !(flags & RENAME_EXCHANGE) &&
          GetLocked(target_ino).unlisted) {
        continue;  // a directory replaced must be empty: list it first
      }
      // The file replaced loses its name (RenameLocked checks the rest;
      // a rename that then fails fetched for nothing, and unpins).
      if (ino != 0 && target_ino != 0 && target_ino != ino &&
          !(flags & (RENAME_EXCHANGE | RENAME_NOREPLACE)) &&
          MustFetchBeforeLastNameLocked(GetLocked(target_ino), pin)) {
        fetch = table_.at(target_ino);
      } else {
        return RenameLocked(*old_dir, parent, name, *new_dir, new_parent,
                            new_name, flags, &doomed);
      }
    }
    FetchBeforeLastName(fetch, &pin);
  }
}

absl::Status Tree::RenameLocked(Inode& old_dir_inode, fuse_ino_t parent,
                                std::string_view name, Inode& new_dir_inode,
                                fuse_ino_t new_parent,
                                std::string_view new_name, unsigned int flags,
                                std::vector<InodePtr>* doomed_out) {
  Inode* old_dir = &old_dir_inode;
  Inode* new_dir = &new_dir_inode;
  std::vector<InodePtr>& doomed = *doomed_out;
  const fuse_ino_t ino = old_dir->dir->Find(name);
  if (ino == 0) return ErrnoStatus(ENOENT);
  Inode& inode = GetLocked(ino);
  const fuse_ino_t target_ino = new_dir->dir->Find(new_name);

  auto log_rename = [&](uint64_t replaced, uint64_t gone = 0) {
    recorder_.Renamed({parent, name, new_parent, new_name, flags, ino,
                       replaced},
                      gone);
  };

  if (flags & RENAME_EXCHANGE) {
    if (target_ino == 0) return ErrnoStatus(ENOENT);
    if (target_ino == ino) return absl::OkStatus();
    RETURN_IF_ERROR(ExchangeLocked(*old_dir, name, *new_dir, new_name));
    log_rename(target_ino);
    return absl::OkStatus();
  }
  if (target_ino == ino) return absl::OkStatus();  // same file: no-op
  if (target_ino != 0 && (flags & RENAME_NOREPLACE)) {
    return ErrnoStatus(EEXIST);
  }
  if (inode.is_dir() && IsWithinLocked(new_parent, ino)) {
    return ErrnoStatus(EINVAL);
  }
  uint64_t gone = 0;  // the replaced object, if that was its last name
  if (target_ino != 0) {
    Inode& target = GetLocked(target_ino);
    if (inode.is_dir() && !target.is_dir()) return ErrnoStatus(ENOTDIR);
    if (!inode.is_dir() && target.is_dir()) return ErrnoStatus(EISDIR);
    if (target.is_dir()) {
      if (!target.dir->empty()) return ErrnoStatus(ENOTEMPTY);
      --new_dir->nlink;  // the replaced directory's ".."
    }
    new_dir->dir->Replace(new_name, ino);
    DropLinkLocked(target, &doomed);
    if (target.nlink == 0) gone = target_ino;
  } else {
    new_dir->dir->Add(new_name, ino);
  }
  old_dir->dir->Remove(name);
  if (inode.is_dir() && old_dir != new_dir) {
    --old_dir->nlink;
    ++new_dir->nlink;
    inode.parent = new_parent;
  }
  TouchCtimeLocked(inode);
  TouchDirLocked(*old_dir);
  if (new_dir != old_dir) TouchDirLocked(*new_dir);
  log_rename(target_ino, gone);
  return absl::OkStatus();
}

absl::Status Tree::ExchangeLocked(Inode& old_dir, std::string_view name,
                                  Inode& new_dir, std::string_view new_name) {
  Inode& a = GetLocked(old_dir.dir->Find(name));
  Inode& b = GetLocked(new_dir.dir->Find(new_name));
  if (&old_dir != &new_dir) {
    if (a.is_dir() && IsWithinLocked(new_dir.ino, a.ino)) {
      return ErrnoStatus(EINVAL);
    }
    if (b.is_dir() && IsWithinLocked(old_dir.ino, b.ino)) {
      return ErrnoStatus(EINVAL);
    }
  }
  old_dir.dir->Replace(name, b.ino);
  new_dir.dir->Replace(new_name, a.ino);
  if (&old_dir != &new_dir) {
    if (a.is_dir()) {
      --old_dir.nlink;
      ++new_dir.nlink;
      a.parent = new_dir.ino;
    }
    if (b.is_dir()) {
      --new_dir.nlink;
      ++old_dir.nlink;
      b.parent = old_dir.ino;
    }
    TouchDirLocked(new_dir);
  }
  TouchDirLocked(old_dir);
  TouchCtimeLocked(a);
  TouchCtimeLocked(b);
  return absl::OkStatus();
}

absl::Status Tree::ReadDir(fuse_ino_t ino, uint64_t cookie, bool plus,
                           DirFiller fill) {
  RETURN_IF_ERROR(EnsureListed(ino));
  absl::ReaderMutexLock l(&mu_);
  Inode& dir = GetLocked(ino);
  if (!dir.is_dir()) return ErrnoStatus(ENOTDIR);
  struct stat st;
  if (cookie < 1) {
    absl::ReaderMutexLock il(&dir.mu);
    FillStatLocked(dir, &st);
    if (!fill(".", st, 1, true)) return absl::OkStatus();
  }
  if (cookie < 2) {
    // A removed directory's parent may be gone too; ".." is then itself.
    auto it = table_.find(dir.parent);
    Inode& parent = it != table_.end() ? *it->second : dir;
    absl::ReaderMutexLock il(&parent.mu);
    FillStatLocked(parent, &st);
    if (!fill("..", st, 2, true)) return absl::OkStatus();
  }
  if (dir.nlink == 0) return absl::OkStatus();  // removed: only the dots
  for (auto it = dir.dir->After(std::max<uint64_t>(cookie, 2));
       it != dir.dir->end(); ++it) {
    Inode& child = GetLocked(it->second.ino);
    {
      absl::ReaderMutexLock il(&child.mu);
      if (plus) {
        FillStatLocked(child, &st);
      } else {
        st = {};
        st.st_ino = child.ino;
        st.st_mode = child.type;
      }
    }
    if (!fill(it->second.name, st, it->first, false)) break;
    if (plus) child.nlookup.fetch_add(1, std::memory_order_relaxed);
  }
  return absl::OkStatus();
}

}  // namespace memfuse::fsd
