// float32 .npy files (format 1.0/2.0, little-endian, C order): the runner's fixed inputs and outputs.
#pragma once

#include <string>

#include "backend.h"

namespace kdforge {

// Read a '<f4' C-order array; UserError naming the problem for anything else.
HostTensor load_npy(const std::string& path);

// Write `tensor` as a '<f4' C-order .npy (format 1.0).
void save_npy(const std::string& path, const HostTensor& tensor);

}  // namespace kdforge
