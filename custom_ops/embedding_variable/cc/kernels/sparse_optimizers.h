// The per-row arithmetic of the sparse optimizers, shared by the CPU table and
// (through plain float code, no TensorFlow types) a device implementation.
//
// Each formula is TensorFlow's CPU kernel for the same optimizer written out per
// element in the same order of operations (training_ops.cc: ApplyGradientDescent,
// SparseApplyAdagradV2, ApplyAdam, SparseApplyFtrl with inner_dim > 1), so a row
// updated here is bit-identical to TF's on the same float inputs when no fused
// multiply-add is contracted (the library is built without -mfma).
//
// Row layout (the contract with the CUDA table core): one contiguous float32
// block [value(dim) | slot_0(dim) | slot_1(dim) | ...], stride dim * (1 + slots).
#ifndef GRAPHOPT_EMBEDDING_VARIABLE_CC_KERNELS_SPARSE_OPTIMIZERS_H_
#define GRAPHOPT_EMBEDDING_VARIABLE_CC_KERNELS_SPARSE_OPTIMIZERS_H_

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#if defined(__SSE__)
#include <xmmintrin.h>
#endif

namespace graphopt {

enum class OptimizerKind { kNone, kSgd, kAdagrad, kAdam, kFtrl };

// Slot names in row order; the checkpoint stores slot j as "<key>-slot-<name j>".
inline std::vector<std::string> SlotNames(OptimizerKind kind) {
  switch (kind) {
    case OptimizerKind::kAdagrad: return {"accumulator"};
    case OptimizerKind::kAdam: return {"m", "v"};
    case OptimizerKind::kFtrl: return {"accumulator", "linear"};
    default: return {};
  }
}

// Initial slot values when the handle op's slot_init is empty: TF's defaults
// (Adagrad and FTRL initial_accumulator_value 0.1; Adam's moments 0).
inline std::vector<float> DefaultSlotInit(OptimizerKind kind) {
  switch (kind) {
    case OptimizerKind::kAdagrad: return {0.1f};
    case OptimizerKind::kAdam: return {0.f, 0.f};
    case OptimizerKind::kFtrl: return {0.1f, 0.f};
    default: return {};
  }
}

inline bool ParseOptimizer(const std::string& name, OptimizerKind* kind) {
  if (name.empty()) *kind = OptimizerKind::kNone;
  else if (name == "sgd") *kind = OptimizerKind::kSgd;
  else if (name == "adagrad") *kind = OptimizerKind::kAdagrad;
  else if (name == "adam") *kind = OptimizerKind::kAdam;
  else if (name == "ftrl") *kind = OptimizerKind::kFtrl;
  else return false;
  return true;
}

inline const char* OptimizerName(OptimizerKind kind) {
  switch (kind) {
    case OptimizerKind::kSgd: return "sgd";
    case OptimizerKind::kAdagrad: return "adagrad";
    case OptimizerKind::kAdam: return "adam";
    case OptimizerKind::kFtrl: return "ftrl";
    default: return "none";
  }
}

// Hyperparameters of one apply op, read from its scalar inputs.
struct OptimizerParams {
  OptimizerKind kind = OptimizerKind::kSgd;
  float lr = 0.f;
  float epsilon = 0.f;                    // adagrad, adam
  float beta1 = 0.f, beta2 = 0.f;         // adam
  float beta1_power = 0.f, beta2_power = 0.f;
  float l1 = 0.f, l2 = 0.f, lr_power = -0.5f;  // ftrl
  // sgd: each occurrence of a key updates its row in batch order, unsummed, as v1
  // GradientDescentOptimizer's ScatterSub/ResourceScatterAdd does (attr sum_duplicates=false).
  bool per_occurrence = false;
  // adagrad: v1 ResourceSparseApplyAdagrad's arithmetic (no epsilon; attr rsqrt=true).
  bool rsqrt = false;
  // adagrad: Keras' Adagrad, row -= lr * g / sqrt(accum + epsilon) (attr epsilon_inside_sqrt).
  bool epsilon_inside_sqrt = false;
  // adagrad, attr batch_rsqrt: Keras' Adagrad as a compiled TensorFlow function computes it,
  // row -= (lr * g) * rsqrt(accum + epsilon) with Grappler's x / sqrt(y) -> x * rsqrt(y), over
  // the batch's [unique keys, dim] gradient: element (r, c) of the key of first-occurrence rank r
  // takes Eigen's packet rsqrt when r * dim + c < packet_limit (the first floor(U * dim / 8) * 8
  // elements), the scalar 1 / sqrt after. key_rank[i]: the rank of the key at input position i.
  const int64_t* key_rank = nullptr;
  int64_t packet_limit = 0;
};

// 1/sqrt(x) as Eigen's packet prsqrt computes it in TensorFlow's x86 wheel (AVX, Packet8f, no
// FMA): the rsqrtps estimate refined by one Newton step, h = (x*y)*y - 1; y' = (y*-0.5)*h + y
// (generic_rsqrt_newton_step), the estimate itself where that step gives NaN (x 0 or inf).
// rsqrtss is the same estimate as each lane of vrsqrtps on the CPU that runs both.
inline float EigenPacketRsqrt(float x) {
#if defined(__SSE__)
  const float y = _mm_cvtss_f32(_mm_rsqrt_ss(_mm_set_ss(x)));
  const float r2 = x * y, half_y = y * -0.5f;
  const float h = r2 * y - 1.f;
  const float refined = half_y * h + y;
  return std::isnan(refined) ? y : refined;
#else
  return 1.f / std::sqrt(x);
#endif
}

// v1 Adagrad, var -= lr * g * rsqrt(accum), bit for bit as TF's SparseApplyAdagrad (CPU,
// has_epsilon false): a row of dim 1 divides, lr * g / sqrt(accum); a longer one is an Eigen
// chip expression whose first dim / 8 * 8 elements take packet rsqrt (8 float lanes, AVX) and
// whose tail takes the scalar rsqrt, 1 / sqrt(accum).
inline void AdagradRsqrtRow(float lr, int dim, float* var, float* accum, const float* g) {
  constexpr int kPacket = 8;
  for (int c = 0; c < dim; ++c) accum[c] += g[c] * g[c];
  if (dim == 1) {
    var[0] -= lr * g[0] / std::sqrt(accum[0]);
    return;
  }
  const int packed = dim / kPacket * kPacket;
  for (int c = 0; c < packed; ++c) var[c] -= lr * g[c] * EigenPacketRsqrt(accum[c]);
  for (int c = packed; c < dim; ++c) var[c] -= lr * g[c] * (1.f / std::sqrt(accum[c]));
}

// Keras' Adagrad in a compiled function (OptimizerParams::key_rank), the row of rank ``rank``.
inline void AdagradBatchRsqrtRow(const OptimizerParams& p, int64_t rank, int dim, float* var,
                                 float* accum, const float* g) {
  for (int c = 0; c < dim; ++c) {
    accum[c] += g[c] * g[c];
    const float x = accum[c] + p.epsilon;
    const float r = rank * dim + c < p.packet_limit ? EigenPacketRsqrt(x) : 1.f / std::sqrt(x);
    var[c] -= p.lr * g[c] * r;
  }
}

// Updates one row (value followed by its slots) with the summed gradient g; ``rank``: the key's
// first-occurrence rank in the batch (read only by Adagrad's batch_rsqrt form).
// Lazy Adam: only rows in the batch reach here, so absent rows' m and v stay put.
inline void ApplyRow(const OptimizerParams& p, int dim, float* row, const float* g,
                     int64_t rank = 0) {
  float* var = row;
  switch (p.kind) {
    case OptimizerKind::kNone:
    case OptimizerKind::kSgd:
      for (int c = 0; c < dim; ++c) var[c] -= g[c] * p.lr;
      return;
    case OptimizerKind::kAdagrad: {
      float* accum = row + dim;
      if (p.rsqrt) return AdagradRsqrtRow(p.lr, dim, var, accum, g);
      if (p.key_rank != nullptr) return AdagradBatchRsqrtRow(p, rank, dim, var, accum, g);
      if (p.epsilon_inside_sqrt) {
        for (int c = 0; c < dim; ++c) {
          accum[c] += g[c] * g[c];
          var[c] -= p.lr * g[c] / std::sqrt(accum[c] + p.epsilon);
        }
        return;
      }
      for (int c = 0; c < dim; ++c) {
        accum[c] += g[c] * g[c];
        var[c] -= p.lr * g[c] / (std::sqrt(accum[c]) + p.epsilon);
      }
      return;
    }
    case OptimizerKind::kAdam: {
      float* m = row + dim;
      float* v = row + 2 * dim;
      const float alpha = p.lr * std::sqrt(1.f - p.beta2_power) / (1.f - p.beta1_power);
      const float one_minus_beta1 = 1.f - p.beta1, one_minus_beta2 = 1.f - p.beta2;
      for (int c = 0; c < dim; ++c) {
        m[c] += (g[c] - m[c]) * one_minus_beta1;
        v[c] += (g[c] * g[c] - v[c]) * one_minus_beta2;
        var[c] -= (m[c] * alpha) / (std::sqrt(v[c]) + p.epsilon);
      }
      return;
    }
    case OptimizerKind::kFtrl: {
      float* accum = row + dim;
      float* linear = row + 2 * dim;
      const float two_l2 = 2.f * p.l2;
      const bool sqrt_power = p.lr_power == -0.5f;
      for (int c = 0; c < dim; ++c) {
        const float new_accum = accum[c] + g[c] * g[c];
        const float new_scale =
            sqrt_power ? std::sqrt(new_accum) : std::pow(new_accum, -p.lr_power);
        const float old_scale =
            sqrt_power ? std::sqrt(accum[c]) : std::pow(accum[c], -p.lr_power);
        linear[c] += g[c] - (new_scale - old_scale) / p.lr * var[c];
        const float clipped = std::max(std::min(linear[c], p.l1), -p.l1);
        const float x = clipped - linear[c];
        const float y = new_scale / p.lr + two_l2;
        var[c] = x / y;
        accum[c] += g[c] * g[c];
      }
      return;
    }
  }
}

}  // namespace graphopt

#endif  // GRAPHOPT_EMBEDDING_VARIABLE_CC_KERNELS_SPARSE_OPTIMIZERS_H_
