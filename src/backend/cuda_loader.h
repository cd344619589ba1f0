// Finds and loads the CUDA backend library on demand (dlopen), so that the
// core has no link dependency on CUDA and a CPU-only run never loads it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "backend/backend_api.h"

namespace starkv {
class Model;
}

namespace starkv::backend {

// The backend's table, or nullptr with *why set (library missing, symbol
// missing, ABI mismatch). Loaded once per process; never unloaded.
const starkv_backend_api* load_cuda_api(std::string* why);

// A model's forward pass on a device: owns the backend handle.
class DeviceForward {
public:
    DeviceForward(const starkv_backend_api* api, void* handle) : api_(api), handle_(handle) {}
    ~DeviceForward();
    DeviceForward(const DeviceForward&) = delete;
    DeviceForward& operator=(const DeviceForward&) = delete;
    // Throws Error with the backend's status and message.
    void forward(const int32_t* tokens, int n, int pos0, bool all_logits, float* logits);
    uint64_t device_bytes() const;
    uint64_t weight_bytes() const;

private:
    const starkv_backend_api* api_;
    void* handle_;
};

// For backend CPU: nullptr. CUDA: the device forward, or Error
// STARKV_ERR_NO_DEVICE saying why. AUTO: the device forward, or nullptr
// after logging why the CPU is used. Weight/KV types from $STARKV_CUDA_DTYPE
// from device_type (STARKV_DEVICE_TYPE_*, default bf16), overridden by
// $STARKV_CUDA_DTYPE ("f32", "bf16", "f16"). memory_limit (bytes, 0 = none): a
// device forward taking more is freed, then Error STARKV_ERR_OUT_OF_MEMORY
// (AUTO: nullptr).
std::unique_ptr<DeviceForward> open_device_forward(const Model& model, int n_ctx, int backend, int device,
                                                   uint64_t memory_limit = 0, int device_type = 0);

// Device-to-device copy speed of a CUDA device (bytes read + written per
// second); Error STARKV_ERR_NO_DEVICE without the backend or the device.
double copy_bandwidth(int device);

}  // namespace starkv::backend
