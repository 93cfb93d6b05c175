// AOTInductor backend: a `.pt2` package loaded with libtorch's package loader (the same compiled code the
// Python profiler's `aoti` backend runs), on the CPU or on CUDA, whichever the package was compiled for.
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <filesystem>

#include "backend.h"
#include "convert.h"
#include "sidecar.h"

namespace kdforge {
namespace {

constexpr const char* kRebuild = "rebuild it with `kdforge deploy CHECKPOINT --backends aoti`";

class AotiBackend final : public Backend {
 public:
  explicit AotiBackend(const BackendOptions& options) : options_(options) {
    if (!std::filesystem::is_regular_file(options.model)) throw UserError(options.model + " not found");
    const auto sidecar = read_sidecar(options.model);
    if (!sidecar) throw UserError(options.model + " has no sidecar " + options.model + ".json; " + kRebuild);
    const auto shape = json_numbers(*sidecar, "input_shape");
    const auto range = json_numbers(*sidecar, "batch_range");
    if (shape.size() != 3 || range.size() != 2) {
      throw UserError(options.model + ".json lacks input_shape or batch_range; " + kRebuild);
    }
    for (double d : shape) sample_shape_.push_back(static_cast<int64_t>(d));
    batch_range_ = {static_cast<int64_t>(range[0]), static_cast<int64_t>(range[1])};
    device_ = json_text(*sidecar, "device").value_or("cpu");
    if (!options.device.empty() && options.device != device_) {
      throw UserError(options.model + " was compiled for " + device_ + ", not " + options.device +
                      "; compile a package for that device with kdforge deploy --device " + options.device);
    }
    if (device_ == "cuda" && !torch::cuda::is_available()) {
      throw UserError(options.model + " was compiled for CUDA and no CUDA device is visible");
    }
    // As torch does for every thread it runs ops on: size the OpenMP and MKL pools to the intra-op count.
    at::init_num_threads();
    if (options.threads > 0) torch::set_num_threads(options.threads);
    try {
      loader_ = std::make_unique<torch::inductor::AOTIModelPackageLoader>(options.model);
    } catch (const std::exception& error) {
      throw UserError("cannot load " + options.model + ": " + one_line(error.what()) + "; " + kRebuild);
    }
  }

  std::string name() const override { return "aoti"; }
  std::vector<int64_t> sample_shape() const override { return sample_shape_; }
  std::pair<int64_t, int64_t> batch_range() const override { return batch_range_; }

  void stage(const HostTensor& input) override {
    const int64_t batch = input.shape.at(0);
    if (batch < batch_range_.first || batch > batch_range_.second) {
      throw UserError(options_.model + " was compiled for batches " + std::to_string(batch_range_.first) +
                      "-" + std::to_string(batch_range_.second) + ", not " + std::to_string(batch));
    }
    auto host = torch::from_blob(const_cast<float*>(input.data.data()), input.shape, torch::kFloat32);
    inputs_ = {host.to(torch::Device(device_)).clone()};
    outputs_.clear();
  }

  void run() override {
    torch::InferenceMode guard;
    outputs_ = loader_->run(inputs_);
  }

  void sync() override {
    if (device_ == "cuda") torch::cuda::synchronize();
  }

  // Host clock around run()+sync(): on CUDA this includes the launch overhead a caller pays, which the
  // Python `aoti` backend's CUDA events leave out; the JSON row says which clock was used.
  double time_one_run() override {
    return host_clock_ms([this] { run(); }, [this] { sync(); });
  }

  HostTensor output() override {
    if (outputs_.empty()) run();
    auto first = outputs_.at(0).to(torch::kCPU, torch::kFloat32).contiguous();
    HostTensor result;
    result.shape.assign(first.sizes().begin(), first.sizes().end());
    result.data.assign(first.data_ptr<float>(), first.data_ptr<float>() + first.numel());
    return result;
  }

  std::map<std::string, std::string> describe() const override {
    return {
        {"device", json_string(device_)},
        {"threads", std::to_string(torch::get_num_threads())},
        {"torch", json_string(std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) +
                              "." + std::to_string(TORCH_VERSION_PATCH))},
        {"precision", json_string("fp32")},
        {"clock", json_string("host")},
        {"copies_included", "false"},
    };
  }

 private:
  BackendOptions options_;
  std::vector<int64_t> sample_shape_;
  std::pair<int64_t, int64_t> batch_range_;
  std::string device_;
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> loader_;
  std::vector<at::Tensor> inputs_;
  std::vector<at::Tensor> outputs_;
};

}  // namespace

std::unique_ptr<Backend> make_aoti_backend(const BackendOptions& options) {
  return std::make_unique<AotiBackend>(options);
}

}  // namespace kdforge
