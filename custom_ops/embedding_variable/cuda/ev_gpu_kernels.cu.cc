// GPU registrations of the EmbeddingVariable kernels (kernel templates:
// cc/kernels/embedding_variable_kernels.h) over GpuEmbeddingTable (ev_gpu_table.cuh), through
// the device seam of cc/kernels/embedding_table_functors.h. Host code only, compiled by the
// host compiler with TensorFlow's flags; the CUDA kernels are in ev_gpu_table.cu. Built by
// setup.py into graphopt/_graphopt_ops_gpu.so when nvcc and TensorFlow's CUDA headers are
// present, and loaded by graphopt only when TensorFlow sees a GPU (docs/cuda.md).
#include <cuda_runtime.h>

#include <memory>
#include <string>
#include <vector>

#include "embedding_variable/cc/kernels/embedding_variable_kernels.h"
#include "embedding_variable/cuda/ev_gpu_table.cuh"
#include "tensorflow/core/framework/allocator.h"
#include "tensorflow/core/framework/device_base.h"
#include "xla/stream_executor/stream.h"

namespace Eigen {
struct GpuDevice;  // only a tag here: these kernels never touch an Eigen device
}  // namespace Eigen

namespace graphopt {

using GPUDevice = Eigen::GpuDevice;
using tensorflow::DEVICE_GPU;

namespace {

Status ToTf(const gpu::Status& s) {
  switch (s.code) {
    case gpu::Status::kOk: return Status();
    case gpu::Status::kInvalidArgument: return errors::InvalidArgument(s.message);
    case gpu::Status::kResourceExhausted: return errors::ResourceExhausted(s.message);
    default: return errors::Internal(s.message);
  }
}

// The keys as device int64. int64 keys are device tensors; int32 tensors stay in host memory
// on a GPU device (TensorFlow's MTypeFromDType), so int32 keys are widened on the host and
// copied into a device temp.
template <typename K>
Status DeviceKeys(OpKernelContext* ctx, gpu::GpuEmbeddingTable* t, const K* keys, int64_t n,
                  Tensor* temp, const int64_t** out) {
  if constexpr (sizeof(K) == sizeof(int64_t)) {
    *out = reinterpret_cast<const int64_t*>(keys);
    return Status();
  } else {
    TF_RETURN_IF_ERROR(ctx->allocate_temp(tensorflow::DT_INT64, TensorShape({n}), temp));
    *out = temp->flat<int64_t>().data();
    if (n == 0) return Status();
    const std::vector<int64_t> wide(keys, keys + n);
    cudaError_t e = cudaMemcpyAsync(temp->flat<int64_t>().data(), wide.data(),
                                    n * sizeof(int64_t), cudaMemcpyHostToDevice, t->stream());
    if (e == cudaSuccess) e = cudaStreamSynchronize(t->stream());  // `wide` dies here
    if (e != cudaSuccess) {
      cudaGetLastError();
      return errors::Internal("copying int32 keys to the GPU: ", cudaGetErrorString(e));
    }
    return Status();
  }
}

constexpr gpu::KeyDtype kInt64 = gpu::KeyDtype::kInt64;

// The table's memory from the device's own allocator, which owns the GPU's memory in a
// TensorFlow process (cudaMalloc would find little left).
class TfDeviceMemory : public gpu::DeviceMemory {
 public:
  explicit TfDeviceMemory(tensorflow::Allocator* allocator) : allocator_(allocator) {}
  void* Allocate(size_t bytes) override {
    return allocator_->AllocateRaw(tensorflow::Allocator::kAllocatorAlignment, bytes);
  }
  void Free(void* p) override {
    if (p != nullptr) allocator_->DeallocateRaw(p);
  }
  int64_t Available() override {
    const auto stats = allocator_->GetStats();
    if (!stats || !stats->bytes_limit) return -1;
    return *stats->bytes_limit - stats->bytes_in_use;
  }

 private:
  tensorflow::Allocator* const allocator_;
};

}  // namespace

// The resource behind an EmbeddingVariable placed on a GPU. The device table is created on
// the first operation, with that op's stream and device allocator; operations on one table
// run one at a time (the table's host-side counts and scratch are not shared).
class GpuTableResource : public tensorflow::ResourceBase {
 public:
  GpuTableResource(int dim, std::vector<float> default_row, RowInitializer init,
                   TableOptions options)
      : dim_(dim), default_row_(std::move(default_row)), init_(init),
        options_(std::move(options)) {}

  int dim() const { return dim_; }
  int num_slots() const { return static_cast<int>(SlotNames(options_.optimizer).size()); }
  const TableOptions& options() const { return options_; }
  std::string DebugString() const override {
    return absl::StrCat("GraphoptGpuEmbeddingTable(dim=", dim_, ", size=", Size(), ")");
  }
  int64_t MemoryUsed() const override { return BytesUsed(); }

  int64_t Size() const {
    tensorflow::mutex_lock lock(mu_);
    return table_ ? table_->size() : 0;
  }
  // The GPU table admits every key at once and never evicts, so nothing is pending or
  // evicted; admitted counts the rows find-or-insert created (as on the CPU).
  TableStats Stats() const {
    tensorflow::mutex_lock lock(mu_);
    return TableStats{table_ ? table_->size() : 0, admitted_, 0, 0,
                      table_ ? table_->BytesUsed() : 0};
  }
  int64_t BytesUsed() const {
    tensorflow::mutex_lock lock(mu_);
    return table_ ? table_->BytesUsed() : 0;
  }
  // Keys the table holds before its index has to grow.
  int64_t Capacity() const {
    tensorflow::mutex_lock lock(mu_);
    return table_ ? static_cast<int64_t>(table_->capacity() * kMaxLoad) : 0;
  }

  Status With(OpKernelContext* ctx, const std::function<Status(gpu::GpuEmbeddingTable*)>& fn) {
    tensorflow::mutex_lock lock(mu_);
    if (!table_) TF_RETURN_IF_ERROR(Create(ctx));
    return fn(table_.get());
  }

  // A find-or-insert: the rows it adds are the rows it admitted (it never removes any).
  Status FindOrInsert(OpKernelContext* ctx,
                      const std::function<Status(gpu::GpuEmbeddingTable*)>& fn) {
    tensorflow::mutex_lock lock(mu_);
    if (!table_) TF_RETURN_IF_ERROR(Create(ctx));
    const int64_t before = table_->size();
    const Status st = fn(table_.get());
    admitted_ += table_->size() - before;
    return st;
  }

 private:
  static constexpr float kMaxLoad = 0.9f;

  Status Create(OpKernelContext* ctx) TF_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (options_.row_type != RowType::kFloat32) {
      return errors::Unimplemented(
          "compressed rows (row_dtype ", RowTypeName(options_.row_type),
          ") are CPU-only for now; place this EmbeddingVariable on the CPU (with "
          "tf.device('/CPU:0'))");
    }
    if (options_.min_count > 1 || options_.max_rows != 0) {
      return errors::Unimplemented(
          "admission (min_count > 1) and row caps (max_rows) are CPU-only for now; place this "
          "EmbeddingVariable on the CPU (with tf.device('/CPU:0'))");
    }
    gpu::TableConfig config;
    config.dim = dim_;
    // The CPU table's OptimizerKind and the core's Optimizer share their numbering.
    config.optimizer = static_cast<gpu::Optimizer>(static_cast<int>(options_.optimizer));
    for (size_t s = 0; s < options_.slot_init.size() && s < 2; ++s) {
      config.slot_init[s] = options_.slot_init[s];
    }
    config.init = init_;
    config.default_row = default_row_;
    config.max_load = kMaxLoad;
    config.memory = std::make_shared<TfDeviceMemory>(
        ctx->device()->GetAllocator(tensorflow::AllocatorAttributes()));
    cudaStream_t stream = nullptr;
    if (ctx->op_device_context() != nullptr && ctx->op_device_context()->stream() != nullptr) {
      stream = static_cast<cudaStream_t>(
          ctx->op_device_context()->stream()->platform_specific_handle().stream);
    }
    return ToTf(gpu::GpuEmbeddingTable::Create(config, stream, &table_));
  }

  const int dim_;
  const std::vector<float> default_row_;
  const RowInitializer init_;
  const TableOptions options_;
  mutable tensorflow::mutex mu_;
  std::unique_ptr<gpu::GpuEmbeddingTable> table_ TF_GUARDED_BY(mu_);
  int64_t admitted_ TF_GUARDED_BY(mu_) = 0;
};

template <>
struct DeviceTable<GPUDevice> {
  using type = GpuTableResource;
};

template <typename K>
struct FindFunctor<GPUDevice, K> {
  void operator()(OpKernelContext* ctx, const GpuTableResource& table, const K* keys, int64_t n,
                  float* out) const {
    OP_REQUIRES_OK(ctx, const_cast<GpuTableResource&>(table).With(
                            ctx, [&](gpu::GpuEmbeddingTable* t) {
                              Tensor temp;
                              const int64_t* k;
                              TF_RETURN_IF_ERROR(DeviceKeys(ctx, t, keys, n, &temp, &k));
                              return ToTf(t->Find(k, kInt64, n, out));
                            }));
  }
};

template <typename K>
struct FindOrInsertFunctor<GPUDevice, K> {
  Status operator()(OpKernelContext* ctx, GpuTableResource* table, const K* keys, int64_t n,
                    int64_t step, float* out) const {
    return table->FindOrInsert(ctx, [&](gpu::GpuEmbeddingTable* t) {
      Tensor temp;
      const int64_t* k;
      TF_RETURN_IF_ERROR(DeviceKeys(ctx, t, keys, n, &temp, &k));
      return ToTf(t->FindOrInsert(k, kInt64, n, step, out));
    });
  }
};

template <typename K>
struct InsertFunctor<GPUDevice, K> {
  Status operator()(OpKernelContext* ctx, GpuTableResource* table, const K* keys, int64_t n,
                    const float* values) const {
    return table->With(ctx, [&](gpu::GpuEmbeddingTable* t) {
      Tensor temp;
      const int64_t* k;
      TF_RETURN_IF_ERROR(DeviceKeys(ctx, t, keys, n, &temp, &k));
      return ToTf(t->Insert(k, kInt64, n, values));
    });
  }
};

template <typename K>
struct RemoveFunctor<GPUDevice, K> {
  void operator()(OpKernelContext* ctx, GpuTableResource* table, const K* keys,
                  int64_t n) const {
    OP_REQUIRES_OK(ctx, table->With(ctx, [&](gpu::GpuEmbeddingTable* t) {
      Tensor temp;
      const int64_t* k;
      TF_RETURN_IF_ERROR(DeviceKeys(ctx, t, keys, n, &temp, &k));
      return ToTf(t->Remove(k, kInt64, n));
    }));
  }
};

// `pending` (admission counters of keys without a row) is dropped: a table on the GPU admits
// every key at once (min_count > 1 is refused), so those counters no longer gate anything.
template <>
struct ImportFunctor<GPUDevice> {
  Status operator()(OpKernelContext* ctx, GpuTableResource* table, const int64_t* keys,
                    int64_t n, const float* values, const int64_t* freqs,
                    const int64_t* versions, const std::vector<const float*>& slots,
                    const PendingCounts&) const {
    return table->With(ctx, [&](gpu::GpuEmbeddingTable* t) {
      return ToTf(t->Import(keys, n, values, freqs, versions, slots));
    });
  }
};

template <>
struct ExportFunctor<GPUDevice> {
  Status operator()(OpKernelContext* ctx, const GpuTableResource& table,
                    const std::function<Status(int64_t, ExportBuffers*)>& allocate) const {
    return const_cast<GpuTableResource&>(table).With(ctx, [&](gpu::GpuEmbeddingTable* t) {
      ExportBuffers out;  // num_pending 0: the GPU table counts no unadmitted keys
      TF_RETURN_IF_ERROR(allocate(t->size(), &out));
      return ToTf(t->Export(out.keys, out.values, out.freqs, out.versions, out.slots));
    });
  }
};

template <typename K>
struct SparseApplyFunctor<GPUDevice, K> {
  Status operator()(OpKernelContext* ctx, GpuTableResource* table, const K* keys, int64_t n,
                    const float* grads, const OptimizerParams& p) const {
    if (p.per_occurrence || p.rsqrt || p.key_rank != nullptr) {
      return errors::Unimplemented(
          "the exact forms (GraphoptEvApplySgd sum_duplicates=false, GraphoptEvApplyAdagrad "
          "rsqrt=true or batch_rsqrt=true) are CPU-only for now and this EmbeddingVariable is on a GPU; create it "
          "under tf.device('/CPU:0')");
    }
    gpu::OptimizerParams g;
    g.kind = static_cast<gpu::Optimizer>(static_cast<int>(p.kind));
    g.lr = p.lr;
    g.epsilon = p.epsilon;
    g.epsilon_inside_sqrt = p.epsilon_inside_sqrt;
    g.beta1 = p.beta1, g.beta2 = p.beta2;
    g.beta1_power = p.beta1_power, g.beta2_power = p.beta2_power;
    g.l1 = p.l1, g.l2 = p.l2, g.lr_power = p.lr_power;
    g.l2_shrinkage = 0.f;
    return table->With(ctx, [&](gpu::GpuEmbeddingTable* t) {
      Tensor temp;
      const int64_t* k;
      TF_RETURN_IF_ERROR(DeviceKeys(ctx, t, keys, n, &temp, &k));
      return ToTf(t->Apply(g, k, kInt64, n, grads));
    });
  }
};

// No eviction on the GPU table yet: refused with what to do instead (a missing GPU kernel
// would leave TensorFlow to fail with a placement error naming no remedy).
template <>
struct EvictFunctor<GPUDevice> {
  Status operator()(OpKernelContext*, GpuTableResource*, const EvictionRule&,
                    std::vector<int64_t>*) const {
    return errors::Unimplemented(
        "GraphoptEvEvict: eviction is CPU-only for now and this EmbeddingVariable is on a GPU; "
        "create it under tf.device('/CPU:0') to evict rows");
  }
};

#define REGISTER_GPU(NAME, OP) \
  REGISTER_KERNEL_BUILDER(Name(NAME).Device(DEVICE_GPU), OP<GPUDevice>)
#define REGISTER_GPU_KEYED(NAME, HOST, ...)                                               \
  REGISTER_KERNEL_BUILDER(                                                                \
      Name(NAME).Device(DEVICE_GPU).TypeConstraint<int32_t>("Tkeys") HOST,                \
      __VA_ARGS__(int32_t));                                                              \
  REGISTER_KERNEL_BUILDER(                                                                \
      Name(NAME).Device(DEVICE_GPU).TypeConstraint<int64_t>("Tkeys") HOST,                \
      __VA_ARGS__(int64_t))
#define FIND(K) EvFindOp<GPUDevice, K>
#define FIND_OR_INSERT(K) EvFindOrInsertOp<GPUDevice, K>
#define INSERT(K) EvInsertOp<GPUDevice, K>
#define REMOVE(K) EvRemoveOp<GPUDevice, K>
#define APPLY_SGD(K) EvApplyKindOp<GPUDevice, K, OptimizerKind::kSgd>
#define APPLY_ADAGRAD(K) EvApplyKindOp<GPUDevice, K, OptimizerKind::kAdagrad>
#define APPLY_ADAM(K) EvApplyKindOp<GPUDevice, K, OptimizerKind::kAdam>
#define APPLY_FTRL(K) EvApplyKindOp<GPUDevice, K, OptimizerKind::kFtrl>
#define NONE

// Scalars the kernels read or write on the host stay in host memory, as do the admission
// counters (pending_*); int64 keys, rows and gradients are device tensors (int32 keys: host,
// see DeviceKeys). Evict is registered only to refuse with a clear message.
REGISTER_GPU("GraphoptEvHandleOp", EvHandleOp);
REGISTER_GPU_KEYED("GraphoptEvFind", NONE, FIND);
REGISTER_GPU_KEYED("GraphoptEvFindOrInsert", .HostMemory("step"), FIND_OR_INSERT);
REGISTER_GPU_KEYED("GraphoptEvInsert", NONE, INSERT);
REGISTER_GPU_KEYED("GraphoptEvRemove", NONE, REMOVE);
REGISTER_GPU_KEYED("GraphoptEvApplySgd", .HostMemory("lr"), APPLY_SGD);
REGISTER_GPU_KEYED("GraphoptEvApplyAdagrad", .HostMemory("lr").HostMemory("epsilon"),
                   APPLY_ADAGRAD);
REGISTER_GPU_KEYED("GraphoptEvApplyAdam",
                   .HostMemory("lr").HostMemory("beta1").HostMemory("beta2")
                       .HostMemory("epsilon").HostMemory("beta1_power")
                       .HostMemory("beta2_power"),
                   APPLY_ADAM);
REGISTER_GPU_KEYED("GraphoptEvApplyFtrl",
                   .HostMemory("lr").HostMemory("l1").HostMemory("l2").HostMemory("lr_power"),
                   APPLY_FTRL);
REGISTER_GPU("GraphoptEvExport", EvExportOp);
REGISTER_GPU("GraphoptEvImport", EvImportOp);
REGISTER_KERNEL_BUILDER(Name("GraphoptEvExportWithSlots")
                            .Device(DEVICE_GPU)
                            .HostMemory("pending_keys")
                            .HostMemory("pending_counts"),
                        EvExportOp<GPUDevice>);
REGISTER_KERNEL_BUILDER(Name("GraphoptEvImportWithSlots")
                            .Device(DEVICE_GPU)
                            .HostMemory("pending_keys")
                            .HostMemory("pending_counts"),
                        EvImportOp<GPUDevice>);
REGISTER_KERNEL_BUILDER(Name("GraphoptEvSize").Device(DEVICE_GPU).HostMemory("size"),
                        EvSizeOp<GPUDevice>);
REGISTER_KERNEL_BUILDER(
    Name("GraphoptEvMemory").Device(DEVICE_GPU).HostMemory("bytes_used").HostMemory("capacity"),
    EvMemoryOp<GPUDevice>);
REGISTER_KERNEL_BUILDER(Name("GraphoptEvStats")
                            .Device(DEVICE_GPU)
                            .HostMemory("size")
                            .HostMemory("admitted")
                            .HostMemory("evicted")
                            .HostMemory("pending")
                            .HostMemory("bytes_used"),
                        EvStatsOp<GPUDevice>);
REGISTER_KERNEL_BUILDER(Name("GraphoptEvEvict")
                            .Device(DEVICE_GPU)
                            .HostMemory("step")
                            .HostMemory("ttl")
                            .HostMemory("min_freq")
                            .HostMemory("max_rows")
                            .HostMemory("evicted"),
                        EvEvictOp<GPUDevice>);

}  // namespace graphopt
