// Bundles through the public C API: starkv_pack, starkv_model_load of a
// bundle (bit-identical logits to the source model), starkv_bundle_describe.
#include <gtest/gtest.h>

#include <cstddef>
#include <cstring>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "hf_checkpoint.h"
#include "starkv/starkv.h"
#include "test_paths.h"

namespace {

starkv_model* load(const std::string& path) {
    starkv_model* m = nullptr;
    EXPECT_EQ(starkv_model_load(path.c_str(), nullptr, &m), STARKV_OK) << path << ": " << starkv_last_error();
    return m;
}

// Logits of every position of a fixed prompt.
std::vector<float> all_logits(const std::string& path) {
    starkv_model* m = load(path);
    if (!m) return {};
    starkv_model_info info;
    starkv_model_info_default(&info);
    EXPECT_EQ(starkv_model_get_info(m, &info), STARKV_OK);
    starkv_context_params cp;
    starkv_context_params_default(&cp);
    cp.n_ctx = 64;
    cp.n_threads = 2;
    starkv_context* c = nullptr;
    EXPECT_EQ(starkv_context_create(m, &cp, &c), STARKV_OK);
    std::vector<starkv_token> toks;
    for (int i = 0; i < 12; ++i) toks.push_back((i * 37 + 5) % std::min(info.n_vocab, 256));
    EXPECT_EQ(starkv_context_eval(c, toks.data(), toks.size(), true), STARKV_OK);
    std::vector<float> out;
    for (int i = 0; i < static_cast<int>(toks.size()); ++i) {
        const float* l = nullptr;
        EXPECT_EQ(starkv_context_logits(c, i, &l), STARKV_OK);
        out.insert(out.end(), l, l + info.n_vocab);
    }
    starkv_context_free(c);
    starkv_model_free(m);
    return out;
}

void expect_bit_identical(const std::vector<float>& a, const std::vector<float>& b) {
    ASSERT_EQ(a.size(), b.size());
    ASSERT_FALSE(a.empty());
    EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0);
}

std::string pack(const std::string& in, const std::string& name, int level) {
    const std::string out = starkv_test::temp_dir() + "/" + name;
    starkv_pack_params pp;
    starkv_pack_params_default(&pp);
    EXPECT_EQ(pp.zstd_level, 3);
    pp.zstd_level = level;
    EXPECT_EQ(starkv_pack(in.c_str(), out.c_str(), &pp), STARKV_OK) << starkv_last_error();
    return out;
}

}  // namespace

TEST(BundleApi, GgufBundleGivesIdenticalLogits) {
    const std::vector<float> ref = all_logits(starkv_test::stories_model());
    for (int level : {0, 3, 19})
        expect_bit_identical(ref, all_logits(pack(starkv_test::stories_model(), "api_" + std::to_string(level) + ".skv", level)));
}

TEST(BundleApi, HfBundleGivesIdenticalLogits) {
    starkv_test::HfCheckpoint ck;
    const std::string dir = starkv_test::temp_dir() + "/api_hf";
    ck.write(dir);
    const std::vector<float> ref = all_logits(dir);
    expect_bit_identical(ref, all_logits(pack(dir, "api_hf.skv", 3)));
    expect_bit_identical(ref, all_logits(pack(dir, "api_hf0.skv", 0)));
}

TEST(BundleApi, InfoAndDescribe) {
    const std::string b = pack(starkv_test::stories_model(), "api_info.skv", 3);
    starkv_model* m = load(b);
    ASSERT_NE(m, nullptr);
    starkv_model_info info;
    starkv_model_info_default(&info);
    ASSERT_EQ(starkv_model_get_info(m, &info), STARKV_OK);
    EXPECT_STREQ(info.format, "bundle");
    EXPECT_EQ(info.n_vocab, 512);
    EXPECT_GT(starkv_model_n_tensors(m), 0u);
    starkv_model_free(m);

    size_t n = 0;
    EXPECT_EQ(starkv_bundle_describe(b.c_str(), nullptr, 0, &n), STARKV_ERR_BUFFER_TOO_SMALL);
    ASSERT_GT(n, 0u);
    std::string doc(n, '\0');
    ASSERT_EQ(starkv_bundle_describe(b.c_str(), doc.data(), doc.size(), &n), STARKV_OK);
    EXPECT_NE(doc.find("\"provenance\""), std::string::npos);
    EXPECT_NE(doc.find("stories260K.gguf"), std::string::npos);

    EXPECT_EQ(starkv_bundle_describe(starkv_test::stories_model().c_str(), doc.data(), doc.size(), &n),
              STARKV_ERR_CORRUPT);
    EXPECT_EQ(starkv_bundle_describe(nullptr, doc.data(), doc.size(), &n), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(starkv_pack(nullptr, b.c_str(), nullptr), STARKV_ERR_INVALID_ARGUMENT);
}

TEST(BundleApi, PackFailuresLeaveNothing) {
    const std::string dir = starkv_test::temp_dir() + "/api_fail";
    std::filesystem::create_directories(dir);
    EXPECT_EQ(starkv_pack(starkv_test::stories_model().c_str(), (dir + "/missing/x.skv").c_str(), nullptr),
              STARKV_ERR_IO);
    EXPECT_EQ(starkv_pack((dir + "/nothing.gguf").c_str(), (dir + "/x.skv").c_str(), nullptr), STARKV_ERR_IO);
    starkv_pack_params pp;
    starkv_pack_params_default(&pp);
    pp.progress = [](float, void*) { return false; };
    EXPECT_EQ(starkv_pack(starkv_test::stories_model().c_str(), (dir + "/x.skv").c_str(), &pp), STARKV_ERR_CANCELLED);
    EXPECT_TRUE(std::filesystem::is_empty(dir));
}

// STAR-KV through the C API: pack params (appended fields), the bundle's
// feature, and the KV statistics of a context on it.
TEST(BundleApi, StarKvPackAndKvStats) {
    const std::string dir = starkv_test::temp_dir() + "/api_starkv";
    std::filesystem::create_directories(dir);
    const std::string calib = starkv_test::shared_path("data/tinystories_val.txt"), out = dir + "/kv.skv";
    starkv_pack_params pp;
    starkv_pack_params_default(&pp);
    EXPECT_EQ(pp.kv_compress, 0.0f);
    pp.kv_compress = 0.5f;
    pp.calib_path = calib.c_str();
    pp.rank_strategy = "uniform";
    pp.skip_layers = "none";
    pp.calib_tokens = 1024;
    ASSERT_EQ(starkv_pack(starkv_test::stories_model().c_str(), out.c_str(), &pp), STARKV_OK) << starkv_last_error();

    size_t n = 0;
    ASSERT_EQ(starkv_bundle_describe(out.c_str(), nullptr, 0, &n), STARKV_ERR_BUFFER_TOO_SMALL);
    std::string doc(n, '\0');
    ASSERT_EQ(starkv_bundle_describe(out.c_str(), doc.data(), doc.size(), &n), STARKV_OK);
    EXPECT_NE(doc.find("\"kv-lowrank\""), std::string::npos);
    EXPECT_NE(doc.find("\"star-kv\""), std::string::npos);

    // One calibration thread gives the same tensors (their xxh64 in the
    // description) as every core.
    {
        starkv_pack_params one = pp;
        one.n_threads = 1;
        const std::string out1 = dir + "/kv1.skv";
        ASSERT_EQ(starkv_pack(starkv_test::stories_model().c_str(), out1.c_str(), &one), STARKV_OK) << starkv_last_error();
        size_t n1 = 0;
        ASSERT_EQ(starkv_bundle_describe(out1.c_str(), nullptr, 0, &n1), STARKV_ERR_BUFFER_TOO_SMALL);
        std::string doc1(n1, '\0');
        ASSERT_EQ(starkv_bundle_describe(out1.c_str(), doc1.data(), doc1.size(), &n1), STARKV_OK);
        const auto hashes = [](const std::string& d) {
            std::vector<std::pair<std::string, std::string>> h;
            const nlohmann::json j = nlohmann::json::parse(d);
            for (const auto& t : j.at("tensors"))
                h.emplace_back(t["name"].get<std::string>(), t["xxh64"].dump());
            return h;
        };
        const auto h0 = hashes(std::string(doc, 0, n)), h1 = hashes(doc1);
        EXPECT_GT(h0.size(), 10u);
        EXPECT_EQ(h0, h1);
    }

    starkv_model* m = load(out);
    ASSERT_NE(m, nullptr);
    starkv_model_info info;
    starkv_model_info_default(&info);
    ASSERT_EQ(starkv_model_get_info(m, &info), STARKV_OK);
    starkv_context* c = nullptr;
    ASSERT_EQ(starkv_context_create(m, nullptr, &c), STARKV_OK);
    const starkv_token toks[] = {1, 2, 3, 4};
    ASSERT_EQ(starkv_context_eval(c, toks, 4, false), STARKV_OK);
    starkv_kv_stats st;
    starkv_kv_stats_default(&st);
    ASSERT_EQ(starkv_context_kv_stats(c, &st), STARKV_OK);
    const uint64_t kvd = static_cast<uint64_t>(info.n_head_kv) * info.head_dim;
    EXPECT_EQ(st.bytes_per_token_uncompressed, 2 * kvd * info.n_layer * sizeof(float));
    // Uniform at 0.5 in every layer: half of each head's dims, half of the joint values.
    const uint64_t per_layer = info.n_head_kv * (info.head_dim / 2) + kvd / 2;
    EXPECT_EQ(st.bytes_per_token, per_layer * info.n_layer * sizeof(float));
    EXPECT_EQ(st.bytes_in_use, 4 * st.bytes_per_token);
    starkv_context_free(c);
    starkv_model_free(m);

    // Bad settings are refused before anything is written.
    const std::string bad = dir + "/bad.skv";
    auto refused = [&](starkv_pack_params p) {
        EXPECT_EQ(starkv_pack(starkv_test::stories_model().c_str(), bad.c_str(), &p), STARKV_ERR_INVALID_ARGUMENT);
        EXPECT_FALSE(std::filesystem::exists(bad));
    };
    starkv_pack_params b = pp;
    b.kv_compress = 1.5f;
    refused(b);
    b = pp;
    b.calib_path = nullptr;
    refused(b);
    b = pp;
    b.rank_strategy = "best";
    refused(b);
    b = pp;
    b.skip_layers = "0,x";
    refused(b);
    b = pp;
    b.skip_layers = "0,99";
    refused(b);
    b = pp;
    b.n_threads = -1;
    refused(b);
    // An old caller's struct (without the STAR-KV fields) packs uncompressed.
    b = pp;
    b.struct_size = offsetof(starkv_pack_params, kv_compress);
    ASSERT_EQ(starkv_pack(starkv_test::stories_model().c_str(), bad.c_str(), &b), STARKV_OK);
    ASSERT_EQ(starkv_bundle_describe(bad.c_str(), doc.data(), doc.size(), &n), STARKV_OK);
    EXPECT_EQ(std::string(doc, 0, n).find("kv-lowrank"), std::string::npos);
}
