// PyfastqDequeue and PyfastqDequeueMany on the GPU: outputs in device
// memory, `done` in host memory. They wait as the CPU kernels do
// (dequeue_kernel.h), then copy as TF's _CopyFromHostToGpu does
// (grappler/optimizers/gpu_swapping_kernels.cc): outputs allocated on the
// device, DeviceContext::CopyCPUTensorToDevice from the slots, and the op done
// in the copies' callback (transfer.h). A slot goes back to producers as soon as
// nothing reads it: rows gathered into staging at once, a slot TF stages itself
// (an unpinned ring) when its copy is issued, a slot DMA'd from when it is done.
// The first GPU dequeue of a ring pins it (RingMemory::pin), so the copies
// are DMA from the slots themselves. Nothing here needs CUDA to compile: the
// copy is TF's, the pinning dlopens the CUDA runtime.
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "dequeue_kernel.h"
#include "pyfastq/ring_memory.h"
#include "slots.h"
#include "tensorflow/core/framework/allocator.h"
#include "tensorflow/core/framework/device.h"
#include "tensorflow/core/framework/device_base.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor_shape.h"
#include "tensorflow/core/platform/logging.h"
#include "transfer.h"

namespace tensorflow {
namespace pyfastq_tf {
namespace {

// GPU dequeue_many from a pinned ring, gpu_copy auto: rows of at least
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

// Where a GPU dequeue_many copies its rows from (the gpu_copy attr).
enum class CopyMode { kAuto, kGather, kRows };

// Outputs in device memory, copied from the slots by the device context; `done` stays in host memory.
class GpuDequeueOp : public DequeueOp {
 public:
  explicit GpuDequeueOp(OpKernelConstruction* ctx) : DequeueOp(ctx) {
    std::string m;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("gpu_copy", &m));
    OP_REQUIRES(ctx, m == "auto" || m == "gather" || m == "rows",
                absl::InvalidArgumentError(
                    absl::StrCat(where_, ": gpu_copy is '", m, "'; it must be auto, gather or rows")));
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

}  // namespace

// Registered in every build: DEVICE_GPU is a name, and a CPU-only TF never places a kernel on it.
REGISTER_KERNEL_BUILDER(Name("PyfastqDequeue").Device(DEVICE_GPU).HostMemory("done"), GpuDequeueOp);
REGISTER_KERNEL_BUILDER(Name("PyfastqDequeueMany").Device(DEVICE_GPU).HostMemory("done"), GpuDequeueOp);

}  // namespace pyfastq_tf
}  // namespace tensorflow
