// kdforge-runner: time a deployed model (.pt2, .engine, .onnx) without Python, with the same method and
// the same JSON fields as kdforge's Python profiler (export/bench), so its rows drop into the same reports.
//
//   kdforge-runner --model M [--batch 1,8,64] [--warmup-ms 200] [--min-iters 50] [--min-ms 1000]
//                  [--json out.json] [--input x.npy [--dump-output y.npy]] [--threads N]
//                  [--device cpu|cuda] [--cuda-graph] [--release-memory]
//   kdforge-runner --list-backends | --version | --help
// (kUsage below is what --help prints.)
//
// By default freed memory stays in the process between runs (heap.h); --release-memory keeps the C
// library's defaults, as a Python process has them.
//
// A user mistake prints one line `kdforge-runner: error: ...` and exits 2.
#include <sys/stat.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>

#include "backend.h"
#include "convert.h"
#include "heap.h"
#include "npy.h"
#include "timing.h"

namespace kdforge {
namespace {

constexpr const char* kVersion = "0.1.0";

constexpr const char* kUsage = R"(usage: kdforge-runner --model M [options]
       kdforge-runner --list-backends | --version | --help

Time a deployed model (.pt2 AOTInductor package, .engine TensorRT engine, .onnx) without Python, with the
method and JSON fields of kdforge's Python profiler.

options:
  --model M           the model file to time (required)
  --batch 1,8,64      batch sizes to time, comma-separated (default 1,64)
  --warmup-ms MS      warm-up time before timing each batch (default 200)
  --min-iters N       at least this many timed runs per batch (default 50)
  --min-ms MS         and at least this much timed time per batch (default 1000)
  --json PATH         write the latency rows as JSON (same fields as the Python profiler)
  --input X.npy       time this batch instead of random data
  --dump-output Y.npy write the model's output for --input (to check it against Python)
  --threads N         intra-op threads (CPU backends)
  --device cpu|cuda   the device to run on (a .pt2 runs on the one it was compiled for)
  --cuda-graph        TensorRT: replay the runs as a CUDA graph
  --release-memory    give freed memory back between runs, as a Python process does
  --list-backends     print the backends compiled in
  --version           print the version
  -h, --help          print this help

A user mistake prints one line `kdforge-runner: error: ...` and exits 2.
)";

struct Options {
  BackendOptions backend;
  std::vector<int64_t> batches{1, 64};
  TimingPolicy policy;
  std::string json_path;
  std::string input_path;
  std::string dump_path;
  bool release_memory = false;
};

std::vector<std::string> compiled_backends() {
  std::vector<std::string> names;
#ifdef KDFORGE_HAS_AOTI
  names.emplace_back("aoti");
#endif
#if defined(KDFORGE_FAKE_TENSORRT_BUILD)
  names.emplace_back("tensorrt-test-double");
#elif defined(KDFORGE_HAS_TENSORRT)
  names.emplace_back("tensorrt");
#endif
#ifdef KDFORGE_HAS_ONNXRUNTIME
  names.emplace_back("onnxruntime");
#endif
  return names;
}

std::string joined(const std::vector<std::string>& items) {
  std::string text;
  for (const auto& item : items) text += (text.empty() ? "" : ", ") + item;
  return text.empty() ? "none" : text;
}

double number(const std::string& flag, const std::string& value) {
  try {
    size_t used = 0;
    const double parsed = std::stod(value, &used);
    if (used == value.size() && parsed >= 0) return parsed;
  } catch (const std::exception&) {
  }
  throw UserError(flag + ": expected a number >= 0, got '" + value + "'");
}

std::vector<int64_t> batch_list(const std::string& value) {
  std::vector<int64_t> batches;
  std::stringstream items(value);
  std::string item;
  while (std::getline(items, item, ',')) {
    const double batch = number("--batch", item);
    if (batch < 1 || batch != static_cast<double>(static_cast<int64_t>(batch))) {
      throw UserError("--batch: batch sizes are integers >= 1, got '" + item + "'");
    }
    batches.push_back(static_cast<int64_t>(batch));
  }
  if (batches.empty()) throw UserError("--batch: give a comma-separated list like 1,8,64");
  return batches;
}

Options parse(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    const auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw UserError(flag + " needs a value");
      return argv[++i];
    };
    if (flag == "--model") options.backend.model = value();
    else if (flag == "--batch") options.batches = batch_list(value());
    else if (flag == "--warmup-ms") options.policy.warmup_ms = number(flag, value());
    else if (flag == "--min-iters") options.policy.min_iterations = static_cast<int64_t>(number(flag, value()));
    else if (flag == "--min-ms") options.policy.min_duration_ms = number(flag, value());
    else if (flag == "--json") options.json_path = value();
    else if (flag == "--input") options.input_path = value();
    else if (flag == "--dump-output") options.dump_path = value();
    else if (flag == "--threads") options.backend.threads = static_cast<int>(number(flag, value()));
    else if (flag == "--device") options.backend.device = value();
    else if (flag == "--cuda-graph") options.backend.cuda_graph = true;
    else if (flag == "--release-memory") options.release_memory = true;
    else throw UserError("unknown option " + flag + " (see kdforge-runner --help)");
  }
  if (options.backend.model.empty()) throw UserError("--model is required: a .pt2, .engine or .onnx file");
  if (!options.dump_path.empty() && options.input_path.empty()) {
    throw UserError("--dump-output needs --input X.npy (the batch whose outputs to write)");
  }
  if (options.policy.min_iterations < 1) throw UserError("--min-iters must be >= 1");
  return options;
}

std::unique_ptr<Backend> open_backend(const BackendOptions& options) {
  const std::string suffix = std::filesystem::path(options.model).extension().string();
  const auto missing = [&](const std::string& what, const std::string& how) {
    return UserError("this kdforge-runner was built without " + what + " (compiled in: " +
                     joined(compiled_backends()) + "); " + how);
  };
  if (!std::filesystem::exists(options.model)) throw UserError(options.model + " not found");
  if (suffix == ".pt2") {
#ifdef KDFORGE_HAS_AOTI
    return make_aoti_backend(options);
#else
    throw missing("AOTInductor", "rebuild with a Python environment that has torch (kdforge build-native)");
#endif
  }
  if (suffix == ".engine" || suffix == ".plan") {
#ifdef KDFORGE_HAS_TENSORRT
    return make_tensorrt_backend(options);
#else
    throw missing("TensorRT", "rebuild with -DTensorRT_ROOT=<TensorRT install> on a machine with CUDA");
#endif
  }
  if (suffix == ".onnx") {
#ifdef KDFORGE_HAS_ONNXRUNTIME
    return make_onnxruntime_backend(options);
#else
    throw missing("ONNX Runtime", "rebuild with -DONNXRUNTIME_ROOT=<extracted ONNX Runtime release>");
#endif
  }
  throw UserError(options.model + ": unknown model type '" + suffix + "'; pass a .pt2, .engine or .onnx file");
}

HostTensor random_batch(int64_t batch, const std::vector<int64_t>& sample_shape) {
  HostTensor tensor;
  tensor.shape = {batch};
  tensor.shape.insert(tensor.shape.end(), sample_shape.begin(), sample_shape.end());
  tensor.data.resize(static_cast<size_t>(tensor.numel()));
  std::mt19937 generator(0);
  std::normal_distribution<float> normal(0.0F, 1.0F);
  for (float& v : tensor.data) v = normal(generator);
  return tensor;
}

std::string json_number(double value) {
  char text[64];
  std::snprintf(text, sizeof text, "%.12g", value);
  return text;
}

std::string heap_label(bool retained) { return retained ? "retained" : "system default"; }

std::string json_row(const Backend& backend, const Options& options, bool heap_retained,
                     const LatencyStats& stats) {
  std::ostringstream row;
  row << "{\"backend\": " << json_string(backend.name());
  for (const auto& [key, value] : backend.describe()) row << ", " << json_string(key) << ": " << value;
  const double size_mb = static_cast<double>(std::filesystem::file_size(options.backend.model)) / 1e6;
  row << ", \"file\": " << json_string(std::filesystem::path(options.backend.model).filename().string())
      << ", \"size_mb\": " << json_number(size_mb) << ", \"runner\": \"native\""
      << ", \"heap\": " << json_string(heap_label(heap_retained))
      << ", \"batch\": " << stats.batch << ", \"iterations\": " << stats.iterations;
  for (const auto& [key, value] : {std::pair{"p50", stats.p50}, {"p90", stats.p90}, {"p95", stats.p95},
                                   {"p99", stats.p99}, {"mean", stats.mean}, {"std", stats.std},
                                   {"cov", stats.cov}, {"throughput", stats.throughput},
                                   {"peak_rss_mb", stats.peak_rss_mb},
                                   {"page_faults_per_run", stats.page_faults_per_run}}) {
    row << ", \"" << key << "\": " << json_number(value);
  }
  row << ", \"samples_ms\": [";
  for (size_t i = 0; i < stats.samples_ms.size(); ++i) row << (i ? ", " : "") << json_number(stats.samples_ms[i]);
  row << "]}";
  return row.str();
}

void write_json(const std::string& path, const Options& options, bool heap_retained,
                const std::vector<std::string>& rows) {
  std::ostringstream out;
  out << "{\n  \"runner\": \"kdforge-runner\",\n  \"version\": " << json_string(kVersion) << ",\n"
      << "  \"config\": {\"model\": " << json_string(options.backend.model) << ", \"batches\": [";
  for (size_t i = 0; i < options.batches.size(); ++i) out << (i ? ", " : "") << options.batches[i];
  out << "], \"policy\": {\"warmup_s\": " << json_number(options.policy.warmup_ms / 1000.0)
      << ", \"min_iterations\": " << options.policy.min_iterations
      << ", \"min_duration_s\": " << json_number(options.policy.min_duration_ms / 1000.0)
      << ", \"max_iterations\": " << options.policy.max_iterations << "}, \"input\": "
      << (options.input_path.empty() ? "null" : json_string(options.input_path))
      << ", \"heap\": " << json_string(heap_label(heap_retained)) << "},\n"
      << "  \"environment\": {\"backends_compiled\": [";
  const auto names = compiled_backends();
  for (size_t i = 0; i < names.size(); ++i) out << (i ? ", " : "") << json_string(names[i]);
  out << "]},\n  \"latency\": [\n";
  for (size_t i = 0; i < rows.size(); ++i) out << "    " << rows[i] << (i + 1 < rows.size() ? ",\n" : "\n");
  out << "  ]\n}\n";
  const std::string temporary = path + ".tmp";  // written whole, then renamed: never a torn file
  {
    std::ofstream file(temporary, std::ios::binary);
    if (!(file << out.str()) || !file.flush()) throw UserError("cannot write " + path);
  }
  std::filesystem::rename(temporary, path);
}

int run(int argc, char** argv) {
  if (argc == 1) {
    std::cerr << kUsage;
    return 2;
  }
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::cout << kUsage;
      return 0;
    }
  }
  if (argc == 2 && std::string(argv[1]) == "--version") {
    std::cout << "kdforge-runner " << kVersion << "\n";
    return 0;
  }
  if (argc == 2 && std::string(argv[1]) == "--list-backends") {
    std::cout << joined(compiled_backends()) << "\n";
    return 0;
  }
  const Options options = parse(argc, argv);
  const bool heap_retained = !options.release_memory && retain_freed_memory();  // before the model loads
  auto backend = open_backend(options.backend);
  std::vector<HostTensor> inputs;
  if (!options.input_path.empty()) {
    HostTensor given = load_npy(options.input_path);
    check_sample_shape(options.backend.model, backend->sample_shape(), given);
    inputs.push_back(std::move(given));
  } else {
    for (int64_t batch : options.batches) inputs.push_back(random_batch(batch, backend->sample_shape()));
  }
  std::vector<std::string> rows;
  for (const HostTensor& input : inputs) {
    backend->stage(input);
    if (!options.dump_path.empty()) {
      backend->run();
      backend->sync();
      save_npy(options.dump_path, backend->output());
    }
    const LatencyStats stats = measure([&] { backend->run(); }, [&] { return backend->time_one_run(); },
                                       [&] { backend->sync(); }, input.shape[0], options.policy);
    std::fprintf(stderr, "%s batch %lld: p50 %.3f ms  p90 %.3f ms  p99 %.3f ms  CoV %.1f%%  (%lld runs)\n",
                 backend->name().c_str(), static_cast<long long>(stats.batch), stats.p50, stats.p90, stats.p99,
                 100.0 * stats.cov, static_cast<long long>(stats.iterations));
    rows.push_back(json_row(*backend, options, heap_retained, stats));
  }
  if (!options.json_path.empty()) write_json(options.json_path, options, heap_retained, rows);
  return 0;
}

}  // namespace

std::string json_string(const std::string& text) {
  std::string quoted = "\"";
  for (const char c : text) {
    switch (c) {
      case '"': quoted += "\\\""; break;
      case '\\': quoted += "\\\\"; break;
      case '\n': quoted += "\\n"; break;
      case '\t': quoted += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char escaped[8];
          std::snprintf(escaped, sizeof escaped, "\\u%04x", c);
          quoted += escaped;
        } else {
          quoted += c;
        }
    }
  }
  return quoted + "\"";
}

}  // namespace kdforge

int main(int argc, char** argv) {
  try {
    return kdforge::run(argc, argv);
  } catch (const kdforge::UserError& error) {
    std::cerr << "kdforge-runner: error: " << error.what() << "\n";
    return 2;
  } catch (const std::exception& error) {
    std::string text = error.what();
    std::cerr << "kdforge-runner: internal error: " << text.substr(0, text.find('\n')) << "\n";
    return 1;
  }
}
