// ReferenceTable: the host reference the GPU table is checked against (ev_gpu_check.cu,
// tests/ops/test_cuda_core.py). A std::unordered_map from key to entry, one key at a time,
// with the contract of GpuEmbeddingTable spelled out as plainly as possible. It shares
// only the initializer rows and the per-column optimizer formulas (ev_gpu_common.h); those
// are checked on their own against the CPU EmbeddingVariable and TensorFlow's kernels.
#ifndef GRAPHOPT_EMBEDDING_VARIABLE_CUDA_EV_REFERENCE_TABLE_H_
#define GRAPHOPT_EMBEDDING_VARIABLE_CUDA_EV_REFERENCE_TABLE_H_

#include <algorithm>
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "embedding_variable/cuda/ev_gpu_common.h"

namespace graphopt {
namespace gpu {

class ReferenceTable {
 public:
  struct Entry {
    std::vector<float> row;  // [value | slot_0 | slot_1]
    uint64_t freq = 0;
    int64_t version = 0;
  };

  ReferenceTable(int dim, Optimizer optimizer, const float slot_init[2], RowInitializer init,
                 std::vector<float> default_row)
      : dim_(dim), num_slots_(NumSlots(optimizer)), init_(init),
        default_row_(std::move(default_row)) {
    slot_init_[0] = slot_init[0];
    slot_init_[1] = slot_init[1];
    default_row_.resize(dim, 0.f);
  }

  int dim() const { return dim_; }
  int stride() const { return dim_ * (1 + num_slots_); }
  int64_t size() const { return static_cast<int64_t>(entries_.size()); }
  const std::unordered_map<int64_t, Entry>& entries() const { return entries_; }

  void Find(const int64_t* keys, int64_t n, float* out) const {
    for (int64_t i = 0; i < n; ++i) {
      auto it = entries_.find(keys[i]);
      const float* src = it == entries_.end() ? default_row_.data() : it->second.row.data();
      std::copy(src, src + dim_, out + i * dim_);
    }
  }

  void FindOrInsert(const int64_t* keys, int64_t n, int64_t step, float* out) {
    for (int64_t i = 0; i < n; ++i) {
      Entry& e = Locate(keys[i], true, step);
      e.freq += 1;
      e.version = std::max(e.version, step);
      std::copy(e.row.begin(), e.row.begin() + dim_, out + i * dim_);
    }
  }

  // The last row of a repeated key wins.
  void Insert(const int64_t* keys, int64_t n, const float* values) {
    for (int64_t i = 0; i < n; ++i) {
      Entry& e = Locate(keys[i], false, 0);
      std::copy(values + i * dim_, values + (i + 1) * dim_, e.row.begin());
    }
  }

  // Sets a key's whole entry [value | slots] (a test's starting point).
  void Put(int64_t key, const float* row) {
    Entry& e = Locate(key, false, 0);
    std::copy(row, row + stride(), e.row.begin());
  }

  void Remove(const int64_t* keys, int64_t n) {
    for (int64_t i = 0; i < n; ++i) entries_.erase(keys[i]);
  }

  // Gradients of a repeated key are summed in batch order, then applied once; keys
  // without an entry are skipped.
  void Apply(const OptimizerParams& p, const int64_t* keys, int64_t n, const float* grads) {
    std::vector<int64_t> order;
    std::unordered_map<int64_t, std::vector<float>> sums;
    for (int64_t i = 0; i < n; ++i) {
      auto it = sums.find(keys[i]);
      if (it == sums.end()) {
        order.push_back(keys[i]);
        sums.emplace(keys[i], std::vector<float>(grads + i * dim_, grads + (i + 1) * dim_));
      } else {
        for (int c = 0; c < dim_; ++c) it->second[c] += grads[i * dim_ + c];
      }
    }
    for (int64_t key : order) {
      auto it = entries_.find(key);
      if (it == entries_.end()) continue;
      Entry& e = it->second;
      const std::vector<float>& g = sums[key];
      for (int c = 0; c < dim_; ++c) {
        float var = e.row[c];
        float s0 = num_slots_ > 0 ? e.row[dim_ + c] : 0.f;
        float s1 = num_slots_ > 1 ? e.row[2 * dim_ + c] : 0.f;
        ApplyColumn(p, g[c], &var, &s0, &s1);
        e.row[c] = var;
        if (num_slots_ > 0) e.row[dim_ + c] = s0;
        if (num_slots_ > 1) e.row[2 * dim_ + c] = s1;
      }
    }
  }

 private:
  Entry& Locate(int64_t key, bool fill_value, int64_t step) {
    auto it = entries_.find(key);
    if (it != entries_.end()) return it->second;
    Entry e;
    e.row.assign(stride(), 0.f);
    if (fill_value) init_.Fill(key, dim_, e.row.data());
    for (int s = 0; s < num_slots_; ++s) {
      std::fill(e.row.begin() + (s + 1) * dim_, e.row.begin() + (s + 2) * dim_, slot_init_[s]);
    }
    e.version = step;
    return entries_.emplace(key, std::move(e)).first->second;
  }

  const int dim_;
  const int num_slots_;
  float slot_init_[2];
  const RowInitializer init_;
  std::vector<float> default_row_;
  std::unordered_map<int64_t, Entry> entries_;
};

}  // namespace gpu
}  // namespace graphopt

#endif  // GRAPHOPT_EMBEDDING_VARIABLE_CUDA_EV_REFERENCE_TABLE_H_
