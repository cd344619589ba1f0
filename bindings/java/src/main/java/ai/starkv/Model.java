package ai.starkv;

import java.lang.ref.Cleaner;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.DoublePredicate;

/**
 * A loaded model: a GGUF file or a Hugging Face directory. Immutable and thread-safe:
 * share one model between threads, each with its own {@link Context}.
 *
 * <p>Close it (try-with-resources) to free its memory; an unclosed model is freed
 * when garbage-collected. Contexts keep the native model alive: closing a model
 * while contexts are open frees it when the last of them is closed.
 *
 * <pre>{@code
 * try (Model model = Model.load(Path.of("stories260K.gguf"));
 *      Context ctx = model.newContext()) {
 *     ctx.generate("Once upon a time", 64, Sampler.greedy(), (piece, token) -> {
 *         System.out.print(piece);
 *         return true;
 *     });
 * }
 * }</pre>
 */
public final class Model implements AutoCloseable {
    static final Cleaner CLEANER = Cleaner.create();

    /** The native handle, freed when the model and every context using it let go. */
    static final class Handle implements Runnable {
        final long ptr;
        private final AtomicInteger refs = new AtomicInteger(1);

        Handle(long ptr) { this.ptr = ptr; }

        void retain() { refs.incrementAndGet(); }

        void release() {
            if (refs.decrementAndGet() == 0) StarkvNative.starkv_model_free(ptr);
        }

        @Override public void run() { release(); } // the model's own reference
    }

    private final Handle handle;
    private final Cleaner.Cleanable cleanable;
    private final ModelInfo info;
    private volatile boolean closed;

    private Model(long ptr) {
        handle = new Handle(ptr);
        cleanable = CLEANER.register(this, handle);
        starkv_model_info raw = new starkv_model_info();
        try {
            StarkvNative.starkv_model_info_default(raw);
            StarkvException.check(StarkvNative.starkv_model_get_info(ptr, raw));
            info = ModelInfo.of(raw);
        } finally {
            raw.delete();
        }
    }

    /**
     * Loads a model.
     *
     * @param path a {@code .gguf} file or a Hugging Face model directory
     * @throws StarkvException {@link Status#IO} (missing or unreadable), {@link Status#CORRUPT},
     *     {@link Status#UNSUPPORTED}
     */
    public static Model load(Path path) { return load(path, null); }

    /** Loads a model (see {@link #load(Path)}). */
    public static Model load(String path) { return load(Path.of(path), null); }

    /**
     * Loads a model, reporting progress in [0, 1]. The listener returns false to cancel
     * ({@link Status#CANCELLED}); an exception it throws cancels the load and is rethrown.
     */
    public static Model load(Path path, DoublePredicate progress) {
        NativeLibrary.load();
        long[] out = new long[1];
        ProgressAdapter cb = progress == null ? null : new ProgressAdapter(progress);
        try {
            int st = StarkvNative.starkv_jni_model_load(path.toString(), cb, out);
            if (cb != null && cb.error != null) {
                StarkvNative.starkv_model_free(out[0]);
                throw Context.sneaky(cb.error);
            }
            StarkvException.check(st);
        } finally {
            if (cb != null) cb.delete();
        }
        return new Model(out[0]);
    }

    /** Bridges the director to the listener: a throwable is kept and cancels the load. */
    private static final class ProgressAdapter extends NativeProgressCallback {
        final DoublePredicate listener;
        Throwable error;

        ProgressAdapter(DoublePredicate listener) { this.listener = listener; }

        @Override public boolean onProgress(float p) {
            try {
                return listener.test(p);
            } catch (Throwable t) {
                error = t;
                return false;
            }
        }
    }

    /** Frees the model (once its contexts are closed too). Idempotent. */
    @Override public void close() {
        closed = true;
        cleanable.clean();
    }

    /** Whether {@link #close} was called. */
    public boolean isClosed() { return closed; }

    long ptr() {
        if (closed) throw new IllegalStateException("the model is closed");
        return handle.ptr;
    }

    Handle retainHandle() {
        ptr();
        handle.retain();
        return handle;
    }

    /** Architecture, dimensions, tokenizer and special tokens. */
    public ModelInfo info() { return info; }

    /** Vocabulary size (length of a logits vector). */
    public int nVocab() { return info.nVocab(); }

    /** The file's tensor table. */
    public List<TensorInfo> tensors() {
        long ptr = ptr();
        long n = StarkvNative.starkv_model_n_tensors(ptr);
        List<TensorInfo> out = new ArrayList<>();
        for (long i = 0; i < n; i++) {
            starkv_tensor_info t = new starkv_tensor_info();
            try {
                StarkvNative.starkv_tensor_info_default(t);
                StarkvException.check(StarkvNative.starkv_model_tensor(ptr, i, t));
                long[] shape = new long[Math.max(0, Math.min(4, t.getN_dims()))];
                for (int d = 0; d < shape.length; d++) shape[d] = t.shapeAt(d);
                out.add(new TensorInfo(t.getName(), t.getDtype(), shape, t.getOffset(), t.getN_bytes()));
            } finally {
                t.delete();
            }
        }
        return out;
    }

    /** Tokens of {@code text} with BOS, control-token spellings as plain text. */
    public int[] tokenize(String text) { return tokenize(text, true, false); }

    /**
     * Tokens of {@code text}.
     *
     * @param addBos prepend the BOS token
     * @param parseSpecial text that spells a control token ({@code "<s>"}) becomes that token
     */
    public int[] tokenize(String text, boolean addBos, boolean parseSpecial) {
        long ptr = ptr();
        byte[] bytes = text.getBytes(StandardCharsets.UTF_8);
        long[] n = new long[1];
        int[] tokens = new int[bytes.length + 4];
        int st = StarkvNative.starkv_tokenize(ptr, bytes, addBos, parseSpecial, tokens, n);
        if (st == Status.BUFFER_TOO_SMALL.code()) {
            tokens = new int[(int) n[0]];
            st = StarkvNative.starkv_tokenize(ptr, bytes, addBos, parseSpecial, tokens, n);
        }
        StarkvException.check(st);
        return n[0] == tokens.length ? tokens : java.util.Arrays.copyOf(tokens, (int) n[0]);
    }

    /** Text of a token sequence (control tokens dropped); inverse of {@link #tokenize(String)}. */
    public String detokenize(int[] tokens) {
        return new String(detokenizeBytes(tokens), StandardCharsets.UTF_8);
    }

    /** Bytes of a token sequence. */
    public byte[] detokenizeBytes(int[] tokens) {
        long ptr = ptr();
        return sized(tokens.length * 8 + 16, (buf, n) -> StarkvNative.starkv_detokenize(ptr, tokens, buf, n));
    }

    /** Text of one token as it reads inside text (may be part of a character: see {@link #tokenBytes}). */
    public String tokenToPiece(int token) { return new String(tokenBytes(token, false), StandardCharsets.UTF_8); }

    /** Bytes of one token; control tokens give nothing unless {@code renderSpecial}. */
    public byte[] tokenBytes(int token, boolean renderSpecial) {
        long ptr = ptr();
        return sized(32, (buf, n) -> StarkvNative.starkv_token_to_piece(ptr, token, renderSpecial, buf, n));
    }

    private interface BufferCall { int call(byte[] buf, long[] n); }

    private static byte[] sized(int guess, BufferCall call) {
        long[] n = new long[1];
        byte[] buf = new byte[guess];
        int st = call.call(buf, n);
        if (st == Status.BUFFER_TOO_SMALL.code()) {
            buf = new byte[(int) n[0]];
            st = call.call(buf, n);
        }
        StarkvException.check(st);
        return n[0] == buf.length ? buf : java.util.Arrays.copyOf(buf, (int) n[0]);
    }

    /** A new context with the model's training context length and all hardware threads. */
    public Context newContext() { return new Context(this, 0, 0, 0); }

    /**
     * A new context.
     *
     * @param nCtx tokens of KV cache (0: the model's training context)
     * @param nThreads compute threads (0: all hardware threads)
     * @param seed seed of the default sampler used when generate gets no sampler
     */
    public Context newContext(int nCtx, int nThreads, long seed) { return new Context(this, nCtx, nThreads, seed); }

    @Override public String toString() {
        return "Model[" + info.architecture() + ", " + info.nParams() + " params" + (closed ? ", closed]" : "]");
    }
}
