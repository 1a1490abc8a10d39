// CPU and GPU kernels of PyfastqDequeue and PyfastqDequeueMany.
//
// Variable shapes: with max_shapes, the ring has one component more than the
// op's outputs, holding the true dims of every variable component (int64s,
// in component order); each element's data sits compact at the start of its
// component. dequeue aliases it at its true shape; dequeue_many pads every
// component to the largest shape in the batch.
//
// All are AsyncOpKernels: they try the ring for a few microseconds without
// blocking, and only when it stays empty hand the wait to a thread of their
// own (kept between waits), so a starved consumer never holds one of TF's
// inter-op threads. A wait ends on data,
// close, cancel, fail, or the op's CancellationManager (session timeouts,
// step cancellation), which raises the wait's abandon flag and wakes the ring.
//
// The GPU kernels wait the same way, then copy as TF's _CopyFromHostToGpu
// does (grappler/optimizers/gpu_swapping_kernels.cc): outputs allocated on the
// device, DeviceContext::CopyCPUTensorToDevice from the slots, and the op done
// in the copies' callback (transfer.h). A slot goes back to producers as soon as
// nothing reads it: rows gathered into staging at once, a slot TF stages itself
// (an unpinned ring) when its copy is issued, a slot DMA'd from when it is done.
// The first GPU dequeue of a ring pins it (RingMemory::pin), so the copies
// are DMA from the slots themselves. Nothing here needs CUDA to compile: the
// copy is TF's, the pinning dlopens the CUDA runtime.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "pyfastq/interrupt.h"
#include "pyfastq/ring_memory.h"
#include "transfer.h"
#include "tensorflow/core/framework/allocation_description.pb.h"
#include "tensorflow/core/framework/allocator.h"
#include "tensorflow/core/framework/device.h"
#include "tensorflow/core/framework/device_base.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor_shape.h"
#include "tensorflow/core/platform/env.h"
#include "tensorflow/core/platform/logging.h"

namespace tensorflow {
namespace {

using pyfastq::RingMemory;
using RingStatus = pyfastq::Status;

// The fast path spins this long on TF's thread, never parking nor yielding it:
// other iterations of the step may be what frees the ring's slots.
constexpr auto kInlineSpin = std::chrono::microseconds(5);
// A dequeue_many that copies more than this is worth a thread of TF's pool of its own.
constexpr std::uint64_t kInlineGatherBytes = 256 * 1024;
// A parked wait re-checks for Ctrl-C (pyfastq::take_consumer_interrupt) this often.
constexpr auto kInterruptCheck = std::chrono::milliseconds(50);
// GPU dequeue_many from a pinned ring, PYFASTQ_GPU_COPY=auto: rows of at least
// this many bytes are copied one DMA each, straight from their slots; smaller
// rows are gathered into one pinned buffer first, as one DMA per row would
// cost more in launches than the host copy it saves. A figure from paper
// (~5 us per copy against ~10 GB/s of memcpy), to be set by bench/run.py --device gpu.
constexpr std::uint64_t kRowCopyBytes = 64 * 1024;

// Gives a slot back to producers when the last tensor aliasing it is freed.
struct SlotLease {
  SlotLease(std::shared_ptr<RingMemory> m, std::uint32_t s) : mem(std::move(m)), slot(s) {}
  ~SlotLease() { mem->ring().release(slot); }
  std::shared_ptr<RingMemory> mem;
  std::uint32_t slot;
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

// Issues a GPU dequeue's copies through the op's device context and ends the op once they are done.
void StartTransfer(OpKernelContext* ctx, std::vector<pyfastq_gpu::Transfer::Copy> copies,
                   AsyncOpKernel::DoneCallback done) {
  DeviceContext* dc = ctx->op_device_context();
  if (dc == nullptr && !copies.empty()) {
    ctx->SetStatus(absl::InternalError("pyfastq dequeue: the GPU kernel has no device context"));
    done();
    return;
  }
  pyfastq_gpu::Transfer::Start(dc, static_cast<Device*>(ctx->device()), std::move(copies),
                               [ctx, done = std::move(done)](const absl::Status& s) {
                                 ctx->SetStatus(s);
                                 done();
                               });
}

// Where a GPU dequeue_many copies its rows from (PYFASTQ_GPU_COPY).
enum class CopyMode { kAuto, kGather, kRows };

// Waits served in arrival order by one thread, kept between waits: starting
// a thread per starved dequeue (Env::SchedClosure) costs more than a batch
// takes to arrive. Not one of TF's pools either: a wait may last the whole
// run. The thread ends after kIdle without work and starts again on demand.
class WaitThread : public std::enable_shared_from_this<WaitThread> {
 public:
  struct Job {
    // Waits at most one slice, ending early once `attention` is raised; kTimeout: not yet.
    std::function<RingStatus(const std::atomic<bool>* attention)> wait;
    const std::atomic<bool>* abandon;  // the job's own flag, raised when its step is cancelled
    std::function<void(RingStatus, bool interrupted)> finish;  // runs on the thread, with no lock held
  };

  // any thread.
  void Add(Job job) {
    std::lock_guard<std::mutex> lock(mu_);
    jobs_.push_back(std::move(job));
    if (!running_) {
      running_ = true;
      std::thread([self = shared_from_this()] { self->Serve(); }).detach();
    } else if (idle_) {
      ready_.notify_one();
    }
  }
  // any thread, after raising a job's abandon flag and waking the ring: look at every job, not only the first.
  void Attend() { attention_.store(true, std::memory_order_release); }
  // owner only, when no job is left: the thread ends.
  void Stop() {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    ready_.notify_one();
  }

 private:
  static constexpr auto kIdle = std::chrono::seconds(1);

  void Serve() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      if (jobs_.empty()) {
        idle_ = true;
        const bool work = ready_.wait_for(lock, kIdle, [this] { return !jobs_.empty() || stop_; });
        idle_ = false;
        if (!work || jobs_.empty()) {
          running_ = false;
          return;
        }
      }
      Job& head = jobs_.front();
      lock.unlock();
      const RingStatus st = head.wait(&attention_);
      std::vector<std::pair<Job, bool>> done;  // (job, interrupted), finished outside the lock
      lock.lock();
      if (st == RingStatus::kAbandoned) {
        attention_.store(false, std::memory_order_release);  // before looking: a later raise is seen next time
        for (auto it = jobs_.begin(); it != jobs_.end();) {
          if (it->abandon->load(std::memory_order_acquire)) {
            done.emplace_back(std::move(*it), false);
            it = jobs_.erase(it);
          } else {
            ++it;
          }
        }
      } else if (st != RingStatus::kTimeout) {
        done.emplace_back(std::move(jobs_.front()), false);
        jobs_.pop_front();
      } else if (pyfastq::take_consumer_interrupt()) {
        while (!jobs_.empty()) {  // Ctrl-C ends every waiting dequeue
          done.emplace_back(std::move(jobs_.front()), true);
          jobs_.pop_front();
        }
      }
      lock.unlock();
      for (auto& [job, interrupted] : done) job.finish(interrupted ? RingStatus::kAbandoned : st, interrupted);
      lock.lock();
    }
  }

  std::mutex mu_;
  std::condition_variable ready_;
  std::deque<Job> jobs_;
  std::atomic<bool> attention_{false};
  bool running_ = false;
  bool idle_ = false;
  bool stop_ = false;
};

// One dequeue in flight: shared by the kernel, the waiting thread and the cancellation callback.
struct Wait {
  std::shared_ptr<RingMemory> mem;
  std::vector<std::uint32_t> slots;
  std::uint32_t got = 0;
  std::atomic<bool> abandon{false};
  bool interrupted = false;
};

// What every dequeue kernel shares: attributes, checks, and reading a slot.
// Base is AsyncOpKernel for the waiting kernels, OpKernel for PyfastqTryDequeue.
template <class Base>
class DequeueCommon : public Base {
 public:
  explicit DequeueCommon(OpKernelConstruction* ctx) : Base(ctx) {
    const std::string& type_string = this->type_string();
    batched_ = type_string == "PyfastqDequeueMany" || type_string == "PyfastqTryDequeueMany";
    OP_REQUIRES(ctx, pyfastq::ring_library_version() == pyfastq::kRingVersion,
                absl::FailedPreconditionError(absl::StrCat(
                    type_string, ": pyfastq's ring library is version ", pyfastq::ring_library_version(),
                    ", the op library was built for version ", pyfastq::kRingVersion,
                    ": a stale libpyfastq_ring.so; reinstall pyfastq")));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("queue_id", &queue_id_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("queue_name", &queue_name_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("component_types", &types_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("shapes", &shapes_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("max_shapes", &max_shapes_));
    if (ctx->HasAttr("end_as_flag")) OP_REQUIRES_OK(ctx, ctx->GetAttr("end_as_flag", &end_as_flag_));
    // Every error names the op and the queue.
    where_ = absl::StrCat(type_string, " on pyfastq queue '", queue_name_, "'");
    if (batched_) {
      int64_t n;
      OP_REQUIRES_OK(ctx, ctx->GetAttr("n", &n));
      if (ctx->HasAttr("allow_smaller_final_batch")) {
        OP_REQUIRES_OK(ctx, ctx->GetAttr("allow_smaller_final_batch", &allow_smaller_));
      }
      OP_REQUIRES_OK(ctx, ctx->GetAttr("padding", &padding_));
      n_ = static_cast<std::uint32_t>(n);
    }
    OP_REQUIRES(ctx, shapes_.size() == types_.size(),
                absl::InvalidArgumentError(
                    absl::StrCat(where_, ": ", shapes_.size(), " shapes for ", types_.size(), " component types")));
    variable_ = !max_shapes_.empty();
    OP_REQUIRES(ctx, !variable_ || max_shapes_.size() == types_.size(),
                absl::InvalidArgumentError(absl::StrCat(where_, ": ", max_shapes_.size(), " max_shapes for ",
                                                        types_.size(), " component types")));
    OP_REQUIRES(ctx, padding_.empty() || padding_.size() == types_.size(),
                absl::InvalidArgumentError(
                    absl::StrCat(where_, ": ", padding_.size(), " padding values for ", types_.size(), " components")));
    std::uint64_t dims = 0;
    for (size_t i = 0; i < shapes_.size(); ++i) {
      const PartialTensorShape& bound = variable_ ? max_shapes_[i] : shapes_[i];
      OP_REQUIRES(ctx, bound.IsFullyDefined() && bound.IsCompatibleWith(shapes_[i]),
                  absl::InvalidArgumentError(absl::StrCat(where_, ": component ", i, " has shape ",
                                                          shapes_[i].DebugString(), " and bound ", bound.DebugString(),
                                                          ": the bound must be fully defined and fit the shape")));
      OP_REQUIRES(ctx, padding_.empty() || padding_[i].size() == static_cast<size_t>(DataTypeSize(types_[i])),
                  absl::InvalidArgumentError(absl::StrCat(where_, ": component ", i, "'s padding has ",
                                                          padding_[i].size(), " bytes, not one ",
                                                          DataTypeString(types_[i]))));
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
  }

  // A dequeue that finds its data copies at most a batch (a waiting one hands
  // its wait to another thread): TF may run it inline, without a trip through
  // its pool. Async kernels never get the cost estimate that would tell TF so.
  bool IsExpensive() override { return gather_bytes_ > kInlineGatherBytes; }

 protected:
  // Every dequeue op's outputs are a host-memory bool scalar (`done` in the
  // waiting kernels, `ok` in the tries), then the components. The hot paths
  // address them by index: a lookup by name costs a search per call.
  static constexpr int kFlagOutput = 0;
  static constexpr int kFirstComponent = 1;

  void SetFlag(OpKernelContext* ctx, bool value) {
    Tensor* flag = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(kFlagOutput, TensorShape({}), &flag));
    flag->scalar<bool>()() = value;
  }
  void SetDone(OpKernelContext* ctx, bool value) { SetFlag(ctx, value); }

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

  bool batched_ = false;
  int64_t queue_id_ = 0;
  std::string queue_name_;
  std::string where_;  // "<op> on pyfastq queue '<name>'": the start of every error
  DataTypeVector types_;
  std::vector<PartialTensorShape> shapes_;
  std::vector<PartialTensorShape> max_shapes_;  // empty unless some dims are variable
  std::vector<std::string> padding_;            // per component, one value's bytes; empty: zeros
  bool variable_ = false;
  std::vector<TensorShape> full_shapes_;        // the spec's shapes, or with variable dims the bounds
  std::vector<std::uint64_t> nbytes_;           // bytes of each component's region in a slot
  std::vector<bool> is_variable_;
  std::vector<std::uint64_t> dims_at_;          // a variable component's first dim in the dims component
  std::uint64_t dims_bytes_ = 0;                // the dims component's size; 0 without one
  std::uint64_t gather_bytes_ = 0;              // what a dequeue_many copies at most; 0 for dequeue
  bool end_as_flag_ = false;
  bool allow_smaller_ = false;
  std::uint32_t n_ = 1;
  std::once_flag found_;
  absl::Status found_status_;             // Validate's verdict on the ring, once found
  std::weak_ptr<RingMemory> found_ring_;  // empty if the queue was gone at the first dequeue

  // One element: the components as tensors that point into `slot`, which
  // goes back to producers when the last of them is freed.
  void AliasSlot(OpKernelContext* ctx, const std::shared_ptr<RingMemory>& mem, std::uint32_t slot) {
    const pyfastq::Ring& ring = mem->ring();
    auto lease = std::make_shared<SlotLease>(mem, slot);
    for (std::uint32_t i = 0; i < types_.size(); ++i) {
      const TensorShape shape = ShapeIn(ring, slot, i);
      const std::size_t bytes = static_cast<std::size_t>(shape.num_elements()) * DataTypeSize(types_[i]);
      auto* buf = new SlotBuffer(ring.slot_data(slot) + ring.component(i).offset, bytes, lease);
      ctx->set_output(kFirstComponent + static_cast<int>(i), Tensor(types_[i], shape, buf));
      buf->Unref();  // the Tensor holds its own reference
    }
  }

  // n elements: one output per component, row r copied from slot r; with
  // variable shapes, padded to the largest shape in the batch.
  void GatherSlots(OpKernelContext* ctx, pyfastq::Ring& ring, const std::vector<std::uint32_t>& slots,
                   std::uint32_t got) {
    // Slots go back to producers however this ends.
    struct Release {
      pyfastq::Ring& ring;
      const std::vector<std::uint32_t>& slots;
      std::uint32_t n;
      ~Release() {
        ring.release_many(slots.data(), n);
      }
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
      shape.InsertDim(0, got);
      Tensor* out = nullptr;
      OP_REQUIRES_OK(ctx, ctx->allocate_output(kFirstComponent + static_cast<int>(i), shape, &out));
      char* dst = const_cast<char*>(out->tensor_data().data());
      if (!ragged) {
        for (std::uint32_t r = 0; r < got; ++r) {
          std::memcpy(dst + r * row_bytes, ring.slot_data(slots[r]) + offset, row_bytes);
        }
        continue;
      }
      Pad(dst, out->TotalBytes(), i);
      const auto batch_dims = shape.dim_sizes();
      const std::vector<int64_t> to(batch_dims.begin() + 1, batch_dims.end());
      for (std::uint32_t r = 0; r < got; ++r) {
        const auto row_dims = rows[r].dim_sizes();
        const std::vector<int64_t> from(row_dims.begin(), row_dims.end());
        CopyPadded(reinterpret_cast<const char*>(ring.slot_data(slots[r]) + offset), from.data(),
                   dst + r * row_bytes, to.data(), static_cast<int>(to.size()), item);
      }
    }
  }

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

  // The queue's ring, found and checked by the first dequeue: a queue id is
  // never reused and a ring's layout never changes, so later ones only lock it.
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

};

// The waiting kernels (CPU and GPU): a short spin on TF's thread, then the
// wait thread.
class DequeueOp : public DequeueCommon<AsyncOpKernel> {
 public:
  explicit DequeueOp(OpKernelConstruction* ctx) : DequeueCommon(ctx) {
    if (ctx->HasAttr("record_fill")) OP_REQUIRES_OK(ctx, ctx->GetAttr("record_fill", &record_fill_));
  }

  void ComputeAsync(OpKernelContext* ctx, DoneCallback done) override {
    auto found = FindRing();
    OP_REQUIRES_OK_ASYNC(ctx, found.status(), done);
    std::shared_ptr<RingMemory> mem = *std::move(found);
    // Once per dequeue, as it comes: how full it finds the queue (not again
    // after a PyfastqTryDequeue that found nothing: record_fill=false).
    if (record_fill_) mem->ring().record_fill();
    Prepare(*mem);

    auto wait = std::make_shared<Wait>();
    wait->mem = std::move(mem);
    wait->slots.resize(n_);
    pyfastq::Ring& ring = wait->mem->ring();
    // Fast path: a short spin of single tries (a deadline that has passed
    // makes pop one try). A producer that keeps pace commits within it, which
    // costs far less than handing the wait to another thread. Parking or
    // yielding here instead would hold TF's thread while the step's other
    // iterations, which release slots, wait behind it.
    const auto spin_until = pyfastq::Clock::now() + kInlineSpin;
    RingStatus st;
    do {
      st = ring.pop(n_, wait->slots.data(), &wait->got, allow_smaller_, pyfastq::Clock::now());
    } while (st == RingStatus::kTimeout && pyfastq::Clock::now() < spin_until);
    if (st != RingStatus::kTimeout) {
      Finish(ctx, wait, st, std::move(done));
      return;
    }

    CancellationManager* cm = ctx->cancellation_manager();
    CancellationToken token = CancellationManager::kInvalidToken;
    if (cm != nullptr) {
      token = cm->get_cancellation_token();
      const bool registered = cm->RegisterCallback(token, [wait, waits = waits_] {
        wait->abandon.store(true, std::memory_order_release);
        waits->Attend();
        wait->mem->ring().wake_all();
      });
      OP_REQUIRES_ASYNC(ctx, registered,
                        absl::CancelledError(absl::StrCat(where_, ": the step was cancelled")),
                        done);
    }
    waits_->Add(WaitThread::Job{
        [this, wait](const std::atomic<bool>* attention) {
          return wait->mem->ring().pop(n_, wait->slots.data(), &wait->got, allow_smaller_,
                                       pyfastq::Clock::now() + kInterruptCheck, attention);
        },
        &wait->abandon,
        [this, ctx, wait, cm, token, done = std::move(done)](RingStatus st, bool interrupted) mutable {
          wait->interrupted = interrupted;
          if (cm != nullptr) cm->DeregisterCallback(token);  // waits for a running callback to end
          Finish(ctx, wait, st, std::move(done));
        }});
  }

  ~DequeueOp() override { waits_->Stop(); }

 protected:
  // Before the first try of each dequeue.
  virtual void Prepare(RingMemory& /*mem*/) {}
  // kOk: wait->got elements in wait->slots, which Deliver owns from here on. Calls done.
  virtual void Deliver(OpKernelContext* ctx, std::shared_ptr<Wait> wait, DoneCallback done) = 0;
  // Closed and drained, with end_as_flag: done=true and empty (or zero) components. Calls done.
  virtual void DeliverEnd(OpKernelContext* ctx, DoneCallback done) = 0;

 private:
  void Finish(OpKernelContext* ctx, std::shared_ptr<Wait> wait, RingStatus st, DoneCallback done) {
    if (wait->interrupted) {
      ctx->SetStatus(
          absl::CancelledError(absl::StrCat(where_, ": interrupted by Ctrl-C (SIGINT) while waiting for data")));
      done();
      return;
    }
    switch (st) {
      case RingStatus::kOk:
        Deliver(ctx, std::move(wait), std::move(done));
        return;
      case RingStatus::kClosed:
        if (end_as_flag_) {
          DeliverEnd(ctx, std::move(done));
          return;
        }
        ctx->SetStatus(absl::OutOfRangeError(
            absl::StrCat(where_, ": the queue is closed and has ",
                         batched_ ? "fewer than " + std::to_string(n_) + " elements left"
                                  : std::string("no elements left"))));
        break;
      case RingStatus::kCancelled:
        ctx->SetStatus(absl::CancelledError(absl::StrCat(where_, ": the queue was cancelled")));
        break;
      case RingStatus::kFailed:
        ctx->SetStatus(
            absl::AbortedError(absl::StrCat(where_, ": the queue failed: ", wait->mem->ring().fail_message())));
        break;
      case RingStatus::kAbandoned:
        ctx->SetStatus(absl::CancelledError(absl::StrCat(where_, ": the step was cancelled")));
        break;
      default:
        ctx->SetStatus(
            absl::InternalError(absl::StrCat(where_, ": unexpected ring status ", pyfastq::status_name(st))));
    }
    done();
  }

  std::shared_ptr<WaitThread> waits_ = std::make_shared<WaitThread>();
  bool record_fill_ = true;
};

// Outputs in host memory: one element aliases its slot, n elements are gathered into one tensor.
class CpuDequeueOp : public DequeueOp {
 public:
  using DequeueOp::DequeueOp;

 protected:
  void Deliver(OpKernelContext* ctx, std::shared_ptr<Wait> wait, DoneCallback done) override {
    SetDone(ctx, false);
    if (batched_) {
      GatherSlots(ctx, wait->mem->ring(), wait->slots, wait->got);
    } else {
      AliasSlot(ctx, wait->mem, wait->slots[0]);
    }
    done();
  }

  void DeliverEnd(OpKernelContext* ctx, DoneCallback done) override {
    EmitEnd(ctx);
    done();
  }

 private:
  // Closed and drained, with end_as_flag: done=true and empty (or zero) components.
  void EmitEnd(OpKernelContext* ctx) {
    SetDone(ctx, true);
    OpOutputList outputs;
    OP_REQUIRES_OK(ctx, ctx->output_list("components", &outputs));
    for (std::uint32_t i = 0; i < types_.size(); ++i) {
      TensorShape shape = full_shapes_[i];
      for (int d = 0; d < shape.dims(); ++d) {
        if (shapes_[i].dim_size(d) < 0) shape.set_dim(d, 0);  // a variable dim: empty
      }
      if (batched_) shape.InsertDim(0, 0);
      Tensor* out = nullptr;
      OP_REQUIRES_OK(ctx, outputs.allocate(static_cast<int>(i), shape, &out));
      if (out->TotalBytes() > 0) std::memset(const_cast<char*>(out->tensor_data().data()), 0, out->TotalBytes());
    }
  }

};

// Outputs in device memory, copied from the slots by the device context; `done` stays in host memory.
class GpuDequeueOp : public DequeueOp {
 public:
  explicit GpuDequeueOp(OpKernelConstruction* ctx) : DequeueOp(ctx) {
    const char* mode = std::getenv("PYFASTQ_GPU_COPY");
    const std::string m = mode == nullptr ? "" : mode;
    OP_REQUIRES(ctx, m.empty() || m == "auto" || m == "gather" || m == "rows",
                absl::InvalidArgumentError(absl::StrCat(
                    where_, ": PYFASTQ_GPU_COPY is '", m, "'; it must be auto, gather or rows (or unset)")));
    mode_ = m == "gather" ? CopyMode::kGather : m == "rows" ? CopyMode::kRows : CopyMode::kAuto;
    // Not yet: the device copies assume every element at its full shape.
    OP_REQUIRES(ctx, !variable_,
                absl::UnimplementedError(absl::StrCat(
                    where_, ": variable shapes (max_shapes) have no GPU kernel yet; dequeue on the CPU "
                    "(with tf.device(\"/CPU:0\")) and copy, or use fixed shapes")));
  }

 protected:
  // Pinned once per ring and process (RingMemory::pin keeps the first answer): where there is no
  // CUDA runtime or it refuses, the copies stay correct and TF stages them through its own pinned buffer.
  void Prepare(RingMemory& mem) override {
    if (mem.pin()) return;
    // Once per process: an unpinned ring stays correct, only slower, and every ring fails alike.
    static std::once_flag warned;
    std::call_once(warned, [&] {
      std::string why;
      mem.pin(&why);
      if (why.rfind("pinning disabled", 0) == 0) return;  // PYFASTQ_CUDART=0: asked for
      LOG(WARNING) << where_ << ": the queue's ring could not be pinned (" << why
                   << "); its GPU copies go through TensorFlow's staging buffer, a host copy more per batch. "
                   << "PYFASTQ_CUDART=/path/to/libcudart.so.N names the CUDA runtime to pin with; "
                   << "PYFASTQ_CUDART=0 turns pinning off without this warning.";
    });
  }

  void Deliver(OpKernelContext* ctx, std::shared_ptr<Wait> wait, DoneCallback done) override {
    pyfastq::Ring& ring = wait->mem->ring();
    const std::uint32_t got = wait->got;
    // From here the slots are held by leases: however this ends, they go back once nothing reads them.
    std::vector<std::shared_ptr<SlotLease>> leases;
    leases.reserve(got);
    for (std::uint32_t r = 0; r < got; ++r) leases.push_back(std::make_shared<SlotLease>(wait->mem, wait->slots[r]));
    const bool pinned = wait->mem->pinned();

    SetDone(ctx, false);
    if (!ctx->status().ok()) return done();
    OpOutputList outputs;
    OP_REQUIRES_OK_ASYNC(ctx, ctx->output_list("components", &outputs), done);
    std::vector<pyfastq_gpu::Transfer::Copy> copies;
    for (std::uint32_t i = 0; i < types_.size(); ++i) {
      const std::uint64_t offset = ring.component(i).offset;
      const std::size_t bytes = nbytes_[i];
      TensorShape shape = full_shapes_[i];
      if (batched_) shape.InsertDim(0, got);
      Tensor* out = nullptr;
      OP_REQUIRES_OK_ASYNC(ctx, outputs.allocate(static_cast<int>(i), shape, &out), done);
      if (!batched_) {
        copies.push_back({SlotTensor(types_[i], full_shapes_[i], ring, offset, bytes, leases[0]), *out});
        continue;
      }
      const bool rows = mode_ == CopyMode::kRows || (mode_ == CopyMode::kAuto && pinned && bytes >= kRowCopyBytes);
      if (rows) {
        // One copy per row, straight from its slot into its row of the output.
        TensorShape row = full_shapes_[i];
        row.InsertDim(0, 1);
        for (std::uint32_t r = 0; r < got; ++r) {
          copies.push_back({SlotTensor(types_[i], row, ring, offset, bytes, leases[r]), out->Slice(r, r + 1)});
        }
      } else {
        // Rows gathered into pinned host memory from TF's GPU host allocator, then one copy.
        Tensor staging;
        OP_REQUIRES_OK_ASYNC(ctx, ctx->allocate_temp(types_[i], shape, &staging, HostPinned()), done);
        char* dst = const_cast<char*>(staging.tensor_data().data());
        for (std::uint32_t r = 0; r < got; ++r) {
          std::memcpy(dst + r * bytes, ring.slot_data(wait->slots[r]) + offset, bytes);
        }
        copies.push_back({std::move(staging), *out});
      }
    }
    // What no copy reads (rows gathered into staging) goes back to producers now; a slot tensor in
    // `copies` holds its own lease until its copy no longer needs it.
    leases.clear();
    StartTransfer(ctx, std::move(copies), std::move(done));
  }

  void DeliverEnd(OpKernelContext* ctx, DoneCallback done) override {
    SetDone(ctx, true);
    if (!ctx->status().ok()) return done();
    OpOutputList outputs;
    OP_REQUIRES_OK_ASYNC(ctx, ctx->output_list("components", &outputs), done);
    std::vector<pyfastq_gpu::Transfer::Copy> copies;
    for (std::uint32_t i = 0; i < types_.size(); ++i) {
      TensorShape shape = full_shapes_[i];
      if (batched_) shape.InsertDim(0, 0);
      Tensor* out = nullptr;
      OP_REQUIRES_OK_ASYNC(ctx, outputs.allocate(static_cast<int>(i), shape, &out), done);
      if (out->TotalBytes() == 0) continue;
      // Zeros, copied over: no device memset without CUDA at compile time, and this happens once per run.
      Tensor zeros;
      OP_REQUIRES_OK_ASYNC(ctx, ctx->allocate_temp(types_[i], shape, &zeros, HostPinned()), done);
      std::memset(const_cast<char*>(zeros.tensor_data().data()), 0, zeros.TotalBytes());
      copies.push_back({std::move(zeros), *out});
    }
    StartTransfer(ctx, std::move(copies), std::move(done));
  }

 private:
  // A host tensor over one component of a slot; its buffer holds the slot's lease.
  static Tensor SlotTensor(DataType type, const TensorShape& shape, pyfastq::Ring& ring, std::uint64_t offset,
                           std::size_t bytes, const std::shared_ptr<SlotLease>& lease) {
    auto* buf = new SlotBuffer(ring.slot_data(lease->slot) + offset, bytes, lease);
    Tensor t(type, shape, buf);
    buf->Unref();  // the Tensor holds its own reference
    return t;
  }

  // Host memory the GPU can DMA from: TF's pinned host allocator.
  static AllocatorAttributes HostPinned() {
    AllocatorAttributes attrs;
    attrs.set_on_host(true);
    attrs.set_gpu_compatible(true);
    return attrs;
  }

  CopyMode mode_ = CopyMode::kAuto;
};

// PyfastqTryDequeue: one element if one is ready now, else ok=false and
// nothing taken; it never waits. A sync kernel, so TF runs what consumes its
// outputs inline on the same thread, where the waiting kernel's completion
// (an async kernel's done) sends every successor through TF's inter-op pool.
// Queue.dequeue (dequeue_many) in a graph tries with it first and waits with
// PyfastqDequeue (PyfastqDequeueMany) only when it finds nothing.
class TryDequeueOp : public DequeueCommon<OpKernel> {
 public:
  using DequeueCommon::DequeueCommon;

  void Compute(OpKernelContext* ctx) override {
    auto found = FindRing();
    OP_REQUIRES_OK(ctx, found.status());
    const std::shared_ptr<RingMemory> mem = *std::move(found);
    pyfastq::Ring& ring = mem->ring();
    ring.record_fill();
    thread_local std::vector<std::uint32_t> slots;  // this thread's, kept: no allocation per try
    slots.resize(n_);
    std::uint32_t got = 0;
    // A deadline that has passed: a single try, all n or nothing.
    const bool ok = ring.pop(n_, slots.data(), &got, false, pyfastq::Clock::now()) == RingStatus::kOk;
    SetFlag(ctx, ok);
    if (ok && batched_) {
      GatherSlots(ctx, ring, slots, got);
      return;
    }
    if (ok) {
      AliasSlot(ctx, mem, slots[0]);
      return;
    }
    // Nothing taken: placeholders (no rows, or a zero scalar), never handed on.
    for (std::uint32_t i = 0; i < types_.size(); ++i) {
      TensorShape shape = full_shapes_[i];
      if (batched_) {
        shape.InsertDim(0, 0);
      } else if (shape.dims() > 0) {
        shape.set_dim(0, 0);
      }
      Tensor* out = nullptr;
      OP_REQUIRES_OK(ctx, ctx->allocate_output(kFirstComponent + static_cast<int>(i), shape, &out));
      if (out->TotalBytes() > 0) std::memset(const_cast<char*>(out->tensor_data().data()), 0, out->TotalBytes());
    }
  }

};

REGISTER_KERNEL_BUILDER(Name("PyfastqDequeue").Device(DEVICE_CPU), CpuDequeueOp);
REGISTER_KERNEL_BUILDER(Name("PyfastqTryDequeue").Device(DEVICE_CPU), TryDequeueOp);
REGISTER_KERNEL_BUILDER(Name("PyfastqTryDequeueMany").Device(DEVICE_CPU), TryDequeueOp);
REGISTER_KERNEL_BUILDER(Name("PyfastqDequeueMany").Device(DEVICE_CPU), CpuDequeueOp);
// Registered in every build: DEVICE_GPU is a name, and a CPU-only TF never places a kernel on it.
REGISTER_KERNEL_BUILDER(Name("PyfastqDequeue").Device(DEVICE_GPU).HostMemory("done"), GpuDequeueOp);
REGISTER_KERNEL_BUILDER(Name("PyfastqDequeueMany").Device(DEVICE_GPU).HostMemory("done"), GpuDequeueOp);

}  // namespace
}  // namespace tensorflow
