#include <string>

#include "gtest/gtest.h"
#include "mirror.pb.h"

namespace memfuse::mirror::v1 {
namespace {

TEST(MirrorProtoTest, NamesAreArbitraryBytes) {
  // Linux names are byte strings: not UTF-8, and may hold any byte but '/'
  // and NUL. A proto3 `string` field would refuse this one.
  const std::string name("caf\xe9 \xff\x01%?#", 10);
  Mutation m;
  m.set_seq(42);
  Rename* rename = m.mutable_rename();
  rename->set_parent(1);
  rename->set_name(name);
  rename->set_new_parent(7);
  rename->set_new_name(name + "2");
  rename->set_id(9);

  std::string wire;
  ASSERT_TRUE(m.SerializeToString(&wire));
  Mutation back;
  ASSERT_TRUE(back.ParseFromString(wire));
  EXPECT_EQ(back.seq(), 42u);
  ASSERT_EQ(back.op_case(), Mutation::kRename);
  EXPECT_EQ(back.rename().name(), name);
  EXPECT_EQ(back.rename().new_name(), name + "2");
  EXPECT_EQ(back.rename().id(), 9u);
}

TEST(MirrorProtoTest, AWriteOfOneBlockStaysSmall) {
  // A write carries at most one block; its framing must not grow with it.
  Mutation m;
  m.set_seq(1);
  m.mutable_write()->set_id(5);
  m.mutable_write()->set_offset(uint64_t{1} << 40);
  m.mutable_write()->set_data(std::string(1 << 20, 'x'));
  EXPECT_LT(m.ByteSizeLong(), (1u << 20) + 32);
}

}  // namespace
}  // namespace memfuse::mirror::v1
