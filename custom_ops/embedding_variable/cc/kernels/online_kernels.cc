// CPU specialisations and registrations of the online-update kernels.
#include "embedding_variable/cc/kernels/online_kernels.h"

#include <new>

namespace graphopt {

template <>
struct ExportChangedFunctor<CPUDevice> {
  Status operator()(OpKernelContext*, const EmbeddingTable& table, int64_t since,
                    const std::function<Status(int64_t, int64_t, ChangedRows*)>& allocate) const {
    try {
      return table.ExportChanged(since, allocate);
    } catch (const std::bad_alloc&) {
      return errors::ResourceExhausted("out of memory exporting an EmbeddingVariable's changes");
    }
  }
};

template <>
struct ApplyDeltaFunctor<CPUDevice> {
  Status operator()(OpKernelContext* ctx, EmbeddingTable* table, const int64_t* keys, int64_t n,
                    const float* values, const int64_t* removed, int64_t m) const {
    const auto* threads = ctx->device()->tensorflow_cpu_worker_threads();
    try {
      return table->ApplyDelta(keys, n, values, removed, m,
                               IntraOpPool{threads->workers, threads->num_threads});
    } catch (const std::bad_alloc&) {
      return errors::ResourceExhausted("out of memory applying a delta to an EmbeddingVariable");
    }
  }
};

REGISTER_KERNEL_BUILDER(Name("GraphoptEvExportChanged").Device(tensorflow::DEVICE_CPU),
                        EvExportChangedOp<CPUDevice>);
REGISTER_KERNEL_BUILDER(Name("GraphoptEvApplyDelta").Device(tensorflow::DEVICE_CPU),
                        EvApplyDeltaOp<CPUDevice>);

}  // namespace graphopt
