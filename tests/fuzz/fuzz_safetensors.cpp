// libFuzzer target: one .safetensors file (header JSON + data), opened with
// SafetensorsFile, every tensor's bytes fetched and the small float ones
// decoded. A bad file must end in starkv::Error; anything else is a bug.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/error.h"
#include "fuzz_util.h"
#include "model/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static const std::string path = starkv_fuzz::scratch_dir() + "/model.safetensors";
    if (!starkv_fuzz::write_file(path, data, size)) return 0;
    try {
        starkv::SafetensorsFile f(path);
        std::vector<float> buf;
        for (const auto& t : f.tensors()) {
            (void)f.find(t.name);
            (void)f.bytes(t);
            if (t.n_elems > (1u << 20)) continue;
            buf.resize(t.n_elems);
            try {
                f.read_f32(t, buf.data());
            } catch (const starkv::Error&) {
            }
        }
    } catch (const starkv::Error&) {
    }
    return 0;
}
