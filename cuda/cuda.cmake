# Decides whether the CUDA backend is built: ON by default when nvcc is found
# (CI has nvcc, no GPU: it builds the backend and runs the host-side tests),
# OFF in sanitizer builds (nvcc does not take -fsanitize).
include(CheckLanguage)
check_language(CUDA)
if(CMAKE_CUDA_COMPILER AND NOT STARKV_SANITIZE)
  set(STARKV_CUDA_DEFAULT ON)
else()
  set(STARKV_CUDA_DEFAULT OFF)
endif()
option(STARKV_CUDA "Build libstarkv_cuda (needs nvcc and cuBLASLt)" ${STARKV_CUDA_DEFAULT})
if(STARKV_CUDA)
  if(NOT CMAKE_CUDA_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES 90)  # H100/H200; one architecture keeps CI builds short
  endif()
  enable_language(CUDA)
  find_package(CUDAToolkit REQUIRED)
endif()
