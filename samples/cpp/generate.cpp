// Embedding starkv from C++ through its C ABI: the handles are owned by
// std::unique_ptr with the matching *_free as deleter, errors become
// exceptions, pieces stream through a lambda.
//   generate_cpp MODEL [PROMPT] [N_TOKENS]
#include <starkv/starkv.h>

#include <cstdio>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

template <auto Free> struct Deleter {
    template <typename T> void operator()(T *p) const noexcept { Free(p); }
};
using Model = std::unique_ptr<starkv_model, Deleter<starkv_model_free>>;
using Context = std::unique_ptr<starkv_context, Deleter<starkv_context_free>>;
using Sampler = std::unique_ptr<starkv_sampler, Deleter<starkv_sampler_free>>;

void check(starkv_status status, const char *what) {
    if (status != STARKV_OK)
        throw std::runtime_error(std::string(what) + ": " + starkv_status_name(status) + ": " + starkv_last_error());
}

Model load_model(const std::string &path) {
    starkv_model *raw = nullptr;
    check(starkv_model_load(path.c_str(), nullptr, &raw), "load");
    return Model(raw);
}

std::vector<starkv_token> tokenize(const starkv_model *model, const std::string &text) {
    std::vector<starkv_token> tokens(text.size() + 8);
    size_t n = 0;
    starkv_status st = starkv_tokenize(model, text.data(), text.size(), true, false, tokens.data(), tokens.size(), &n);
    if (st == STARKV_ERR_BUFFER_TOO_SMALL) {
        tokens.resize(n);
        st = starkv_tokenize(model, text.data(), text.size(), true, false, tokens.data(), tokens.size(), &n);
    }
    check(st, "tokenize");
    tokens.resize(n);
    return tokens;
}

}  // namespace

int main(int argc, char **argv) try {
    if (argc < 2) {
        std::cerr << "usage: " << argv[0] << " MODEL [PROMPT] [N_TOKENS]\n";
        return 2;
    }
    if (starkv_version_number() / 10000 != STARKV_VERSION_MAJOR)
        throw std::runtime_error(std::string("library ") + starkv_version_string() + " does not match header " +
                                 STARKV_VERSION_STRING);
    const std::string prompt = argc > 2 ? argv[2] : "Once upon a time";
    const int n_tokens = argc > 3 ? std::stoi(argv[3]) : 64;

    Model model = load_model(argv[1]);
    starkv_context *raw_ctx = nullptr;
    check(starkv_context_create(model.get(), nullptr, &raw_ctx), "context");
    Context ctx(raw_ctx);

    starkv_sampler_params sp;
    starkv_sampler_params_default(&sp);
    sp.temperature = 0.0f;  // greedy: the same text every run
    starkv_sampler *raw_sampler = nullptr;
    check(starkv_sampler_create(&sp, &raw_sampler), "sampler");
    Sampler sampler(raw_sampler);

    std::string text;
    auto on_piece = [](const char *piece, size_t len, starkv_token, void *user) -> bool {
        static_cast<std::string *>(user)->append(piece, len);
        std::fwrite(piece, 1, len, stdout);
        std::fflush(stdout);
        return true;
    };
    starkv_generate_params gp;
    starkv_generate_params_default(&gp);
    gp.max_tokens = n_tokens;
    gp.on_piece = on_piece;
    gp.user_data = &text;
    starkv_generate_result result;
    starkv_generate_result_default(&result);

    const std::vector<starkv_token> tokens = tokenize(model.get(), prompt);
    std::fputs(prompt.c_str(), stdout);
    check(starkv_generate(ctx.get(), sampler.get(), tokens.data(), tokens.size(), &gp, &result), "generate");
    std::fputc('\n', stdout);
    std::cerr << result.n_generated << " tokens generated\n";
    return 0;  // ctx, sampler, then model are freed here, in reverse order
} catch (const std::exception &e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
}
