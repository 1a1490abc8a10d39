// PyfastqDataset: a tf.data source whose iterator takes from a pyfastq ring in
// GetNext, as tensorflow-io's Arrow datasets and DALI's DALIDataset read their
// sources. Elements (batch_size 0) or batches of batch_size, ending at close.
//
// GetNext tries the ring once and, when it is empty, waits on it in slices
// of kInterruptCheck: it wakes on data, close, cancel, fail (a Producer's
// worker death fails the ring), Ctrl-C, and the iterator's CancellationManager
// (an iterator torn down, a prefetch thread stopped), taking nothing when the
// wait is abandoned. Several iterators over one queue share its elements:
// each is taken once.
//
// A single element aliases its slot while few slots are held that way, and is
// copied out (its slot given back at once) beyond that: a pipeline that keeps
// elements (batch, shuffle, prefetch buffers) could otherwise hold every slot
// while it waits for more, and the producers would wait for it forever.
// Batches are always copies.
//
// The queue lives in this process: the dataset serializes (AsGraphDefInternal)
// for tf.data's static rewrites, which rebuild it in the same process, but
// says it has external state, so tf.data service and Dataset.save refuse it,
// and its iterator refuses to be checkpointed.
#include <atomic>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "pyfastq/interrupt.h"
#include "pyfastq/ring_memory.h"
#include "slots.h"
#include "tensorflow/core/framework/cancellation.h"
#include "tensorflow/core/framework/dataset.h"
#include "tensorflow/core/framework/model.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"

namespace tensorflow {
namespace data {
namespace {

using pyfastq_tf::kInterruptCheck;
using pyfastq_tf::QueueLayout;
using pyfastq_tf::RingMemory;
using pyfastq_tf::RingStatus;
using pyfastq_tf::SlotLease;

constexpr char kDatasetType[] = "PyfastqDataset";

using HeldCount = std::atomic<std::uint32_t>;

// The count of slots that dataset elements alias and have not given back, per
// queue: every iterator over the queue, in every dataset, adds to the same one.
std::shared_ptr<HeldCount> HeldSlots(int64_t queue_id) {
  static std::mutex mu;
  static std::unordered_map<int64_t, std::weak_ptr<HeldCount>> counts;
  std::lock_guard<std::mutex> lock(mu);
  for (auto it = counts.begin(); it != counts.end();) {  // queues whose datasets are all gone
    it = it->second.expired() ? counts.erase(it) : std::next(it);
  }
  std::weak_ptr<HeldCount>& entry = counts[queue_id];
  std::shared_ptr<HeldCount> count = entry.lock();
  if (count == nullptr) {
    count = std::make_shared<HeldCount>(0);
    entry = count;
  }
  return count;
}

// One queue read as a dataset: its layout, and GetNext's work, which keeps no
// state of its own between calls (every iterator of the dataset shares it).
class QueueSource : public QueueLayout {
 public:
  struct Attrs {
    int64_t queue_id = 0;
    std::string queue_name;
    DataTypeVector types;
    std::vector<PartialTensorShape> shapes;  // of one element
    std::vector<PartialTensorShape> max_shapes;
    std::vector<std::string> padding;
    int64_t batch_size = 0;  // 0: single elements
    bool drop_remainder = false;
  };

  static absl::StatusOr<std::shared_ptr<QueueSource>> Make(Attrs attrs) {
    TF_RETURN_IF_ERROR(CheckRingLibrary(kDatasetType));
    if (attrs.batch_size < 0 || attrs.batch_size > std::numeric_limits<std::uint32_t>::max()) {
      return absl::InvalidArgumentError(absl::StrCat(kDatasetType, " on pyfastq queue '", attrs.queue_name,
                                                     "': batch_size=", attrs.batch_size, " is not in [0, 2**32)"));
    }
    std::shared_ptr<QueueSource> source(new QueueSource(std::move(attrs)));
    TF_RETURN_IF_ERROR(source->InitLayout(source->attrs_.batch_size > 0,
                                          static_cast<std::uint32_t>(std::max<int64_t>(source->attrs_.batch_size, 1))));
    return source;
  }

  const Attrs& attrs() const { return attrs_; }
  const std::string& where() const { return where_; }

  // Any thread, any number at once: the next element or batch, or *end once
  // the queue is closed and drained (with drop_remainder: has too few left).
  absl::Status Next(IteratorContext* ctx, std::vector<Tensor>* out, bool* end) {
    auto found = FindRing();
    if (!found.ok()) return found.status();
    const std::shared_ptr<RingMemory> mem = *std::move(found);
    pyfastq::Ring& ring = mem->ring();
    const bool allow_smaller = batched_ && !attrs_.drop_remainder;
    std::uint32_t* slots;
    std::uint32_t got;
    // One try, which is all a fed pipeline needs; a wait only when it finds too little.
    RingStatus st = FirstTry(ring, allow_smaller, &slots, &got);
    bool interrupted = false;
    if (st == RingStatus::kTimeout) st = Wait(ctx, ring, slots, &got, allow_smaller, &interrupted);
    switch (st) {
      case RingStatus::kOk:
        return Deliver(ctx, mem, slots, got, out);
      case RingStatus::kClosed:
        *end = true;
        return absl::OkStatus();
      case RingStatus::kCancelled:
        return absl::CancelledError(absl::StrCat(where_, ": the queue was cancelled"));
      case RingStatus::kFailed:
        return absl::AbortedError(absl::StrCat(where_, ": the queue failed: ", ring.fail_message()));
      case RingStatus::kAbandoned:
        return absl::CancelledError(absl::StrCat(
            where_, interrupted ? ": interrupted by Ctrl-C (SIGINT) while waiting for data"
                                : ": the iterator was cancelled while waiting for data"));
      default:
        return absl::InternalError(absl::StrCat(where_, ": unexpected ring status ", pyfastq::status_name(st)));
    }
  }

 private:
  explicit QueueSource(Attrs attrs) : attrs_(std::move(attrs)), held_(HeldSlots(attrs_.queue_id)) {
    queue_id_ = attrs_.queue_id;
    queue_name_ = attrs_.queue_name;
    types_ = attrs_.types;
    shapes_ = attrs_.shapes;
    max_shapes_ = attrs_.max_shapes;
    padding_ = attrs_.padding;
    // Every error names the dataset and the queue.
    where_ = absl::StrCat(kDatasetType, " on pyfastq queue '", queue_name_, "'");
  }

  // Waits for the ring until it answers, the iterator is cancelled or Ctrl-C comes.
  RingStatus Wait(IteratorContext* ctx, pyfastq::Ring& ring, std::uint32_t* slots, std::uint32_t* got,
                  bool allow_smaller, bool* interrupted) {
    std::atomic<bool> abandon{false};
    std::function<void()> deregister;
    // Already cancelled: RegisterCancellationCallback refuses, and nothing is taken.
    if (!RegisterCancellationCallback(
             ctx->cancellation_manager(),
             [&abandon, &ring] {
               abandon.store(true, std::memory_order_release);
               ring.wake_all();
             },
             &deregister)
             .ok()) {
      return RingStatus::kAbandoned;
    }
    RingStatus st;
    for (;;) {
      st = ring.pop(n_, slots, got, allow_smaller, pyfastq::Clock::now() + kInterruptCheck, &abandon);
      if (st != RingStatus::kTimeout) break;
      if (pyfastq::take_consumer_interrupt()) {
        *interrupted = true;
        st = RingStatus::kAbandoned;
        break;
      }
    }
    deregister();  // waits for a callback under way, which touches `abandon`
    return st;
  }

  absl::Status Deliver(IteratorContext* ctx, const std::shared_ptr<RingMemory>& mem, const std::uint32_t* slots,
                       std::uint32_t got, std::vector<Tensor>* out) {
    if (!batched_ && held_->fetch_add(1, std::memory_order_acq_rel) < AliasLimit(mem->ring())) {
      *out = AliasSlot(std::make_shared<SlotLease>(mem, slots[0], held_));
      return absl::OkStatus();
    }
    if (!batched_) held_->fetch_sub(1, std::memory_order_acq_rel);
    out->resize(types_.size());
    Allocator* allocator = ctx->allocator(AllocatorAttributes());
    return GatherSlots(mem->ring(), slots, got, [&](std::uint32_t i, const TensorShape& shape, Tensor** t) {
      (*out)[i] = Tensor(allocator, types_[i], shape);
      if (!(*out)[i].IsInitialized() && shape.num_elements() > 0) {
        return absl::ResourceExhaustedError(
            absl::StrCat(where_, ": could not allocate ", shape.DebugString(), " for component ", i));
      }
      *t = &(*out)[i];
      return absl::OkStatus();
    });
  }

  // At most half the slots are aliased: the other half keeps circulating
  // between producers and this dataset however much a pipeline hoards, while
  // a pipeline that hands each element on before taking the next (the usual
  // case) never reaches the limit and never copies.
  static std::uint32_t AliasLimit(const pyfastq::Ring& ring) { return ring.capacity() / 2; }

  Attrs attrs_;
  std::shared_ptr<HeldCount> held_;
};

class PyfastqDataset : public DatasetBase {
 public:
  PyfastqDataset(OpKernelContext* ctx, std::shared_ptr<QueueSource> source, DataTypeVector output_types,
                 std::vector<PartialTensorShape> output_shapes)
      : DatasetBase(DatasetContext(ctx)),
        source_(std::move(source)),
        output_types_(std::move(output_types)),
        output_shapes_(std::move(output_shapes)) {}

  std::unique_ptr<IteratorBase> MakeIteratorInternal(const std::string& prefix) const override {
    return std::make_unique<Iterator>(Iterator::Params{this, absl::StrCat(prefix, "::", kDatasetType)});
  }

  const DataTypeVector& output_dtypes() const override { return output_types_; }
  const std::vector<PartialTensorShape>& output_shapes() const override { return output_shapes_; }
  std::string DebugString() const override { return absl::StrCat(source_->where(), "'s dataset"); }
  int64_t CardinalityInternal(CardinalityOptions) const override { return kUnknownCardinality; }
  absl::Status InputDatasets(std::vector<const DatasetBase*>*) const override { return absl::OkStatus(); }

  absl::Status CheckExternalState() const override {
    return absl::FailedPreconditionError(absl::StrCat(
        "pyfastq: ", source_->where(),
        " reads a queue that lives in this process's memory; it cannot be saved or sent to another "
        "process (tf.data service, Dataset.save, a checkpoint of the dataset): feed each process its own queue"));
  }

 protected:
  absl::Status AsGraphDefInternal(SerializationContext*, DatasetGraphDefBuilder* b, Node** output) const override {
    const QueueSource::Attrs& a = source_->attrs();
    AttrValue queue_id, queue_name, shapes, max_shapes, padding, batch_size, drop_remainder;
    b->BuildAttrValue(a.queue_id, &queue_id);
    b->BuildAttrValue(a.queue_name, &queue_name);
    b->BuildAttrValue(a.shapes, &shapes);
    b->BuildAttrValue(a.max_shapes, &max_shapes);
    b->BuildAttrValue(a.padding, &padding);
    b->BuildAttrValue(a.batch_size, &batch_size);
    b->BuildAttrValue(a.drop_remainder, &drop_remainder);
    return b->AddDataset(this, {},
                         {{"queue_id", queue_id},
                          {"queue_name", queue_name},
                          {"shapes", shapes},
                          {"max_shapes", max_shapes},
                          {"padding", padding},
                          {"batch_size", batch_size},
                          {"drop_remainder", drop_remainder}},
                         output);
  }

 private:
  class Iterator : public DatasetIterator<PyfastqDataset> {
   public:
    explicit Iterator(const Params& params) : DatasetIterator<PyfastqDataset>(params) {}

    // Dataset.save reads a dataset to its end without asking CheckExternalState first: on an open
    // queue it would wait for the close forever. Its iterators are the ones under Save (SaveDatasetOp)
    // or SaveDatasetV2 (Dataset.save with checkpoint_args) in TF's prefixes, with whatever tf.data's
    // rewrites put between (an injected prefetch, say).
    absl::Status Initialize(IteratorContext*) override {
      for (absl::string_view part : absl::StrSplit(prefix(), "::")) {
        if (part == "Save" || part == "SaveDatasetV2") return dataset()->CheckExternalState();
      }
      return absl::OkStatus();
    }

   protected:
    absl::Status GetNextInternal(IteratorContext* ctx, std::vector<Tensor>* out_tensors,
                                 bool* end_of_sequence) override {
      return dataset()->source_->Next(ctx, out_tensors, end_of_sequence);
    }

    std::shared_ptr<model::Node> CreateNode(IteratorContext*, model::Node::Args args) const override {
      return model::MakeSourceNode(std::move(args));
    }

    absl::Status SaveInternal(SerializationContext*, IteratorStateWriter*) override { return Refuse("saved"); }
    absl::Status RestoreInternal(IteratorContext*, IteratorStateReader*) override { return Refuse("restored"); }

   private:
    absl::Status Refuse(const char* what) const {
      return absl::UnimplementedError(absl::StrCat(
          "pyfastq: the iterator of ", dataset()->source_->where(), " cannot be ", what,
          ": what it has taken from the queue is gone from the queue, and a checkpoint cannot hold the queue; "
          "checkpoint the model with the Producer's state() and resume from it (Producer(..., resume=state); "
          "with Keras, pyfastq.keras.BackupAndRestore)"));
    }
  };

  std::shared_ptr<QueueSource> source_;
  DataTypeVector output_types_;
  std::vector<PartialTensorShape> output_shapes_;
};

class PyfastqDatasetOp : public DatasetOpKernel {
 public:
  explicit PyfastqDatasetOp(OpKernelConstruction* ctx) : DatasetOpKernel(ctx) {
    QueueSource::Attrs a;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("queue_id", &a.queue_id));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("queue_name", &a.queue_name));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("output_types", &a.types));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("shapes", &a.shapes));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("max_shapes", &a.max_shapes));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("padding", &a.padding));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("batch_size", &a.batch_size));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("drop_remainder", &a.drop_remainder));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("output_shapes", &output_shapes_));
    OP_REQUIRES(ctx, output_shapes_.size() == a.types.size(),
                absl::InvalidArgumentError(absl::StrCat(kDatasetType, " on pyfastq queue '", a.queue_name, "': ",
                                                        output_shapes_.size(), " output shapes for ", a.types.size(),
                                                        " output types")));
    output_types_ = a.types;
    auto source = QueueSource::Make(std::move(a));
    OP_REQUIRES_OK(ctx, source.status());
    source_ = *std::move(source);
  }

  void MakeDataset(OpKernelContext* ctx, DatasetBase** output) override {
    // One source per kernel: every dataset this op makes (and every iterator) shares its ring lookup.
    *output = new PyfastqDataset(ctx, source_, output_types_, output_shapes_);
  }

 private:
  std::shared_ptr<QueueSource> source_;
  DataTypeVector output_types_;
  std::vector<PartialTensorShape> output_shapes_;
};

REGISTER_KERNEL_BUILDER(Name(kDatasetType).Device(DEVICE_CPU), PyfastqDatasetOp);

}  // namespace
}  // namespace data
}  // namespace tensorflow
