# kdforge-runner: the native latency runner, built from the sources next to this file. Included by
# export/native/CMakeLists.txt (what `kdforge build-native` configures, inside the installed package) and by
# the checkout's root CMakeLists.txt. Backends are compiled in when found, each in its own source file
# behind backend.h:
#   AOTInductor  libtorch of the torch that -DPython3_EXECUTABLE=<python> imports (or -DTORCH_ROOT=<torch dir>)
#   TensorRT     -DTensorRT_ROOT=<install prefix> (headers NvInfer.h + libnvinfer) and the CUDA toolkit
#   ONNX Runtime -DONNXRUNTIME_ROOT=<extracted release> (include/onnxruntime_cxx_api.h + lib/libonnxruntime)
# Each backend left out is a CMake warning naming the variable that enables it; the build directory gets
# backends.txt (compiled in, comma-separated) and missing-backends.txt (one "name: how to enable" a line).
set(CMAKE_CXX_STANDARD 20)
set(CMAKE_CXX_STANDARD_REQUIRED ON)
if(NOT CMAKE_BUILD_TYPE AND NOT CMAKE_CONFIGURATION_TYPES)
  set(CMAKE_BUILD_TYPE Release CACHE STRING "Build type" FORCE)
endif()

option(KDFORGE_WITH_AOTI "AOTInductor backend (libtorch from the torch wheel)" ON)
option(KDFORGE_WITH_TENSORRT "TensorRT backend when TensorRT and CUDA are found" ON)
option(KDFORGE_WITH_ONNXRUNTIME "ONNX Runtime backend when ONNXRUNTIME_ROOT is given" ON)

set(NATIVE ${CMAKE_CURRENT_LIST_DIR})
add_executable(kdforge-runner ${NATIVE}/main.cpp ${NATIVE}/timing.cpp ${NATIVE}/npy.cpp ${NATIVE}/sidecar.cpp
               ${NATIVE}/convert.cpp ${NATIVE}/heap.cpp)
target_include_directories(kdforge-runner PRIVATE ${NATIVE})
target_compile_options(kdforge-runner PRIVATE -Wall -Wextra)
set(KDFORGE_BACKENDS "")
set(KDFORGE_MISSING "")

# A backend left out: said loudly (a CMake warning) and recorded for `kdforge build-native`.
function(kdforge_missing_backend name how)
  message(WARNING "kdforge-runner: the ${name} backend is NOT compiled in: ${how}")
  set(KDFORGE_MISSING ${KDFORGE_MISSING} "${name}: ${how}" PARENT_SCOPE)
endfunction()

# --- AOTInductor: link what a run needs from the wheel's libtorch directly. The wheel's TorchConfig.cmake
# insists on a CUDA toolkit for a CUDA build of torch, which a CPU-only machine does not have; libtorch
# itself loads fine there, so we skip the config and point at the headers and libraries. FindPython3 takes
# a given -DPython3_EXECUTABLE as it is (else an active virtual environment first, then the system's).
if(KDFORGE_WITH_AOTI)
  find_package(Python3 COMPONENTS Interpreter QUIET)
  set(torch_from "TORCH_ROOT=${TORCH_ROOT}")
  if(NOT TORCH_ROOT AND Python3_FOUND)
    set(torch_from "Python3_EXECUTABLE=${Python3_EXECUTABLE}")
    execute_process(
      COMMAND ${Python3_EXECUTABLE} -c "import os, torch; print(os.path.dirname(torch.__file__), end='')"
      OUTPUT_VARIABLE TORCH_ROOT RESULT_VARIABLE torch_found ERROR_QUIET)
    if(NOT torch_found EQUAL 0)
      set(TORCH_ROOT "")
    endif()
  elseif(NOT TORCH_ROOT)
    set(torch_from "no Python 3 interpreter found")
  endif()
  if(TORCH_ROOT AND EXISTS ${TORCH_ROOT}/include/torch/csrc/inductor/aoti_package/model_package_loader.h)
    set(torch_cxx11_abi 1)
    if(Python3_FOUND)
      execute_process(
        COMMAND ${Python3_EXECUTABLE} -c "import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI), end='')"
        OUTPUT_VARIABLE torch_cxx11_abi ERROR_QUIET)
      if(NOT torch_cxx11_abi STREQUAL "0")
        set(torch_cxx11_abi 1)
      endif()
    endif()
    # Looked up afresh on every configure, so a build directory follows a changed Python or TORCH_ROOT.
    foreach(lib torch torch_cpu c10 torch_cuda)
      unset(KDFORGE_LIB_${lib} CACHE)
      find_library(KDFORGE_LIB_${lib} ${lib} PATHS ${TORCH_ROOT}/lib NO_DEFAULT_PATH)
    endforeach()
    target_sources(kdforge-runner PRIVATE ${NATIVE}/aoti_backend.cpp)
    target_include_directories(kdforge-runner SYSTEM PRIVATE
      ${TORCH_ROOT}/include ${TORCH_ROOT}/include/torch/csrc/api/include)
    target_compile_definitions(kdforge-runner PRIVATE KDFORGE_HAS_AOTI _GLIBCXX_USE_CXX11_ABI=${torch_cxx11_abi})
    # CUDA packages run on the GPU only when libtorch_cuda (and through its RPATH the CUDA libraries of the
    # wheel) is loaded, yet the runner calls no symbol of it: linkers that default to --as-needed (Ubuntu's)
    # would drop it, and libtorch too. So every library is linked --no-as-needed, libtorch_cuda by name
    # when the wheel is a CUDA build; CPU packages still run on the CPU from the same binary.
    set(torch_libs ${KDFORGE_LIB_torch} ${KDFORGE_LIB_torch_cpu} ${KDFORGE_LIB_c10})
    if(KDFORGE_LIB_torch_cuda)
      list(APPEND torch_libs ${KDFORGE_LIB_torch_cuda})
    endif()
    if(CMAKE_SYSTEM_NAME STREQUAL "Linux")
      target_link_options(kdforge-runner PRIVATE "LINKER:--no-as-needed")
    endif()
    target_link_libraries(kdforge-runner PRIVATE ${torch_libs})
    set_target_properties(kdforge-runner PROPERTIES BUILD_RPATH "${TORCH_ROOT}/lib" INSTALL_RPATH "${TORCH_ROOT}/lib")
    list(APPEND KDFORGE_BACKENDS aoti)
    message(STATUS "kdforge-runner: AOTInductor from ${TORCH_ROOT} (${torch_from})")
  else()
    kdforge_missing_backend("AOTInductor" "no torch with AOTInductor headers (${torch_from}) -- set \
-DPython3_EXECUTABLE=<a python whose torch to use> or -DTORCH_ROOT=<torch package folder>")
  endif()
endif()

# --- Tests only: the TensorRT backend built against the test doubles of TensorRT and CUDA in the folder
# KDFORGE_FAKE_TENSORRT names (tests/native_fake_sdk), so its control flow and messages run without a GPU.
set(KDFORGE_FAKE_TENSORRT "" CACHE PATH "tests only: folder with fake NvInfer.h, cuda_runtime_api.h, fake_sdk.cpp")
if(KDFORGE_FAKE_TENSORRT)
  target_sources(kdforge-runner PRIVATE ${NATIVE}/tensorrt_backend.cpp ${KDFORGE_FAKE_TENSORRT}/fake_sdk.cpp)
  target_include_directories(kdforge-runner PRIVATE ${KDFORGE_FAKE_TENSORRT})
  target_compile_definitions(kdforge-runner PRIVATE KDFORGE_HAS_TENSORRT KDFORGE_FAKE_TENSORRT_BUILD)
  list(APPEND KDFORGE_BACKENDS tensorrt-test-double)
# --- TensorRT (10.x / 11.x) and the CUDA runtime.
elseif(KDFORGE_WITH_TENSORRT)
  find_path(TENSORRT_INCLUDE NvInfer.h HINTS ${TensorRT_ROOT} ENV TensorRT_ROOT
            PATH_SUFFIXES include include/aarch64-linux-gnu include/x86_64-linux-gnu)
  find_library(TENSORRT_LIB nvinfer HINTS ${TensorRT_ROOT} ENV TensorRT_ROOT
               PATH_SUFFIXES lib lib64 lib/aarch64-linux-gnu lib/x86_64-linux-gnu)
  find_package(CUDAToolkit QUIET)
  if(TENSORRT_INCLUDE AND TENSORRT_LIB AND CUDAToolkit_FOUND)
    target_sources(kdforge-runner PRIVATE ${NATIVE}/tensorrt_backend.cpp)
    target_include_directories(kdforge-runner SYSTEM PRIVATE ${TENSORRT_INCLUDE})
    target_compile_definitions(kdforge-runner PRIVATE KDFORGE_HAS_TENSORRT)
    target_link_libraries(kdforge-runner PRIVATE ${TENSORRT_LIB} CUDA::cudart)
    list(APPEND KDFORGE_BACKENDS tensorrt)
  else()
    set(trt_missing "")
    if(NOT TENSORRT_INCLUDE)
      list(APPEND trt_missing "NvInfer.h")
    endif()
    if(NOT TENSORRT_LIB)
      list(APPEND trt_missing "libnvinfer")
    endif()
    if(NOT CUDAToolkit_FOUND)
      list(APPEND trt_missing "the CUDA toolkit (put its bin/ on PATH)")
    endif()
    list(JOIN trt_missing ", " trt_missing)
    kdforge_missing_backend("TensorRT" "not found: ${trt_missing} -- set -DTensorRT_ROOT=<TensorRT install prefix>")
  endif()
endif()

# --- ONNX Runtime C/C++ API from a release archive.
if(KDFORGE_WITH_ONNXRUNTIME)
  if(NOT ONNXRUNTIME_ROOT)
    kdforge_missing_backend("ONNX Runtime" "set -DONNXRUNTIME_ROOT=<extracted ONNX Runtime release>")
  else()
    find_path(ORT_INCLUDE onnxruntime_cxx_api.h HINTS ${ONNXRUNTIME_ROOT}
              PATH_SUFFIXES include include/onnxruntime/core/session)
    find_library(ORT_LIB onnxruntime HINTS ${ONNXRUNTIME_ROOT} PATH_SUFFIXES lib lib64)
    if(ORT_INCLUDE AND ORT_LIB)
      target_sources(kdforge-runner PRIVATE ${NATIVE}/onnxruntime_backend.cpp)
      target_include_directories(kdforge-runner SYSTEM PRIVATE ${ORT_INCLUDE})
      target_compile_definitions(kdforge-runner PRIVATE KDFORGE_HAS_ONNXRUNTIME)
      target_link_libraries(kdforge-runner PRIVATE ${ORT_LIB})
      list(APPEND KDFORGE_BACKENDS onnxruntime)
    else()
      kdforge_missing_backend("ONNX Runtime" "no onnxruntime_cxx_api.h / libonnxruntime under \
ONNXRUNTIME_ROOT=${ONNXRUNTIME_ROOT} -- set -DONNXRUNTIME_ROOT=<extracted ONNX Runtime release>")
    endif()
  endif()
endif()

list(JOIN KDFORGE_BACKENDS ", " backends_text)
list(JOIN KDFORGE_MISSING "\n" missing_text)
if(NOT KDFORGE_BACKENDS)
  message(WARNING "kdforge-runner: NO backend is compiled in, so the runner can time nothing. Enable one: "
                  "-DPython3_EXECUTABLE=<a python with torch> (AOTInductor), -DTensorRT_ROOT=... (TensorRT) "
                  "or -DONNXRUNTIME_ROOT=... (ONNX Runtime).")
endif()
message(STATUS "kdforge-runner backends: ${backends_text}")
file(WRITE ${CMAKE_BINARY_DIR}/backends.txt "${backends_text}\n")
file(WRITE ${CMAKE_BINARY_DIR}/missing-backends.txt "${missing_text}\n")
