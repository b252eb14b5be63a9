// Op definitions and shape functions of the online-update ops: exporting the
// rows changed since a step (training side) and applying a delta atomically
// (serving side). docs/online.md documents them.
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace graphopt {

using tensorflow::Status;
using tensorflow::shape_inference::DimensionHandle;
using tensorflow::shape_inference::InferenceContext;
using tensorflow::shape_inference::ShapeHandle;

REGISTER_OP("GraphoptEvExportChanged")
    .Input("table: resource")
    .Input("since: int64")
    .Output("keys: int64")
    .Output("values: dtype")
    .Output("versions: int64")
    .Output("present_keys: int64")
    .Attr("dim: int >= 1")
    .Attr("dtype: {float} = DT_FLOAT")
    .SetIsStateful()
    .SetShapeFn([](InferenceContext* c) -> Status {
      ShapeHandle unused;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 0, &unused));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 0, &unused));
      int64_t dim;
      TF_RETURN_IF_ERROR(c->GetAttr("dim", &dim));
      const DimensionHandle n = c->UnknownDim();
      c->set_output(0, c->Vector(n));
      c->set_output(1, c->Matrix(n, dim));
      c->set_output(2, c->Vector(n));
      c->set_output(3, c->Vector(c->UnknownDim()));
      return Status();
    })
    .Doc("The rows whose last step (find-or-insert's step) is after `since`, with their "
         "last steps, and every key the table holds, from one consistent snapshot.");

REGISTER_OP("GraphoptEvApplyDelta")
    .Input("table: resource")
    .Input("keys: int64")
    .Input("values: dtype")
    .Input("removed_keys: int64")
    .Attr("dim: int >= 1")
    .Attr("dtype: {float} = DT_FLOAT")
    .SetIsStateful()
    .SetShapeFn([](InferenceContext* c) -> Status {
      ShapeHandle keys, values, removed, unused;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 0, &unused));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 1, &keys));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 2, &values));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 1, &removed));
      int64_t dim;
      TF_RETURN_IF_ERROR(c->GetAttr("dim", &dim));
      DimensionHandle merged;
      TF_RETURN_IF_ERROR(c->Merge(c->Dim(keys, 0), c->Dim(values, 0), &merged));
      TF_RETURN_IF_ERROR(c->Merge(c->Dim(values, 1), c->MakeDim(dim), &merged));
      return Status();
    })
    .Doc("Removes removed_keys, then assigns values [n, dim] to keys (inserting missing "
         "keys), under every shard's writer lock: a concurrent lookup sees the table "
         "before or after the whole delta.");

}  // namespace graphopt
