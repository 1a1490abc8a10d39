// PyfastqDequeue and PyfastqDequeueMany on the CPU: outputs in host memory.
#include <memory>

#include "dequeue_kernel.h"
#include "tensorflow/core/framework/op_kernel.h"

namespace tensorflow {
namespace pyfastq_tf {
namespace {

// Outputs in host memory: one element aliases its slot, n elements are gathered into one tensor.
class CpuDequeueOp : public DequeueOp {
 public:
  using DequeueOp::DequeueOp;

 protected:
  void Deliver(OpKernelContext* ctx, std::shared_ptr<Wait> wait, DoneCallback done) override {
    SetDone(ctx, false);
    if (batched_) {
      GatherSlots(ctx, wait->mem->ring(), wait->slots.data(), wait->got);
    } else {
      AliasSlot(ctx, wait->mem, wait->slots[0]);
    }
    done();
  }
};

}  // namespace

REGISTER_KERNEL_BUILDER(Name("PyfastqDequeue").Device(DEVICE_CPU), CpuDequeueOp);
REGISTER_KERNEL_BUILDER(Name("PyfastqDequeueMany").Device(DEVICE_CPU), CpuDequeueOp);

}  // namespace pyfastq_tf
}  // namespace tensorflow
