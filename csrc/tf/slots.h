// What the dequeue kernels (dequeue_kernel.h) and the dataset kernel (dataset.cc)
// share: finding a queue's ring by id and checking it against the op's
// attributes, reading an element's components out of a slot, aliasing a slot
// into tensors, and gathering slots into padded batches.
//
// Variable shapes: with max_shapes, the ring has one component more than the
// op's outputs, holding the true dims of every variable component (int64s,
// in component order); each element's data sits compact at the start of its
// component.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "pyfastq/ring_memory.h"
#include "tensorflow/core/framework/allocation_description.pb.h"
#include "tensorflow/core/framework/allocator.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor_shape.h"
#include "tensorflow/core/framework/types.h"

namespace tensorflow {
namespace pyfastq_tf {

using pyfastq::RingMemory;
using RingStatus = pyfastq::Status;

// A parked wait re-checks for Ctrl-C (pyfastq::take_consumer_interrupt) this often.
inline constexpr auto kInterruptCheck = std::chrono::milliseconds(50);

// Gives a slot back to producers when the last tensor aliasing it is freed.
// `held`, when set, counts the slots aliased this way and not yet given back.
struct SlotLease {
  SlotLease(std::shared_ptr<RingMemory> m, std::uint32_t s, std::shared_ptr<std::atomic<std::uint32_t>> h = nullptr)
      : mem(std::move(m)), slot(s), held(std::move(h)) {}
  ~SlotLease() {
    mem->ring().release(slot);
    if (held != nullptr) held->fetch_sub(1, std::memory_order_acq_rel);
  }
  SlotLease(const SlotLease&) = delete;
  SlotLease& operator=(const SlotLease&) = delete;
  std::shared_ptr<RingMemory> mem;
  std::uint32_t slot;
  std::shared_ptr<std::atomic<std::uint32_t>> held;
};

// A tensor buffer inside a ring slot: TF reads it in place.
class SlotBuffer : public TensorBuffer {
 public:
  SlotBuffer(void* data, std::size_t size, std::shared_ptr<SlotLease> lease)
      : TensorBuffer(data), size_(size), pinned_(lease->mem->pinned()), lease_(std::move(lease)) {}
  std::size_t size() const override { return size_; }
  // TF's host-to-GPU copy stages pageable memory through a pinned buffer of its
  // own, and DMAs pinned memory directly: a pinned ring must say it is pinned.
  AllocatorMemoryType GetMemoryType() const override {
    return pinned_ ? AllocatorMemoryType::kHostPinned : AllocatorMemoryType::kHostPageable;
  }
  TensorBuffer* root_buffer() override { return this; }
  void FillAllocationDescription(AllocationDescription* proto) const override {
    proto->set_requested_bytes(static_cast<int64_t>(size_));
    proto->set_allocator_name("pyfastq_ring");
  }
  // Not ours to hand on: TF must not forward the slot as another op's output buffer.
  bool OwnsMemory() const override { return false; }

 private:
  std::size_t size_;
  bool pinned_;
  std::shared_ptr<SlotLease> lease_;
};

// A host tensor over `bytes` of a slot at `offset`; its buffer holds the slot's lease.
inline Tensor SlotTensor(DataType type, const TensorShape& shape, std::uint8_t* data, std::size_t bytes,
                         const std::shared_ptr<SlotLease>& lease) {
  auto* buf = new SlotBuffer(data, bytes, lease);
  Tensor t(type, shape, buf);
  buf->Unref();  // the Tensor holds its own reference
  return t;
}

// An op's view of a queue's elements: the components' types and shapes from
// the op's attributes, where each sits in a slot, and how a batch is padded.
class QueueLayout {
 public:
  // Allocates output i of the given shape; the callee owns the tensor.
  using Allocate = std::function<absl::Status(std::uint32_t i, const TensorShape& shape, Tensor** out)>;

 protected:
  // Checks the attributes against each other and derives the slot layout.
  // batched: n-element batches (padding applies); otherwise single elements.
  absl::Status InitLayout(bool batched, std::uint32_t n) {
    batched_ = batched;
    n_ = n;
    if (shapes_.size() != types_.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where_, ": ", shapes_.size(), " shapes for ", types_.size(), " component types"));
    }
    variable_ = !max_shapes_.empty();
    if (variable_ && max_shapes_.size() != types_.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where_, ": ", max_shapes_.size(), " max_shapes for ", types_.size(), " component types"));
    }
    if (!padding_.empty() && padding_.size() != types_.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where_, ": ", padding_.size(), " padding values for ", types_.size(), " components"));
    }
    std::uint64_t dims = 0;
    for (size_t i = 0; i < shapes_.size(); ++i) {
      const PartialTensorShape& bound = variable_ ? max_shapes_[i] : shapes_[i];
      if (!bound.IsFullyDefined() || !bound.IsCompatibleWith(shapes_[i])) {
        return absl::InvalidArgumentError(absl::StrCat(where_, ": component ", i, " has shape ",
                                                       shapes_[i].DebugString(), " and bound ", bound.DebugString(),
                                                       ": the bound must be fully defined and fit the shape"));
      }
      if (!padding_.empty() && padding_[i].size() != static_cast<size_t>(DataTypeSize(types_[i]))) {
        return absl::InvalidArgumentError(absl::StrCat(where_, ": component ", i, "'s padding has ",
                                                       padding_[i].size(), " bytes, not one ",
                                                       DataTypeString(types_[i])));
      }
      TensorShape s;
      bound.AsTensorShape(&s);
      full_shapes_.push_back(s);
      nbytes_.push_back(static_cast<std::uint64_t>(s.num_elements()) * DataTypeSize(types_[i]));
      is_variable_.push_back(!shapes_[i].IsFullyDefined());
      dims_at_.push_back(dims);
      if (is_variable_.back()) dims += static_cast<std::uint64_t>(shapes_[i].dims());
    }
    dims_bytes_ = dims * sizeof(std::int64_t);
    if (batched_) {
      for (const std::uint64_t bytes : nbytes_) gather_bytes_ += bytes * n_;
    }
    return absl::OkStatus();
  }

  // Component i's shape in `slot`: the spec's, or its true dims from the slot.
  TensorShape ShapeIn(const pyfastq::Ring& ring, std::uint32_t slot, std::uint32_t i) const {
    if (!is_variable_[i]) return full_shapes_[i];
    const auto* dims = reinterpret_cast<const std::int64_t*>(
                           ring.slot_data(slot) + ring.component(static_cast<std::uint32_t>(types_.size())).offset) +
                       dims_at_[i];
    TensorShape s;
    for (int d = 0; d < shapes_[i].dims(); ++d) {
      // Clamped to the bound: a producer writes dims it has checked, but the op must not read past the slot.
      s.AddDim(std::min<int64_t>(std::max<int64_t>(dims[d], 0), full_shapes_[i].dim_size(d)));
    }
    return s;
  }

  // One element's components as tensors that point into `lease`'s slot, which
  // goes back to producers when the last of them is freed.
  std::vector<Tensor> AliasSlot(const std::shared_ptr<SlotLease>& lease) const {
    const pyfastq::Ring& ring = lease->mem->ring();
    std::vector<Tensor> out;
    out.reserve(types_.size());
    for (std::uint32_t i = 0; i < types_.size(); ++i) {
      const TensorShape shape = ShapeIn(ring, lease->slot, i);
      const std::size_t bytes = static_cast<std::size_t>(shape.num_elements()) * DataTypeSize(types_[i]);
      out.push_back(SlotTensor(types_[i], shape, ring.slot_data(lease->slot) + ring.component(i).offset, bytes, lease));
    }
    return out;
  }

  // Rows [0, got) of `slots` into one output per component (allocate),
  // row r copied from slot r; with variable shapes, padded to the largest
  // shape among them. Without batched_, got is 1 and there is no leading dim.
  // The slots go back to producers however this ends.
  absl::Status GatherSlots(pyfastq::Ring& ring, const std::uint32_t* slots, std::uint32_t got,
                           const Allocate& allocate) const {
    struct Release {
      pyfastq::Ring& ring;
      const std::uint32_t* slots;
      std::uint32_t n;
      ~Release() { ring.release_many(slots, n); }
    } release{ring, slots, got};
    std::vector<TensorShape> rows(got);
    for (std::uint32_t i = 0; i < types_.size(); ++i) {
      const std::uint64_t offset = ring.component(i).offset;
      const std::size_t item = static_cast<std::size_t>(DataTypeSize(types_[i]));
      TensorShape shape = full_shapes_[i];
      bool ragged = false;
      if (is_variable_[i]) {
        for (std::uint32_t r = 0; r < got; ++r) rows[r] = ShapeIn(ring, slots[r], i);
        for (int d = 0; d < shape.dims(); ++d) {
          int64_t largest = 0;
          for (std::uint32_t r = 0; r < got; ++r) largest = std::max(largest, rows[r].dim_size(d));
          shape.set_dim(d, largest);
        }
        for (std::uint32_t r = 0; r < got && !ragged; ++r) ragged = rows[r] != shape;
      }
      const std::size_t row_bytes = static_cast<std::size_t>(shape.num_elements()) * item;
      if (batched_) shape.InsertDim(0, got);
      Tensor* out = nullptr;
      if (absl::Status s = allocate(i, shape, &out); !s.ok()) return s;
      char* dst = const_cast<char*>(out->tensor_data().data());
      if (!ragged) {
        for (std::uint32_t r = 0; r < got; ++r) {
          std::memcpy(dst + r * row_bytes, ring.slot_data(slots[r]) + offset, row_bytes);
        }
        continue;
      }
      Pad(dst, out->TotalBytes(), i);
      const auto batch_dims = shape.dim_sizes();
      const std::vector<int64_t> to(batch_dims.begin() + (batched_ ? 1 : 0), batch_dims.end());
      for (std::uint32_t r = 0; r < got; ++r) {
        const auto row_dims = rows[r].dim_sizes();
        const std::vector<int64_t> from(row_dims.begin(), row_dims.end());
        CopyPadded(reinterpret_cast<const char*>(ring.slot_data(slots[r]) + offset), from.data(),
                   dst + r * row_bytes, to.data(), static_cast<int>(to.size()), item);
      }
    }
    return absl::OkStatus();
  }

  // The queue's ring, found and checked by the first call: a queue id is
  // never reused and a ring's layout never changes, so later ones only lock it.
  // A dequeue's first look at the ring: counted in the fill histogram, then a
  // single try (a deadline that has passed) for n_ elements. *slots is this
  // thread's slot list, kept between calls so that no try allocates.
  RingStatus FirstTry(pyfastq::Ring& ring, bool allow_smaller, std::uint32_t** slots, std::uint32_t* got) const {
    ring.record_fill();
    thread_local std::vector<std::uint32_t> kept;
    kept.resize(n_);
    *slots = kept.data();
    *got = 0;
    return ring.pop(n_, kept.data(), got, allow_smaller, pyfastq::Clock::now());
  }

  absl::StatusOr<std::shared_ptr<RingMemory>> FindRing() {
    std::call_once(found_, [this] {
      auto mem = pyfastq::find_ring(static_cast<std::uint64_t>(queue_id_));
      if (mem != nullptr) {
        found_status_ = Validate(mem->ring());
        found_ring_ = mem;
      }
    });
    if (!found_status_.ok()) return found_status_;
    std::shared_ptr<RingMemory> mem = found_ring_.lock();
    if (mem == nullptr) {
      return absl::FailedPreconditionError(absl::StrCat(
          where_, " (id ", queue_id_, "): the queue no longer exists; keep the pyfastq.Queue alive while its ops run"));
    }
    return mem;
  }

  // A stale ring library would misread every ring: refused before any is read.
  static absl::Status CheckRingLibrary(const std::string& op) {
    if (pyfastq::ring_library_version() == pyfastq::kRingVersion) return absl::OkStatus();
    return absl::FailedPreconditionError(absl::StrCat(op, ": pyfastq's ring library is version ",
                                                      pyfastq::ring_library_version(),
                                                      ", the op library was built for version ", pyfastq::kRingVersion,
                                                      ": a stale libpyfastq_ring.so; reinstall pyfastq"));
  }

  bool batched_ = false;
  int64_t queue_id_ = 0;
  std::string queue_name_;
  std::string where_;  // "<op> on pyfastq queue '<name>'": the start of every error
  DataTypeVector types_;
  std::vector<PartialTensorShape> shapes_;      // of one element
  std::vector<PartialTensorShape> max_shapes_;  // empty unless some dims are variable
  std::vector<std::string> padding_;            // per component, one value's bytes; empty: zeros
  bool variable_ = false;
  std::vector<TensorShape> full_shapes_;        // the spec's shapes, or with variable dims the bounds
  std::vector<std::uint64_t> nbytes_;           // bytes of each component's region in a slot
  std::vector<bool> is_variable_;
  std::vector<std::uint64_t> dims_at_;          // a variable component's first dim in the dims component
  std::uint64_t dims_bytes_ = 0;                // the dims component's size; 0 without one
  std::uint64_t gather_bytes_ = 0;              // what a batch copies at most; 0 for single elements
  std::uint32_t n_ = 1;

 private:
  // Fills an output with component i's padding value (zeros unless given).
  void Pad(char* dst, std::size_t bytes, std::uint32_t i) const {
    if (padding_.empty()) {
      std::memset(dst, 0, bytes);
      return;
    }
    const std::string& value = padding_[i];
    for (std::size_t at = 0; at + value.size() <= bytes; at += value.size()) {
      std::memcpy(dst + at, value.data(), value.size());
    }
  }

  // Copies a compact array of shape `from` into the top-left corner of one of
  // shape `to` (same rank, each dim at least as large), a run of the last dim at a time.
  static void CopyPadded(const char* src, const int64_t* from, char* dst, const int64_t* to, int rank,
                         std::size_t item) {
    if (rank == 0) {
      std::memcpy(dst, src, item);
      return;
    }
    std::size_t src_stride = item, dst_stride = item;
    for (int d = 1; d < rank; ++d) {
      src_stride *= static_cast<std::size_t>(from[d]);
      dst_stride *= static_cast<std::size_t>(to[d]);
    }
    if (rank == 1) {
      std::memcpy(dst, src, static_cast<std::size_t>(from[0]) * item);
      return;
    }
    for (int64_t k = 0; k < from[0]; ++k) {
      CopyPadded(src + k * src_stride, from + 1, dst + k * dst_stride, to + 1, rank - 1, item);
    }
  }

  absl::Status Validate(const pyfastq::Ring& ring) const {
    const std::size_t components = types_.size() + (dims_bytes_ != 0 ? 1 : 0);
    if (ring.num_components() != components) {
      return absl::InvalidArgumentError(absl::StrCat(where_, ": the queue has ", ring.num_components(),
                                                     " ring components, the op expects ", components));
    }
    if (dims_bytes_ != 0 && ring.component(static_cast<std::uint32_t>(types_.size())).nbytes != dims_bytes_) {
      return absl::InvalidArgumentError(absl::StrCat(where_, ": the queue's shape component holds ",
                                                     ring.component(static_cast<std::uint32_t>(types_.size())).nbytes,
                                                     " bytes, the op expects ", dims_bytes_));
    }
    for (std::uint32_t i = 0; i < types_.size(); ++i) {
      if (ring.component(i).nbytes != nbytes_[i]) {
        return absl::InvalidArgumentError(absl::StrCat(where_, ": component ", i, " holds ", ring.component(i).nbytes,
                                                       " bytes, the op expects ", nbytes_[i], " (",
                                                       DataTypeString(types_[i]), " ", full_shapes_[i].DebugString(),
                                                       ")"));
      }
    }
    if (n_ > ring.capacity()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where_, ": n=", n_, " is more than the queue's capacity ", ring.capacity()));
    }
    return absl::OkStatus();
  }

  std::once_flag found_;
  absl::Status found_status_;             // Validate's verdict on the ring, once found
  std::weak_ptr<RingMemory> found_ring_;  // empty if the queue was gone at the first call
};

}  // namespace pyfastq_tf
}  // namespace tensorflow
