package ai.starkv;

import java.util.Iterator;
import java.util.NoSuchElementException;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.BlockingQueue;

/**
 * The pieces of one generation as an {@link Iterator} (and a one-shot {@link Iterable}).
 *
 * <p>The C API streams through a callback; an iterator cannot return from inside it.
 * So the first {@link #hasNext()} starts {@code starkv_generate} on a daemon thread
 * whose callback hands each piece over and waits for the consumer to ask for the next
 * one: generation advances one piece per {@link #next()}, never ahead of the consumer.
 * {@link #close()} makes that callback return false, which stops the library cleanly
 * ({@link StopReason#CALLBACK}). While the stream runs, the context belongs to it.
 */
public final class TokenStream implements Iterator<String>, Iterable<String>, AutoCloseable {
    private record Item(String piece, GenerateResult result, Throwable error) {}

    private final Context ctx;
    private final int[] prompt;
    private final Sampler sampler;
    private final int maxTokens;
    private final boolean stopAtEos;
    private final BlockingQueue<Item> toConsumer = new ArrayBlockingQueue<>(1);
    private final BlockingQueue<Boolean> toProducer = new ArrayBlockingQueue<>(1);
    private Thread thread;
    private Item pending;
    private boolean awaitingReply, finished;
    private GenerateResult result;

    TokenStream(Context ctx, int[] prompt, Sampler sampler, int maxTokens, boolean stopAtEos) {
        this.ctx = ctx;
        this.prompt = prompt;
        this.sampler = sampler;
        this.maxTokens = maxTokens;
        this.stopAtEos = stopAtEos;
    }

    private void start() {
        long handle = ctx.claim(this);
        thread = new Thread(() -> {
            Item last;
            try {
                last = new Item(null, Context.run(handle, prompt, sampler, maxTokens, stopAtEos, (piece, token) -> {
                    put(toConsumer, new Item(piece, null, null));
                    return take(toProducer);
                }), null);
            } catch (Throwable t) {
                last = new Item(null, null, t);
            }
            put(toConsumer, last);
        }, "starkv-generate");
        thread.setDaemon(true);
        thread.start();
    }

    private static <T> void put(BlockingQueue<T> q, T v) {
        boolean interrupted = false;
        while (true) {
            try {
                q.put(v);
                break;
            } catch (InterruptedException e) {
                interrupted = true;
            }
        }
        if (interrupted) Thread.currentThread().interrupt();
    }

    private static <T> T take(BlockingQueue<T> q) {
        boolean interrupted = false;
        try {
            while (true) {
                try {
                    return q.take();
                } catch (InterruptedException e) {
                    interrupted = true;
                }
            }
        } finally {
            if (interrupted) Thread.currentThread().interrupt();
        }
    }

    @Override public synchronized boolean hasNext() {
        if (finished) return false;
        if (pending != null) return true;
        if (thread == null) start();
        if (awaitingReply) {
            awaitingReply = false;
            put(toProducer, Boolean.TRUE);
        }
        Item it = take(toConsumer);
        if (it.piece() != null) {
            pending = it;
            awaitingReply = true;
            return true;
        }
        finish(it);
        if (it.error() != null) {
            if (it.error() instanceof RuntimeException re) throw re;
            if (it.error() instanceof Error e) throw e;
            throw new IllegalStateException(it.error());
        }
        return false;
    }

    @Override public synchronized String next() {
        if (!hasNext()) throw new NoSuchElementException();
        String piece = pending.piece();
        pending = null;
        return piece;
    }

    private void finish(Item last) {
        finished = true;
        result = last.result();
        boolean interrupted = false;
        while (thread != null && thread.isAlive()) {
            try {
                thread.join();
            } catch (InterruptedException e) {
                interrupted = true;
            }
        }
        if (interrupted) Thread.currentThread().interrupt();
        ctx.release(this);
    }

    /** Stops generation if it runs and gives the context back. Idempotent. */
    @Override public synchronized void close() {
        if (finished) return;
        if (thread == null) {
            finished = true;
            return;
        }
        pending = null;
        Item it;
        if (awaitingReply) {
            awaitingReply = false;
            put(toProducer, Boolean.FALSE);
        }
        it = take(toConsumer);
        while (it.piece() != null) { // not expected: the producer waits for each reply
            put(toProducer, Boolean.FALSE);
            it = take(toConsumer);
        }
        finish(it);
    }

    /** Counts and stop reason, once the stream is exhausted or closed (else null). */
    public synchronized GenerateResult result() { return result; }

    /** This stream (it can be iterated once). */
    @Override public Iterator<String> iterator() { return this; }
}
