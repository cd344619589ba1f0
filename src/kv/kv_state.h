// Saved KV state: sequences of a PagePool (token ids and every stream's rows)
// as one self-checking buffer (docs/kv-pool.md has the byte layout). A state
// restores only into a pool of the same bundle (its 64-bit hash, supplied by
// the caller) and row layout; the page size may differ. Restore validates
// everything it reads, like the bundle loader, and changes nothing on failure.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "kv/page_pool.h"

namespace starkv {

inline constexpr uint32_t kKvStateVersion = 1;
inline constexpr size_t kKvStateHeaderBytes = 64;

// seqs in the order given (a sequence that shares leading pages with an
// earlier one is stored as a reference to it plus its own rows). zstd level
// in [1, ZSTD_maxCLevel()].
std::vector<uint8_t> save_kv_state(const PagePool& pool, uint64_t bundle_hash, std::span<const SeqId> seqs,
                                   int zstd_level = 3);

struct KvStateRestoreOptions {
    // >= 0: the state must hold one sequence, restored under this id
    // (otherwise each sequence gets its saved id).
    SeqId target_seq = -1;
    // > 0: every token id must be below it.
    int32_t n_vocab = 0;
};

// Creates the saved sequences (none may exist yet) and returns their ids.
// Errors: STARKV_ERR_CORRUPT (damaged or inconsistent data),
// STARKV_ERR_UNSUPPORTED (a newer format version), STARKV_ERR_INVALID_ARGUMENT
// (another bundle or row layout, an id in use), STARKV_ERR_KV_POOL_FULL,
// STARKV_ERR_OUT_OF_MEMORY.
std::vector<SeqId> restore_kv_state(PagePool& pool, uint64_t bundle_hash, std::span<const uint8_t> state,
                                    const KvStateRestoreOptions& options = {});

// The container around a raw payload (header, row layout, zstd frame,
// checksum): what save_kv_state writes; exposed for tests and the fuzzer.
std::vector<uint8_t> encode_kv_state(const RowLayout& layout, uint64_t bundle_hash, uint32_t n_sequences,
                                     std::span<const uint8_t> raw_payload, int zstd_level = 3);

// Whole-file helpers (STARKV_ERR_IO on failure; reading refuses files over max_bytes).
void write_kv_state_file(const std::string& path, std::span<const uint8_t> state);
std::vector<uint8_t> read_kv_state_file(const std::string& path, uint64_t max_bytes);

}  // namespace starkv
