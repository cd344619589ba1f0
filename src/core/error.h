// Internal error type. The core throws starkv::Error; the C ABI layer
// (src/api) catches it and turns it into a starkv_status plus the thread's
// last-error message. Nothing else crosses the ABI.
#pragma once

#include <stdexcept>
#include <string>

#include "starkv/starkv.h"

namespace starkv {

class Error : public std::runtime_error {
public:
    Error(starkv_status status, std::string message)
        : std::runtime_error(std::move(message)), status_(status) {}
    starkv_status status() const noexcept { return status_; }

private:
    starkv_status status_;
};

[[noreturn]] inline void fail(starkv_status status, const std::string& message) {
    throw Error(status, message);
}
[[noreturn]] inline void corrupt(const std::string& message) { fail(STARKV_ERR_CORRUPT, message); }
[[noreturn]] inline void unsupported(const std::string& message) {
    fail(STARKV_ERR_UNSUPPORTED, message);
}

}  // namespace starkv
