#include "bundle/reader.h"

#include <zstd.h>

#include <memory>
#include <nlohmann/json.hpp>

#include "bundle/format.h"
#include "bundle/kv_quant_plan.h"
#include "bundle/metadata.h"
#include "core/error.h"
#include "core/mapped_file.h"
#include "core/parallel_jobs.h"
#include "model/dequant.h"

namespace starkv {

using json = nlohmann::json;
namespace b = bundle;

namespace {

struct Layout {
    std::shared_ptr<MappedFile> file;
    b::Header header;
    json metadata;
    std::vector<b::DirEntry> entries;
};

// Optional-feature evolution: a key this reader does not know is ignored, a
// feature listed in required_features that it does not know is refused.
bool feature_known(const std::string& f) { return f == "kv-lowrank" || f == "kv-quant" || f == "kv-quant-v2"; }

void check_metadata(const json& md) {
    if (!md.is_object()) corrupt("bundle: metadata is not a JSON object");
    if (auto rf = md.find("required_features"); rf != md.end()) {
        if (!rf->is_array()) corrupt("bundle: metadata required_features is not an array");
        for (const json& f : *rf) {
            if (!f.is_string()) corrupt("bundle: metadata required_features holds a non-string");
            if (!feature_known(f.get<std::string>()))
                unsupported("bundle requires feature '" + f.get<std::string>() +
                            "' that this starkv does not support; upgrade starkv");
        }
    }
    if (auto c = md.find("compression"); c != md.end()) {
        if (!c->is_object()) corrupt("bundle: metadata compression is not an object");
        if (auto kv = c->find("kv"); kv != c->end() && *kv != "none" && *kv != "star-kv")
            unsupported("bundle: KV compression " + kv->dump() + " is not supported by this starkv");
    }
}

Layout open_layout(const std::string& path) {
    Layout L;
    L.file = std::make_shared<MappedFile>(path);
    const uint8_t* base = L.file->data();
    const size_t size = L.file->size();
    L.header = b::decode_header(base, size);
    const b::Header& h = L.header;
    if (b::xxh64(base + h.metadata_offset, h.metadata_size) != h.metadata_xxh64)
        corrupt("bundle: metadata checksum mismatch (corrupt metadata)");
    if (b::xxh64(base + h.directory_offset, h.directory_size) != h.directory_xxh64)
        corrupt("bundle: directory checksum mismatch (corrupt directory)");
    const char* m = reinterpret_cast<const char*>(base + h.metadata_offset);
    L.metadata = json::parse(m, m + h.metadata_size, nullptr, /*allow_exceptions=*/false);
    if (L.metadata.is_discarded()) corrupt("bundle: metadata is not valid JSON");
    check_metadata(L.metadata);
    L.entries = b::decode_directory(base + h.directory_offset, static_cast<size_t>(h.directory_size), h);
    return L;
}

const json& section(const json& md, const char* key) {
    auto it = md.find(key);
    if (it == md.end()) corrupt(std::string("bundle: metadata has no '") + key + "'");
    return *it;
}

// Upper bound of the raw bytes a model of this config can need (every weight
// in F32), plus room for small extra tensors: a directory claiming more is
// refused before anything is allocated.
uint64_t raw_budget(const ModelConfig& c) {
    const uint64_t e = static_cast<uint64_t>(c.n_embd), q = static_cast<uint64_t>(c.n_head) * c.head_dim,
                   kv = static_cast<uint64_t>(c.n_head_kv) * c.head_dim, ff = static_cast<uint64_t>(c.n_ff);
    const uint64_t per_layer = 2 * e + e * q * 2 + e * kv * 2 + 3 * e * ff;
    const uint64_t params = 2 * static_cast<uint64_t>(c.n_vocab) * e + e + static_cast<uint64_t>(c.n_layer) * per_layer;
    return params * 4 + (64ull << 20);
}

ModelSource open_bundle_source_impl(const std::string& path, const ProgressFn& progress) {
    Layout L = open_layout(path);
    ModelSource src;
    src.format = "bundle";
    src.label = "bundle '" + path + "'";
    src.config = b::config_from_json(section(L.metadata, "model"));
    src.vocab = b::vocab_from_json(section(L.metadata, "tokenizer"));
    src.config.validate();
    if (auto c = L.metadata.find("compression"); c != L.metadata.end())
        if (auto q = c->find("kv_quant"); q != c->end()) {
            if (!q->is_object() || !q->contains("layers")) corrupt("bundle: compression.kv_quant has no 'layers'");
            src.kv_quant = bundle::kv_quant_layers_from_json((*q)["layers"], src.config);
        }

    const size_t n = L.entries.size();
    uint64_t total_raw = 0;
    for (const b::DirEntry& e : L.entries) total_raw += e.raw_size;  // each < 2^43: no overflow
    if (total_raw > raw_budget(src.config))
        corrupt("bundle: the directory claims " + std::to_string(total_raw) +
                " bytes of tensors, more than the model config allows");

    const uint8_t* base = L.file->data();
    std::vector<std::shared_ptr<uint8_t[]>> buffers(n);
    std::vector<const uint8_t*> views(n);
    run_jobs(
        n,
        [&](size_t i) {
            const b::DirEntry& e = L.entries[i];
            const uint8_t* stored = base + e.offset;
            const std::string what = "bundle: tensor '" + e.name + "'";
            if (e.codec == b::Codec::Raw) {
                views[i] = stored;
            } else {
                const unsigned long long fsize = ZSTD_getFrameContentSize(stored, e.stored_size);
                if (fsize != e.raw_size) corrupt(what + ": the zstd frame does not hold " + std::to_string(e.raw_size) + " bytes");
                std::shared_ptr<uint8_t[]> buf(new uint8_t[e.raw_size ? e.raw_size : 1]);
                const size_t got = ZSTD_decompress(buf.get(), e.raw_size, stored, e.stored_size);
                if (ZSTD_isError(got) || got != e.raw_size)
                    corrupt(what + ": zstd data is corrupt" +
                            (ZSTD_isError(got) ? std::string(" (") + ZSTD_getErrorName(got) + ")" : std::string()));
                views[i] = buf.get();
                buffers[i] = std::move(buf);
            }
            if (b::xxh64(views[i], e.raw_size) != e.xxh64) corrupt(what + ": checksum mismatch (corrupt data)");
        },
        [&](size_t done) { return !progress || progress(static_cast<float>(done) / static_cast<float>(n)); });

    for (size_t i = 0; i < n; ++i) {
        const b::DirEntry& e = L.entries[i];
        SourceTensor t;
        t.name = e.name;
        t.dtype = e.dtype;
        t.dtype_name = ggml_type_name(e.dtype);
        t.shape = e.shape;
        t.data = views[i];
        t.n_bytes = static_cast<size_t>(e.raw_size);
        src.tensors.push_back(std::move(t));
        src.infos.push_back(TensorInfo{e.name, ggml_type_name(e.dtype), e.shape, e.offset, e.stored_size});
        if (buffers[i]) src.owners.push_back(std::move(buffers[i]));
    }
    src.owners.push_back(std::move(L.file));
    return src;
}

}  // namespace

bool is_bundle_magic(const uint8_t* data, size_t size) { return b::has_magic(data, size); }

ModelSource open_bundle_source(const std::string& path, const ProgressFn& progress) {
    try {
        return open_bundle_source_impl(path, progress);
    } catch (const json::exception& e) {
        corrupt("bundle: malformed metadata (" + std::string(e.what()) + ")");
    }
}

std::string describe_bundle(const std::string& path) {
    try {
        Layout L = open_layout(path);
        const json& md = L.metadata;
        const ModelConfig c = b::config_from_json(section(md, "model"));
        const Vocab v = b::vocab_from_json(section(md, "tokenizer"));
        json out = json::object();  // not null: see pack_bundle (writer.cpp)
        out["path"] = path;
        out["file_size"] = L.header.file_size;
        out["format_version"] = std::to_string(L.header.major) + "." + std::to_string(L.header.minor);
        out["required_features"] = md.value("required_features", json::array());
        out["model"] = b::config_to_json(c);
        out["tokenizer"] = {{"kind", v.kind == TokenizerKind::Spm ? "spm" : "bpe"},
                            {"n_tokens", v.tokens.size()},
                            {"n_merges", v.merges.size()},
                            {"pre", section(md, "tokenizer").value("pre", json())},
                            {"bos", v.bos},
                            {"eos", v.eos},
                            {"unk", v.unk},
                            {"pad", v.pad},
                            {"add_bos", v.add_bos},
                            {"add_space_prefix", v.add_space_prefix}};
        out["compression"] = md.value("compression", json::object());
        out["provenance"] = md.value("provenance", json::object());
        json tensors = json::array();
        uint64_t stored = 0, raw = 0;
        for (const b::DirEntry& e : L.entries) {
            tensors.push_back({{"name", e.name},
                               {"dtype", ggml_type_name(e.dtype)},
                               {"shape", e.shape},
                               {"codec", e.codec == b::Codec::Zstd ? "zstd" : "raw"},
                               {"offset", e.offset},
                               {"stored_size", e.stored_size},
                               {"raw_size", e.raw_size},
                               {"xxh64", b::hex64(e.xxh64)}});
            stored += e.stored_size;
            raw += e.raw_size;
        }
        out["tensors"] = std::move(tensors);
        out["totals"] = {{"stored_size", stored}, {"raw_size", raw}};
        return out.dump(-1, ' ', false, json::error_handler_t::replace);
    } catch (const json::exception& e) {
        corrupt("bundle: malformed metadata (" + std::string(e.what()) + ")");
    }
}

}  // namespace starkv
