package ai.starkv;

import static org.junit.jupiter.api.Assertions.*;

import java.io.ByteArrayOutputStream;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

class GenerateTest {
    static Model model;

    @BeforeAll static void load() { model = Model.load(TestSupport.modelPath()); }

    @AfterAll static void free() { model.close(); }

    @Test void greedyFromBosMatchesGolden() throws Exception {
        try (Context ctx = model.newContext(); Sampler greedy = Sampler.greedy()) {
            StringBuilder sb = new StringBuilder();
            GenerateResult r = ctx.generate(new int[] {model.info().bosToken()}, greedy, 256, false,
                    (piece, token) -> { sb.append(piece); return true; });
            assertEquals(TestSupport.golden(), sb.toString());
            assertEquals(256, r.generated());
            assertEquals(1, r.promptTokens());
            assertEquals(StopReason.MAX_TOKENS, r.stopReason());
            ctx.reset();
            greedy.reset();
            StringBuilder sb2 = new StringBuilder();
            try (TokenStream s = ctx.stream(new int[] {model.info().bosToken()}, greedy, 256, false)) {
                for (String piece : s) sb2.append(piece);
                assertEquals(256, s.result().generated());
            }
            assertEquals(TestSupport.golden(), sb2.toString());
        }
    }

    @Test void greedyMatchesCli() throws Exception {
        String cli = System.getenv("STARKV_CLI");
        assertNotNull(cli, "STARKV_CLI is not set");
        for (String prompt : new String[] {"Once upon a time", "The cat"}) {
            Process p = new ProcessBuilder(cli, "run", "--model", TestSupport.modelPath().toString(), "--prompt",
                    prompt, "-n", "50", "--temp", "0").redirectError(ProcessBuilder.Redirect.DISCARD).start();
            String out;
            try (InputStream in = p.getInputStream()) {
                out = new String(in.readAllBytes(), StandardCharsets.UTF_8);
            }
            assertEquals(0, p.waitFor());
            try (Context ctx = model.newContext(); Sampler greedy = Sampler.greedy()) {
                String text = ctx.complete(prompt, 50, greedy);
                assertEquals(out.stripTrailing(), (prompt + text).stripTrailing());
            }
        }
    }

    @Test void listenerFalseStops() {
        try (Context ctx = model.newContext(); Sampler greedy = Sampler.greedy()) {
            List<Integer> seen = new ArrayList<>();
            GenerateResult r = ctx.generate("Once upon a time", 100, greedy, (piece, token) -> {
                seen.add(token);
                return seen.size() < 5;
            });
            assertEquals(StopReason.CALLBACK, r.stopReason());
            assertEquals(5, seen.size());
        }
    }

    @Test void listenerExceptionIsRethrownAndContextSurvives() {
        try (Context ctx = model.newContext(); Sampler greedy = Sampler.greedy()) {
            int[] calls = {0};
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> ctx.generate("Once upon a time", 100, greedy, (piece, token) -> {
                        if (++calls[0] == 3) throw new IllegalArgumentException("from the listener");
                        return true;
                    }));
            assertEquals("from the listener", e.getMessage());
            assertEquals(3, calls[0]);
            int n = ctx.nPast();
            assertTrue(n > 0);
            String more = ctx.complete("", 5, greedy);
            assertNotNull(more);
            assertTrue(ctx.nPast() > n);
            // an Error thrown by the listener too
            assertThrows(AssertionError.class, () -> ctx.generate("", 10, greedy, (p, t) -> { throw new AssertionError("x"); }));
        }
    }

    /** A Java exception that escapes a director (no adapter catching it) stays pending: the C side
     * sees "stop", no C++ exception crosses C frames, and the JVM throws it when the native call returns. */
    @Test void directorExceptionStaysPending() {
        try (Context ctx = model.newContext(); Sampler greedy = Sampler.greedy()) {
            int[] calls = {0};
            NativePieceCallback raw = new NativePieceCallback() {
                @Override public boolean onPiece(byte[] piece, int token) {
                    if (++calls[0] == 2) throw new UnsupportedOperationException("raw director");
                    return true;
                }
            };
            starkv_generate_result r = new starkv_generate_result();
            StarkvNative.starkv_generate_result_default(r);
            int[] prompt = model.tokenize("Once upon a time");
            UnsupportedOperationException e = assertThrows(UnsupportedOperationException.class,
                    () -> StarkvNative.starkv_jni_generate(ctx.ptr(), greedy.ptr(), prompt, 50, true, raw, r));
            assertEquals("raw director", e.getMessage());
            assertEquals(2, calls[0]);
            assertTrue(raw.getFailed());
            assertEquals(StopReason.CALLBACK.ordinal(), r.getStop_reason());
            raw.delete();
            r.delete();
            int n = ctx.nPast();
            ctx.complete("", 5, greedy); // still usable: continues after the stop
            assertEquals(n + 5, ctx.nPast());
        }
    }

    @Test void streamCloseStopsAndReleasesContext() {
        try (Context ctx = model.newContext(); Sampler greedy = Sampler.greedy()) {
            TokenStream s = ctx.stream("Once upon a time", 200, greedy);
            List<String> got = new ArrayList<>();
            for (String piece : s) {
                got.add(piece);
                if (got.size() == 4) break;
            }
            assertThrows(IllegalStateException.class, ctx::nPast);
            s.close();
            assertEquals(StopReason.CALLBACK, s.result().stopReason());
            assertEquals(4, s.result().generated());
            assertEquals(s.result().promptTokens() + s.result().generated(), ctx.nPast());
            s.close(); // idempotent
            assertFalse(s.hasNext());
        }
    }

    @Test void streamErrorSurfacesInConsumer() {
        try (Context ctx = model.newContext(8, 1, 0)) {
            TokenStream s = ctx.stream(new int[] {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, null, 3, true);
            StarkvException e = assertThrows(StarkvException.class, s::hasNext);
            assertEquals(Status.CONTEXT_FULL, e.getStatus());
            ctx.reset(); // released
        }
    }

    @Test void contextOverflowIsContextFull() {
        try (Context ctx = model.newContext(16, 1, 0)) {
            int[] many = new int[40];
            for (int i = 0; i < many.length; i++) many[i] = i + 1;
            StarkvException e = assertThrows(StarkvException.class, () -> ctx.eval(many, false));
            assertEquals(Status.CONTEXT_FULL, e.getStatus());
            assertEquals(0, ctx.nPast());
            GenerateResult r = ctx.generate(new int[] {model.info().bosToken()}, Sampler.greedy(), 100, false, null);
            assertEquals(StopReason.CONTEXT_FULL, r.stopReason());
            ctx.reset();
            StarkvException bad = assertThrows(StarkvException.class, () -> ctx.eval(new int[] {100000}, false));
            assertEquals(Status.INVALID_ARGUMENT, bad.getStatus());
        }
    }

    @Test void logitsAndPerplexity() {
        try (Context ctx = model.newContext(); Sampler greedy = Sampler.greedy()) {
            int[] tokens = model.tokenize("Once upon a time, there was a little girl named Lily.");
            ctx.eval(tokens, false);
            float[] logits = ctx.logits(-1);
            assertEquals(512, logits.length);
            int best = 0;
            for (int i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
            assertEquals(best, greedy.sample(logits));
            Score s = ctx.score(tokens);
            assertEquals(tokens.length - 1, s.nScored());
            assertEquals(s.perplexity(), ctx.perplexity("Once upon a time, there was a little girl named Lily."), 1e-9);
            assertTrue(s.perplexity() > 1 && s.perplexity() < 50, "ppl " + s.perplexity());
            KvStats st = ctx.kvStats();
            assertEquals(tokens.length, st.nTokens());
        }
    }

    @Test void oneModelManyThreads() throws Exception {
        String expected;
        try (Context ctx = model.newContext(); Sampler greedy = Sampler.greedy()) {
            expected = ctx.complete("Once upon a time", 40, greedy);
        }
        ExecutorService pool = Executors.newFixedThreadPool(6);
        try {
            List<Future<List<String>>> futures = new ArrayList<>();
            for (int t = 0; t < 6; t++) {
                final boolean useStream = t % 2 == 0;
                futures.add(pool.submit(() -> {
                    List<String> out = new ArrayList<>();
                    try (Context ctx = model.newContext(0, 1, 0); Sampler greedy = Sampler.greedy()) {
                        for (int i = 0; i < 3; i++) {
                            ctx.reset();
                            greedy.reset();
                            if (useStream) {
                                StringBuilder sb = new StringBuilder();
                                try (TokenStream s = ctx.stream("Once upon a time", 40, greedy)) {
                                    for (String p : s) sb.append(p);
                                }
                                out.add(sb.toString());
                            } else {
                                out.add(ctx.complete("Once upon a time", 40, greedy));
                            }
                        }
                    }
                    return out;
                }));
            }
            for (Future<List<String>> f : futures) assertEquals(List.of(expected, expected, expected), f.get());
        } finally {
            pool.shutdown();
        }
    }

    @Test void resourcesAreFreed() throws Exception {
        for (int i = 0; i < 20; i++) cycle(i);
        long before = rssKiB();
        for (int i = 0; i < 200; i++) cycle(i);
        long after = rssKiB();
        assertTrue(after - before < 16 * 1024, "RSS grew from " + before + " to " + after + " KiB");
    }

    private static void cycle(int i) {
        try (Model m = Model.load(TestSupport.modelPath());
             Context ctx = m.newContext(128, 1, i);
             Sampler s = Sampler.builder().temperature(0.8).seed(i).build();
             TokenStream ts = ctx.stream("Once", 3, s)) {
            ts.hasNext();
        }
    }

    private static long rssKiB() throws Exception {
        for (String line : java.nio.file.Files.readAllLines(java.nio.file.Path.of("/proc/self/status")))
            if (line.startsWith("VmRSS:")) return Long.parseLong(line.replaceAll("[^0-9]", ""));
        throw new IllegalStateException("no VmRSS");
    }

    @Test void cancelKeepsTheEmittedTokensAndTheNextCallRuns() {
        try (Context ctx = model.newContext(); Sampler greedy = Sampler.greedy()) {
            int[] prompt = model.tokenize("Once upon a time");
            List<String> seen = new ArrayList<>();
            StarkvException e = assertThrows(StarkvException.class, () ->
                    ctx.generate(prompt, greedy, 1000, false, (piece, token) -> {
                        seen.add(piece);
                        if (seen.size() == 5) ctx.cancel(); // another thread would do the same
                        return true;
                    }));
            assertEquals(Status.CANCELLED, e.getStatus());
            assertEquals(prompt.length + 5, ctx.nPast()); // every emitted token is cached
            GenerateResult r = ctx.generate(new int[0], greedy, 20, false, (piece, token) -> { seen.add(piece); return true; });
            assertEquals(20, r.generated());
            try (Context ref = model.newContext(); Sampler g2 = Sampler.greedy()) {
                StringBuilder sb = new StringBuilder();
                ref.generate(prompt, g2, 25, false, (piece, token) -> { sb.append(piece); return true; });
                assertEquals(sb.toString(), String.join("", seen));
            }
            KvStats kv = ctx.kvStats();
            assertEquals(kv.bytesPerTokenUncompressed(), kv.bytesPerToken()); // a plain GGUF
            assertEquals(0, kv.deviceBytes());
        }
    }
}
