// Read-only memory mapping of a whole file, with bounds-checked views.
// Every parser reads through ByteReader so that a truncated or corrupt file
// is an Error, never an out-of-bounds read.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "core/error.h"

namespace starkv {

class MappedFile {
public:
    // Throws Error(STARKV_ERR_IO) when the file cannot be opened or mapped.
    explicit MappedFile(const std::string& path);
    ~MappedFile();
    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;

    const uint8_t* data() const { return data_; }
    size_t size() const { return size_; }
    const std::string& path() const { return path_; }

private:
    std::string path_;
    const uint8_t* data_ = nullptr;
    size_t size_ = 0;
};

// Sequential little-endian reader over [data, data + size).
class ByteReader {
public:
    ByteReader(const uint8_t* data, size_t size, std::string what)
        : data_(data), size_(size), what_(std::move(what)) {}

    size_t offset() const { return pos_; }
    size_t remaining() const { return size_ - pos_; }
    void seek(size_t pos) {
        if (pos > size_) corrupt(what_ + ": offset " + std::to_string(pos) + " past end of file");
        pos_ = pos;
    }
    void need(size_t n) const {
        if (n > size_ - pos_)
            corrupt(what_ + ": truncated at offset " + std::to_string(pos_) + " (need " +
                    std::to_string(n) + " bytes, " + std::to_string(size_ - pos_) + " left)");
    }
    template <typename T>
    T read() {
        need(sizeof(T));
        T v;
        std::memcpy(&v, data_ + pos_, sizeof(T));
        pos_ += sizeof(T);
        return v;
    }
    std::string_view read_bytes(size_t n) {
        need(n);
        std::string_view s(reinterpret_cast<const char*>(data_ + pos_), n);
        pos_ += n;
        return s;
    }
    const uint8_t* ptr() const { return data_ + pos_; }

private:
    const uint8_t* data_;
    size_t size_;
    size_t pos_ = 0;
    std::string what_;
};

}  // namespace starkv
