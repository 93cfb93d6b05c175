#include "npy.h"

#include <cstring>
#include <fstream>
#include <sstream>

namespace kdforge {

static std::vector<int64_t> parse_shape(const std::string& header, const std::string& path) {
  const size_t key = header.find("'shape'");
  const size_t open = header.find('(', key);
  const size_t close = header.find(')', open);
  if (key == std::string::npos || open == std::string::npos || close == std::string::npos) {
    throw UserError(path + ": no shape in the .npy header");
  }
  std::vector<int64_t> shape;
  std::stringstream dims(header.substr(open + 1, close - open - 1));
  std::string item;
  while (std::getline(dims, item, ',')) {
    if (item.find_first_not_of(" ") == std::string::npos) continue;
    shape.push_back(std::stoll(item));
  }
  return shape;
}

HostTensor load_npy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UserError("cannot read " + path);
  char magic[6];
  unsigned char version[2];
  in.read(magic, 6);
  in.read(reinterpret_cast<char*>(version), 2);
  if (!in || std::memcmp(magic, "\x93NUMPY", 6) != 0) throw UserError(path + " is not a .npy file");
  uint32_t header_length = 0;
  if (version[0] == 1) {
    unsigned char bytes[2];
    in.read(reinterpret_cast<char*>(bytes), 2);
    header_length = bytes[0] | (bytes[1] << 8);
  } else {
    unsigned char bytes[4];
    in.read(reinterpret_cast<char*>(bytes), 4);
    header_length = bytes[0] | (bytes[1] << 8) | (bytes[2] << 16) | (static_cast<uint32_t>(bytes[3]) << 24);
  }
  std::string header(header_length, ' ');
  in.read(header.data(), header_length);
  if (header.find("'descr': '<f4'") == std::string::npos) {
    throw UserError(path + ": expected float32 data ('<f4'); save it with numpy as np.float32");
  }
  if (header.find("'fortran_order': False") == std::string::npos) {
    throw UserError(path + ": expected C order; save it with np.ascontiguousarray");
  }
  HostTensor tensor;
  tensor.shape = parse_shape(header, path);
  tensor.data.resize(static_cast<size_t>(tensor.numel()));
  in.read(reinterpret_cast<char*>(tensor.data.data()), static_cast<std::streamsize>(tensor.data.size() * 4));
  if (!in) throw UserError(path + " is truncated: fewer values than its shape says");
  return tensor;
}

void save_npy(const std::string& path, const HostTensor& tensor) {
  std::string shape = "(";
  for (int64_t d : tensor.shape) shape += std::to_string(d) + ", ";
  if (tensor.shape.size() > 1) shape.erase(shape.size() - 2);  // "(a, b)"; one dim keeps "(n, )"
  shape += ")";
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape + ", }";
  const size_t total = 10 + header.size() + 1;
  header += std::string((64 - total % 64) % 64, ' ') + "\n";
  std::ofstream out(path, std::ios::binary);
  if (!out) throw UserError("cannot write " + path);
  out.write("\x93NUMPY\x01\x00", 8);
  const auto length = static_cast<uint16_t>(header.size());
  const char bytes[2] = {static_cast<char>(length & 0xff), static_cast<char>(length >> 8)};
  out.write(bytes, 2);
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  out.write(reinterpret_cast<const char*>(tensor.data.data()),
            static_cast<std::streamsize>(tensor.data.size() * 4));
  if (!out) throw UserError("cannot write " + path);
}

}  // namespace kdforge
