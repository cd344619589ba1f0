// One fuzz input for the KV state restore path, shared by the libFuzzer
// target (fuzz_kv_state.cpp) and the unit test that replays its corpus.
// Byte 0 picks how the rest is used, so the fuzzer also gets past the
// checksum and the compression to the record parser:
//   0  a saved state as is
//   1  a saved state whose trailing checksum is recomputed first
//   2  byte 1 = sequence count, the rest a raw payload, wrapped in a valid
//      container (header, layout, zstd frame, checksum) before restoring
#pragma once

#include <xxhash.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "kv/kv_state.h"
#include "kv/page_pool.h"

namespace starkv_fuzz {

inline starkv::RowLayout kv_state_layout() { return starkv::RowLayout(2, 2, {8, 4, 2, 0, 6, 3, 1, 0}); }
inline constexpr uint64_t kKvStateBundle = 0x5EEDB0D1E5ull;
inline constexpr int kKvStatePageTokens = 4;
inline constexpr uint64_t kKvStatePages = 64;

inline starkv::PagePool kv_state_pool() {
    const starkv::RowLayout layout = kv_state_layout();
    starkv::PagePool probe(layout, {kKvStatePageTokens, 1u << 20});
    return starkv::PagePool(layout, {kKvStatePageTokens, probe.page_bytes() * kKvStatePages});
}

enum class KvStateOutcome { Rejected, Restored, Broken };

// Restores the input into a fresh pool; a restored state must save and
// restore again to the same tokens and rows (Broken otherwise).
inline KvStateOutcome restore_kv_state_input(const uint8_t* data, size_t size) {
    using namespace starkv;
    if (size < 1) return KvStateOutcome::Rejected;
    std::vector<uint8_t> buf(data + 1, data + size);
    try {
        if (data[0] % 3 == 2) {
            if (buf.empty()) return KvStateOutcome::Rejected;
            const uint32_t n_seq = buf[0];
            buf = encode_kv_state(kv_state_layout(), kKvStateBundle, n_seq,
                                  std::span<const uint8_t>(buf.data() + 1, buf.size() - 1), 1);
        } else if (data[0] % 3 == 1 && buf.size() >= 8) {
            const uint64_t h = XXH3_64bits(buf.data(), buf.size() - 8);
            for (int i = 0; i < 8; ++i) buf[buf.size() - 8 + i] = static_cast<uint8_t>(h >> (8 * i));
        }
        PagePool pool = kv_state_pool();
        const std::vector<SeqId> ids = restore_kv_state(pool, kKvStateBundle, buf);
        const std::vector<uint8_t> again = save_kv_state(pool, kKvStateBundle, ids, 1);
        PagePool copy = kv_state_pool();
        if (restore_kv_state(copy, kKvStateBundle, again) != ids) return KvStateOutcome::Broken;
        const RowLayout& layout = pool.layout();
        for (SeqId id : ids) {
            if (copy.tokens(id) != pool.tokens(id)) return KvStateOutcome::Broken;
            for (int l = 0; l < layout.n_layer(); ++l)
                for (int h = 0; h < layout.n_head_kv(); ++h)
                    for (KvKind k : {KvKind::K, KvKind::V})
                        for (int pos = 0; pos < pool.length(id); ++pos)
                            if (std::memcmp(pool.row(id, l, h, k, pos), copy.row(id, l, h, k, pos),
                                            layout.row_bytes(l, h, k)) != 0)
                                return KvStateOutcome::Broken;
        }
        return KvStateOutcome::Restored;
    } catch (const Error&) {
        return KvStateOutcome::Rejected;
    }
}

}  // namespace starkv_fuzz
