#include "bundle/format.h"

#include <xxhash.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <set>

#include "core/error.h"
#include "core/mapped_file.h"
#include "model/dequant.h"

namespace starkv::bundle {

static_assert(std::endian::native == std::endian::little, "the bundle format is little-endian");

namespace {

template <typename T>
void put(std::string& s, T v) {
    s.append(reinterpret_cast<const char*>(&v), sizeof v);
}

std::string range_str(uint64_t off, uint64_t size) {
    return "[" + std::to_string(off) + ", +" + std::to_string(size) + ")";
}

// [off, off+size) inside [lo, hi), without overflow.
bool inside(uint64_t off, uint64_t size, uint64_t lo, uint64_t hi) {
    return off >= lo && off <= hi && size <= hi - off;
}

bool overlap(uint64_t a, uint64_t an, uint64_t b, uint64_t bn) {
    return an != 0 && bn != 0 && a < b + bn && b < a + an;  // callers checked both lie in the file
}

}  // namespace

uint64_t xxh64(const void* data, size_t size) { return XXH64(data, size, 0); }

std::string hex64(uint64_t v) {
    static const char* d = "0123456789abcdef";
    std::string s(16, '0');
    for (int i = 15; i >= 0; --i, v >>= 4) s[static_cast<size_t>(i)] = d[v & 15];
    return s;
}

bool has_magic(const uint8_t* data, size_t size) {
    return size >= sizeof kMagic && std::memcmp(data, kMagic, sizeof kMagic) == 0;
}

std::string encode_header(const Header& h) {
    std::string s(reinterpret_cast<const char*>(kMagic), sizeof kMagic);
    put(s, h.major);
    put(s, h.minor);
    put(s, h.header_size);
    put(s, h.file_size);
    put(s, h.data_offset);
    put(s, h.data_size);
    put(s, h.metadata_offset);
    put(s, h.metadata_size);
    put(s, h.metadata_xxh64);
    put(s, h.directory_offset);
    put(s, h.directory_size);
    put(s, h.directory_xxh64);
    s.resize(kHeaderSize - 8, '\0');
    put(s, xxh64(s.data(), s.size()));
    return s;
}

Header decode_header(const uint8_t* data, size_t file_size) {
    if (!has_magic(data, file_size)) corrupt("not a starkv bundle (wrong magic)");
    ByteReader r(data, file_size, "bundle header");
    r.seek(sizeof kMagic);
    Header h;
    h.major = r.read<uint16_t>();
    h.minor = r.read<uint16_t>();
    if (h.major > kVersionMajor)
        unsupported("bundle format version " + std::to_string(h.major) + "." + std::to_string(h.minor) +
                    " is newer than this starkv reads (" + std::to_string(kVersionMajor) + ".x); upgrade starkv");
    if (h.major < 1) corrupt("bundle: invalid format version " + std::to_string(h.major) + "." + std::to_string(h.minor));
    h.header_size = r.read<uint32_t>();
    // A newer minor version may grow the header; its checksum stays at 120.
    if (file_size < kHeaderSize)
        corrupt("bundle: truncated header (" + std::to_string(file_size) + " bytes, need " +
                std::to_string(kHeaderSize) + ")");
    uint64_t stored_hash;
    std::memcpy(&stored_hash, data + kHeaderSize - 8, 8);
    if (xxh64(data, kHeaderSize - 8) != stored_hash) corrupt("bundle: header checksum mismatch (corrupt header)");
    if (h.header_size < kHeaderSize || h.header_size > file_size || h.header_size % kAlignment != 0)
        corrupt("bundle: invalid header size " + std::to_string(h.header_size));
    h.file_size = r.read<uint64_t>();
    h.data_offset = r.read<uint64_t>();
    h.data_size = r.read<uint64_t>();
    h.metadata_offset = r.read<uint64_t>();
    h.metadata_size = r.read<uint64_t>();
    h.metadata_xxh64 = r.read<uint64_t>();
    h.directory_offset = r.read<uint64_t>();
    h.directory_size = r.read<uint64_t>();
    h.directory_xxh64 = r.read<uint64_t>();
    if (h.file_size != file_size)
        corrupt("bundle: the header says " + std::to_string(h.file_size) + " bytes but the file has " +
                std::to_string(file_size) + " (truncated or appended to)");
    const uint64_t lo = h.header_size, hi = file_size;
    if (!inside(h.data_offset, h.data_size, lo, hi) || h.data_offset % kAlignment != 0)
        corrupt("bundle: tensor data section " + range_str(h.data_offset, h.data_size) + " is outside the file");
    if (!inside(h.metadata_offset, h.metadata_size, lo, hi) || h.metadata_size == 0 ||
        h.metadata_size > kMaxMetadataBytes)
        corrupt("bundle: metadata section " + range_str(h.metadata_offset, h.metadata_size) + " is invalid");
    if (!inside(h.directory_offset, h.directory_size, lo, hi) || h.directory_size < 4 ||
        h.directory_size > kMaxDirectoryBytes)
        corrupt("bundle: directory section " + range_str(h.directory_offset, h.directory_size) + " is invalid");
    if (overlap(h.data_offset, h.data_size, h.metadata_offset, h.metadata_size) ||
        overlap(h.data_offset, h.data_size, h.directory_offset, h.directory_size) ||
        overlap(h.metadata_offset, h.metadata_size, h.directory_offset, h.directory_size))
        corrupt("bundle: sections overlap");
    return h;
}

std::string encode_directory(const std::vector<DirEntry>& entries) {
    std::string s;
    put(s, static_cast<uint32_t>(entries.size()));
    for (const DirEntry& e : entries) {
        put(s, static_cast<uint32_t>(e.name.size()));
        s += e.name;
        put(s, e.dtype);
        put(s, static_cast<uint32_t>(e.codec));
        put(s, static_cast<uint32_t>(e.shape.size()));
        for (int64_t d : e.shape) put(s, d);
        put(s, e.offset);
        put(s, e.stored_size);
        put(s, e.raw_size);
        put(s, e.xxh64);
    }
    return s;
}

std::vector<DirEntry> decode_directory(const uint8_t* data, size_t size, const Header& h) {
    ByteReader r(data, size, "bundle directory");
    const uint32_t n = r.read<uint32_t>();
    constexpr size_t kMinEntry = 4 + 1 + 4 + 4 + 4 + 8 + 4 * 8;
    if (n > r.remaining() / kMinEntry)
        corrupt("bundle: directory lists " + std::to_string(n) + " tensors, more than it can hold");
    std::vector<DirEntry> out;
    out.reserve(n);
    std::set<std::string> names;
    for (uint32_t i = 0; i < n; ++i) {
        DirEntry e;
        const uint32_t len = r.read<uint32_t>();
        if (len == 0 || len > kMaxNameBytes) corrupt("bundle: tensor " + std::to_string(i) + " has a name of " + std::to_string(len) + " bytes");
        e.name = std::string(r.read_bytes(len));
        const std::string what = "bundle: tensor '" + e.name + "'";
        if (!names.insert(e.name).second) corrupt(what + " appears twice");
        e.dtype = r.read<uint32_t>();
        const uint32_t codec = r.read<uint32_t>();
        const uint32_t n_dims = r.read<uint32_t>();
        if (n_dims == 0 || n_dims > kMaxDims) corrupt(what + " has " + std::to_string(n_dims) + " dimensions");
        uint64_t n_elems = 1;
        for (uint32_t d = 0; d < n_dims; ++d) {
            const int64_t dim = r.read<int64_t>();
            if (dim <= 0 || dim > (int64_t{1} << 32) || n_elems > (uint64_t{1} << 40) / static_cast<uint64_t>(dim))
                corrupt(what + " has an absurd shape");
            n_elems *= static_cast<uint64_t>(dim);
            e.shape.push_back(dim);
        }
        e.offset = r.read<uint64_t>();
        e.stored_size = r.read<uint64_t>();
        e.raw_size = r.read<uint64_t>();
        e.xxh64 = r.read<uint64_t>();
        if (!ggml_type_supported(e.dtype)) unsupported(what + " has unknown type id " + std::to_string(e.dtype));
        if (codec > static_cast<uint32_t>(Codec::Zstd)) unsupported(what + " has unknown codec " + std::to_string(codec));
        e.codec = static_cast<Codec>(codec);
        const GgmlType type = static_cast<GgmlType>(e.dtype);
        const uint64_t cols = static_cast<uint64_t>(e.shape.back());
        if (cols % ggml_block_elems(type) != 0) corrupt(what + " rows are not a whole number of blocks");
        const uint64_t want = ggml_row_bytes(type, static_cast<size_t>(cols)) * (n_elems / cols);
        if (e.raw_size != want)
            corrupt(what + " claims " + std::to_string(e.raw_size) + " raw bytes, its shape and type need " +
                    std::to_string(want));
        if (e.codec == Codec::Raw ? e.stored_size != e.raw_size : e.stored_size == 0)
            corrupt(what + " has an invalid stored size " + std::to_string(e.stored_size));
        if (!inside(e.offset, e.stored_size, h.data_offset, h.data_offset + h.data_size))
            corrupt(what + " data " + range_str(e.offset, e.stored_size) + " lies outside the data section");
        out.push_back(std::move(e));
    }
    if (r.remaining() != 0) corrupt("bundle: " + std::to_string(r.remaining()) + " stray bytes after the directory");
    std::vector<const DirEntry*> by_offset;
    for (const DirEntry& e : out) by_offset.push_back(&e);
    std::sort(by_offset.begin(), by_offset.end(), [](const DirEntry* a, const DirEntry* b) { return a->offset < b->offset; });
    for (size_t i = 1; i < by_offset.size(); ++i)
        if (by_offset[i - 1]->offset + by_offset[i - 1]->stored_size > by_offset[i]->offset)
            corrupt("bundle: tensors '" + by_offset[i - 1]->name + "' and '" + by_offset[i]->name + "' overlap");
    return out;
}

}  // namespace starkv::bundle
