// Numeric command-line flags of both daemons.
//
// CLI11 2.1 converts numbers with strtoull: "-5" wraps to 2^64 - 5,
// 99999999999999999999 saturates to 2^64 - 1, and "010" is octal 8. A flag
// given such a value would start a daemon with a meaning nobody typed, so
// every numeric flag goes through WholeNumber() first: plain decimal digits
// within the flag's meaningful range, or a one-line refusal that CLI11
// reports as "--flag: <why>" (main() then exits with code 2).
//
// Thread-safe (no shared state).
#ifndef MEMFUSE_COMMON_NUMERIC_FLAG_H_
#define MEMFUSE_COMMON_NUMERIC_FLAG_H_

#include <cstdint>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace memfuse::common {

// `text` as a decimal number in [min, max]: digits only (no sign, no
// space, no 0x), leading zeros meaning nothing. INVALID_ARGUMENT with a
// message that quotes `text` and gives the range otherwise.
absl::StatusOr<uint64_t> ParseWholeNumber(absl::string_view text, uint64_t min,
                                          uint64_t max);

// A CLI11 transform for an option (or each value of a repeated one) whose
// values must satisfy ParseWholeNumber(min, max). It rewrites an accepted
// value in plain decimal, so that CLI11's own conversion reads the number
// that was checked. Use as `app.add_option(...)->transform(WholeNumber(..))`.
CLI::Validator WholeNumber(uint64_t min, uint64_t max);

}  // namespace memfuse::common

#endif  // MEMFUSE_COMMON_NUMERIC_FLAG_H_
