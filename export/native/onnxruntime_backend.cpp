// ONNX Runtime backend: an `.onnx` file (any precision kdforge exports: fp32, fp16, int8 Q/DQ) run by
// ONNX Runtime's C++ API on the CPU execution provider, timed by the host clock around Session::Run. The
// input is a tensor over host memory this object owns, built once per batch in stage(); outputs are returned
// by Run and kept until the next run, as the Python profiler's `session.run(None, feed)` does.
#include <onnxruntime_cxx_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "backend.h"
#include "convert.h"

namespace kdforge {
namespace {

constexpr const char* kReexport = "re-export it with `kdforge deploy CHECKPOINT`";
constexpr int64_t kSymbolicBatchMax = int64_t{1} << 20;  // no profile limits a symbolic batch; memory does

const char* element_name(ONNXTensorElementDataType type) {
  switch (type) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: return "float32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: return "float16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16: return "bfloat16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE: return "float64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8: return "int8";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8: return "uint8";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32: return "int32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64: return "int64";
    default: return "a type kdforge-runner does not feed";
  }
}

bool is_float_or_half(ONNXTensorElementDataType type) {
  return type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT || type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
}

class OnnxRuntimeBackend final : public Backend {
 public:
  explicit OnnxRuntimeBackend(const BackendOptions& options)
      : options_(options), file_(std::filesystem::path(options.model).filename().string()) {
    if (!std::filesystem::is_regular_file(options.model)) {
      throw UserError(options.model + " not found; export it with `kdforge deploy CHECKPOINT`");
    }
    if (!options.device.empty() && options.device != "cpu") {
      throw UserError("kdforge-runner runs " + file_ + " with ONNX Runtime's CPU execution provider; use "
                      "--device cpu (or leave --device out), not --device " + options.device);
    }
    // Everything ONNX Runtime says about a bad file arrives as an Ort::Exception: one line for the user.
    try {
      open_session();
      inspect_input();
    } catch (const Ort::Exception& error) {
      throw UserError("ONNX Runtime cannot load " + options.model + ": " + one_line(error.what()) + "; " +
                      kReexport);
    }
  }

  std::string name() const override { return "onnxruntime"; }
  std::vector<int64_t> sample_shape() const override { return sample_shape_; }
  std::pair<int64_t, int64_t> batch_range() const override { return batch_range_; }

  void stage(const HostTensor& input) override {
    check_input(input);
    outputs_.clear();
    input_value_ = Ort::Value(nullptr);  // drop the tensor before the memory it views changes
    input_shape_ = input.shape;
    if (input_type_ == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) {
      input_floats_ = input.data;
      input_value_ = Ort::Value::CreateTensor<float>(memory_info_, input_floats_.data(), input_floats_.size(),
                                                     input_shape_.data(), input_shape_.size());
    } else {  // float16, checked in inspect_input()
      input_halves_.resize(input.data.size());
      std::transform(input.data.begin(), input.data.end(), input_halves_.begin(), float_to_half);
      input_value_ = Ort::Value::CreateTensor(memory_info_, input_halves_.data(),
                                              input_halves_.size() * sizeof(uint16_t), input_shape_.data(),
                                              input_shape_.size(), ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16);
    }
  }

  void run() override {
    if (!input_value_) throw std::runtime_error("ONNX Runtime backend: run() before stage()");
    const char* input_names[] = {input_name_.c_str()};
    outputs_ = session_.Run(run_options_, input_names, &input_value_, 1, output_name_pointers_.data(),
                            output_name_pointers_.size());
  }

  void sync() override {}  // Session::Run returns when the CPU work is done

  double time_one_run() override {
    return host_clock_ms([this] { run(); }, [this] { sync(); });
  }

  HostTensor output() override {
    if (outputs_.empty()) run();
    const Ort::Value& first = outputs_.front();
    if (!first.IsTensor()) throw UserError(file_ + ": the first output is not a tensor");
    const Ort::TensorTypeAndShapeInfo info = first.GetTensorTypeAndShapeInfo();
    const ONNXTensorElementDataType type = info.GetElementType();
    if (!is_float_or_half(type)) {
      throw UserError(file_ + ": the first output is " + element_name(type) +
                      "; kdforge-runner reads float32 or float16 outputs");
    }
    HostTensor result;
    result.shape = info.GetShape();
    const size_t count = info.GetElementCount();
    result.data.resize(count);
    if (type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) {
      const float* values = first.GetTensorData<float>();
      std::copy(values, values + count, result.data.begin());
    } else {
      const uint16_t* values = first.GetTensorData<uint16_t>();  // float16 bits (no type check is made)
      std::transform(values, values + count, result.data.begin(), half_to_float);
    }
    return result;
  }

  std::map<std::string, std::string> describe() const override {
    return {
        {"device", json_string("cpu")},
        // null when --threads was not given: ONNX Runtime then picks its own count (physical cores).
        {"threads", options_.threads > 0 ? std::to_string(options_.threads) : "null"},
        {"thread_spinning", "true"},  // ONNX Runtime's default; the runner times one backend alone
        {"onnxruntime", json_string(OrtGetApiBase()->GetVersionString())},
        {"provider", json_string("CPUExecutionProvider")},
        {"clock", json_string("host")},
        {"copies_included", "false"},
    };
  }

 private:
  void open_session() {
    // ONNX Runtime's own log would add lines of its own to ours; KDFORGE_RUNNER_VERBOSE=1 shows warnings.
    const bool verbose = std::getenv("KDFORGE_RUNNER_VERBOSE") != nullptr;
    env_ = Ort::Env(verbose ? ORT_LOGGING_LEVEL_WARNING : ORT_LOGGING_LEVEL_FATAL, "kdforge-runner");
    Ort::SessionOptions session_options;
    if (options_.threads > 0) session_options.SetIntraOpNumThreads(options_.threads);
    session_options.SetGraphOptimizationLevel(ORT_ENABLE_ALL);  // the Python API's default (the profiler's)
    // path::c_str() is ORTCHAR_T* on every platform: char on Linux/macOS, wchar_t on Windows.
    const std::filesystem::path model(options_.model);
    session_ = Ort::Session(env_, model.c_str(), session_options);
    memory_info_ = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
  }

  // One tensor input, fixed non-batch dims; a fixed batch gives a one-value batch range.
  void inspect_input() {
    if (session_.GetInputCount() != 1 || session_.GetOutputCount() < 1) {
      throw UserError(file_ + " has " + std::to_string(session_.GetInputCount()) + " inputs and " +
                      std::to_string(session_.GetOutputCount()) +
                      " outputs; kdforge-runner runs models with exactly one input and at least one output");
    }
    Ort::AllocatorWithDefaultOptions allocator;
    input_name_ = session_.GetInputNameAllocated(0, allocator).get();
    for (size_t i = 0; i < session_.GetOutputCount(); ++i) {
      output_names_.emplace_back(session_.GetOutputNameAllocated(i, allocator).get());
    }
    for (const std::string& output : output_names_) output_name_pointers_.push_back(output.c_str());

    const Ort::TypeInfo type_info = session_.GetInputTypeInfo(0);
    if (type_info.GetONNXType() != ONNX_TYPE_TENSOR) {
      throw UserError(file_ + ": input " + input_name_ + " is not a tensor");
    }
    const auto tensor_info = type_info.GetTensorTypeAndShapeInfo();  // a view into type_info
    input_type_ = tensor_info.GetElementType();
    if (!is_float_or_half(input_type_)) {
      throw UserError(file_ + ": input " + input_name_ + " is " + element_name(input_type_) +
                      "; kdforge-runner feeds float32 or float16 inputs");
    }
    const std::vector<int64_t> shape = tensor_info.GetShape();  // symbolic dimensions read as -1
    if (shape.size() < 2 ||
        std::any_of(shape.begin() + 1, shape.end(), [](int64_t d) { return d <= 0; })) {
      throw UserError(file_ + ": input " + input_name_ + " has shape " + shape_text(shape) +
                      "; kdforge-runner needs fixed dimensions after the batch (-1: symbolic); " + kReexport);
    }
    sample_shape_.assign(shape.begin() + 1, shape.end());
    batch_range_ = shape[0] > 0 ? std::pair{shape[0], shape[0]} : std::pair{int64_t{1}, kSymbolicBatchMax};
  }

  void check_input(const HostTensor& input) const {
    check_sample_shape(file_, sample_shape_, input);
    const int64_t batch = input.shape[0];
    if (batch >= batch_range_.first && batch <= batch_range_.second) return;
    if (batch_range_.first == batch_range_.second) {
      throw UserError(file_ + " has a fixed batch of " + std::to_string(batch_range_.first) + "; batch " +
                      std::to_string(batch) + " cannot run; re-export it with a dynamic batch");
    }
    throw UserError(file_ + ": batch " + std::to_string(batch) + " is outside 1-" +
                    std::to_string(batch_range_.second));
  }

  BackendOptions options_;
  std::string file_;  // the model's file name, for messages

  // Declaration order is destruction order reversed: the Env outlives the session; the buffers outlive the
  // input tensor that views them.
  Ort::Env env_{nullptr};
  Ort::Session session_{nullptr};
  Ort::MemoryInfo memory_info_{nullptr};
  Ort::RunOptions run_options_{nullptr};  // null run options: ONNX Runtime's defaults

  std::string input_name_;
  ONNXTensorElementDataType input_type_ = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  std::vector<std::string> output_names_;
  std::vector<const char*> output_name_pointers_;  // into output_names_, which never changes after loading
  std::vector<int64_t> sample_shape_;
  std::pair<int64_t, int64_t> batch_range_{1, 1};

  std::vector<int64_t> input_shape_;
  std::vector<float> input_floats_;
  std::vector<uint16_t> input_halves_;
  Ort::Value input_value_{nullptr};
  std::vector<Ort::Value> outputs_;
};

}  // namespace

std::unique_ptr<Backend> make_onnxruntime_backend(const BackendOptions& options) {
  return std::make_unique<OnnxRuntimeBackend>(options);
}

}  // namespace kdforge
