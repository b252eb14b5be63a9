// Compressed rows of a serving table (the handle op's row_dtype; docs/ops.md,
// "Compressed rows"). A row of dim floats is stored as
//  * float32:  dim floats (training tables; the only type with optimizer slots);
//  * int8:     FBGEMM's fused 8-bit row-wise layout: dim uint8 codes, then a
//              float32 scale and a float32 bias (dim + 8 bytes); value = code *
//              scale + bias with bias = the row's min and scale = (max - min) / 255,
//              so |value - original| <= scale / 2 (plus float32 rounding);
//  * float16 / bfloat16: dim 16-bit floats, rounded to nearest even.
// Every row is quantized on its own (its own scale and bias), so a row written
// later (an insert, a delta) is never clipped to an older row's range. The same
// arithmetic, in float32 step by step, is graphopt.checkpoint.compress's, so a
// checkpoint converted in Python and a row inserted here are bit-identical.
#ifndef GRAPHOPT_EMBEDDING_VARIABLE_CC_KERNELS_ROW_CODEC_H_
#define GRAPHOPT_EMBEDDING_VARIABLE_CC_KERNELS_ROW_CODEC_H_

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

#include "Eigen/Core"

namespace graphopt {

enum class RowType { kFloat32, kInt8, kFloat16, kBFloat16 };

inline bool ParseRowType(const std::string& name, RowType* type) {
  if (name == "float32") *type = RowType::kFloat32;
  else if (name == "int8") *type = RowType::kInt8;
  else if (name == "float16") *type = RowType::kFloat16;
  else if (name == "bfloat16") *type = RowType::kBFloat16;
  else return false;
  return true;
}

inline const char* RowTypeName(RowType type) {
  switch (type) {
    case RowType::kInt8: return "int8";
    case RowType::kFloat16: return "float16";
    case RowType::kBFloat16: return "bfloat16";
    default: return "float32";
  }
}

// Bytes of one stored row's value (float32: the slots come on top).
inline size_t RowValueBytes(RowType type, int dim) {
  switch (type) {
    case RowType::kInt8: return static_cast<size_t>(dim) + 2 * sizeof(float);
    case RowType::kFloat16:
    case RowType::kBFloat16: return static_cast<size_t>(dim) * 2;
    default: return static_cast<size_t>(dim) * sizeof(float);
  }
}

// Why src[0..dim) cannot be stored as `type`, or "" if it can: non-finite values
// (any compressed type) and values beyond float16's range (65504).
inline const char* RowEncodeError(RowType type, const float* src, int dim) {
  if (type == RowType::kFloat32) return "";
  for (int c = 0; c < dim; ++c) {
    if (!std::isfinite(src[c])) return "holds a NaN or Inf value, which a compressed row cannot store";
    if (type == RowType::kFloat16 && std::fabs(src[c]) > 65504.f) {
      return "holds a value beyond float16's range (|v| > 65504)";
    }
  }
  return "";
}

// Encodes a row that passed RowEncodeError.
inline void EncodeRow(RowType type, const float* src, int dim, char* dst) {
  switch (type) {
    case RowType::kInt8: {
      float lo = src[0], hi = src[0];
      for (int c = 1; c < dim; ++c) {
        lo = std::min(lo, src[c]);
        hi = std::max(hi, src[c]);
      }
      const float scale = (hi - lo) / 255.0f;
      uint8_t* codes = reinterpret_cast<uint8_t*>(dst);
      for (int c = 0; c < dim; ++c) {
        const float t = scale > 0.f ? std::nearbyint((src[c] - lo) / scale) : 0.f;
        codes[c] = static_cast<uint8_t>(std::min(255.f, std::max(0.f, t)));
      }
      std::memcpy(dst + dim, &scale, sizeof(float));
      std::memcpy(dst + dim + sizeof(float), &lo, sizeof(float));
      return;
    }
    case RowType::kFloat16: {
      Eigen::half* out = reinterpret_cast<Eigen::half*>(dst);
      for (int c = 0; c < dim; ++c) out[c] = Eigen::half(src[c]);
      return;
    }
    case RowType::kBFloat16: {
      Eigen::bfloat16* out = reinterpret_cast<Eigen::bfloat16*>(dst);
      for (int c = 0; c < dim; ++c) out[c] = Eigen::bfloat16(src[c]);
      return;
    }
    default:
      std::memcpy(dst, src, static_cast<size_t>(dim) * sizeof(float));
  }
}

// Decodes a stored row into dim floats: code * scale + bias (two roundings, as
// the stock target's Cast, Mul, AddV2 compute it), or the 16-bit value widened.
template <RowType kType>
inline void DecodeRowAs(const char* src, int dim, float* dst) {
  if constexpr (kType == RowType::kInt8) {
    float scale, bias;
    std::memcpy(&scale, src + dim, sizeof(float));
    std::memcpy(&bias, src + dim + sizeof(float), sizeof(float));
    const uint8_t* codes = reinterpret_cast<const uint8_t*>(src);
    for (int c = 0; c < dim; ++c) {
      const float scaled = static_cast<float>(codes[c]) * scale;
      dst[c] = scaled + bias;
    }
  } else if constexpr (kType == RowType::kFloat16) {
    const Eigen::half* in = reinterpret_cast<const Eigen::half*>(src);
    for (int c = 0; c < dim; ++c) dst[c] = static_cast<float>(in[c]);
  } else if constexpr (kType == RowType::kBFloat16) {
    // A bfloat16 is the top half of a float32: widening is a shift.
    const uint16_t* in = reinterpret_cast<const uint16_t*>(src);
    for (int c = 0; c < dim; ++c) {
      const uint32_t bits = static_cast<uint32_t>(in[c]) << 16;
      std::memcpy(dst + c, &bits, sizeof(float));
    }
  } else {
    std::memcpy(dst, src, static_cast<size_t>(dim) * sizeof(float));
  }
}

inline void DecodeRow(RowType type, const char* src, int dim, float* dst) {
  switch (type) {
    case RowType::kInt8: return DecodeRowAs<RowType::kInt8>(src, dim, dst);
    case RowType::kFloat16: return DecodeRowAs<RowType::kFloat16>(src, dim, dst);
    case RowType::kBFloat16: return DecodeRowAs<RowType::kBFloat16>(src, dim, dst);
    default: return DecodeRowAs<RowType::kFloat32>(src, dim, dst);
  }
}

}  // namespace graphopt

#endif  // GRAPHOPT_EMBEDDING_VARIABLE_CC_KERNELS_ROW_CODEC_H_
