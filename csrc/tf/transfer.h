// The host-to-device copies of one GPU dequeue, issued as TF's _CopyFromHostToGpu
// issues one (grappler/optimizers/gpu_swapping_kernels.cc): through the op's
// DeviceContext, finished in the copies' callbacks.
//
// Header-only and free of OpKernelContext, so that a test can drive it with a
// DeviceContext of its own (tests/test_transfer.py).
#pragma once

#include <atomic>
#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "pyfastq/ring_memory.h"
#include "tensorflow/core/framework/device_base.h"
#include "tensorflow/core/framework/tensor.h"

namespace tensorflow {
namespace pyfastq_gpu {

// `done` runs once, after the last copy has finished (or failed). A host tensor
// is dropped (giving a slot it aliases back to producers) as soon as no copy
// reads it: when its copy is issued if TF staged it, else when all are done.
class Transfer {
 public:
  struct Copy {
    Tensor host;
    Tensor device;  // an output, or a row of one (Tensor::Slice shares its buffer)
  };
  using Done = std::function<void(const absl::Status&)>;

  // any thread: issues every copy on `dc` for `device`.
  static void Start(DeviceContext* dc, Device* device, std::vector<Copy> copies, Done done) {
    std::shared_ptr<Transfer> t(new Transfer(std::move(copies), std::move(done)));
    // One count more than there are copies, taken back after the loop: a copy
    // that finishes at once cannot end the transfer while others are being issued.
    t->pending_.store(t->copies_.size() + 1, std::memory_order_relaxed);
    // The outputs were allocated in the compute stream's order, so TF's host-to-device stream must wait
    // for the compute stream before writing them. The first copy asks for that wait; the later ones
    // are queued behind it on the same stream and need not wait again.
    bool first = true;
    for (Copy& c : t->copies_) {
      dc->CopyCPUTensorToDevice(&c.host, device, &c.device, [t](const absl::Status& s) { t->CopyDone(s); },
                                /*sync_dst_compute=*/first);
      first = false;
      if (Staged(*dc, c.host)) c.host = Tensor();
    }
    t->CopyDone(absl::OkStatus());
  }

 private:
  Transfer(std::vector<Copy> copies, Done done) : copies_(std::move(copies)), done_(std::move(done)) {}

  // Whether TF copied `host` into a pinned staging buffer of its own during CopyCPUTensorToDevice and let
  // go of it there: GPUUtil::CopyCPUTensorToGPU stages pageable memory when the context has a host
  // allocator (common_runtime/gpu/gpu_util.cc, NeedStaging). Its DMA then reads the staging buffer.
  static bool Staged(const DeviceContext& dc, const Tensor& host) {
    return host.TotalBytes() > 0 && host.GetMemoryType() == AllocatorMemoryType::kHostPageable &&
           dc.host_memory_allocator() != nullptr;
  }

  void CopyDone(const absl::Status& s) {
    if (!s.ok()) {
      std::lock_guard<std::mutex> lock(mu_);
      status_.Update(s);
    }
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
    // Every copy has read its source: the slots still held go back now, and the op is done. This
    // runs on TF's event-manager thread, where dropping a ring's last owner must not tear it down.
    {
      pyfastq::TeardownElsewhere elsewhere;
      copies_.clear();
    }
    done_(status_);
  }

  std::vector<Copy> copies_;
  Done done_;
  std::atomic<std::size_t> pending_{0};
  std::mutex mu_;
  absl::Status status_;
};

}  // namespace pyfastq_gpu
}  // namespace tensorflow
