// EmbeddingTable: the resource behind an EmbeddingVariable.
//
// Layout (per shard, 64 shards chosen by the top hash bits):
//  * an open-addressing index of packed 12-byte slots {int64 key, uint32 row},
//    linear probing, load factor kept in (0.53, 0.8] by growing 1.5x; a slot is
//    empty when its row is kEmptyRow, so every int64 key (INT64_MIN, -1, ...)
//    is an ordinary key and deletions use backward shifting, not tombstones;
//  * rows in fixed-size chunks (a contiguous float slab per chunk plus side
//    arrays of uint32 frequency and int64 last-step), so growing never copies
//    rows and the slack is at most one chunk per shard; a large table's chunks
//    share 2 MiB huge-page slabs (chunk_arena.h).
// At dim 64 that is ~12/load + 12 bytes of overhead per 256-byte row.
//
// A serving table may store compressed rows (TableOptions::row_type, row_codec.h):
// int8 row-wise (dim + 8 bytes) or 16-bit floats, decoded to float32 as they are
// copied out. Such a table trains no optimizer and keeps no frequency or last
// step (its chunks have no side arrays), so at dim 64 an int8 row costs 72 bytes
// plus its index slot.
//
// A table created for an optimizer keeps the optimizer's slots in the row:
// [value(dim) | slot_0(dim) | ...] contiguous (sparse_optimizers.h), so one
// probe reads and writes value and slots; without one the stride is dim.
// Admission (min_count) counts unadmitted keys in a per-shard map (exact, one entry
// per key) or a per-shard counting Bloom filter (admission='bloom': bytes fixed up
// front, some keys admitted early); a row cap
// (max_rows) is split evenly over the shards, each evicting its least recently
// or least frequently used rows when full.
//
// Concurrency: each shard has an absl::Mutex (reader/writer). Lookups take
// reader locks (all shards at once for a large block, so keys are processed
// in their own order with software prefetching); frequency and step are
// atomics so find-or-insert can count hits under a reader lock; anything that
// moves slots or writes row values takes the shard's writer lock. Multi-shard
// locks are always taken in shard order, so there is no lock-order cycle.
#ifndef GRAPHOPT_EMBEDDING_VARIABLE_CC_KERNELS_EMBEDDING_TABLE_H_
#define GRAPHOPT_EMBEDDING_VARIABLE_CC_KERNELS_EMBEDDING_TABLE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "embedding_variable/cc/kernels/admission_filter.h"
#include "embedding_variable/cc/kernels/chunk_arena.h"
#include "embedding_variable/cc/kernels/counter_map.h"
#include "embedding_variable/cc/kernels/key_hash.h"
#include "embedding_variable/cc/kernels/row_codec.h"
#include "embedding_variable/cc/kernels/row_initializer.h"
#include "embedding_variable/cc/kernels/sparse_optimizers.h"
#include "tensorflow/core/framework/resource_base.h"
#include "tensorflow/core/lib/core/threadpool.h"

namespace graphopt {

// Runs fn(begin, end) over [0, total) on TensorFlow's intra-op pool (or inline).
struct IntraOpPool {
  tensorflow::thread::ThreadPool* workers = nullptr;
  int num_threads = 1;
  void For(int64_t total, int64_t cost_per_unit,
           const std::function<void(int64_t, int64_t)>& fn) const;
};

// Receives the exported table: called once, under the table's reader locks,
// with the number of keys; returns where to write them.
struct ExportBuffers {
  int64_t* keys;
  float* values;  // [n, dim] float32 rows (a compressed table's decoded), or null:
  // a compressed table's stored rows instead: codes [n, dim] of the row type
  // (uint8 / 16-bit floats) and, for int8, scale_bias [n, 2].
  void* codes = nullptr;
  float* scale_bias = nullptr;
  int64_t* freqs;
  int64_t* versions;
  std::vector<float*> slots;  // one [n, dim] buffer per slot of the table
  // Admission counters: num_pending is set before allocate is called, which may
  // point pending_keys/pending_counts at num_pending entries (null: not exported).
  // With admission='bloom' they carry the filter instead (see PendingCounts).
  int64_t num_pending = 0;
  int64_t* pending_keys = nullptr;
  int64_t* pending_counts = nullptr;
};

// Admission counters of keys not admitted yet, as exported / imported. With
// admission='bloom' the same two arrays hold the filter: entry 0 is the header
// (bloom_counters, bloom_hashes) the table was created with, then one entry
// (counter index, value) per nonzero counter.
struct PendingCounts {
  const int64_t* keys = nullptr;
  const int64_t* counts = nullptr;
  int64_t n = 0;
};

// What a table is created with besides its rows (the handle op's attrs).
struct TableOptions {
  enum class CapPolicy { kLru, kLfu, kRefuse };
  OptimizerKind optimizer = OptimizerKind::kNone;
  std::vector<float> slot_init;  // one initial value per slot
  int64_t min_count = 0;         // 0 or 1: admit at once
  bool bloom = false;            // count unadmitted keys in a counting Bloom filter
  int64_t bloom_counters = 0;    // counters of the filter, split over the shards
  int bloom_hashes = 0;          // counters per key
  int64_t max_rows = 0;          // 0: no cap
  CapPolicy cap_policy = CapPolicy::kLru;
  RowType row_type = RowType::kFloat32;  // compressed: no optimizer, admission or cap
};

// One eviction pass (GraphoptEvEvict): rows whose last step is more than ttl
// before step, rows seen fewer than min_freq times, then the least recently
// (lfu: least frequently) used rows until at most max_rows remain; 0 disables
// a rule.
struct EvictionRule {
  int64_t step = 0, ttl = 0, min_freq = 0, max_rows = 0;
  bool lfu = false;
};

struct TableStats {
  int64_t size, admitted, evicted, pending, bytes_used;
};

// Receives a changed-rows export (GraphoptEvExportChanged): called once, under
// the table's reader locks, with the number of changed rows and of keys held.
struct ChangedRows {
  int64_t* keys;      // [changed]
  float* values;      // [changed, dim]
  int64_t* versions;  // [changed]
  int64_t* present;   // [held]: every key the table holds
};

class EmbeddingTable : public tensorflow::ResourceBase {
 public:
  static constexpr int kNumShards = 64;
  static constexpr int kShardBits = 6;
  static constexpr uint32_t kEmptyRow = 0xffffffffu;
  static constexpr uint32_t kMaxRowsPerShard = 0xfffffff0u;

  EmbeddingTable(int dim, std::vector<float> default_row, RowInitializer init,
                 TableOptions options = TableOptions());
  ~EmbeddingTable() override;

  int dim() const { return dim_; }
  RowType row_type() const { return options_.row_type; }
  bool compressed() const { return options_.row_type != RowType::kFloat32; }
  int num_slots() const { return num_slots_; }
  const TableOptions& options() const { return options_; }
  std::string DebugString() const override;
  int64_t MemoryUsed() const override { return BytesUsed(); }

  // keys[i] found -> its row, else the default row; nothing is inserted.
  template <typename K>
  void Find(const K* keys, int64_t n, float* out, const IntraOpPool& pool) const;

  // Like Find, but inserts missing keys with their initializer row; counts a hit
  // in the key's frequency and records `step` as its last step. With min_count > 1
  // a missing key is only counted until its min_count-th occurrence, reading the
  // default row until then.
  template <typename K>
  tensorflow::Status FindOrInsert(const K* keys, int64_t n, int64_t step, float* out,
                                  const IntraOpPool& pool);

  // Assigns rows (inserting keys that are missing, with frequency 0); for a key
  // repeated in the batch the last row wins.
  template <typename K>
  tensorflow::Status Insert(const K* keys, int64_t n, const float* values,
                            const IntraOpPool& pool);

  template <typename K>
  void Remove(const K* keys, int64_t n, const IntraOpPool& pool);

  // For the fallback ops (collisionless migration): rows of the keys the table
  // holds; a missing key's row in out is left as it is and its position is
  // appended to missing (in batch order). Nothing is counted or inserted.
  void FindExisting(const int64_t* keys, int64_t n, float* out,
                    std::vector<int64_t>* missing) const;

  // Inserts the keys the table does not hold with their values[i] row (frequency
  // 0); a key that is already present (or repeated in the batch) keeps its row.
  tensorflow::Status InsertMissing(const int64_t* keys, int64_t n, const float* values,
                                   const IntraOpPool& pool);

  // Replaces the whole content (duplicate keys: the last wins). slots: empty
  // (every row gets the initial slot values) or one [n, dim] array per slot.
  // A compressed table quantizes the float32 values (InvalidArgument naming the
  // first row it cannot store; nothing is changed then).
  tensorflow::Status Import(const int64_t* keys, int64_t n, const float* values,
                            const int64_t* freqs, const int64_t* versions,
                            const std::vector<const float*>& slots, const PendingCounts& pending,
                            const IntraOpPool& pool);
  // Import of a compressed table's stored rows: codes [n, dim] of its row type and,
  // for int8, scale_bias [n, 2] (finite, scale >= 0).
  tensorflow::Status ImportCompressed(const int64_t* keys, int64_t n, const void* codes,
                                      const float* scale_bias, const IntraOpPool& pool);

  // Rows as this table stores them: n rows of StoredValueBytes() each, or
  // InvalidArgument naming the first row that cannot be stored (a float32 table
  // takes every row as it is).
  tensorflow::Status EncodeRows(const float* values, int64_t n, std::vector<char>* out) const;
  size_t StoredValueBytes() const { return value_bytes_; }

  // Sparse optimizer step: grads [n, dim]; gradients of a key repeated in the
  // batch are summed in batch order first (as tf.unique + unsorted_segment_sum
  // do), keys without a row (unadmitted, evicted) are skipped.
  template <typename K>
  tensorflow::Status Apply(const K* keys, int64_t n, const float* grads,
                           const OptimizerParams& params, const IntraOpPool& pool);

  // Removes the rows the rule selects and appends their keys to `evicted`.
  tensorflow::Status Evict(const EvictionRule& rule, std::vector<int64_t>* evicted);

  // A consistent snapshot, copied on the calling thread under all reader locks.
  tensorflow::Status Export(
      const std::function<tensorflow::Status(int64_t, ExportBuffers*)>& allocate) const;

  // Online updates. The rows whose last step is after `since` and every key
  // held, one consistent snapshot (all reader locks).
  tensorflow::Status ExportChanged(
      int64_t since,
      const std::function<tensorflow::Status(int64_t, int64_t, ChangedRows*)>& allocate) const;
  // Removes `removed`, then assigns values[n, dim] to keys (inserting missing
  // ones). A concurrent find sees the table before or after the whole delta,
  // never part of it: the delta is published as an overlay that finds read
  // first (one pointer swap under delta_mu_), merged into the shards under their
  // own writer locks while finds go on, then withdrawn (another swap). The merge
  // runs in small chunks on the calling thread (never in `pool`, where requests
  // compute), yielding between chunks.
  tensorflow::Status ApplyDelta(const int64_t* keys, int64_t n, const float* values,
                                const int64_t* removed, int64_t m, const IntraOpPool& pool);

  int64_t Size() const;
  int64_t BytesUsed() const;
  TableStats Stats() const;
  // Keys the table holds before any shard's index has to grow.
  int64_t Capacity() const;

 private:
  struct __attribute__((packed, aligned(4))) Slot {
    int64_t key;
    uint32_t row;
  };
  static_assert(sizeof(Slot) == 12, "slots must pack to 12 bytes");


  struct alignas(64) Shard {
    mutable absl::Mutex mu;
    std::unique_ptr<Slot[]> slots;
    uint32_t capacity = 0;
    uint32_t size = 0;
    uint32_t grow_at = 0;
    uint32_t rows_used = 0;  // high-water mark of row ids handed out
    // Row chunks: the rows, then (tables that count) versions and frequencies. One
    // pointer each, so a lookup's chunk table stays in cache.
    std::vector<char*> chunks;
    std::vector<uint32_t> free_rows;
    uint32_t cap = 0;  // this shard's share of max_rows (kMaxRowsPerShard without a cap)
    // Occurrences of keys seen by find-or-insert but not admitted yet: exact, or in
    // the filter with admission='bloom'.
    CounterMap pending;
    AdmissionFilter filter;
    // Rows to evict when the shard is at its cap, the next victim last; an entry
    // whose row was used since it was chosen is skipped.
    struct Victim {
      int64_t key;
      int64_t version;
      uint32_t freq;
    };
    std::vector<Victim> victims;
  };

  static uint64_t Hash(int64_t key) { return HashKey(key); }
  static int ShardOf(uint64_t h) { return static_cast<int>(h >> (64 - kShardBits)); }
  static uint32_t Home(uint64_t h, uint32_t capacity) {
    return static_cast<uint32_t>(((h & 0xffffffffULL) * capacity) >> 32);
  }

  // Slot index holding key, or -1. Caller holds the shard lock (any mode).
  static int64_t Probe(const Shard& s, int64_t key, uint64_t h);

  // The row as stored (row_bytes_ bytes: its value, then a float32 table's slots).
  char* RowData(const Shard& s, uint32_t row) const {
    return s.chunks[row >> chunk_shift_] + static_cast<size_t>(row & chunk_mask_) * row_bytes_;
  }
  // A float32 table's row value; its slots follow (stride_ floats in all).
  float* RowValues(const Shard& s, uint32_t row) const {
    return reinterpret_cast<float*>(RowData(s, row));
  }
  // Side arrays: only tables that count (counts_) have them.
  std::atomic<int64_t>& RowVersion(const Shard& s, uint32_t row) const {
    return reinterpret_cast<std::atomic<int64_t>*>(s.chunks[row >> chunk_shift_] +
                                                   chunk_values_bytes_)[row & chunk_mask_];
  }
  std::atomic<uint32_t>& RowFreq(const Shard& s, uint32_t row) const {
    return reinterpret_cast<std::atomic<uint32_t>*>(
        s.chunks[row >> chunk_shift_] + chunk_values_bytes_ +
        (static_cast<size_t>(chunk_mask_) + 1) * sizeof(int64_t))[row & chunk_mask_];
  }
  void ReadRow(const char* stored, float* out) const { DecodeRow(options_.row_type, stored, dim_, out); }

  // Insert (overwrite) and InsertMissing (keep rows already present): rows of missing keys
  // are added, each shard's keys written under its writer lock.
  // rows: stored-format value rows (StoredValueBytes() each).
  template <typename K>
  tensorflow::Status WriteRows(const K* keys, int64_t n, const char* rows, bool overwrite,
                               const IntraOpPool& pool);
  // Import of stored-format value rows (float32 tables: with their slots).
  tensorflow::Status ImportRows(const int64_t* keys, int64_t n, const char* rows,
                                const int64_t* freqs, const int64_t* versions,
                                const std::vector<const float*>& slots,
                                const PendingCounts& pending, const IntraOpPool& pool);

  // Writer-locked helpers.
  void ResetShard(Shard* s, uint32_t expected_keys);
  void Rehash(Shard* s, uint32_t new_capacity);
  tensorflow::Status AllocateRow(Shard* s, uint32_t* row);
  // Slot of key, inserting it (row allocated, freq 0, version 0, initial slots)
  // if missing; a shard at its cap first evicts a row (or refuses).
  tensorflow::Status FindOrAddSlot(Shard* s, int64_t key, uint64_t h, bool* added,
                                   uint32_t* row);
  void EraseSlot(Shard* s, int64_t slot);
  // Removes key's row if present; true if it was.
  bool EraseKey(Shard* s, int64_t key);
  tensorflow::Status MakeRoom(Shard* s);
  void ChooseVictims(Shard* s);
  void FreeChunks(Shard* s);

  // Groups keys by shard and runs fn(shard, positions of its keys in batch order)
  // for the shards in parallel, each under its writer lock; with
  // all_shards_locked the caller holds every writer lock and every shard is
  // visited, also those without keys.
  using ShardGroupFn = std::function<tensorflow::Status(Shard*, const int64_t*, const int64_t*)>;
  template <typename K>
  tensorflow::Status ForEachShardGroup(const K* keys, int64_t n, int64_t cost_per_key,
                                       bool all_shards_locked, const IntraOpPool& pool,
                                       const ShardGroupFn& fn);

  int64_t SumOverShards(const std::function<int64_t(const Shard&)>& f) const;
  // Counters of each shard's filter (admission='bloom').
  size_t FilterCountersPerShard() const;
  tensorflow::Status CheckFilterState(const PendingCounts& state) const;

  // Keys per parallel block of a find of n keys.
  static int64_t BlockSize(int64_t n, const IntraOpPool& pool);

  // Find over one block; with `count` (find-or-insert) hits are counted and
  // the positions of missing keys collected.
  template <bool count, RowType kType, typename K>
  void FindBlock(const K* keys, int64_t n, float* out, int64_t step,
                 std::vector<int64_t>* missing) const;
  // FindBlock for the table's row type.
  template <bool count, typename K>
  void FindBlockOfType(const K* keys, int64_t n, float* out, int64_t step,
                       std::vector<int64_t>* missing) const;

  // Stable counting sort of keys by shard: order[offsets[s]..offsets[s+1]) are
  // the positions of shard s's keys, in batch order.
  template <typename K>
  static void GroupByShard(const K* keys, int64_t n, std::vector<int64_t>* order,
                           std::vector<int64_t>* offsets);

  const int dim_;
  const std::vector<float> default_row_;
  const RowInitializer init_;
  const TableOptions options_;
  const int num_slots_;
  const int stride_;  // float32 tables: floats per row, dim * (1 + num_slots)
  const size_t value_bytes_;  // bytes of a row's stored value (row_codec.h)
  const size_t row_bytes_;    // bytes of a stored row: its value, then its slots
  const bool counts_;         // keeps frequency and last step (float32 tables)
  // The delta ApplyDelta is merging: key -> its row in `values`, or -1 for a
  // removed key. Find reads it before the shards, so it sees the whole delta.
  struct DeltaOverlay {
    absl::flat_hash_map<int64_t, int64_t> rows;
    std::vector<float> values;
  };
  // Copies the overlay's rows over `out` for the keys it holds.
  template <typename K>
  void ReadOverlay(const DeltaOverlay& overlay, const K* keys, int64_t n, float* out) const;

  // Held by Find (reader) across all its blocks and the overlay, and by
  // ApplyDelta (writer) only to publish or withdraw its overlay.
  mutable absl::Mutex delta_mu_;
  std::unique_ptr<const DeltaOverlay> overlay_;  // guarded by delta_mu_
  absl::Mutex apply_mu_;                         // one ApplyDelta at a time
  std::atomic<int64_t> admitted_{0};
  std::atomic<int64_t> evicted_{0};
  int chunk_shift_;
  uint32_t chunk_mask_;
  size_t chunk_bytes_;
  size_t chunk_values_bytes_;
  std::unique_ptr<ChunkArena> arena_;  // every shard's chunks
  Shard shards_[kNumShards];
};

}  // namespace graphopt

#endif  // GRAPHOPT_EMBEDDING_VARIABLE_CC_KERNELS_EMBEDDING_TABLE_H_
