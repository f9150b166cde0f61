// The HTTP backend's changes: create, write, punch hole, times, set
// attributes, link, remove, rename. Thread-safety as HttpBackend's
// (http_backend.h).
#include "mirrord/backend/http_backend.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <functional>
#include <optional>
#include <type_traits>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status.h"
#include "glog/logging.h"
#include "mirrord/backend/backend_common.h"
#include "nlohmann/json.hpp"
#include "mirrord/backend/http_api.h"

namespace memfuse::mirrord {

using common::ErrnoStatus;
using common::StatusToErrno;
using json = nlohmann::json;
using namespace http;  // NOLINT: the backend's own API mapping

// --- namespace, data and attribute changes ---

absl::Status HttpBackend::ApplyCreate(uint64_t /*seq*/, const pb::Create& op) {
  RETURN_IF_ERROR(CheckName(op.name()));
  const uint64_t id = op.attr().id();
  const mode_t mode = op.attr().mode();
  const char* kind = nullptr;
  switch (mode & S_IFMT) {
    case S_IFREG:
      kind = "File";
      break;
    case S_IFDIR:
      kind = "Directory";
      break;
    case S_IFLNK:
      kind = "SymbolicLink";
      break;
    default:
      break;  // FIFOs, sockets, devices: fsd only
  }
  {
    absl::MutexLock l(&mu_);
    if (id <= kRootId) return Invalid(absl::StrCat("id ", id));
    if (!ids_.Contains(op.parent())) {
      return Missing(absl::StrCat("parent ", op.parent(), " is not known here"));
    }
    if (ids_.Contains(id) && !ids_.HasLink(id, op.parent(), op.name())) {
      if (!op.repair()) {
        return Invalid(
            absl::StrCat("id ", id, " already names another object"));
      }
      // A repair: the id lives where fsd says now.
      ForgetIdLocked(id);
    }
    if (kind == nullptr) {
      RETURN_IF_ERROR(ids_.AddLink(id, op.parent(), op.name()));
      local_only_.insert(id);
      return absl::OkStatus();
    }
  }
  return WithNodes([&]() -> absl::Status {
    ASSIGN_OR_RETURN(uint64_t parent, NodeOf(op.parent()));
    // The server would replace what is there: only a replay of this very
    // create may find the name taken, by the same kind of object.
    ASSIGN_OR_RETURN(std::optional<json> existing, Lookup(parent, op.name()));
    uint64_t node = 0;
    if (existing.has_value()) {
      if (existing->value("kind", "") != kind) {
        return Conflict(EEXIST, absl::StrCat(Quoted(op.name()),
                                             " exists on the server as a ",
                                             existing->value("kind", "?")));
      }
      node = existing->value("node", uint64_t{0});
    } else {
      std::string path =
          absl::StrCat(NamePath("", parent, op.name()), "?kind=", kind);
      if (S_ISLNK(mode)) {
        absl::StrAppend(&path,
                        "&target=", EncodeQueryValue(op.symlink_target()));
      }
      ASSIGN_OR_RETURN(json info, SendJson(Method::kPut, path));
      node = info.value("node", uint64_t{0});
    }
    if (S_ISREG(mode) && (mode & 0111) != 0) {
      RETURN_IF_ERROR(SetAttributes(node, json{{"executable", true}}));
    }
    absl::MutexLock l(&mu_);
    RETURN_IF_ERROR(ids_.AddLink(id, op.parent(), op.name()));
    node_of_[id] = node;
    id_of_node_[node] = id;
    // Not made read-only on the server now: fsd writes the data next.
    if (S_ISREG(mode) && (mode & 0200) == 0) read_only_.insert(id);
    return absl::OkStatus();
  });
}

absl::Status HttpBackend::ApplyWrite(const pb::Write& op) {
  ASSIGN_OR_RETURN(absl::string_view bytes, WriteBytes(op));
  // Its size and range were checked by BackendBase::Apply.
  const std::string_view data(bytes.data(), bytes.size());
  RETURN_IF_ERROR(WithNodes([&]() -> absl::Status {
    ASSIGN_OR_RETURN(uint64_t node, NodeOf(op.id()));
    if (data.empty()) return absl::OkStatus();
    return WhileWritable(op.id(), node, [&]() -> absl::Status {
      return Send(Method::kPost,
                  absl::StrCat("files/", node, "?offset=", op.offset()), data)
          .status();
    });
  }));
  absl::MutexLock l(&mu_);
  if (op.mtime_ns() != 0) {
    pending_times_[op.id()] = op.mtime_ns();
    last_write_ = absl::Now();
  }
  if (!data.empty()) {
    // Merged with the ranges it touches or adjoins.
    std::map<uint64_t, uint64_t>& ranges = unsaved_writes_[op.id()];
    uint64_t lo = op.offset();
    uint64_t hi = op.offset() + data.size();
    auto it = ranges.upper_bound(lo);
    if (it != ranges.begin() && std::prev(it)->second >= lo) --it;
    while (it != ranges.end() && it->first <= hi) {
      lo = std::min(lo, it->first);
      hi = std::max(hi, it->second);
      it = ranges.erase(it);
    }
    ranges[lo] = hi;
  }
  return absl::OkStatus();
}

absl::Status HttpBackend::ApplyPunchHole(const pb::PunchHole& op) {
  // Its range was checked by BackendBase::Apply.
  uint64_t block_size;
  {
    absl::MutexLock l(&mu_);
    block_size = block_size_ != 0 ? block_size_ : uint64_t{1} << 20;
  }
  // The API can neither punch a hole nor write zeros without sending them:
  // the range is written as zeros, one block per POST as writes go (fsd
  // keeps the range within the file, so the size does not change).
  const std::string zeros(std::min(op.length(), block_size), '\0');
  const uint64_t end = op.offset() + op.length();
  return WithNodes([&]() -> absl::Status {
    ASSIGN_OR_RETURN(uint64_t node, NodeOf(op.id()));
    if (op.length() == 0) return absl::OkStatus();
    return WhileWritable(op.id(), node, [&]() -> absl::Status {
      for (uint64_t at = op.offset(); at < end;) {
        // Aligned to blocks, as the writes of a sequential writer are.
        const uint64_t n = std::min(end, (at / block_size + 1) * block_size) - at;
        RETURN_IF_ERROR(Send(Method::kPost,
                             absl::StrCat("files/", node, "?offset=", at),
                             std::string_view(zeros.data(), n))
                            .status());
        at += n;
      }
      return absl::OkStatus();
    });
  });
}

absl::Status HttpBackend::FlushTimes(uint64_t only_id) {
  std::vector<std::pair<uint64_t, int64_t>> due;
  {
    absl::MutexLock l(&mu_);
    // One flush at a time: an mtime the times thread is sending must land
    // before whatever Apply does next to the same file (an explicit utimens
    // would otherwise be overwritten by the older time).
    auto idle = [this]()
                    ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !flushing_; };
    mu_.Await(absl::Condition(&idle));
    flushing_ = true;
    for (auto it = pending_times_.begin(); it != pending_times_.end();) {
      if (only_id != 0 && it->first == only_id) {
        ++it;
        continue;
      }
      due.push_back(*it);
      pending_times_.erase(it++);
    }
  }
  absl::Status first;
  for (const auto& [due_id, due_mtime_ns] : due) {
    // Named copies: clang's lambdas may not capture structured bindings.
    const uint64_t id = due_id;
    const int64_t mtime_ns = due_mtime_ns;
    absl::Status s = WithNodes([&]() -> absl::Status {
      absl::StatusOr<uint64_t> node = NodeOf(id);
      // Gone from the server since (removed, or fsd-only): nothing to set.
      if (!node.ok() && StatusToErrno(node.status()) == ENOENT &&
          !IsStaleNode(node.status())) {
        return absl::OkStatus();
      }
      if (!node.ok()) return node.status();
      return SetAttributes(*node, json{{"modifyTime", NsToMs(mtime_ns)}});
    });
    if (!s.ok()) {
      absl::MutexLock l(&mu_);
      pending_times_.try_emplace(id, mtime_ns);  // tried again later
      if (first.ok()) first = s;
    }
  }
  absl::MutexLock l(&mu_);
  flushing_ = false;
  return first;
}

void HttpBackend::TimesLoop() {
  while (true) {
    {
      absl::MutexLock l(&mu_);
      auto due = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || (!pending_times_.empty() &&
                             absl::Now() - last_write_ >= kTimesDelay);
      };
      mu_.AwaitWithTimeout(absl::Condition(&due), kTimesDelay);
      if (stopping_) return;
      if (!due()) continue;
    }
    absl::Status s = FlushTimes();
    if (!s.ok()) {
      VLOG(1) << "setting mtimes after writes: " << s;
      absl::SleepFor(kTimesDelay);
    }
  }
}

absl::Status HttpBackend::SetAttributes(uint64_t node, const json& attributes) {
  if (node == options_.root_node) return absl::OkStatus();  // 400 for the root
  return Send(Method::kPost, absl::StrCat("files/attributes/", node),
              attributes.dump())
      .status();
}

absl::Status HttpBackend::WhileWritable(
    uint64_t id, uint64_t node, const std::function<absl::Status()>& then) {
  bool read_only;
  {
    absl::MutexLock l(&mu_);
    read_only = read_only_.contains(id);
  }
  if (!read_only) return then();
  RETURN_IF_ERROR(SetAttributes(node, json{{"writable", true}}));
  absl::Status done = then();
  absl::Status back = SetAttributes(node, json{{"writable", false}});
  return done.ok() ? back : done;
}

absl::Status HttpBackend::ApplySetAttr(const pb::SetAttr& op) {
  const uint64_t id = op.attr().id();
  const uint32_t mask = op.mask();
  json attributes = json::object();
  bool make_read_only = false;
  if ((mask & kSetMode) != 0 && !S_ISDIR(op.attr().mode()) &&
      !S_ISLNK(op.attr().mode())) {
    attributes["executable"] = (op.attr().mode() & 0111) != 0;
    make_read_only = (op.attr().mode() & 0200) == 0;
    attributes["writable"] = !make_read_only;
  }
  if ((mask & (kSetMtime | kSetMtimeNow)) != 0) {
    attributes["modifyTime"] = NsToMs(op.attr().mtime_ns());
  }
  const bool resize = (mask & kSetSize) != 0;
  if (attributes.empty() && !resize) return absl::OkStatus();  // owners, atime
  if ((mask & kSetMode) != 0) {
    absl::MutexLock l(&mu_);
    if (make_read_only) {
      read_only_.insert(id);
    } else {
      read_only_.erase(id);
    }
  }
  return WithNodes([&]() -> absl::Status {
    ASSIGN_OR_RETURN(uint64_t node, NodeOf(id));
    if (resize) {
      // A truncate of a read-only file is still fsd's to make.
      RETURN_IF_ERROR(WhileWritable(id, node, [&]() -> absl::Status {
        return Send(Method::kPut, absl::StrCat("files/size/", node,
                                               "?size=", op.attr().size()))
            .status();
      }));
    }
    if (attributes.empty()) return absl::OkStatus();
    return SetAttributes(node, attributes);
  });
}

absl::Status HttpBackend::ApplyLink(uint64_t /*seq*/, const pb::Link& op) {
  RETURN_IF_ERROR(CheckName(op.new_name()));
  {
    absl::MutexLock l(&mu_);
    if (ids_.HasLink(op.id(), op.new_parent(), op.new_name())) {
      return absl::OkStatus();  // a replay
    }
    if (!ids_.Contains(op.id()) || !ids_.Contains(op.new_parent())) {
      return Missing(absl::StrCat("link of ", op.id(), " into ",
                                  op.new_parent(), ": not known here"));
    }
    if (local_only_.contains(op.id())) {
      return ids_.AddLink(op.id(), op.new_parent(), op.new_name());
    }
  }
  return WithNodes([&]() -> absl::Status {
    ASSIGN_OR_RETURN(uint64_t node, NodeOf(op.id()));
    ASSIGN_OR_RETURN(uint64_t parent, NodeOf(op.new_parent()));
    ASSIGN_OR_RETURN(std::optional<json> existing,
                     Lookup(parent, op.new_name()));
    if (existing.has_value()) {
      if (existing->value("node", uint64_t{0}) != node) {
        return Conflict(EEXIST, absl::StrCat(Quoted(op.new_name()),
                                             " exists on the server"));
      }
    } else {
      RETURN_IF_ERROR(Send(Method::kPut, absl::StrCat(NamePath("link/", parent,
                                                               op.new_name()),
                                                      "?node=", node))
                          .status());
    }
    absl::MutexLock l(&mu_);
    return ids_.AddLink(op.id(), op.new_parent(), op.new_name());
  });
}

absl::Status HttpBackend::CheckEmptyDirectory(uint64_t node) {
  ASSIGN_OR_RETURN(
      json entries,
      SendJson(Method::kGet, absl::StrCat("files/directory/", node)));
  if (!entries.is_array()) {
    return absl::DataLossError("a directory listing that is not an array");
  }
  if (!entries.empty()) {
    return Conflict(ENOTEMPTY,
                    "the server's directory holds entries fsd does not");
  }
  return absl::OkStatus();
}

absl::Status HttpBackend::ApplyRemove(uint64_t /*seq*/, const pb::Remove& op) {
  RETURN_IF_ERROR(CheckName(op.name()));
  bool local_only = false;
  {
    absl::MutexLock l(&mu_);
    if (!ids_.HasLink(op.id(), op.parent(), op.name())) {
      return absl::OkStatus();  // a replay: gone already
    }
    local_only = local_only_.contains(op.id());
  }
  if (!local_only) {
    // A directory on its path gone from the server: so is the entry.
    absl::Status removed = WithNodes([&]() -> absl::Status {
      ASSIGN_OR_RETURN(uint64_t parent, NodeOf(op.parent()));
      ASSIGN_OR_RETURN(std::optional<json> existing, Lookup(parent, op.name()));
      if (!existing.has_value()) return absl::OkStatus();
      // The server removes directories recursively: never more than fsd
      // removed.
      if (existing->value("kind", "") == "Directory") {
        RETURN_IF_ERROR(
            CheckEmptyDirectory(existing->value("node", uint64_t{0})));
      }
      return Send(Method::kPost, NamePath("remove/", parent, op.name()))
          .status();
    });
    if (!removed.ok() && !IsMissing(removed)) return removed;
  }
  absl::MutexLock l(&mu_);
  RETURN_IF_ERROR(ids_.RemoveLink(op.id(), op.parent(), op.name()));
  if (!ids_.Contains(op.id())) {
    auto it = node_of_.find(op.id());
    if (it != node_of_.end()) {
      id_of_node_.erase(it->second);
      node_of_.erase(it);
    }
    local_only_.erase(op.id());
    read_only_.erase(op.id());
    pending_times_.erase(op.id());
  }
  return absl::OkStatus();
}

absl::Status HttpBackend::ApplyRename(uint64_t seq, const pb::Rename& op) {
  RETURN_IF_ERROR(CheckName(op.name()));
  RETURN_IF_ERROR(CheckName(op.new_name()));
  constexpr uint32_t kNoReplace = 1;  // RENAME_NOREPLACE
  constexpr uint32_t kExchange = 2;   // RENAME_EXCHANGE
  const bool exchange = (op.flags() & kExchange) != 0;
  bool source_local = false;
  bool target_local = false;
  {
    absl::MutexLock l(&mu_);
    if (!ids_.HasLink(op.id(), op.parent(), op.name())) {
      // A replay: already where it goes.
      if (ids_.HasLink(op.id(), op.new_parent(), op.new_name())) {
        return absl::OkStatus();
      }
      return Missing("the source is not where fsd says");
    }
    if (!ids_.Contains(op.new_parent())) {
      return Missing(
          absl::StrCat("directory ", op.new_parent(), " is not known here"));
    }
    RETURN_IF_ERROR(ids_.CheckRename(op.id(), op.parent(), op.name(),
                                     op.new_parent(), op.new_name(),
                                     op.replaced_id(), exchange));
    source_local = local_only_.contains(op.id());
    target_local =
        op.replaced_id() != 0 && local_only_.contains(op.replaced_id());
  }
  RETURN_IF_ERROR(WithNodes([&]() -> absl::Status {
    ASSIGN_OR_RETURN(uint64_t from, NodeOf(op.parent()));
    ASSIGN_OR_RETURN(uint64_t to, NodeOf(op.new_parent()));
    ASSIGN_OR_RETURN(std::optional<json> target, Lookup(to, op.new_name()));
    auto rename = [&](uint64_t p, std::string_view name, uint64_t np,
                      std::string_view new_name) {
      return Send(Method::kPut,
                  absl::StrCat(NamePath("rename/", p, name), "?newParent=", np,
                               "&newName=", EncodeQueryValue(new_name)))
          .status();
    };
    if (exchange) {
      if (source_local && target_local) return absl::OkStatus();
      if (source_local || target_local) {
        return Conflict(EOPNOTSUPP,
                        "an exchange with an object the server does not "
                        "hold");
      }
      // No exchange on the server: three renames through a name of our
      // own, each skipped when a retry finds it done already.
      ASSIGN_OR_RETURN(uint64_t source, NodeOf(op.id()));
      if (target.has_value() && target->value("node", uint64_t{0}) == source) {
        return absl::OkStatus();  // all three done before
      }
      const std::string aside = absl::StrCat(".memfuse-exchange-", seq);
      ASSIGN_OR_RETURN(std::optional<json> parked, Lookup(from, aside));
      if (!parked.has_value()) {
        if (!target.has_value()) {
          return Conflict(ENOENT, "the exchange's target is not on the server");
        }
        RETURN_IF_ERROR(rename(from, op.name(), from, aside));
      }
      ASSIGN_OR_RETURN(std::optional<json> at_name, Lookup(from, op.name()));
      if (!at_name.has_value()) {
        RETURN_IF_ERROR(rename(to, op.new_name(), from, op.name()));
      }
      return rename(from, aside, to, op.new_name());
    }
    if (target.has_value()) {
      if ((op.flags() & kNoReplace) != 0) {
        return Conflict(EEXIST, "the target exists on the server");
      }
      if (target->value("kind", "") == "Directory") {
        RETURN_IF_ERROR(
            CheckEmptyDirectory(target->value("node", uint64_t{0})));
      }
    }
    if (source_local) {
      // The name it replaces must go from the server too.
      if (!target.has_value()) return absl::OkStatus();
      return Send(Method::kPost, NamePath("remove/", to, op.new_name()))
          .status();
    }
    return rename(from, op.name(), to, op.new_name());
  }));
  absl::MutexLock l(&mu_);
  RETURN_IF_ERROR(ids_.Rename(op.id(), op.parent(), op.name(), op.new_parent(),
                              op.new_name(), op.replaced_id(), exchange));
  if (op.replaced_id() != 0 && !exchange && !ids_.Contains(op.replaced_id())) {
    auto it = node_of_.find(op.replaced_id());
    if (it != node_of_.end()) {
      id_of_node_.erase(it->second);
      node_of_.erase(it);
    }
    local_only_.erase(op.replaced_id());
    read_only_.erase(op.replaced_id());
    pending_times_.erase(op.replaced_id());
  }
  return absl::OkStatus();
}

void HttpBackend::ForgetIdLocked(uint64_t id) {
  ids_.Forget(id);
  auto it = node_of_.find(id);
  if (it != node_of_.end()) {
    id_of_node_.erase(it->second);
    node_of_.erase(it);
  }
}

}  // namespace memfuse::mirrord
