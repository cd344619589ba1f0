#include "bundle/writer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <memory>
#include <nlohmann/json.hpp>

#include "bundle/format.h"
#include "bundle/kv_quant_plan.h"
#include "bundle/metadata.h"
#include "bundle/synthetic.h"
#include "core/error.h"
#include "core/log.h"
#include "core/mapped_file.h"
#include "core/parallel_jobs.h"
#include "model/dequant.h"
#include "model/model.h"
#include "model/model_source.h"
#include "starkv/starkv.h"

namespace starkv {

using json = nlohmann::json;
namespace b = bundle;
namespace fs = std::filesystem;

namespace {

// A temporary file beside the target; removed unless commit() renamed it.
class TempFile {
public:
    explicit TempFile(const std::string& target) : target_(target) {
        fs::path dir = fs::path(target).parent_path();
        if (dir.empty()) dir = ".";
        std::string tmpl = (dir / ("." + fs::path(target).filename().string() + ".tmp-XXXXXX")).string();
        fd_ = ::mkstemp(tmpl.data());
        if (fd_ < 0) fail(STARKV_ERR_IO, "cannot create a file in '" + dir.string() + "': " + std::strerror(errno));
        // A move (no allocation): a copy throwing bad_alloc here would leave the
        // file, since the destructor of a half-built object does not run.
        path_ = std::move(tmpl);
    }
    ~TempFile() {
        if (fd_ >= 0) ::close(fd_);
        if (!committed_) ::unlink(path_.c_str());
    }
    void write_at(uint64_t offset, const void* data, size_t n) {
        const auto* p = static_cast<const uint8_t*>(data);
        while (n > 0) {
            const ssize_t w = ::pwrite(fd_, p, std::min<size_t>(n, 1u << 30), static_cast<off_t>(offset));
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) fail(STARKV_ERR_IO, "cannot write '" + path_ + "': " + std::strerror(errno));
            p += w;
            n -= static_cast<size_t>(w);
            offset += static_cast<uint64_t>(w);
        }
    }
    void commit() {
        if (::fchmod(fd_, 0644) != 0 || ::fsync(fd_) != 0)
            fail(STARKV_ERR_IO, "cannot finish '" + path_ + "': " + std::strerror(errno));
        const int rc = ::close(fd_);
        fd_ = -1;
        if (rc != 0) fail(STARKV_ERR_IO, "cannot close '" + path_ + "': " + std::strerror(errno));
        if (::rename(path_.c_str(), target_.c_str()) != 0)
            fail(STARKV_ERR_IO, "cannot rename to '" + target_ + "': " + std::strerror(errno));
        committed_ = true;
    }

private:
    std::string target_, path_;
    int fd_ = -1;
    bool committed_ = false;
};

// Size and XXH64 of the input: the file, or a directory's regular files
// (name and bytes, in name order).
std::pair<uint64_t, uint64_t> hash_input(const std::string& path) {
    std::unique_ptr<XXH64_state_t, decltype(&XXH64_freeState)> st(XXH64_createState(), XXH64_freeState);
    if (!st) throw std::bad_alloc();
    XXH64_reset(st.get(), 0);
    uint64_t size = 0;
    std::error_code ec;
    std::vector<std::string> files;
    if (fs::is_directory(path, ec)) {
        for (const auto& de : fs::directory_iterator(path, ec))
            if (de.is_regular_file(ec)) files.push_back(de.path().string());
        std::sort(files.begin(), files.end());
    } else {
        files.push_back(path);
    }
    for (const std::string& f : files) {
        MappedFile m(f);
        if (files.size() > 1 || fs::is_directory(path, ec)) {
            const std::string name = fs::path(f).filename().string();
            XXH64_update(st.get(), name.data(), name.size());
        }
        XXH64_update(st.get(), m.data(), m.size());
        size += m.size();
    }
    return {size, XXH64_digest(st.get())};
}

std::string utc_now() {
    const std::time_t t = std::time(nullptr);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

uint64_t align_up(uint64_t x) { return (x + b::kAlignment - 1) / b::kAlignment * b::kAlignment; }

// Steps 2 and 3 of a pack: src's readable tensors then extra, the metadata
// (kv_meta as "compression", provenance), the directory and the header; then
// out is committed.
PackStats write_bundle(const ModelSource& src, const std::vector<SourceTensor>& extra, const json& kv_meta,
                       const json& provenance, TempFile& out, const PackOptions& opt, const ProgressFn& progress) {
    // 2. Tensors: the ones the runtime can read, in source order. A compressed
    // source's old factors are dropped: its metadata no longer applies. The
    // K/V projections of the layers that extra gives latent factors are dropped
    // too: the factors replace them.
    std::vector<std::string> replaced;
    for (const SourceTensor& t : extra) {
        const size_t at = t.name.find("attn_v_lat_a");
        if (at == std::string::npos) continue;
        replaced.push_back(t.name.substr(0, at) + "attn_k.weight");
        replaced.push_back(t.name.substr(0, at) + "attn_v.weight");
    }
    std::vector<const SourceTensor*> tensors;
    for (const SourceTensor& t : src.tensors) {
        if (t.name.find("_lat_") != std::string::npos) continue;
        if (std::find(replaced.begin(), replaced.end(), t.name) != replaced.end()) continue;
        if (!t.data) {
            log(STARKV_LOG_WARN, "pack: skipping tensor '" + t.name + "' of unsupported type " + t.dtype_name);
            continue;
        }
        tensors.push_back(&t);
    }
    for (const SourceTensor& t : extra) tensors.push_back(&t);
    const size_t n = tensors.size();
    std::vector<b::DirEntry> entries(n);
    std::vector<std::vector<uint8_t>> packed(n);  // compressed bytes (empty: stored raw)
    run_jobs(
        n,
        [&](size_t i) {
            const SourceTensor& t = *tensors[i];
            b::DirEntry& e = entries[i];
            e.name = t.name;
            e.dtype = t.dtype;
            e.shape = t.shape;
            e.raw_size = t.n_bytes;
            e.xxh64 = b::xxh64(t.data, t.n_bytes);
            e.codec = b::Codec::Raw;
            e.stored_size = t.n_bytes;
            if (opt.zstd_level == 0 || t.n_bytes == 0) return;
            std::vector<uint8_t> buf(ZSTD_compressBound(t.n_bytes));
            const size_t z = ZSTD_compress(buf.data(), buf.size(), t.data, t.n_bytes, opt.zstd_level);
            if (ZSTD_isError(z)) fail(STARKV_ERR_INTERNAL, std::string("zstd: ") + ZSTD_getErrorName(z));
            if (z >= t.n_bytes) return;  // incompressible: raw is smaller and needs no decoding
            buf.resize(z);
            packed[i] = std::move(buf);
            e.codec = b::Codec::Zstd;
            e.stored_size = z;
        },
        [&](size_t done) { return !progress || progress(static_cast<float>(done) / static_cast<float>(n)); });

    // 3. Layout: header, aligned tensors, metadata, directory.
    b::Header h;
    h.data_offset = b::kHeaderSize;
    uint64_t pos = h.data_offset, raw_total = 0;
    for (size_t i = 0; i < n; ++i) {
        pos = align_up(pos);
        entries[i].offset = pos;
        const void* bytes = packed[i].empty() ? static_cast<const void*>(tensors[i]->data) : packed[i].data();
        out.write_at(pos, bytes, static_cast<size_t>(entries[i].stored_size));
        pos += entries[i].stored_size;
        raw_total += entries[i].raw_size;
        std::vector<uint8_t>().swap(packed[i]);
    }
    h.data_size = pos - h.data_offset;

    // An object from the start: nlohmann's operator[] on a null json marks it an
    // object before allocating one, so a bad_alloc there leaves a json whose
    // destructor crashes (found by tests/robust/test_fault_injection.cpp).
    json md = json::object();
    md["format"] = "starkv-bundle";
    md["required_features"] = json::array();
    // Older readers must refuse a bundle whose K/V live only as latents.
    if (kv_meta.value("kv", "none") != "none") md["required_features"].push_back("kv-lowrank");
    // ... and one whose latents are quantized (rows it could not read).
    if (kv_meta.contains("kv_quant")) {
        md["required_features"].push_back("kv-quant");
        if (const json& q = kv_meta["kv_quant"]; q.is_object() && q.contains("layers") && b::kv_quant_layers_need_v2(q["layers"]))
            md["required_features"].push_back("kv-quant-v2");
    }
    md["model"] = b::config_to_json(src.config);
    md["tokenizer"] = b::vocab_to_json(src.vocab);
    md["compression"] = kv_meta;
    md["provenance"] = provenance;
    const std::string meta = md.dump(-1, ' ', false, json::error_handler_t::replace);
    h.metadata_offset = pos;
    h.metadata_size = meta.size();
    h.metadata_xxh64 = b::xxh64(meta.data(), meta.size());
    out.write_at(pos, meta.data(), meta.size());
    pos += meta.size();

    const std::string dir = b::encode_directory(entries);
    h.directory_offset = pos;
    h.directory_size = dir.size();
    h.directory_xxh64 = b::xxh64(dir.data(), dir.size());
    out.write_at(pos, dir.data(), dir.size());
    pos += dir.size();
    h.file_size = pos;
    const std::string header = b::encode_header(h);
    out.write_at(0, header.data(), header.size());
    out.commit();

    PackStats s;
    s.bundle_bytes = h.file_size;
    s.raw_tensor_bytes = raw_total;
    s.n_tensors = n;
    return s;
}

}  // namespace

PackStats pack_bundle(const std::string& in_path, const std::string& out_path, const PackOptions& opt) {
    if (opt.zstd_level < 0 || opt.zstd_level > ZSTD_maxCLevel())
        fail(STARKV_ERR_INVALID_ARGUMENT, "zstd level " + std::to_string(opt.zstd_level) + " is not in [0, " +
                                              std::to_string(ZSTD_maxCLevel()) + "]");
    if (out_path.empty()) fail(STARKV_ERR_INVALID_ARGUMENT, "empty output path");
    std::error_code ec;
    if (fs::is_directory(out_path, ec)) fail(STARKV_ERR_IO, "'" + out_path + "' is a directory");
    const auto t0 = std::chrono::steady_clock::now();
    auto report = [&](float lo, float hi) -> ProgressFn {
        if (!opt.progress) return nullptr;
        return [&opt, lo, hi](float f) { return opt.progress(lo + (hi - lo) * f); };
    };

    // 1. The source, and proof that it loads.
    const ModelSource src = open_model_source(in_path, nullptr);
    LoadedModel loaded = build_model(src, report(0.0f, 0.2f));
    // A STAR-KV bundle keeps only the latent factors of its compressed layers:
    // W_k and W_v are gone, so neither a plain repack nor a new calibration
    // can start from it.
    for (size_t l = 0; l < loaded.weights.layers.size(); ++l)
        if (loaded.weights.layers[l].wk.empty() || loaded.weights.layers[l].wv.empty())
            fail(STARKV_ERR_UNSUPPORTED, "'" + in_path + "' layer " + std::to_string(l) +
                                             " holds only STAR-KV latents (no K/V projections): pack from the original model");
    std::string calib_text;
    if (opt.kv) {
        std::ifstream in(opt.calib_path, std::ios::binary);
        if (opt.calib_path.empty() || !in) fail(STARKV_ERR_IO, "cannot read calibration text '" + opt.calib_path + "'");
        std::ostringstream ss;
        ss << in.rdbuf();
        calib_text = ss.str();
    }
    // Create the output early: an unwritable destination fails before the long part.
    TempFile out(out_path);

    // 1b. STAR-KV calibration: the factors become F32 tensors of their own.
    json kv_meta = {{"kv", "none"}};
    std::vector<SourceTensor> extra;
    std::vector<std::vector<float>> extra_data;
    if (opt.kv) {
        Model model(std::move(loaded));
        kv_meta = lowrank::calibrate(model, calib_text, *opt.kv);
        auto add = [&](const std::string& name, const Matrix& m) {
            extra_data.push_back(m.data);
            SourceTensor t;
            t.name = name;
            t.dtype = static_cast<uint32_t>(GgmlType::F32);
            t.dtype_name = "F32";
            t.shape = {m.rows, m.cols};
            t.data = reinterpret_cast<const uint8_t*>(extra_data.back().data());
            t.n_bytes = m.data.size() * sizeof(float);
            extra.push_back(std::move(t));
        };
        extra_data.reserve(static_cast<size_t>(model.config().n_layer) * (2 * model.config().n_head_kv + 2));
        for (int l = 0; l < model.config().n_layer; ++l) {
            const LatentFactors& F = model.weights().layers[static_cast<size_t>(l)].lat;
            if (!F.active()) continue;
            const std::string b = "blk." + std::to_string(l) + ".";
            for (size_t h = 0; h < F.k_a.size(); ++h) {
                add(b + "attn_k_lat_a." + std::to_string(h), F.k_a[h]);
                add(b + "attn_k_lat_u." + std::to_string(h), F.k_u[h]);
            }
            add(b + "attn_v_lat_a", F.v_a);
            add(b + "attn_v_lat_u", F.v_u);
        }
    }

    const auto [src_size, src_hash] = hash_input(in_path);
    json provenance = {{"source", fs::path(in_path).filename().string()},
                       {"source_format", src.format},
                       {"source_size", src_size},
                       {"source_xxh64", b::hex64(src_hash)},
                       {"tool", std::string("starkv ") + STARKV_VERSION_STRING},
                       {"created_utc", utc_now()},
                       {"settings", {{"zstd_level", opt.zstd_level}}}};
    if (opt.kv) provenance["calibration_text"] = fs::path(opt.calib_path).filename().string();
    PackStats s = write_bundle(src, extra, kv_meta, provenance, out, opt, report(0.2f, 1.0f));
    s.source_bytes = src_size;
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    // The bundle is committed: from here nothing may fail the call (an
    // out-of-memory building this message would report a failed pack that
    // left a complete bundle behind).
    try {
        log(STARKV_LOG_INFO, "packed '" + in_path + "' -> '" + out_path + "': " + std::to_string(s.n_tensors) + " tensors, " +
                                 std::to_string(src_size) + " -> " + std::to_string(s.bundle_bytes) + " bytes in " +
                                 std::to_string(sec) + " s");
    } catch (const std::bad_alloc&) {
    }
    return s;
}

PackStats pack_synthetic(const std::string& shape, int n_layers, float kv_compress, const std::string& out_path,
                         const PackOptions& opt) {
    if (opt.zstd_level < 0 || opt.zstd_level > ZSTD_maxCLevel())
        fail(STARKV_ERR_INVALID_ARGUMENT, "zstd level " + std::to_string(opt.zstd_level) + " is not in [0, " +
                                              std::to_string(ZSTD_maxCLevel()) + "]");
    if (out_path.empty()) fail(STARKV_ERR_INVALID_ARGUMENT, "empty output path");
    SyntheticModel m = make_synthetic_model(shape, n_layers, kv_compress);
    TempFile out(out_path);
    json provenance = {{"source", "synthetic:" + shape},
                       {"source_format", "synthetic"},
                       {"tool", std::string("starkv ") + STARKV_VERSION_STRING},
                       {"created_utc", utc_now()},
                       {"settings", {{"zstd_level", opt.zstd_level}, {"layers", m.source.config.n_layer}}}};
    PackStats s = write_bundle(m.source, m.latent, m.kv_meta, provenance, out, opt, opt.progress);
    log(STARKV_LOG_INFO, "packed synthetic " + shape + " -> '" + out_path + "': " + std::to_string(s.n_tensors) +
                             " tensors, " + std::to_string(s.bundle_bytes) + " bytes");
    return s;
}

}  // namespace starkv
