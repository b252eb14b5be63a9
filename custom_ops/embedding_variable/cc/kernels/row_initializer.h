// Deterministic initial rows for keys inserted by find-or-insert.
//
// A row is a pure function of (seed, key, column): a counter-based generator
// (splitmix64 over a per-key base) instead of a stateful RNG, so a key gets the
// same initial row whatever the batch order, thread or shard that inserts it.
#ifndef GRAPHOPT_EMBEDDING_VARIABLE_CC_KERNELS_ROW_INITIALIZER_H_
#define GRAPHOPT_EMBEDDING_VARIABLE_CC_KERNELS_ROW_INITIALIZER_H_

#include <cmath>
#include <cstdint>
#include <string>

// The CUDA table (custom_ops/embedding_variable/cuda/) compiles these same functions for
// the device (host_device.h), so a key gets the same initial row on CPU and GPU.
#include "embedding_variable/cc/kernels/host_device.h"

namespace graphopt {

GRAPHOPT_HOST_DEVICE inline uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

struct RowInitializer {
  enum class Kind { kZeros, kConstant, kUniform, kNormal, kTruncatedNormal };

  Kind kind = Kind::kUniform;
  // kConstant: value; kUniform: [minval, maxval); kNormal / kTruncatedNormal:
  // mean, stddev (truncated at two standard deviations, like TF's).
  float value = 0.f, minval = -0.05f, maxval = 0.05f, mean = 0.f, stddev = 1.f;
  int64_t seed = 0;

  // Parses the handle op's `initializer` attr; false for an unknown name.
  static bool ParseKind(const std::string& name, Kind* kind) {
    if (name == "zeros") *kind = Kind::kZeros;
    else if (name == "constant") *kind = Kind::kConstant;
    else if (name == "uniform") *kind = Kind::kUniform;
    else if (name == "normal") *kind = Kind::kNormal;
    else if (name == "truncated_normal") *kind = Kind::kTruncatedNormal;
    else return false;
    return true;
  }

  GRAPHOPT_HOST_DEVICE void Fill(int64_t key, int dim, float* row) const {
    switch (kind) {
      case Kind::kZeros:
        for (int c = 0; c < dim; ++c) row[c] = 0.f;
        return;
      case Kind::kConstant:
        for (int c = 0; c < dim; ++c) row[c] = value;
        return;
      default:
        break;
    }
    const uint64_t base = SplitMix64(SplitMix64(static_cast<uint64_t>(seed)) ^
                                     static_cast<uint64_t>(key));
    for (int c = 0; c < dim; ++c) {
      if (kind == Kind::kUniform) {
        row[c] = static_cast<float>(minval + (maxval - minval) * Unit(base, c, 0));
      } else {
        row[c] = static_cast<float>(mean + stddev * Gaussian(base, c));
      }
    }
  }

 private:
  static constexpr int kMaxDraws = 32;

  // Uniform in (0, 1]: never 0, so log() in Box-Muller is finite.
  GRAPHOPT_HOST_DEVICE static double Unit(uint64_t base, int column, int draw) {
    const uint64_t counter =
        static_cast<uint64_t>(column) * (2 * kMaxDraws) + static_cast<uint64_t>(draw);
    const uint64_t bits = SplitMix64(base + counter * 0xd1b54a32d192ed03ULL);
    return static_cast<double>((bits >> 11) + 1) * (1.0 / 9007199254740992.0);
  }

  GRAPHOPT_HOST_DEVICE double Gaussian(uint64_t base, int column) const {
    for (int attempt = 0; attempt < kMaxDraws; ++attempt) {
      const double u1 = Unit(base, column, 2 * attempt);
      const double u2 = Unit(base, column, 2 * attempt + 1);
      const double z = std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
      if (kind != Kind::kTruncatedNormal || std::fabs(z) <= 2.0) return z;
    }
    return 0.0;  // 32 rejections in a row: probability ~1e-43
  }
};

}  // namespace graphopt

#endif  // GRAPHOPT_EMBEDDING_VARIABLE_CC_KERNELS_ROW_INITIALIZER_H_
