// Op definitions and shape functions of the EmbeddingVariable ops.
// The contract (names, inputs, attrs) is docs/design.md; docs/ops.md documents it.
// Every op that returns rows carries `dim` so its shapes are complete without
// reading the resource.
#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace graphopt {

using tensorflow::Status;
using tensorflow::shape_inference::DimensionHandle;
using tensorflow::shape_inference::InferenceContext;
using tensorflow::shape_inference::ShapeHandle;

namespace {

Status TableIsScalar(InferenceContext* c) {
  ShapeHandle unused;
  return c->WithRank(c->input(0), 0, &unused);
}

Status RowsOf(InferenceContext* c, ShapeHandle keys, ShapeHandle* rows) {
  int64_t dim;
  TF_RETURN_IF_ERROR(c->GetAttr("dim", &dim));
  return c->Concatenate(keys, c->Vector(dim), rows);
}

// values: keys.shape + [dim]
Status FindShape(InferenceContext* c) {
  TF_RETURN_IF_ERROR(TableIsScalar(c));
  ShapeHandle rows;
  TF_RETURN_IF_ERROR(RowsOf(c, c->input(1), &rows));
  c->set_output(0, rows);
  return Status();
}

}  // namespace

REGISTER_OP("GraphoptEvHandleOp")
    .Output("handle: resource")
    .Attr("container: string = ''")
    .Attr("shared_name: string = ''")
    .Attr("dim: int >= 1")
    .Attr("dtype: {float} = DT_FLOAT")
    .Attr("key_dtype: {int32, int64} = DT_INT64")
    .Attr("default_value: list(float) = []")
    .Attr("initializer: string = 'uniform'")
    .Attr("init_value: float = 0.0")
    .Attr("init_minval: float = -0.05")
    .Attr("init_maxval: float = 0.05")
    .Attr("init_mean: float = 0.0")
    .Attr("init_stddev: float = 1.0")
    .Attr("seed: int = 0")
    .SetIsStateful()
    .SetShapeFn(tensorflow::shape_inference::ScalarShape)
    .Doc(R"doc(
Creates (on first run) or finds the EmbeddingVariable table container/shared_name
in the resource manager and returns its handle. An empty shared_name shares by
node name. default_value: [] zeros, [v] broadcast, or the dim values of the row
returned for unseen keys by find. initializer (uniform | normal |
truncated_normal | constant | zeros) with its init_* parameters and seed gives
the deterministic row of a key inserted by find-or-insert.
)doc");

REGISTER_OP("GraphoptEvFind")
    .Input("table: resource")
    .Input("keys: Tkeys")
    .Output("values: dtype")
    .Attr("Tkeys: {int32, int64} = DT_INT64")
    .Attr("dim: int >= 1")
    .Attr("dtype: {float} = DT_FLOAT")
    .SetIsStateful()
    .SetShapeFn(FindShape)
    .Doc("Rows of keys (any shape); unseen keys get the default row, nothing is inserted.");

REGISTER_OP("GraphoptEvFindOrInsert")
    .Input("table: resource")
    .Input("keys: Tkeys")
    .Input("step: int64")
    .Output("values: dtype")
    .Attr("Tkeys: {int32, int64} = DT_INT64")
    .Attr("dim: int >= 1")
    .Attr("dtype: {float} = DT_FLOAT")
    .SetIsStateful()
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle unused;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 0, &unused));
      return FindShape(c);
    })
    .Doc("Rows of keys, inserting unseen keys with their initializer row; counts each "
         "occurrence in the key's frequency and records step as its last step.");

REGISTER_OP("GraphoptEvInsert")
    .Input("table: resource")
    .Input("keys: Tkeys")
    .Input("values: dtype")
    .Attr("Tkeys: {int32, int64} = DT_INT64")
    .Attr("dim: int >= 1")
    .Attr("dtype: {float} = DT_FLOAT")
    .SetIsStateful()
    .SetShapeFn([](InferenceContext* c) {
      TF_RETURN_IF_ERROR(TableIsScalar(c));
      ShapeHandle rows, unused;
      TF_RETURN_IF_ERROR(RowsOf(c, c->input(1), &rows));
      return c->Merge(c->input(2), rows, &unused);
    })
    .Doc("Assigns values (keys.shape + [dim]) to keys, inserting missing keys.");

REGISTER_OP("GraphoptEvExport")
    .Input("table: resource")
    .Output("keys: int64")
    .Output("values: dtype")
    .Output("freqs: int64")
    .Output("versions: int64")
    .Attr("dim: int >= 1")
    .Attr("dtype: {float} = DT_FLOAT")
    .SetIsStateful()
    .SetShapeFn([](InferenceContext* c) {
      TF_RETURN_IF_ERROR(TableIsScalar(c));
      int64_t dim;
      TF_RETURN_IF_ERROR(c->GetAttr("dim", &dim));
      DimensionHandle n = c->UnknownDim();
      c->set_output(0, c->Vector(n));
      c->set_output(1, c->Matrix(n, dim));
      c->set_output(2, c->Vector(n));
      c->set_output(3, c->Vector(n));
      return Status();
    })
    .Doc("A consistent snapshot of the table: keys, rows, frequencies, last steps.");

REGISTER_OP("GraphoptEvImport")
    .Input("table: resource")
    .Input("keys: int64")
    .Input("values: dtype")
    .Input("freqs: int64")
    .Input("versions: int64")
    .Attr("dim: int >= 1")
    .Attr("dtype: {float} = DT_FLOAT")
    .SetIsStateful()
    .SetShapeFn([](InferenceContext* c) {
      TF_RETURN_IF_ERROR(TableIsScalar(c));
      int64_t dim;
      TF_RETURN_IF_ERROR(c->GetAttr("dim", &dim));
      ShapeHandle keys, values, freqs, versions;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 1, &keys));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 2, &values));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 1, &freqs));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(4), 1, &versions));
      DimensionHandle n = c->Dim(keys, 0), unused;
      TF_RETURN_IF_ERROR(c->Merge(n, c->Dim(values, 0), &n));
      TF_RETURN_IF_ERROR(c->Merge(n, c->Dim(freqs, 0), &n));
      TF_RETURN_IF_ERROR(c->Merge(n, c->Dim(versions, 0), &n));
      TF_RETURN_IF_ERROR(c->Merge(c->Dim(values, 1), c->MakeDim(dim), &unused));
      return Status();
    })
    .Doc("Replaces the whole content of the table (duplicate keys: the last wins).");

REGISTER_OP("GraphoptEvSize")
    .Input("table: resource")
    .Output("size: int64")
    .SetIsStateful()
    .SetShapeFn([](InferenceContext* c) {
      TF_RETURN_IF_ERROR(TableIsScalar(c));
      c->set_output(0, c->Scalar());
      return Status();
    })
    .Doc("Number of keys in the table.");

REGISTER_OP("GraphoptEvRemove")
    .Input("table: resource")
    .Input("keys: Tkeys")
    .Attr("Tkeys: {int32, int64} = DT_INT64")
    .SetIsStateful()
    .SetShapeFn(TableIsScalar)
    .Doc("Removes keys (any shape); absent keys are ignored.");

REGISTER_OP("GraphoptEvMemory")
    .Input("table: resource")
    .Output("bytes_used: int64")
    .Output("capacity: int64")
    .SetIsStateful()
    .SetShapeFn([](InferenceContext* c) {
      TF_RETURN_IF_ERROR(TableIsScalar(c));
      c->set_output(0, c->Scalar());
      c->set_output(1, c->Scalar());
      return Status();
    })
    .Doc("Bytes the table holds (index, rows, side arrays) and the number of keys it "
         "holds before its index has to grow.");

}  // namespace graphopt
