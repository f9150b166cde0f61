// The drain at exit against a real MutationLog: nothing to wait for, a
// wait that ends when the mirror acknowledges, a wait cut short (what was
// not mirrored is said), and the progress line with what the mirror is
// stuck on.
#include "fsd/drain.h"

#include <sys/stat.h>

#include <atomic>
#include <cstdio>
#include <string>
#include <thread>

#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace memfuse::fsd {
namespace {

pb::Mutation Create(uint64_t id) {
  pb::Mutation m;
  m.mutable_create()->set_parent(1);
  m.mutable_create()->set_name("f");
  m.mutable_create()->mutable_attr()->set_id(id);
  m.mutable_create()->mutable_attr()->set_mode(S_IFREG | 0644);
  return m;
}

// What DrainLog wrote, through a memory stream.
class Output {
 public:
  Output() : file_(open_memstream(&data_, &size_)) {}
  ~Output() {
    if (file_ != nullptr) fclose(file_);
    free(data_);
  }
  std::FILE* file() { return file_; }
  std::string text() {
    fflush(file_);
    return std::string(data_, size_);
  }

 private:
  char* data_ = nullptr;
  size_t size_ = 0;
  std::FILE* file_;
};

TEST(DrainLogTest, AnEmptyLogHasNothingToDrain) {
  MutationLog log(4096);
  Output out;
  DrainOptions options;
  options.out = out.file();
  EXPECT_TRUE(DrainLog(&log, options));
  EXPECT_TRUE(absl::StrContains(out.text(), "nothing to drain")) << out.text();
}

TEST(DrainLogTest, ACutShortDrainSaysWhatWasNotMirrored) {
  MutationLog log(4096);
  log.Append(Create(7));
  std::atomic<bool> abort{true};
  Output out;
  DrainOptions options;
  options.abort = &abort;
  options.out = out.file();
  EXPECT_FALSE(DrainLog(&log, options));
  EXPECT_TRUE(absl::StrContains(out.text(), "1 changes were NOT mirrored"))
      << out.text();
}

TEST(DrainLogTest, ASlowDrainReportsProgressAndWhatItIsStuckOn) {
  MutationLog log(4096);
  log.Append(Create(7));
  std::atomic<bool> abort{false};
  std::string reported;
  Output out;
  DrainOptions options;
  options.abort = &abort;
  options.out = out.file();
  options.stuck_on = [] { return std::string("create f (EIO)"); };
  options.report = [&](std::string_view line) { reported = line; };
  // The mirror acknowledges after three seconds: one line a second, the
  // ones after two seconds naming what it is stuck on.
  std::thread mirror([&] {
    absl::SleepFor(absl::Seconds(3.2));
    std::optional<MutationLog::ToSend> sent =
        log.TakeNext(absl::ZeroDuration());
    ASSERT_TRUE(sent.has_value());
    pb::Ack ack;
    ack.set_seq(sent->seq);
    log.Acked(ack);
  });
  EXPECT_TRUE(DrainLog(&log, options));
  mirror.join();
  const std::string text = out.text();
  EXPECT_TRUE(absl::StrContains(text, "draining to the mirror")) << text;
  EXPECT_TRUE(absl::StrContains(text, "stuck on create f (EIO)")) << text;
  EXPECT_TRUE(absl::StrContains(reported, "1 changes left")) << reported;
  EXPECT_TRUE(absl::StrContains(text, "drained")) << text;
}

}  // namespace
}  // namespace memfuse::fsd
