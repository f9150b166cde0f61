#include "common/numeric_flag.h"

#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace memfuse::common {

absl::StatusOr<uint64_t> ParseWholeNumber(absl::string_view text, uint64_t min,
                                          uint64_t max) {
  const auto refuse = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", text, "\" ", why, "; expected a whole number from ",
                     min, " to ", max));
  };
  if (text.empty()) return refuse("is empty");
  if (text.front() == '-') return refuse("is negative");
  for (const char c : text) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) {
      return refuse("is not a number");
    }
  }
  uint64_t value = 0;
  // Digits only, so SimpleAtoi fails only on overflow.
  if (!absl::SimpleAtoi(text, &value)) return refuse("is too large");
  if (value < min) return refuse("is too small");
  if (value > max) return refuse("is too large");
  return value;
}

CLI::Validator WholeNumber(uint64_t min, uint64_t max) {
  // An empty description: the option's help says what the number means.
  return CLI::Validator(
      [min, max](std::string& text) -> std::string {
        absl::StatusOr<uint64_t> value = ParseWholeNumber(text, min, max);
        if (!value.ok()) return std::string(value.status().message());
        text = absl::StrCat(*value);
        return std::string();
      },
      "");
}

}  // namespace memfuse::common
