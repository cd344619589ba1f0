#include "core/log.h"

#include <mutex>

namespace starkv {
namespace {
std::mutex g_log_mutex;
starkv_log_fn g_log_fn = nullptr;
void* g_log_user = nullptr;
}  // namespace

void set_log_callback(starkv_log_fn fn, void* user_data) {
    std::lock_guard<std::mutex> lock(g_log_mutex);
    g_log_fn = fn;
    g_log_user = user_data;
}

void log(starkv_log_level level, const std::string& message) {
    std::lock_guard<std::mutex> lock(g_log_mutex);
    if (g_log_fn) g_log_fn(level, message.c_str(), g_log_user);
}

}  // namespace starkv
