package ai.starkv;

/** Result of {@link Context#score}: summed negative log-likelihood over {@code nScored} tokens. */
public record Score(double nllSum, long nScored) {
    /** exp(nllSum / nScored). */
    public double perplexity() { return Math.exp(nllSum / nScored); }
}
