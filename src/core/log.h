// Process-wide log sink: the host's callback or nothing. The library never
// writes to stdout/stderr itself.
#pragma once

#include <string>

#include "starkv/starkv.h"

namespace starkv {

void set_log_callback(starkv_log_fn fn, void* user_data);
void log(starkv_log_level level, const std::string& message);

}  // namespace starkv
