// The generation loop: prompt in, sampled tokens out, streamed as text pieces.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "model/context.h"
#include "sampling/sampler.h"

namespace starkv {

enum class StopReason { MaxTokens = 0, Eos = 1, Callback = 2, ContextFull = 3 };

struct GenerateResult {
    int n_prompt = 0;
    int n_generated = 0;
    StopReason stop = StopReason::MaxTokens;
    double prompt_seconds = 0;
    double decode_seconds = 0;
};

// Returns false to stop generation.
using PieceFn = std::function<bool(const std::string& piece, int32_t token)>;

GenerateResult generate(Context& ctx, Sampler& sampler, const std::vector<int32_t>& prompt, int max_tokens,
                        bool stop_at_eos, const PieceFn& on_piece);

// Collects the bytes of successive pieces and releases them only as whole
// UTF-8 characters, so a streamed character split over tokens is never cut.
class Utf8Stream {
public:
    // Appends bytes; returns the complete prefix now releasable.
    std::string push(const std::string& bytes);
    // Whatever is left (an incomplete sequence at the end of generation).
    std::string flush();

private:
    std::string pending_;
};

}  // namespace starkv
