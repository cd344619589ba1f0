// Backend selection through the C API, host side (runs in CI without a GPU):
// CUDA without a device/library fails cleanly with STARKV_ERR_NO_DEVICE and a
// message; AUTO then runs on the CPU and says why through the log callback.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "starkv/starkv.h"
#include "test_paths.h"

namespace {

std::vector<std::string> g_logs;
void collect(starkv_log_level level, const char* msg, void*) {
    if (level >= STARKV_LOG_WARN) g_logs.emplace_back(msg);
}

struct BackendSelect : ::testing::Test {
    starkv_model* model = nullptr;
    void SetUp() override {
        ASSERT_EQ(starkv_model_load(starkv_test::shared_path("models/stories260K.gguf").c_str(), nullptr, &model),
                  STARKV_OK)
            << starkv_last_error();
        g_logs.clear();
        starkv_set_log_callback(collect, nullptr);
    }
    void TearDown() override {
        starkv_set_log_callback(nullptr, nullptr);
        starkv_model_free(model);
    }
    starkv_status create(int backend, starkv_context** ctx) {
        starkv_context_params p;
        starkv_context_params_default(&p);
        p.n_ctx = 64;
        p.backend = backend;
        return starkv_context_create(model, &p, ctx);
    }
};

}  // namespace

TEST_F(BackendSelect, DefaultIsCpu) {
    starkv_context_params p;
    starkv_context_params_default(&p);
    EXPECT_EQ(p.backend, STARKV_BACKEND_CPU);
    EXPECT_EQ(p.device, 0);
    EXPECT_EQ(p.device_memory_limit, 0u);
    EXPECT_EQ(p.device_type, STARKV_DEVICE_TYPE_DEFAULT);
    EXPECT_EQ(p.struct_size, sizeof p);
    EXPECT_STREQ(starkv_status_name(STARKV_ERR_NO_DEVICE), "STARKV_ERR_NO_DEVICE");
}

TEST_F(BackendSelect, BadBackendIsInvalid) {
    starkv_context* ctx = nullptr;
    EXPECT_EQ(create(7, &ctx), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(ctx, nullptr);
}

// Each ctest case runs in its own process, so this environment variable is
// read by the first (and only) load of the backend.
TEST_F(BackendSelect, MissingLibraryIsNoDevice) {
    setenv("STARKV_CUDA_LIBRARY", "/nonexistent/libstarkv_cuda.so", 1);
    starkv_context* ctx = nullptr;
    const starkv_status st = create(STARKV_BACKEND_CUDA, &ctx);
    unsetenv("STARKV_CUDA_LIBRARY");
    if (st == STARKV_OK) {  // an earlier test of this process loaded a working backend
        starkv_context_free(ctx);
        GTEST_SKIP() << "backend already loaded in this process";
    }
    EXPECT_EQ(st, STARKV_ERR_NO_DEVICE);
    EXPECT_NE(std::string(starkv_last_error()).find("/nonexistent/libstarkv_cuda.so"), std::string::npos)
        << starkv_last_error();
    EXPECT_EQ(ctx, nullptr);
}

TEST_F(BackendSelect, CudaWorksOrSaysWhy) {
    starkv_context* ctx = nullptr;
    const starkv_status st = create(STARKV_BACKEND_CUDA, &ctx);
    if (st == STARKV_OK) {
        starkv_token t = 1;
        EXPECT_EQ(starkv_context_decode(ctx, t), STARKV_OK) << starkv_last_error();
        starkv_context_free(ctx);
        return;
    }
    EXPECT_EQ(st, STARKV_ERR_NO_DEVICE);
    EXPECT_GT(std::string(starkv_last_error()).size(), 10u);
    EXPECT_EQ(ctx, nullptr);
}

TEST_F(BackendSelect, AutoFallsBackToCpuAndLogs) {
    starkv_context* probe = nullptr;
    const bool gpu = create(STARKV_BACKEND_CUDA, &probe) == STARKV_OK;
    starkv_context_free(probe);
    g_logs.clear();
    starkv_context* ctx = nullptr;
    ASSERT_EQ(create(STARKV_BACKEND_AUTO, &ctx), STARKV_OK) << starkv_last_error();
    starkv_token t = 1;
    EXPECT_EQ(starkv_context_decode(ctx, t), STARKV_OK);
    starkv_context_free(ctx);
    if (!gpu) {
        ASSERT_EQ(g_logs.size(), 1u);
        EXPECT_NE(g_logs[0].find("using the CPU"), std::string::npos) << g_logs[0];
    }
}

// A CPU context ignores the device limit (documented): even 1 byte is accepted.
TEST_F(BackendSelect, CpuIgnoresTheDeviceMemoryLimit) {
    starkv_context_params p;
    starkv_context_params_default(&p);
    p.n_ctx = 64;
    p.device_memory_limit = 1;
    starkv_context* ctx = nullptr;
    ASSERT_EQ(starkv_context_create(model, &p, &ctx), STARKV_OK) << starkv_last_error();
    starkv_context_free(ctx);
}

TEST_F(BackendSelect, BadDeviceTypeIsInvalid) {
    starkv_context_params p;
    starkv_context_params_default(&p);
    p.n_ctx = 64;
    p.device_type = 9;
    starkv_context* ctx = nullptr;
    EXPECT_EQ(starkv_context_create(model, &p, &ctx), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(ctx, nullptr);
}
