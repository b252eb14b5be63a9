// AdmissionFilter: a counting Bloom filter of one shard, the bounded-memory alternative
// to CounterMap for admission (admission='bloom', as DeepRec's CBF filter).
//
// `counters` saturating 8-bit counters, allocated up front, `hashes` positions per key
// (double hashing of a second murmur3 finalizer, independent of the shard and index
// bits). Add uses the conservative update: the key's estimate is the minimum of its
// counters, and only counters below estimate + 1 are raised to it, which keeps the
// overestimate of keys sharing counters small. A key's estimate is never below its true
// count (no false negatives: a key seen min_count times is admitted); a key whose
// counters were all raised by others is admitted early (false positive). Nothing is
// removed on admission: an admitted key is found in the index before the filter is
// consulted. Not thread-safe: the shard's writer lock guards it.
#ifndef GRAPHOPT_EMBEDDING_VARIABLE_CC_KERNELS_ADMISSION_FILTER_H_
#define GRAPHOPT_EMBEDDING_VARIABLE_CC_KERNELS_ADMISSION_FILTER_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace graphopt {

class AdmissionFilter {
 public:
  static constexpr int kMaxHashes = 16;
  static constexpr uint32_t kMaxCount = 255;

  void Allocate(size_t counters, int hashes) {
    counters_.assign(counters, 0);
    hashes_ = hashes;
  }
  void Reset() { std::fill(counters_.begin(), counters_.end(), 0); }

  // Counts one occurrence of key; returns its estimated count (saturates at 255).
  uint32_t Add(int64_t key) {
    size_t at[kMaxHashes];
    Positions(key, at);
    uint32_t estimate = kMaxCount;
    for (int i = 0; i < hashes_; ++i) estimate = std::min<uint32_t>(estimate, counters_[at[i]]);
    if (estimate < kMaxCount) ++estimate;
    for (int i = 0; i < hashes_; ++i) {
      if (counters_[at[i]] < estimate) counters_[at[i]] = static_cast<uint8_t>(estimate);
    }
    return estimate;
  }

  size_t size() const { return counters_.size(); }
  size_t bytes() const { return counters_.capacity(); }
  uint8_t at(size_t i) const { return counters_[i]; }
  void set(size_t i, uint8_t value) { counters_[i] = value; }
  size_t NonZero() const {
    return counters_.size() - static_cast<size_t>(std::count(counters_.begin(), counters_.end(), 0));
  }

 private:
  void Positions(int64_t key, size_t* at) const {
    uint64_t h = static_cast<uint64_t>(key) ^ 0x9e3779b97f4a7c15ULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    const uint32_t h1 = static_cast<uint32_t>(h);
    const uint32_t h2 = static_cast<uint32_t>(h >> 32) | 1u;
    const uint64_t m = counters_.size();
    for (int i = 0; i < hashes_; ++i) {
      const uint32_t g = h1 + static_cast<uint32_t>(i) * h2;  // wraps mod 2^32 by design
      at[i] = static_cast<size_t>((static_cast<uint64_t>(g) * m) >> 32);
    }
  }

  std::vector<uint8_t> counters_;
  int hashes_ = 0;
};

}  // namespace graphopt

#endif  // GRAPHOPT_EMBEDDING_VARIABLE_CC_KERNELS_ADMISSION_FILTER_H_
