// Op definitions of the fallback ops that collisionless migration rewrites a
// hashed or vocabulary lookup into (docs/ops.md, "Fallback ops"; docs/rewrite.md,
// "Collisionless migration"). A raw id (string, int32 or int64) becomes the key
// CollisionlessKey(id) (kernels/fallback_kernels.h); a key the table does not
// hold reads the row of its fallback key, the bucket the original model mapped
// the id to, so the migrated lookup returns what the original returned.
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace graphopt {

using tensorflow::Status;
using tensorflow::shape_inference::InferenceContext;
using tensorflow::shape_inference::ShapeHandle;

namespace {

// values: keys.shape + [dim]; fallback_keys must have the shape of keys.
Status FallbackShape(InferenceContext* c) {
  ShapeHandle unused, keys;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 0, &unused));
  TF_RETURN_IF_ERROR(c->Merge(c->input(1), c->input(2), &keys));
  if (c->num_inputs() > 3) TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 0, &unused));
  int64_t dim;
  TF_RETURN_IF_ERROR(c->GetAttr("dim", &dim));
  ShapeHandle rows;
  TF_RETURN_IF_ERROR(c->Concatenate(keys, c->Vector(dim), &rows));
  c->set_output(0, rows);
  return Status();
}

}  // namespace

REGISTER_OP("GraphoptEvCollisionlessKey")
    .Input("ids: Tids")
    .Output("keys: int64")
    .Attr("Tids: {string, int32, int64}")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(0));
      return Status();
    })
    .Doc("The table key of each raw id: Fingerprint64 of a string (the farmhash "
         "fingerprint StringToHashBucketFast reduces modulo its bucket count), or "
         "the integer itself, with the sign bit set so raw keys never meet the "
         "bucket keys 0..M-1 kept beside them.");

REGISTER_OP("GraphoptEvFindWithFallback")
    .Input("table: resource")
    .Input("ids: Tids")
    .Input("fallback_keys: Tfallback")
    .Output("values: dtype")
    .Attr("Tids: {string, int32, int64}")
    .Attr("Tfallback: {int32, int64} = DT_INT64")
    .Attr("dim: int >= 1")
    .Attr("dtype: {float} = DT_FLOAT")
    .SetIsStateful()
    .SetShapeFn(FallbackShape)
    .Doc("Rows of CollisionlessKey(ids); an id whose key the table does not hold reads "
         "the row of its fallback key (the default row when that is missing too). "
         "Nothing is inserted or counted.");

REGISTER_OP("GraphoptEvFindOrInsertWithFallback")
    .Input("table: resource")
    .Input("ids: Tids")
    .Input("fallback_keys: Tfallback")
    .Input("step: int64")
    .Output("values: dtype")
    .Attr("Tids: {string, int32, int64}")
    .Attr("Tfallback: {int32, int64} = DT_INT64")
    .Attr("dim: int >= 1")
    .Attr("dtype: {float} = DT_FLOAT")
    .SetIsStateful()
    .SetShapeFn(FallbackShape)
    .Doc("Like GraphoptEvFindWithFallback, but an id whose key is missing is inserted "
         "with its fallback key's row as its initial value (admission does not apply: "
         "it gets its row at once), then every key is counted as find-or-insert does.");

}  // namespace graphopt
