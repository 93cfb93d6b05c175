#include "sidecar.h"

#include <fstream>
#include <sstream>

#include "backend.h"

namespace kdforge {

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UserError("cannot read " + path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::optional<std::string> read_sidecar(const std::string& artifact) {
  std::ifstream in(artifact + ".json", std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

static size_t value_start(const std::string& json, const std::string& key) {
  const std::string quoted = "\"" + key + "\"";
  size_t at = json.find(quoted);
  if (at == std::string::npos) return std::string::npos;
  at = json.find(':', at + quoted.size());
  if (at == std::string::npos) return std::string::npos;
  at = json.find_first_not_of(" \t\r\n", at + 1);
  return at;
}

std::vector<double> json_numbers(const std::string& json, const std::string& key) {
  std::vector<double> numbers;
  size_t at = value_start(json, key);
  if (at == std::string::npos || json[at] != '[') return numbers;
  int depth = 0;
  for (size_t i = at; i < json.size(); ++i) {
    const char c = json[i];
    if (c == '[') {
      ++depth;
    } else if (c == ']') {
      if (--depth == 0) break;
    } else if (c == '-' || (c >= '0' && c <= '9')) {
      size_t used = 0;
      numbers.push_back(std::stod(json.substr(i), &used));
      i += used - 1;
    }
  }
  return numbers;
}

std::optional<std::string> json_text(const std::string& json, const std::string& key) {
  size_t at = value_start(json, key);
  if (at == std::string::npos || json[at] != '"') return std::nullopt;
  std::string value;
  for (size_t i = at + 1; i < json.size() && json[i] != '"'; ++i) {
    if (json[i] == '\\' && i + 1 < json.size()) ++i;
    value += json[i];
  }
  return value;
}

}  // namespace kdforge
