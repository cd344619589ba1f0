package ai.starkv;

import java.lang.ref.Cleaner;
import java.nio.charset.StandardCharsets;

/**
 * An inference session on a {@link Model}: KV cache, scratch and logits
 * ({@code starkv_context}). The C contract is one thread at a time; this class
 * serializes its methods, and while a {@link TokenStream} runs the context belongs
 * to it (other calls throw {@link IllegalStateException}). Close it (or let it be
 * garbage-collected) to free it.
 */
public final class Context implements AutoCloseable {
    private static final class Free implements Runnable {
        final long ptr;
        final long cancelFlag;
        final Model.Handle model;
        Free(long ptr, long cancelFlag, Model.Handle model) { this.ptr = ptr; this.cancelFlag = cancelFlag; this.model = model; }
        @Override public void run() {
            StarkvNative.starkv_context_free(ptr);
            StarkvNative.starkv_jni_cancel_free(cancelFlag); // after the context that reads it
            model.release();
        }
    }

    private final Model model;
    private final long ptr;
    private final long cancelFlag;
    private final Object cancelLock = new Object(); // cancel() against close(): the flag is freed with the context
    private final Cleaner.Cleanable cleanable;
    private volatile boolean closed;
    private TokenStream stream; // the running stream, if any

    Context(Model model, int nCtx, int nThreads, long seed) {
        this.model = model;
        Model.Handle mh = model.retainHandle();
        starkv_context_params p = new starkv_context_params();
        try {
            StarkvNative.starkv_context_params_default(p);
            p.setN_ctx(nCtx);
            p.setN_threads(nThreads);
            p.setSeed(seed);
            long[] out = new long[1];
            StarkvException.check(StarkvNative.starkv_context_create(mh.ptr, p, out));
            ptr = out[0];
        } catch (RuntimeException e) {
            mh.release();
            throw e;
        } finally {
            p.delete();
        }
        cancelFlag = StarkvNative.starkv_jni_cancel_install(ptr);
        if (cancelFlag == 0) {
            StarkvException e = new StarkvException(Status.INTERNAL, StarkvNative.starkv_last_error());
            StarkvNative.starkv_context_free(ptr);
            mh.release();
            throw e;
        }
        cleanable = Model.CLEANER.register(this, new Free(ptr, cancelFlag, mh));
    }

    /** The model this context runs. */
    public Model model() { return model; }

    long ptr() {
        if (closed) throw new IllegalStateException("the context is closed");
        if (stream != null) throw new IllegalStateException("the context is in use by a running TokenStream; close it first");
        return ptr;
    }

    /** Frees the context (a running {@link TokenStream} is stopped first). Idempotent. */
    @Override public void close() {
        TokenStream s;
        synchronized (this) { s = stream; }
        if (s != null) s.close();
        synchronized (this) {
            synchronized (cancelLock) { closed = true; }
            cleanable.clean();
        }
    }

    /**
     * Stops the eval, score or generation running on this context in another thread:
     * it throws {@link StarkvException} with {@link Status#CANCELLED} (an eval leaves
     * the context as it was; a generation keeps the tokens it emitted). Thread-safe and
     * not blocked by the running call. Each of those calls clears the request when it
     * starts, so a cancel with nothing running has no effect.
     */
    public void cancel() {
        synchronized (cancelLock) {
            if (!closed) StarkvNative.starkv_jni_cancel_set(cancelFlag, true);
        }
    }

    private void arm() { StarkvNative.starkv_jni_cancel_set(cancelFlag, false); }

    /** Whether {@link #close} was called. */
    public boolean isClosed() { return closed; }

    /** Tokens held in the KV cache. */
    public synchronized int nPast() { return (int) StarkvNative.starkv_context_n_past(ptr()); }

    /** Capacity of the KV cache in tokens. */
    public synchronized int nCtx() { return (int) StarkvNative.starkv_context_n_ctx(ptr()); }

    /** Forgets every token (and restarts the default sampler). */
    public synchronized void reset() { StarkvException.check(StarkvNative.starkv_context_reset(ptr())); }

    /** Forgets every token at position &gt;= nPast. */
    public synchronized void rewind(int nPast) { StarkvException.check(StarkvNative.starkv_context_rewind(ptr(), nPast)); }

    /**
     * Runs tokens after what the cache holds; logits are kept for the last one, or every
     * one with {@code allLogits}.
     *
     * @throws StarkvException {@link Status#CONTEXT_FULL} when they do not fit (nothing changed)
     */
    public synchronized void eval(int[] tokens, boolean allLogits) {
        long p = ptr();
        arm();
        StarkvException.check(StarkvNative.starkv_context_eval(p, tokens, allLogits));
    }

    /** One decode step. */
    public synchronized void decode(int token) { StarkvException.check(StarkvNative.starkv_context_decode(ptr(), token)); }

    /** A copy of the logits (n_vocab floats) of the i-th token of the last eval; -1 is the last. */
    public synchronized float[] logits(int i) {
        float[] out = new float[model.nVocab()];
        StarkvException.check(StarkvNative.starkv_jni_logits(ptr(), i, out));
        return out;
    }

    /** Resets the context and scores {@code tokens}: summed -log p(token_i | tokens before), i &gt;= 1. */
    public synchronized Score score(int[] tokens) {
        double[] nll = new double[1];
        long[] n = new long[1];
        long p = ptr();
        arm();
        StarkvException.check(StarkvNative.starkv_context_score(p, tokens, nll, n));
        return new Score(nll[0], n[0]);
    }

    /** Perplexity of {@code text} tokenized with BOS (resets the context). */
    public double perplexity(String text) { return score(model.tokenize(text)).perplexity(); }

    /** KV-cache occupancy and bytes. */
    public synchronized KvStats kvStats() {
        starkv_kv_stats s = new starkv_kv_stats();
        try {
            StarkvNative.starkv_kv_stats_default(s);
            StarkvException.check(StarkvNative.starkv_context_kv_stats(ptr(), s));
            return new KvStats(s.getN_tokens(), s.getN_ctx(), s.getBytes_in_use(), s.getBytes_reserved(),
                    s.getBytes_per_token(), s.getBytes_per_token_uncompressed(), s.getDevice_bytes());
        } finally {
            s.delete();
        }
    }

    /** Prompt text as tokens: with BOS when the context is empty. */
    int[] promptTokens(String prompt) {
        if (prompt == null || prompt.isEmpty()) return new int[0];
        return model.tokenize(prompt, nPast() == 0, false);
    }

    /**
     * Evaluates {@code prompt} after what the context holds, then generates up to
     * {@code maxTokens} tokens, calling {@code listener} with each piece on this thread.
     *
     * @param prompt token ids (empty: continue from the last logits)
     * @param sampler null: the context's default sampler (seeded by the context's seed)
     * @param stopAtEos stop at the end-of-sequence token
     * @param listener may be null; returning false stops generation; an exception it
     *     throws stops generation cleanly and is rethrown here
     * @throws StarkvException {@link Status#CONTEXT_FULL} when the prompt does not fit
     */
    public synchronized GenerateResult generate(int[] prompt, Sampler sampler, int maxTokens, boolean stopAtEos,
                                                PieceListener listener) {
        long p = ptr();
        arm();
        return run(p, prompt, sampler, maxTokens, stopAtEos, listener);
    }

    /** {@link #generate(int[], Sampler, int, boolean, PieceListener)} of a text prompt (BOS when empty), stopping at EOS. */
    public GenerateResult generate(String prompt, int maxTokens, Sampler sampler, PieceListener listener) {
        synchronized (this) {
            return generate(promptTokens(prompt), sampler, maxTokens, true, listener);
        }
    }

    /** The generated text. */
    public String complete(String prompt, int maxTokens, Sampler sampler) {
        StringBuilder sb = new StringBuilder();
        generate(prompt, maxTokens, sampler, (piece, token) -> {
            sb.append(piece);
            return true;
        });
        return sb.toString();
    }

    /**
     * The generated text as an iterator of pieces (see {@link TokenStream}); close it
     * (try-with-resources) to stop early.
     */
    public synchronized TokenStream stream(int[] prompt, Sampler sampler, int maxTokens, boolean stopAtEos) {
        ptr();
        if (sampler != null) sampler.ptr();
        return new TokenStream(this, prompt, sampler, maxTokens, stopAtEos);
    }

    /** {@link #stream(int[], Sampler, int, boolean)} of a text prompt, stopping at EOS. */
    public synchronized TokenStream stream(String prompt, int maxTokens, Sampler sampler) {
        return stream(promptTokens(prompt), sampler, maxTokens, true);
    }

    synchronized long claim(TokenStream s) {
        long p = ptr();
        arm();
        stream = s;
        return p;
    }

    synchronized void release(TokenStream s) {
        if (stream == s) stream = null;
    }

    /** The generation itself, on a handle the caller owns for the duration. */
    static GenerateResult run(long ctx, int[] prompt, Sampler sampler, int maxTokens, boolean stopAtEos,
                              PieceListener listener) {
        Adapter adapter = listener == null ? null : new Adapter(listener);
        starkv_generate_result r = new starkv_generate_result();
        try {
            StarkvNative.starkv_generate_result_default(r);
            int st = StarkvNative.starkv_jni_generate(ctx, sampler == null ? 0 : sampler.ptr(), prompt, maxTokens,
                    stopAtEos, adapter, r);
            if (adapter != null && adapter.error != null) throw sneaky(adapter.error);
            StarkvException.check(st);
            return GenerateResult.of(r);
        } finally {
            r.delete();
            if (adapter != null) adapter.delete();
        }
    }

    /** Bridges the director to a PieceListener: a throwable is kept and makes the C side stop. */
    private static final class Adapter extends NativePieceCallback {
        final PieceListener listener;
        Throwable error;

        Adapter(PieceListener listener) { this.listener = listener; }

        @Override public boolean onPiece(byte[] piece, int token) {
            try {
                return listener.onPiece(new String(piece, StandardCharsets.UTF_8), token);
            } catch (Throwable t) {
                error = t;
                return false;
            }
        }
    }

    @SuppressWarnings("unchecked")
    static <T extends Throwable> RuntimeException sneaky(Throwable t) throws T {
        throw (T) t;
    }

    @Override public String toString() {
        return closed ? "Context[closed]" : "Context[n_ctx=" + StarkvNative.starkv_context_n_ctx(ptr) + "]";
    }
}
