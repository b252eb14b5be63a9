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
    .Attr("optimizer: string = ''")
    .Attr("slot_init: list(float) = []")
    .Attr("min_count: int = 0")
    .Attr("max_rows: int = 0")
    .Attr("evict_policy: string = 'lru'")
    .Attr("admission: string = 'counter'")
    .Attr("bloom_counters: int = 1048576")
    .Attr("bloom_hashes: int = 3")
    .Attr("row_dtype: string = 'float32'")
    .SetIsStateful()
    .SetShapeFn(tensorflow::shape_inference::ScalarShape)
    .Doc(R"doc(
Creates (on first run) or finds the EmbeddingVariable table container/shared_name
in the resource manager and returns its handle. An empty shared_name shares by
node name. default_value: [] zeros, [v] broadcast, or the dim values of the row
returned for unseen keys by find. initializer (uniform | normal |
truncated_normal | constant | zeros) with its init_* parameters and seed gives
the deterministic row of a key inserted by find-or-insert.
optimizer ('' | sgd | adagrad | adam | ftrl) fixes the slots kept in each row
after its value (adagrad [accumulator], adam [m, v], ftrl [accumulator, linear]),
slot_init their initial values ([] = the optimizer's defaults). min_count: a key
gets a row at its min_count-th find-or-insert (0/1: at once), counted exactly per
key (admission counter) or in a counting Bloom filter of bloom_counters 8-bit
counters, bloom_hashes per key (admission bloom: fixed bytes, some keys admitted
early; min_count <= 255). max_rows: a cap on
rows (0: none), split over the shards; evict_policy lru | lfu evicts the least
recently / frequently used row of a full shard, refuse fails the insert.
row_dtype (float32 | int8 | float16 | bfloat16): how rows are stored; a compressed
table (int8 row-wise: uint8 codes + float32 scale and bias per row; or 16-bit
floats) is a serving table: no optimizer, admission or cap, no frequency or last
step kept; every op still reads and writes float32 rows (quantized on write,
dequantized on read).
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

namespace {

Status ExportShape(InferenceContext* c) {
      TF_RETURN_IF_ERROR(TableIsScalar(c));
      int64_t dim, num_slots = 0;
      TF_RETURN_IF_ERROR(c->GetAttr("dim", &dim));
      if (c->num_outputs() > 4) TF_RETURN_IF_ERROR(c->GetAttr("num_slots", &num_slots));
      DimensionHandle n = c->UnknownDim();
      c->set_output(0, c->Vector(n));
      c->set_output(1, c->Matrix(n, dim));
      c->set_output(2, c->Vector(n));
      c->set_output(3, c->Vector(n));
      for (int64_t j = 0; j < num_slots; ++j) c->set_output(4 + j, c->Matrix(n, dim));
      if (c->num_outputs() > 4) {
        DimensionHandle pending = c->UnknownDim();
        c->set_output(4 + num_slots, c->Vector(pending));
        c->set_output(5 + num_slots, c->Vector(pending));
      }
      return Status();
}

Status ImportShape(InferenceContext* c) {
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
      // ImportWithSlots ends with pending_keys, pending_counts after its slots.
      const int slots_end = c->num_inputs() > 5 ? c->num_inputs() - 2 : 5;
      for (int i = 5; i < slots_end; ++i) {
        ShapeHandle slot;
        TF_RETURN_IF_ERROR(c->WithRank(c->input(i), 2, &slot));
        TF_RETURN_IF_ERROR(c->Merge(n, c->Dim(slot, 0), &n));
        TF_RETURN_IF_ERROR(c->Merge(c->Dim(slot, 1), c->MakeDim(dim), &unused));
      }
      return Status();
}

}  // namespace

REGISTER_OP("GraphoptEvExport")
    .Input("table: resource")
    .Output("keys: int64")
    .Output("values: dtype")
    .Output("freqs: int64")
    .Output("versions: int64")
    .Attr("dim: int >= 1")
    .Attr("dtype: {float} = DT_FLOAT")
    .SetIsStateful()
    .SetShapeFn(ExportShape)
    .Doc("A consistent snapshot of the table: keys, rows, frequencies, last steps (values "
         "only; GraphoptEvExportWithSlots adds the optimizer's slots).");

REGISTER_OP("GraphoptEvExportWithSlots")
    .Input("table: resource")
    .Output("keys: int64")
    .Output("values: dtype")
    .Output("freqs: int64")
    .Output("versions: int64")
    .Output("slots: num_slots * dtype")
    .Output("pending_keys: int64")
    .Output("pending_counts: int64")
    .Attr("dim: int >= 1")
    .Attr("dtype: {float} = DT_FLOAT")
    .Attr("num_slots: int >= 0")
    .SetIsStateful()
    .SetShapeFn(ExportShape)
    .Doc("GraphoptEvExport plus each slot [n, dim] in row order (num_slots must be the "
         "table's slot count) and the admission counters of keys not admitted yet (admission "
         "bloom: a header (bloom_counters, bloom_hashes), then (counter index, value) per "
         "nonzero counter of the filter).");

REGISTER_OP("GraphoptEvImport")
    .Input("table: resource")
    .Input("keys: int64")
    .Input("values: dtype")
    .Input("freqs: int64")
    .Input("versions: int64")
    .Attr("dim: int >= 1")
    .Attr("dtype: {float} = DT_FLOAT")
    .SetIsStateful()
    .SetShapeFn(ImportShape)
    .Doc("Replaces the whole content of the table (duplicate keys: the last wins); a table "
         "with an optimizer gets fresh slots (the optimizer's initial values).");

REGISTER_OP("GraphoptEvImportWithSlots")
    .Input("table: resource")
    .Input("keys: int64")
    .Input("values: dtype")
    .Input("freqs: int64")
    .Input("versions: int64")
    .Input("slots: num_slots * dtype")
    .Input("pending_keys: int64")
    .Input("pending_counts: int64")
    .Attr("dim: int >= 1")
    .Attr("dtype: {float} = DT_FLOAT")
    .Attr("num_slots: int >= 0")
    .Attr("optimizer: string")
    .SetIsStateful()
    .SetShapeFn(ImportShape)
    .Doc("GraphoptEvImport with the slots saved for `optimizer`: it must be the table's "
         "optimizer and num_slots its slot count (0: fresh slots); pending_keys/counts "
         "restore the admission counters of keys not admitted yet.");

REGISTER_OP("GraphoptEvExportCompressed")
    .Input("table: resource")
    .Output("keys: int64")
    .Output("codes: Tcodes")
    .Output("scale_bias: float")
    .Attr("dim: int >= 1")
    .Attr("Tcodes: {uint8, half, bfloat16}")
    .SetIsStateful()
    .SetShapeFn([](InferenceContext* c) {
      TF_RETURN_IF_ERROR(TableIsScalar(c));
      int64_t dim;
      TF_RETURN_IF_ERROR(c->GetAttr("dim", &dim));
      tensorflow::DataType codes;
      TF_RETURN_IF_ERROR(c->GetAttr("Tcodes", &codes));
      DimensionHandle n = c->UnknownDim();
      c->set_output(0, c->Vector(n));
      c->set_output(1, c->Matrix(n, dim));
      c->set_output(2, c->Matrix(n, codes == tensorflow::DT_UINT8 ? 2 : 0));
      return Status();
    })
    .Doc("A compressed table's rows as stored: keys, codes [n, dim] (int8 rows: uint8 "
         "codes, value = code * scale + bias; float16 / bfloat16 rows: the values) and "
         "scale_bias [n, 2] (int8; [n, 0] for 16-bit rows). Tcodes must match the table's "
         "row_dtype.");

REGISTER_OP("GraphoptEvImportCompressed")
    .Input("table: resource")
    .Input("keys: int64")
    .Input("codes: Tcodes")
    .Input("scale_bias: float")
    .Attr("dim: int >= 1")
    .Attr("Tcodes: {uint8, half, bfloat16}")
    .SetIsStateful()
    .SetShapeFn([](InferenceContext* c) {
      TF_RETURN_IF_ERROR(TableIsScalar(c));
      int64_t dim;
      TF_RETURN_IF_ERROR(c->GetAttr("dim", &dim));
      tensorflow::DataType type;
      TF_RETURN_IF_ERROR(c->GetAttr("Tcodes", &type));
      ShapeHandle keys, codes, scale_bias;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 1, &keys));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 2, &codes));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 2, &scale_bias));
      DimensionHandle n = c->Dim(keys, 0), unused;
      TF_RETURN_IF_ERROR(c->Merge(n, c->Dim(codes, 0), &n));
      TF_RETURN_IF_ERROR(c->Merge(n, c->Dim(scale_bias, 0), &n));
      TF_RETURN_IF_ERROR(c->Merge(c->Dim(codes, 1), c->MakeDim(dim), &unused));
      TF_RETURN_IF_ERROR(c->Merge(c->Dim(scale_bias, 1),
                                  c->MakeDim(type == tensorflow::DT_UINT8 ? 2 : 0), &unused));
      return Status();
    })
    .Doc("Replaces the whole content of a compressed table with rows as stored "
         "(GraphoptEvExportCompressed's keys, codes, scale_bias); an int8 row's scale must "
         "be finite and >= 0, its bias finite.");

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

// keys [n], grads [n, dim], then `scalars` rank-0 inputs.
Status ApplyShape(InferenceContext* c, int scalars) {
  TF_RETURN_IF_ERROR(TableIsScalar(c));
  int64_t dim;
  TF_RETURN_IF_ERROR(c->GetAttr("dim", &dim));
  ShapeHandle keys, grads, unused;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 1, &keys));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 2, &grads));
  DimensionHandle n;
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(keys, 0), c->Dim(grads, 0), &n));
  DimensionHandle d;
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(grads, 1), c->MakeDim(dim), &d));
  for (int i = 0; i < scalars; ++i) TF_RETURN_IF_ERROR(c->WithRank(c->input(3 + i), 0, &unused));
  return Status();
}

#define GRAPHOPT_APPLY_OP(NAME)                 \
  REGISTER_OP(NAME)                             \
      .Input("table: resource")                 \
      .Input("keys: Tkeys")                     \
      .Input("grads: dtype")

GRAPHOPT_APPLY_OP("GraphoptEvApplySgd")
    .Input("lr: dtype")
    .Attr("Tkeys: {int32, int64} = DT_INT64")
    .Attr("dim: int >= 1")
    .Attr("dtype: {float} = DT_FLOAT")
    .Attr("sum_duplicates: bool = true")
    .SetIsStateful()
    .SetShapeFn([](InferenceContext* c) { return ApplyShape(c, 1); })
    .Doc("row -= lr * g, g the gradients of each key summed in batch order; keys without "
         "a row are skipped. Tables created with optimizer '' or sgd. sum_duplicates=false: "
         "row -= lr * g once per occurrence in batch order, v1 GradientDescentOptimizer's "
         "scatter update, bit for bit.");

GRAPHOPT_APPLY_OP("GraphoptEvApplyAdagrad")
    .Input("lr: dtype")
    .Input("epsilon: dtype")
    .Attr("Tkeys: {int32, int64} = DT_INT64")
    .Attr("dim: int >= 1")
    .Attr("dtype: {float} = DT_FLOAT")
    .Attr("rsqrt: bool = false")
    .Attr("epsilon_inside_sqrt: bool = false")
    .Attr("batch_rsqrt: bool = false")
    .SetIsStateful()
    .SetShapeFn([](InferenceContext* c) { return ApplyShape(c, 2); })
    .Doc("accum += g*g; row -= lr*g / (sqrt(accum) + epsilon) (ResourceSparseApplyAdagradV2). "
         "rsqrt=true: row -= lr*g*rsqrt(accum) as v1 ResourceSparseApplyAdagrad computes it "
         "(Eigen's packet rsqrt), bit for bit; epsilon must then be 0. "
         "epsilon_inside_sqrt=true: row -= lr*g / sqrt(accum + epsilon), the Keras (tf_keras "
         "and Keras 3) Adagrad's arithmetic, bit for bit; not with rsqrt. batch_rsqrt=true "
         "(with epsilon_inside_sqrt): that update as a compiled TensorFlow function computes it, "
         "row -= (lr*g) * rsqrt(accum + epsilon), Eigen's packet rsqrt on the first "
         "floor(U*dim/8)*8 elements of the batch's [U unique keys, dim] gradient in "
         "first-occurrence order, 1/sqrt on the rest.");

GRAPHOPT_APPLY_OP("GraphoptEvApplyAdam")
    .Input("lr: dtype")
    .Input("beta1: dtype")
    .Input("beta2: dtype")
    .Input("epsilon: dtype")
    .Input("beta1_power: dtype")
    .Input("beta2_power: dtype")
    .Attr("Tkeys: {int32, int64} = DT_INT64")
    .Attr("dim: int >= 1")
    .Attr("dtype: {float} = DT_FLOAT")
    .SetIsStateful()
    .SetShapeFn([](InferenceContext* c) { return ApplyShape(c, 6); })
    .Doc("Lazy Adam (ApplyAdam's formula on the batch's rows only): alpha = lr * "
         "sqrt(1 - beta2_power) / (1 - beta1_power); m += (g - m)(1 - beta1); "
         "v += (g*g - v)(1 - beta2); row -= m*alpha / (sqrt(v) + epsilon).");

GRAPHOPT_APPLY_OP("GraphoptEvApplyFtrl")
    .Input("lr: dtype")
    .Input("l1: dtype")
    .Input("l2: dtype")
    .Input("lr_power: dtype")
    .Attr("Tkeys: {int32, int64} = DT_INT64")
    .Attr("dim: int >= 1")
    .Attr("dtype: {float} = DT_FLOAT")
    .SetIsStateful()
    .SetShapeFn([](InferenceContext* c) { return ApplyShape(c, 4); })
    .Doc("FTRL-Proximal as ResourceSparseApplyFtrl (slots accumulator, linear).");

#undef GRAPHOPT_APPLY_OP

REGISTER_OP("GraphoptEvEvict")
    .Input("table: resource")
    .Input("step: int64")
    .Input("ttl: int64")
    .Input("min_freq: int64")
    .Input("max_rows: int64")
    .Output("evicted: int64")
    .Attr("policy: string = 'lru'")
    .SetIsStateful()
    .SetShapeFn([](InferenceContext* c) {
      TF_RETURN_IF_ERROR(TableIsScalar(c));
      ShapeHandle unused;
      for (int i = 1; i <= 4; ++i) TF_RETURN_IF_ERROR(c->WithRank(c->input(i), 0, &unused));
      c->set_output(0, c->Vector(c->UnknownDim()));
      return Status();
    })
    .Doc("Removes rows whose last step is more than ttl before step, rows seen fewer than "
         "min_freq times, then the least recently (policy lfu: least frequently) used rows "
         "until at most max_rows remain (0 disables a rule); returns the evicted keys.");

REGISTER_OP("GraphoptEvStats")
    .Input("table: resource")
    .Output("size: int64")
    .Output("admitted: int64")
    .Output("evicted: int64")
    .Output("pending: int64")
    .Output("bytes_used: int64")
    .SetIsStateful()
    .SetShapeFn([](InferenceContext* c) {
      TF_RETURN_IF_ERROR(TableIsScalar(c));
      for (int i = 0; i < 5; ++i) c->set_output(i, c->Scalar());
      return Status();
    })
    .Doc("Keys held, keys admitted by find-or-insert, keys evicted, keys counted but not "
         "admitted yet, bytes held.");

}  // namespace graphopt
