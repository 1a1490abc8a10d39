// Transfer (transfer.h) driven by a stand-in DeviceContext that copies as
// GPUUtil::CopyCPUTensorToGPU does (common_runtime/gpu/gpu_util.cc): pageable
// host memory is copied into a staging buffer during the call, when the context
// has a host allocator, and the source let go at once; anything else is read
// when the copy completes, in a callback on the context's own "event manager"
// thread. Built and run by tests/test_gpu.py against the installed TF and ring.
//
//   test_transfer sync      the compute-stream wait is asked for by the first copy only
//   test_transfer staged    host tensors TF has staged are let go before the copies complete
//   test_transfer teardown  a ring whose last owner is a transfer is not torn down on the event thread
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "pyfastq/ring_memory.h"
#include "tensorflow/core/framework/allocator.h"
#include "tensorflow/core/lib/core/refcount.h"
#include "tensorflow/core/framework/tensor_reference.h"
#include "transfer.h"

namespace tf = tensorflow;
using tf::pyfastq_gpu::Transfer;

#undef CHECK  // TF's logging CHECK: this one needs no TF logging set up
#define CHECK(cond)                                                        \
  do {                                                                     \
    if (!(cond)) {                                                         \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      std::exit(1);                                                        \
    }                                                                      \
  } while (0)

namespace {

long tid() { return static_cast<long>(syscall(SYS_gettid)); }

// A host buffer of a given memory type that counts how many are alive and may keep something alive.
class HostBuffer : public tf::TensorBuffer {
 public:
  HostBuffer(std::size_t n, tf::AllocatorMemoryType type, std::atomic<int>* live, std::shared_ptr<void> keep = {})
      : TensorBuffer(std::aligned_alloc(64, (n + 63) / 64 * 64)), n_(n), type_(type), live_(live), keep_(std::move(keep)) {
    live_->fetch_add(1);
  }
  ~HostBuffer() override {
    std::free(data());
    live_->fetch_sub(1);
  }
  std::size_t size() const override { return n_; }
  TensorBuffer* root_buffer() override { return this; }
  void FillAllocationDescription(tf::AllocationDescription*) const override {}
  tf::AllocatorMemoryType GetMemoryType() const override { return type_; }
  bool OwnsMemory() const override { return false; }

 private:
  std::size_t n_;
  tf::AllocatorMemoryType type_;
  std::atomic<int>* live_;
  std::shared_ptr<void> keep_;
};

tf::Tensor host_tensor(float value, tf::AllocatorMemoryType type, std::atomic<int>* live,
                       std::shared_ptr<void> keep = {}) {
  auto* buf = new HostBuffer(4 * sizeof(float), type, live, std::move(keep));
  tf::Tensor t(tf::DT_FLOAT, tf::TensorShape({4}), buf);
  buf->Unref();
  for (int i = 0; i < 4; ++i) t.flat<float>()(i) = value;
  return t;
}

class FakeDeviceContext : public tf::DeviceContext {
 public:
  explicit FakeDeviceContext(bool host_allocator) : host_allocator_(host_allocator) {}
  tf::Allocator* host_memory_allocator() const override { return host_allocator_ ? tf::cpu_allocator() : nullptr; }

  void CopyCPUTensorToDevice(const tf::Tensor* cpu, tf::Device*, tf::Tensor* device, tf::StatusCallback done,
                             bool sync_dst_compute) const override {
    syncs.push_back(sync_dst_compute);
    const auto src = cpu->tensor_data();
    char* dst = const_cast<char*>(device->tensor_data().data());
    if (host_allocator_ && cpu->GetMemoryType() == tf::AllocatorMemoryType::kHostPageable) {
      std::memcpy(dst, src.data(), src.size());  // staged now; the DMA reads the staging buffer
      events.push_back([done] { done(absl::OkStatus()); });
      return;
    }
    tf::TensorReference ref(*cpu);
    events.push_back([src, dst, ref, done] {
      std::memcpy(dst, src.data(), src.size());
      ref.Unref();
      done(absl::OkStatus());
    });
  }

  // Runs the completions on a thread of its own, as TF's event manager does; returns that thread's id.
  long RunEvents() {
    long id = 0;
    std::thread([&] {
      id = tid();
      for (auto& e : events) e();
    }).join();
    events.clear();
    return id;
  }

  mutable std::vector<bool> syncs;
  mutable std::vector<std::function<void()>> events;

 private:
  bool host_allocator_;
};

tf::Tensor device_tensor() { return tf::Tensor(tf::DT_FLOAT, tf::TensorShape({4})); }

struct Outcome {
  int calls = 0;
  absl::Status status;
};

Transfer::Done recorder(Outcome* out) {
  return [out](const absl::Status& s) {
    ++out->calls;
    out->status = s;
  };
}

void first_copy_syncs() {
  std::atomic<int> live{0};
  auto& dc = *new FakeDeviceContext(true);  // ref-counted: let go by the ScopedUnref
  tf::core::ScopedUnref unref(&dc);
  std::vector<Transfer::Copy> copies;
  std::vector<tf::Tensor> outs;
  for (int i = 0; i < 3; ++i) {
    outs.push_back(device_tensor());
    copies.push_back({host_tensor(float(i), tf::AllocatorMemoryType::kHostPinned, &live), outs.back()});
  }
  Outcome out;
  Transfer::Start(&dc, nullptr, std::move(copies), recorder(&out));
  CHECK((dc.syncs == std::vector<bool>{true, false, false}));
  CHECK(out.calls == 0);
  dc.RunEvents();
  CHECK(out.calls == 1 && out.status.ok());
  for (int i = 0; i < 3; ++i) CHECK(outs[i].flat<float>()(3) == float(i));
}

void staged_let_go() {
  for (const bool host_allocator : {true, false}) {
    std::atomic<int> live{0};
    auto& dc = *new FakeDeviceContext(host_allocator);
    tf::core::ScopedUnref unref(&dc);
    std::vector<tf::Tensor> outs{device_tensor(), device_tensor(), device_tensor()};
    std::vector<Transfer::Copy> copies{
        {host_tensor(1, tf::AllocatorMemoryType::kHostPageable, &live), outs[0]},
        {host_tensor(2, tf::AllocatorMemoryType::kHostPinned, &live), outs[1]},
        {host_tensor(3, tf::AllocatorMemoryType::kHostPageable, &live), outs[2]},
    };
    Outcome out;
    Transfer::Start(&dc, nullptr, std::move(copies), recorder(&out));
    // Staged: the pageable sources are let go during Start; the pinned one is read by the DMA, later.
    // Without a host allocator TF does not stage, and every source is held until its copy completes.
    CHECK(live.load() == (host_allocator ? 1 : 3));
    dc.RunEvents();
    CHECK(live.load() == 0 && out.calls == 1 && out.status.ok());
    for (int i = 0; i < 3; ++i) CHECK(outs[i].flat<float>()(0) == float(i + 1));
  }
}

// The stand-in CUDA runtime (PYFASTQ_CUDART) logs "unregister <ptr> 0 <mapped> <tid>" to FAKE_CUDART_LOG.
long unregistering_thread(const char* log) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    std::ifstream in(log);
    std::string what, ptr, n, mapped;
    long thread = 0;
    while (in >> what >> ptr >> n >> mapped >> thread) {
      if (what == "unregister") {
        CHECK(mapped == "1");
        return thread;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  std::fprintf(stderr, "the ring was never unpinned\n");
  std::exit(1);
}

void teardown_elsewhere() {
  std::atomic<int> live{0};
  auto mem = pyfastq::RingMemory::create(4, {4096});
  CHECK(mem->pin());
  auto& dc = *new FakeDeviceContext(true);  // ref-counted: let go by the ScopedUnref
  tf::core::ScopedUnref unref(&dc);
  std::vector<tf::Tensor> outs{device_tensor()};
  std::vector<Transfer::Copy> copies{{host_tensor(7, tf::AllocatorMemoryType::kHostPinned, &live, mem), outs[0]}};
  mem.reset();  // the transfer's source is now the ring's last owner
  Outcome out;
  Transfer::Start(&dc, nullptr, std::move(copies), recorder(&out));
  const long events = dc.RunEvents();
  CHECK(out.calls == 1 && live.load() == 0);
  CHECK(unregistering_thread(std::getenv("FAKE_CUDART_LOG")) != events);
}

}  // namespace

int main(int argc, char** argv) {
  const std::string which = argc > 1 ? argv[1] : "";
  if (which == "sync") first_copy_syncs();
  else if (which == "staged") staged_let_go();
  else if (which == "teardown") teardown_elsewhere();
  else return 2;
  std::puts("ok");
  return 0;
}
