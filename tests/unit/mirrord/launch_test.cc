#include "mirrord/launch.h"

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace memfuse::mirrord {
namespace {

ParseResult Parse(std::vector<std::string> args, bool activation = false) {
  args.insert(args.begin(), "mem-fuse-mirrord");
  std::vector<const char*> argv;
  for (const std::string& a : args) argv.push_back(a.c_str());
  return ParseOptions(static_cast<int>(argv.size()), argv.data(), activation);
}

void ExpectBadInput(const ParseResult& r, const std::string& mentions) {
  EXPECT_FALSE(r.options.has_value());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(absl::StrContains(r.message, mentions)) << r.message;
  EXPECT_FALSE(absl::StrContains(r.message, "\n")) << r.message;
}

TEST(LaunchTest, AcceptsEachWayIn) {
  ParseResult r = Parse({"--mirror", "/m", "--listen", "/run/s"});
  ASSERT_TRUE(r.options.has_value()) << r.message;
  EXPECT_EQ(r.options->mirror_path, "/m");
  EXPECT_EQ(r.options->listen_path, "/run/s");
  EXPECT_EQ(r.options->fd, -1);

  EXPECT_EQ(r.options->data_fd, -1);

  r = Parse({"--mirror", "file:///m/x", "--fd", "5", "--user", "nobody",
             "--allow-uid", "1000", "--allow-uid", "0", "--verbose",
             "--data-fd", "6"});
  ASSERT_TRUE(r.options.has_value()) << r.message;
  EXPECT_EQ(r.options->mirror_path, "/m/x");
  EXPECT_EQ(r.options->fd, 5);
  EXPECT_EQ(r.options->data_fd, 6);
  EXPECT_EQ(r.options->user, "nobody");
  EXPECT_EQ(r.options->allow_uids, (std::vector<uid_t>{1000, 0}));
  EXPECT_TRUE(r.options->verbose);

  r = Parse({"--mirror", "/m"}, /*activation=*/true);
  ASSERT_TRUE(r.options.has_value()) << r.message;
  EXPECT_TRUE(r.options->activation);
}

TEST(LaunchTest, AnHttpMirrorWithARootNode) {
  ParseResult r = Parse(
      {"--mirror", "http://127.0.0.1:8080", "--root", "7", "--listen", "/s"});
  ASSERT_TRUE(r.options.has_value()) << r.message;
  EXPECT_EQ(r.options->mirror_url, "http://127.0.0.1:8080");
  EXPECT_TRUE(r.options->mirror_path.empty());
  EXPECT_EQ(r.options->root_node, 7u);
}

TEST(LaunchTest, RejectsBadInputInOneLine) {
  ExpectBadInput(Parse({"--listen", "/s"}), "--mirror");
  ExpectBadInput(Parse({"--mirror", "ftp://x", "--listen", "/s"}), "--mirror");
  ExpectBadInput(Parse({"--mirror", "relative", "--listen", "/s"}), "--mirror");
  ExpectBadInput(Parse({"--mirror", "file://host/x", "--listen", "/s"}),
                 "--mirror");
  ExpectBadInput(Parse({"--mirror", "https://h:8080", "--listen", "/s"}),
                 "https");
  ExpectBadInput(Parse({"--mirror", "http://", "--listen", "/s"}),
                 "http://host:port");
  ExpectBadInput(Parse({"--mirror", "http://h:1", "--root", "0", "--listen",
                        "/s"}),
                 "--root");
  ExpectBadInput(Parse({"--mirror", "/m", "--root", "5", "--listen", "/s"}),
                 "--root needs an http");
  ExpectBadInput(Parse({"--mirror", "/m"}), "exactly one");
  ExpectBadInput(Parse({"--mirror", "/m", "--listen", "/s", "--fd", "3"}),
                 "exactly one");
  ExpectBadInput(Parse({"--mirror", "/m", "--listen", "/s"}, true),
                 "exactly one");
  ExpectBadInput(Parse({"--mirror", "/m", "--fd", "x"}), "--fd");
  ExpectBadInput(Parse({"--mirror", "/m", "--fd", "-1"}), "--fd");
  ExpectBadInput(Parse({"--mirror", "/m", "--listen", "rel"}), "--listen");
  ExpectBadInput(Parse({"--mirror", "/m", "--fd", "3", "--data-fd", "-2"}),
                 "--data-fd");
  ExpectBadInput(Parse({"--mirror", "/m", "--fd", "3", "--data-fd", "3"}),
                 "--data-fd");
  ExpectBadInput(Parse({"--mirror", "/m", "--fd", "3", "--allow-uid", "x"}),
                 "--allow-uid");
  ExpectBadInput(Parse({"--mirror", "/m", "--fd", "3", "--bogus"}), "bogus");
}

// CLI11 alone reads numbers with strtoull/strtoll: "--allow-uid -1" would
// allow uid 4294967295 and "--root -5" a node near 2^64. Every numeric flag
// refuses what is not a plain decimal number within its meaningful range.
TEST(LaunchTest, NumericFlagsRefuseNegativeOverflowingAndMeaninglessValues) {
  struct Flag {
    std::string name;
    std::vector<std::string> meaningless;
    std::vector<std::string> rest;  // the other flags of the line
  };
  const Flag flags[] = {
      {"--fd", {"2147483648"}, {"--mirror", "/m"}},
      {"--data-fd", {"2147483648"}, {"--mirror", "/m", "--fd", "3"}},
      // 4294967295 is (uid_t)-1, which chown and setresuid read as "none".
      {"--allow-uid",
       {"4294967295", "4294967296"},
       {"--mirror", "/m", "--fd", "3"}},
      {"--root", {"0"}, {"--mirror", "http://h:1", "--fd", "3"}},
  };
  const std::vector<std::string> never = {
      "-1", "-5", "99999999999999999999", "18446744073709551616", "12abc",
      "abc", "", " 5", "+5", "0x10", "1.5"};
  for (const Flag& flag : flags) {
    std::vector<std::string> values = never;
    values.insert(values.end(), flag.meaningless.begin(),
                  flag.meaningless.end());
    for (const std::string& value : values) {
      std::vector<std::string> args = flag.rest;
      args.push_back(flag.name);
      args.push_back(value);
      SCOPED_TRACE(flag.name + " \"" + value + "\"");
      ExpectBadInput(Parse(args), flag.name);
    }
  }
}

TEST(LaunchTest, NumericFlagsAreDecimalAtTheirLimits) {
  // A leading zero is not octal.
  ParseResult r = Parse({"--mirror", "/m", "--fd", "010", "--data-fd", "011",
                         "--allow-uid", "0", "4294967294", "0100"});
  ASSERT_TRUE(r.options.has_value()) << r.message;
  EXPECT_EQ(r.options->fd, 10);
  EXPECT_EQ(r.options->data_fd, 11);
  EXPECT_EQ(r.options->allow_uids,
            (std::vector<uid_t>{0, 4294967294u, 100}));
  r = Parse({"--mirror", "http://h:1", "--root", "18446744073709551615",
             "--fd", "2147483647"});
  ASSERT_TRUE(r.options.has_value()) << r.message;
  EXPECT_EQ(r.options->root_node, UINT64_MAX);
  EXPECT_EQ(r.options->fd, 2147483647);
}

TEST(LaunchTest, HelpAndVersionExitZero) {
  ParseResult r = Parse({"--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(r.message, "--listen"));
  r = Parse({"--version"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(r.message, "mem-fuse-mirrord"));
}

TEST(LaunchTest, LooksUpUsers) {
  absl::StatusOr<User> root = LookUpUser("root");
  ASSERT_TRUE(root.ok()) << root.status();
  EXPECT_EQ(root->uid, 0u);
  EXPECT_EQ(LookUpUser("no-such-user-here").status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace memfuse::mirrord
