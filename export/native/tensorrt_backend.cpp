// TensorRT backend: a serialized engine (`.engine` / `.plan`, built by `kdforge deploy --backends tensorrt`)
// deserialized with the TensorRT C++ runtime (10.x and 11.x) and run with enqueueV3 on its own CUDA stream,
// optionally replayed from a CUDA graph. Inputs and outputs live in device buffers this object owns; the
// host<->device copies happen in stage() and output(), so CUDA events around run() time the network alone.
//
// Enum members are always named (DataType::kHALF, never 1), so the same source builds against 10.x and 11.x.
#include <NvInfer.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "backend.h"
#include "convert.h"
#include "sidecar.h"

namespace kdforge {
namespace {

using nvinfer1::DataType;

constexpr const char* kRebuild = "rebuild it with `kdforge deploy CHECKPOINT --backends tensorrt`";

// ---------------------------------------------------------------------------------------------------------
// CUDA error handling and RAII handles

// A failed CUDA call is a bug or a broken device, not a user mistake: std::runtime_error with CUDA's words.
void check_cuda(cudaError_t status, const char* call) {
  if (status != cudaSuccess) {
    throw std::runtime_error(std::string(call) + " failed: " + cudaGetErrorString(status));
  }
}
#define KDFORGE_CUDA(call) check_cuda((call), #call)

// Deleters never throw: they run in destructors, where an error can only be ignored.
struct StreamDeleter {
  void operator()(cudaStream_t stream) const noexcept { cudaStreamDestroy(stream); }
};
struct EventDeleter {
  void operator()(cudaEvent_t event) const noexcept { cudaEventDestroy(event); }
};
struct GraphDeleter {
  void operator()(cudaGraph_t graph) const noexcept { cudaGraphDestroy(graph); }
};
struct GraphExecDeleter {
  void operator()(cudaGraphExec_t exec) const noexcept { cudaGraphExecDestroy(exec); }
};
struct DeviceFree {
  void operator()(void* memory) const noexcept { cudaFree(memory); }
};

using Stream = std::unique_ptr<std::remove_pointer_t<cudaStream_t>, StreamDeleter>;
using Event = std::unique_ptr<std::remove_pointer_t<cudaEvent_t>, EventDeleter>;
using Graph = std::unique_ptr<std::remove_pointer_t<cudaGraph_t>, GraphDeleter>;
using GraphExec = std::unique_ptr<std::remove_pointer_t<cudaGraphExec_t>, GraphExecDeleter>;
using DeviceBuffer = std::unique_ptr<void, DeviceFree>;

DeviceBuffer device_alloc(size_t bytes) {
  void* memory = nullptr;
  // cudaMalloc aligns to at least 256 bytes, which setTensorAddress requires; 1 byte keeps a valid pointer
  // for an (unusual) empty tensor.
  KDFORGE_CUDA(cudaMalloc(&memory, bytes > 0 ? bytes : 1));
  return DeviceBuffer(memory);
}

Event make_event() {
  cudaEvent_t event = nullptr;
  KDFORGE_CUDA(cudaEventCreate(&event));  // default flags: timing enabled
  return Event(event);
}

// ---------------------------------------------------------------------------------------------------------
// Text helpers

// ---------------------------------------------------------------------------------------------------------
// TensorRT logger

// TensorRT prints its errors through this logger; by default they are kept (the last one is appended to our
// own one-line message) rather than printed, so a user sees one line. KDFORGE_RUNNER_VERBOSE=1 prints them
// too. TensorRT may call log() from several threads, hence the mutex.
class QuietLogger final : public nvinfer1::ILogger {
 public:
  QuietLogger() : verbose_(std::getenv("KDFORGE_RUNNER_VERBOSE") != nullptr) {}

  void log(Severity severity, nvinfer1::AsciiChar const* message) noexcept override {
    if (severity != Severity::kINTERNAL_ERROR && severity != Severity::kERROR) return;
    const char* text = message != nullptr ? message : "";
    if (verbose_) std::fprintf(stderr, "[TensorRT] %s\n", text);
    try {
      const std::lock_guard<std::mutex> lock(mutex_);
      last_error_ = text;
    } catch (...) {  // log() must not throw; losing one message is harmless
    }
  }

  // The last error TensorRT reported, shortened, as " [TensorRT: ...]" (empty when there was none).
  std::string suffix() const {
    const std::lock_guard<std::mutex> lock(mutex_);
    return last_error_.empty() ? std::string() : " [TensorRT: " + one_line(last_error_) + "]";
  }

 private:
  const bool verbose_;
  mutable std::mutex mutex_;
  std::string last_error_;
};

// ---------------------------------------------------------------------------------------------------------
// Data types and float16

const char* type_name(DataType type) {
  switch (type) {
    case DataType::kFLOAT: return "float32";
    case DataType::kHALF: return "float16";
    case DataType::kBF16: return "bfloat16";
    case DataType::kINT8: return "int8";
    case DataType::kUINT8: return "uint8";
    case DataType::kINT32: return "int32";
    case DataType::kINT64: return "int64";
    case DataType::kBOOL: return "bool";
    case DataType::kFP8: return "fp8";
    default: return "a type kdforge-runner does not know";
  }
}

// Bytes of `count` elements of `type`; nullopt for packed sub-byte types the runner never allocates.
std::optional<size_t> byte_size(DataType type, int64_t count) {
  const auto n = static_cast<size_t>(count);
  switch (type) {
    case DataType::kFLOAT:
    case DataType::kINT32: return 4 * n;
    case DataType::kHALF:
    case DataType::kBF16: return 2 * n;
    case DataType::kINT8:
    case DataType::kUINT8:
    case DataType::kBOOL:
    case DataType::kFP8: return n;
    case DataType::kINT64: return 8 * n;
    default: return std::nullopt;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Device and version facts

std::string tensorrt_version() {
  // The library actually loaded, which may differ from the headers this file was compiled with.
  return std::to_string(getInferLibMajorVersion()) + "." + std::to_string(getInferLibMinorVersion()) + "." +
         std::to_string(getInferLibPatchVersion()) + "." + std::to_string(getInferLibBuildVersion());
}

// The CUDA device `device` names: "" / "cuda" (the current device) or "cuda:N". Anything else, including
// "cpu", is a user mistake: an engine only runs on the GPU it was built for.
int select_device(const std::string& device, const std::string& file) {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess || count == 0) {
    throw UserError(file + " needs a CUDA GPU and none is visible here (" +
                    (status != cudaSuccess ? std::string(cudaGetErrorString(status)) : "no devices") + ")");
  }
  if (device.empty() || device == "cuda") {
    int current = 0;
    KDFORGE_CUDA(cudaGetDevice(&current));
    return current;
  }
  if (device.rfind("cuda:", 0) == 0) {
    try {
      size_t used = 0;
      const int index = std::stoi(device.substr(5), &used);
      if (used == device.size() - 5 && index >= 0 && index < count) {
        KDFORGE_CUDA(cudaSetDevice(index));
        return index;
      }
    } catch (const std::logic_error&) {  // not a number: reported below
    }
    throw UserError("--device " + device + ": this machine has CUDA devices 0-" + std::to_string(count - 1));
  }
  throw UserError(file + " is a TensorRT engine and runs on a CUDA GPU; use --device cuda (or cuda:N), not " +
                  "--device " + device);
}

// ---------------------------------------------------------------------------------------------------------
// The backend

class TensorRTBackend final : public Backend {
 public:
  explicit TensorRTBackend(const BackendOptions& options)
      : options_(options), file_(std::filesystem::path(options.model).filename().string()) {
    if (!std::filesystem::is_regular_file(options.model)) {
      throw UserError(options.model + " not found; build it with `kdforge deploy CHECKPOINT --backends " +
                      "tensorrt`");
    }
    sidecar_ = read_sidecar(options.model);
    load_device_facts();
    deserialize();
    find_io_tensors();
    read_input_shape();
    context_.reset(engine_->createExecutionContext());
    if (!context_) {
      throw UserError("TensorRT could not create an execution context for " + file_ +
                      " (out of GPU memory?)" + logger_.suffix());
    }
    cudaStream_t stream = nullptr;
    KDFORGE_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    stream_.reset(stream);
    start_ = make_event();
    stop_ = make_event();
  }

  ~TensorRTBackend() override {
    // Queued work may still read or write the buffers freed below; errors cannot be reported from here.
    if (stream_) cudaStreamSynchronize(stream_.get());
  }

  TensorRTBackend(const TensorRTBackend&) = delete;
  TensorRTBackend& operator=(const TensorRTBackend&) = delete;

  std::string name() const override { return "tensorrt"; }
  std::vector<int64_t> sample_shape() const override { return sample_shape_; }
  std::pair<int64_t, int64_t> batch_range() const override { return batch_range_; }

  void stage(const HostTensor& input) override {
    check_input(input);
    release_staged();
    set_input_shape(input.shape);
    input_buffer_ = upload_input(input);
    bind_outputs();
    KDFORGE_CUDA(cudaStreamSynchronize(stream_.get()));  // the input is on the device before any timing
    if (options_.cuda_graph) capture_graph();
    staged_ = true;
  }

  void run() override {
    if (!staged_) throw std::runtime_error("TensorRT backend: run() before stage()");
    if (graph_exec_) {
      KDFORGE_CUDA(cudaGraphLaunch(graph_exec_.get(), stream_.get()));
    } else {
      enqueue();
    }
  }

  void sync() override { KDFORGE_CUDA(cudaStreamSynchronize(stream_.get())); }

  // CUDA events recorded on the engine's stream around the work, as trtexec and the Python profiler do.
  double time_one_run() override {
    KDFORGE_CUDA(cudaEventRecord(start_.get(), stream_.get()));
    run();
    KDFORGE_CUDA(cudaEventRecord(stop_.get(), stream_.get()));
    KDFORGE_CUDA(cudaEventSynchronize(stop_.get()));
    float milliseconds = 0.0F;
    KDFORGE_CUDA(cudaEventElapsedTime(&milliseconds, start_.get(), stop_.get()));
    return static_cast<double>(milliseconds);
  }

  HostTensor output() override {
    if (!staged_) throw std::runtime_error("TensorRT backend: output() before stage()");
    const OutputBinding& first = outputs_.front();
    std::vector<unsigned char> bytes(first.bytes);
    // On the engine's stream, so the copy waits for the last run().
    KDFORGE_CUDA(cudaMemcpyAsync(bytes.data(), first.buffer.get(), first.bytes, cudaMemcpyDeviceToHost,
                                 stream_.get()));
    KDFORGE_CUDA(cudaStreamSynchronize(stream_.get()));
    HostTensor result;
    result.shape = first.shape;
    result.data.resize(static_cast<size_t>(result.numel()));
    if (first.type == DataType::kFLOAT) {
      std::memcpy(result.data.data(), bytes.data(), result.data.size() * sizeof(float));
    } else {  // kHALF, checked in bind_outputs()
      for (size_t i = 0; i < result.data.size(); ++i) {
        uint16_t half = 0;
        std::memcpy(&half, bytes.data() + 2 * i, sizeof half);
        result.data[i] = half_to_float(half);
      }
    }
    return result;
  }

  std::map<std::string, std::string> describe() const override {
    std::map<std::string, std::string> fields{
        {"device", json_string(gpu_name_)},
        {"compute_capability", json_string(compute_capability_)},
        {"tensorrt", json_string(version_)},
        {"cuda_graph", options_.cuda_graph ? "true" : "false"},
        {"clock", json_string("cuda-events")},
        {"copies_included", "false"},
    };
    if (sidecar_) {
      const auto precision = json_text(*sidecar_, "precision");
      if (precision) fields["precision"] = json_string(*precision);
    }
    return fields;
  }

 private:
  struct OutputBinding {
    std::string name;
    DataType type = DataType::kFLOAT;
    std::vector<int64_t> shape;
    size_t bytes = 0;
    DeviceBuffer buffer;
  };

  void load_device_facts() {
    const int device = select_device(options_.device, file_);
    cudaDeviceProp properties{};
    KDFORGE_CUDA(cudaGetDeviceProperties(&properties, device));
    gpu_name_ = properties.name;
    compute_capability_ = std::to_string(properties.major) + "." + std::to_string(properties.minor);
    version_ = tensorrt_version();
  }

  // What the sidecar says built the engine, for the "cannot be deserialized" message.
  std::string built_with() const {
    if (!sidecar_) return "(no sidecar " + file_ + ".json says what built it)";
    return "(built with TensorRT " + json_text(*sidecar_, "tensorrt").value_or("unknown") + " on " +
           json_text(*sidecar_, "gpu").value_or("an unknown GPU") + ")";
  }

  void deserialize() {
    runtime_.reset(nvinfer1::createInferRuntime(logger_));
    if (!runtime_) throw std::runtime_error("TensorRT could not create a runtime" + logger_.suffix());
    const std::string blob = read_text_file(options_.model);  // binary-safe: read whole, in binary mode
    engine_.reset(runtime_->deserializeCudaEngine(blob.data(), blob.size()));
    if (!engine_) {
      // Engines are tied to the TensorRT version and the GPU that built them: the usual cause.
      throw UserError(file_ + " cannot be deserialized by TensorRT " + version_ + " on " + gpu_name_ + " " +
                      built_with() + "; " + kRebuild + logger_.suffix());
    }
  }

  void find_io_tensors() {
    std::vector<std::string> inputs;
    std::vector<std::string> outputs;
    for (int32_t i = 0; i < engine_->getNbIOTensors(); ++i) {
      const char* tensor = engine_->getIOTensorName(i);
      if (engine_->getTensorIOMode(tensor) == nvinfer1::TensorIOMode::kINPUT) inputs.emplace_back(tensor);
      if (engine_->getTensorIOMode(tensor) == nvinfer1::TensorIOMode::kOUTPUT) outputs.emplace_back(tensor);
    }
    if (inputs.size() != 1 || outputs.empty()) {
      throw UserError(file_ + " has " + std::to_string(inputs.size()) + " inputs and " +
                      std::to_string(outputs.size()) +
                      " outputs; kdforge-runner runs engines with exactly one input and at least one output");
    }
    input_name_ = inputs.front();
    input_type_ = engine_->getTensorDataType(input_name_.c_str());
    if (input_type_ != DataType::kFLOAT && input_type_ != DataType::kHALF) {
      throw UserError(file_ + ": input " + input_name_ + " is " + type_name(input_type_) +
                      "; kdforge-runner feeds float32 or float16 inputs");
    }
    output_names_ = outputs;
  }

  // (C, H, W) from the engine, and the batch range from optimization profile 0 (the one a new context uses).
  void read_input_shape() {
    const nvinfer1::Dims dims = engine_->getTensorShape(input_name_.c_str());
    if (dims.nbDims < 2) {
      throw UserError(file_ + ": input " + input_name_ + " has no batch dimension; " + kRebuild);
    }
    for (int32_t i = 1; i < dims.nbDims; ++i) {
      if (dims.d[i] <= 0) {
        throw UserError(file_ + ": input " + input_name_ + " has a dynamic dimension other than the batch; " +
                        kRebuild);
      }
      sample_shape_.push_back(dims.d[i]);
    }
    if (dims.d[0] > 0) {  // a fixed-batch engine
      batch_range_ = {dims.d[0], dims.d[0]};
      return;
    }
    const char* name = input_name_.c_str();
    const nvinfer1::Dims low = engine_->getProfileShape(name, 0, nvinfer1::OptProfileSelector::kMIN);
    const nvinfer1::Dims high = engine_->getProfileShape(name, 0, nvinfer1::OptProfileSelector::kMAX);
    if (engine_->getNbOptimizationProfiles() < 1 || low.nbDims < 1 || high.nbDims < 1 || low.d[0] < 1 ||
        high.d[0] < low.d[0]) {
      throw UserError(file_ + " has a dynamic batch but no usable optimization profile; " + kRebuild);
    }
    batch_range_ = {low.d[0], high.d[0]};
  }

  void check_input(const HostTensor& input) const {
    check_sample_shape(file_, sample_shape_, input);
    const int64_t batch = input.shape[0];
    if (batch < batch_range_.first || batch > batch_range_.second) {
      throw UserError(file_ + " takes batches " + std::to_string(batch_range_.first) + "-" +
                      std::to_string(batch_range_.second) + " (its optimization profile); batch " +
                      std::to_string(batch) + " is outside; rebuild it with a wider batch range");
    }
  }

  // Waits for queued work before freeing what it may use; the graph goes first (it holds the addresses).
  void release_staged() {
    staged_ = false;
    KDFORGE_CUDA(cudaStreamSynchronize(stream_.get()));
    graph_exec_.reset();
    outputs_.clear();
    input_buffer_.reset();
  }

  void set_input_shape(const std::vector<int64_t>& shape) {
    nvinfer1::Dims dims{};
    if (shape.size() > static_cast<size_t>(nvinfer1::Dims::MAX_DIMS)) {
      throw UserError(file_ + ": input rank " + std::to_string(shape.size()) + " exceeds TensorRT's limit");
    }
    dims.nbDims = static_cast<int32_t>(shape.size());
    for (size_t i = 0; i < shape.size(); ++i) dims.d[i] = shape[i];
    if (!context_->setInputShape(input_name_.c_str(), dims)) {
      throw UserError("TensorRT rejected input shape " + shape_text(shape) + " for " + file_ +
                      logger_.suffix());
    }
  }

  // Device copy of the float32 host batch, converted to the engine's input type.
  DeviceBuffer upload_input(const HostTensor& input) {
    const auto count = static_cast<size_t>(input.numel());
    std::vector<uint16_t> halves;
    const void* source = input.data.data();
    size_t bytes = count * sizeof(float);
    if (input_type_ == DataType::kHALF) {
      halves.resize(count);
      for (size_t i = 0; i < count; ++i) halves[i] = float_to_half(input.data[i]);
      source = halves.data();
      bytes = count * sizeof(uint16_t);
    }
    DeviceBuffer buffer = device_alloc(bytes);
    bind(input_name_, buffer.get());
    KDFORGE_CUDA(cudaMemcpyAsync(buffer.get(), source, bytes, cudaMemcpyHostToDevice, stream_.get()));
    // `halves` must outlive the copy: the caller synchronizes, but do it here too so that never matters.
    KDFORGE_CUDA(cudaStreamSynchronize(stream_.get()));
    return buffer;
  }

  // A device buffer for every output at the shapes the context infers from the input shape just set.
  void bind_outputs() {
    for (const std::string& tensor : output_names_) {
      OutputBinding binding;
      binding.name = tensor;
      binding.type = engine_->getTensorDataType(tensor.c_str());
      const nvinfer1::Dims dims = context_->getTensorShape(tensor.c_str());
      int64_t count = 1;
      for (int32_t i = 0; i < dims.nbDims; ++i) {
        if (dims.d[i] < 0) {
          throw UserError(file_ + ": output " + tensor + " has a data-dependent shape; kdforge-runner needs "
                          "output shapes that follow from the input shape");
        }
        binding.shape.push_back(dims.d[i]);
        count *= dims.d[i];
      }
      if (dims.nbDims < 0) throw UserError(file_ + ": TensorRT cannot infer the shape of output " + tensor);
      const auto bytes = byte_size(binding.type, count);
      if (!bytes) {
        throw UserError(file_ + ": output " + tensor + " is " + type_name(binding.type) +
                        ", which kdforge-runner cannot allocate");
      }
      binding.bytes = *bytes;
      binding.buffer = device_alloc(binding.bytes);
      bind(tensor, binding.buffer.get());
      outputs_.push_back(std::move(binding));
    }
    const DataType first = outputs_.front().type;
    if (first != DataType::kFLOAT && first != DataType::kHALF) {
      throw UserError(file_ + ": the first output is " + type_name(first) +
                      "; kdforge-runner reads float32 or float16 outputs");
    }
  }

  void bind(const std::string& tensor, void* address) {
    if (!context_->setTensorAddress(tensor.c_str(), address)) {
      throw std::runtime_error("TensorRT refused the address of tensor " + tensor + logger_.suffix());
    }
  }

  void enqueue() {
    if (!context_->enqueueV3(stream_.get())) {
      throw std::runtime_error("TensorRT failed to enqueue " + file_ + logger_.suffix());
    }
  }

  // One enqueueV3 outside capture first: after an input-shape change TensorRT finishes deferred setup there,
  // work that must not land in the graph. Then capture one enqueueV3 and instantiate it for replay.
  void capture_graph() {
    enqueue();
    KDFORGE_CUDA(cudaStreamSynchronize(stream_.get()));
    KDFORGE_CUDA(cudaStreamBeginCapture(stream_.get(), cudaStreamCaptureModeGlobal));
    const bool enqueued = context_->enqueueV3(stream_.get());
    cudaGraph_t captured = nullptr;
    const cudaError_t ended = cudaStreamEndCapture(stream_.get(), &captured);  // always ends the capture
    const Graph graph(captured);
    if (!enqueued || ended != cudaSuccess || !graph) {
      (void)cudaGetLastError();  // clear the capture error so later calls do not report it
      const std::string reason = ended != cudaSuccess ? cudaGetErrorString(ended) : "enqueueV3 failed";
      throw UserError(file_ + " cannot be captured in a CUDA graph (" + reason + ")" + logger_.suffix() +
                      "; run it without --cuda-graph");
    }
    cudaGraphExec_t exec = nullptr;
    // cudaGraphInstantiateWithFlags(exec, graph, 0) is CUDA 12's cudaGraphInstantiate(exec, graph, 0), and
    // also compiles against CUDA 11.4+ toolkits that some TensorRT 10 builds use.
    KDFORGE_CUDA(cudaGraphInstantiateWithFlags(&exec, graph.get(), 0));
    graph_exec_.reset(exec);  // the executable graph does not need `graph` once instantiated
  }

  BackendOptions options_;
  std::string file_;                     // the engine's file name, for messages
  std::optional<std::string> sidecar_;   // model.engine.json, when present
  std::string gpu_name_;
  std::string compute_capability_;
  std::string version_;

  // Declaration order is destruction order reversed: the logger outlives every TensorRT object, the runtime
  // outlives its engine, the stream outlives the context that enqueues on it, buffers go before the context.
  QuietLogger logger_;
  std::unique_ptr<nvinfer1::IRuntime> runtime_;
  std::unique_ptr<nvinfer1::ICudaEngine> engine_;
  Stream stream_;
  Event start_;
  Event stop_;
  std::unique_ptr<nvinfer1::IExecutionContext> context_;

  std::string input_name_;
  DataType input_type_ = DataType::kFLOAT;
  std::vector<std::string> output_names_;
  std::vector<int64_t> sample_shape_;
  std::pair<int64_t, int64_t> batch_range_{1, 1};

  DeviceBuffer input_buffer_;
  std::vector<OutputBinding> outputs_;
  GraphExec graph_exec_;
  bool staged_ = false;
};

}  // namespace

std::unique_ptr<Backend> make_tensorrt_backend(const BackendOptions& options) {
  return std::make_unique<TensorRTBackend>(options);
}

}  // namespace kdforge
