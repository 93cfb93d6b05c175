// The test doubles behind NvInfer.h and cuda_runtime_api.h in this folder: enough of TensorRT's runtime and
// of CUDA to run kdforge-runner's TensorRT backend on the host, with TensorRT's documented behaviour where the
// backend depends on it (deserialization fails and logs an error for another version's engine, input shapes
// outside the optimization profile are refused, output shapes follow the input shape, enqueueV3 during stream
// capture is recorded into the graph instead of running).
//
// An "engine" is a text file:
//   kdforge-fake-tensorrt-engine
//   version 10.3.0.26                     the TensorRT that "built" it
//   input images float32 -1 3 16 16        name, float32|float16|int32, dims (-1: dynamic batch)
//   profile 1 8                            optimization profile 0: smallest and largest batch
//   output logits float32 10               name, type, dims after the batch (one line per output)
// Every output computes out[n, k] = (k + 1) * sum(input[n]), in float32, stored in the output's type.
//
// Environment: KDFORGE_FAKE_TENSORRT_VERSION (the "library" version, default 10.3.0.26),
// KDFORGE_FAKE_CUDA_DEVICES (how many "GPUs", default 1), and KDFORGE_FAKE_TENSORRT_REPORT: when set, the
// process prints "fake-tensorrt: E executions, G graph launches" on stderr as it exits.
#include <NvInfer.h>
#include <cuda_runtime_api.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

// ---------------------------------------------------------------------------------------------------------
// CUDA

struct CUstream_st {
  bool capturing = false;
  std::vector<std::function<void()>> captured;
};
struct CUevent_st {
  std::chrono::steady_clock::time_point when{};
};
struct CUgraph_st {
  std::vector<std::function<void()>> work;
};
struct CUgraphExec_st {
  std::vector<std::function<void()>> work;
};

namespace {

int device_count() {
  const char* text = std::getenv("KDFORGE_FAKE_CUDA_DEVICES");
  return text != nullptr ? std::atoi(text) : 1;
}

int current_device = 0;
cudaError_t last_error = cudaSuccess;
int64_t executions = 0;      // network computations actually run (not merely captured)
int64_t graph_launches = 0;  // cudaGraphLaunch calls

struct ExitReport {
  ~ExitReport() {
    if (std::getenv("KDFORGE_FAKE_TENSORRT_REPORT") == nullptr) return;
    std::fprintf(stderr, "fake-tensorrt: %lld executions, %lld graph launches\n",
                 static_cast<long long>(executions), static_cast<long long>(graph_launches));
  }
} exit_report;

cudaError_t fail(cudaError_t error) {
  last_error = error;
  return error;
}

// Runs `work` now, or records it when `stream` is capturing a graph.
void submit(cudaStream_t stream, std::function<void()> work) {
  if (stream != nullptr && stream->capturing) {
    stream->captured.push_back(std::move(work));
  } else {
    work();
  }
}

}  // namespace

const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
    default: return "invalid argument";
  }
}

cudaError_t cudaGetLastError() {
  const cudaError_t error = last_error;
  last_error = cudaSuccess;
  return error;
}

cudaError_t cudaGetDeviceCount(int* count) {
  *count = device_count();
  return *count > 0 ? cudaSuccess : fail(cudaErrorNoDevice);
}

cudaError_t cudaGetDevice(int* device) {
  *device = current_device;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
  if (device < 0 || device >= device_count()) return fail(cudaErrorInvalidValue);
  current_device = device;
  return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* properties, int device) {
  std::snprintf(properties->name, sizeof properties->name, "Fake GPU %d", device);
  properties->major = 8;
  properties->minor = 7;
  return cudaSuccess;
}

cudaError_t cudaMalloc(void** pointer, size_t bytes) {
  *pointer = std::aligned_alloc(256, (bytes + 255) / 256 * 256);
  return *pointer != nullptr ? cudaSuccess : fail(cudaErrorInvalidValue);
}

cudaError_t cudaFree(void* pointer) {
  std::free(pointer);
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* target, const void* source, size_t bytes, cudaMemcpyKind, cudaStream_t stream) {
  submit(stream, [=] { std::memcpy(target, source, bytes); });
  return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int) {
  *stream = new CUstream_st;
  return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  delete stream;
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  return stream != nullptr && stream->capturing ? fail(cudaErrorStreamCaptureInvalidated) : cudaSuccess;
}

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode) {
  stream->capturing = true;
  stream->captured.clear();
  return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph) {
  stream->capturing = false;
  *graph = new CUgraph_st{std::move(stream->captured)};
  stream->captured.clear();
  return cudaSuccess;
}

cudaError_t cudaGraphInstantiateWithFlags(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long) {
  *exec = new CUgraphExec_st{graph->work};
  return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
  ++graph_launches;
  for (const auto& work : exec->work) submit(stream, work);
  return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  delete graph;
  return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  delete exec;
  return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t* event) {
  *event = new CUevent_st;
  return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t event) {
  delete event;
  return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  submit(stream, [event] { event->when = std::chrono::steady_clock::now(); });
  return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }

cudaError_t cudaEventElapsedTime(float* milliseconds, cudaEvent_t start, cudaEvent_t end) {
  *milliseconds = std::chrono::duration<float, std::milli>(end->when - start->when).count();
  return cudaSuccess;
}

// ---------------------------------------------------------------------------------------------------------
// TensorRT

namespace {

using nvinfer1::DataType;
using nvinfer1::Dims;

int32_t version_part(int index) {
  const char* text = std::getenv("KDFORGE_FAKE_TENSORRT_VERSION");
  std::stringstream parts(text != nullptr ? text : "10.3.0.26");
  std::string part;
  for (int i = 0; std::getline(parts, part, '.'); ++i) {
    if (i == index) return std::atoi(part.c_str());
  }
  return 0;
}

std::string library_version() {
  return std::to_string(version_part(0)) + "." + std::to_string(version_part(1)) + "." +
         std::to_string(version_part(2)) + "." + std::to_string(version_part(3));
}

struct Tensor {
  std::string name;
  DataType type = DataType::kFLOAT;
  std::vector<int64_t> dims;  // inputs: with the batch (-1: dynamic); outputs: after the batch
};

struct EngineSpec {
  Tensor input;
  std::vector<Tensor> outputs;
  int64_t min_batch = 1;
  int64_t max_batch = 1;
};

Dims to_dims(const std::vector<int64_t>& values) {
  Dims dims{};
  dims.nbDims = static_cast<int32_t>(values.size());
  for (size_t i = 0; i < values.size(); ++i) dims.d[i] = values[i];
  return dims;
}

float load(const void* data, DataType type, size_t index) {
  if (type == DataType::kHALF) return static_cast<float>(static_cast<const _Float16*>(data)[index]);
  return static_cast<const float*>(data)[index];
}

void store(void* data, DataType type, size_t index, float value) {
  if (type == DataType::kHALF) {
    static_cast<_Float16*>(data)[index] = static_cast<_Float16>(value);
  } else {
    static_cast<float*>(data)[index] = value;
  }
}

class FakeEngine;

class FakeContext final : public nvinfer1::IExecutionContext {
 public:
  FakeContext(const EngineSpec& spec, nvinfer1::ILogger& logger) : spec_(spec), logger_(logger) {}

  bool set_input_shape(const char* name, const Dims& dims) {
    if (spec_.input.name != name || dims.nbDims != static_cast<int32_t>(spec_.input.dims.size())) return false;
    if (dims.d[0] < spec_.min_batch || dims.d[0] > spec_.max_batch) {
      error("IExecutionContext::setInputShape: Error Code 3: API Usage Error (batch outside profile 0)");
      return false;
    }
    batch_ = dims.d[0];
    return true;
  }

  Dims shape(const char* name) const {
    if (spec_.input.name == name) {
      std::vector<int64_t> dims = spec_.input.dims;
      dims[0] = batch_ > 0 ? batch_ : dims[0];
      return to_dims(dims);
    }
    for (const Tensor& output : spec_.outputs) {
      if (output.name != name) continue;
      std::vector<int64_t> dims{batch_ > 0 ? batch_ : -1};
      dims.insert(dims.end(), output.dims.begin(), output.dims.end());
      return to_dims(dims);
    }
    return Dims{-1, {}};
  }

  bool set_address(const char* name, void* data) {
    addresses_[name] = data;
    return true;
  }

  bool enqueue(cudaStream_t stream) {
    if (batch_ < 1) {
      error("IExecutionContext::enqueueV3: Error Code 3: input shape not specified");
      return false;
    }
    for (const Tensor* tensor : all_tensors()) {
      if (addresses_.count(tensor->name) == 0) {
        error("IExecutionContext::enqueueV3: Error Code 3: address of " + tensor->name + " not set");
        return false;
      }
    }
    // Captured work reads the addresses and batch as they are now, as a CUDA graph would.
    submit(stream, [spec = spec_, batch = batch_, addresses = addresses_] { compute(spec, batch, addresses); });
    return true;
  }

 private:
  static void compute(const EngineSpec& spec, int64_t batch, std::map<std::string, void*> addresses) {
    ++executions;
    size_t sample = 1;
    for (size_t i = 1; i < spec.input.dims.size(); ++i) sample *= static_cast<size_t>(spec.input.dims[i]);
    for (int64_t n = 0; n < batch; ++n) {
      float total = 0.0F;
      for (size_t i = 0; i < sample; ++i) {
        total += load(addresses[spec.input.name], spec.input.type, static_cast<size_t>(n) * sample + i);
      }
      for (const Tensor& output : spec.outputs) {
        size_t per = 1;
        for (int64_t d : output.dims) per *= static_cast<size_t>(d);
        for (size_t k = 0; k < per; ++k) {
          store(addresses[output.name], output.type, static_cast<size_t>(n) * per + k,
                static_cast<float>(k + 1) * total);
        }
      }
    }
  }

  std::vector<const Tensor*> all_tensors() const {
    std::vector<const Tensor*> tensors{&spec_.input};
    for (const Tensor& output : spec_.outputs) tensors.push_back(&output);
    return tensors;
  }

  void error(const std::string& text) { logger_.log(nvinfer1::ILogger::Severity::kERROR, text.c_str()); }

  EngineSpec spec_;
  nvinfer1::ILogger& logger_;
  int64_t batch_ = -1;
  std::map<std::string, void*> addresses_;
};

class FakeEngine final : public nvinfer1::ICudaEngine {
 public:
  FakeEngine(EngineSpec spec, nvinfer1::ILogger& logger) : spec_(std::move(spec)), logger_(logger) {}

  const Tensor* find(const char* name) const {
    if (spec_.input.name == name) return &spec_.input;
    for (const Tensor& output : spec_.outputs) {
      if (output.name == name) return &output;
    }
    return nullptr;
  }

  const EngineSpec& spec() const { return spec_; }
  nvinfer1::ILogger& logger() const { return logger_; }

 private:
  EngineSpec spec_;
  nvinfer1::ILogger& logger_;
};

class FakeRuntime final : public nvinfer1::IRuntime {
 public:
  explicit FakeRuntime(nvinfer1::ILogger& logger) : logger_(logger) {}
  nvinfer1::ILogger& logger() const { return logger_; }

 private:
  nvinfer1::ILogger& logger_;
};

DataType parse_type(const std::string& text) {
  if (text == "float16") return DataType::kHALF;
  if (text == "int32") return DataType::kINT32;
  return DataType::kFLOAT;
}

// nullptr (and an error through the logger) for anything that is not a fake engine of this version.
FakeEngine* parse_engine(const std::string& text, nvinfer1::ILogger& logger) {
  const auto reject = [&](const std::string& why) -> FakeEngine* {
    logger.log(nvinfer1::ILogger::Severity::kERROR, ("IRuntime::deserializeCudaEngine: " + why).c_str());
    return nullptr;
  };
  std::stringstream lines(text);
  std::string line;
  if (!std::getline(lines, line) || line != "kdforge-fake-tensorrt-engine") {
    return reject("Error Code 1: Serialization (Serialization assertion magicTagRead == kMAGIC_TAG failed.)");
  }
  EngineSpec spec;
  bool has_input = false;
  while (std::getline(lines, line)) {
    std::stringstream words(line);
    std::string key;
    words >> key;
    if (key == "version") {
      std::string built;
      words >> built;
      if (built != library_version()) {
        return reject("Error Code 6: API Usage Error (The engine plan file is not compatible with this version "
                      "of TensorRT, expecting library version " + library_version() + " got " + built +
                      ", please rebuild.)");
      }
    } else if (key == "input" || key == "output") {
      Tensor tensor;
      std::string type;
      words >> tensor.name >> type;
      tensor.type = parse_type(type);
      for (int64_t d = 0; words >> d;) tensor.dims.push_back(d);
      if (key == "input") {
        spec.input = tensor;
        has_input = true;
      } else {
        spec.outputs.push_back(tensor);
      }
    } else if (key == "profile") {
      words >> spec.min_batch >> spec.max_batch;
    }
  }
  if (!has_input || spec.outputs.empty()) return reject("Error Code 1: Serialization (truncated engine)");
  return new FakeEngine(spec, logger);
}

const FakeEngine& fake(const nvinfer1::ICudaEngine* engine) { return *static_cast<const FakeEngine*>(engine); }
FakeContext& fake(nvinfer1::IExecutionContext* context) { return *static_cast<FakeContext*>(context); }
const FakeContext& fake(const nvinfer1::IExecutionContext* context) {
  return *static_cast<const FakeContext*>(context);
}

}  // namespace

extern "C" int32_t getInferLibMajorVersion() noexcept { return version_part(0); }
extern "C" int32_t getInferLibMinorVersion() noexcept { return version_part(1); }
extern "C" int32_t getInferLibPatchVersion() noexcept { return version_part(2); }
extern "C" int32_t getInferLibBuildVersion() noexcept { return version_part(3); }

namespace nvinfer1 {

IRuntime* createInferRuntime(ILogger& logger) noexcept { return new FakeRuntime(logger); }

ICudaEngine* IRuntime::deserializeCudaEngine(void const* blob, std::size_t size) noexcept {
  return parse_engine(std::string(static_cast<const char*>(blob), size), static_cast<FakeRuntime*>(this)->logger());
}

Dims ICudaEngine::getTensorShape(char const* name) const noexcept {
  const Tensor* tensor = fake(this).find(name);
  if (tensor == nullptr) return Dims{-1, {}};
  if (tensor == &fake(this).spec().input) return to_dims(tensor->dims);
  std::vector<int64_t> dims{-1};
  dims.insert(dims.end(), tensor->dims.begin(), tensor->dims.end());
  return to_dims(dims);
}

DataType ICudaEngine::getTensorDataType(char const* name) const noexcept {
  const Tensor* tensor = fake(this).find(name);
  return tensor != nullptr ? tensor->type : DataType::kFLOAT;
}

IExecutionContext* ICudaEngine::createExecutionContext(ExecutionContextAllocationStrategy) noexcept {
  return new FakeContext(fake(this).spec(), fake(this).logger());
}

TensorIOMode ICudaEngine::getTensorIOMode(char const* name) const noexcept {
  const Tensor* tensor = fake(this).find(name);
  if (tensor == nullptr) return TensorIOMode::kNONE;
  return tensor == &fake(this).spec().input ? TensorIOMode::kINPUT : TensorIOMode::kOUTPUT;
}

int32_t ICudaEngine::getNbOptimizationProfiles() const noexcept { return 1; }

Dims ICudaEngine::getProfileShape(char const* name, int32_t, OptProfileSelector select) const noexcept {
  const EngineSpec& spec = fake(this).spec();
  if (spec.input.name != name) return Dims{-1, {}};
  std::vector<int64_t> dims = spec.input.dims;
  dims[0] = select == OptProfileSelector::kMIN ? spec.min_batch : spec.max_batch;
  return to_dims(dims);
}

int32_t ICudaEngine::getNbIOTensors() const noexcept {
  return 1 + static_cast<int32_t>(fake(this).spec().outputs.size());
}

char const* ICudaEngine::getIOTensorName(int32_t index) const noexcept {
  const EngineSpec& spec = fake(this).spec();
  return index == 0 ? spec.input.name.c_str() : spec.outputs.at(static_cast<size_t>(index - 1)).name.c_str();
}

bool IExecutionContext::setInputShape(char const* name, Dims const& dims) noexcept {
  return fake(this).set_input_shape(name, dims);
}

Dims IExecutionContext::getTensorShape(char const* name) const noexcept { return fake(this).shape(name); }

bool IExecutionContext::setTensorAddress(char const* name, void* data) noexcept {
  return fake(this).set_address(name, data);
}

bool IExecutionContext::enqueueV3(cudaStream_t stream) noexcept { return fake(this).enqueue(stream); }

}  // namespace nvinfer1
