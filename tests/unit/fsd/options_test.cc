#include "fsd/options.h"

#include <cstdint>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace memfuse::fsd {
namespace {

ParseResult Parse(std::vector<std::string> args) {
  args.insert(args.begin(), "mem-fuse");
  std::vector<const char*> argv;
  for (const std::string& a : args) argv.push_back(a.c_str());
  return ParseOptions(static_cast<int>(argv.size()), argv.data());
}

TEST(OptionsTest, DefaultsAreConsistent) {
  ParseResult r = Parse({"/tmp"});
  ASSERT_TRUE(r.options.has_value()) << r.message;
  EXPECT_EQ(r.options->cache_size_mb, 512u);
  EXPECT_EQ(r.options->block_size_kb, 1024u);
  EXPECT_LE(r.options->cache_max_write_size_mb, r.options->cache_size_mb);
  EXPECT_TRUE(r.options->lazy_load);
  EXPECT_FALSE(r.options->has_mirror());
}

TEST(OptionsTest, MirrorSpellings) {
  ParseResult r = Parse({"/tmp", "--mirror", "/srv/m"});
  ASSERT_TRUE(r.options.has_value()) << r.message;
  EXPECT_EQ(r.options->mirror_spec, "/srv/m");
  r = Parse({"/tmp", "--mirror", "file:///srv/m"});
  ASSERT_TRUE(r.options.has_value()) << r.message;
  EXPECT_EQ(r.options->mirror_spec, "/srv/m");
  r = Parse({"/tmp", "--mirror", "rel/m"});
  ASSERT_TRUE(r.options.has_value()) << r.message;
  EXPECT_EQ(r.options->mirror_spec.front(), '/');
  EXPECT_TRUE(r.options->mirror_spec.ends_with("/rel/m"));
  r = Parse({"/tmp", "--mirror", "http://127.0.0.1:8080", "--root", "4"});
  ASSERT_TRUE(r.options.has_value()) << r.message;
  EXPECT_EQ(r.options->mirror_spec, "http://127.0.0.1:8080");
  EXPECT_TRUE(r.options->http_mirror);
  EXPECT_EQ(r.options->root_node, 4u);
  r = Parse({"/tmp", "--mirror-socket", "/run/m.sock"});
  ASSERT_TRUE(r.options.has_value()) << r.message;
  EXPECT_EQ(r.options->mirror_socket, "/run/m.sock");
  EXPECT_TRUE(r.options->has_mirror());
}

TEST(OptionsTest, ParsesRustToolSpelling) {
  ParseResult r = Parse({"/tmp", "--cache-size", "64", "--cache-max-write-size",
                         "32", "--block-size", "16", "-o", "ro,noatime",
                         "--lazy-load", "false"});
  ASSERT_TRUE(r.options.has_value()) << r.message;
  EXPECT_EQ(r.options->cache_bytes(), 64u << 20);
  EXPECT_EQ(r.options->cache_max_write_size_mb, 32u);
  EXPECT_EQ(r.options->block_bytes(), 16u << 10);
  EXPECT_FALSE(r.options->lazy_load);
  EXPECT_EQ(r.options->fuse_options,
            (std::vector<std::string>{"ro", "noatime"}));
}

struct BadCase {
  std::vector<std::string> args;
  std::string names;  // what the one-line message must mention
};

TEST(OptionsTest, BadInputExitsTwoWithOneLineNamingTheProblem) {
  const BadCase cases[] = {
      {{"/tmp", "--no-such-flag"}, "--no-such-flag"},
      {{"/tmp", "--cache-size", "lots"}, "--cache-size"},
      {{"/tmp", "--cache-size", "0"}, "--cache-size"},
      {{"/nonexistent/mnt"}, "/nonexistent/mnt"},
      {{"/etc/passwd"}, "not a directory"},
      {{"/tmp", "--block-size", "0"}, "--block-size"},
      {{"/tmp", "--block-size", "12"}, "--block-size"},
      {{"/tmp", "--block-size", "2"}, "--block-size"},
      {{"/tmp", "--cache-size", "64", "--cache-max-write-size", "65"},
       "--cache-max-write-size"},
      {{"/tmp", "--lazy-load", "maybe"}, "--lazy-load"},
      {{"/tmp", "--mirror", "ftp://x/y"}, "--mirror"},
      {{"/tmp", "--mirror", "file://rel"}, "--mirror"},
      {{"/tmp", "--mirror", "https://127.0.0.1:1"}, "https"},
      {{"/tmp", "--mirror", "http://"}, "http://host:port"},
      {{"/tmp", "--mirror", "http://h:1", "--root", "0"}, "--root"},
      {{"/tmp", "--mirror", "/a", "--mirror-socket", "/b"}, "--mirror-socket"},
      {{"/tmp", "--root", "3"}, "--root"},
      {{}, "MOUNTPOINT"},
  };
  for (const BadCase& c : cases) {
    ParseResult r = Parse(c.args);
    EXPECT_FALSE(r.options.has_value()) << c.names;
    EXPECT_EQ(r.exit_code, 2) << c.names;
    EXPECT_NE(r.message.find(c.names), std::string::npos)
        << "message \"" << r.message << "\" does not name " << c.names;
    EXPECT_EQ(r.message.find('\n'), std::string::npos) << r.message;
  }
}

// CLI11 alone reads numbers with strtoull: "-5" would wrap to a cache of
// 2^64 - 5 MB and an overflow would saturate. Every numeric flag refuses
// what is not a plain decimal number within its meaningful range.
TEST(OptionsTest, NumericFlagsRefuseNegativeOverflowingAndMeaninglessValues) {
  // Flag, its meaningless values, and what must precede it on the line.
  struct Flag {
    std::string name;
    std::vector<std::string> meaningless;
    std::vector<std::string> before;
  };
  const Flag flags[] = {
      // 2^44 MB is 2^64 bytes.
      {"--cache-size", {"0", "17592186044416"}, {}},
      {"--cache-max-write-size", {"0", "17592186044416"}, {}},
      {"--block-size", {"0", "2", "131072"}, {}},
      {"--root", {"0"}, {"--mirror", "http://127.0.0.1:1"}},
  };
  const std::vector<std::string> never = {
      "-5", "-0", "99999999999999999999", "18446744073709551616", "12abc",
      "abc", "", " 5", "+5", "0x10", "1e3", "1.5"};
  for (const Flag& flag : flags) {
    std::vector<std::string> values = never;
    values.insert(values.end(), flag.meaningless.begin(),
                  flag.meaningless.end());
    for (const std::string& value : values) {
      std::vector<std::string> args = {"/tmp"};
      args.insert(args.end(), flag.before.begin(), flag.before.end());
      args.push_back(flag.name);
      args.push_back(value);
      ParseResult r = Parse(args);
      const std::string what = flag.name + " \"" + value + "\"";
      EXPECT_FALSE(r.options.has_value()) << what;
      EXPECT_EQ(r.exit_code, 2) << what;
      EXPECT_NE(r.message.find(flag.name), std::string::npos)
          << what << ": " << r.message;
      EXPECT_EQ(r.message.find('\n'), std::string::npos) << r.message;
    }
  }
}

TEST(OptionsTest, NumericFlagsAreDecimalAtTheirLimits) {
  // A leading zero is not octal.
  ParseResult r = Parse({"/tmp", "--cache-size", "010", "--block-size",
                         "0064"});
  ASSERT_TRUE(r.options.has_value()) << r.message;
  EXPECT_EQ(r.options->cache_size_mb, 10u);
  EXPECT_EQ(r.options->block_size_kb, 64u);
  // The largest cache whose bytes fit in 64 bits.
  r = Parse({"/tmp", "--cache-size", "17592186044415", "--block-size",
             "65536"});
  ASSERT_TRUE(r.options.has_value()) << r.message;
  EXPECT_EQ(r.options->cache_bytes(), UINT64_MAX - ((1u << 20) - 1));
  EXPECT_EQ(r.options->block_bytes(), uint64_t{64} << 20);
  r = Parse({"/tmp", "--mirror", "http://127.0.0.1:1", "--root",
             "18446744073709551615"});
  ASSERT_TRUE(r.options.has_value()) << r.message;
  EXPECT_EQ(r.options->root_node, UINT64_MAX);
}

TEST(OptionsTest, HelpAndVersionExitZero) {
  ParseResult help = Parse({"--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.message.find("--cache-size"), std::string::npos);
  ParseResult version = Parse({"--version"});
  EXPECT_EQ(version.exit_code, 0);
  EXPECT_NE(version.message.find("mem-fuse"), std::string::npos);
}

}  // namespace
}  // namespace memfuse::fsd
