// Device seam of the EmbeddingVariable kernels: every op that touches rows calls
// one of these functors, declared here for any Device and specialised for the CPU
// in embedding_variable_kernels.cc. A GPU build adds a .cu.cc with the
// GPUDevice specialisations (and DeviceTable<GPUDevice> if its table is another
// resource type) plus REGISTER_KERNEL_BUILDER(... DEVICE_GPU ...) lines for the
// kernel templates of embedding_variable_kernels.h, without touching CPU code.
#ifndef GRAPHOPT_EMBEDDING_VARIABLE_CC_KERNELS_EMBEDDING_TABLE_FUNCTORS_H_
#define GRAPHOPT_EMBEDDING_VARIABLE_CC_KERNELS_EMBEDDING_TABLE_FUNCTORS_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "embedding_variable/cc/kernels/embedding_table.h"
#include "tensorflow/core/framework/op_kernel.h"

namespace graphopt {

using CPUDevice = Eigen::ThreadPoolDevice;

// The resource a device's kernels work on; its interface is EmbeddingTable's
// (constructor, dim(), num_slots(), options(), Size(), Stats(), ...).
template <typename Device>
struct DeviceTable {
  using type = EmbeddingTable;
};

// keys[n] -> out[n, dim]; unseen keys get the default row.
template <typename Device, typename K>
struct FindFunctor {
  void operator()(tensorflow::OpKernelContext* ctx, const typename DeviceTable<Device>::type& table,
                  const K* keys, int64_t n, float* out) const;
};

// Like find, inserting (admitting) missing keys and counting every occurrence.
template <typename Device, typename K>
struct FindOrInsertFunctor {
  tensorflow::Status operator()(tensorflow::OpKernelContext* ctx,
                                typename DeviceTable<Device>::type* table, const K* keys,
                                int64_t n, int64_t step, float* out) const;
};

// Assigns values[n, dim] to keys, inserting missing keys.
template <typename Device, typename K>
struct InsertFunctor {
  tensorflow::Status operator()(tensorflow::OpKernelContext* ctx,
                                typename DeviceTable<Device>::type* table, const K* keys,
                                int64_t n, const float* values) const;
};

template <typename Device, typename K>
struct RemoveFunctor {
  void operator()(tensorflow::OpKernelContext* ctx, typename DeviceTable<Device>::type* table,
                  const K* keys, int64_t n) const;
};

// Replaces the content; slots empty (fresh slots) or one [n, dim] array per slot;
// pending: admission counters of keys without a row.
template <typename Device>
struct ImportFunctor {
  tensorflow::Status operator()(tensorflow::OpKernelContext* ctx,
                                typename DeviceTable<Device>::type* table, const int64_t* keys,
                                int64_t n, const float* values, const int64_t* freqs,
                                const int64_t* versions,
                                const std::vector<const float*>& slots,
                                const PendingCounts& pending) const;
};

// A consistent snapshot; allocate(n, buffers) is called once with the key count.
template <typename Device>
struct ExportFunctor {
  tensorflow::Status operator()(
      tensorflow::OpKernelContext* ctx, const typename DeviceTable<Device>::type& table,
      const std::function<tensorflow::Status(int64_t, ExportBuffers*)>& allocate) const;
};

// One sparse optimizer step on the rows of keys (duplicates summed first).
template <typename Device, typename K>
struct SparseApplyFunctor {
  tensorflow::Status operator()(tensorflow::OpKernelContext* ctx,
                                typename DeviceTable<Device>::type* table, const K* keys,
                                int64_t n, const float* grads,
                                const OptimizerParams& params) const;
};

// Removes the rows an EvictionRule selects, appending their keys to evicted.
template <typename Device>
struct EvictFunctor {
  tensorflow::Status operator()(tensorflow::OpKernelContext* ctx,
                                typename DeviceTable<Device>::type* table,
                                const EvictionRule& rule, std::vector<int64_t>* evicted) const;
};

// Online updates: rows changed after `since` plus every key held (one snapshot).
template <typename Device>
struct ExportChangedFunctor {
  tensorflow::Status operator()(
      tensorflow::OpKernelContext* ctx, const typename DeviceTable<Device>::type& table,
      int64_t since,
      const std::function<tensorflow::Status(int64_t, int64_t, ChangedRows*)>& allocate) const;
};

// Online updates: removes `removed`, then upserts keys/values, atomically.
template <typename Device>
struct ApplyDeltaFunctor {
  tensorflow::Status operator()(tensorflow::OpKernelContext* ctx,
                                typename DeviceTable<Device>::type* table, const int64_t* keys,
                                int64_t n, const float* values, const int64_t* removed,
                                int64_t m) const;
};

}  // namespace graphopt

#endif  // GRAPHOPT_EMBEDDING_VARIABLE_CC_KERNELS_EMBEDDING_TABLE_FUNCTORS_H_
