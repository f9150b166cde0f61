#include "fsd/mutation_log.h"

#include <algorithm>
#include <bit>
#include <utility>

#include "fsd/block_size.h"
#include "fsd/inode.h"
#include "glog/logging.h"

namespace memfuse::fsd {
namespace {

uint64_t IdOf(const pb::Mutation& m) {
  switch (m.op_case()) {
    case pb::Mutation::kCreate: return m.create().attr().id();
    case pb::Mutation::kWrite: return m.write().id();
    case pb::Mutation::kSetAttr: return m.set_attr().attr().id();
    case pb::Mutation::kLink: return m.link().id();
    case pb::Mutation::kRemove: return m.remove().id();
    case pb::Mutation::kRename: return m.rename().id();
    case pb::Mutation::kSetXattr: return m.set_xattr().id();
    case pb::Mutation::kRemoveXattr: return m.remove_xattr().id();
    case pb::Mutation::kSync: return m.sync().id();
    case pb::Mutation::kPunchHole: return m.punch_hole().id();
    case pb::Mutation::OP_NOT_SET: break;
  }
  return 0;
}

bool IsNamespaceOp(const pb::Mutation& m) {
  switch (m.op_case()) {
    case pb::Mutation::kCreate:
    case pb::Mutation::kLink:
    case pb::Mutation::kRemove:
    case pb::Mutation::kRename:
      return true;
    default:
      return false;
  }
}

}  // namespace

uint64_t MutationLog::AppendLocked(Slot slot) {
  const uint64_t seq = next_seq_++;
  queue_.push_back(std::move(slot));
  return seq;
}

uint64_t MutationLog::Append(pb::Mutation mutation, uint64_t gone) {
  absl::MutexLock l(&mu_);
  Slot slot;
  slot.id = IdOf(mutation);
  slot.is_sync = mutation.has_sync();
  slot.gone = gone;
  const bool resizes = mutation.has_set_attr() &&
                       (mutation.set_attr().mask() & FUSE_SET_ATTR_SIZE);
  slot.empties_file = resizes && mutation.set_attr().attr().size() == 0;
  // A punch is ordered like a size change: a write after it must not widen
  // a slot sent before it (the punch would zero the new bytes), and blocks
  // it zeroed in part differ from the mirror's until it is applied.
  if (resizes || mutation.has_punch_hole()) {
    open_slots_.erase(slot.id);  // later writes go after the size change
    slot.is_size_change = true;
    ++size_changes_[slot.id];
  }
  if (mutation.has_remove()) open_slots_.erase(slot.id);
  mutation.set_seq(next_seq_);
  slot.wire_bytes = mutation.ByteSizeLong();
  slot.message = std::make_shared<const pb::Mutation>(std::move(mutation));
  return AppendLocked(std::move(slot));
}

void MutationLog::CleanLocked(std::pair<uint64_t, uint64_t> key) {
  if (dirty_.Clean(key.first, key.second)) CleanedLocked();
}

void MutationLog::AppendWrite(const std::shared_ptr<Inode>& inode,
                              uint64_t offset, uint64_t length) {
  if (length == 0) return;
  absl::MutexLock l(&mu_);
  auto& open = open_slots_[inode->ino];
  const uint64_t end = offset + length;
  for (uint64_t block = offset / block_size_; block * block_size_ < end;
       ++block) {
    const uint64_t lo = std::max(offset, block * block_size_);
    const uint64_t hi = std::min(end, (block + 1) * block_size_);
    auto it = open.find(block);
    dirty_.Mark(inode->ino, block, hi - block * block_size_,
                /*new_slot=*/it == open.end());
    if (it != open.end()) {
      Slot& slot = SlotLocked(it->second);
      const uint64_t new_lo = std::min(slot.offset, lo);
      const uint64_t new_hi = std::max(slot.offset + slot.length, hi);
      data_bytes_ += (new_hi - new_lo) - slot.length;
      slot.offset = new_lo;
      slot.length = new_hi - new_lo;
      continue;
    }
    Slot slot;
    slot.inode = inode;
    slot.id = inode->ino;
    slot.offset = lo;
    slot.length = hi - lo;
    slot.is_data = true;
    data_bytes_ += slot.length;
    open[block] = AppendLocked(std::move(slot));
  }
}

std::optional<MutationLog::ToSend> MutationLog::TakeNext(
    absl::Duration timeout) {
  absl::MutexLock l(&mu_);
  auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return shutdown_ || poked_ ||
           (send_seq_ < next_seq_ && inflight_bytes_ < kMaxInflightBytes);
  };
  mu_.AwaitWithTimeout(absl::Condition(&ready), timeout);
  poked_ = false;
  if (shutdown_ || send_seq_ >= next_seq_ ||
      inflight_bytes_ >= kMaxInflightBytes) {
    return std::nullopt;
  }
  const uint64_t seq = send_seq_++;
  Slot& slot = SlotLocked(seq);
  ToSend out;
  out.seq = seq;
  if (slot.message != nullptr) {
    out.message = slot.message;
    inflight_bytes_ += slot.wire_bytes;
    return out;
  }
  // A data slot leaves the set open to widening as it goes out.
  auto open = open_slots_.find(slot.id);
  if (open != open_slots_.end()) {
    auto it = open->second.find(slot.offset / block_size_);
    if (it != open->second.end() && it->second == seq) open->second.erase(it);
    if (open->second.empty()) open_slots_.erase(open);
  }
  out.inode = slot.inode.lock();
  out.id = slot.id;
  out.offset = slot.offset;
  out.length = slot.length;
  slot.wire_bytes = slot.length + 64;
  inflight_bytes_ += slot.wire_bytes;
  return out;
}

void MutationLog::KeepForResend(uint64_t seq,
                        std::shared_ptr<const pb::Mutation> message) {
  absl::MutexLock l(&mu_);
  if (seq < front_seq_ || seq >= next_seq_) return;  // acked meanwhile
  Slot& slot = SlotLocked(seq);
  slot.message = std::move(message);
  slot.inode.reset();  // the message holds the bytes now
}

uint64_t MutationLog::Acked(const pb::Ack& ack) {
  absl::MutexLock l(&mu_);
  return AckedLocked(ack);
}

uint64_t MutationLog::AckedLocked(const pb::Ack& ack) {
  uint64_t repair = 0;
  // An agent that does not say how far it is durable is durable as far as
  // it applied (a local mirror).
  const uint64_t durable =
      ack.has_durable_seq() ? ack.durable_seq() : ack.seq();
  if (ack.seq() == 0 && ack.missing_id() != 0) {
    // A mutation acknowledged before, applied again after the mirror lost
    // it, found its object missing: repaired like any other.
    repair = ack.missing_id();
    repairing_.insert(repair);
  }
  while (!queue_.empty() && front_seq_ <= ack.seq()) {
    Slot& slot = queue_.front();
    const bool this_one = front_seq_ == ack.seq();
    if (this_one && ack.missing_id() != 0) {
      // The mirror lost the object: a repair appended after this mutation
      // sends the object as it is now, which covers this one.
      const uint64_t id = ack.missing_id();
      auto last = repair_seq_.find(id);
      if (last == repair_seq_.end() || ack.seq() >= last->second) {
        VLOG(1) << "mirror lost object " << id << " (seq " << ack.seq()
                << "): " << ack.message();
        repair = id;
        repairing_.insert(id);
      }
      if (slot.is_sync) sync_errors_[front_seq_] = kRepairing;
    } else if (this_one && ack.error() != 0) {
      LOG(ERROR) << "mirror refused mutation " << ack.seq() << " (object "
                 << slot.id << "): " << ack.message();
      if (slot.is_sync) {
        sync_errors_[front_seq_] = ack.error();
      } else if (slot.id != 0) {
        RefusedLocked(slot, ack.error());
      }
    } else if (slot.is_sync) {
      // Decided now, not when the fsync looks: a refusal forgotten after
      // this barrier still belongs to it.
      auto failed = failed_.find(slot.id);
      sync_errors_[front_seq_] =
          slot.id != 0 && failed != failed_.end() ? failed->second : 0;
    } else {
      AppliedLocked(slot);
    }
    // Applied; what it makes of the file's blocks is clean only once it
    // is durable too (until then it waits in limbo_, holding its message
    // and the data region range the agent may apply it from again).
    if ((slot.is_size_change || slot.is_data) &&
        front_seq_ > std::max(durable_seq_, durable)) {
      limbo_.push_back(Limbo{front_seq_, slot.id, slot.offset / block_size_,
                             slot.is_data, slot.is_size_change,
                             slot.message});
    } else {
      ReleaseLocked(slot.id, slot.offset / block_size_, slot.is_data,
                    slot.is_size_change);
    }
    if (slot.is_data) {
      data_bytes_ -= slot.length;
      acked_bytes_ += slot.length;
      if (slot.message == nullptr) {
        // Acked before it was built (a replayed ack): close it to widening.
        auto open = open_slots_.find(slot.id);
        if (open != open_slots_.end()) {
          open->second.erase(slot.offset / block_size_);
          if (open->second.empty()) open_slots_.erase(open);
        }
      }
    }
    if (front_seq_ < send_seq_) inflight_bytes_ -= slot.wire_bytes;
    queue_.pop_front();
    ++front_seq_;
  }
  send_seq_ = std::max(send_seq_, front_seq_);
  if (durable > durable_seq_) {
    durable_seq_ = durable;
    while (!limbo_.empty() && limbo_.front().seq <= durable_seq_) {
      const Limbo& l = limbo_.front();
      ReleaseLocked(l.id, l.block, l.is_data, l.is_size_change);
      limbo_.pop_front();
    }
  }
  return repair;
}

void MutationLog::ReleaseLocked(uint64_t id, uint64_t block, bool is_data,
                                bool is_size_change) {
  if (is_size_change) {
    auto it = size_changes_.find(id);
    if (it != size_changes_.end() && --it->second == 0) {
      size_changes_.erase(it);
      CleanedLocked();
    }
  }
  if (is_data) CleanLocked({id, block});
}

bool MutationLog::HasLimbo() {
  absl::MutexLock l(&mu_);
  return !limbo_.empty();
}

bool MutationLog::BeginRepair(uint64_t id) {
  absl::MutexLock l(&mu_);
  if (++repair_attempts_[id] > kMaxRepairs) return false;
  repair_seq_[id] = next_seq_;
  ++repairs_;
  return true;
}

void MutationLog::EndRepair(uint64_t id) {
  absl::MutexLock l(&mu_);
  repairing_.erase(id);
  repair_end_seq_ = std::max(repair_end_seq_, next_seq_);
  CleanedLocked();  // its blocks may be evicted again
}

bool MutationLog::WaitRepairsAppended(const std::atomic<bool>* interrupted) {
  absl::MutexLock l(&mu_);
  auto done = [this, interrupted]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return shutdown_ || repairing_.empty() ||
           (interrupted != nullptr && interrupted->load());
  };
  mu_.Await(absl::Condition(&done));
  return shutdown_ || repairing_.empty();
}

bool MutationLog::RepairedAfter(uint64_t seq) {
  absl::MutexLock l(&mu_);
  return repair_end_seq_ > seq + 1;
}

bool MutationLog::WaitRepairAppended(uint64_t id,
                                     const std::atomic<bool>* interrupted) {
  absl::MutexLock l(&mu_);
  auto done = [this, id, interrupted]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return shutdown_ || !repairing_.contains(id) ||
           (interrupted != nullptr && interrupted->load());
  };
  mu_.Await(absl::Condition(&done));
  return shutdown_ || !repairing_.contains(id);
}

void MutationLog::RefuseForGood(uint64_t id, int error, uint64_t lost_bytes) {
  absl::MutexLock l(&mu_);
  if (failed_.insert({id, error}).second) ++refused_objects_;
  lost_bytes_ += lost_bytes;
}

std::optional<MutationLog::Front> MutationLog::OldestUnacked() {
  absl::MutexLock l(&mu_);
  if (queue_.empty()) return std::nullopt;
  const Slot& slot = queue_.front();
  Front front;
  front.seq = front_seq_;
  front.id = slot.id;
  if (slot.message == nullptr) {
    front.what = "write";
  } else {
    switch (slot.message->op_case()) {
      case pb::Mutation::kCreate: front.what = "create"; break;
      case pb::Mutation::kWrite: front.what = "write"; break;
      case pb::Mutation::kSetAttr: front.what = "set attributes"; break;
      case pb::Mutation::kLink: front.what = "link"; break;
      case pb::Mutation::kRemove: front.what = "remove"; break;
      case pb::Mutation::kRename: front.what = "rename"; break;
      case pb::Mutation::kSetXattr: front.what = "set xattr"; break;
      case pb::Mutation::kRemoveXattr: front.what = "remove xattr"; break;
      case pb::Mutation::kSync: front.what = "sync"; break;
      default: front.what = "change"; break;
    }
  }
  return front;
}

void MutationLog::RefusedLocked(const Slot& slot, int error) {
  if (failed_.insert_or_assign(slot.id, error).second) ++refused_objects_;
  if (!slot.is_data && !(slot.message != nullptr &&
                         slot.message->has_punch_hole())) {
    failed_beyond_data_.insert(slot.id);
  }
}

void MutationLog::AppliedLocked(const Slot& slot) {
  bool forgot = false;
  if (slot.gone != 0) {
    // Nothing of the object is left in the mirror to be wrong.
    forgot = failed_.erase(slot.gone) > 0;
    failed_beyond_data_.erase(slot.gone);
  }
  if (slot.empties_file && !failed_beyond_data_.contains(slot.id)) {
    // Every byte refused before is gone from the file; what was written
    // since is the mirror's to accept or refuse anew.
    forgot = failed_.erase(slot.id) > 0 || forgot;
  }
  if (forgot) CleanedLocked();
}

void MutationLog::Rewind(uint64_t last_applied) {
  absl::MutexLock l(&mu_);
  pb::Ack ack;
  ack.set_seq(std::min(last_applied, send_seq_ - 1));
  AckedLocked(ack);
  send_seq_ = front_seq_;
  inflight_bytes_ = 0;
}

std::vector<pb::Mutation> MutationLog::UnackedNamespaceOps() {
  absl::MutexLock l(&mu_);
  std::vector<pb::Mutation> ops;
  for (const Slot& slot : queue_) {
    if (slot.message != nullptr && IsNamespaceOp(*slot.message)) {
      ops.push_back(*slot.message);
    }
  }
  return ops;
}

int MutationLog::WaitApplied(uint64_t seq) {
  return WaitApplied(seq, nullptr);
}

void MutationLog::Wake() { absl::MutexLock l(&mu_); }

int MutationLog::WaitApplied(uint64_t seq,
                             const std::atomic<bool>* interrupted) {
  absl::MutexLock l(&mu_);
  // Acknowledged, and durable (or refused).
  auto done = [this, seq, interrupted]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (shutdown_ || (interrupted != nullptr && interrupted->load())) {
      return true;
    }
    if (front_seq_ <= seq) return false;
    auto error = sync_errors_.find(seq);
    return durable_seq_ >= seq ||
           (error != sync_errors_.end() && error->second != 0);
  };
  mu_.Await(absl::Condition(&done));
  auto refused = sync_errors_.find(seq);
  if (front_seq_ <= seq ||
      (durable_seq_ < seq &&
       (refused == sync_errors_.end() || refused->second == 0))) {
    return shutdown_ ? EIO : EINTR;  // shut down or interrupted first
  }
  auto it = sync_errors_.find(seq);
  if (it == sync_errors_.end()) return 0;
  const int error = it->second;
  sync_errors_.erase(it);
  return error;
}

int MutationLog::FailedErrno(uint64_t id) {
  absl::MutexLock l(&mu_);
  auto it = failed_.find(id);
  return it == failed_.end() ? 0 : it->second;
}

bool MutationLog::IsBlockClean(uint64_t id, uint64_t index) {
  absl::MutexLock l(&mu_);
  return !dirty_.Contains(id, index) &&
         !size_changes_.contains(id) && !failed_.contains(id) &&
         !repairing_.contains(id);
}

MutationLog::Backlog MutationLog::GetBacklog() {
  absl::MutexLock l(&mu_);
  Backlog b;
  b.mutations = next_seq_ - front_seq_ + limbo_.size();
  b.data_bytes = data_bytes_;
  b.acked_bytes = acked_bytes_;
  b.last_acked = front_seq_ - 1;
  const DirtySet::Stats dirty = dirty_.GetStats();
  b.dirty_bytes = dirty.bytes;
  b.dirty_peak = dirty.peak;
  b.dirty_waits = dirty.waits;
  b.repairs = repairs_;
  b.refused_objects = refused_objects_;
  b.lost_bytes = lost_bytes_;
  return b;
}

bool MutationLog::WaitEmpty(absl::Duration timeout) {
  absl::MutexLock l(&mu_);
  // Applied is not enough: durable too.
  auto empty = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return shutdown_ || (queue_.empty() && limbo_.empty());
  };
  mu_.AwaitWithTimeout(absl::Condition(&empty), timeout);
  return queue_.empty() && limbo_.empty();
}

void MutationLog::Shutdown() {
  absl::MutexLock l(&mu_);
  shutdown_ = true;
  dirty_.Shutdown();
  CleanedLocked();  // cache waiters look again, and see it
}

void MutationLog::WakeSender() {
  absl::MutexLock l(&mu_);
  poked_ = true;
}

}  // namespace memfuse::fsd
