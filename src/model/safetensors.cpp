#include "model/safetensors.h"

#include <algorithm>
#include <bit>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "model/dequant.h"

namespace starkv {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; a big-endian host would need byte swaps");

namespace {

// The format's own reference implementation refuses headers above 100 MB.
constexpr uint64_t kMaxHeaderBytes = 100u << 20;
// Far more than any real tensor has; keeps the element-count product small.
constexpr size_t kMaxRank = 8;

using json = nlohmann::json;

uint64_t json_u64(const json& v, const std::string& what) {
    if (v.is_number_unsigned()) return v.get<uint64_t>();
    if (v.is_number_integer() && v.get<int64_t>() >= 0) return static_cast<uint64_t>(v.get<int64_t>());
    corrupt(what + " is not a non-negative integer");
}

SafetensorsTensor parse_entry(const std::string& name, const json& e, uint64_t data_begin,
                              uint64_t data_size, const std::string& where) {
    const std::string what = where + ": tensor '" + name + "'";
    if (!e.is_object()) corrupt(what + " is not an object");
    SafetensorsTensor t;
    t.name = name;

    auto dt = e.find("dtype");
    if (dt == e.end() || !dt->is_string()) corrupt(what + " has no string 'dtype'");
    t.dtype = dt->get<std::string>();
    const size_t esize = safetensors_dtype_size(t.dtype);
    if (esize == 0) unsupported(what + " has unknown dtype '" + t.dtype + "'");

    auto sh = e.find("shape");
    if (sh == e.end() || !sh->is_array()) corrupt(what + " has no array 'shape'");
    if (sh->size() > kMaxRank) corrupt(what + " has rank " + std::to_string(sh->size()));
    uint64_t n = 1;
    for (const json& d : *sh) {
        uint64_t dim = json_u64(d, what + " shape entry");
        // Every element occupies bytes inside the file, so no dimension or
        // product may exceed the data size (this also rules out overflow).
        if (dim > data_size) corrupt(what + " dimension " + std::to_string(dim) + " exceeds the file");
        n *= dim;
        if (n > data_size) corrupt(what + " has more elements than the file holds");
        t.shape.push_back(static_cast<int64_t>(dim));
    }
    t.n_elems = n;

    auto off = e.find("data_offsets");
    if (off == e.end() || !off->is_array() || off->size() != 2)
        corrupt(what + " has no [begin, end] 'data_offsets'");
    const uint64_t b = json_u64((*off)[0], what + " data_offsets[0]");
    const uint64_t en = json_u64((*off)[1], what + " data_offsets[1]");
    if (b > en || en > data_size)
        corrupt(what + " data_offsets [" + std::to_string(b) + ", " + std::to_string(en) +
                ") out of the data section (" + std::to_string(data_size) + " bytes)");
    if (en - b != n * esize)  // n <= data_size and esize <= 8: no overflow
        corrupt(what + " holds " + std::to_string(en - b) + " bytes, its shape and dtype need " +
                std::to_string(n * esize));
    t.offset = data_begin + b;
    t.n_bytes = en - b;
    return t;
}

}  // namespace

size_t safetensors_dtype_size(const std::string& d) {
    if (d == "F64" || d == "I64" || d == "U64") return 8;
    if (d == "F32" || d == "I32" || d == "U32") return 4;
    if (d == "F16" || d == "BF16" || d == "I16" || d == "U16") return 2;
    if (d == "I8" || d == "U8" || d == "BOOL" || d == "F8_E4M3" || d == "F8_E5M2") return 1;
    return 0;
}

SafetensorsFile::SafetensorsFile(const std::string& path) : file_(path) {
    ByteReader r(file_.data(), file_.size(), path);
    const uint64_t hlen = r.read<uint64_t>();
    if (hlen > kMaxHeaderBytes)
        corrupt(path + ": header length " + std::to_string(hlen) + " exceeds 100 MB");
    if (hlen > r.remaining())
        corrupt(path + ": header length " + std::to_string(hlen) + " past end of file (" +
                std::to_string(file_.size()) + " bytes)");
    const std::string_view text = r.read_bytes(static_cast<size_t>(hlen));
    const uint64_t data_begin = r.offset();
    const uint64_t data_size = r.remaining();

    // No exceptions from the parser: a discarded value means bad JSON.
    const json header = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
    if (header.is_discarded()) corrupt(path + ": header is not valid JSON");
    if (!header.is_object()) corrupt(path + ": header is not a JSON object");

    try {
        for (auto it = header.begin(); it != header.end(); ++it) {
            if (it.key() == "__metadata__") continue;  // free-form strings; nothing we need
            tensors_.push_back(parse_entry(it.key(), it.value(), data_begin, data_size, path));
        }
    } catch (const json::exception& e) {
        corrupt(path + ": malformed header (" + e.what() + ")");
    }

    // Tensors must not share bytes: sort by offset and check neighbours.
    std::sort(tensors_.begin(), tensors_.end(),
              [](const SafetensorsTensor& a, const SafetensorsTensor& b) {
                  return a.offset != b.offset ? a.offset < b.offset : a.n_bytes < b.n_bytes;
              });
    for (size_t i = 1; i < tensors_.size(); ++i) {
        const auto& p = tensors_[i - 1];
        const auto& c = tensors_[i];
        if (p.offset + p.n_bytes > c.offset)
            corrupt(path + ": tensors '" + p.name + "' and '" + c.name + "' overlap");
    }
    for (size_t i = 0; i < tensors_.size(); ++i) by_name_[tensors_[i].name] = i;
}

const SafetensorsTensor* SafetensorsFile::find(const std::string& name) const {
    auto it = by_name_.find(name);
    return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

void SafetensorsFile::read_f32(const SafetensorsTensor& t, float* dst) const {
    // Offsets were checked at open; recheck cheaply in case t came from elsewhere.
    if (t.offset > file_.size() || t.n_bytes > file_.size() - t.offset)
        corrupt(path() + ": tensor '" + t.name + "' past end of file");
    const uint8_t* src = file_.data() + t.offset;
    GgmlType type;
    if (t.dtype == "F32") type = GgmlType::F32;
    else if (t.dtype == "F16") type = GgmlType::F16;
    else if (t.dtype == "BF16") type = GgmlType::BF16;
    else unsupported(path() + ": tensor '" + t.name + "' has dtype " + t.dtype +
                     " (only F32, F16 and BF16 are supported)");
    if (t.n_bytes != t.n_elems * safetensors_dtype_size(t.dtype))
        corrupt(path() + ": tensor '" + t.name + "' size does not match its shape");
    dequantize(type, src, dst, static_cast<size_t>(t.n_elems));
}

const uint8_t* SafetensorsFile::bytes(const SafetensorsTensor& t) const {
    if (t.offset > file_.size() || t.n_bytes > file_.size() - t.offset)
        corrupt(path() + ": tensor '" + t.name + "' past end of file");
    return file_.data() + t.offset;
}

std::vector<std::pair<const SafetensorsTensor*, const uint8_t*>> SafetensorsSet::entries() const {
    std::vector<std::pair<const SafetensorsTensor*, const uint8_t*>> out;
    for (const auto& [name, ref] : by_name_) out.emplace_back(ref.tensor, files_[ref.file]->bytes(*ref.tensor));
    return out;
}

SafetensorsSet SafetensorsSet::open_file(const std::string& path) {
    SafetensorsSet s;
    s.files_.push_back(std::make_unique<SafetensorsFile>(path));
    for (const auto& t : s.files_[0]->tensors()) s.by_name_[t.name] = Ref{0, &t};
    return s;
}

SafetensorsSet SafetensorsSet::open_index(const std::string& index_path) {
    namespace fs = std::filesystem;
    MappedFile f(index_path);
    const auto* p = reinterpret_cast<const char*>(f.data());
    const json idx = json::parse(p, p + f.size(), nullptr, /*allow_exceptions=*/false);
    if (idx.is_discarded() || !idx.is_object()) corrupt(index_path + ": not a JSON object");
    auto wm = idx.find("weight_map");
    if (wm == idx.end() || !wm->is_object() || wm->empty())
        corrupt(index_path + ": no 'weight_map' object");

    const fs::path dir = fs::path(index_path).parent_path();
    SafetensorsSet s;
    std::map<std::string, size_t> file_index;
    for (auto it = wm->begin(); it != wm->end(); ++it) {
        if (!it.value().is_string())
            corrupt(index_path + ": weight_map entry '" + it.key() + "' is not a file name");
        const std::string fname = it.value().get<std::string>();
        // Shards live beside the index; a path elsewhere is refused.
        if (fname.empty() || fname.find('/') != std::string::npos ||
            fname.find('\\') != std::string::npos || fname == "." || fname == "..")
            corrupt(index_path + ": shard name '" + fname + "' is not a plain file name");
        auto [fi, inserted] = file_index.try_emplace(fname, s.files_.size());
        if (inserted) s.files_.push_back(std::make_unique<SafetensorsFile>((dir / fname).string()));
        const SafetensorsTensor* t = s.files_[fi->second]->find(it.key());
        if (!t) corrupt(index_path + ": tensor '" + it.key() + "' is not in " + fname);
        s.by_name_[it.key()] = Ref{fi->second, t};
    }
    return s;
}

SafetensorsSet SafetensorsSet::open_dir(const std::string& dir) {
    namespace fs = std::filesystem;
    const fs::path index = fs::path(dir) / "model.safetensors.index.json";
    std::error_code ec;
    if (fs::exists(index, ec)) return open_index(index.string());
    const fs::path single = fs::path(dir) / "model.safetensors";
    if (!fs::exists(single, ec))
        fail(STARKV_ERR_IO, dir + ": neither model.safetensors nor model.safetensors.index.json");
    return open_file(single.string());
}

const SafetensorsTensor* SafetensorsSet::find(const std::string& name) const {
    auto it = by_name_.find(name);
    return it == by_name_.end() ? nullptr : it->second.tensor;
}

void SafetensorsSet::read_f32(const SafetensorsTensor& t, float* dst) const {
    auto it = by_name_.find(t.name);
    if (it == by_name_.end() || it->second.tensor != &t)
        fail(STARKV_ERR_INTERNAL, "tensor '" + t.name + "' does not belong to this set");
    files_[it->second.file]->read_f32(t, dst);
}

std::vector<TensorInfo> SafetensorsSet::tensor_infos() const {
    std::vector<TensorInfo> rows;
    for (const auto& f : files_)
        for (const auto& t : f->tensors())
            rows.push_back(TensorInfo{t.name, t.dtype, t.shape, t.offset, t.n_bytes});
    return rows;
}

}  // namespace starkv
