// Registration of pyfastq's dequeue ops, its dataset op, and their shape functions.
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tensorflow {
namespace {

using shape_inference::DimensionHandle;
using shape_inference::InferenceContext;
using shape_inference::ShapeHandle;

// done is a scalar; component i is shapes[i], with a leading batch dim when batched.
absl::Status DequeueShapes(InferenceContext* c, bool batched) {
  std::vector<PartialTensorShape> shapes;
  DataTypeVector types;
  TF_RETURN_IF_ERROR(c->GetAttr("shapes", &shapes));
  TF_RETURN_IF_ERROR(c->GetAttr("component_types", &types));
  if (shapes.size() != types.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("pyfastq dequeue: ", shapes.size(), " shapes for ", types.size(), " component types"));
  }
  DimensionHandle lead;
  if (batched) {
    int64_t n;
    bool allow_smaller = false;  // PyfastqTryDequeueMany has none: n rows or none
    TF_RETURN_IF_ERROR(c->GetAttr("n", &n));
    if (!c->GetAttr("allow_smaller_final_batch", &allow_smaller).ok()) allow_smaller = false;
    lead = allow_smaller ? c->UnknownDim() : c->MakeDim(n);
  }
  c->set_output(0, c->Scalar());
  for (size_t i = 0; i < shapes.size(); ++i) {
    ShapeHandle s;
    TF_RETURN_IF_ERROR(c->MakeShapeFromPartialTensorShape(shapes[i], &s));
    if (batched) TF_RETURN_IF_ERROR(c->Concatenate(c->Vector(lead), s, &s));
    c->set_output(static_cast<int>(i) + 1, s);
  }
  return absl::OkStatus();
}

}  // namespace

// What every dequeue op has: its flag output (`done`, or a try's `ok`), one
// output per component, and the queue and its elements' types and shapes.
// Macros, as REGISTER_OP's chain of calls takes no helper function.
#define PYFASTQ_DEQUEUE_SIGNATURE(flag)                \
  Output(flag ": bool")                                \
      .Output("components: component_types")           \
      .Attr("queue_id: int")                           \
      .Attr("queue_name: string")                      \
      .Attr("component_types: list(type) >= 1")        \
      .Attr("shapes: list(shape) >= 1")                \
      .Attr("max_shapes: list(shape) = []")
// A batch of n: padding of variable-shaped components (PyfastqDequeueMany's doc says how).
#define PYFASTQ_BATCH_ATTRS() Attr("padding: list(string) = []").Attr("n: int >= 1")
// The waiting dequeues' GPU copy mode: a string, checked by the GPU kernel, which names it in its error.
#define PYFASTQ_COPY_MODE_ATTR() Attr("gpu_copy: string = 'auto'")

REGISTER_OP("PyfastqDequeue")
    .PYFASTQ_DEQUEUE_SIGNATURE("done")
    .Attr("record_fill: bool = true")
    .PYFASTQ_COPY_MODE_ATTR()
    .SetIsStateful()
    .SetShapeFn([](InferenceContext* c) { return DequeueShapes(c, /*batched=*/false); })
    .Doc(R"doc(
Takes one element from a pyfastq queue. The component tensors alias the ring
slot; the slot is given back when the last of them is freed.

max_shapes: empty, or for a queue whose shapes have unknown dims, every
  component's bound: the element then has its true shape, read from the slot.

done: always false.

record_fill: count this dequeue in the queue's fill histogram (false after a
  PyfastqTryDequeue that found nothing, which counted it).

gpu_copy: the GPU kernel's copies (the CPU kernel has none): auto, gather or rows.
)doc");

REGISTER_OP("PyfastqTryDequeue")
    .PYFASTQ_DEQUEUE_SIGNATURE("ok")
    .SetIsStateful()
    .SetShapeFn([](InferenceContext* c) { return DequeueShapes(c, /*batched=*/false); })
    .Doc(R"doc(
Takes one element from a pyfastq queue if one is ready, without waiting: ok is
true and the components alias its slot, as PyfastqDequeue's do. Otherwise ok
is false, nothing is taken, and the components are placeholders to be dropped.
A synchronous kernel: what consumes its outputs runs on the same thread.
)doc");

REGISTER_OP("PyfastqDequeueMany")
    .PYFASTQ_DEQUEUE_SIGNATURE("done")
    .PYFASTQ_BATCH_ATTRS()
    .Attr("allow_smaller_final_batch: bool = false")
    .Attr("record_fill: bool = true")
    .PYFASTQ_COPY_MODE_ATTR()
    .SetIsStateful()
    .SetShapeFn([](InferenceContext* c) { return DequeueShapes(c, /*batched=*/true); })
    .Doc(R"doc(
Takes n elements from a pyfastq queue at once and stacks them along a new dim 0.
With variable shapes (max_shapes given), every component is padded to the
largest shape in the batch, as padded_batch does.

padding: empty (pad with zeros), or per component the bytes of one scalar of
  its type to pad with.

done: always false.

record_fill: count this dequeue in the queue's fill histogram (false after a
  PyfastqTryDequeueMany that found too few, which counted it).

gpu_copy: how the GPU kernel copies a batch: gather (rows gathered into pinned
  host memory, one copy), rows (one copy per row, straight from its slot), or
  auto (rows from a pinned ring for rows of 64 KiB or more, else gather).
)doc");

REGISTER_OP("PyfastqTryDequeueMany")
    .PYFASTQ_DEQUEUE_SIGNATURE("ok")
    .PYFASTQ_BATCH_ATTRS()
    .SetIsStateful()
    .SetShapeFn([](InferenceContext* c) { return DequeueShapes(c, /*batched=*/true); })
    .Doc(R"doc(
Takes n elements from a pyfastq queue if n are ready, without waiting: ok is
true and the components are the batch, as PyfastqDequeueMany makes it.
Otherwise ok is false, nothing is taken, and the components are placeholders
with no rows, to be dropped.
)doc");

REGISTER_OP("PyfastqDataset")
    .Output("handle: variant")
    .Attr("queue_id: int")
    .Attr("queue_name: string")
    .Attr("output_types: list(type) >= 1")
    .Attr("output_shapes: list(shape) >= 1")
    .Attr("shapes: list(shape) >= 1")
    .Attr("max_shapes: list(shape) = []")
    .Attr("padding: list(string) = []")
    .Attr("batch_size: int >= 0 = 0")
    .Attr("drop_remainder: bool = false")
    .Attr("metadata: string = ''")
    // Source datasets are stateful, as TF's own are, so that constant folding leaves them alone.
    .SetIsStateful()
    .SetShapeFn(shape_inference::ScalarShape)
    .Doc(R"doc(
A tf.data dataset of a pyfastq queue's elements (batch_size 0) or of batches
of batch_size elements, stacked along a new dim 0 and padded as
PyfastqDequeueMany pads them; it ends once the queue is closed and drained
(with drop_remainder: once it has fewer than batch_size left).

output_types, output_shapes: the dataset's, as every dataset op has them.
shapes: each component's shape in one element.
)doc");

}  // namespace tensorflow
