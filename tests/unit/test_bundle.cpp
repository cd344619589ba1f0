// Bundles (.skv): round trips from GGUF and Hugging Face sources (bit-exact
// weights, config and tokenizer), and a corruption suite: truncation, bit
// flips, crafted inconsistent files. Every bad file is a status, never a crash
// (the suite also runs under ASan+UBSan).
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "bundle/format.h"
#include "bundle/reader.h"
#include "bundle/writer.h"
#include "core/error.h"
#include "model/loader.h"
#include "model/model_source.h"
#include "hf_checkpoint.h"
#include "test_paths.h"

using namespace starkv;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

std::string tmp(const std::string& name) { return starkv_test::temp_dir() + "/" + name; }

std::string slurp(const std::string& path) { return starkv_test::read_file(path); }

void spit(const std::string& path, const std::string& bytes) {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

std::string pack(const std::string& in, const std::string& name, int level) {
    const std::string out = tmp(name);
    PackOptions o;
    o.zstd_level = level;
    pack_bundle(in, out, o);
    return out;
}

// Status of loading path as a model; any other exception fails the test.
starkv_status load_status(const std::string& path, std::string* msg = nullptr) {
    try {
        load_model(path, nullptr);
        return STARKV_OK;
    } catch (const Error& e) {
        if (msg) *msg = e.what();
        EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
        return e.status();
    }
}

starkv_status bytes_status(const std::string& bytes, std::string* msg = nullptr) {
    static int k = 0;
    const std::string p = tmp("case_" + std::to_string(k++) + ".skv");
    spit(p, bytes);
    const starkv_status st = load_status(p, msg);
    fs::remove(p);
    return st;
}

void expect_same_weights(const LoadedModel& a, const LoadedModel& b) {
    auto eq = [](const std::vector<float>& x, const std::vector<float>& y, const std::string& what) {
        ASSERT_EQ(x.size(), y.size()) << what;
        if (!x.empty()) EXPECT_EQ(std::memcmp(x.data(), y.data(), x.size() * sizeof(float)), 0) << what;
    };
    eq(a.weights.tok_embd.data, b.weights.tok_embd.data, "tok_embd");
    eq(a.weights.output.data, b.weights.output.data, "output");
    eq(a.weights.output_norm, b.weights.output_norm, "output_norm");
    ASSERT_EQ(a.weights.layers.size(), b.weights.layers.size());
    for (size_t l = 0; l < a.weights.layers.size(); ++l) {
        const LayerWeights &x = a.weights.layers[l], &y = b.weights.layers[l];
        eq(x.attn_norm, y.attn_norm, "attn_norm");
        eq(x.wq.data, y.wq.data, "wq");
        eq(x.wk.data, y.wk.data, "wk");
        eq(x.wv.data, y.wv.data, "wv");
        eq(x.wo.data, y.wo.data, "wo");
        eq(x.ffn_norm, y.ffn_norm, "ffn_norm");
        eq(x.w_gate.data, y.w_gate.data, "w_gate");
        eq(x.w_up.data, y.w_up.data, "w_up");
        eq(x.w_down.data, y.w_down.data, "w_down");
    }
    const ModelConfig &c = a.config, &d = b.config;
    EXPECT_EQ(c.architecture, d.architecture);
    EXPECT_EQ(c.name, d.name);
    EXPECT_EQ(c.n_vocab, d.n_vocab);
    EXPECT_EQ(c.n_embd, d.n_embd);
    EXPECT_EQ(c.n_ff, d.n_ff);
    EXPECT_EQ(c.n_layer, d.n_layer);
    EXPECT_EQ(c.n_head, d.n_head);
    EXPECT_EQ(c.n_head_kv, d.n_head_kv);
    EXPECT_EQ(c.head_dim, d.head_dim);
    EXPECT_EQ(c.n_ctx_train, d.n_ctx_train);
    EXPECT_EQ(c.rms_eps, d.rms_eps);
    EXPECT_EQ(c.tied_embeddings, d.tied_embeddings);
    EXPECT_EQ(c.rope.theta, d.rope.theta);
    EXPECT_EQ(c.rope.n_dims, d.rope.n_dims);
    EXPECT_EQ(c.rope.layout, d.rope.layout);
    EXPECT_EQ(c.rope.scaling, d.rope.scaling);
    EXPECT_EQ(c.rope.factor, d.rope.factor);
    EXPECT_EQ(c.rope.low_freq_factor, d.rope.low_freq_factor);
    EXPECT_EQ(c.rope.high_freq_factor, d.rope.high_freq_factor);
    EXPECT_EQ(c.rope.original_max_pos, d.rope.original_max_pos);
    EXPECT_EQ(c.rope.freq_factors, d.rope.freq_factors);
    const Vocab &v = a.vocab, &u = b.vocab;
    EXPECT_EQ(v.kind, u.kind);
    EXPECT_EQ(v.tokens, u.tokens);
    EXPECT_EQ(v.scores.size(), u.scores.size());
    if (!v.scores.empty()) EXPECT_EQ(std::memcmp(v.scores.data(), u.scores.data(), v.scores.size() * 4), 0);
    EXPECT_EQ(v.types, u.types);
    EXPECT_EQ(v.merges, u.merges);
    EXPECT_EQ(v.pre, u.pre);
    EXPECT_EQ(v.bos, u.bos);
    EXPECT_EQ(v.eos, u.eos);
    EXPECT_EQ(v.unk, u.unk);
    EXPECT_EQ(v.pad, u.pad);
    EXPECT_EQ(v.add_bos, u.add_bos);
    EXPECT_EQ(v.add_space_prefix, u.add_space_prefix);
}

// Re-encodes a valid bundle after edit() changed its header fields, metadata
// or directory, with fresh checksums (the tensor data is kept in place).
std::string rebuild(const std::string& bytes,
                    const std::function<void(bundle::Header&, json&, std::vector<bundle::DirEntry>&)>& edit) {
    const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
    bundle::Header h = bundle::decode_header(p, bytes.size());
    json md = json::parse(bytes.substr(h.metadata_offset, h.metadata_size));
    auto entries = bundle::decode_directory(p + h.directory_offset, h.directory_size, h);
    edit(h, md, entries);
    std::string out = bytes.substr(0, h.data_offset + h.data_size);
    const std::string m = md.dump(), d = bundle::encode_directory(entries);
    h.metadata_offset = out.size();
    h.metadata_size = m.size();
    h.metadata_xxh64 = bundle::xxh64(m.data(), m.size());
    out += m;
    h.directory_offset = out.size();
    h.directory_size = d.size();
    h.directory_xxh64 = bundle::xxh64(d.data(), d.size());
    out += d;
    h.file_size = out.size();
    out.replace(0, bundle::kHeaderSize, bundle::encode_header(h));
    return out;
}

class BundleFiles : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        z3_ = new std::string(pack(starkv_test::stories_model(), "stories_z3.skv", 3));
        z0_ = new std::string(pack(starkv_test::stories_model(), "stories_z0.skv", 0));
    }
    static void TearDownTestSuite() {
        delete z3_;
        delete z0_;
    }
    static std::string* z3_;
    static std::string* z0_;
};
std::string* BundleFiles::z3_ = nullptr;
std::string* BundleFiles::z0_ = nullptr;

}  // namespace

TEST_F(BundleFiles, GgufRoundTripIsExact) {
    const LoadedModel ref = load_gguf(starkv_test::stories_model(), nullptr);
    for (const std::string* b : {z3_, z0_}) {
        const LoadedModel m = load_model(*b, nullptr);
        EXPECT_EQ(m.format, "bundle");
        expect_same_weights(ref, m);
    }
    // Level 19 and a bundle of a bundle, too.
    const std::string z19 = pack(starkv_test::stories_model(), "stories_z19.skv", 19);
    expect_same_weights(ref, load_model(z19, nullptr));
    const std::string again = pack(*z3_, "stories_again.skv", 0);
    expect_same_weights(ref, load_model(again, nullptr));
    EXPECT_LT(fs::file_size(z19), fs::file_size(*z3_) + 1);
}

TEST_F(BundleFiles, Level0IsAlignedAndRaw) {
    const std::string bytes = slurp(*z0_);
    const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
    const bundle::Header h = bundle::decode_header(p, bytes.size());
    for (const auto& e : bundle::decode_directory(p + h.directory_offset, h.directory_size, h)) {
        EXPECT_EQ(e.codec, bundle::Codec::Raw) << e.name;
        EXPECT_EQ(e.offset % 64, 0u) << e.name;
    }
}

TEST(Bundle, HfRoundTripIsExact) {
    for (bool tied : {false, true}) {
        starkv_test::HfCheckpoint ck;
        ck.tied = tied;
        const std::string dir = tmp(tied ? "hf_tied" : "hf_untied");
        ck.write(dir);
        const LoadedModel ref = load_hf_dir(dir, nullptr);
        EXPECT_EQ(ref.config.rope.layout, RopeLayout::HalfSplit);
        EXPECT_EQ(ref.config.rope.scaling, RopeScaling::Llama3);
        for (int level : {0, 3}) {
            const std::string b = pack(dir, "hf_" + std::to_string(tied) + std::to_string(level) + ".skv", level);
            const LoadedModel m = load_model(b, nullptr);
            expect_same_weights(ref, m);
            // Stored as in the source: BF16/F16 stay 2-byte types, HF names become canonical.
            const ModelSource s = open_model_source(b, nullptr);
            const SourceTensor* q = s.find("blk.0.attn_q.weight");
            ASSERT_NE(q, nullptr);
            EXPECT_EQ(q->dtype_name, ck.tensors.at("model.layers.0.self_attn.q_proj.weight").dtype);
        }
    }
}

TEST(Bundle, DescribeListsMetadataAndTensors) {
    const std::string b = pack(starkv_test::stories_model(), "describe.skv", 3);
    const json d = json::parse(describe_bundle(b));
    EXPECT_EQ(d["format_version"], "1.0");
    EXPECT_EQ(d["compression"]["kv"], "none");
    EXPECT_EQ(d["provenance"]["source"], "stories260K.gguf");
    EXPECT_EQ(d["provenance"]["source_size"].get<uint64_t>(), fs::file_size(starkv_test::stories_model()));
    EXPECT_EQ(d["provenance"]["settings"]["zstd_level"], 3);
    EXPECT_EQ(d["tokenizer"]["n_tokens"], 512);
    EXPECT_FALSE(d["tensors"].empty());
    EXPECT_EQ(d["file_size"].get<uint64_t>(), fs::file_size(b));
}

TEST(Bundle, ProgressAndCancel) {
    const std::string b = pack(starkv_test::stories_model(), "progress.skv", 3);
    std::vector<float> seen;
    load_model(b, [&](float f) {
        seen.push_back(f);
        return true;
    });
    ASSERT_FALSE(seen.empty());
    for (size_t i = 1; i < seen.size(); ++i) EXPECT_GE(seen[i], seen[i - 1]);
    EXPECT_FLOAT_EQ(seen.back(), 1.0f);
    for (int stop_at : {1, 10, 60}) {
        int calls = 0;
        try {
            load_model(b, [&](float) { return ++calls < stop_at; });
            FAIL() << "expected cancel";
        } catch (const Error& e) {
            EXPECT_EQ(e.status(), STARKV_ERR_CANCELLED);
        }
        EXPECT_EQ(calls, stop_at);
    }
}

TEST_F(BundleFiles, TruncationIsCorrupt) {
    for (const std::string* b : {z3_, z0_}) {
        const std::string bytes = slurp(*b);
        const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
        const bundle::Header h = bundle::decode_header(p, bytes.size());
        std::vector<size_t> cuts = {0, 1, 7, 8, 12, 16, 64, 119, 120, 127, 128, 129};
        for (const auto& e : bundle::decode_directory(p + h.directory_offset, h.directory_size, h)) {
            cuts.push_back(e.offset);
            cuts.push_back(e.offset + e.stored_size / 2);
            cuts.push_back(e.offset + e.stored_size);
        }
        for (uint64_t x : {h.data_offset + h.data_size, h.metadata_offset, h.metadata_offset + h.metadata_size / 2,
                           h.directory_offset, h.directory_offset + 4, h.file_size - 1})
            cuts.push_back(x);
        std::mt19937 rng(7);
        for (int i = 0; i < 40; ++i) cuts.push_back(rng() % bytes.size());
        for (size_t c : cuts) {
            if (c >= bytes.size()) continue;
            std::string msg;
            const starkv_status st = bytes_status(bytes.substr(0, c), &msg);
            EXPECT_EQ(st, STARKV_ERR_CORRUPT) << "cut at " << c << ": " << msg;
        }
        // Bytes appended are refused as well.
        EXPECT_EQ(bytes_status(bytes + "x"), STARKV_ERR_CORRUPT);
    }
}

TEST_F(BundleFiles, BitFlipsAreCaught) {
    for (const std::string* b : {z3_, z0_}) {
        const std::string bytes = slurp(*b);
        const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
        const bundle::Header h = bundle::decode_header(p, bytes.size());
        std::mt19937 rng(11);
        auto flip = [&](size_t off, int bit) {
            std::string c = bytes;
            c[off] = static_cast<char>(c[off] ^ (1 << bit));
            std::string msg;
            const starkv_status st = bytes_status(c, &msg);
            // The version field may read as a newer (unsupported) version.
            if (off >= 8 && off < 10)
                EXPECT_TRUE(st == STARKV_ERR_CORRUPT || st == STARKV_ERR_UNSUPPORTED) << off << ": " << msg;
            else
                EXPECT_EQ(st, STARKV_ERR_CORRUPT) << "flip at " << off << " bit " << bit << ": " << msg;
        };
        for (size_t off = 0; off < bundle::kHeaderSize; ++off) flip(off, static_cast<int>(rng() % 8));
        for (int i = 0; i < 24; ++i) flip(h.metadata_offset + rng() % h.metadata_size, static_cast<int>(rng() % 8));
        for (int i = 0; i < 24; ++i) flip(h.directory_offset + rng() % h.directory_size, static_cast<int>(rng() % 8));
        // Every tensor's data: the checksum (or zstd) catches it.
        for (const auto& e : bundle::decode_directory(p + h.directory_offset, h.directory_size, h))
            flip(e.offset + rng() % e.stored_size, static_cast<int>(rng() % 8));
    }
}

TEST_F(BundleFiles, CraftedFilesGiveTheRightStatus) {
    const std::string bytes = slurp(*z3_);
    using H = bundle::Header;
    using E = std::vector<bundle::DirEntry>;
    std::string msg;
    // The helper itself keeps a valid file valid; unknown optional keys are ignored.
    EXPECT_EQ(bytes_status(rebuild(bytes, [](H&, json& md, E&) { md["future_optional"] = {{"x", 1}}; })), STARKV_OK);

    EXPECT_EQ(bytes_status(rebuild(bytes, [](H& h, json&, E&) { h.major = 2; }), &msg), STARKV_ERR_UNSUPPORTED);
    EXPECT_NE(msg.find("2.0"), std::string::npos) << msg;
    EXPECT_EQ(bytes_status(rebuild(bytes, [](H& h, json&, E&) { h.minor = 7; })), STARKV_OK);  // newer minor: fine
    EXPECT_EQ(bytes_status(rebuild(bytes, [](H& h, json&, E&) { h.major = 0; })), STARKV_ERR_CORRUPT);

    EXPECT_EQ(bytes_status(rebuild(bytes, [](H&, json& md, E&) { md["required_features"] = {"kv-hologram"}; }), &msg),
              STARKV_ERR_UNSUPPORTED);
    EXPECT_NE(msg.find("kv-hologram"), std::string::npos) << msg;
    EXPECT_EQ(bytes_status(rebuild(bytes, [](H&, json& md, E&) { md["compression"]["kv"] = "lowrank-v9"; }), &msg),
              STARKV_ERR_UNSUPPORTED);
    EXPECT_EQ(bytes_status(rebuild(bytes, [](H&, json& md, E&) { md["required_features"] = 3; })), STARKV_ERR_CORRUPT);
    EXPECT_EQ(bytes_status(rebuild(bytes, [](H&, json& md, E&) { md.erase("model"); })), STARKV_ERR_CORRUPT);
    EXPECT_EQ(bytes_status(rebuild(bytes, [](H&, json& md, E&) { md["model"]["n_embd"] = "wide"; })), STARKV_ERR_CORRUPT);
    EXPECT_EQ(bytes_status(rebuild(bytes, [](H&, json& md, E&) { md["model"]["n_embd"] = 1ll << 40; })), STARKV_ERR_CORRUPT);
    EXPECT_NE(bytes_status(rebuild(bytes, [](H&, json& md, E&) { md["model"]["n_embd"] = 65; })), STARKV_OK);
    EXPECT_EQ(bytes_status(rebuild(bytes, [](H&, json& md, E&) { md["tokenizer"]["bos"] = 100000; })), STARKV_ERR_CORRUPT);
    EXPECT_EQ(bytes_status(rebuild(bytes, [](H&, json& md, E&) { md["tokenizer"]["scores_f32le"] = "zz"; })), STARKV_ERR_CORRUPT);
    EXPECT_EQ(bytes_status(rebuild(bytes, [](H&, json& md, E&) { md = json::array(); })), STARKV_ERR_CORRUPT);

    // Directory: absurd dims, sizes that lie, offsets past the end, overlaps, duplicates.
    auto dir_case = [&](const std::function<void(E&)>& f) {
        return bytes_status(rebuild(bytes, [&](H&, json&, E& e) { f(e); }), &msg);
    };
    EXPECT_EQ(dir_case([](E& e) { e[0].shape = {int64_t{1} << 40, int64_t{1} << 40}; }), STARKV_ERR_CORRUPT);
    EXPECT_EQ(dir_case([](E& e) { e[0].shape = {-4, 64}; }), STARKV_ERR_CORRUPT);
    EXPECT_EQ(dir_case([](E& e) { e[0].shape = {1, 1, 1, 1, 1}; }), STARKV_ERR_CORRUPT);
    EXPECT_EQ(dir_case([](E& e) { e[0].raw_size += 4; }), STARKV_ERR_CORRUPT);
    EXPECT_EQ(dir_case([](E& e) { e[0].offset = uint64_t{1} << 62; }), STARKV_ERR_CORRUPT);
    EXPECT_EQ(dir_case([](E& e) { e[0].offset = ~uint64_t{0} - 8; }), STARKV_ERR_CORRUPT);
    EXPECT_EQ(dir_case([](E& e) { e[0].stored_size = ~uint64_t{0}; }), STARKV_ERR_CORRUPT);
    EXPECT_EQ(dir_case([](E& e) { e[1].offset = e[0].offset; }), STARKV_ERR_CORRUPT);
    EXPECT_NE(msg.find("overlap"), std::string::npos) << msg;
    EXPECT_EQ(dir_case([](E& e) { e[1].name = e[0].name; }), STARKV_ERR_CORRUPT);
    EXPECT_EQ(dir_case([](E& e) { e[0].xxh64 ^= 1; }), STARKV_ERR_CORRUPT);
    EXPECT_EQ(dir_case([](E& e) { e[0].stored_size -= 1; }), STARKV_ERR_CORRUPT);
    EXPECT_EQ(dir_case([](E& e) { e[0].codec = bundle::Codec::Raw; }), STARKV_ERR_CORRUPT);
    EXPECT_EQ(dir_case([](E& e) { e[0].dtype = 99; }), STARKV_ERR_UNSUPPORTED);
    EXPECT_EQ(dir_case([](E& e) { e.pop_back(); }), STARKV_ERR_CORRUPT);  // a missing weight
    // Only a STAR-KV layer may lack W_k / W_v (its factors replace them); a plain one may not.
    for (const char* w : {"blk.0.attn_k.weight", "blk.1.attn_v.weight"}) {
        EXPECT_EQ(dir_case([w](E& e) { std::erase_if(e, [w](const bundle::DirEntry& d) { return d.name == w; }); }),
                  STARKV_ERR_CORRUPT) << w;
        EXPECT_NE(msg.find(w), std::string::npos) << msg;
    }
    EXPECT_EQ(dir_case([](E& e) { e[0].name = std::string(2000, 'a'); }), STARKV_ERR_CORRUPT);
    EXPECT_EQ(dir_case([](E& e) { std::swap(e[0].shape[0], e[0].shape[1]); }), STARKV_ERR_CORRUPT);

    // Header: sections outside the file or overlapping.
    EXPECT_EQ(bytes_status(rebuild(bytes, [](H& h, json&, E&) { h.data_size += 1u << 30; })), STARKV_ERR_CORRUPT);
    auto hdr_case = [&](const std::function<void(H&)>& f) {
        std::string c = bytes;
        const auto* p = reinterpret_cast<const uint8_t*>(c.data());
        H h = bundle::decode_header(p, c.size());
        f(h);
        c.replace(0, bundle::kHeaderSize, bundle::encode_header(h));
        return bytes_status(c, &msg);
    };
    EXPECT_EQ(hdr_case([](H& h) { h.metadata_offset = h.directory_offset; }), STARKV_ERR_CORRUPT);
    EXPECT_EQ(hdr_case([](H& h) { h.metadata_size = ~uint64_t{0}; }), STARKV_ERR_CORRUPT);
    EXPECT_EQ(hdr_case([](H& h) { h.directory_offset = 3; }), STARKV_ERR_CORRUPT);
    EXPECT_EQ(hdr_case([](H& h) { h.header_size = 1u << 31; }), STARKV_ERR_CORRUPT);
    EXPECT_EQ(hdr_case([](H& h) { h.data_offset = 64; }), STARKV_ERR_CORRUPT);
    EXPECT_EQ(hdr_case([](H& h) { h.file_size = 1; }), STARKV_ERR_CORRUPT);

    // Not a model at all.
    EXPECT_EQ(bytes_status("hello, world, this is not a model"), STARKV_ERR_CORRUPT);
    EXPECT_EQ(bytes_status(""), STARKV_ERR_CORRUPT);
}

TEST(Bundle, FailedPackLeavesNoFile) {
    const std::string dir = tmp("packfail");
    fs::remove_all(dir);
    fs::create_directories(dir);
    auto status = [](const std::function<void()>& f) {
        try {
            f();
            return STARKV_OK;
        } catch (const Error& e) {
            return e.status();
        }
    };
    auto only = [&](size_t n) {
        size_t k = 0;
        for (const auto& de : fs::directory_iterator(dir)) {
            (void)de;
            ++k;
        }
        EXPECT_EQ(k, n);
    };
    PackOptions o;
    // Output directory that does not exist.
    EXPECT_EQ(status([&] { pack_bundle(starkv_test::stories_model(), dir + "/nope/x.skv", o); }), STARKV_ERR_IO);
    // Input that fails to load: a truncated GGUF.
    const std::string bad = dir + "/bad.gguf";
    spit(bad, slurp(starkv_test::stories_model()).substr(0, 5000));
    EXPECT_EQ(status([&] { pack_bundle(bad, dir + "/bad.skv", o); }), STARKV_ERR_CORRUPT);
    EXPECT_FALSE(fs::exists(dir + "/bad.skv"));
    only(1);
    // Cancelled while compressing.
    int calls = 0;
    o.progress = [&](float f) { return ++calls < 3 || f < 0.5f; };
    EXPECT_EQ(status([&] { pack_bundle(starkv_test::stories_model(), dir + "/c.skv", o); }), STARKV_ERR_CANCELLED);
    EXPECT_FALSE(fs::exists(dir + "/c.skv"));
    only(1);
    // Bad level; output path that is a directory.
    o.progress = nullptr;
    o.zstd_level = 99;
    EXPECT_EQ(status([&] { pack_bundle(starkv_test::stories_model(), dir + "/l.skv", o); }), STARKV_ERR_INVALID_ARGUMENT);
    o.zstd_level = 3;
    EXPECT_EQ(status([&] { pack_bundle(starkv_test::stories_model(), dir, o); }), STARKV_ERR_IO);
    only(1);
    // An existing bundle is replaced atomically by a good pack.
    spit(dir + "/ok.skv", "old");
    EXPECT_EQ(status([&] { pack_bundle(starkv_test::stories_model(), dir + "/ok.skv", o); }), STARKV_OK);
    EXPECT_EQ(load_status(dir + "/ok.skv"), STARKV_OK);
    only(2);
}
