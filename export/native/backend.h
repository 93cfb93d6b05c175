// The one interface every kdforge-runner backend implements (AOTInductor, TensorRT, ONNX Runtime).
// A backend owns its model, stages one batch of inputs where it computes (device memory for GPU
// backends), runs it, and says how to time one run. Host<->device copies happen in stage() and
// output(), never inside run(), so latency excludes them (and the JSON says so).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace kdforge {

// A user mistake (missing file, batch outside the engine's profile, engine from another TensorRT):
// main() prints "kdforge-runner: error: <what>" on one line and exits with 2.
struct UserError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Float32, C-order host tensor (the .npy files the runner reads and writes).
struct HostTensor {
  std::vector<int64_t> shape;
  std::vector<float> data;
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

struct BackendOptions {
  std::string model;     // the artifact path
  std::string device;    // "cpu" or "cuda" (AOTInductor: must match the package; TensorRT: cuda)
  int threads = 0;       // CPU intra-op threads (0: the backend's default)
  bool cuda_graph = false;  // TensorRT: capture enqueueV3 once per batch, replay it
};

class Backend {
 public:
  virtual ~Backend() = default;
  // Short name used in the JSON rows: "aoti", "tensorrt", "onnxruntime".
  virtual std::string name() const = 0;
  // (C, H, W) the model takes.
  virtual std::vector<int64_t> sample_shape() const = 0;
  // Smallest and largest batch the artifact accepts; UserError from stage() outside them.
  virtual std::pair<int64_t, int64_t> batch_range() const = 0;
  // Put `input` (shape: batch x sample_shape) where the backend computes; allocate outputs.
  virtual void stage(const HostTensor& input) = 0;
  // One inference on the staged batch; may return before the device finished (see sync()).
  virtual void run() = 0;
  // Wait until everything run() queued has finished (no-op on the CPU).
  virtual void sync() = 0;
  // Milliseconds of one run() as this backend's clock measures it: CUDA events around the work on
  // its stream for GPU backends, the host clock around run()+sync() on the CPU.
  virtual double time_one_run() = 0;
  // First output of the last run, copied to the host as float32.
  virtual HostTensor output() = 0;
  // What ran, as flat JSON fields merged into every row: device, threads, versions, precision...
  // Values are pre-rendered JSON (strings quoted by the backend via json_string()).
  virtual std::map<std::string, std::string> describe() const = 0;
};

// Every backend compiled in registers a factory; make_backend picks one by the model's suffix.
std::unique_ptr<Backend> make_aoti_backend(const BackendOptions& options);
std::unique_ptr<Backend> make_tensorrt_backend(const BackendOptions& options);
std::unique_ptr<Backend> make_onnxruntime_backend(const BackendOptions& options);

// JSON string literal for `text` (quotes and escapes).
std::string json_string(const std::string& text);

// Host-clock milliseconds of call() followed by sync() (CPU backends' time_one_run()).
template <typename Run, typename Sync>
double host_clock_ms(Run&& call, Sync&& sync);

}  // namespace kdforge

#include "host_clock.h"
