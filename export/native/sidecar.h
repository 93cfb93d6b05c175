// Reading the few fields the runner needs from a kdforge JSON sidecar (`model.pt2.json`,
// `model.engine.json`), which kdforge writes itself with json.dumps: flat keys, lists of numbers, strings.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace kdforge {

// Whole file as text; UserError naming the path when it cannot be read.
std::string read_text_file(const std::string& path);

// The sidecar next to `artifact` ("<artifact>.json") as text, or nullopt when there is none.
std::optional<std::string> read_sidecar(const std::string& artifact);

// The first `"key": [n, n, ...]` list of numbers in `json` (nested lists flattened); empty if absent.
std::vector<double> json_numbers(const std::string& json, const std::string& key);

// The first `"key": "value"` string in `json`; nullopt if absent.
std::optional<std::string> json_text(const std::string& json, const std::string& key);

}  // namespace kdforge
