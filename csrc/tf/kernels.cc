// CPU and GPU kernels of PyfastqDequeue and PyfastqDequeueMany.
//
// Variable shapes (slots.h): dequeue aliases an element at its true shape;
// dequeue_many pads every component to the largest shape in the batch.
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
#include "slots.h"
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

using pyfastq_tf::kInterruptCheck;
using pyfastq_tf::QueueLayout;
using pyfastq_tf::RingMemory;
using pyfastq_tf::RingStatus;
using pyfastq_tf::SlotLease;
using pyfastq_tf::SlotTensor;

// The fast path spins this long on TF's thread, never parking nor yielding it:
// other iterations of the step may be what frees the ring's slots.
constexpr auto kInlineSpin = std::chrono::microseconds(5);
// A dequeue_many that copies more than this is worth a thread of TF's pool of its own.
constexpr std::uint64_t kInlineGatherBytes = 256 * 1024;
// GPU dequeue_many from a pinned ring, PYFASTQ_GPU_COPY=auto: rows of at least
// this many bytes are copied one DMA each, straight from their slots; smaller
// rows are gathered into one pinned buffer first, as one DMA per row would
// cost more in launches than the host copy it saves. A figure from paper
// (~5 us per copy against ~10 GB/s of memcpy), to be set by bench/run.py --device gpu.
constexpr std::uint64_t kRowCopyBytes = 64 * 1024;

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
class DequeueCommon : public Base, protected QueueLayout {
 public:
  explicit DequeueCommon(OpKernelConstruction* ctx) : Base(ctx) {
    const std::string& type_string = this->type_string();
    const bool batched = type_string == "PyfastqDequeueMany" || type_string == "PyfastqTryDequeueMany";
    OP_REQUIRES_OK(ctx, CheckRingLibrary(type_string));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("queue_id", &queue_id_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("queue_name", &queue_name_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("component_types", &types_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("shapes", &shapes_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("max_shapes", &max_shapes_));
    // Every error names the op and the queue.
    where_ = absl::StrCat(type_string, " on pyfastq queue '", queue_name_, "'");
    int64_t n = 1;
    if (batched) {
      OP_REQUIRES_OK(ctx, ctx->GetAttr("n", &n));
      if (ctx->HasAttr("allow_smaller_final_batch")) {
        OP_REQUIRES_OK(ctx, ctx->GetAttr("allow_smaller_final_batch", &allow_smaller_));
      }
      OP_REQUIRES_OK(ctx, ctx->GetAttr("padding", &padding_));
    }
    OP_REQUIRES_OK(ctx, InitLayout(batched, static_cast<std::uint32_t>(n)));
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

  // One element: the components alias `slot`.
  void AliasSlot(OpKernelContext* ctx, const std::shared_ptr<RingMemory>& mem, std::uint32_t slot) {
    std::vector<Tensor> components = QueueLayout::AliasSlot(std::make_shared<SlotLease>(mem, slot));
    for (std::uint32_t i = 0; i < components.size(); ++i) {
      ctx->set_output(kFirstComponent + static_cast<int>(i), std::move(components[i]));
    }
  }

  // n elements: one output per component, row r copied from slot r.
  void GatherSlots(OpKernelContext* ctx, pyfastq::Ring& ring, const std::vector<std::uint32_t>& slots,
                   std::uint32_t got) {
    OP_REQUIRES_OK(ctx, QueueLayout::GatherSlots(ring, slots.data(), got,
                                                 [ctx](std::uint32_t i, const TensorShape& shape, Tensor** out) {
                                                   return ctx->allocate_output(kFirstComponent + static_cast<int>(i),
                                                                               shape, out);
                                                 }));
  }

  bool allow_smaller_ = false;
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
        copies.push_back({SlotTensor(types_[i], full_shapes_[i], ring.slot_data(wait->slots[0]) + offset, bytes, leases[0]), *out});
        continue;
      }
      const bool rows = mode_ == CopyMode::kRows || (mode_ == CopyMode::kAuto && pinned && bytes >= kRowCopyBytes);
      if (rows) {
        // One copy per row, straight from its slot into its row of the output.
        TensorShape row = full_shapes_[i];
        row.InsertDim(0, 1);
        for (std::uint32_t r = 0; r < got; ++r) {
          copies.push_back({SlotTensor(types_[i], row, ring.slot_data(wait->slots[r]) + offset, bytes, leases[r]), out->Slice(r, r + 1)});
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

 private:
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
