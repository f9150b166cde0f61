// Compares two directory trees entry by entry and describes every difference
// in words, e.g. "sub/f: size 10 vs 12" or "x: only in a". The end-to-end
// tests use it to check that a mirror equals its mount; anything may use it
// on native directories.
//
// Symlinks are never followed: every entry is lstat'ed and a symlink's
// target is compared as text. Regular files are compared byte for byte,
// streamed in 1 MiB chunks, so trees of a few hundred MB are fine.
//
// Thread-compatible: no shared state. The trees must not change while they
// are compared (a change shows up as a difference, never as a crash).
#ifndef MEMFUSE_TESTS_TESTING_TREE_COMPARE_H_
#define MEMFUSE_TESTS_TESTING_TREE_COMPARE_H_

#include <cstddef>
#include <string>
#include <vector>

namespace memfuse::testing {

struct TreeCompareOptions {
  // Permission bits (mode & 07777). The file type is always compared.
  bool compare_mode = true;
  // st_uid and st_gid.
  bool compare_owner = true;
  // st_mtim of regular files and of FIFOs, sockets and devices.
  bool compare_file_mtime = true;
  // st_mtim of symlinks (set with utimensat(AT_SYMLINK_NOFOLLOW)).
  bool compare_symlink_mtime = false;
  // st_mtim of directories, the root included. Only meaningful where the
  // directories were not modified after their times were copied.
  bool compare_dir_mtime = false;
  // user.* extended attributes, names and values. Other namespaces
  // (security.*, trusted.*, system.*) are never compared.
  bool compare_xattrs = true;
  // user.* names starting with one of these prefixes are ignored (mirrord
  // keeps its own state in user.memfuse.* on the mirror root).
  std::vector<std::string> ignored_xattr_prefixes = {"user.memfuse."};
  // Two names are the same inode in a iff they are the same inode in b.
  bool compare_hard_links = true;
  // Whether the two roots' own attributes (mode, owner, xattrs, mtime when
  // compare_dir_mtime) are compared, not just their contents.
  bool compare_root = true;
  // Stops after this many differences (0: no limit), so that two unrelated
  // trees do not produce a million lines.
  size_t max_differences = 1000;
};

// Walks `a` and `b` and returns every difference, empty when the trees are
// equal. Each line starts with the path it concerns, relative to the roots
// (the roots themselves are "."); lines come in walk order (names sorted at
// each level), hard-link differences last. A failing syscall (say, a file
// vanished) is reported as a difference naming it, never thrown.
std::vector<std::string> CompareTrees(const std::string& a,
                                      const std::string& b,
                                      const TreeCompareOptions& options = {});

// "3 differences:\n  x: only in a\n  ..." with at most `limit` lines and a
// final "... and N more"; "no differences" when `differences` is empty.
// Meant for a test's failure message.
std::string FormatDifferences(const std::vector<std::string>& differences,
                              size_t limit = 20);

}  // namespace memfuse::testing

#endif  // MEMFUSE_TESTS_TESTING_TREE_COMPARE_H_
