// What the GPU table shares with the host: key hashing, the bucket probing sequence, the
// entry layout and the per-element optimizer updates. Plain C++ with __host__ __device__
// (via GRAPHOPT_HOST_DEVICE), so the device kernels, the host reference table and the host
// tests compile one implementation. No CUDA runtime and no TensorFlow in here.
#ifndef GRAPHOPT_EMBEDDING_VARIABLE_CUDA_EV_GPU_COMMON_H_
#define GRAPHOPT_EMBEDDING_VARIABLE_CUDA_EV_GPU_COMMON_H_

#include <cmath>
#include <cstdint>

#include "embedding_variable/cc/kernels/key_hash.h"
#include "embedding_variable/cc/kernels/row_initializer.h"

namespace graphopt {
namespace gpu {

// Slots per bucket: one bucket of int64 keys is 128 bytes, one L2 line, probed by a tile
// of as many threads in one coalesced load.
constexpr int kBucketSize = 16;
// The widest row the kernels take (values only; slots come on top). TFRA's GPU tables
// stop at 200; rows here are copied by a 16-lane tile in float4 steps, so the bound is
// the size of the workspace rows in Apply, not the copy.
constexpr int kMaxDim = 1024;

// Two key values mark slots (empty, removed) in the index; a table still holds these keys,
// in two side entries after the buckets, so every int64 key is an ordinary key.
constexpr int64_t kEmptyKey = INT64_MAX;
constexpr int64_t kTombstoneKey = INT64_MAX - 1;

// HashKey (cc/kernels/key_hash.h) is the CPU table's hash too.

// Home bucket: the high 64 bits of h * num_buckets (uniform over [0, num_buckets), no
// modulo). The CPU table maps the low 32 bits inside a shard; the GPU table has one
// index, so it takes all 64.
GRAPHOPT_HOST_DEVICE inline uint64_t HomeBucket(uint64_t h, uint64_t num_buckets) {
#ifdef __CUDA_ARCH__
  return __umul64hi(h, num_buckets);
#else
  return static_cast<uint64_t>((static_cast<unsigned __int128>(h) * num_buckets) >> 64);
#endif
}

// Bucket of the attempt-th probe: linear over buckets. A new key takes the first empty
// slot along this sequence and removals leave tombstones, so a find may stop at the
// first bucket that has an empty slot.
GRAPHOPT_HOST_DEVICE inline uint64_t ProbeBucket(uint64_t home, uint64_t attempt,
                                                 uint64_t num_buckets) {
  const uint64_t b = home + attempt;
  return b < num_buckets ? b : b % num_buckets;
}

enum class Optimizer : int { kNone = 0, kSgd = 1, kAdagrad = 2, kAdam = 3, kFtrl = 4 };

// Slots per entry; an entry is [value(dim) | slot_0(dim) | slot_1(dim)] float32.
// adagrad [accumulator], adam [m, v], ftrl [accumulator, linear], sgd/none: no slots.
GRAPHOPT_HOST_DEVICE inline int NumSlots(Optimizer o) {
  switch (o) {
    case Optimizer::kAdagrad: return 1;
    case Optimizer::kAdam: return 2;
    case Optimizer::kFtrl: return 2;
    default: return 0;
  }
}

// Hyperparameters of one apply (the CPU kernels' OptimizerParams, sparse_optimizers.h).
struct OptimizerParams {
  Optimizer kind = Optimizer::kSgd;
  float lr = 0.01f;
  float epsilon = 1e-7f;                    // adagrad (V2), adam
  float beta1 = 0.9f, beta2 = 0.999f;       // adam
  float beta1_power = 0.9f, beta2_power = 0.999f;  // adam: beta^t at step t
  float l1 = 0.f, l2 = 0.f, l2_shrinkage = 0.f, lr_power = -0.5f;  // ftrl
  bool epsilon_inside_sqrt = false;  // adagrad: Keras' var -= lr * g / sqrt(accum + epsilon)
};

// One column of one entry; g is the gradient summed over the key's duplicates. The
// expressions and their evaluation order are those of TensorFlow's CPU kernels
// (training_ops.cc) and of the CPU table's ApplyRow (cc/kernels/sparse_optimizers.h), so
// with FMA contraction off (nvcc --fmad=false) a row is bit-identical on host and device
// wherever only + - * / sqrt are involved (ftrl with lr_power != -0.5 takes pow):
//   sgd      var -= g * lr                                                 (ScatterSub)
//   adagrad  accum += g * g;  var -= lr * g / (sqrt(accum) + epsilon)    (SparseApplyAdagradV2)
//            epsilon_inside_sqrt: var -= lr * g / sqrt(accum + epsilon)        (Keras' Adagrad)
//   adam     m += (g - m) * (1 - b1);  v += (g * g - v) * (1 - b2);
//            var -= m * alpha / (sqrt(v) + epsilon),
//            alpha = lr * sqrt(1 - b2^t) / (1 - b1^t)          (ApplyAdam on the batch's rows)
//   ftrl     SparseApplyFtrl (l2_shrinkage > 0: SparseApplyFtrlV2), docs/cuda.md.
GRAPHOPT_HOST_DEVICE inline void ApplyColumn(const OptimizerParams& p, float g, float* var,
                                             float* s0, float* s1) {
  switch (p.kind) {
    case Optimizer::kSgd:
      *var -= g * p.lr;
      return;
    case Optimizer::kAdagrad:
      *s0 += g * g;
      *var -= p.epsilon_inside_sqrt ? p.lr * g / std::sqrt(*s0 + p.epsilon)
                                    : p.lr * g / (std::sqrt(*s0) + p.epsilon);
      return;
    case Optimizer::kAdam: {
      const float alpha = p.lr * std::sqrt(1.f - p.beta2_power) / (1.f - p.beta1_power);
      *s0 += (g - *s0) * (1.f - p.beta1);
      *s1 += (g * g - *s1) * (1.f - p.beta2);
      *var -= (*s0 * alpha) / (std::sqrt(*s1) + p.epsilon);
      return;
    }
    case Optimizer::kFtrl: {
      const float accum = *s0, v = *var;
      // V2's shrinkage enters the linear term only; without it, g as such (no 0 * var)
      const float gs = p.l2_shrinkage != 0.f ? g + 2.f * p.l2_shrinkage * v : g;
      const float new_accum = accum + g * g;
      float new_pow, old_pow;
      if (p.lr_power == -0.5f) {
        new_pow = std::sqrt(new_accum);
        old_pow = std::sqrt(accum);
      } else {
        new_pow = std::pow(new_accum, -p.lr_power);
        old_pow = std::pow(accum, -p.lr_power);
      }
      const float linear = *s1 + (gs - (new_pow - old_pow) / p.lr * v);
      const float clamped = fmaxf(fminf(linear, p.l1), -p.l1);
      const float x = clamped - linear;
      const float y = new_pow / p.lr + 2.f * p.l2;
      *var = x / y;
      *s0 = new_accum;
      *s1 = linear;
      return;
    }
    default:
      return;
  }
}

}  // namespace gpu
}  // namespace graphopt

#endif  // GRAPHOPT_EMBEDDING_VARIABLE_CUDA_EV_GPU_COMMON_H_
