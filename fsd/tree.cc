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

namespace memfuse::fsd {
namespace {

using common::ErrnoStatus;

int64_t Nanos(const timespec& ts) {
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

timespec FromNanos(int64_t ns) {
  timespec ts;
  ts.tv_sec = ns / 1000000000;
  ts.tv_nsec = ns % 1000000000;
  if (ts.tv_nsec < 0) {
    ts.tv_nsec += 1000000000;
    --ts.tv_sec;
  }
  return ts;
}

// Only user xattrs reach the mirror; trusted.* and security.* stay here.
bool IsMirroredXattr(std::string_view name) {
  return name.substr(0, 5) == "user.";
}

// The mirror agent keeps its own state in these; they are never shown.
constexpr std::string_view kReservedXattrPrefix = "user.memfuse.";

timespec Now() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return ts;
}

absl::Status ValidateName(std::string_view name,
                          size_t name_max = Tree::kMaxNameLength) {
  if (name.empty()) return ErrnoStatus(ENOENT);
  if (name.size() > name_max) return ErrnoStatus(ENAMETOOLONG);
  return absl::OkStatus();
}

// The xattr namespaces stored; others (system.*, ACLs) are not ours to keep.
absl::Status ValidateXattrName(std::string_view name) {
  for (std::string_view prefix : {"user.", "trusted.", "security."}) {
    if (name.size() > prefix.size() && name.substr(0, prefix.size()) == prefix) {
      return absl::OkStatus();
    }
  }
  return ErrnoStatus(EOPNOTSUPP);
}

}  // namespace

Tree::Tree(uint64_t block_size, BlockBudget* budget, Caller root_owner)
    : block_size_(block_size), budget_(budget) {
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
                                       log_ != nullptr ? &cache_ : nullptr);
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

void Tree::LogRemove(fuse_ino_t parent, std::string_view name, fuse_ino_t ino,
                     bool directory, uint64_t gone) {
  if (log_ == nullptr) return;
  pb::Mutation m;
  pb::Remove* remove = m.mutable_remove();
  remove->set_parent(parent);
  remove->set_name(name.data(), name.size());
  remove->set_id(ino);
  remove->set_directory(directory);
  log_->Append(std::move(m), gone);
}

void Tree::LogSetAttrLocked(Inode& inode, uint32_t mask) {
  if (log_ == nullptr || !inode.linked || mask == 0) return;
  pb::Mutation m;
  pb::SetAttr* set = m.mutable_set_attr();
  set->set_mask(mask);
  FillAttr(inode, set->mutable_attr());
  log_->Append(std::move(m));
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
    if (log_ != nullptr) {
      pb::Mutation m;
      pb::Create* create = m.mutable_create();
      create->set_parent(parent);
      create->set_name(name.data(), name.size());
      FillAttr(*inode, create->mutable_attr());
      create->mutable_attr()->set_size(0);
      if (type == S_IFLNK) {
        create->set_symlink_target(symlink_target.data(),
                                   symlink_target.size());
      }
      log_->Append(std::move(m));
    }
  }
  if (type == S_IFLNK) inode->symlink_target = symlink_target;
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
  if (log_ != nullptr) {
    pb::Mutation m;
    pb::Link* link = m.mutable_link();
    link->set_id(ino);
    link->set_new_parent(new_parent);
    link->set_new_name(new_name.data(), new_name.size());
    log_->Append(std::move(m));
  }
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
  LogSetAttrLocked(inode, mask);
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
        LogRemove(parent, name, ino, /*directory=*/false,
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
    RETURN_IF_ERROR(PrepareVictim(parent, name));
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
  LogRemove(parent, name, ino, /*directory=*/true, ino);
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
      RETURN_IF_ERROR(PrepareVictim(new_parent, new_name));
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
    if (log_ == nullptr) return;
    pb::Mutation m;
    pb::Rename* rename = m.mutable_rename();
    rename->set_parent(parent);
    rename->set_name(name.data(), name.size());
    rename->set_new_parent(new_parent);
    rename->set_new_name(new_name.data(), new_name.size());
    rename->set_flags(flags);
    rename->set_id(ino);
    rename->set_replaced_id(replaced);
    log_->Append(std::move(m), gone);
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

bool Tree::KillSuidGid(fuse_ino_t ino) {
  InodePtr inode = Find(ino);
  absl::MutexLock il(&inode->mu);
  mode_t mode = inode->mode & ~S_ISUID;
  if (mode & S_IXGRP) mode &= ~S_ISGID;
  if (mode == inode->mode) return false;
  inode->mode = mode;
  inode->ctime = Now();
  LogSetAttrLocked(*inode, FUSE_SET_ATTR_MODE);
  return true;
}

absl::Status Tree::Open(fuse_ino_t ino, int flags) {
  if (!(flags & O_TRUNC)) return absl::OkStatus();
  InodePtr inode = Find(ino);
  if (!inode->is_reg()) return absl::OkStatus();
  absl::MutexLock il(&inode->mu);
  inode->data.Truncate(block_size_, 0);
  inode->size = 0;
  inode->mtime = inode->ctime = Now();
  LogSetAttrLocked(*inode, FUSE_SET_ATTR_SIZE | FUSE_SET_ATTR_MTIME);
  return absl::OkStatus();
}

absl::Status Tree::Opened(fuse_ino_t ino) {
  // Under the tree lock: see MustFetchBeforeLastNameLocked.
  absl::ReaderMutexLock l(&mu_);
  Inode& inode = GetLocked(ino);
  if (reader_ != nullptr && inode.is_reg() && inode.nlink == 0 &&
      inode.open_count.load() == 0) {
    // Nobody had it open when its last name went, so nothing was fetched:
    // what is not in memory is gone with the name.
    std::vector<FileData::Missing> missing;
    absl::ReaderMutexLock il(&inode.mu);
    inode.data.FindMissing(block_size_, 0, inode.size, /*edges_only=*/false,
                           &missing);
    if (!missing.empty()) return ErrnoStatus(ENOENT);
  }
  inode.open_count.fetch_add(1);
  return absl::OkStatus();
}

void Tree::Released(fuse_ino_t ino) { Find(ino)->open_count.fetch_sub(1); }

absl::StatusOr<size_t> Tree::Read(fuse_ino_t ino, uint64_t offset, size_t size,
                                  char* out) {
  InodePtr inode = Find(ino);
  if (inode->is_dir()) return ErrnoStatus(EISDIR);
  std::vector<FileData::Missing> missing;
  size_t n = 0;
  // Blocks not in memory are fetched with no lock held, then the read is
  // tried again (they may have gone again meanwhile, rarely).
  for (int attempt = 0;; ++attempt) {
    {
      absl::ReaderMutexLock il(&inode->mu);
      if (offset >= inode->size) return 0;
      n = static_cast<size_t>(std::min<uint64_t>(size, inode->size - offset));
      missing.clear();
      if (reader_ != nullptr) {
        inode->data.FindMissing(block_size_, offset, n, /*edges_only=*/false,
                                &missing);
      }
      if (missing.empty()) {
        inode->data.Read(block_size_, offset, n, out);
        break;
      }
    }
    if (attempt == 0) Readahead(inode, offset, n);
    RETURN_IF_ERROR(Fetch(inode, missing, Room::kWaitForRead));
  }
  if (reader_ != nullptr) Readahead(inode, offset, n);
  return n;
}

absl::StatusOr<size_t> Tree::Write(fuse_ino_t ino, uint64_t offset,
                                   const char* data, size_t size,
                                   bool kernel_times) {
  InodePtr inode = Find(ino);
  if (inode->is_dir()) return ErrnoStatus(EISDIR);
  if (offset + size < offset || offset + size > uint64_t{INT64_MAX}) {
    return ErrnoStatus(EFBIG);
  }
  // At the dirty limit, wait for the mirror here, before taking the
  // inode's lock: the sender needs it to send what frees the room. Room in
  // the cache is made here too, by evicting other blocks.
  const MutationLog::DirtyRoom room =
      log_ != nullptr ? log_->ReserveDirty(log_->DirtyCharge(offset, size))
                      : MutationLog::DirtyRoom();
  BudgetRoom cache_room;
  if (reader_ != nullptr && size > 0) {
    ASSIGN_OR_RETURN(cache_room,
                     ReserveCache(log_->DirtyCharge(offset, size),
                                  Room::kWaitForWrite));
  }
  std::vector<FileData::Missing> missing;
  while (true) {
    if (reader_ != nullptr) {
      // A block written only in part keeps the rest of its bytes: those
      // in the mirror are fetched first.
      missing.clear();
      {
        absl::ReaderMutexLock il(&inode->mu);
        inode->data.FindMissing(block_size_, offset, size,
                                /*edges_only=*/true, &missing);
      }
      if (!missing.empty()) {
        RETURN_IF_ERROR(Fetch(inode, missing, Room::kWaitForWrite));
      }
    }
    absl::MutexLock il(&inode->mu);
    if (reader_ != nullptr) {
      missing.clear();
      inode->data.FindMissing(block_size_, offset, size, /*edges_only=*/true,
                              &missing);
      if (!missing.empty()) continue;  // evicted again meanwhile
    }
    RETURN_IF_ERROR(
        inode->data.Write(block_size_, offset, data, size, &cache_room));
    inode->size = std::max<uint64_t>(inode->size, offset + size);
    if (!kernel_times) inode->mtime = inode->ctime = Now();
    if (log_ != nullptr && inode->linked) {
      log_->AppendWrite(inode, offset, size);
    }
    return size;
  }
}

absl::Status Tree::Fallocate(fuse_ino_t ino, int mode, uint64_t offset,
                             uint64_t length) {
  InodePtr inode = Find(ino);
  if (!inode->is_reg()) return ErrnoStatus(inode->is_dir() ? EISDIR : ENODEV);
  if (offset + length < offset || offset + length > uint64_t{INT64_MAX}) {
    return ErrnoStatus(EFBIG);
  }
  if (mode == (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE) &&
      reader_ != nullptr) {
    // The blocks punched in part keep the rest of their bytes.
    std::vector<FileData::Missing> missing;
    {
      absl::ReaderMutexLock il(&inode->mu);
      inode->data.FindMissing(block_size_, offset,
                              std::min(length, inode->size > offset
                                                   ? inode->size - offset
                                                   : 0),
                              /*edges_only=*/true, &missing);
    }
    RETURN_IF_ERROR(Fetch(inode, missing, Room::kWaitForWrite));
  }
  absl::MutexLock il(&inode->mu);
  const uint64_t end = offset + length;
  if (mode == (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)) {
    const uint64_t stop = std::min(end, inode->size);
    inode->mtime = inode->ctime = Now();
    if (offset < stop) {
      inode->data.PunchHole(block_size_, offset, stop - offset);
      // Sent as a punch, not as data: it dirties nothing (the mirror's
      // bytes around the hole are already fsd's, or on their way in
      // earlier slots), and a local mirror gets a hole, not zeros. The
      // log orders it like a size change: it closes the file's open
      // slots (a later write is not widened into a slot sent before it)
      // and keeps the file's blocks from eviction until it is applied.
      if (log_ != nullptr && inode->linked) {
        pb::Mutation m;
        pb::PunchHole* punch = m.mutable_punch_hole();
        punch->set_id(ino);
        punch->set_offset(offset);
        punch->set_length(stop - offset);
        log_->Append(std::move(m));
        // Punching set the mirror file's mtime to its own now.
        LogSetAttrLocked(*inode, FUSE_SET_ATTR_MTIME);
      }
    }
    return absl::OkStatus();
  }
  if (mode != 0 && mode != FALLOC_FL_KEEP_SIZE) return ErrnoStatus(EOPNOTSUPP);
  // Without a mirror the cache is the space, and fallocate reserves it.
  // With one the space is the mirror's: blocks reserved here would only
  // fill the cache (and past it, ENOSPC for a file dd could write), so the
  // range stays holes, charged to nothing, until written.
  if (log_ == nullptr) {
    RETURN_IF_ERROR(inode->data.Allocate(block_size_, offset, length));
  }
  if (mode == 0 && end > inode->size) {
    inode->size = end;
    inode->mtime = inode->ctime = Now();
    LogSetAttrLocked(*inode, FUSE_SET_ATTR_SIZE | FUSE_SET_ATTR_MTIME);
  }
  return absl::OkStatus();
}

absl::StatusOr<size_t> Tree::CopyFileRange(fuse_ino_t in, uint64_t in_offset,
                                           fuse_ino_t out, uint64_t out_offset,
                                           size_t length) {
  // Through a bounded buffer, one inode lock at a time: copying within one
  // file, or between two files in opposite directions at once, cannot
  // deadlock.
  constexpr size_t kChunk = 1 << 20;
  std::unique_ptr<char[]> buffer(new char[std::min(length, kChunk)]);
  size_t copied = 0;
  while (copied < length) {
    const size_t want = std::min(length - copied, kChunk);
    ASSIGN_OR_RETURN(size_t got,
                     Read(in, in_offset + copied, want, buffer.get()));
    if (got == 0) break;
    absl::StatusOr<size_t> wrote =
        Write(out, out_offset + copied, buffer.get(), got);
    if (!wrote.ok()) {
      if (copied > 0) break;  // report what was copied
      return wrote.status();
    }
    copied += got;
    if (got < want) break;
  }
  return copied;
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

absl::Status Tree::CheckXattrRoom(const Inode& inode, std::string_view name,
                                  size_t value_size) {
  std::vector<uint64_t> regions;
  {
    absl::MutexLock l(&limits_mu_);
    if (limits_.xattrs_refused_errno() != 0) {
      return ErrnoStatus(limits_.xattrs_refused_errno());
    }
    if (limits_.xattr_regions().empty()) return absl::OkStatus();
    regions.assign(limits_.xattr_regions().begin(),
                   limits_.xattr_regions().end());
  }
  // The object's attributes as the mirror would hold them afterwards: a
  // replaced value where it was, a new attribute last.
  std::vector<uint64_t> costs;
  bool replaced = false;
  if (inode.xattrs) {
    for (const auto& [have, value] : *inode.xattrs) {
      if (!IsMirroredXattr(have)) continue;
      if (have == name) {
        costs.push_back(common::XattrCost(have.size(), value_size));
        replaced = true;
      } else {
        costs.push_back(common::XattrCost(have.size(), value.size()));
      }
    }
  }
  if (!replaced) costs.push_back(common::XattrCost(name.size(), value_size));
  if (common::XattrsFit(regions, costs)) return absl::OkStatus();
  int err;
  {
    absl::MutexLock l(&limits_mu_);
    err = limits_.xattr_full_errno() != 0 ? limits_.xattr_full_errno() : ENOSPC;
  }
  return ErrnoStatus(err);
}

absl::Status Tree::SetXattr(fuse_ino_t ino, std::string_view name,
                            std::string_view value, int flags) {
  RETURN_IF_ERROR(ValidateXattrName(name));
  if (log_ != nullptr && name.substr(0, kReservedXattrPrefix.size()) ==
                             kReservedXattrPrefix) {
    return ErrnoStatus(EPERM);  // the mirror agent's own
  }
  InodePtr inode = Find(ino);
  absl::MutexLock il(&inode->mu);
  if (!inode->xattrs) {
    if (flags & XATTR_REPLACE) return ErrnoStatus(ENODATA);
    inode->xattrs = std::make_unique<XattrMap>();
  }
  auto it = inode->xattrs->find(name);
  if (log_ != nullptr && IsMirroredXattr(name)) {
    RETURN_IF_ERROR(CheckXattrRoom(*inode, name, value.size()));
  }
  if (it == inode->xattrs->end()) {
    if (flags & XATTR_REPLACE) return ErrnoStatus(ENODATA);
    inode->xattrs->emplace(std::string(name), std::string(value));
  } else {
    if (flags & XATTR_CREATE) return ErrnoStatus(EEXIST);
    it->second.assign(value);
  }
  inode->ctime = Now();
  if (log_ != nullptr && inode->linked && IsMirroredXattr(name)) {
    pb::Mutation m;
    m.mutable_set_xattr()->set_id(ino);
    m.mutable_set_xattr()->set_name(name.data(), name.size());
    m.mutable_set_xattr()->set_value(value.data(), value.size());
    log_->Append(std::move(m));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> Tree::GetXattr(fuse_ino_t ino,
                                           std::string_view name) {
  InodePtr inode = Find(ino);
  absl::ReaderMutexLock il(&inode->mu);
  if (!inode->xattrs) return ErrnoStatus(ENODATA);
  auto it = inode->xattrs->find(name);
  if (it == inode->xattrs->end()) return ErrnoStatus(ENODATA);
  return it->second;
}

absl::StatusOr<std::string> Tree::ListXattr(fuse_ino_t ino) {
  InodePtr inode = Find(ino);
  absl::ReaderMutexLock il(&inode->mu);
  std::string names;
  if (inode->xattrs) {
    for (const auto& [name, value] : *inode->xattrs) {
      names.append(name);
      names.push_back('\0');
    }
  }
  return names;
}

absl::Status Tree::RemoveXattr(fuse_ino_t ino, std::string_view name) {
  InodePtr inode = Find(ino);
  absl::MutexLock il(&inode->mu);
  if (!inode->xattrs) return ErrnoStatus(ENODATA);
  auto it = inode->xattrs->find(name);
  if (it == inode->xattrs->end()) return ErrnoStatus(ENODATA);
  inode->xattrs->erase(it);
  if (inode->xattrs->empty()) inode->xattrs.reset();
  inode->ctime = Now();
  if (log_ != nullptr && inode->linked && IsMirroredXattr(name)) {
    pb::Mutation m;
    m.mutable_remove_xattr()->set_id(ino);
    m.mutable_remove_xattr()->set_name(name.data(), name.size());
    log_->Append(std::move(m));
  }
  return absl::OkStatus();
}

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

uint64_t Tree::FillWrite(Inode& inode, uint64_t offset, uint64_t length,
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
    inode.data.Read(block_size_, offset, count, out);
  }
  write->set_atime_ns(Nanos(inode.atime));
  write->set_mtime_ns(Nanos(inode.mtime));
  return count;
}

}  // namespace memfuse::fsd
