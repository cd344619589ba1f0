#include "backend/cuda_loader.h"

#include <dlfcn.h>

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

#include "core/error.h"
#include "core/log.h"
#include "model/context.h"
#include "model/model.h"

namespace starkv::backend {
namespace {

// The directory of libstarkv itself: the backend is installed beside it.
std::string own_directory() {
    Dl_info info{};
    if (dladdr(reinterpret_cast<void*>(&load_cuda_api), &info) == 0 || !info.dli_fname) return {};
    std::string p = info.dli_fname;
    const size_t slash = p.rfind('/');
    return slash == std::string::npos ? std::string() : p.substr(0, slash + 1);
}

struct Loaded {
    const starkv_backend_api* api = nullptr;
    std::string why;
};

Loaded load_once() {
    Loaded r;
    std::string path;
    if (const char* env = std::getenv("STARKV_CUDA_LIBRARY"); env && *env) path = env;
    else path = own_directory() + "libstarkv_cuda.so";
    // RTLD_LOCAL: the backend's CUDA symbols stay out of the global namespace.
    void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        const char* e = dlerror();
        r.why = "cannot load the CUDA backend " + path + ": " + (e ? e : "unknown error");
        return r;
    }
    auto fn = reinterpret_cast<starkv_backend_api_fn>(dlsym(lib, "starkv_cuda_backend_api"));
    const starkv_backend_api* api = fn ? fn() : nullptr;
    if (!api) {
        r.why = path + " has no starkv_cuda_backend_api";
    } else if (api->abi_version != STARKV_BACKEND_ABI_VERSION || api->struct_size < sizeof(starkv_backend_api)) {
        r.why = path + " speaks backend ABI " + std::to_string(api->abi_version) + ", libstarkv " +
                std::to_string(STARKV_BACKEND_ABI_VERSION);
    } else {
        r.api = api;
        return r;
    }
    dlclose(lib);
    return r;
}

}  // namespace

const starkv_backend_api* load_cuda_api(std::string* why) {
    static std::once_flag once;
    static Loaded loaded;
    std::call_once(once, [] { loaded = load_once(); });
    if (!loaded.api && why) *why = loaded.why;
    return loaded.api;
}

DeviceForward::~DeviceForward() {
    if (handle_) api_->destroy(handle_);
}

void DeviceForward::forward(const int32_t* tokens, int n, int pos0, bool all_logits, float* logits) {
    char msg[512] = {};
    const int32_t st = api_->forward(handle_, tokens, n, pos0, all_logits ? 1 : 0, logits, msg, sizeof msg);
    if (st != STARKV_OK) fail(static_cast<starkv_status>(st), std::string("cuda: ") + msg);
}

uint64_t DeviceForward::device_bytes() const { return api_->device_bytes(handle_); }

uint64_t DeviceForward::weight_bytes() const { return api_->weight_bytes(handle_); }

double copy_bandwidth(int device) {
    std::string why;
    const starkv_backend_api* api = load_cuda_api(&why);
    if (!api) fail(STARKV_ERR_NO_DEVICE, why);
    char msg[512] = {};
    double bw = 0;
    if (int32_t st = api->copy_bandwidth(device, &bw, msg, sizeof msg); st != STARKV_OK)
        fail(static_cast<starkv_status>(st), std::string("cuda: ") + msg);
    return bw;
}

std::unique_ptr<DeviceForward> open_device_forward(const Model& model, int n_ctx, int backend, int device,
                                                   uint64_t memory_limit, int device_type) {
    if (backend == STARKV_BACKEND_CPU) return nullptr;
    // AUTO falls back for a missing device; any other failure is reported.
    auto unavailable = [&](const std::string& why) -> std::unique_ptr<DeviceForward> {
        if (backend == STARKV_BACKEND_AUTO) {
            log(STARKV_LOG_WARN, "backend auto: using the CPU (" + why + ")");
            return nullptr;
        }
        fail(STARKV_ERR_NO_DEVICE, why);
    };
    std::string why;
    const starkv_backend_api* api = load_cuda_api(&why);
    if (!api) return unavailable(why);
    char msg[512] = {};
    if (int32_t st = api->probe(device, msg, sizeof msg); st != STARKV_OK) {
        if (st == STARKV_ERR_NO_DEVICE) return unavailable(msg);
        fail(static_cast<starkv_status>(st), std::string("cuda: ") + msg);
    }

    const ModelConfig& c = model.config();
    const ModelWeights& w = model.weights();
    // The GPU cache holds fp32/bf16 rows only: quantized KV rows (kv-quant
    // bundles) run on the CPU until the device kernels read them.
    for (const LayerWeights& L : w.layers)
        if (L.lat.quantized() || L.plain_q.active()) {
            const std::string why = "the CUDA backend does not run quantized KV caches (bundle feature kv-quant) yet";
            if (backend == STARKV_BACKEND_AUTO) return unavailable(why);
            fail(STARKV_ERR_UNSUPPORTED, why);
        }
    std::vector<starkv_backend_layer> layers(w.layers.size());
    // STAR-KV layers: per-head ranks and factor pointers, alive until create returns.
    std::vector<std::vector<int32_t>> ranks(w.layers.size());
    std::vector<std::vector<const float*>> k_a(w.layers.size()), k_u(w.layers.size());
    for (size_t i = 0; i < layers.size(); ++i) {
        const LayerWeights& L = w.layers[i];
        layers[i] = {L.attn_norm.data(), L.wq.data.data(), L.wk.data.data(), L.wv.data.data(), L.wo.data.data(),
                     L.ffn_norm.data(), L.w_gate.data.data(), L.w_up.data.data(), L.w_down.data.data(),
                     nullptr, nullptr, nullptr, 0, nullptr, nullptr};
        if (!L.lat.active()) continue;
        for (size_t h = 0; h < L.lat.k_a.size(); ++h) {
            ranks[i].push_back(L.lat.k_a[h].rows);
            k_a[i].push_back(L.lat.k_a[h].data.data());
            k_u[i].push_back(L.lat.k_u[h].data.data());
        }
        layers[i].k_rank = ranks[i].data();
        layers[i].k_a = k_a[i].data();
        layers[i].k_u = k_u[i].data();
        layers[i].v_rank = L.lat.v_a.rows;
        layers[i].v_a = L.lat.v_a.data.data();
        layers[i].v_u = L.lat.v_u.data.data();
    }
    starkv_backend_model d{};
    d.struct_size = sizeof d;
    d.n_vocab = c.n_vocab;
    d.n_embd = c.n_embd;
    d.n_ff = c.n_ff;
    d.n_layer = c.n_layer;
    d.n_head = c.n_head;
    d.n_head_kv = c.n_head_kv;
    d.head_dim = c.head_dim;
    d.n_ctx = n_ctx;
    d.max_tokens = Context::kMicroBatch;
    d.rms_eps = c.rms_eps;
    d.rope_layout = c.rope.layout == RopeLayout::Adjacent ? STARKV_ROPE_ADJACENT : STARKV_ROPE_HALF_SPLIT;
    d.rope_n_dims = c.rope.n_dims;
    d.rope_inv_freq = model.rope().inv_freq().data();
    // bf16 (default: weights and KV), f32, f16 (weights; KV stays fp32: the
    // attention kernels read fp32 or bf16); the environment overrides the params.
    const char* env = std::getenv("STARKV_CUDA_DTYPE");
    const std::string dt = env && *env                                ? env
                           : device_type == STARKV_DEVICE_TYPE_F32 ? "f32"
                           : device_type == STARKV_DEVICE_TYPE_F16 ? "f16"
                                                                    : "bf16";
    if (dt != "f32" && dt != "bf16" && dt != "f16")
        fail(STARKV_ERR_INVALID_ARGUMENT, "STARKV_CUDA_DTYPE '" + dt + "' is not f32, bf16 or f16");
    d.weight_dtype = dt == "bf16" ? STARKV_DTYPE_BF16 : dt == "f16" ? STARKV_DTYPE_F16 : STARKV_DTYPE_F32;
    d.kv_dtype = dt == "bf16" ? STARKV_DTYPE_BF16 : STARKV_DTYPE_F32;
    d.device = device;
    d.tok_embd = w.tok_embd.data.data();
    d.output_norm = w.output_norm.data();
    d.output = w.lm_head().data.data();
    d.layers = layers.data();
    void* handle = nullptr;
    if (int32_t st = api->create(&d, &handle, msg, sizeof msg); st != STARKV_OK)
        fail(static_cast<starkv_status>(st), std::string("cuda: ") + msg);
    auto fwd = std::make_unique<DeviceForward>(api, handle);
    // Checked on what create really took (cuBLASLt workspaces and allocator
    // rounding included), then given back at once.
    if (memory_limit && fwd->device_bytes() > memory_limit) {
        const std::string why = "the context needs " + std::to_string(fwd->device_bytes()) + " bytes on device " +
                                std::to_string(device) + ", over its device_memory_limit of " +
                                std::to_string(memory_limit);
        fwd.reset();
        if (backend == STARKV_BACKEND_AUTO) return unavailable(why);
        fail(STARKV_ERR_OUT_OF_MEMORY, why);
    }
    log(STARKV_LOG_INFO, "backend cuda: device " + std::to_string(device) + ", " + dt + " weights");
    return fwd;
}

}  // namespace starkv::backend
