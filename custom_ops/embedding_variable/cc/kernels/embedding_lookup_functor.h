// Device seam of the row lookups: kernels call these functors, so a CUDA
// specialisation (embedding_lookup_functor_gpu.cu.cc, on the roadmap) can be
// added without touching the op kernels.
#ifndef GRAPHOPT_EMBEDDING_VARIABLE_CC_KERNELS_EMBEDDING_LOOKUP_FUNCTOR_H_
#define GRAPHOPT_EMBEDDING_VARIABLE_CC_KERNELS_EMBEDDING_LOOKUP_FUNCTOR_H_

#include "embedding_variable/cc/kernels/embedding_table.h"
#include "tensorflow/core/framework/op_kernel.h"

namespace graphopt {

using CPUDevice = Eigen::ThreadPoolDevice;

inline IntraOpPool CpuPool(tensorflow::OpKernelContext* ctx) {
  const auto* threads = ctx->device()->tensorflow_cpu_worker_threads();
  return IntraOpPool{threads->workers, threads->num_threads};
}

template <typename Device, typename K>
struct FindFunctor;

template <typename Device, typename K>
struct FindOrInsertFunctor;

template <typename K>
struct FindFunctor<CPUDevice, K> {
  void operator()(tensorflow::OpKernelContext* ctx, const EmbeddingTable& table, const K* keys,
                  int64_t n, float* out) const {
    table.Find(keys, n, out, CpuPool(ctx));
  }
};

template <typename K>
struct FindOrInsertFunctor<CPUDevice, K> {
  tensorflow::Status operator()(tensorflow::OpKernelContext* ctx, EmbeddingTable* table,
                                const K* keys, int64_t n, int64_t step, float* out) const {
    return table->FindOrInsert(keys, n, step, out, CpuPool(ctx));
  }
};

}  // namespace graphopt

#endif  // GRAPHOPT_EMBEDDING_VARIABLE_CC_KERNELS_EMBEDDING_LOOKUP_FUNCTOR_H_
