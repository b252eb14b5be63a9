// GpuEmbeddingTable kernels and host side (design: ev_gpu_table.cuh, docs/cuda.md).
#include "embedding_variable/cuda/ev_gpu_table.cuh"

#include <cooperative_groups.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cub/device/device_radix_sort.cuh>
#include <cub/block/block_scan.cuh>

namespace graphopt {
namespace gpu {

namespace cg = cooperative_groups;

namespace {

using ull = unsigned long long;
using Tile = cg::thread_block_tile<kBucketSize>;

constexpr int kBlock = 256;
constexpr int kTilesPerBlock = kBlock / kBucketSize;
constexpr int kExportPerThread = 4;
constexpr int kExportChunk = kBlock * kExportPerThread;
constexpr ull kEmpty = static_cast<ull>(kEmptyKey);
constexpr ull kTombstone = static_cast<ull>(kTombstoneKey);

unsigned GridFor(int64_t items, int per_block) {
  const int64_t blocks = (items + per_block - 1) / per_block;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(blocks, 1 << 20)));
}

// Keys are read past L1 (__ldcg): L1 is not coherent between SMs, and a find-or-insert
// tile must see slots other tiles claimed while it probes.
__device__ __forceinline__ int64_t LoadKey(const ull* p) {
  return static_cast<int64_t>(__ldcg(p));
}

// Entry of key, or -1; every lane of the tile returns the same.
__device__ int64_t FindEntry(const Tile& tile, const ull* keys, int64_t num_buckets,
                             int64_t key) {
  const int64_t slots = num_buckets * kBucketSize;
  if (key == kEmptyKey || key == kTombstoneKey) {
    const int64_t side = slots + (key == kEmptyKey ? 0 : 1);
    return __ldcg(keys + side) != 0 ? side : -1;
  }
  const uint64_t home = HomeBucket(HashKey(key), num_buckets);
  for (int64_t a = 0; a < num_buckets; ++a) {
    const int64_t base = static_cast<int64_t>(ProbeBucket(home, a, num_buckets)) * kBucketSize;
    const int64_t k = LoadKey(keys + base + tile.thread_rank());
    const unsigned match = tile.ballot(k == key);
    if (match) return base + __ffs(static_cast<int>(match)) - 1;
    if (tile.ballot(k == kEmptyKey)) return -1;
  }
  return -1;
}

// Entry of key, claiming the first empty slot along its probe sequence when it is
// missing (*claimed: this tile inserted it). A slot only goes from empty to a key while
// a kernel runs, so tiles inserting one key walk the same sequence and the CAS lets
// exactly one of them claim; a tile whose CAS loses re-reads the bucket. -1: index full.
__device__ int64_t FindOrClaimEntry(const Tile& tile, ull* keys, int64_t num_buckets,
                                    int64_t key, bool* claimed) {
  *claimed = false;
  const int64_t slots = num_buckets * kBucketSize;
  if (key == kEmptyKey || key == kTombstoneKey) {
    const int64_t side = slots + (key == kEmptyKey ? 0 : 1);
    int won = 0;
    if (tile.thread_rank() == 0) won = atomicCAS(keys + side, 0ULL, 1ULL) == 0ULL;
    *claimed = tile.shfl(won, 0) != 0;
    return side;
  }
  const uint64_t home = HomeBucket(HashKey(key), num_buckets);
  for (int64_t a = 0; a < num_buckets;) {
    const int64_t base = static_cast<int64_t>(ProbeBucket(home, a, num_buckets)) * kBucketSize;
    const int64_t k = LoadKey(keys + base + tile.thread_rank());
    const unsigned match = tile.ballot(k == key);
    if (match) return base + __ffs(static_cast<int>(match)) - 1;
    const unsigned empty = tile.ballot(k == kEmptyKey);
    if (!empty) {
      ++a;
      continue;
    }
    const int lane = __ffs(static_cast<int>(empty)) - 1;
    ull old = 0;
    if (tile.thread_rank() == lane) {
      old = atomicCAS(keys + base + lane, kEmpty, static_cast<ull>(key));
    }
    old = tile.shfl(old, lane);
    if (old == kEmpty) {
      *claimed = true;
      return base + lane;
    }
    if (old == static_cast<ull>(key)) return base + lane;
  }
  return -1;
}

__device__ __forceinline__ void CopyRow(const Tile& tile, const float* src, float* dst,
                                        int dim) {
  const bool vector = (dim & 3) == 0 && ((reinterpret_cast<uintptr_t>(src) |
                                          reinterpret_cast<uintptr_t>(dst)) & 15) == 0;
  if (vector) {
    const float4* s = reinterpret_cast<const float4*>(src);
    float4* d = reinterpret_cast<float4*>(dst);
    for (int c = tile.thread_rank(); c < dim / 4; c += kBucketSize) d[c] = s[c];
  } else {
    for (int c = tile.thread_rank(); c < dim; c += kBucketSize) dst[c] = src[c];
  }
}

// Sums per-thread counts over the block and adds them to *global once per block.
__device__ void AddBlockCount(long long count, long long* global) {
  __shared__ long long total;
  if (threadIdx.x == 0) total = 0;
  __syncthreads();
  if (count != 0) atomicAdd(reinterpret_cast<ull*>(&total), static_cast<ull>(count));
  __syncthreads();
  if (threadIdx.x == 0 && total != 0) {
    atomicAdd(reinterpret_cast<ull*>(global), static_cast<ull>(total));
  }
}

template <typename K>
__global__ void WidenKernel(const K* in, int64_t n, int64_t* out) {
  for (int64_t i = blockIdx.x * int64_t{kBlock} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * kBlock) {
    out[i] = static_cast<int64_t>(in[i]);
  }
}

__global__ void IotaKernel(int64_t n, int64_t* out) {
  for (int64_t i = blockIdx.x * int64_t{kBlock} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * kBlock) {
    out[i] = i;
  }
}

__global__ void ClearKernel(ull* keys, int64_t slots) {
  for (int64_t i = blockIdx.x * int64_t{kBlock} + threadIdx.x; i < slots + 2;
       i += int64_t{gridDim.x} * kBlock) {
    keys[i] = i < slots ? kEmpty : 0ULL;  // the two side flags: absent
  }
}

template <typename K>
__global__ void FindKernel(const K* keys, int64_t n, const ull* index, int64_t num_buckets,
                           const float* entries, int stride, int dim,
                           const float* default_row, float* out) {
  const Tile tile = cg::tiled_partition<kBucketSize>(cg::this_thread_block());
  const int64_t tiles = int64_t{gridDim.x} * kTilesPerBlock;
  for (int64_t i = blockIdx.x * int64_t{kTilesPerBlock} + tile.meta_group_rank(); i < n;
       i += tiles) {
    const int64_t e = FindEntry(tile, index, num_buckets, static_cast<int64_t>(keys[i]));
    CopyRow(tile, e >= 0 ? entries + e * stride : default_row, out + i * dim, dim);
  }
}

// counters[0] += keys inserted, counters[2] += keys that found no slot.
__global__ void ClaimKernel(const int64_t* keys, int64_t n, ull* index, int64_t num_buckets,
                            int64_t* entry_of, unsigned char* inserted, long long* counters) {
  const Tile tile = cg::tiled_partition<kBucketSize>(cg::this_thread_block());
  const int64_t tiles = int64_t{gridDim.x} * kTilesPerBlock;
  long long claims = 0, failures = 0;
  for (int64_t i = blockIdx.x * int64_t{kTilesPerBlock} + tile.meta_group_rank(); i < n;
       i += tiles) {
    bool claimed;
    const int64_t e = FindOrClaimEntry(tile, index, num_buckets, keys[i], &claimed);
    if (tile.thread_rank() == 0) {
      entry_of[i] = e;
      inserted[i] = claimed;
      claims += claimed;
      failures += e < 0;
    }
  }
  AddBlockCount(claims, counters);
  AddBlockCount(failures, counters + 2);
}

struct InitRows {
  RowInitializer init;
  float slot_init[2];
  int stride, dim, num_slots;
  bool fill_value;
  int64_t step;
};

// New entries: initializer row (when fill_value), slot_init, freq 0, last step.
__global__ void InitKernel(const int64_t* keys, int64_t n, const int64_t* entry_of,
                           const unsigned char* inserted, float* entries, ull* freqs,
                           int64_t* versions, InitRows r) {
  for (int64_t i = blockIdx.x * int64_t{kBlock} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * kBlock) {
    if (!inserted[i]) continue;
    const int64_t e = entry_of[i];
    float* row = entries + e * r.stride;
    if (r.fill_value) r.init.Fill(keys[i], r.dim, row);
    for (int s = 0; s < r.num_slots; ++s) {
      for (int c = 0; c < r.dim; ++c) row[(s + 1) * r.dim + c] = r.slot_init[s];
    }
    freqs[e] = 0;
    versions[e] = r.step;
  }
}

// Find-or-insert's copy-out, after InitKernel: counts every occurrence.
__global__ void GatherKernel(int64_t n, const int64_t* entry_of, const float* entries,
                             int stride, int dim, ull* freqs, int64_t* versions, int64_t step,
                             float* out) {
  const Tile tile = cg::tiled_partition<kBucketSize>(cg::this_thread_block());
  const int64_t tiles = int64_t{gridDim.x} * kTilesPerBlock;
  for (int64_t i = blockIdx.x * int64_t{kTilesPerBlock} + tile.meta_group_rank(); i < n;
       i += tiles) {
    const int64_t e = entry_of[i];
    CopyRow(tile, entries + e * stride, out + i * dim, dim);
    if (tile.thread_rank() == 0) {
      atomicAdd(freqs + e, 1ULL);
      atomicMax(reinterpret_cast<long long*>(versions + e), static_cast<long long>(step));
    }
  }
}

// counters[0] += keys removed, counters[1] += of those, side entries.
__global__ void RemoveKernel(const int64_t* keys, int64_t n, ull* index, int64_t num_buckets,
                             long long* counters) {
  const Tile tile = cg::tiled_partition<kBucketSize>(cg::this_thread_block());
  const int64_t tiles = int64_t{gridDim.x} * kTilesPerBlock;
  const int64_t slots = num_buckets * kBucketSize;
  long long removed = 0, side = 0;
  for (int64_t i = blockIdx.x * int64_t{kTilesPerBlock} + tile.meta_group_rank(); i < n;
       i += tiles) {
    const int64_t e = FindEntry(tile, index, num_buckets, keys[i]);
    if (e < 0 || tile.thread_rank() != 0) continue;
    // CAS: a key repeated in the batch is removed (and counted) once.
    const bool won = e < slots
                         ? atomicCAS(index + e, static_cast<ull>(keys[i]), kTombstone) ==
                               static_cast<ull>(keys[i])
                         : atomicCAS(index + e, 1ULL, 0ULL) == 1ULL;
    removed += won;
    side += won && e >= slots;
  }
  AddBlockCount(removed, counters);
  AddBlockCount(side, counters + 1);
}

__device__ __forceinline__ bool RunHead(const int64_t* sorted, int64_t j) {
  return j == 0 || sorted[j] != sorted[j - 1];
}
__device__ __forceinline__ bool RunTail(const int64_t* sorted, int64_t j, int64_t n) {
  return j == n - 1 || sorted[j] != sorted[j + 1];
}

// Up to two per-slot [n, dim] arrays, passed by value.
struct SlotArrays {
  float* p[2] = {nullptr, nullptr};
  int count = 0;
};

// Insert / Import: the last occurrence of each key assigns its row (and metadata).
__global__ void AssignKernel(int64_t n, const int64_t* sorted_entries,
                             const int64_t* sorted_positions, const float* values,
                             SlotArrays slot_values, const int64_t* freqs_in,
                             const int64_t* versions_in, float* entries, int stride, int dim,
                             ull* freqs, int64_t* versions) {
  const Tile tile = cg::tiled_partition<kBucketSize>(cg::this_thread_block());
  const int64_t tiles = int64_t{gridDim.x} * kTilesPerBlock;
  for (int64_t j = blockIdx.x * int64_t{kTilesPerBlock} + tile.meta_group_rank(); j < n;
       j += tiles) {
    if (!RunTail(sorted_entries, j, n)) continue;
    const int64_t e = sorted_entries[j], p = sorted_positions[j];
    float* row = entries + e * stride;
    CopyRow(tile, values + p * dim, row, dim);
    for (int s = 0; s < slot_values.count; ++s) {
      CopyRow(tile, slot_values.p[s] + p * dim, row + (s + 1) * dim, dim);
    }
    if (freqs_in != nullptr && tile.thread_rank() == 0) {
      const int64_t f = freqs_in[p];
      freqs[e] = static_cast<ull>(f < 0 ? 0 : f);
      versions[e] = versions_in[p];
    }
  }
}

// Apply: per key its entry, or `missing` (sorted after every real entry).
__global__ void LocateKernel(const int64_t* keys, int64_t n, const ull* index,
                             int64_t num_buckets, int64_t missing, int64_t* entry_of) {
  const Tile tile = cg::tiled_partition<kBucketSize>(cg::this_thread_block());
  const int64_t tiles = int64_t{gridDim.x} * kTilesPerBlock;
  for (int64_t i = blockIdx.x * int64_t{kTilesPerBlock} + tile.meta_group_rank(); i < n;
       i += tiles) {
    const int64_t e = FindEntry(tile, index, num_buckets, keys[i]);
    if (tile.thread_rank() == 0) entry_of[i] = e >= 0 ? e : missing;
  }
}

// One tile per key: sums its gradient rows in batch order, then updates the entry.
__global__ void ApplyKernel(int64_t n, const int64_t* sorted_entries,
                            const int64_t* sorted_positions, const float* grads,
                            float* entries, int stride, int dim, int64_t missing,
                            OptimizerParams params) {
  const Tile tile = cg::tiled_partition<kBucketSize>(cg::this_thread_block());
  const int64_t tiles = int64_t{gridDim.x} * kTilesPerBlock;
  const int num_slots = stride / dim - 1;
  for (int64_t j = blockIdx.x * int64_t{kTilesPerBlock} + tile.meta_group_rank(); j < n;
       j += tiles) {
    if (!RunHead(sorted_entries, j) || sorted_entries[j] == missing) continue;
    const int64_t e = sorted_entries[j];
    float* row = entries + e * stride;
    for (int c = tile.thread_rank(); c < dim; c += kBucketSize) {
      float g = grads[sorted_positions[j] * dim + c];
      for (int64_t k = j + 1; k < n && sorted_entries[k] == e; ++k) {
        g += grads[sorted_positions[k] * dim + c];
      }
      float var = row[c];
      float s0 = num_slots > 0 ? row[dim + c] : 0.f;
      float s1 = num_slots > 1 ? row[2 * dim + c] : 0.f;
      ApplyColumn(params, g, &var, &s0, &s1);
      row[c] = var;
      if (num_slots > 0) row[dim + c] = s0;
      if (num_slots > 1) row[2 * dim + c] = s1;
    }
  }
}

// Re-inserts the live entries of an old index into an empty new one (no duplicates, so
// a plain claim), copying entry, frequency and last step.
__global__ void RehashKernel(const ull* old_keys, int64_t old_slots, const float* old_entries,
                             const ull* old_freqs, const int64_t* old_versions, ull* keys,
                             int64_t num_buckets, float* entries, ull* freqs,
                             int64_t* versions, int stride, long long* counters) {
  const Tile tile = cg::tiled_partition<kBucketSize>(cg::this_thread_block());
  const int64_t tiles = int64_t{gridDim.x} * kTilesPerBlock;
  long long failures = 0;
  for (int64_t i = blockIdx.x * int64_t{kTilesPerBlock} + tile.meta_group_rank();
       i < old_slots + 2; i += tiles) {
    int64_t key;
    if (i < old_slots) {
      key = LoadKey(old_keys + i);
      if (key == kEmptyKey || key == kTombstoneKey) continue;
    } else {
      if (old_keys[i] == 0) continue;
      key = i == old_slots ? kEmptyKey : kTombstoneKey;
    }
    bool claimed;
    const int64_t e = FindOrClaimEntry(tile, keys, num_buckets, key, &claimed);
    if (e < 0) {
      failures += tile.thread_rank() == 0;
      continue;
    }
    CopyRow(tile, old_entries + i * stride, entries + e * stride, stride);
    if (tile.thread_rank() == 0) {
      freqs[e] = old_freqs[i];
      versions[e] = old_versions[i];
    }
  }
  AddBlockCount(failures, counters + 2);
}

__device__ __forceinline__ bool LiveAt(const ull* keys, int64_t slots, int64_t i,
                                       int64_t* key) {
  if (i >= slots + 2) return false;
  if (i < slots) {
    *key = static_cast<int64_t>(keys[i]);
    return *key != kEmptyKey && *key != kTombstoneKey;
  }
  *key = i == slots ? kEmptyKey : kTombstoneKey;
  return keys[i] != 0;
}

__global__ void ExportCountKernel(const ull* keys, int64_t slots, long long* chunk_counts) {
  long long live = 0;
  for (int t = 0; t < kExportPerThread; ++t) {
    int64_t key;
    live += LiveAt(keys, slots,
                   blockIdx.x * int64_t{kExportChunk} + threadIdx.x * kExportPerThread + t, &key);
  }
  using Reduce = cub::BlockScan<long long, kBlock>;
  __shared__ typename Reduce::TempStorage temp;
  long long total;
  Reduce(temp).ExclusiveSum(live, live, total);
  if (threadIdx.x == 0) chunk_counts[blockIdx.x] = total;
}

// Writes chunk b's live entries from offset chunk_offsets[b], in index order.
__global__ void ExportWriteKernel(const ull* keys, int64_t slots, const float* entries,
                                  const ull* freqs, const int64_t* versions, int stride,
                                  int dim, const long long* chunk_offsets, int64_t* keys_out,
                                  float* values_out, SlotArrays slots_out, int64_t* freqs_out,
                                  int64_t* versions_out) {
  const int64_t first = blockIdx.x * int64_t{kExportChunk} + threadIdx.x * kExportPerThread;
  long long live = 0;
  for (int t = 0; t < kExportPerThread; ++t) {
    int64_t key;
    live += LiveAt(keys, slots, first + t, &key);
  }
  using Scan = cub::BlockScan<long long, kBlock>;
  __shared__ typename Scan::TempStorage temp;
  long long offset;
  Scan(temp).ExclusiveSum(live, offset);
  offset += chunk_offsets[blockIdx.x];
  for (int t = 0; t < kExportPerThread; ++t) {
    int64_t key;
    const int64_t i = first + t;
    if (!LiveAt(keys, slots, i, &key)) continue;
    keys_out[offset] = key;
    const float* row = entries + i * stride;
    for (int c = 0; c < dim; ++c) values_out[offset * dim + c] = row[c];
    for (int s = 0; s < slots_out.count; ++s) {
      for (int c = 0; c < dim; ++c) slots_out.p[s][offset * dim + c] = row[(s + 1) * dim + c];
    }
    // The CPU table keeps a saturating uint32 frequency; export the same.
    freqs_out[offset] = static_cast<int64_t>(freqs[i] < 0xffffffffULL ? freqs[i] : 0xffffffffULL);
    versions_out[offset] = versions[i];
    ++offset;
  }
}

std::string GiB(int64_t bytes) {
  char buffer[32];
  snprintf(buffer, sizeof(buffer), "%.2f GiB", bytes / 1073741824.0);
  return buffer;
}

class CudaMalloc : public DeviceMemory {
 public:
  void* Allocate(size_t bytes) override {
    void* p = nullptr;
    if (cudaMalloc(&p, bytes) != cudaSuccess) {
      cudaGetLastError();  // an allocation failure is not sticky; clear it
      return nullptr;
    }
    return p;
  }
  void Free(void* p) override { cudaFree(p); }
  int64_t Available() override {
    size_t free_bytes = 0, total_bytes = 0;
    if (cudaMemGetInfo(&free_bytes, &total_bytes) != cudaSuccess) {
      cudaGetLastError();
      return -1;
    }
    return static_cast<int64_t>(free_bytes);
  }
};

}  // namespace

std::shared_ptr<DeviceMemory> CudaMallocMemory() { return std::make_shared<CudaMalloc>(); }

GpuEmbeddingTable::GpuEmbeddingTable(const TableConfig& config, cudaStream_t stream)
    : dim_(config.dim),
      stride_(config.dim * (1 + NumSlots(config.optimizer))),
      config_(config),
      stream_(stream),
      memory_(config.memory ? config.memory : CudaMallocMemory()) {}

GpuEmbeddingTable::~GpuEmbeddingTable() {
  // No sync needed: cudaFree waits for the device, and TensorFlow's allocator is ordered on
  // the compute stream the table's kernels run on.
  Free(&index_);
  memory_->Free(default_row_);
  memory_->Free(counters_);
  memory_->Free(workspace_);
}

int64_t GpuEmbeddingTable::IndexBytes(int64_t num_buckets, int stride) {
  const int64_t entries = num_buckets * kBucketSize + 2;
  return entries * (sizeof(ull) * 2 + sizeof(int64_t) + sizeof(float) * int64_t{stride});
}

Status GpuEmbeddingTable::Allocate(int64_t num_buckets, Index* index) {
  const int64_t entries = num_buckets * kBucketSize + 2;
  const int64_t bytes = IndexBytes(num_buckets, stride_);
  const int64_t available = memory_->Available();
  if (available >= 0 && bytes > available) {
    return Status::Error(
        Status::kResourceExhausted,
        "a GPU EmbeddingVariable index of " + std::to_string(num_buckets * kBucketSize) +
            " slots at " + std::to_string(stride_) + " floats per entry needs " + GiB(bytes) +
            ", the device has " + GiB(available) + " free; lower the capacity or dim");
  }
  Index fresh;
  fresh.num_buckets = num_buckets;
  fresh.keys = static_cast<ull*>(memory_->Allocate(entries * sizeof(ull)));
  fresh.entries = static_cast<float*>(memory_->Allocate(entries * sizeof(float) * stride_));
  fresh.freqs = static_cast<ull*>(memory_->Allocate(entries * sizeof(ull)));
  fresh.versions = static_cast<int64_t*>(memory_->Allocate(entries * sizeof(int64_t)));
  if (fresh.keys && fresh.entries && fresh.freqs && fresh.versions) {
    *index = fresh;
    return Status::Ok();
  }
  Free(&fresh);
  return Status::Error(Status::kResourceExhausted,
                       "out of GPU memory allocating " + GiB(bytes) +
                           " for an EmbeddingVariable index");
}

void GpuEmbeddingTable::Free(Index* index) {
  memory_->Free(index->keys);
  memory_->Free(index->entries);
  memory_->Free(index->freqs);
  memory_->Free(index->versions);
  *index = Index();
}

Status GpuEmbeddingTable::Check(cudaError_t e, const char* what) {
  if (e == cudaSuccess) e = cudaGetLastError();
  if (e == cudaSuccess) return Status::Ok();
  cudaGetLastError();
  return Status::Error(Status::kInternal,
                       std::string(what) + " failed: " + cudaGetErrorString(e));
}

Status GpuEmbeddingTable::Create(const TableConfig& config, cudaStream_t stream,
                                 std::unique_ptr<GpuEmbeddingTable>* table) {
  if (config.dim < 1 || config.dim > kMaxDim) {
    return Status::Error(Status::kInvalidArgument,
                         "dim must be in [1, " + std::to_string(kMaxDim) +
                             "] for a GPU EmbeddingVariable, got " +
                             std::to_string(config.dim));
  }
  if (!config.default_row.empty() &&
      static_cast<int>(config.default_row.size()) != config.dim) {
    return Status::Error(Status::kInvalidArgument,
                         "default_row must hold dim=" + std::to_string(config.dim) +
                             " values, got " + std::to_string(config.default_row.size()));
  }
  if (!(config.max_load > 0.f && config.max_load <= 0.95f)) {
    return Status::Error(Status::kInvalidArgument,
                         "max_load must be in (0, 0.95], got " +
                             std::to_string(config.max_load));
  }
  if (config.initial_capacity < 0) {
    return Status::Error(Status::kInvalidArgument, "initial_capacity must be >= 0");
  }
  std::unique_ptr<GpuEmbeddingTable> t(new GpuEmbeddingTable(config, stream));
  const int64_t buckets =
      std::max<int64_t>(1, (config.initial_capacity + kBucketSize - 1) / kBucketSize);
  Status st = t->Allocate(buckets, &t->index_);
  if (!st.ok()) return st;  // t's destructor frees what it holds
  std::vector<float> row = config.default_row;
  row.resize(config.dim, 0.f);
  t->default_row_ = static_cast<float*>(t->memory_->Allocate(sizeof(float) * config.dim));
  t->counters_ = static_cast<long long*>(t->memory_->Allocate(3 * sizeof(long long)));
  if (!t->default_row_ || !t->counters_) {
    return Status::Error(Status::kResourceExhausted, "out of GPU memory creating a table");
  }
  st = t->Check(cudaMemcpyAsync(t->default_row_, row.data(), sizeof(float) * config.dim,
                                cudaMemcpyHostToDevice, stream),
                "copying the default row");
  if (!st.ok()) return st;
  const int64_t slots = buckets * kBucketSize;
  ClearKernel<<<GridFor(slots + 2, kBlock), kBlock, 0, stream>>>(t->index_.keys, slots);
  st = t->Check(cudaStreamSynchronize(stream), "clearing the index");
  if (!st.ok()) return st;
  *table = std::move(t);
  return Status::Ok();
}

int64_t GpuEmbeddingTable::BytesUsed() const {
  return IndexBytes(index_.num_buckets, stride_) + static_cast<int64_t>(workspace_bytes_) +
         sizeof(float) * dim_;
}

Status GpuEmbeddingTable::Validate(KeyDtype dtype, int64_t n, const void* keys) const {
  if (dtype != KeyDtype::kInt32 && dtype != KeyDtype::kInt64) {
    return Status::Error(Status::kInvalidArgument,
                         "keys must be int32 or int64 (TensorFlow DataType 3 or 9), got "
                         "DataType " + std::to_string(static_cast<int>(dtype)));
  }
  if (n < 0 || n > INT_MAX) {
    return Status::Error(Status::kInvalidArgument,
                         "a batch takes 0 to 2^31-1 keys, got " + std::to_string(n));
  }
  if (n > 0 && keys == nullptr) {
    return Status::Error(Status::kInvalidArgument, "keys is null");
  }
  return Status::Ok();
}

Status GpuEmbeddingTable::Prepare(int64_t n, bool group) {
  auto align = [](size_t b) { return (b + 255) / 256 * 256; };
  const int64_t entries = index_.num_buckets * kBucketSize + 2;
  sort_bits_ = 1;
  while (sort_bits_ < 64 && (int64_t{1} << sort_bits_) <= entries) ++sort_bits_;
  sort_temp_bytes_ = 0;
  if (group) {
    cudaError_t e = cub::DeviceRadixSort::SortPairs(
        nullptr, sort_temp_bytes_, static_cast<const ull*>(nullptr),
        static_cast<ull*>(nullptr), static_cast<const int64_t*>(nullptr),
        static_cast<int64_t*>(nullptr), static_cast<int>(std::max<int64_t>(n, 1)), 0,
        sort_bits_, stream_);
    Status st = Check(e, "sizing the radix sort");
    if (!st.ok()) return st;
  }
  const size_t key_bytes = align(n * sizeof(int64_t));
  const size_t bytes = key_bytes * (group ? 5 : 2) + align(n) + align(sort_temp_bytes_);
  if (bytes > workspace_bytes_) {
    const size_t want = std::max(bytes, workspace_bytes_ + workspace_bytes_ / 2);
    cudaStreamSynchronize(stream_);  // earlier kernels may still read the old workspace
    memory_->Free(workspace_);
    workspace_bytes_ = 0;
    if ((workspace_ = memory_->Allocate(want)) == nullptr) {
      return Status::Error(Status::kResourceExhausted,
                           "out of GPU memory for the scratch of a batch of " +
                               std::to_string(n) + " keys (" +
                               GiB(static_cast<int64_t>(want)) + "); use smaller batches");
    }
    workspace_bytes_ = want;
  }
  char* p = static_cast<char*>(workspace_);
  widened_ = reinterpret_cast<int64_t*>(p), p += key_bytes;
  entry_of_ = reinterpret_cast<int64_t*>(p), p += key_bytes;
  inserted_ = reinterpret_cast<unsigned char*>(p), p += align(n);
  if (group) {
    positions_ = reinterpret_cast<int64_t*>(p), p += key_bytes;
    sorted_entries_ = reinterpret_cast<int64_t*>(p), p += key_bytes;
    sorted_positions_ = reinterpret_cast<int64_t*>(p), p += key_bytes;
    sort_temp_ = p;
  }
  return Status::Ok();
}

Status GpuEmbeddingTable::Reserve(int64_t n) {
  // Before a batch: room for all n keys being new, so every probe ends at an empty slot
  // (a batch may take the load past max_load, up to this hard bound of 0.97).
  const int64_t slots = index_.num_buckets * kBucketSize;
  if (static_cast<double>(size_ + tombstones_ + n) <= 0.97 * slots) return Status::Ok();
  int64_t buckets = index_.num_buckets;
  while (static_cast<double>(size_ + n) > 0.75 * config_.max_load * buckets * kBucketSize) {
    buckets *= 2;
  }
  return Rehash(buckets);
}

Status GpuEmbeddingTable::GrowIfLoaded() {
  const int64_t slots = index_.num_buckets * kBucketSize;
  if (static_cast<double>(size_ + tombstones_) <= config_.max_load * slots) {
    return Status::Ok();
  }
  int64_t buckets = index_.num_buckets;
  while (static_cast<double>(size_) > 0.75 * config_.max_load * buckets * kBucketSize) {
    buckets *= 2;
  }
  return Rehash(buckets);
}

Status GpuEmbeddingTable::Rehash(int64_t num_buckets) {
  Index fresh;
  Status st = Allocate(num_buckets, &fresh);
  if (!st.ok()) return st;
  const int64_t slots = num_buckets * kBucketSize;
  const int64_t old_slots = index_.num_buckets * kBucketSize;
  ClearKernel<<<GridFor(slots + 2, kBlock), kBlock, 0, stream_>>>(fresh.keys, slots);
  cudaMemsetAsync(counters_, 0, 3 * sizeof(long long), stream_);
  RehashKernel<<<GridFor(old_slots + 2, kTilesPerBlock), kBlock, 0, stream_>>>(
      index_.keys, old_slots, index_.entries, index_.freqs, index_.versions, fresh.keys,
      num_buckets, fresh.entries, fresh.freqs, fresh.versions, stride_, counters_);
  long long counters[3];
  cudaMemcpyAsync(counters, counters_, sizeof(counters), cudaMemcpyDeviceToHost, stream_);
  st = Check(cudaStreamSynchronize(stream_), "rebuilding the index");
  if (st.ok() && counters[2] != 0) {
    st = Status::Error(Status::kInternal, "rebuilding the index lost keys");
  }
  if (!st.ok()) {
    Free(&fresh);
    return st;
  }
  Free(&index_);
  index_ = fresh;
  tombstones_ = 0;
  return Status::Ok();
}

const int64_t* GpuEmbeddingTable::Widen(const void* keys, KeyDtype dtype, int64_t n) {
  if (dtype == KeyDtype::kInt64) return static_cast<const int64_t*>(keys);
  WidenKernel<<<GridFor(n, kBlock), kBlock, 0, stream_>>>(static_cast<const int32_t*>(keys), n,
                                                          widened_);
  return widened_;
}

Status GpuEmbeddingTable::LocateExisting(const void* keys, KeyDtype dtype, int64_t n) {
  wide_keys_ = Widen(keys, dtype, n);
  LocateKernel<<<GridFor(n, kTilesPerBlock), kBlock, 0, stream_>>>(
      wide_keys_, n, index_.keys, index_.num_buckets, index_.num_buckets * kBucketSize + 2,
      entry_of_);
  return Check(cudaSuccess, "launching locate");
}

Status GpuEmbeddingTable::Locate(const void* keys, KeyDtype dtype, int64_t n,
                                 bool fill_value, int64_t step) {
  wide_keys_ = Widen(keys, dtype, n);
  cudaMemsetAsync(counters_, 0, 3 * sizeof(long long), stream_);
  ClaimKernel<<<GridFor(n, kTilesPerBlock), kBlock, 0, stream_>>>(
      wide_keys_, n, index_.keys, index_.num_buckets, entry_of_, inserted_, counters_);
  InitRows r{config_.init, {config_.slot_init[0], config_.slot_init[1]}, stride_, dim_,
             num_slots(), fill_value, step};
  InitKernel<<<GridFor(n, kBlock), kBlock, 0, stream_>>>(wide_keys_, n, entry_of_, inserted_,
                                                         index_.entries, index_.freqs,
                                                         index_.versions, r);
  long long counters[3];
  cudaMemcpyAsync(counters, counters_, sizeof(counters), cudaMemcpyDeviceToHost, stream_);
  Status st = Check(cudaStreamSynchronize(stream_), "inserting keys");
  if (!st.ok()) return st;
  size_ += counters[0];
  if (counters[2] != 0) {
    return Status::Error(Status::kInternal, "the GPU index had no free slot for " +
                                                std::to_string(counters[2]) + " keys");
  }
  return Status::Ok();
}

Status GpuEmbeddingTable::GroupByEntry(int64_t n) {
  IotaKernel<<<GridFor(n, kBlock), kBlock, 0, stream_>>>(n, positions_);
  size_t temp = sort_temp_bytes_;
  cudaError_t e = cub::DeviceRadixSort::SortPairs(
      sort_temp_, temp, reinterpret_cast<const ull*>(entry_of_),
      reinterpret_cast<ull*>(sorted_entries_),
      static_cast<const int64_t*>(positions_), sorted_positions_, static_cast<int>(n), 0,
      sort_bits_, stream_);
  return Check(e, "sorting the batch by entry");
}

Status GpuEmbeddingTable::Find(const void* keys, KeyDtype dtype, int64_t n, float* out) {
  Status st = Validate(dtype, n, keys);
  if (!st.ok() || n == 0) return st;
  const unsigned grid = GridFor(n, kTilesPerBlock);
  if (dtype == KeyDtype::kInt32) {
    FindKernel<<<grid, kBlock, 0, stream_>>>(static_cast<const int32_t*>(keys), n, index_.keys,
                                             index_.num_buckets, index_.entries, stride_, dim_,
                                             default_row_, out);
  } else {
    FindKernel<<<grid, kBlock, 0, stream_>>>(static_cast<const int64_t*>(keys), n, index_.keys,
                                             index_.num_buckets, index_.entries, stride_, dim_,
                                             default_row_, out);
  }
  return Check(cudaSuccess, "launching find");
}

Status GpuEmbeddingTable::FindOrInsert(const void* keys, KeyDtype dtype, int64_t n,
                                       int64_t step, float* out) {
  Status st = Validate(dtype, n, keys);
  if (!st.ok() || n == 0) return st;
  if (!(st = Reserve(n)).ok() || !(st = Prepare(n, false)).ok() ||
      !(st = Locate(keys, dtype, n, true, step)).ok()) {
    return st;
  }
  GatherKernel<<<GridFor(n, kTilesPerBlock), kBlock, 0, stream_>>>(
      n, entry_of_, index_.entries, stride_, dim_, index_.freqs, index_.versions, step, out);
  if (!(st = Check(cudaSuccess, "launching find-or-insert")).ok()) return st;
  return GrowIfLoaded();
}

Status GpuEmbeddingTable::Insert(const void* keys, KeyDtype dtype, int64_t n,
                                 const float* values) {
  Status st = Validate(dtype, n, keys);
  if (!st.ok() || n == 0) return st;
  if (!(st = Reserve(n)).ok() || !(st = Prepare(n, true)).ok() ||
      !(st = Locate(keys, dtype, n, false, 0)).ok() || !(st = GroupByEntry(n)).ok()) {
    return st;
  }
  AssignKernel<<<GridFor(n, kTilesPerBlock), kBlock, 0, stream_>>>(
      n, sorted_entries_, sorted_positions_, values, SlotArrays(), nullptr, nullptr,
      index_.entries, stride_, dim_, index_.freqs, index_.versions);
  if (!(st = Check(cudaSuccess, "launching insert")).ok()) return st;
  return GrowIfLoaded();
}

Status GpuEmbeddingTable::Remove(const void* keys, KeyDtype dtype, int64_t n) {
  Status st = Validate(dtype, n, keys);
  if (!st.ok() || n == 0) return st;
  if (!(st = Prepare(n, false)).ok()) return st;
  const int64_t* wide = Widen(keys, dtype, n);
  cudaMemsetAsync(counters_, 0, 3 * sizeof(long long), stream_);
  RemoveKernel<<<GridFor(n, kTilesPerBlock), kBlock, 0, stream_>>>(
      wide, n, index_.keys, index_.num_buckets, counters_);
  long long counters[3];
  cudaMemcpyAsync(counters, counters_, sizeof(counters), cudaMemcpyDeviceToHost, stream_);
  if (!(st = Check(cudaStreamSynchronize(stream_), "removing keys")).ok()) return st;
  size_ -= counters[0];
  tombstones_ += counters[0] - counters[1];
  return Status::Ok();
}

Status GpuEmbeddingTable::Apply(const OptimizerParams& params, const void* keys,
                                KeyDtype dtype, int64_t n, const float* grads) {
  Status st = Validate(dtype, n, keys);
  if (!st.ok()) return st;
  // SGD keeps no slots, so it also trains a table laid out for no optimizer (as on CPU).
  const bool fits = params.kind == config_.optimizer ||
                    (params.kind == Optimizer::kSgd && config_.optimizer == Optimizer::kNone);
  if (!fits || params.kind == Optimizer::kNone) {
    return Status::Error(Status::kInvalidArgument,
                         "apply with optimizer " + std::to_string(static_cast<int>(params.kind)) +
                             " on a table laid out for optimizer " +
                             std::to_string(static_cast<int>(config_.optimizer)));
  }
  if (n == 0) return st;
  if (!(st = Prepare(n, true)).ok() || !(st = LocateExisting(keys, dtype, n)).ok() ||
      !(st = GroupByEntry(n)).ok()) {
    return st;
  }
  ApplyKernel<<<GridFor(n, kTilesPerBlock), kBlock, 0, stream_>>>(
      n, sorted_entries_, sorted_positions_, grads, index_.entries, stride_, dim_,
      index_.num_buckets * kBucketSize + 2, params);
  return Check(cudaSuccess, "launching apply");
}

Status GpuEmbeddingTable::Export(int64_t* keys, float* values, int64_t* freqs,
                                 int64_t* versions, const std::vector<float*>& slots) {
  if (!slots.empty() && static_cast<int>(slots.size()) != num_slots()) {
    return Status::Error(Status::kInvalidArgument,
                         "export asks for " + std::to_string(slots.size()) +
                             " slot arrays, the table keeps " + std::to_string(num_slots()));
  }
  SlotArrays slot_arrays;
  slot_arrays.count = static_cast<int>(slots.size());
  for (int s = 0; s < slot_arrays.count; ++s) slot_arrays.p[s] = slots[s];
  if (size_ == 0) return Status::Ok();
  const int64_t index_slots = index_.num_buckets * kBucketSize;
  const int64_t chunks = (index_slots + 2 + kExportChunk - 1) / kExportChunk;
  long long* counts = static_cast<long long*>(memory_->Allocate(chunks * sizeof(long long)));
  if (counts == nullptr) {
    return Status::Error(Status::kResourceExhausted, "out of GPU memory exporting a table");
  }
  Status st;
  ExportCountKernel<<<static_cast<unsigned>(chunks), kBlock, 0, stream_>>>(
      index_.keys, index_slots, counts);
  std::vector<long long> offsets(chunks);
  cudaMemcpyAsync(offsets.data(), counts, chunks * sizeof(long long), cudaMemcpyDeviceToHost,
                  stream_);
  st = Check(cudaStreamSynchronize(stream_), "counting the live entries");
  long long total = 0;
  for (long long& c : offsets) {
    const long long count = c;
    c = total;
    total += count;
  }
  if (st.ok() && total != size_) {
    st = Status::Error(Status::kInternal, "export found " + std::to_string(total) +
                                              " keys, the table counts " + std::to_string(size_));
  }
  if (st.ok()) {
    cudaMemcpyAsync(counts, offsets.data(), chunks * sizeof(long long), cudaMemcpyHostToDevice,
                    stream_);
    ExportWriteKernel<<<static_cast<unsigned>(chunks), kBlock, 0, stream_>>>(
        index_.keys, index_slots, index_.entries, index_.freqs, index_.versions, stride_, dim_,
        counts, keys, values, slot_arrays, freqs, versions);
    st = Check(cudaStreamSynchronize(stream_), "exporting");
  }
  memory_->Free(counts);
  return st;
}

Status GpuEmbeddingTable::Import(const int64_t* keys, int64_t n, const float* values,
                                 const int64_t* freqs, const int64_t* versions,
                                 const std::vector<const float*>& slots) {
  Status st = Validate(KeyDtype::kInt64, n, keys);
  if (!st.ok()) return st;
  if (!slots.empty() && static_cast<int>(slots.size()) != num_slots()) {
    return Status::Error(Status::kInvalidArgument,
                         "import has " + std::to_string(slots.size()) +
                             " slot arrays, the table keeps " + std::to_string(num_slots()));
  }
  SlotArrays slot_arrays;
  slot_arrays.count = static_cast<int>(slots.size());
  for (int s = 0; s < slot_arrays.count; ++s) slot_arrays.p[s] = const_cast<float*>(slots[s]);
  if (n > 0 && (values == nullptr || freqs == nullptr || versions == nullptr)) {
    return Status::Error(Status::kInvalidArgument, "import needs values, freqs and versions");
  }
  // Sized for a load of 0.7 after the import, as the CPU table; never shrinks.
  int64_t buckets = index_.num_buckets;
  while (static_cast<double>(n) > 0.7 * buckets * kBucketSize) buckets *= 2;
  if (buckets != index_.num_buckets) {
    Index fresh;
    if (!(st = Allocate(buckets, &fresh)).ok()) return st;
    Free(&index_);
    index_ = fresh;
  }
  const int64_t index_slots = index_.num_buckets * kBucketSize;
  ClearKernel<<<GridFor(index_slots + 2, kBlock), kBlock, 0, stream_>>>(index_.keys,
                                                                        index_slots);
  size_ = 0;
  tombstones_ = 0;
  if (n == 0) return Check(cudaStreamSynchronize(stream_), "clearing the index");
  if (!(st = Prepare(n, true)).ok() || !(st = Locate(keys, KeyDtype::kInt64, n, false, 0)).ok() ||
      !(st = GroupByEntry(n)).ok()) {
    return st;
  }
  AssignKernel<<<GridFor(n, kTilesPerBlock), kBlock, 0, stream_>>>(
      n, sorted_entries_, sorted_positions_, values, slot_arrays, freqs, versions, index_.entries,
      stride_, dim_, index_.freqs, index_.versions);
  return Check(cudaStreamSynchronize(stream_), "importing");
}

}  // namespace gpu
}  // namespace graphopt
