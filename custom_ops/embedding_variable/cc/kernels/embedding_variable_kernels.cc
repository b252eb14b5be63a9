// CPU specialisations of the table functors and CPU registrations of the
// EmbeddingVariable kernels (kernels: embedding_variable_kernels.h).
#include "embedding_variable/cc/kernels/embedding_variable_kernels.h"

#include <new>

namespace graphopt {

using tensorflow::DEVICE_CPU;

namespace {

IntraOpPool CpuPool(OpKernelContext* ctx) {
  const auto* threads = ctx->device()->tensorflow_cpu_worker_threads();
  return IntraOpPool{threads->workers, threads->num_threads};
}

// Runs a table operation that allocates (scratch vectors, index growth) so that
// running out of memory on the calling thread fails the op instead of
// terminating the process (pool threads allocate only fixed per-thread scratch).
template <typename F>
Status OutOfMemoryIsAnError(F&& operation) {
  try {
    return operation();
  } catch (const std::bad_alloc&) {
    return errors::ResourceExhausted("out of memory in an EmbeddingVariable operation");
  }
}

}  // namespace

template <typename K>
struct FindFunctor<CPUDevice, K> {
  void operator()(OpKernelContext* ctx, const EmbeddingTable& table, const K* keys, int64_t n,
                  float* out) const {
    table.Find(keys, n, out, CpuPool(ctx));
  }
};

template <typename K>
struct FindOrInsertFunctor<CPUDevice, K> {
  Status operator()(OpKernelContext* ctx, EmbeddingTable* table, const K* keys, int64_t n,
                    int64_t step, float* out) const {
    return OutOfMemoryIsAnError(
        [&] { return table->FindOrInsert(keys, n, step, out, CpuPool(ctx)); });
  }
};

template <typename K>
struct InsertFunctor<CPUDevice, K> {
  Status operator()(OpKernelContext* ctx, EmbeddingTable* table, const K* keys, int64_t n,
                    const float* values) const {
    return OutOfMemoryIsAnError([&] { return table->Insert(keys, n, values, CpuPool(ctx)); });
  }
};

template <typename K>
struct RemoveFunctor<CPUDevice, K> {
  void operator()(OpKernelContext* ctx, EmbeddingTable* table, const K* keys, int64_t n) const {
    table->Remove(keys, n, CpuPool(ctx));
  }
};

template <>
struct ImportFunctor<CPUDevice> {
  Status operator()(OpKernelContext* ctx, EmbeddingTable* table, const int64_t* keys, int64_t n,
                    const float* values, const int64_t* freqs, const int64_t* versions,
                    const std::vector<const float*>& slots,
                    const PendingCounts& pending) const {
    return OutOfMemoryIsAnError(
        [&] { return table->Import(keys, n, values, freqs, versions, slots, pending,
                                   CpuPool(ctx)); });
  }
};

template <>
struct ExportFunctor<CPUDevice> {
  Status operator()(OpKernelContext*, const EmbeddingTable& table,
                    const std::function<Status(int64_t, ExportBuffers*)>& allocate) const {
    return table.Export(allocate);
  }
};

template <typename K>
struct SparseApplyFunctor<CPUDevice, K> {
  Status operator()(OpKernelContext* ctx, EmbeddingTable* table, const K* keys, int64_t n,
                    const float* grads, const OptimizerParams& params) const {
    return OutOfMemoryIsAnError(
        [&] { return table->Apply(keys, n, grads, params, CpuPool(ctx)); });
  }
};

template <>
struct EvictFunctor<CPUDevice> {
  Status operator()(OpKernelContext*, EmbeddingTable* table, const EvictionRule& rule,
                    std::vector<int64_t>* evicted) const {
    return OutOfMemoryIsAnError([&] { return table->Evict(rule, evicted); });
  }
};

#define REGISTER(NAME, OP) \
  REGISTER_KERNEL_BUILDER(Name(NAME).Device(DEVICE_CPU), OP<CPUDevice>)
#define REGISTER_KEYED(NAME, ...)                                                          \
  REGISTER_KERNEL_BUILDER(Name(NAME).Device(DEVICE_CPU).TypeConstraint<int32_t>("Tkeys"),  \
                          __VA_ARGS__(int32_t));                                           \
  REGISTER_KERNEL_BUILDER(Name(NAME).Device(DEVICE_CPU).TypeConstraint<int64_t>("Tkeys"),  \
                          __VA_ARGS__(int64_t))
#define FIND(K) EvFindOp<CPUDevice, K>
#define FIND_OR_INSERT(K) EvFindOrInsertOp<CPUDevice, K>
#define INSERT(K) EvInsertOp<CPUDevice, K>
#define REMOVE(K) EvRemoveOp<CPUDevice, K>
#define APPLY_SGD(K) EvApplyKindOp<CPUDevice, K, OptimizerKind::kSgd>
#define APPLY_ADAGRAD(K) EvApplyKindOp<CPUDevice, K, OptimizerKind::kAdagrad>
#define APPLY_ADAM(K) EvApplyKindOp<CPUDevice, K, OptimizerKind::kAdam>
#define APPLY_FTRL(K) EvApplyKindOp<CPUDevice, K, OptimizerKind::kFtrl>

REGISTER("GraphoptEvHandleOp", EvHandleOp);
REGISTER_KEYED("GraphoptEvFind", FIND);
REGISTER_KEYED("GraphoptEvFindOrInsert", FIND_OR_INSERT);
REGISTER_KEYED("GraphoptEvInsert", INSERT);
REGISTER_KEYED("GraphoptEvRemove", REMOVE);
REGISTER_KEYED("GraphoptEvApplySgd", APPLY_SGD);
REGISTER_KEYED("GraphoptEvApplyAdagrad", APPLY_ADAGRAD);
REGISTER_KEYED("GraphoptEvApplyAdam", APPLY_ADAM);
REGISTER_KEYED("GraphoptEvApplyFtrl", APPLY_FTRL);
REGISTER("GraphoptEvExport", EvExportOp);
REGISTER("GraphoptEvImport", EvImportOp);
REGISTER("GraphoptEvExportWithSlots", EvExportOp);
REGISTER("GraphoptEvImportWithSlots", EvImportOp);
REGISTER("GraphoptEvSize", EvSizeOp);
REGISTER("GraphoptEvMemory", EvMemoryOp);
REGISTER("GraphoptEvEvict", EvEvictOp);
REGISTER("GraphoptEvStats", EvStatsOp);

}  // namespace graphopt
