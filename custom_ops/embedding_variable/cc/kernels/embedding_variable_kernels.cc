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

// A compressed table's stored rows (CPU-only, like compressed tables): codes of
// Tcodes (uint8 for int8 rows, half, bfloat16) and, for int8, scale_bias [n, 2].
Status CheckCodesType(const EmbeddingTable& table, tensorflow::DataType codes) {
  const RowType type = table.row_type();
  const bool fits = (type == RowType::kInt8 && codes == tensorflow::DT_UINT8) ||
                    (type == RowType::kFloat16 && codes == tensorflow::DT_HALF) ||
                    (type == RowType::kBFloat16 && codes == tensorflow::DT_BFLOAT16);
  if (fits) return Status();
  return errors::InvalidArgument(
      "the EmbeddingVariable stores ", RowTypeName(type), " rows but the op's Tcodes is ",
      tensorflow::DataTypeString(codes),
      " (int8 rows: uint8 codes, float16: half, bfloat16: bfloat16; a float32 table has "
      "no compressed rows: use GraphoptEvExport / GraphoptEvImport)");
}

class EvExportCompressedOp : public EvTableOp<CPUDevice> {
 public:
  explicit EvExportCompressedOp(OpKernelConstruction* c) : EvTableOp<CPUDevice>(c) {
    OP_REQUIRES_OK(c, c->GetAttr("Tcodes", &codes_type_));
  }
  void ComputeWithTable(OpKernelContext* ctx, EmbeddingTable* table) override {
    OP_REQUIRES_OK(ctx, CheckCodesType(*table, codes_type_));
    const int dim = dim_;
    const bool int8 = codes_type_ == tensorflow::DT_UINT8;
    std::vector<int64_t> freqs, versions;  // a compressed table keeps neither
    const auto allocate = [&](int64_t n, ExportBuffers* out) -> Status {
      Tensor *keys, *codes, *scale_bias;
      TF_RETURN_IF_ERROR(ctx->allocate_output(0, {n}, &keys));
      TF_RETURN_IF_ERROR(ctx->allocate_output(1, {n, dim}, &codes));
      TF_RETURN_IF_ERROR(ctx->allocate_output(2, {n, int8 ? 2 : 0}, &scale_bias));
      freqs.resize(n);
      versions.resize(n);
      out->keys = keys->flat<int64_t>().data();
      out->values = nullptr;
      out->codes = codes->data();
      out->scale_bias = int8 ? scale_bias->flat<float>().data() : nullptr;
      out->freqs = freqs.data();
      out->versions = versions.data();
      return Status();
    };
    OP_REQUIRES_OK(ctx, OutOfMemoryIsAnError([&] { return table->Export(allocate); }));
  }

 private:
  tensorflow::DataType codes_type_;
};

class EvImportCompressedOp : public EvTableOp<CPUDevice> {
 public:
  explicit EvImportCompressedOp(OpKernelConstruction* c) : EvTableOp<CPUDevice>(c) {
    OP_REQUIRES_OK(c, c->GetAttr("Tcodes", &codes_type_));
  }
  void ComputeWithTable(OpKernelContext* ctx, EmbeddingTable* table) override {
    OP_REQUIRES_OK(ctx, CheckCodesType(*table, codes_type_));
    const Tensor& keys = ctx->input(1);
    const Tensor& codes = ctx->input(2);
    const Tensor& scale_bias = ctx->input(3);
    OP_REQUIRES(ctx, TensorShapeUtils::IsVector(keys.shape()),
                errors::InvalidArgument("keys must be 1-D, got shape ",
                                        keys.shape().DebugString()));
    const int64_t n = keys.dim_size(0);
    const bool int8 = codes_type_ == tensorflow::DT_UINT8;
    OP_REQUIRES(ctx, codes.shape() == TensorShape({n, dim_}),
                errors::InvalidArgument("codes must have shape [", n, ", ", dim_, "] to match ",
                                        n, " keys, got ", codes.shape().DebugString()));
    OP_REQUIRES(ctx, scale_bias.shape() == TensorShape({n, int8 ? 2 : 0}),
                errors::InvalidArgument("scale_bias must have shape [", n, ", ", int8 ? 2 : 0,
                                        "] (int8 rows: scale and bias; 16-bit rows: none), got ",
                                        scale_bias.shape().DebugString()));
    const auto* threads = ctx->device()->tensorflow_cpu_worker_threads();
    const IntraOpPool pool{threads->workers, threads->num_threads};
    OP_REQUIRES_OK(ctx, OutOfMemoryIsAnError([&] {
                     return table->ImportCompressed(keys.flat<int64_t>().data(), n, codes.data(),
                                                    int8 ? scale_bias.flat<float>().data()
                                                         : nullptr,
                                                    pool);
                   }));
  }

 private:
  tensorflow::DataType codes_type_;
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
REGISTER_KERNEL_BUILDER(Name("GraphoptEvExportCompressed").Device(DEVICE_CPU),
                        EvExportCompressedOp);
REGISTER_KERNEL_BUILDER(Name("GraphoptEvImportCompressed").Device(DEVICE_CPU),
                        EvImportCompressedOp);

}  // namespace graphopt
