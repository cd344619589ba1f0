// The test-only GGUF writer (tests/support/gguf_writer.*) checked against the
// real stories260K file and the library, so that files crafted with it fail
// for the reason a test intends and not because the writer is wrong.
//
// tests/CMakeLists.txt globs only tests/api/*.cpp into starkv_api_tests, so
// the writer's implementation is compiled here, once.
#include "../support/gguf_writer.cpp"  // NOLINT(bugprone-suspicious-include)

#include "api_util.h"
#include "gguf_writer.h"

namespace starkv_test {
namespace {

TEST(GgufWriter, RereadingStoriesReproducesTheFileByteForByte) {
    const std::string bytes = read_file(stories_model());
    ASSERT_EQ(bytes.size(), 1185376u);
    GgufWriter w = read_gguf(bytes);
    EXPECT_EQ(w.version, 3u);
    EXPECT_EQ(w.tensors.size(), 48u);
    EXPECT_EQ(w.kvs.size(), 19u);
    const std::string rebuilt = w.build();
    ASSERT_EQ(rebuilt.size(), bytes.size());
    EXPECT_TRUE(rebuilt == bytes);
}

TEST(GgufWriter, RebuiltStoriesLoads) {
    GgufWriter w = read_gguf(read_file(stories_model()));
    w.set_string("general.name", "rebuilt");
    EXPECT_STARKV_OK(try_load(write_temp("rebuilt.gguf", w.build())));
}

TEST(GgufWriter, TinyLlamaFromScratchLoadsAndGenerates) {
    for (bool tied : {false, true}) {
        TinyLlama spec;
        spec.tied = tied;
        ModelPtr model;
        ASSERT_STARKV_OK(try_load(write_temp("tiny.gguf", tiny_llama(spec).build()), nullptr, &model));
        starkv_model_info info;
        starkv_model_info_default(&info);
        ASSERT_STARKV_OK(starkv_model_get_info(model.get(), &info));
        EXPECT_EQ(info.n_embd, 16);
        EXPECT_EQ(info.n_layer, 2);
        EXPECT_EQ(info.n_head, 4);
        EXPECT_EQ(info.n_head_kv, 2);
        EXPECT_EQ(info.head_dim, 4);
        EXPECT_EQ(info.n_vocab, 259);
        EXPECT_EQ(info.tied_embeddings, tied);
        ContextPtr ctx = make_context(model.get(), 16);
        SamplerPtr s = make_sampler(0.0f);
        starkv_generate_result r;
        starkv_generate_result_default(&r);
        generate_text(ctx.get(), s.get(), {1}, 8, false, &r);
        EXPECT_EQ(r.n_generated, 8u);
    }
}

TEST(GgufWriter, MistralArchitectureLoads) {
    TinyLlama spec;
    spec.arch = "mistral";
    EXPECT_STARKV_OK(try_load(write_temp("tiny_mistral.gguf", tiny_llama(spec).build())));
}

}  // namespace
}  // namespace starkv_test
