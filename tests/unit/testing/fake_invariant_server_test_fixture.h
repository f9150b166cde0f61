// What the tests of the fake Invariant files server share: a client that
// sends paths exactly as written, the options of a server that saves only
// when asked, and the fixture that starts one and talks HTTP to it.
#ifndef MEMFUSE_TESTS_UNIT_TESTING_FAKE_INVARIANT_SERVER_TEST_FIXTURE_H_
#define MEMFUSE_TESTS_UNIT_TESTING_FAKE_INVARIANT_SERVER_TEST_FIXTURE_H_

#include <httplib.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testing/fake_invariant_server.h"

namespace memfuse::testing::fake_invariant_test {

using Json = nlohmann::json;

// Every request goes out exactly as written: the tests choose the bytes of
// each path, percent signs included.
inline std::unique_ptr<httplib::Client> NewClient(int port) {
  auto client = std::make_unique<httplib::Client>("127.0.0.1", port);
  client->set_url_encode(false);
  client->set_tcp_nodelay(true);
  client->set_connection_timeout(std::chrono::seconds(2));
  client->set_read_timeout(std::chrono::seconds(5));
  return client;
}

// Saves only when asked: what is lost at a restart is then exactly what the
// test did not save.
inline FakeInvariantServer::Options SavingOnlyWhenAsked() {
  FakeInvariantServer::Options options;
  options.save_interval = absl::ZeroDuration();
  return options;
}

class FakeInvariantServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(server_.Start().ok());
    client_ = NewClient(server_.port());
  }

  httplib::Result Get(const std::string& path) { return client_->Get(path); }
  httplib::Result Post(const std::string& path, const std::string& body = "") {
    return client_->Post(path, body, "application/octet-stream");
  }
  httplib::Result Put(const std::string& path) {
    return client_->Put(path, "", "text/plain");
  }

  // The JSON of a 200 answer; a failure (and null) otherwise.
  Json Ok(const httplib::Result& result) {
    if (!result) {
      ADD_FAILURE() << "transport error " << result.error();
      return nullptr;
    }
    if (result->status != 200) {
      ADD_FAILURE() << "status " << result->status << ": " << result->body;
      return nullptr;
    }
    Json j = Json::parse(result->body, nullptr, false);
    if (j.is_discarded()) ADD_FAILURE() << "not JSON: " << result->body;
    return j;
  }

  // Creates `name` (as it goes in the path) in `parent`; its node id.
  uint64_t Create(uint64_t parent, const std::string& name,
                  const std::string& query = "kind=File") {
    Json info = Ok(Put(absl::StrCat("/files/", parent, "/", name, "?", query)));
    return info.is_object() ? info.value("node", uint64_t{0}) : 0;
  }

  Json Info(uint64_t node) {
    return Ok(Get(absl::StrCat("/files/info/", node)));
  }

  std::string Read(uint64_t node) {
    httplib::Result r = Get(absl::StrCat("/files/", node));
    EXPECT_TRUE(r && r->status == 200);
    return r ? r->body : "";
  }

  // Names listed in directory `node`.
  std::set<std::string> Names(uint64_t node) {
    std::set<std::string> names;
    Json listing = Ok(Get(absl::StrCat("/files/directory/", node)));
    if (!listing.is_array()) return names;
    for (const Json& e : listing) names.insert(e["name"].get<std::string>());
    return names;
  }

  void ExpectStatus(const httplib::Result& result, int status,
                    const std::string& body) {
    ASSERT_TRUE(result) << result.error();
    EXPECT_EQ(result->status, status);
    EXPECT_EQ(result->body, body);
  }

  FakeInvariantServer server_{SavingOnlyWhenAsked()};
  std::unique_ptr<httplib::Client> client_;
};

}  // namespace memfuse::testing::fake_invariant_test

#endif  // MEMFUSE_TESTS_UNIT_TESTING_FAKE_INVARIANT_SERVER_TEST_FIXTURE_H_
