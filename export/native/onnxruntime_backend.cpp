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

namespace kdforge {
namespace {

constexpr const char* kReexport = "re-export it with `kdforge deploy CHECKPOINT`";
constexpr int64_t kSymbolicBatchMax = int64_t{1} << 20;  // no profile limits a symbolic batch; memory does

// The first line of `text`, cut to `limit` characters (ONNX Runtime's messages can be long).
std::string first_line(const std::string& text, size_t limit = 200) {
  std::string line = text.substr(0, text.find('\n'));
  if (line.size() > limit) line = line.substr(0, limit - 3) + "...";
  return line;
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string text = "(";
  for (size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + ")";
}

// IEEE binary32 -> binary16 bits, rounding to nearest even; overflow gives infinity. Only used for ONNX files
// whose input is float16 (kdforge's own fp16 exports keep float32 inputs).
uint16_t float_to_half(float value) {
  uint32_t bits = 0;
  std::memcpy(&bits, &value, sizeof bits);
  const auto sign = static_cast<uint16_t>((bits >> 16) & 0x8000U);
  const uint32_t exponent = (bits >> 23) & 0xFFU;
  uint32_t mantissa = bits & 0x7FFFFFU;
  if (exponent == 0xFFU) return static_cast<uint16_t>(sign | 0x7C00U | (mantissa != 0 ? 0x200U : 0U));
  const int32_t half_exponent = static_cast<int32_t>(exponent) - 127 + 15;
  if (half_exponent >= 0x1F) return static_cast<uint16_t>(sign | 0x7C00U);
  if (half_exponent <= 0) {  // a half subnormal, or zero when below half the smallest one
    if (half_exponent < -10) return sign;
    mantissa |= 0x800000U;
    const auto shift = static_cast<uint32_t>(14 - half_exponent);
    uint32_t half_mantissa = mantissa >> shift;
    const uint32_t rest = mantissa & ((1U << shift) - 1U);
    const uint32_t halfway = 1U << (shift - 1U);
    if (rest > halfway || (rest == halfway && (half_mantissa & 1U) != 0)) ++half_mantissa;
    return static_cast<uint16_t>(sign | half_mantissa);
  }
  uint32_t half = sign | (static_cast<uint32_t>(half_exponent) << 10) | (mantissa >> 13);
  const uint32_t rest = mantissa & 0x1FFFU;
  if (rest > 0x1000U || (rest == 0x1000U && (half & 1U) != 0)) ++half;
  return static_cast<uint16_t>(half);
}

// binary16 bits -> float (exact).
float half_to_float(uint16_t half) {
  const uint32_t sign = static_cast<uint32_t>(half & 0x8000U) << 16;
  const uint32_t exponent = (half >> 10) & 0x1FU;
  const uint32_t mantissa = half & 0x3FFU;
  if (exponent == 0) {
    const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    return sign != 0 ? -magnitude : magnitude;
  }
  uint32_t bits = sign | (mantissa << 13);
  bits |= exponent == 0x1FU ? 0x7F800000U : (exponent + 112U) << 23;
  float value = 0.0F;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

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
      throw UserError("ONNX Runtime cannot load " + options.model + ": " + first_line(error.what()) + "; " +
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
    const bool same = input.shape.size() == sample_shape_.size() + 1 &&
                      std::equal(sample_shape_.begin(), sample_shape_.end(), input.shape.begin() + 1);
    if (!same) {
      std::vector<int64_t> expected{-1};
      expected.insert(expected.end(), sample_shape_.begin(), sample_shape_.end());
      throw UserError(file_ + " takes input " + shape_text(expected) + " (-1: the batch), got " +
                      shape_text(input.shape));
    }
    if (static_cast<int64_t>(input.data.size()) != input.numel()) {
      throw std::runtime_error("ONNX Runtime backend: input data does not match its shape");
    }
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
