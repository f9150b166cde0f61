// Status helpers shared by both daemons.
//
// Internals return absl::Status; errno lives only at the edges. An errno is
// kept as a payload so that codes absl folds together (ENOTDIR, EISDIR and
// ENOTEMPTY are all FAILED_PRECONDITION) survive the trip to the FUSE reply.
// All functions here are thread-safe (they touch no shared state).
#ifndef MEMFUSE_COMMON_STATUS_H_
#define MEMFUSE_COMMON_STATUS_H_

#include "absl/strings/string_view.h"

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace memfuse::common {

// Returns a non-OK status carrying `err` (an errno value, > 0).
absl::Status ErrnoStatus(int err, absl::string_view message = {});

// Returns the errno a status stands for: its payload if it has one, else a
// best guess from its code. 0 for OK.
int StatusToErrno(const absl::Status& status);

}  // namespace memfuse::common

#define MEMFUSE_CONCAT_INNER_(a, b) a##b
#define MEMFUSE_CONCAT_(a, b) MEMFUSE_CONCAT_INNER_(a, b)

// Returns from the enclosing function if `expr` (an absl::Status) is not OK.
#define RETURN_IF_ERROR(expr)                          \
  do {                                                 \
    if (absl::Status _st = (expr); !_st.ok()) {        \
      return _st;                                      \
    }                                                  \
  } while (0)

// `ASSIGN_OR_RETURN(auto x, StatusOrExpr())`: binds the value or returns the
// error status from the enclosing function.
#define ASSIGN_OR_RETURN(lhs, expr)                                      \
  ASSIGN_OR_RETURN_IMPL_(MEMFUSE_CONCAT_(_status_or_, __LINE__), lhs, expr)
#define ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                           \
  if (!tmp.ok()) return tmp.status();          \
  lhs = std::move(tmp).value()

#endif  // MEMFUSE_COMMON_STATUS_H_
