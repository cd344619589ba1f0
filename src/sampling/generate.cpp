#include "sampling/generate.h"

#include <chrono>

#include "core/error.h"

namespace starkv {

std::string Utf8Stream::push(const std::string& bytes) {
    pending_ += bytes;
    // Find the start of the last (possibly incomplete) character.
    size_t n = pending_.size();
    size_t i = n;
    int back = 0;
    while (i > 0 && back < 4) {
        --i;
        ++back;
        const unsigned char b = static_cast<unsigned char>(pending_[i]);
        if ((b & 0xC0) != 0x80) {  // a lead byte or ASCII
            size_t need = b < 0x80 ? 1 : (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xE ? 3 : (b >> 3) == 0x1E ? 4 : 1;
            if (n - i < need) {
                std::string out = pending_.substr(0, i);
                pending_.erase(0, i);
                return out;
            }
            break;
        }
    }
    std::string out;
    out.swap(pending_);
    return out;
}

std::string Utf8Stream::flush() {
    std::string out;
    out.swap(pending_);
    return out;
}

GenerateResult generate(Context& ctx, Sampler& sampler, const std::vector<int32_t>& prompt, int max_tokens,
                        bool stop_at_eos, const PieceFn& on_piece) {
    using clock = std::chrono::steady_clock;
    const Tokenizer& tok = ctx.model().tokenizer();
    const Vocab& vocab = tok.vocab();
    GenerateResult r;
    r.n_prompt = static_cast<int>(prompt.size());

    auto t0 = clock::now();
    if (!prompt.empty()) ctx.eval(prompt.data(), prompt.size(), false);
    else if (ctx.logits(-1) == nullptr) fail(STARKV_ERR_INVALID_ARGUMENT, "empty prompt and no previous evaluation");
    for (int32_t t : prompt) sampler.accept(t);
    auto t1 = clock::now();
    r.prompt_seconds = std::chrono::duration<double>(t1 - t0).count();

    Utf8Stream stream;
    int32_t prev = prompt.empty() ? -1 : prompt.back();
    for (int i = 0; i < max_tokens; ++i) {
        if (ctx.aborted()) fail(STARKV_ERR_CANCELLED, "generation cancelled by the abort callback after " +
                                                          std::to_string(r.n_generated) + " tokens");
        const int32_t next = sampler.sample(ctx.logits(-1), ctx.model().config().n_vocab);
        sampler.accept(next);
        if (stop_at_eos && next == vocab.eos) {
            r.stop = StopReason::Eos;
            break;
        }
        ++r.n_generated;
        std::string piece = tok.token_to_piece(next, false);
        // SPM marks word starts with a space; the first word of a text has
        // none (llama2.c strips it after BOS too).
        if (prev == vocab.bos && vocab.kind == TokenizerKind::Spm && vocab.add_space_prefix && !piece.empty() &&
            piece[0] == ' ')
            piece.erase(0, 1);
        prev = next;
        const std::string ready = stream.push(piece);
        const bool go_on = !on_piece || ready.empty() || on_piece(ready, next);
        // Every emitted token enters the cache while there is room (also the
        // one the callback stopped at), so a later call continues the text.
        if (ctx.n_past() >= ctx.n_ctx()) {
            r.stop = go_on ? StopReason::ContextFull : StopReason::Callback;
            break;
        }
        ctx.eval(&next, 1, false, /*check_abort=*/false);
        if (!go_on) {
            r.stop = StopReason::Callback;
            break;
        }
    }
    if (r.stop != StopReason::Callback) {
        const std::string rest = stream.flush();
        if (on_piece && !rest.empty()) on_piece(rest, prev);
    }
    r.decode_seconds = std::chrono::duration<double>(clock::now() - t1).count();
    return r;
}

}  // namespace starkv
