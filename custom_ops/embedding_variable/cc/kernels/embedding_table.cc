#include "embedding_variable/cc/kernels/embedding_table.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <thread>

#include "absl/strings/str_cat.h"
#include "tensorflow/core/platform/errors.h"
#include "tensorflow/core/util/work_sharder.h"

namespace graphopt {

using tensorflow::Status;
namespace errors = tensorflow::errors;

namespace {

constexpr double kMaxLoad = 0.8;
// Import sizes each index for this load, leaving room before the first growth.
constexpr double kImportLoad = 0.7;
constexpr uint32_t kMinCapacity = 8;
// Keys per unit of parallel work, also the span over which a reader holds all
// shard locks (so a writer waits at most one block): large enough that taking the
// 64 reader locks, whose cache lines bounce between cores, costs little per key;
// small enough that a batch still splits over the pool.
constexpr int64_t kMinBlock = 1024;
constexpr int64_t kMaxBlock = 8192;
// Blocks smaller than this lock only the shards they touch, key by key.
constexpr int64_t kLockAllMin = 256;
// Keys ApplyDelta merges per step (about 32 per shard) between yields.
constexpr int64_t kMergeChunk = 2048;
// How many keys ahead of its probe a key's home slot is prefetched, and how many keys
// ahead of its copy its row is (two DRAM latencies hidden behind ~20 keys of work).
#ifndef GRAPHOPT_SLOT_DISTANCE
#define GRAPHOPT_SLOT_DISTANCE 16
#endif
#ifndef GRAPHOPT_ROW_DISTANCE
#define GRAPHOPT_ROW_DISTANCE 8
#endif
constexpr int kSlotDistance = GRAPHOPT_SLOT_DISTANCE;
constexpr int kRowDistance = GRAPHOPT_ROW_DISTANCE;
constexpr int kMaxPrefetchLines = 16;
constexpr size_t kTargetChunkBytes = 16384;

inline void PrefetchRead(const void* p) { __builtin_prefetch(p, 0, 3); }

void BumpHit(std::atomic<uint32_t>& freq, std::atomic<int64_t>& version, int64_t step) {
  uint32_t f = freq.load(std::memory_order_relaxed);
  while (f != 0xffffffffu &&
         !freq.compare_exchange_weak(f, f + 1, std::memory_order_relaxed)) {
  }
  int64_t v = version.load(std::memory_order_relaxed);
  while (v < step && !version.compare_exchange_weak(v, step, std::memory_order_relaxed)) {
  }
}

}  // namespace

void IntraOpPool::For(int64_t total, int64_t cost_per_unit,
                      const std::function<void(int64_t, int64_t)>& fn) const {
  if (total <= 0) return;
  if (workers == nullptr || num_threads <= 1 || total == 1) {
    fn(0, total);
    return;
  }
  tensorflow::Shard(num_threads, workers, total, cost_per_unit, fn);
}

EmbeddingTable::EmbeddingTable(int dim, std::vector<float> default_row, RowInitializer init,
                               TableOptions options)
    : dim_(dim),
      default_row_(std::move(default_row)),
      init_(init),
      options_(std::move(options)),
      num_slots_(static_cast<int>(options_.slot_init.size())),
      stride_(dim * (1 + num_slots_)),
      value_bytes_(RowValueBytes(options_.row_type, dim)),
      row_bytes_(value_bytes_ + static_cast<size_t>(dim) * num_slots_ * sizeof(float)),
      counts_(options_.row_type == RowType::kFloat32) {
  const size_t row_bytes = row_bytes_;
  int shift = 4;  // at least 16 rows per chunk
  while ((static_cast<size_t>(2) << shift) * row_bytes <= kTargetChunkBytes) ++shift;
  chunk_shift_ = shift;
  chunk_mask_ = (1u << shift) - 1;
  const size_t rows = static_cast<size_t>(1) << shift;
  chunk_values_bytes_ = (rows * row_bytes + 63) / 64 * 64;
  const size_t side = counts_ ? rows * (sizeof(int64_t) + sizeof(uint32_t)) : 0;
  chunk_bytes_ = (chunk_values_bytes_ + side + 63) / 64 * 64;
  arena_ = std::make_unique<ChunkArena>(chunk_bytes_);
  for (int i = 0; i < kNumShards; ++i) {
    // max_rows split evenly, the remainder to the first shards: the shares sum to it.
    const int64_t share = options_.max_rows / kNumShards + (i < options_.max_rows % kNumShards);
    shards_[i].cap = options_.max_rows > 0 ? static_cast<uint32_t>(std::min<int64_t>(
                                                 share, kMaxRowsPerShard))
                                           : kMaxRowsPerShard;
    if (options_.bloom) {
      shards_[i].filter.Allocate(FilterCountersPerShard(), options_.bloom_hashes);
    }
    ResetShard(&shards_[i], 0);
  }
}

EmbeddingTable::~EmbeddingTable() {
  for (Shard& s : shards_) FreeChunks(&s);
}

std::string EmbeddingTable::DebugString() const {
  return absl::StrCat("GraphoptEmbeddingTable(dim=", dim_, ", size=", Size(), ")");
}

void EmbeddingTable::FreeChunks(Shard* s) {
  for (char* c : s->chunks) arena_->Free(c);
  s->chunks.clear();
  s->chunks.shrink_to_fit();
}

void EmbeddingTable::ResetShard(Shard* s, uint32_t expected_keys) {
  FreeChunks(s);
  s->free_rows.clear();
  s->free_rows.shrink_to_fit();
  s->pending.Clear();
  s->filter.Reset();
  s->victims = {};
  s->rows_used = 0;
  s->size = 0;
  const uint64_t cap = std::max<uint64_t>(
      kMinCapacity, static_cast<uint64_t>(expected_keys / kImportLoad) + 1);
  s->capacity = static_cast<uint32_t>(cap);
  s->grow_at = static_cast<uint32_t>(cap * kMaxLoad);
  s->slots.reset(new Slot[cap]);
  for (uint64_t i = 0; i < cap; ++i) s->slots[i].row = kEmptyRow;
}

void EmbeddingTable::Rehash(Shard* s, uint32_t new_capacity) {
  std::unique_ptr<Slot[]> slots(new Slot[new_capacity]);
  for (uint32_t i = 0; i < new_capacity; ++i) slots[i].row = kEmptyRow;
  for (uint32_t i = 0; i < s->capacity; ++i) {
    const Slot& old = s->slots[i];
    if (old.row == kEmptyRow) continue;
    uint32_t j = Home(Hash(old.key), new_capacity);
    while (slots[j].row != kEmptyRow) {
      if (++j == new_capacity) j = 0;
    }
    slots[j] = old;
  }
  s->slots = std::move(slots);
  s->capacity = new_capacity;
  s->grow_at = static_cast<uint32_t>(new_capacity * kMaxLoad);
}

int64_t EmbeddingTable::Probe(const Shard& s, int64_t key, uint64_t h) {
  const Slot* slots = s.slots.get();
  uint32_t i = Home(h, s.capacity);
  // The load factor stays below 1, so an empty slot ends every probe.
  for (;;) {
    const Slot& slot = slots[i];
    if (slot.row == kEmptyRow) return -1;
    if (slot.key == key) return i;
    if (++i == s.capacity) i = 0;
  }
}

Status EmbeddingTable::AllocateRow(Shard* s, uint32_t* row) {
  if (!s->free_rows.empty()) {
    *row = s->free_rows.back();
    s->free_rows.pop_back();
    return Status();
  }
  if (s->rows_used >= kMaxRowsPerShard) {
    return errors::ResourceExhausted("EmbeddingVariable shard is full (", kMaxRowsPerShard,
                                     " keys); remove keys or shard the variable");
  }
  const uint32_t r = s->rows_used;
  if ((r >> chunk_shift_) == s->chunks.size()) {
    char* memory = arena_->Allocate();
    if (memory == nullptr) {
      return errors::ResourceExhausted("out of memory growing an EmbeddingVariable");
    }
    if (counts_) {
      const size_t rows = chunk_mask_ + 1;
      char* side = memory + chunk_values_bytes_;
      auto* versions = reinterpret_cast<std::atomic<int64_t>*>(side);
      auto* freqs = reinterpret_cast<std::atomic<uint32_t>*>(side + rows * sizeof(int64_t));
      for (size_t i = 0; i < rows; ++i) {
        new (&versions[i]) std::atomic<int64_t>(0);
        new (&freqs[i]) std::atomic<uint32_t>(0);
      }
    }
    s->chunks.push_back(memory);
  }
  *row = r;
  ++s->rows_used;
  return Status();
}

Status EmbeddingTable::FindOrAddSlot(Shard* s, int64_t key, uint64_t h, bool* added,
                                     uint32_t* row) {
  const int64_t found = Probe(*s, key, h);
  if (found >= 0) {
    *added = false;
    *row = s->slots[found].row;
    return Status();
  }
  if (s->size >= s->cap) TF_RETURN_IF_ERROR(MakeRoom(s));
  if (s->size + 1 > s->grow_at) {
    const uint64_t grown = std::max<uint64_t>(kMinCapacity, s->capacity + s->capacity / 2);
    Rehash(s, static_cast<uint32_t>(std::min<uint64_t>(grown, 0xfffffff0u)));
  }
  TF_RETURN_IF_ERROR(AllocateRow(s, row));
  uint32_t i = Home(h, s->capacity);
  while (s->slots[i].row != kEmptyRow) {
    if (++i == s->capacity) i = 0;
  }
  s->slots[i].key = key;
  s->slots[i].row = *row;
  ++s->size;
  if (!s->pending.empty()) s->pending.Erase(key);  // inserted directly: no longer counted
  if (counts_) {
    RowFreq(*s, *row).store(0, std::memory_order_relaxed);
    RowVersion(*s, *row).store(0, std::memory_order_relaxed);
  }
  float* slots = RowValues(*s, *row) + dim_;
  for (int j = 0; j < num_slots_; ++j) {
    std::fill(slots + j * dim_, slots + (j + 1) * dim_, options_.slot_init[j]);
  }
  *added = true;
  return Status();
}

bool EmbeddingTable::EraseKey(Shard* s, int64_t key) {
  const int64_t slot = Probe(*s, key, Hash(key));
  if (slot < 0) return false;
  s->free_rows.push_back(s->slots[slot].row);
  EraseSlot(s, slot);
  return true;
}

namespace {

// Eviction order: least recently used first (lfu: least frequently), then the
// other criterion, then the key, so a pass is deterministic.
struct EvictionCandidate {
  int64_t version;
  uint32_t freq;
  int64_t key;
  int shard;
};

auto EvictionOrder(bool lfu) {
  return [lfu](const EvictionCandidate& a, const EvictionCandidate& b) {
    if (lfu && a.freq != b.freq) return a.freq < b.freq;
    if (a.version != b.version) return a.version < b.version;
    if (a.freq != b.freq) return a.freq < b.freq;
    return a.key < b.key;
  };
}

}  // namespace

void EmbeddingTable::ChooseVictims(Shard* s) {
  // A batch of victims per scan of the shard (1/16 of its share), so a shard
  // at its cap pays ~16 slot visits per inserted key instead of a full scan.
  std::vector<EvictionCandidate> all;
  all.reserve(s->size);
  for (uint32_t i = 0; i < s->capacity; ++i) {
    const Slot& slot = s->slots[i];
    if (slot.row == kEmptyRow) continue;
    all.push_back({RowVersion(*s, slot.row).load(std::memory_order_relaxed),
                   RowFreq(*s, slot.row).load(std::memory_order_relaxed), slot.key, 0});
  }
  const size_t k = std::min<size_t>(all.size(), std::max<uint32_t>(1, s->cap / 16));
  const auto order = EvictionOrder(options_.cap_policy == TableOptions::CapPolicy::kLfu);
  std::partial_sort(all.begin(), all.begin() + k, all.end(), order);
  s->victims.clear();
  for (size_t i = k; i-- > 0;) {
    s->victims.push_back({all[i].key, all[i].version, all[i].freq});
  }
}

Status EmbeddingTable::MakeRoom(Shard* s) {
  if (options_.cap_policy == TableOptions::CapPolicy::kRefuse || s->cap == 0) {
    return errors::ResourceExhausted(
        "EmbeddingVariable is at its row cap (max_rows=", options_.max_rows, ", ", s->cap,
        " rows in this shard); evict keys, raise max_rows or use evict_policy lru/lfu");
  }
  const bool lfu = options_.cap_policy == TableOptions::CapPolicy::kLfu;
  while (s->size >= s->cap) {
    if (s->victims.empty()) ChooseVictims(s);
    const Shard::Victim v = s->victims.back();
    s->victims.pop_back();
    const int64_t slot = Probe(*s, v.key, Hash(v.key));
    if (slot < 0) continue;
    const uint32_t row = s->slots[slot].row;
    // Used since it was chosen: no longer the least recently (frequently) used.
    if (RowVersion(*s, row).load(std::memory_order_relaxed) != v.version) continue;
    if (lfu && RowFreq(*s, row).load(std::memory_order_relaxed) != v.freq) continue;
    s->free_rows.push_back(row);
    EraseSlot(s, slot);
    evicted_.fetch_add(1, std::memory_order_relaxed);
  }
  return Status();
}

void EmbeddingTable::EraseSlot(Shard* s, int64_t slot) {
  // Backward-shift deletion: pull later entries of the probe run into the hole
  // unless their home lies cyclically in (hole, entry].
  uint32_t hole = static_cast<uint32_t>(slot);
  uint32_t j = hole;
  for (;;) {
    if (++j == s->capacity) j = 0;
    const Slot& next = s->slots[j];
    if (next.row == kEmptyRow) break;
    const uint32_t home = Home(Hash(next.key), s->capacity);
    const bool stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
    if (stays) continue;
    s->slots[hole] = next;
    hole = j;
  }
  s->slots[hole].row = kEmptyRow;
  --s->size;
}

template <typename K>
void EmbeddingTable::GroupByShard(const K* keys, int64_t n, std::vector<int64_t>* order,
                                  std::vector<int64_t>* offsets) {
  std::vector<uint8_t> shard_of(n);
  offsets->assign(kNumShards + 1, 0);
  for (int64_t i = 0; i < n; ++i) {
    shard_of[i] = static_cast<uint8_t>(ShardOf(Hash(static_cast<int64_t>(keys[i]))));
    ++(*offsets)[shard_of[i] + 1];
  }
  for (int s = 0; s < kNumShards; ++s) (*offsets)[s + 1] += (*offsets)[s];
  std::vector<int64_t> cursor(offsets->begin(), offsets->end() - 1);
  order->resize(n);
  for (int64_t i = 0; i < n; ++i) (*order)[cursor[shard_of[i]]++] = i;
}

template <bool count, RowType kType, typename K>
void EmbeddingTable::FindBlock(const K* keys, int64_t n, float* out, int64_t step,
                               std::vector<int64_t>* missing) const {
  const size_t out_bytes = static_cast<size_t>(dim_) * sizeof(float);
  // Compressed tables keep no frequency or step: find-or-insert only inserts.
  const bool bump = count && counts_;
  // Copies a found row out (decoding a compressed one), or the default row.
  const auto copy_out = [&](const char* stored, float* dst) {
    if (stored == nullptr) {
      std::memcpy(dst, default_row_.data(), out_bytes);
    } else {
      DecodeRowAs<kType>(stored, dim_, dst);
    }
  };
  if (n < kLockAllMin) {
    for (int64_t i = 0; i < n; ++i) {
      const int64_t key = static_cast<int64_t>(keys[i]);
      const uint64_t h = Hash(key);
      const Shard& s = shards_[ShardOf(h)];
      absl::ReaderMutexLock lock(&s.mu);
      const int64_t slot = Probe(s, key, h);
      if (slot >= 0) {
        const uint32_t row = s.slots[slot].row;
        copy_out(RowData(s, row), out + i * dim_);
        if (bump) BumpHit(RowFreq(s, row), RowVersion(s, row), step);
      } else {
        copy_out(nullptr, out + i * dim_);
        if constexpr (count) missing->push_back(i);
      }
    }
    return;
  }

  // Per-thread scratch, reused: no allocation per block.
  thread_local std::vector<uint64_t> hash_buffer;
  thread_local std::vector<const char*> row_buffer;
  if (static_cast<int64_t>(hash_buffer.size()) < n) {
    hash_buffer.resize(n);
    row_buffer.resize(n);
  }
  uint64_t* hashes = hash_buffer.data();
  const char** rows = row_buffer.data();
  // find-or-insert counts a hit when the row is copied, its side arrays prefetched by then
  struct PendingHit {
    const Shard* shard;
    uint32_t row;
  };
  std::unique_ptr<PendingHit[]> pending(bump ? new PendingHit[n] : nullptr);
  const int lines =
      std::min<int>(kMaxPrefetchLines, static_cast<int>((value_bytes_ + 63) / 64) + 1);
  for (const Shard& s : shards_) s.mu.ReaderLock();
  // Three-stage software pipeline (group prefetching over the block): hash + prefetch
  // the home slot (both lines when it straddles one); kSlotDistance keys later probe it
  // and prefetch the row's lines; kRowDistance keys after that copy (decode) the row.
  for (int64_t i = 0; i < n + kSlotDistance + kRowDistance; ++i) {
    if (i < n) {
      const uint64_t h = Hash(static_cast<int64_t>(keys[i]));
      hashes[i] = h;
      const Shard& s = shards_[ShardOf(h)];
      const char* home = reinterpret_cast<const char*>(&s.slots[Home(h, s.capacity)]);
      PrefetchRead(home);
      if ((reinterpret_cast<uintptr_t>(home) & 63) > 64 - sizeof(Slot)) PrefetchRead(home + 64);
    }
    const int64_t j = i - kSlotDistance;
    if (j >= 0 && j < n) {
      const uint64_t h = hashes[j];
      const Shard& s = shards_[ShardOf(h)];
      const int64_t slot = Probe(s, static_cast<int64_t>(keys[j]), h);
      if (slot >= 0) {
        const uint32_t row = s.slots[slot].row;
        const char* values = RowData(s, row);
        rows[j] = values;
        // From the row's first line to its last (a row need not start on a line).
        const uintptr_t first = reinterpret_cast<uintptr_t>(values) & ~uintptr_t{63};
        const uintptr_t last = (reinterpret_cast<uintptr_t>(values) + value_bytes_ - 1) & ~uintptr_t{63};
        for (int l = 0; l < lines && first + 64 * l <= last; ++l) {
          PrefetchRead(reinterpret_cast<const char*>(first + 64 * l));
        }
        if (bump) {
          __builtin_prefetch(&RowFreq(s, row), 1, 3);
          __builtin_prefetch(&RowVersion(s, row), 1, 3);
          pending[j] = PendingHit{&s, row};
        }
      } else {
        rows[j] = nullptr;
        if (bump) pending[j] = PendingHit{nullptr, 0};
        if constexpr (count) missing->push_back(j);
      }
    }
    const int64_t k = j - kRowDistance;
    if (k >= 0 && k < n) {
      copy_out(rows[k], out + k * dim_);
      if (bump) {
        const PendingHit& hit = pending[k];
        if (hit.shard != nullptr) {
          BumpHit(RowFreq(*hit.shard, hit.row), RowVersion(*hit.shard, hit.row), step);
        }
      }
    }
  }
  for (int s = kNumShards - 1; s >= 0; --s) shards_[s].mu.ReaderUnlock();
}

template <bool count, typename K>
void EmbeddingTable::FindBlockOfType(const K* keys, int64_t n, float* out, int64_t step,
                                     std::vector<int64_t>* missing) const {
  switch (options_.row_type) {
    case RowType::kInt8:
      return FindBlock<count, RowType::kInt8>(keys, n, out, step, missing);
    case RowType::kFloat16:
      return FindBlock<count, RowType::kFloat16>(keys, n, out, step, missing);
    case RowType::kBFloat16:
      return FindBlock<count, RowType::kBFloat16>(keys, n, out, step, missing);
    default:
      return FindBlock<count, RowType::kFloat32>(keys, n, out, step, missing);
  }
}

int64_t EmbeddingTable::BlockSize(int64_t n, const IntraOpPool& pool) {
  return std::clamp<int64_t>(n / (4 * std::max(1, pool.num_threads)), kMinBlock, kMaxBlock);
}

template <typename K>
void EmbeddingTable::Find(const K* keys, int64_t n, float* out, const IntraOpPool& pool) const {
  absl::ReaderMutexLock delta_lock(&delta_mu_);  // a find sees a whole delta or none of it
  const int64_t block = BlockSize(n, pool);
  const int64_t blocks = (n + block - 1) / block;
  pool.For(blocks, block * (100 + dim_), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t begin = b * block;
      FindBlockOfType<false>(keys + begin, std::min(block, n - begin), out + begin * dim_, 0,
                             nullptr);
    }
  });
  if (overlay_ != nullptr) ReadOverlay(*overlay_, keys, n, out);
}

template <typename K>
void EmbeddingTable::ReadOverlay(const DeltaOverlay& overlay, const K* keys, int64_t n,
                                 float* out) const {
  const size_t row_bytes = static_cast<size_t>(dim_) * sizeof(float);
  for (int64_t i = 0; i < n; ++i) {
    const auto it = overlay.rows.find(static_cast<int64_t>(keys[i]));
    if (it == overlay.rows.end()) continue;
    const float* row = it->second < 0 ? default_row_.data()
                                      : overlay.values.data() + it->second * dim_;
    std::memcpy(out + i * dim_, row, row_bytes);
  }
}

template <typename K>
Status EmbeddingTable::ForEachShardGroup(const K* keys, int64_t n, int64_t cost_per_key,
                                         bool all_shards_locked, const IntraOpPool& pool,
                                         const ShardGroupFn& fn) {
  std::vector<int64_t> order, offsets;
  GroupByShard(keys, n, &order, &offsets);
  std::vector<Status> shard_status(kNumShards);
  // A caller holding every shard lock must not wait for pool threads: they may be
  // blocked on those very locks (a concurrent find in the intra-op pool), so then
  // the shards are processed on the calling thread.
  const IntraOpPool inline_pool;
  const IntraOpPool& workers = all_shards_locked ? inline_pool : pool;
  workers.For(kNumShards, (n / kNumShards + 1) * cost_per_key, [&](int64_t s0, int64_t s1) {
    for (int64_t sh = s0; sh < s1; ++sh) {
      const int64_t* begin = order.data() + offsets[sh];
      const int64_t* end = order.data() + offsets[sh + 1];
      Shard& s = shards_[sh];
      if (all_shards_locked) {
        shard_status[sh] = fn(&s, begin, end);
      } else if (begin != end) {
        absl::MutexLock lock(&s.mu);
        shard_status[sh] = fn(&s, begin, end);
      }
    }
  });
  for (const Status& st : shard_status) TF_RETURN_IF_ERROR(st);
  return Status();
}

template <typename K>
Status EmbeddingTable::FindOrInsert(const K* keys, int64_t n, int64_t step, float* out,
                                    const IntraOpPool& pool) {
  const int64_t block = BlockSize(n, pool);
  const int64_t blocks = (n + block - 1) / block;
  std::vector<std::vector<int64_t>> block_missing(blocks);
  pool.For(blocks, block * (100 + dim_), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t begin = b * block;
      FindBlockOfType<true>(keys + begin, std::min(block, n - begin), out + begin * dim_, step,
                            &block_missing[b]);
    }
  });
  std::vector<int64_t> positions;
  for (int64_t b = 0; b < blocks; ++b) {
    for (int64_t j : block_missing[b]) positions.push_back(b * block + j);
  }
  if (positions.empty()) return Status();
  const int64_t m = static_cast<int64_t>(positions.size());
  std::vector<int64_t> missing_keys(m);
  for (int64_t i = 0; i < m; ++i) missing_keys[i] = static_cast<int64_t>(keys[positions[i]]);

  // Without admission every missing key gets a row, so the initial rows are
  // computed before taking writer locks (a key another thread or an earlier
  // duplicate inserted meanwhile just keeps its row). With admission most misses
  // get no row: their initial row is computed under the lock, on admission.
  const bool admission = options_.min_count > 1;
  std::vector<float> init_rows;
  std::vector<char> init_stored;  // a compressed table's initial rows, encoded
  if (!admission) {
    init_rows.resize(static_cast<size_t>(m) * dim_);
    pool.For(m, 40 * dim_, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        init_.Fill(missing_keys[i], dim_, init_rows.data() + i * dim_);
      }
    });
    if (compressed()) TF_RETURN_IF_ERROR(EncodeRows(init_rows.data(), m, &init_stored));
  }

  const size_t row_bytes = static_cast<size_t>(dim_) * sizeof(float);
  const uint32_t min_count = static_cast<uint32_t>(
      std::min<int64_t>(options_.min_count, 0xffffffffLL));
  return ForEachShardGroup(
      missing_keys.data(), m, 50 + dim_, false, pool,
      [&](Shard* s, const int64_t* begin, const int64_t* end) -> Status {
        for (const int64_t* it = begin; it != end; ++it) {
          const int64_t key = missing_keys[*it];
          const uint64_t h = Hash(key);
          float* dst = out + positions[*it] * dim_;  // holds the default row
          const int64_t found = Probe(*s, key, h);
          if (found >= 0) {  // inserted since the hit pass
            const uint32_t row = s->slots[found].row;
            ReadRow(RowData(*s, row), dst);
            if (counts_) BumpHit(RowFreq(*s, row), RowVersion(*s, row), step);
            continue;
          }
          uint32_t seen = 1;
          if (admission && options_.bloom) {
            seen = s->filter.Add(key);
            if (seen < min_count) continue;  // not admitted: reads the default row
          } else if (admission) {
            seen = ++*s->pending.FindOrAdd(key);
            if (seen < min_count) continue;
            s->pending.Erase(key);
          }
          bool added;
          uint32_t row;
          TF_RETURN_IF_ERROR(FindOrAddSlot(s, key, h, &added, &row));
          char* stored = RowData(*s, row);
          if (admission) {  // float32 tables only
            init_.Fill(key, dim_, reinterpret_cast<float*>(stored));
          } else if (compressed()) {
            std::memcpy(stored, init_stored.data() + *it * value_bytes_, value_bytes_);
          } else {
            std::memcpy(stored, init_rows.data() + *it * dim_, row_bytes);
          }
          ReadRow(stored, dst);
          if (counts_) {
            RowFreq(*s, row).store(seen, std::memory_order_relaxed);
            RowVersion(*s, row).store(step, std::memory_order_relaxed);
          }
          admitted_.fetch_add(1, std::memory_order_relaxed);
        }
        return Status();
      });
}

Status EmbeddingTable::EncodeRows(const float* values, int64_t n, std::vector<char>* out) const {
  if (!compressed()) {
    const char* bytes = reinterpret_cast<const char*>(values);
    out->assign(bytes, bytes + static_cast<size_t>(n) * value_bytes_);
    return Status();
  }
  out->resize(static_cast<size_t>(n) * value_bytes_);
  for (int64_t i = 0; i < n; ++i) {
    const float* row = values + i * dim_;
    const char* why = RowEncodeError(options_.row_type, row, dim_);
    if (*why != '\0') {
      return errors::InvalidArgument("row ", i, " ", why, " (this EmbeddingVariable stores ",
                                     RowTypeName(options_.row_type),
                                     " rows); fix the row or use a float32 table");
    }
    EncodeRow(options_.row_type, row, dim_, out->data() + i * value_bytes_);
  }
  return Status();
}

template <typename K>
Status EmbeddingTable::Insert(const K* keys, int64_t n, const float* values,
                              const IntraOpPool& pool) {
  if (!compressed()) {
    return WriteRows(keys, n, reinterpret_cast<const char*>(values), /*overwrite=*/true, pool);
  }
  std::vector<char> stored;  // every row checked before any is written
  TF_RETURN_IF_ERROR(EncodeRows(values, n, &stored));
  return WriteRows(keys, n, stored.data(), /*overwrite=*/true, pool);
}

template <typename K>
Status EmbeddingTable::WriteRows(const K* keys, int64_t n, const char* rows, bool overwrite,
                                 const IntraOpPool& pool) {
  const size_t row_bytes = value_bytes_;
  return ForEachShardGroup(
      keys, n, 50 + dim_, false, pool,
      [&](Shard* s, const int64_t* begin, const int64_t* end) -> Status {
        for (const int64_t* it = begin; it != end; ++it) {
          const int64_t key = static_cast<int64_t>(keys[*it]);
          bool added;
          uint32_t row;
          TF_RETURN_IF_ERROR(FindOrAddSlot(s, key, Hash(key), &added, &row));
          // Under the shard's writer lock: without overwrite, a key inserted meanwhile keeps
          // its row.
          if (overwrite || added) std::memcpy(RowData(*s, row), rows + *it * row_bytes, row_bytes);
        }
        return Status();
      });
}

void EmbeddingTable::FindExisting(const int64_t* keys, int64_t n, float* out,
                                  std::vector<int64_t>* missing) const {
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t h = Hash(keys[i]);
    const Shard& s = shards_[ShardOf(h)];
    absl::ReaderMutexLock lock(&s.mu);
    const int64_t slot = Probe(s, keys[i], h);
    if (slot >= 0) {
      ReadRow(RowData(s, s.slots[slot].row), out + i * dim_);
    } else {
      missing->push_back(i);
    }
  }
}

Status EmbeddingTable::InsertMissing(const int64_t* keys, int64_t n, const float* values,
                                     const IntraOpPool& pool) {
  if (!compressed()) {
    return WriteRows(keys, n, reinterpret_cast<const char*>(values), /*overwrite=*/false, pool);
  }
  std::vector<char> stored;
  TF_RETURN_IF_ERROR(EncodeRows(values, n, &stored));
  return WriteRows(keys, n, stored.data(), /*overwrite=*/false, pool);
}

template <typename K>
void EmbeddingTable::Remove(const K* keys, int64_t n, const IntraOpPool& pool) {
  ForEachShardGroup(keys, n, 50, false, pool,
                    [&](Shard* s, const int64_t* begin, const int64_t* end) -> Status {
                      for (const int64_t* it = begin; it != end; ++it) {
                        EraseKey(s, static_cast<int64_t>(keys[*it]));
                      }
                      return Status();
                    })
      .IgnoreError();  // nothing in a removal can fail
}

Status EmbeddingTable::Import(const int64_t* keys, int64_t n, const float* values,
                              const int64_t* freqs, const int64_t* versions,
                              const std::vector<const float*>& slots,
                              const PendingCounts& pending, const IntraOpPool& pool) {
  if (!compressed()) {
    return ImportRows(keys, n, reinterpret_cast<const char*>(values), freqs, versions, slots,
                      pending, pool);
  }
  std::vector<char> stored;
  TF_RETURN_IF_ERROR(EncodeRows(values, n, &stored));
  return ImportRows(keys, n, stored.data(), freqs, versions, slots, pending, pool);
}

Status EmbeddingTable::ImportCompressed(const int64_t* keys, int64_t n, const void* codes,
                                        const float* scale_bias, const IntraOpPool& pool) {
  if (!compressed()) {
    return errors::InvalidArgument("compressed rows cannot be imported into a float32 "
                                   "EmbeddingVariable; use GraphoptEvImport");
  }
  const bool int8 = options_.row_type == RowType::kInt8;
  const size_t code_bytes = int8 ? dim_ : 2 * static_cast<size_t>(dim_);
  std::vector<char> stored(static_cast<size_t>(n) * value_bytes_);
  for (int64_t i = 0; i < n; ++i) {
    char* dst = stored.data() + i * value_bytes_;
    std::memcpy(dst, static_cast<const char*>(codes) + i * code_bytes, code_bytes);
    if (!int8) continue;
    const float scale = scale_bias[2 * i], bias = scale_bias[2 * i + 1];
    if (!std::isfinite(scale) || !std::isfinite(bias) || scale < 0) {
      return errors::InvalidArgument("row ", i, " has scale ", scale, " and bias ", bias,
                                     ": an int8 row's scale must be finite and >= 0, its bias "
                                     "finite; restore a checkpoint written by graphopt");
    }
    std::memcpy(dst + dim_, &scale, sizeof(float));
    std::memcpy(dst + dim_ + sizeof(float), &bias, sizeof(float));
  }
  return ImportRows(keys, n, stored.data(), nullptr, nullptr, {}, PendingCounts(), pool);
}

Status EmbeddingTable::ImportRows(const int64_t* keys, int64_t n, const char* rows,
                                  const int64_t* freqs, const int64_t* versions,
                                  const std::vector<const float*>& slots,
                                  const PendingCounts& pending, const IntraOpPool& pool) {
  if (!slots.empty() && static_cast<int>(slots.size()) != num_slots_) {
    return errors::InvalidArgument("importing ", slots.size(), " slots into a table whose ",
                                   OptimizerName(options_.optimizer), " optimizer keeps ",
                                   num_slots_);
  }
  if (options_.bloom) TF_RETURN_IF_ERROR(CheckFilterState(pending));
  const size_t row_bytes = static_cast<size_t>(dim_) * sizeof(float);
  for (Shard& s : shards_) s.mu.Lock();
  Status st = ForEachShardGroup(
      keys, n, 50 + dim_, true, pool,
      [&](Shard* s, const int64_t* begin, const int64_t* end) -> Status {
        ResetShard(s, static_cast<uint32_t>(std::min<int64_t>(end - begin, kMaxRowsPerShard)));
        for (const int64_t* it = begin; it != end; ++it) {
          const int64_t i = *it;
          bool added;
          uint32_t row;
          TF_RETURN_IF_ERROR(FindOrAddSlot(s, keys[i], Hash(keys[i]), &added, &row));
          char* stored = RowData(*s, row);
          std::memcpy(stored, rows + i * value_bytes_, value_bytes_);
          float* dst = reinterpret_cast<float*>(stored);  // slots: float32 tables only
          for (size_t j = 0; j < slots.size(); ++j) {
            std::memcpy(dst + (j + 1) * dim_, slots[j] + i * dim_, row_bytes);
          }
          if (!counts_) continue;
          const int64_t f = std::min<int64_t>(std::max<int64_t>(freqs[i], 0), 0xffffffffLL);
          RowFreq(*s, row).store(static_cast<uint32_t>(f), std::memory_order_relaxed);
          RowVersion(*s, row).store(versions[i], std::memory_order_relaxed);
        }
        return Status();
      });
  const size_t per_shard = FilterCountersPerShard();
  for (int64_t i = 1; st.ok() && options_.bloom && i < pending.n; ++i) {
    const size_t at = static_cast<size_t>(pending.keys[i]);
    shards_[at / per_shard].filter.set(at % per_shard, static_cast<uint8_t>(pending.counts[i]));
  }
  for (int64_t i = 0; st.ok() && !options_.bloom && i < pending.n; ++i) {
    const int64_t key = pending.keys[i];
    const uint64_t h = Hash(key);
    Shard& s = shards_[ShardOf(h)];
    if (Probe(s, key, h) >= 0 || pending.counts[i] <= 0) continue;  // admitted meanwhile
    *s.pending.FindOrAdd(key) =
        static_cast<uint32_t>(std::min<int64_t>(pending.counts[i], 0xffffffffLL));
  }
  for (int s = kNumShards - 1; s >= 0; --s) shards_[s].mu.Unlock();
  return st;
}

Status EmbeddingTable::Export(
    const std::function<Status(int64_t, ExportBuffers*)>& allocate) const {
  for (const Shard& s : shards_) s.mu.ReaderLock();
  int64_t offsets[kNumShards + 1];
  offsets[0] = 0;
  for (int s = 0; s < kNumShards; ++s) offsets[s + 1] = offsets[s] + shards_[s].size;
  ExportBuffers out;
  for (const Shard& s : shards_) {
    out.num_pending += static_cast<int64_t>(options_.bloom ? s.filter.NonZero() : s.pending.size());
  }
  if (options_.bloom) ++out.num_pending;  // the header
  Status st = allocate(offsets[kNumShards], &out);
  if (st.ok() && out.pending_keys != nullptr && options_.bloom) {
    out.pending_keys[0] = options_.bloom_counters;
    out.pending_counts[0] = options_.bloom_hashes;
    int64_t o = 1;
    const size_t per_shard = FilterCountersPerShard();
    for (int sh = 0; sh < kNumShards; ++sh) {
      const AdmissionFilter& f = shards_[sh].filter;
      for (size_t i = 0; i < f.size(); ++i) {
        if (f.at(i) == 0) continue;
        out.pending_keys[o] = static_cast<int64_t>(sh * per_shard + i);
        out.pending_counts[o++] = f.at(i);
      }
    }
  } else if (st.ok() && out.pending_keys != nullptr) {
    int64_t o = 0;
    for (const Shard& s : shards_) {
      s.pending.ForEach([&](int64_t key, uint32_t count) {
        out.pending_keys[o] = key;
        out.pending_counts[o++] = count;
      });
    }
  }
  if (st.ok()) {
    const size_t row_bytes = static_cast<size_t>(dim_) * sizeof(float);
    // On the calling thread: it holds every reader lock, and pool threads may be
    // blocked behind them (see ForEachShardGroup).
    IntraOpPool().For(kNumShards, (offsets[kNumShards] / kNumShards + 1) * (20 + dim_),
             [&](int64_t s0, int64_t s1) {
               for (int64_t sh = s0; sh < s1; ++sh) {
                 const Shard& s = shards_[sh];
                 int64_t o = offsets[sh];
                 for (uint32_t i = 0; i < s.capacity; ++i) {
                   const Slot& slot = s.slots[i];
                   if (slot.row == kEmptyRow) continue;
                   out.keys[o] = slot.key;
                   const char* stored = RowData(s, slot.row);
                   if (out.values != nullptr) ReadRow(stored, out.values + o * dim_);
                   if (out.codes != nullptr) {  // a compressed table's rows as stored
                     const size_t code_bytes = RowValueBytes(options_.row_type, dim_) -
                                               (out.scale_bias != nullptr ? 8 : 0);
                     std::memcpy(static_cast<char*>(out.codes) + o * code_bytes, stored,
                                 code_bytes);
                     if (out.scale_bias != nullptr) {
                       std::memcpy(out.scale_bias + 2 * o, stored + dim_, 2 * sizeof(float));
                     }
                   }
                   const float* row = reinterpret_cast<const float*>(stored);
                   for (size_t j = 0; j < out.slots.size(); ++j) {
                     std::memcpy(out.slots[j] + o * dim_, row + (j + 1) * dim_, row_bytes);
                   }
                   out.freqs[o] = counts_ ? RowFreq(s, slot.row).load(std::memory_order_relaxed)
                                          : 0;
                   out.versions[o] =
                       counts_ ? RowVersion(s, slot.row).load(std::memory_order_relaxed) : 0;
                   ++o;
                 }
               }
             });
  }
  for (int s = kNumShards - 1; s >= 0; --s) shards_[s].mu.ReaderUnlock();
  return st;
}

int64_t EmbeddingTable::SumOverShards(const std::function<int64_t(const Shard&)>& f) const {
  int64_t total = 0;
  for (const Shard& s : shards_) {
    absl::ReaderMutexLock lock(&s.mu);
    total += f(s);
  }
  return total;
}

int64_t EmbeddingTable::Size() const {
  return SumOverShards([](const Shard& s) -> int64_t { return s.size; });
}

int64_t EmbeddingTable::BytesUsed() const {
  return sizeof(*this) + default_row_.size() * sizeof(float) + arena_->Bytes() +
         SumOverShards([](const Shard& s) -> int64_t {
           return static_cast<int64_t>(s.capacity) * sizeof(Slot) +
                  static_cast<int64_t>(s.pending.bytes()) +
                  static_cast<int64_t>(s.filter.bytes()) +
                  static_cast<int64_t>(s.victims.capacity()) * sizeof(Shard::Victim) +
                  static_cast<int64_t>(s.chunks.capacity()) * sizeof(char*) +
                  static_cast<int64_t>(s.free_rows.capacity()) * sizeof(uint32_t);
         });
}

TableStats EmbeddingTable::Stats() const {
  TableStats st;
  st.size = Size();
  st.admitted = admitted_.load(std::memory_order_relaxed);
  st.evicted = evicted_.load(std::memory_order_relaxed);
  if (options_.bloom) {
    // The filter holds no keys: the standard estimate of the distinct keys it counted,
    // -(m / k) ln(1 - nonzero / m) per shard (m counters, k hashes).
    const double m = static_cast<double>(FilterCountersPerShard());
    const double k = options_.bloom_hashes;
    st.pending = SumOverShards([&](const Shard& s) -> int64_t {
      const double x = static_cast<double>(s.filter.NonZero());
      return x >= m ? static_cast<int64_t>(m) : std::llround(-m / k * std::log1p(-x / m));
    });
  } else {
    st.pending = SumOverShards([](const Shard& s) -> int64_t { return s.pending.size(); });
  }
  st.bytes_used = BytesUsed();
  return st;
}

template <typename K>
Status EmbeddingTable::Apply(const K* keys, int64_t n, const float* grads,
                             const OptimizerParams& params, const IntraOpPool& pool) {
  if (compressed()) {
    return errors::InvalidArgument("this EmbeddingVariable stores ",
                                   RowTypeName(options_.row_type),
                                   " rows, which do not train; train a float32 table and "
                                   "compress its rows for serving");
  }
  const int dim = dim_;
  return ForEachShardGroup(
      keys, n, 30 + 6 * dim_, false, pool,
      [&](Shard* s, const int64_t* begin, const int64_t* end) -> Status {
        // Sum the gradients of each row in batch order from +0.0f (what
        // unsorted_segment_sum does), then update each row once.
        const int64_t m = end - begin;
        // Row -> position in rows/sums: open addressing over a power of two >= 2m
        // (a row id is never kEmptyRow, which marks a free entry).
        size_t buckets = 16;
        while (buckets < static_cast<size_t>(2 * m)) buckets *= 2;
        std::vector<uint32_t> bucket_row(buckets, kEmptyRow), bucket_pos(buckets);
        std::vector<uint32_t> rows;
        std::vector<int64_t> ranks;  // first-occurrence rank of each row's key (batch_rsqrt)
        std::vector<float> sums;
        std::vector<uint64_t> hashes(m);
        // Two-stage pipeline as in FindBlock: hash + prefetch the home slot kSlotDistance
        // keys ahead of its probe; a found row is prefetched (for writing) while the rest
        // of the group is probed, so the updates below find it in cache.
        const int row_lines = static_cast<int>((static_cast<size_t>(stride_) * 4 + 63) / 64);
        for (int64_t j = 0; j < m + kSlotDistance; ++j) {
          if (j < m) {
            hashes[j] = Hash(static_cast<int64_t>(keys[begin[j]]));
            PrefetchRead(&s->slots[Home(hashes[j], s->capacity)]);
          }
          const int64_t i = j - kSlotDistance;
          if (i < 0) continue;
          const int64_t* it = begin + i;
          const int64_t key = static_cast<int64_t>(keys[*it]);
          const int64_t slot = Probe(*s, key, hashes[i]);
          if (slot < 0) continue;  // no row: unadmitted, evicted or never inserted
          const uint32_t row = s->slots[slot].row;
          if (params.per_occurrence) {  // keys of a shard keep their batch order here
            ApplyRow(params, dim, RowValues(*s, row), grads + *it * dim);
            continue;
          }
          const char* row_bytes = reinterpret_cast<const char*>(RowValues(*s, row));
          for (int l = 0; l < row_lines; ++l) __builtin_prefetch(row_bytes + 64 * l, 1, 3);
          size_t b = (static_cast<uint64_t>(row) * 0x9e3779b97f4a7c15ULL >> 32) & (buckets - 1);
          while (bucket_row[b] != kEmptyRow && bucket_row[b] != row) b = (b + 1) & (buckets - 1);
          if (bucket_row[b] == kEmptyRow) {
            bucket_row[b] = row;
            bucket_pos[b] = static_cast<uint32_t>(rows.size());
            rows.push_back(row);
            ranks.push_back(params.key_rank != nullptr ? params.key_rank[*it] : 0);
            sums.resize(sums.size() + dim, 0.f);
          }
          float* sum = sums.data() + static_cast<size_t>(bucket_pos[b]) * dim;
          const float* g = grads + *it * dim;
          for (int c = 0; c < dim; ++c) sum[c] += g[c];
        }
        for (size_t u = 0; u < rows.size(); ++u) {
          ApplyRow(params, dim, RowValues(*s, rows[u]), sums.data() + u * dim, ranks[u]);
        }
        return Status();
      });
}

Status EmbeddingTable::Evict(const EvictionRule& rule, std::vector<int64_t>* evicted) {
  const auto selected = [&rule](int64_t version, uint32_t freq) {
    // step - version > ttl, without overflowing for any int64 pair
    if (rule.ttl > 0 && version < rule.step &&
        static_cast<uint64_t>(rule.step) - static_cast<uint64_t>(version) >
            static_cast<uint64_t>(rule.ttl)) {
      return true;
    }
    return rule.min_freq > 0 && static_cast<int64_t>(freq) < rule.min_freq;
  };
  if (!counts_) {
    return errors::InvalidArgument("this EmbeddingVariable stores ",
                                   RowTypeName(options_.row_type),
                                   " rows and keeps no frequency or last step to evict by; "
                                   "evict on the float32 training table");
  }
  const size_t first = evicted->size();
  for (Shard& s : shards_) s.mu.Lock();
  std::vector<std::vector<int64_t>> doomed(kNumShards);
  std::vector<EvictionCandidate> kept;
  int64_t remaining = 0;
  for (int sh = 0; sh < kNumShards; ++sh) {
    const Shard& s = shards_[sh];
    for (uint32_t i = 0; i < s.capacity; ++i) {
      const Slot& slot = s.slots[i];
      if (slot.row == kEmptyRow) continue;
      const int64_t version = RowVersion(s, slot.row).load(std::memory_order_relaxed);
      const uint32_t freq = RowFreq(s, slot.row).load(std::memory_order_relaxed);
      if (selected(version, freq)) {
        doomed[sh].push_back(slot.key);
      } else if (rule.max_rows > 0) {
        kept.push_back({version, freq, slot.key, sh});
      }
      if (!selected(version, freq)) ++remaining;
    }
  }
  if (rule.max_rows > 0 && remaining > rule.max_rows) {
    const size_t k = static_cast<size_t>(remaining - rule.max_rows);
    std::nth_element(kept.begin(), kept.begin() + (k - 1), kept.end(), EvictionOrder(rule.lfu));
    for (size_t i = 0; i < k; ++i) doomed[kept[i].shard].push_back(kept[i].key);
  }
  for (int sh = 0; sh < kNumShards; ++sh) {
    Shard* s = &shards_[sh];
    for (int64_t key : doomed[sh]) {
      if (EraseKey(s, key)) evicted->push_back(key);
    }
    if (!doomed[sh].empty()) s->victims.clear();
  }
  for (int sh = kNumShards - 1; sh >= 0; --sh) shards_[sh].mu.Unlock();
  evicted_.fetch_add(static_cast<int64_t>(evicted->size() - first), std::memory_order_relaxed);
  return Status();
}

Status EmbeddingTable::ExportChanged(
    int64_t since,
    const std::function<Status(int64_t, int64_t, ChangedRows*)>& allocate) const {
  if (!counts_) {
    return errors::InvalidArgument("this EmbeddingVariable stores ",
                                   RowTypeName(options_.row_type),
                                   " rows and keeps no last step; export changes from the "
                                   "float32 training table");
  }
  for (const Shard& s : shards_) s.mu.ReaderLock();
  // Find-or-insert moves a row's last step under a reader lock, so the changed
  // rows are chosen once, here, and copied from this list: the counts given to
  // allocate stay true. Values only change under writer locks.
  struct Changed {
    const Shard* shard;
    const Slot* slot;
    int64_t version;
  };
  std::vector<Changed> changed;
  int64_t held = 0;
  for (const Shard& s : shards_) {
    held += s.size;
    for (uint32_t i = 0; i < s.capacity; ++i) {
      const Slot& slot = s.slots[i];
      if (slot.row == kEmptyRow) continue;
      const int64_t version = RowVersion(s, slot.row).load(std::memory_order_relaxed);
      if (version > since) changed.push_back({&s, &slot, version});
    }
  }
  ChangedRows out;
  Status st = allocate(static_cast<int64_t>(changed.size()), held, &out);
  if (st.ok()) {
    for (size_t c = 0; c < changed.size(); ++c) {
      out.keys[c] = changed[c].slot->key;
      ReadRow(RowData(*changed[c].shard, changed[c].slot->row), out.values + c * dim_);
      out.versions[c] = changed[c].version;
    }
    int64_t p = 0;
    for (const Shard& s : shards_) {
      for (uint32_t i = 0; i < s.capacity; ++i) {
        if (s.slots[i].row != kEmptyRow) out.present[p++] = s.slots[i].key;
      }
    }
  }
  for (int s = kNumShards - 1; s >= 0; --s) shards_[s].mu.ReaderUnlock();
  return st;
}

Status EmbeddingTable::ApplyDelta(const int64_t* keys, int64_t n, const float* values,
                                  const int64_t* removed, int64_t m, const IntraOpPool& /*pool*/) {
  absl::MutexLock apply_lock(&apply_mu_);
  // A compressed table quantizes every row first (each with its own scale), so a
  // row it cannot store rejects the whole delta before anything changes; finds read
  // the overlay's rows as they will read them from the shards.
  std::vector<char> stored;
  if (compressed()) TF_RETURN_IF_ERROR(EncodeRows(values, n, &stored));
  // Built without any table lock; removals first, so a key also upserted stays.
  auto overlay = std::make_unique<DeltaOverlay>();
  overlay->rows.reserve(n + m);
  for (int64_t i = 0; i < m; ++i) overlay->rows[removed[i]] = -1;
  for (int64_t i = 0; i < n; ++i) overlay->rows[keys[i]] = i;  // a repeated key: the last row
  if (compressed()) {
    overlay->values.resize(static_cast<size_t>(n) * dim_);
    for (int64_t i = 0; i < n; ++i) ReadRow(stored.data() + i * value_bytes_, overlay->values.data() + i * dim_);
  } else {
    overlay->values.assign(values, values + n * dim_);
  }
  {
    absl::MutexLock lock(&delta_mu_);  // waits for the finds in flight, which saw none of it
    overlay_ = std::move(overlay);
  }
  // Finds read the overlay's rows for these keys while the shards change, so the
  // merge's pace is invisible to them. It runs in chunks on the calling thread: each
  // chunk holds a shard's writer lock for a few dozen keys, the intra-op pool (where
  // requests compute) is left to requests, and the thread yields between chunks.
  const IntraOpPool caller;
  for (int64_t i = 0; i < m; i += kMergeChunk) {
    Remove(removed + i, std::min(kMergeChunk, m - i), caller);
    std::this_thread::yield();
  }
  Status st;
  for (int64_t i = 0; i < n && st.ok(); i += kMergeChunk) {
    const int64_t len = std::min(kMergeChunk, n - i);
    st = compressed()
             ? WriteRows(keys + i, len, stored.data() + i * value_bytes_, /*overwrite=*/true, caller)
             : Insert(keys + i, len, values + i * dim_, caller);
    std::this_thread::yield();
  }
  std::unique_ptr<const DeltaOverlay> merged;
  {
    absl::MutexLock lock(&delta_mu_);
    merged = std::move(overlay_);
  }
  return st;  // `merged` is freed here, outside the lock
}

size_t EmbeddingTable::FilterCountersPerShard() const {
  if (!options_.bloom) return 1;
  return static_cast<size_t>((options_.bloom_counters + kNumShards - 1) / kNumShards);
}

Status EmbeddingTable::CheckFilterState(const PendingCounts& state) const {
  if (state.n == 0) return Status();  // no saved filter: it starts empty
  if (state.keys[0] != options_.bloom_counters || state.counts[0] != options_.bloom_hashes) {
    return errors::InvalidArgument(
        "the admission filter being restored has bloom_counters=", state.keys[0],
        ", bloom_hashes=", state.counts[0], " but the table was created with ",
        options_.bloom_counters, ", ", options_.bloom_hashes,
        "; restore into a table with the same admission settings");
  }
  const int64_t total = static_cast<int64_t>(FilterCountersPerShard()) * kNumShards;
  for (int64_t i = 1; i < state.n; ++i) {
    if (state.keys[i] < 0 || state.keys[i] >= total || state.counts[i] < 1 ||
        state.counts[i] > AdmissionFilter::kMaxCount) {
      return errors::InvalidArgument("admission filter entry ", i, " (counter ", state.keys[i],
                                     ", value ", state.counts[i], ") is out of range: counters "
                                     "are in [0, ", total, "), values in [1, 255]");
    }
  }
  return Status();
}

int64_t EmbeddingTable::Capacity() const {
  return SumOverShards([](const Shard& s) -> int64_t { return s.grow_at; });
}

#define GRAPHOPT_INSTANTIATE(K)                                                          \
  template void EmbeddingTable::Find<K>(const K*, int64_t, float*, const IntraOpPool&)   \
      const;                                                                             \
  template Status EmbeddingTable::FindOrInsert<K>(const K*, int64_t, int64_t, float*,    \
                                                  const IntraOpPool&);                   \
  template Status EmbeddingTable::Insert<K>(const K*, int64_t, const float*,             \
                                            const IntraOpPool&);                         \
  template void EmbeddingTable::Remove<K>(const K*, int64_t, const IntraOpPool&);          \
  template Status EmbeddingTable::Apply<K>(const K*, int64_t, const float*,              \
                                           const OptimizerParams&, const IntraOpPool&);
GRAPHOPT_INSTANTIATE(int32_t)
GRAPHOPT_INSTANTIATE(int64_t)
#undef GRAPHOPT_INSTANTIATE

}  // namespace graphopt
