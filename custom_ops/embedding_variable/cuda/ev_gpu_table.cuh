// GpuEmbeddingTable: the EmbeddingVariable hash table in device memory (docs/cuda.md).
//
// Plain CUDA C++ (no TensorFlow), so it builds and is checked with nvcc alone. All pointers
// passed to the operations are device pointers; operations run on the table's stream, and
// the ones that can grow the table (or report a count) synchronize it once.
//
// Layout: an index of `num_buckets` buckets of kBucketSize int64 keys (128 bytes each),
// open addressing with linear probing over buckets, each bucket probed by a tile of
// kBucketSize threads in one load; slot i of the index owns entry i, `stride` floats
// [value(dim) | slot_0(dim) | ...] contiguous, plus a frequency and a last step. Keys equal
// to the two marker values (kEmptyKey, kTombstoneKey) live in two side entries after the
// buckets. New keys claim a slot by CAS on the key, so concurrent find-or-insert of one
// key inserts it once; removal leaves a tombstone; the index is rebuilt (grown) before a
// batch could push live keys plus tombstones over the maximum load.
#ifndef GRAPHOPT_EMBEDDING_VARIABLE_CUDA_EV_GPU_TABLE_CUH_
#define GRAPHOPT_EMBEDDING_VARIABLE_CUDA_EV_GPU_TABLE_CUH_

#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "embedding_variable/cuda/ev_gpu_common.h"

namespace graphopt {
namespace gpu {

struct Status {
  enum Code { kOk = 0, kInvalidArgument = 3, kInternal = 13, kResourceExhausted = 8 };
  Code code = kOk;
  std::string message;
  bool ok() const { return code == kOk; }
  static Status Ok() { return Status(); }
  static Status Error(Code c, std::string m) { return Status{c, std::move(m)}; }
};

// Where a table's device memory comes from: cudaMalloc by default (CudaMallocMemory);
// TensorFlow's kernels pass the device's own allocator, which holds the GPU's memory.
class DeviceMemory {
 public:
  virtual ~DeviceMemory() = default;
  virtual void* Allocate(size_t bytes) = 0;  // nullptr when out of memory
  virtual void Free(void* p) = 0;
  // Bytes that could still be allocated (a larger index is refused up front), -1: unknown.
  virtual int64_t Available() = 0;
};
std::shared_ptr<DeviceMemory> CudaMallocMemory();

// Key dtypes by their TensorFlow DataType numbers; int32 keys are widened to int64.
enum class KeyDtype : int { kInt32 = 3, kInt64 = 9 };

struct TableConfig {
  int dim = 0;
  Optimizer optimizer = Optimizer::kNone;  // decides the slots per entry
  float slot_init[2] = {0.f, 0.f};        // initial slot values of a new key
  RowInitializer init;                    // initial value row of a new key
  std::vector<float> default_row;         // find of a missing key: empty = zeros
  int64_t initial_capacity = 1 << 16;     // index slots (rounded up to whole buckets)
  float max_load = 0.9f;                  // live keys + tombstones per slot before growth
  std::shared_ptr<DeviceMemory> memory;   // null: cudaMalloc
};

class GpuEmbeddingTable {
 public:
  // Allocates the table; a capacity whose memory exceeds the device's free memory is
  // refused with kResourceExhausted before anything is allocated.
  static Status Create(const TableConfig& config, cudaStream_t stream,
                       std::unique_ptr<GpuEmbeddingTable>* table);
  ~GpuEmbeddingTable();
  GpuEmbeddingTable(const GpuEmbeddingTable&) = delete;
  GpuEmbeddingTable& operator=(const GpuEmbeddingTable&) = delete;

  int dim() const { return dim_; }
  cudaStream_t stream() const { return stream_; }
  int stride() const { return stride_; }
  int num_slots() const { return stride_ / dim_ - 1; }
  int64_t size() const { return size_; }
  // Index slots (keys the table holds at load 1); grows on demand.
  int64_t capacity() const { return index_.num_buckets * kBucketSize; }
  int64_t BytesUsed() const;

  // out[i, :dim] = the value row of keys[i], or the default row; nothing is inserted.
  Status Find(const void* keys, KeyDtype dtype, int64_t n, float* out);
  // As Find, inserting missing keys with their initializer row (slots: slot_init); each
  // occurrence counts in the key's frequency and step becomes its last step.
  Status FindOrInsert(const void* keys, KeyDtype dtype, int64_t n, int64_t step, float* out);
  // Assigns value rows [n, dim] (slots of existing keys kept, of new keys slot_init); for a
  // key repeated in the batch the last row wins.
  Status Insert(const void* keys, KeyDtype dtype, int64_t n, const float* values);
  Status Remove(const void* keys, KeyDtype dtype, int64_t n);
  // Sums the gradient rows [n, dim] of each key (in batch order) and applies the
  // optimizer to the key's entry; keys without an entry are skipped (as the CPU table).
  // params.kind must be the table's optimizer (or sgd on a table without one).
  Status Apply(const OptimizerParams& params, const void* keys, KeyDtype dtype, int64_t n,
               const float* grads);

  // Snapshot into device buffers sized by size(): keys [n], values [n, dim], freqs [n],
  // versions [n], and slots: none, or one [n, dim] buffer per slot; in index order.
  Status Export(int64_t* keys, float* values, int64_t* freqs, int64_t* versions,
                const std::vector<float*>& slots);
  // Replaces the whole content (duplicate keys: the last wins); slots: none (every entry
  // gets slot_init) or one [n, dim] array per slot.
  Status Import(const int64_t* keys, int64_t n, const float* values, const int64_t* freqs,
                const int64_t* versions, const std::vector<const float*>& slots);

 private:
  GpuEmbeddingTable(const TableConfig& config, cudaStream_t stream);

  struct Index {
    int64_t num_buckets = 0;
    unsigned long long* keys = nullptr;  // num_buckets * kBucketSize, then 2 side flags
    float* entries = nullptr;            // (slots + 2) * stride
    unsigned long long* freqs = nullptr;  // slots + 2
    int64_t* versions = nullptr;          // slots + 2
  };
  Status Allocate(int64_t num_buckets, Index* index);
  void Free(Index* index);
  static int64_t IndexBytes(int64_t num_buckets, int stride);

  Status Validate(KeyDtype dtype, int64_t n, const void* keys) const;
  // Makes room for n more keys (rebuilding into a larger index if needed).
  Status Reserve(int64_t n);
  Status Rehash(int64_t num_buckets);
  // Carves the per-key scratch of an n-key operation out of the workspace.
  Status Prepare(int64_t n, bool group);
  // Per key its entry (entry_of_), inserting missing keys: value row from the
  // initializer when fill_value, slots slot_init, freq 0, last step `step`.
  Status Locate(const void* keys, KeyDtype dtype, int64_t n, bool fill_value, int64_t step);
  // Per key its entry, or the out-of-range entry slots + 2 when it has none.
  Status LocateExisting(const void* keys, KeyDtype dtype, int64_t n);
  const int64_t* Widen(const void* keys, KeyDtype dtype, int64_t n);
  // Sorts (entry, position) pairs by entry, stably: duplicates of a key become one run,
  // in batch order.
  Status GroupByEntry(int64_t n);
  // Grows the index after a batch left it above max_load.
  Status GrowIfLoaded();
  Status Check(cudaError_t e, const char* what);

  const int dim_;
  const int stride_;
  const TableConfig config_;
  cudaStream_t stream_;
  std::shared_ptr<DeviceMemory> memory_;
  Index index_;
  float* default_row_ = nullptr;
  long long* counters_ = nullptr;  // device [3]: inserted/removed, side-entry removals, failed
  int64_t size_ = 0;
  int64_t tombstones_ = 0;
  // Per-operation scratch, kept between calls: one allocation grown as needed.
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  // Carved from the workspace by Prepare.
  const int64_t* wide_keys_ = nullptr;  // the keys as int64 (the input itself for int64)
  int64_t* widened_ = nullptr;
  int64_t* entry_of_ = nullptr;
  unsigned char* inserted_ = nullptr;
  int64_t* positions_ = nullptr;
  int64_t* sorted_entries_ = nullptr;
  int64_t* sorted_positions_ = nullptr;
  void* sort_temp_ = nullptr;
  size_t sort_temp_bytes_ = 0;
  int sort_bits_ = 0;
};

}  // namespace gpu
}  // namespace graphopt

#endif  // GRAPHOPT_EMBEDDING_VARIABLE_CUDA_EV_GPU_TABLE_CUH_
