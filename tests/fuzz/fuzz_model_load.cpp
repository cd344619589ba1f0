// libFuzzer target over the model readers: the input is written to a file and
// loaded exactly as starkv_model_load would (format detected by magic: GGUF or
// bundle), then the weights are built. A bad input must end in starkv::Error;
// any crash, sanitizer report, or other exception (e.g. bad_alloc from a size
// nobody checked) is a bug. Seeds: tests/fuzz/corpus (scripts/fuzz.sh).
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "core/error.h"
#include "model/model_source.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static const std::string path = "/tmp/starkv_fuzz_" + std::to_string(::getpid()) + ".bin";
    FILE* f = std::fopen(path.c_str(), "wb");
    if (!f) return 0;
    if (size) std::fwrite(data, 1, size, f);
    std::fclose(f);
    try {
        starkv::ModelSource src = starkv::open_model_source(path, nullptr);
        (void)starkv::build_model(src, nullptr);
    } catch (const starkv::Error&) {
    }
    return 0;
}
