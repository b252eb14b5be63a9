// CounterMap: int64 key -> uint32 count, the admission counters of one shard.
//
// A small open-addressing map (linear probing, backward-shift deletion, grows 2x
// at load 3/4) instead of absl::flat_hash_map: absl's Swiss tables change their
// layout under AddressSanitizer while their out-of-line parts live, built without
// it, in libtensorflow_framework, so an ASan build of this library must not use
// them. A slot is empty when its count is 0 (stored counts are >= 1), so every
// int64 is an ordinary key. Not thread-safe: the shard's writer lock guards it.
#ifndef GRAPHOPT_EMBEDDING_VARIABLE_CC_KERNELS_COUNTER_MAP_H_
#define GRAPHOPT_EMBEDDING_VARIABLE_CC_KERNELS_COUNTER_MAP_H_

#include <cstddef>
#include <cstdint>
#include <vector>

namespace graphopt {

class CounterMap {
 public:
  // The count of key, inserting it with count 0 (the caller then counts it).
  uint32_t* FindOrAdd(int64_t key) {
    if ((size_ + 1) * 4 > entries_.size() * 3) Grow();
    size_t i = Home(key);
    for (;; i = Next(i)) {
      Entry& e = entries_[i];
      if (e.count == 0) break;
      if (e.key == key) return &e.count;
    }
    // Not present: the caller stores a count >= 1 before the next call.
    entries_[i].key = key;
    ++size_;
    return &entries_[i].count;
  }

  void Erase(int64_t key) {
    if (size_ == 0) return;
    size_t hole = Home(key);
    for (;; hole = Next(hole)) {
      if (entries_[hole].count == 0) return;
      if (entries_[hole].key == key) break;
    }
    // Backward shift: pull later entries of the run into the hole unless their
    // home lies cyclically in (hole, entry].
    for (size_t j = Next(hole);; j = Next(j)) {
      const Entry& next = entries_[j];
      if (next.count == 0) break;
      const size_t home = Home(next.key);
      const bool stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
      if (stays) continue;
      entries_[hole] = next;
      hole = j;
    }
    entries_[hole].count = 0;
    --size_;
  }

  template <typename F>
  void ForEach(F&& fn) const {
    for (const Entry& e : entries_) {
      if (e.count != 0) fn(e.key, e.count);
    }
  }

  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  size_t bytes() const { return entries_.capacity() * sizeof(Entry); }
  void Clear() {
    std::vector<Entry>().swap(entries_);
    size_ = 0;
  }

 private:
  struct Entry {
    int64_t key = 0;
    uint32_t count = 0;
  };

  size_t Home(int64_t key) const {
    uint64_t h = static_cast<uint64_t>(key) * 0x9e3779b97f4a7c15ULL;
    return static_cast<size_t>(h >> 32) & (entries_.size() - 1);
  }
  size_t Next(size_t i) const { return (i + 1) & (entries_.size() - 1); }

  void Grow() {
    std::vector<Entry> old;
    old.swap(entries_);
    entries_.assign(old.empty() ? 16 : old.size() * 2, Entry());
    for (const Entry& e : old) {
      if (e.count == 0) continue;
      size_t i = Home(e.key);
      while (entries_[i].count != 0) i = Next(i);
      entries_[i] = e;
    }
  }

  std::vector<Entry> entries_;
  size_t size_ = 0;
};

}  // namespace graphopt

#endif  // GRAPHOPT_EMBEDDING_VARIABLE_CC_KERNELS_COUNTER_MAP_H_
