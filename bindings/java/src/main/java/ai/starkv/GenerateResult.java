package ai.starkv;

/** Counts, stop reason and timings of one generation ({@code starkv_generate_result}). */
public record GenerateResult(int promptTokens, int generated, StopReason stopReason,
                             double promptSeconds, double decodeSeconds) {
    /** Decode speed: generated tokens per decode second. */
    public double tokensPerSecond() {
        return decodeSeconds > 0 ? generated / decodeSeconds : Double.POSITIVE_INFINITY;
    }

    static GenerateResult of(starkv_generate_result r) {
        return new GenerateResult((int) r.getN_prompt_tokens(), (int) r.getN_generated(),
                StopReason.fromCode(r.getStop_reason()), r.getPrompt_seconds(), r.getDecode_seconds());
    }
}
