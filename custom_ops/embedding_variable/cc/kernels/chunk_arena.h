// ChunkArena: where one EmbeddingTable's row chunks live.
//
// A large table's chunks are carved from 2 MiB-aligned slabs that the kernel is
// asked to back with transparent huge pages (madvise(MADV_HUGEPAGE); where THP is
// off it is a no-op and the slabs are ordinary pages). A lookup at random ids in a
// table of a few hundred MiB otherwise misses the TLB on nearly every row: with
// 4 KiB pages the second-level TLB covers a few MiB, and the page walk is a
// dependent memory access that prefetching the row cannot hide. Measured on
// 1M x 64 (docs/benchmarks.md, issue 24): fp32 find 4-13% faster, int8 2-9%, same results.
//
// A small table keeps individually allocated chunks: until the table holds
// kSlabsAfterBytes, no slab is taken, so a table never holds more than one partly
// used slab beyond what it would hold otherwise, at most 2 MiB past 16 MiB (12.5%
// at the threshold, less as the table grows). Memory a freed chunk held in a slab
// is reused by the next chunk; slabs go back to the system with the table.
#ifndef GRAPHOPT_EMBEDDING_VARIABLE_CC_KERNELS_CHUNK_ARENA_H_
#define GRAPHOPT_EMBEDDING_VARIABLE_CC_KERNELS_CHUNK_ARENA_H_

#include <sys/mman.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "absl/synchronization/mutex.h"

namespace graphopt {

class ChunkArena {
 public:
  static constexpr size_t kSlabBytes = size_t{2} << 20;  // one x86-64 huge page
  static constexpr int64_t kSlabsAfterBytes = int64_t{16} << 20;

  // chunk_bytes: a multiple of 64, the size of every chunk.
  explicit ChunkArena(size_t chunk_bytes) : chunk_bytes_(chunk_bytes) {}
  ChunkArena(const ChunkArena&) = delete;
  ChunkArena& operator=(const ChunkArena&) = delete;
  // Chunks still allocated alone are the table's to free first (Free).
  ~ChunkArena() {
    for (char* slab : slabs_) std::free(slab);
  }

  // A 64-byte aligned chunk, or nullptr when out of memory. Thread-safe (shards
  // grow concurrently, each under its own lock).
  char* Allocate() {
    absl::MutexLock lock(&mu_);
    if (!free_.empty()) {
      char* chunk = free_.back();
      free_.pop_back();
      return chunk;
    }
    // A chunk over a quarter of a slab would leave too much of it unused.
    if (alone_bytes_ < kSlabsAfterBytes || chunk_bytes_ > kSlabBytes / 4) {
      char* chunk = static_cast<char*>(std::aligned_alloc(64, chunk_bytes_));
      if (chunk != nullptr) alone_bytes_ += static_cast<int64_t>(chunk_bytes_);
      return chunk;
    }
    if (static_cast<size_t>(end_ - next_) < chunk_bytes_) {
      char* slab = static_cast<char*>(std::aligned_alloc(kSlabBytes, kSlabBytes));
      if (slab == nullptr) return nullptr;
      madvise(slab, kSlabBytes, MADV_HUGEPAGE);  // advice only: a refusal changes nothing
      slabs_.insert(std::upper_bound(slabs_.begin(), slabs_.end(), slab), slab);
      next_ = slab;
      end_ = slab + kSlabBytes;
    }
    char* chunk = next_;
    next_ += chunk_bytes_;
    return chunk;
  }

  // Returns a chunk Allocate gave. Thread-safe.
  void Free(char* chunk) {
    absl::MutexLock lock(&mu_);
    auto after = std::upper_bound(slabs_.begin(), slabs_.end(), chunk);
    if (after != slabs_.begin() && chunk < *(after - 1) + kSlabBytes) {
      free_.push_back(chunk);
      return;
    }
    std::free(chunk);
    alone_bytes_ -= static_cast<int64_t>(chunk_bytes_);
  }

  // Bytes held from the system: each chunk allocated alone, each slab whole (a
  // huge page is resident whole once touched), and the arena's own lists.
  int64_t Bytes() const {
    absl::MutexLock lock(&mu_);
    return alone_bytes_ + static_cast<int64_t>(slabs_.size() * kSlabBytes) +
           static_cast<int64_t>((slabs_.capacity() + free_.capacity()) * sizeof(char*));
  }

 private:
  mutable absl::Mutex mu_;
  const size_t chunk_bytes_;
  int64_t alone_bytes_ = 0;     // live chunks allocated alone
  std::vector<char*> slabs_;    // sorted by address, so Free finds a chunk's slab
  std::vector<char*> free_;     // freed chunks inside slabs, reused first
  char* next_ = nullptr;        // the newest slab's unused rest: [next_, end_)
  char* end_ = nullptr;
};

}  // namespace graphopt

#endif  // GRAPHOPT_EMBEDDING_VARIABLE_CC_KERNELS_CHUNK_ARENA_H_
