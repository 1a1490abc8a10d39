// CPU kernels of PyfastqDequeue and PyfastqDequeueMany.
//
// Variable shapes: with max_shapes, the ring has one component more than the
// op's outputs, holding the true dims of every variable component (int64s,
// in component order); each element's data sits compact at the start of its
// component. dequeue aliases it at its true shape; dequeue_many pads every
// component to the largest shape in the batch.
//
// Both are AsyncOpKernels: they try the ring for a few microseconds without
// blocking, and only when it stays empty hand the wait to a thread of their
// own (kept between waits), so a starved consumer never holds one of TF's
// inter-op threads. A wait ends on data,
// close, cancel, fail, or the op's CancellationManager (session timeouts,
// step cancellation), which raises the wait's abandon flag and wakes the ring.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "pyfastq/interrupt.h"
#include "pyfastq/ring_memory.h"
#include "tensorflow/core/framework/allocation_description.pb.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor_shape.h"
#include "tensorflow/core/platform/env.h"

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
      : TensorBuffer(data), size_(size), lease_(std::move(lease)) {}
  std::size_t size() const override { return size_; }
  TensorBuffer* root_buffer() override { return this; }
  void FillAllocationDescription(AllocationDescription* proto) const override {
    proto->set_requested_bytes(static_cast<int64_t>(size_));
    proto->set_allocator_name("pyfastq_ring");
  }
  // Not ours to hand on: TF must not forward the slot as another op's output buffer.
  bool OwnsMemory() const override { return false; }

 private:
  std::size_t size_;
  std::shared_ptr<SlotLease> lease_;
};

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

class DequeueOp : public AsyncOpKernel {
 public:
  explicit DequeueOp(OpKernelConstruction* ctx) : AsyncOpKernel(ctx) {
    batched_ = type_string() == "PyfastqDequeueMany";
    OP_REQUIRES(ctx, pyfastq::ring_library_version() == pyfastq::kRingVersion,
                absl::FailedPreconditionError(absl::StrCat(
                    type_string(), ": pyfastq's ring library is version ", pyfastq::ring_library_version(),
                    ", the op library was built for version ", pyfastq::kRingVersion,
                    ": a stale libpyfastq_ring.so; reinstall pyfastq")));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("queue_id", &queue_id_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("queue_name", &queue_name_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("component_types", &types_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("shapes", &shapes_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("max_shapes", &max_shapes_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("end_as_flag", &end_as_flag_));
    // Every error names the op and the queue.
    where_ = absl::StrCat(type_string(), " on pyfastq queue '", queue_name_, "'");
    if (batched_) {
      int64_t n;
      OP_REQUIRES_OK(ctx, ctx->GetAttr("n", &n));
      OP_REQUIRES_OK(ctx, ctx->GetAttr("allow_smaller_final_batch", &allow_smaller_));
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

  void ComputeAsync(OpKernelContext* ctx, DoneCallback done) override {
    auto mem = pyfastq::find_ring(static_cast<std::uint64_t>(queue_id_));
    OP_REQUIRES_ASYNC(ctx, mem != nullptr,
                      absl::FailedPreconditionError(absl::StrCat(
                          where_, " (id ", queue_id_,
                          "): the queue no longer exists; keep the pyfastq.Queue alive while its ops run")),
                      done);
    OP_REQUIRES_OK_ASYNC(ctx, Validate(mem->ring()), done);
    mem->ring().record_fill();  // once per dequeue, as it comes: how full it finds the queue

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
      Finish(ctx, wait.get(), st);
      done();
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
        [this, ctx, wait, cm, token, done = std::move(done)](RingStatus st, bool interrupted) {
          wait->interrupted = interrupted;
          if (cm != nullptr) cm->DeregisterCallback(token);  // waits for a running callback to end
          Finish(ctx, wait.get(), st);
          done();
        }});
  }

  ~DequeueOp() override { waits_->Stop(); }

  // A dequeue that finds its data copies at most a batch, else hands its wait
  // to another thread: TF may run it inline, without a trip through its pool
  // (async kernels never get the cost estimate that would tell TF so).
  bool IsExpensive() override { return gather_bytes_ > kInlineGatherBytes; }

 private:
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
    if (n_ + ring.min_after_dequeue() > ring.capacity()) {
      return absl::InvalidArgumentError(absl::StrCat(where_, ": n=", n_, " with min_after_dequeue ",
                                                     ring.min_after_dequeue(), " is more than the queue's capacity ",
                                                     ring.capacity(), " can hold"));
    }
    return absl::OkStatus();
  }

  void Finish(OpKernelContext* ctx, Wait* wait, RingStatus st) {
    if (wait->interrupted) {
      ctx->SetStatus(
          absl::CancelledError(absl::StrCat(where_, ": interrupted by Ctrl-C (SIGINT) while waiting for data")));
      return;
    }
    switch (st) {
      case RingStatus::kOk:
        if (batched_) {
          Gather(ctx, wait);
        } else {
          Alias(ctx, wait);
        }
        return;
      case RingStatus::kClosed:
        if (end_as_flag_) {
          EmitEnd(ctx);
        } else {
          ctx->SetStatus(absl::OutOfRangeError(
              absl::StrCat(where_, ": the queue is closed and has ",
                           batched_ ? "fewer than " + std::to_string(n_) + " elements left"
                                    : std::string("no elements left"))));
        }
        return;
      case RingStatus::kCancelled:
        ctx->SetStatus(absl::CancelledError(absl::StrCat(where_, ": the queue was cancelled")));
        return;
      case RingStatus::kFailed:
        ctx->SetStatus(
            absl::AbortedError(absl::StrCat(where_, ": the queue failed: ", wait->mem->ring().fail_message())));
        return;
      case RingStatus::kAbandoned:
        ctx->SetStatus(absl::CancelledError(absl::StrCat(where_, ": the step was cancelled")));
        return;
      default:
        ctx->SetStatus(
            absl::InternalError(absl::StrCat(where_, ": unexpected ring status ", pyfastq::status_name(st))));
    }
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

  // One element: outputs that point into the slot.
  void Alias(OpKernelContext* ctx, Wait* wait) {
    pyfastq::Ring& ring = wait->mem->ring();
    const std::uint32_t slot = wait->slots[0];
    auto lease = std::make_shared<SlotLease>(wait->mem, slot);
    SetDone(ctx, false);
    OpOutputList outputs;
    OP_REQUIRES_OK(ctx, ctx->output_list("components", &outputs));
    for (std::uint32_t i = 0; i < types_.size(); ++i) {
      const TensorShape shape = ShapeIn(ring, slot, i);
      const std::size_t bytes = static_cast<std::size_t>(shape.num_elements()) * DataTypeSize(types_[i]);
      auto* buf = new SlotBuffer(ring.slot_data(slot) + ring.component(i).offset, bytes, lease);
      outputs.set(static_cast<int>(i), Tensor(types_[i], shape, buf));
      buf->Unref();  // the Tensor holds its own reference
    }
  }

  // n elements: one output per component, row r copied from slot r; with
  // variable shapes, padded to the largest shape in the batch.
  void Gather(OpKernelContext* ctx, Wait* wait) {
    pyfastq::Ring& ring = wait->mem->ring();
    const std::uint32_t got = wait->got;
    // Slots go back to producers however this ends.
    struct Release {
      pyfastq::Ring& ring;
      const std::vector<std::uint32_t>& slots;
      std::uint32_t n;
      ~Release() {
        ring.release_many(slots.data(), n);
      }
    } release{ring, wait->slots, got};
    SetDone(ctx, false);
    OpOutputList outputs;
    OP_REQUIRES_OK(ctx, ctx->output_list("components", &outputs));
    std::vector<TensorShape> rows(got);
    for (std::uint32_t i = 0; i < types_.size(); ++i) {
      const std::uint64_t offset = ring.component(i).offset;
      const std::size_t item = static_cast<std::size_t>(DataTypeSize(types_[i]));
      TensorShape shape = full_shapes_[i];
      bool ragged = false;
      if (is_variable_[i]) {
        for (std::uint32_t r = 0; r < got; ++r) rows[r] = ShapeIn(ring, wait->slots[r], i);
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
      OP_REQUIRES_OK(ctx, outputs.allocate(static_cast<int>(i), shape, &out));
      char* dst = const_cast<char*>(out->tensor_data().data());
      if (!ragged) {
        for (std::uint32_t r = 0; r < got; ++r) {
          std::memcpy(dst + r * row_bytes, ring.slot_data(wait->slots[r]) + offset, row_bytes);
        }
        continue;
      }
      Pad(dst, out->TotalBytes(), i);
      const auto batch_dims = shape.dim_sizes();
      const std::vector<int64_t> to(batch_dims.begin() + 1, batch_dims.end());
      for (std::uint32_t r = 0; r < got; ++r) {
        const auto row_dims = rows[r].dim_sizes();
        const std::vector<int64_t> from(row_dims.begin(), row_dims.end());
        CopyPadded(reinterpret_cast<const char*>(ring.slot_data(wait->slots[r]) + offset), from.data(),
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

  void SetDone(OpKernelContext* ctx, bool value) {
    Tensor* done = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output("done", TensorShape({}), &done));
    done->scalar<bool>()() = value;
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
  std::shared_ptr<WaitThread> waits_ = std::make_shared<WaitThread>();
};

REGISTER_KERNEL_BUILDER(Name("PyfastqDequeue").Device(DEVICE_CPU), DequeueOp);
REGISTER_KERNEL_BUILDER(Name("PyfastqDequeueMany").Device(DEVICE_CPU), DequeueOp);

}  // namespace
}  // namespace tensorflow
