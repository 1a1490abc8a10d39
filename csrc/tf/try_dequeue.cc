// PyfastqTryDequeue and PyfastqTryDequeueMany: a dequeue that never waits.
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "dequeue_kernel.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor_shape.h"

namespace tensorflow {
namespace pyfastq_tf {
namespace {

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
    std::uint32_t* slots;
    std::uint32_t got;
    const bool ok = FirstTry(ring, /*allow_smaller=*/false, &slots, &got) == RingStatus::kOk;  // all n or nothing
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

}  // namespace

REGISTER_KERNEL_BUILDER(Name("PyfastqTryDequeue").Device(DEVICE_CPU), TryDequeueOp);
REGISTER_KERNEL_BUILDER(Name("PyfastqTryDequeueMany").Device(DEVICE_CPU), TryDequeueOp);

}  // namespace pyfastq_tf
}  // namespace tensorflow
