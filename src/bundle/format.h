// The .skv bundle format (docs/bundle-format.md): constants, the fixed header
// and the binary tensor directory, with encoders (writer, tests) and
// validating decoders (reader). All integers little-endian.
//
//   [0, 128)                 header (fields below; XXH64 of [0,120) at 120)
//   [data_offset, +size)     tensor data: one zstd frame or raw bytes per
//                            tensor, each starting on a 64-byte boundary
//   [metadata_offset, +size) metadata: UTF-8 JSON (config, tokenizer, ...)
//   [directory_offset,+size) tensor directory (binary, below)
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace starkv::bundle {

inline constexpr uint8_t kMagic[8] = {0x89, 'S', 'K', 'V', '\r', '\n', 0x1A, '\n'};
inline constexpr uint16_t kVersionMajor = 1;
inline constexpr uint16_t kVersionMinor = 0;
inline constexpr uint32_t kHeaderSize = 128;
inline constexpr uint64_t kAlignment = 64;




// Sanity bounds: far above any real model, low enough that a hostile value
// cannot make the reader allocate gigabytes.
inline constexpr uint64_t kMaxMetadataBytes = 256ull << 20;
inline constexpr uint64_t kMaxDirectoryBytes = 64ull << 20;
inline constexpr uint32_t kMaxNameBytes = 1024;
inline constexpr uint32_t kMaxDims = 4;

enum class Codec : uint32_t { Raw = 0, Zstd = 1 };

struct Header {
    uint16_t major = kVersionMajor;
    uint16_t minor = kVersionMinor;
    uint32_t header_size = kHeaderSize;
    uint64_t file_size = 0;
    uint64_t data_offset = 0, data_size = 0;
    uint64_t metadata_offset = 0, metadata_size = 0, metadata_xxh64 = 0;
    uint64_t directory_offset = 0, directory_size = 0, directory_xxh64 = 0;
};

struct DirEntry {
    std::string name;            // canonical tensor name
    uint32_t dtype = 0;          // GgmlType id
    Codec codec = Codec::Raw;
    std::vector<int64_t> shape;  // outermost first
    uint64_t offset = 0;         // absolute, in the file
    uint64_t stored_size = 0;    // bytes in the file
    uint64_t raw_size = 0;       // bytes after decompression
    uint64_t xxh64 = 0;          // of the raw bytes
};

bool has_magic(const uint8_t* data, size_t size);

// kHeaderSize bytes, with the header checksum filled in.
std::string encode_header(const Header& h);
std::string encode_directory(const std::vector<DirEntry>& entries);

// Validating decoders: Error(STARKV_ERR_CORRUPT) for anything inconsistent,
// STARKV_ERR_UNSUPPORTED for a newer major version or an unknown dtype/codec.
// decode_header checks the magic, version, header checksum, that file_size is
// the real size and that the sections lie inside the file without overlap.
Header decode_header(const uint8_t* data, size_t file_size);
// Checks every field of every entry (names, dims, sizes against dtype and
// shape, ranges inside the data section, no overlap, no duplicates).
std::vector<DirEntry> decode_directory(const uint8_t* data, size_t size, const Header& h);

uint64_t xxh64(const void* data, size_t size);
std::string hex64(uint64_t v);  // 16 lowercase hex digits

}  // namespace starkv::bundle
