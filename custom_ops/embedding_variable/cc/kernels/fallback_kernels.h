// Kernels of the fallback ops (op definitions: ../ops/fallback_ops.cc), templated
// on the Device like the other EmbeddingVariable kernels; the functors that touch
// rows are specialised for the CPU in fallback_kernels.cc.
#ifndef GRAPHOPT_EMBEDDING_VARIABLE_CC_KERNELS_FALLBACK_KERNELS_H_
#define GRAPHOPT_EMBEDDING_VARIABLE_CC_KERNELS_FALLBACK_KERNELS_H_

#include <cstdint>
#include <string>

#include "embedding_variable/cc/kernels/embedding_variable_kernels.h"
#include "tensorflow/core/platform/tstring.h"

// TensorFlow's Fingerprint64 (tsl/platform/fingerprint.h) is farmhash's
// Fingerprint64, which is farmhashna::Hash64; the pip package ships the symbol in
// libtensorflow_framework but not farmhash.h, so it is declared here.
// tests/ops/test_fallback.py checks it against StringToHashBucketFast.
namespace farmhashna {
uint64_t Hash64(const char* s, size_t len);
}  // namespace farmhashna

namespace graphopt {

// Raw keys carry the sign bit; converted bucket rows keep keys 0..M-1, so the two
// never meet in one table. Strings: the same farmhash Fingerprint64 that
// StringToHashBucketFast takes modulo its bucket count (63 bits of it survive).
// Integers: the id itself (ids n and n - 2^63 share a key, as only negative ids can).
constexpr uint64_t kRawKeyBit = 1ULL << 63;

inline int64_t CollisionlessKey(const tensorflow::tstring& id) {
  return static_cast<int64_t>(farmhashna::Hash64(id.data(), id.size()) | kRawKeyBit);
}
inline int64_t CollisionlessKey(int64_t id) {
  return static_cast<int64_t>(static_cast<uint64_t>(id) | kRawKeyBit);
}
inline int64_t CollisionlessKey(int32_t id) { return CollisionlessKey(static_cast<int64_t>(id)); }

// keys[n] (collisionless keys) -> out[n, dim]; a missing key reads the row of
// fallback_keys[i]. With insert (find-or-insert), missing keys are first inserted
// with that row, then every key is counted at step.
template <typename Device, typename F>
struct FindWithFallbackFunctor {
  tensorflow::Status operator()(tensorflow::OpKernelContext* ctx,
                                typename DeviceTable<Device>::type* table, const int64_t* keys,
                                const F* fallback_keys, int64_t n, bool insert, int64_t step,
                                float* out) const;
};

template <typename Device, typename T>
class EvCollisionlessKeyOp : public OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(OpKernelContext* ctx) override {
    const Tensor& ids = ctx->input(0);
    Tensor* keys = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, ids.shape(), &keys));
    const auto in = ids.flat<T>();
    auto out = keys->flat<int64_t>();
    for (int64_t i = 0; i < in.size(); ++i) out(i) = CollisionlessKey(in(i));
  }
};

template <typename Device, typename T, typename F, bool insert>
class EvFindWithFallbackOp : public EvTableOp<Device> {
 public:
  using Base = EvTableOp<Device>;
  using Base::Base;
  using typename Base::Table;
  void ComputeWithTable(OpKernelContext* ctx, Table* table) override {
    const Tensor& ids = ctx->input(1);
    const Tensor& fallback = ctx->input(2);
    OP_REQUIRES(ctx, ids.shape() == fallback.shape(),
                errors::InvalidArgument("fallback_keys must have the shape of ids ",
                                        ids.shape().DebugString(), ", got ",
                                        fallback.shape().DebugString()));
    int64_t step = 0;
    if (insert) {
      const Tensor& step_t = ctx->input(3);
      OP_REQUIRES(ctx, TensorShapeUtils::IsScalar(step_t.shape()),
                  errors::InvalidArgument("step must be a scalar, got shape ",
                                          step_t.shape().DebugString()));
      step = step_t.scalar<int64_t>()();
    }
    const int64_t n = ids.NumElements();
    std::vector<int64_t> keys(n);
    const auto in = ids.flat<T>();
    for (int64_t i = 0; i < n; ++i) keys[i] = CollisionlessKey(in(i));
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, this->RowsShape(ids), &out));
    OP_REQUIRES_OK(ctx, FindWithFallbackFunctor<Device, F>()(
                            ctx, table, keys.data(), fallback.flat<F>().data(), n, insert,
                            step, out->flat<float>().data()));
  }
};

}  // namespace graphopt

#endif  // GRAPHOPT_EMBEDDING_VARIABLE_CC_KERNELS_FALLBACK_KERNELS_H_
