package ai.starkv;

import java.lang.ref.Cleaner;

/**
 * Picks tokens from logits: penalties, top-k, top-p, min-p, temperature, a seeded
 * draw ({@code starkv_sampler}). Temperature &lt;= 0 is greedy. Used by one thread at
 * a time. Build one with {@link #builder()} or {@link #greedy()}; close it (or let it
 * be garbage-collected) to free it.
 */
public final class Sampler implements AutoCloseable {
    private static final class Free implements Runnable {
        final long ptr;
        Free(long ptr) { this.ptr = ptr; }
        @Override public void run() { StarkvNative.starkv_sampler_free(ptr); }
    }

    private final long ptr;
    private final Cleaner.Cleanable cleanable;
    private volatile boolean closed;

    private Sampler(starkv_sampler_params params) {
        long[] out = new long[1];
        StarkvException.check(StarkvNative.starkv_sampler_create(params, out));
        ptr = out[0];
        cleanable = Model.CLEANER.register(this, new Free(ptr));
    }

    /** A greedy sampler (argmax). */
    public static Sampler greedy() { return builder().temperature(0).build(); }

    /** Starts from the library's defaults (temperature 0.8, top-k 40, top-p 0.95, min-p 0.05). */
    public static Builder builder() { return new Builder(); }

    /** Sampler parameters; unset ones keep the library's defaults. */
    public static final class Builder {
        private Float temperature, topP, minP, repeatPenalty, presencePenalty, frequencyPenalty;
        private Integer topK, penaltyLastN;
        private Long seed;

        public Builder temperature(double v) { temperature = (float) v; return this; }
        public Builder topK(int v) { topK = v; return this; }
        public Builder topP(double v) { topP = (float) v; return this; }
        public Builder minP(double v) { minP = (float) v; return this; }
        public Builder repeatPenalty(double v) { repeatPenalty = (float) v; return this; }
        public Builder presencePenalty(double v) { presencePenalty = (float) v; return this; }
        public Builder frequencyPenalty(double v) { frequencyPenalty = (float) v; return this; }
        public Builder penaltyLastN(int v) { penaltyLastN = v; return this; }
        public Builder seed(long v) { seed = v; return this; }

        /** Creates the sampler. */
        public Sampler build() {
            NativeLibrary.load();
            starkv_sampler_params p = new starkv_sampler_params();
            try {
                StarkvNative.starkv_sampler_params_default(p);
                if (temperature != null) p.setTemperature(temperature);
                if (topK != null) p.setTop_k(topK);
                if (topP != null) p.setTop_p(topP);
                if (minP != null) p.setMin_p(minP);
                if (repeatPenalty != null) p.setRepeat_penalty(repeatPenalty);
                if (presencePenalty != null) p.setPresence_penalty(presencePenalty);
                if (frequencyPenalty != null) p.setFrequency_penalty(frequencyPenalty);
                if (penaltyLastN != null) p.setPenalty_last_n(penaltyLastN);
                if (seed != null) p.setSeed(seed);
                return new Sampler(p);
            } finally {
                p.delete();
            }
        }
    }

    long ptr() {
        if (closed) throw new IllegalStateException("the sampler is closed");
        return ptr;
    }

    /** A token picked from {@code logits} (not modified, not recorded). */
    public synchronized int sample(float[] logits) {
        int[] out = new int[1];
        StarkvException.check(StarkvNative.starkv_sampler_sample(ptr(), logits, out));
        return out[0];
    }

    /** Records a token of the sequence for the penalties. */
    public synchronized void accept(int token) { StarkvException.check(StarkvNative.starkv_sampler_accept(ptr(), token)); }

    /** Forgets accepted tokens and restarts the random stream from the seed. */
    public synchronized void reset() { StarkvException.check(StarkvNative.starkv_sampler_reset(ptr())); }

    /** Frees the sampler. Idempotent. */
    @Override public synchronized void close() {
        closed = true;
        cleanable.clean();
    }
}
