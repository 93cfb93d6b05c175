// Test double of the TensorRT 10 runtime API subset kdforge-runner's TensorRT backend uses (same names and
// signatures as NvInferRuntime.h), implemented in fake_sdk.cpp over a small text "engine" format (see
// there). Not TensorRT: built only for tests (KDFORGE_FAKE_TENSORRT), to run the backend's control flow,
// messages and buffer handling on a machine without a GPU.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

extern "C" int32_t getInferLibMajorVersion() noexcept;
extern "C" int32_t getInferLibMinorVersion() noexcept;
extern "C" int32_t getInferLibPatchVersion() noexcept;
extern "C" int32_t getInferLibBuildVersion() noexcept;

namespace nvinfer1 {

using char_t = char;
using AsciiChar = char_t;

enum class DataType : int32_t {
  kFLOAT = 0, kHALF = 1, kINT8 = 2, kINT32 = 3, kBOOL = 4, kUINT8 = 5, kFP8 = 6, kBF16 = 7, kINT64 = 8,
  kINT4 = 9
};

class Dims64 {
 public:
  static constexpr int32_t MAX_DIMS{8};
  int32_t nbDims;
  int64_t d[MAX_DIMS];
};
using Dims = Dims64;

enum class TensorIOMode : int32_t { kNONE = 0, kINPUT = 1, kOUTPUT = 2 };
enum class OptProfileSelector : int32_t { kMIN = 0, kOPT = 1, kMAX = 2 };
enum class ExecutionContextAllocationStrategy : int32_t { kSTATIC = 0 };

class ILogger {
 public:
  enum class Severity : int32_t { kINTERNAL_ERROR = 0, kERROR = 1, kWARNING = 2, kINFO = 3, kVERBOSE = 4 };
  virtual void log(Severity severity, AsciiChar const* msg) noexcept = 0;
  ILogger() = default;
  virtual ~ILogger() = default;

 protected:
  ILogger(ILogger const&) = default;
};

class IExecutionContext {
 public:
  virtual ~IExecutionContext() noexcept = default;
  bool setInputShape(char const* tensorName, Dims const& dims) noexcept;
  Dims getTensorShape(char const* tensorName) const noexcept;
  bool setTensorAddress(char const* tensorName, void* data) noexcept;
  bool enqueueV3(cudaStream_t stream) noexcept;
};

class ICudaEngine {
 public:
  virtual ~ICudaEngine() noexcept = default;
  Dims getTensorShape(char const* tensorName) const noexcept;
  DataType getTensorDataType(char const* tensorName) const noexcept;
  IExecutionContext* createExecutionContext(
      ExecutionContextAllocationStrategy strategy = ExecutionContextAllocationStrategy::kSTATIC) noexcept;
  TensorIOMode getTensorIOMode(char const* tensorName) const noexcept;
  int32_t getNbOptimizationProfiles() const noexcept;
  Dims getProfileShape(char const* tensorName, int32_t profileIndex, OptProfileSelector select) const noexcept;
  int32_t getNbIOTensors() const noexcept;
  char const* getIOTensorName(int32_t index) const noexcept;
};

class IRuntime {
 public:
  virtual ~IRuntime() noexcept = default;
  ICudaEngine* deserializeCudaEngine(void const* blob, std::size_t size) noexcept;
};

IRuntime* createInferRuntime(ILogger& logger) noexcept;

}  // namespace nvinfer1
