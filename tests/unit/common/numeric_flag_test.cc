#include "common/numeric_flag.h"

#include <cstdint>
#include <string>

#include "gtest/gtest.h"

namespace memfuse::common {
namespace {

TEST(NumericFlagTest, TakesPlainDecimalWithinTheRange) {
  EXPECT_EQ(*ParseWholeNumber("1", 1, 10), 1u);
  EXPECT_EQ(*ParseWholeNumber("10", 1, 10), 10u);
  EXPECT_EQ(*ParseWholeNumber("010", 1, 10), 10u);  // not octal
  EXPECT_EQ(*ParseWholeNumber("18446744073709551615", 0, UINT64_MAX),
            UINT64_MAX);
}

TEST(NumericFlagTest, RefusesWhatStrtoullWouldBend) {
  for (const char* text :
       {"", "-5", "-0", "+5", " 5", "5 ", "12abc", "0x10", "1e3", "1.5",
        "18446744073709551616", "99999999999999999999"}) {
    absl::StatusOr<uint64_t> v = ParseWholeNumber(text, 0, UINT64_MAX);
    EXPECT_FALSE(v.ok()) << '"' << text << "\" gave " << *v;
    if (!v.ok()) {
      EXPECT_NE(v.status().message().find(text), absl::string_view::npos)
          << v.status();
    }
  }
  EXPECT_FALSE(ParseWholeNumber("0", 1, 10).ok());
  EXPECT_FALSE(ParseWholeNumber("11", 1, 10).ok());
}

// Through CLI11: the checked value is the one stored, and a refusal names
// the flag.
TEST(NumericFlagTest, AsACli11Transform) {
  CLI::App app;
  uint64_t value = 0;
  app.add_option("--size", value)->transform(WholeNumber(1, 100));
  const char* ok[] = {"app", "--size", "010"};
  app.parse(3, ok);
  EXPECT_EQ(value, 10u);
  const char* bad[] = {"app", "--size", "-5"};
  try {
    app.parse(3, bad);
    ADD_FAILURE() << "-5 was taken as " << value;
  } catch (const CLI::ParseError& e) {
    EXPECT_NE(std::string(e.what()).find("--size"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace memfuse::common
