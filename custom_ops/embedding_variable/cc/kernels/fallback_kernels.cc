// CPU functor and registrations of the fallback ops (kernels: fallback_kernels.h).
#include "embedding_variable/cc/kernels/fallback_kernels.h"

#include <new>
#include <vector>

namespace graphopt {

using tensorflow::DEVICE_CPU;

template <typename F>
struct FindWithFallbackFunctor<CPUDevice, F> {
  Status operator()(OpKernelContext* ctx, EmbeddingTable* table, const int64_t* keys,
                    const F* fallback_keys, int64_t n, bool insert, int64_t step,
                    float* out) const {
    const auto* threads = ctx->device()->tensorflow_cpu_worker_threads();
    const IntraOpPool pool{threads->workers, threads->num_threads};
    const int64_t dim = table->dim();
    try {
      std::vector<int64_t> missing;
      table->FindExisting(keys, n, out, &missing);
      const int64_t m = static_cast<int64_t>(missing.size());
      if (m > 0) {
        // The missing ids' fallback rows, read in one find and copied to their places.
        std::vector<int64_t> fallback(m), missing_keys(m);
        for (int64_t j = 0; j < m; ++j) {
          fallback[j] = static_cast<int64_t>(fallback_keys[missing[j]]);
          missing_keys[j] = keys[missing[j]];
        }
        std::vector<float> rows(m * dim);
        table->Find(fallback.data(), m, rows.data(), pool);
        for (int64_t j = 0; j < m; ++j) {
          std::copy(rows.begin() + j * dim, rows.begin() + (j + 1) * dim, out + missing[j] * dim);
        }
        if (insert) TF_RETURN_IF_ERROR(table->InsertMissing(missing_keys.data(), m, rows.data(), pool));
      }
      // Counts every occurrence (frequency, last step) like find-or-insert; the rows it
      // returns are the ones just read (a key's row changes only by an apply, which the
      // caller orders after this op).
      if (insert) {
        std::vector<float> counted(n * dim);
        TF_RETURN_IF_ERROR(table->FindOrInsert(keys, n, step, counted.data(), pool));
      }
    } catch (const std::bad_alloc&) {
      return errors::ResourceExhausted("out of memory in an EmbeddingVariable fallback find");
    }
    return Status();
  }
};

#define REGISTER_FALLBACK(T, F)                                                           \
  REGISTER_KERNEL_BUILDER(Name("GraphoptEvFindWithFallback")                              \
                              .Device(DEVICE_CPU)                                         \
                              .TypeConstraint<T>("Tids")                                  \
                              .TypeConstraint<F>("Tfallback"),                            \
                          EvFindWithFallbackOp<CPUDevice, T, F, false>);                  \
  REGISTER_KERNEL_BUILDER(Name("GraphoptEvFindOrInsertWithFallback")                      \
                              .Device(DEVICE_CPU)                                         \
                              .TypeConstraint<T>("Tids")                                  \
                              .TypeConstraint<F>("Tfallback"),                            \
                          EvFindWithFallbackOp<CPUDevice, T, F, true>)
#define REGISTER_IDS(T)     \
  REGISTER_FALLBACK(T, int32_t); \
  REGISTER_FALLBACK(T, int64_t); \
  REGISTER_KERNEL_BUILDER(      \
      Name("GraphoptEvCollisionlessKey").Device(DEVICE_CPU).TypeConstraint<T>("Tids"), \
      EvCollisionlessKeyOp<CPUDevice, T>)

REGISTER_IDS(tensorflow::tstring);
REGISTER_IDS(int32_t);
REGISTER_IDS(int64_t);

}  // namespace graphopt
