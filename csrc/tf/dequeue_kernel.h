// What every dequeue kernel shares (DequeueCommon: attributes, checks,
// reading a slot), and the waiting kernels' base (DequeueOp: a short spin on
// TF's thread, then the wait thread).
//
// Variable shapes (slots.h): dequeue aliases an element at its true shape;
// dequeue_many pads every component to the largest shape in the batch.
//
// The waiting kernels are AsyncOpKernels: they try the ring for a few
// microseconds without blocking, and only when it stays empty hand the wait
// to a thread of their own (wait_thread.h, kept between waits), so a starved
// consumer never holds one of TF's inter-op threads. A wait ends on data,
// close, cancel, fail, or the op's CancellationManager (session timeouts,
// step cancellation), which raises the wait's abandon flag and wakes the ring.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "pyfastq/ring_memory.h"
#include "slots.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor_shape.h"
#include "wait_thread.h"

namespace tensorflow {
namespace pyfastq_tf {

// The fast path spins this long on TF's thread, never parking nor yielding it:
// other iterations of the step may be what frees the ring's slots.
constexpr auto kInlineSpin = std::chrono::microseconds(5);
// A dequeue_many that copies more than this is worth a thread of TF's pool of its own.
constexpr std::uint64_t kInlineGatherBytes = 256 * 1024;

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
  void GatherSlots(OpKernelContext* ctx, pyfastq::Ring& ring, const std::uint32_t* slots, std::uint32_t got) {
    OP_REQUIRES_OK(ctx, QueueLayout::GatherSlots(ring, slots, got,
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

}  // namespace pyfastq_tf
}  // namespace tensorflow
