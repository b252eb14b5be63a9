// Kernels of the online-update ops (GraphoptEvExportChanged, GraphoptEvApplyDelta),
// templated on the Device like embedding_variable_kernels.h.
#ifndef GRAPHOPT_EMBEDDING_VARIABLE_CC_KERNELS_ONLINE_KERNELS_H_
#define GRAPHOPT_EMBEDDING_VARIABLE_CC_KERNELS_ONLINE_KERNELS_H_

#include "embedding_variable/cc/kernels/embedding_variable_kernels.h"

namespace graphopt {

template <typename Device>
class EvExportChangedOp : public EvTableOp<Device> {
 public:
  using Base = EvTableOp<Device>;
  using Base::Base;
  using typename Base::Table;
  void ComputeWithTable(OpKernelContext* ctx, Table* table) override {
    const Tensor& since = ctx->input(1);
    OP_REQUIRES(ctx, TensorShapeUtils::IsScalar(since.shape()),
                errors::InvalidArgument("since must be a scalar, got shape ",
                                        since.shape().DebugString()));
    const int dim = this->dim_;
    const auto allocate = [=](int64_t changed, int64_t held, ChangedRows* out) -> Status {
      Tensor *keys, *values, *versions, *present;
      TF_RETURN_IF_ERROR(ctx->allocate_output(0, {changed}, &keys));
      TF_RETURN_IF_ERROR(ctx->allocate_output(1, {changed, dim}, &values));
      TF_RETURN_IF_ERROR(ctx->allocate_output(2, {changed}, &versions));
      TF_RETURN_IF_ERROR(ctx->allocate_output(3, {held}, &present));
      *out = {keys->flat<int64_t>().data(), values->flat<float>().data(),
              versions->flat<int64_t>().data(), present->flat<int64_t>().data()};
      return Status();
    };
    OP_REQUIRES_OK(ctx, ExportChangedFunctor<Device>()(ctx, *table, since.scalar<int64_t>()(),
                                                       allocate));
  }
};

template <typename Device>
class EvApplyDeltaOp : public EvTableOp<Device> {
 public:
  using Base = EvTableOp<Device>;
  using Base::Base;
  using typename Base::Table;
  void ComputeWithTable(OpKernelContext* ctx, Table* table) override {
    const Tensor& keys = ctx->input(1);
    const Tensor& values = ctx->input(2);
    const Tensor& removed = ctx->input(3);
    OP_REQUIRES_OK(ctx, CheckVector(keys, "keys"));
    OP_REQUIRES_OK(ctx, CheckVector(removed, "removed_keys"));
    const int64_t n = keys.dim_size(0);
    OP_REQUIRES_OK(ctx, CheckRows(values, "values", n, this->dim_));
    OP_REQUIRES_OK(ctx, ApplyDeltaFunctor<Device>()(ctx, table, keys.flat<int64_t>().data(), n,
                                                    values.flat<float>().data(),
                                                    removed.flat<int64_t>().data(),
                                                    removed.NumElements()));
  }
};

}  // namespace graphopt

#endif  // GRAPHOPT_EMBEDDING_VARIABLE_CC_KERNELS_ONLINE_KERNELS_H_
