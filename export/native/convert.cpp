#include "convert.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <cstring>

namespace kdforge {

// Whitespace collapsed to single spaces and cut to `limit` characters: TensorRT's messages can span lines,
// and the runner reports every user mistake on one line.
std::string one_line(const std::string& text, size_t limit) {
  std::string line;
  bool space = false;
  for (const char c : text) {
    if (c == '\n' || c == '\r' || c == '\t' || c == ' ') {
      space = !line.empty();
      continue;
    }
    if (space) line += ' ';
    space = false;
    line += c;
  }
  if (line.size() > limit) line = line.substr(0, limit - 3) + "...";
  return line;
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string text = "(";
  for (size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + ")";
}

void check_sample_shape(const std::string& file, const std::vector<int64_t>& sample_shape, const HostTensor& input) {
  const bool same = input.shape.size() == sample_shape.size() + 1 &&
                    std::equal(sample_shape.begin(), sample_shape.end(), input.shape.begin() + 1);
  if (!same) {
    std::vector<int64_t> expected{-1};
    expected.insert(expected.end(), sample_shape.begin(), sample_shape.end());
    throw UserError(file + " takes input " + shape_text(expected) + " (-1: the batch), got " +
                    shape_text(input.shape));
  }
  if (static_cast<int64_t>(input.data.size()) != input.numel()) {
    throw std::runtime_error(file + ": input data does not match its shape");
  }
}

// IEEE binary32 -> binary16 bits, rounding to nearest even (as a GPU cast does); overflow gives infinity.
uint16_t float_to_half(float value) {
  uint32_t bits = 0;
  std::memcpy(&bits, &value, sizeof bits);
  const auto sign = static_cast<uint16_t>((bits >> 16) & 0x8000U);
  const uint32_t exponent = (bits >> 23) & 0xFFU;
  uint32_t mantissa = bits & 0x7FFFFFU;
  if (exponent == 0xFFU) {  // infinity, or NaN (kept quiet)
    return static_cast<uint16_t>(sign | 0x7C00U | (mantissa != 0 ? 0x200U : 0U));
  }
  const int32_t half_exponent = static_cast<int32_t>(exponent) - 127 + 15;
  if (half_exponent >= 0x1F) return static_cast<uint16_t>(sign | 0x7C00U);
  if (half_exponent <= 0) {  // a half subnormal, or zero when below half the smallest one
    if (half_exponent < -10) return sign;
    mantissa |= 0x800000U;  // the implicit leading one
    const auto shift = static_cast<uint32_t>(14 - half_exponent);
    uint32_t half_mantissa = mantissa >> shift;
    const uint32_t rest = mantissa & ((1U << shift) - 1U);
    const uint32_t halfway = 1U << (shift - 1U);
    if (rest > halfway || (rest == halfway && (half_mantissa & 1U) != 0)) ++half_mantissa;
    return static_cast<uint16_t>(sign | half_mantissa);
  }
  uint32_t half = sign | (static_cast<uint32_t>(half_exponent) << 10) | (mantissa >> 13);
  const uint32_t rest = mantissa & 0x1FFFU;
  if (rest > 0x1000U || (rest == 0x1000U && (half & 1U) != 0)) ++half;  // a carry may reach infinity: correct
  return static_cast<uint16_t>(half);
}

// binary16 bits -> float (exact: every half value is a float).
float half_to_float(uint16_t half) {
  const uint32_t sign = static_cast<uint32_t>(half & 0x8000U) << 16;
  const uint32_t exponent = (half >> 10) & 0x1FU;
  const uint32_t mantissa = half & 0x3FFU;
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24
    const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    return sign != 0 ? -magnitude : magnitude;
  }
  uint32_t bits = sign | (mantissa << 13);
  bits |= exponent == 0x1FU ? 0x7F800000U : (exponent + 112U) << 23;  // 112 = 127 - 15
  float value = 0.0F;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

}  // namespace kdforge
