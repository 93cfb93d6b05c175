// Small conversions the backends share: one-line messages, shape text, float32 <-> float16 bits.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "backend.h"

namespace kdforge {

// Whitespace collapsed to single spaces and cut to `limit` characters: runtimes' messages can span lines,
// and the runner reports every user mistake on one line.
std::string one_line(const std::string& text, size_t limit = 200);

// "(1, 3, 32, 32)".
std::string shape_text(const std::vector<int64_t>& shape);

// UserError unless `input` is (N, *sample_shape) with as many values as its shape says.
void check_sample_shape(const std::string& file, const std::vector<int64_t>& sample_shape, const HostTensor& input);

// IEEE binary32 -> binary16 bits, rounding to nearest even (as a GPU cast does); overflow gives infinity.
uint16_t float_to_half(float value);

// binary16 bits -> float (exact: every half value is a float).
float half_to_float(uint16_t half);

}  // namespace kdforge
