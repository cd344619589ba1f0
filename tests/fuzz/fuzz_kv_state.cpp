// libFuzzer target: restoring a saved KV state (kv_state_input.h says how an
// input is read). A bad state must end in starkv::Error; a restored one must
// save and restore to the same rows; anything else is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "kv_state_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (starkv_fuzz::restore_kv_state_input(data, size) == starkv_fuzz::KvStateOutcome::Broken) std::abort();
    return 0;
}
