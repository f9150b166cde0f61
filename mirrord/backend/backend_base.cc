#include "mirrord/backend/backend_base.h"

#include <algorithm>
#include <cerrno>
#include <cstdint>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status.h"
#include "glog/logging.h"

namespace memfuse::mirrord {

namespace {

constexpr uint64_t kMaxOffset = static_cast<uint64_t>(INT64_MAX);

// The bytes a write carries, inline or in the data region.
uint64_t WriteLength(const pb::Write& w) {
  return w.shared_length() != 0 ? w.shared_length() : w.data().size();
}

// What Linux answers for a byte range past the largest file offset
// (loff_t): a write's (pwrite: EINVAL, rw_verify_area), a punched hole's
// (fallocate: EINVAL for an offset or length below zero as loff_t, EFBIG
// for an end past it) and a new size's (ftruncate of a negative length:
// EINVAL). Refused for good, by every backend alike.
absl::Status CheckRange(const pb::Mutation& m) {
  switch (m.op_case()) {
    case pb::Mutation::kWrite: {
      const pb::Write& w = m.write();
      const uint64_t length = WriteLength(w);
      if (w.offset() > kMaxOffset || length > kMaxOffset - w.offset()) {
        return Invalid("beyond the largest file offset");
      }
      return absl::OkStatus();
    }
    case pb::Mutation::kPunchHole: {
      const pb::PunchHole& p = m.punch_hole();
      if (p.offset() > kMaxOffset || p.length() > kMaxOffset) {
        return Invalid("a range starting or ending below zero");
      }
      if (p.length() > kMaxOffset - p.offset()) {
        return Conflict(EFBIG, "beyond the largest file offset");
      }
      return absl::OkStatus();
    }
    case pb::Mutation::kSetAttr:
      if ((m.set_attr().mask() & kSetSize) != 0 &&
          m.set_attr().attr().size() > kMaxOffset) {
        return Invalid("size beyond the largest file offset");
      }
      return absl::OkStatus();
    default:
      return absl::OkStatus();
  }
}

}  // namespace

absl::StatusOr<pb::HandshakeResponse> BackendBase::Handshake(
    const pb::HandshakeRequest& request) {
  if (request.block_size() == 0 || request.block_size() > kMaxReadLength) {
    return absl::InvalidArgumentError(absl::StrCat(
        "block_size ", request.block_size(), " is not in 1..", kMaxReadLength));
  }
  ASSIGN_OR_RETURN(pb::HandshakeResponse response, DescribeMirror());
  absl::MutexLock l(&mu_);
  ids_.Clear();
  const uint64_t previous_session = session_id_;
  session_id_ = request.session_id();
  block_size_ = request.block_size();
  ASSIGN_OR_RETURN(const uint64_t resume,
                   StartSessionLocked(previous_session));
  acks_.last_applied_seq = resume;
  LOG(INFO) << "session " << absl::StrFormat("%016x", session_id_)
            << ": block size " << block_size_ << ", last applied seq "
            << resume;
  response.set_protocol_version(1);
  response.set_last_applied_seq(resume);
  response.set_needs_bindings(true);
  return response;
}

absl::Status BackendBase::Bind(const pb::Binding& binding) {
  absl::Status name_ok = CheckName(binding.name());
  if (!name_ok.ok()) return absl::InvalidArgumentError(name_ok.message());
  absl::MutexLock l(&mu_);
  absl::Status added =
      ids_.AddLink(binding.id(), binding.parent(), binding.name());
  if (!added.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("binding ", binding.id(), " ", Quoted(binding.name()),
                     " in ", binding.parent(), ": ", added.message()));
  }
  BoundLocked(binding.id());
  return absl::OkStatus();
}

pb::Ack BackendBase::Apply(const pb::Mutation& mutation) {
  const uint64_t seq = mutation.seq();
  absl::Status status;
  bool needed = false;
  if (seq == 0) {
    status = Invalid("seq 0");
  } else if (mutation.op_case() == pb::Mutation::OP_NOT_SET) {
    status = Invalid("no operation");
  } else if (absl::Status range = CheckRange(mutation); !range.ok()) {
    status = std::move(range);
  } else {
    absl::MutexLock l(&mu_);
    absl::StatusOr<bool> needs = NeedsApplyingLocked(mutation);
    if (mutation.has_write() && WriteLength(mutation.write()) > block_size_) {
      status = Invalid(absl::StrCat(WriteLength(mutation.write()),
                                    " bytes exceed the block size ",
                                    block_size_));
    } else if (needs.ok()) {
      needed = *needs;
    } else {
      status = needs.status();
    }
  }
  if (status.ok() && !needed) {
    VLOG(1) << Describe(mutation) << ": nothing to do";
  } else if (status.ok()) {
    status = BeforeChange(mutation);
    if (status.ok()) {
      switch (mutation.op_case()) {
        case pb::Mutation::kCreate:
          status = ApplyCreate(seq, mutation.create());
          break;
        case pb::Mutation::kWrite:
          status = ApplyWrite(mutation.write());
          break;
        case pb::Mutation::kPunchHole:
          status = ApplyPunchHole(mutation.punch_hole());
          break;
        case pb::Mutation::kSetAttr:
          status = ApplySetAttr(mutation.set_attr());
          break;
        case pb::Mutation::kLink:
          status = ApplyLink(seq, mutation.link());
          break;
        case pb::Mutation::kRemove:
          status = ApplyRemove(seq, mutation.remove());
          break;
        case pb::Mutation::kRename:
          status = ApplyRename(seq, mutation.rename());
          break;
        case pb::Mutation::kSetXattr:
          status = ApplySetXattr(mutation.set_xattr());
          break;
        case pb::Mutation::kRemoveXattr:
          status = ApplyRemoveXattr(mutation.remove_xattr());
          break;
        case pb::Mutation::kSync:
          status = ApplySync(seq, mutation.sync());
          break;
        default:
          status = Invalid("unexpected operation");
      }
    }
    status = AfterChange(mutation, std::move(status));
  }
  if (!status.ok()) {
    status = Prefixed(status,
                      absl::StrCat(Describe(mutation), WhereInMirror(mutation)));
  }
  return MakeAck(mutation, status);
}

absl::StatusOr<pb::ListDirectoryResponse> BackendBase::ListDirectory(
    const pb::ListDirectoryRequest& request) {
  const uint64_t dir_id = request.id();
  if (request.first_child_id() <= kRootId) {
    return absl::InvalidArgumentError(absl::StrCat(
        "first_child_id ", request.first_child_id(), " is not a new id"));
  }
  {
    absl::MutexLock l(&mu_);
    if (!ids_.Contains(dir_id)) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown directory id ", dir_id));
    }
  }
  ASSIGN_OR_RETURN(std::vector<ListedEntry> listed, ReadDirectory(dir_id));
  std::sort(listed.begin(), listed.end(),
            [](const ListedEntry& a, const ListedEntry& b) {
              return a.entry.name() < b.entry.name();
            });

  pb::ListDirectoryResponse response;
  absl::MutexLock l(&mu_);
  // The objects this listing bound, for their other names in it.
  absl::flat_hash_map<std::pair<uint64_t, uint64_t>, uint64_t> seen;
  auto known = [&](const ListedEntry& e)
                   ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) -> uint64_t {
    if (!e.linkable) return 0;
    if (auto it = seen.find(e.object); it != seen.end()) return it->second;
    const uint64_t id = LinkedIdLocked(e);
    return id != 0 && ids_.Contains(id) ? id : 0;
  };
  if (request.max_new_ids() > 0) {
    uint64_t needed = 0;
    absl::flat_hash_set<std::pair<uint64_t, uint64_t>> counted;
    for (const ListedEntry& e : listed) {
      if (known(e) == 0 && (!e.linkable || counted.insert(e.object).second)) {
        ++needed;
      }
    }
    if (needed > request.max_new_ids()) {
      response.set_ids_needed(needed);
      return response;
    }
  }
  uint64_t next = request.first_child_id();
  for (ListedEntry& e : listed) {
    const std::string& name = e.entry.name();
    uint64_t id = known(e);
    if (id == 0) {
      id = next++;
      if (ids_.Contains(id) && !ids_.HasLink(id, dir_id, name)) {
        return absl::FailedPreconditionError(
            absl::StrCat("id ", id, " is bound already"));
      }
    } else if (id == next && ids_.HasLink(id, dir_id, name)) {
      // This listing's own new id, bound when fsd asked before (a replay):
      // it keeps its place, and the names after it their ids.
      ++next;
    }
    RETURN_IF_ERROR(ids_.AddLink(id, dir_id, name));
    if (e.linkable) seen[e.object] = id;
    ListedLocked(id, e);
    e.entry.mutable_attr()->set_id(id);
    *response.add_entries() = std::move(e.entry);
  }
  response.set_next_free_id(next);
  ++acks_.directories_listed;
  return response;
}

absl::StatusOr<uint64_t> BackendBase::ReadBlock(
    const pb::ReadBlockRequest& request, absl::Span<char> out) {
  if (request.length() > kMaxReadLength) {
    return absl::InvalidArgumentError(
        absl::StrCat("length ", request.length(), " exceeds ", kMaxReadLength));
  }
  if (request.offset() > kMaxOffset ||
      request.length() > kMaxOffset - request.offset()) {
    return absl::InvalidArgumentError("offset beyond the largest file");
  }
  const size_t length = std::min<size_t>(request.length(), out.size());
  ASSIGN_OR_RETURN(const uint64_t got, ReadBytes(request, out.first(length)));
  absl::MutexLock l(&mu_);
  ++acks_.blocks_read;
  return got;
}

void BackendBase::FillStatus(pb::StatusResponse* status) {
  absl::MutexLock l(&mu_);
  acks_.Fill(status);
}

}  // namespace memfuse::mirrord
