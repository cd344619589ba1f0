package ai.starkv;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;

class ModelTest {
    @Test void infoDescribesStories260K() {
        try (Model m = Model.load(TestSupport.modelPath())) {
            ModelInfo i = m.info();
            assertEquals("llama", i.architecture());
            assertEquals("gguf", i.format());
            assertEquals(512, i.nVocab());
            assertEquals(64, i.nEmbd());
            assertEquals(5, i.nLayer());
            assertEquals(8, i.nHead());
            assertEquals(4, i.nHeadKv());
            assertTrue(i.bosToken() >= 0);
            assertTrue(i.nParams() > 200_000);
            TensorInfo emb = m.tensors().stream().filter(t -> t.name().equals("token_embd.weight")).findFirst().orElseThrow();
            assertEquals("F32", emb.dtype());
            assertEquals(512L * 64, emb.shape()[0] * emb.shape()[1]);
        }
    }

    @Test void tokenizeRoundTrip() {
        try (Model m = Model.load(TestSupport.modelPath())) {
            String text = "Once upon a time, Zoë saw a café 🐱.";
            int[] tokens = m.tokenize(text);
            assertEquals(m.info().bosToken(), tokens[0]);
            assertEquals(text, m.detokenize(tokens));
            int[] noBos = m.tokenize(text, false, false);
            assertEquals(tokens.length - 1, noBos.length);
            assertArrayEquals(new int[] {m.info().bosToken()}, m.tokenize("<s>", false, true));
            assertEquals("", m.tokenToPiece(m.info().bosToken()));
            assertTrue(m.tokenBytes(m.info().bosToken(), true).length > 0);
        }
    }

    @Test void missingFileIsIoError() throws Exception {
        Path dir = Files.createTempDirectory("starkv-test");
        StarkvException e = assertThrows(StarkvException.class, () -> Model.load(dir.resolve("nope.gguf")));
        assertEquals(Status.IO, e.getStatus());
        assertTrue(e.getMessage().contains("nope.gguf"), e.getMessage());
    }

    @Test void corruptFileIsCorruptError() throws Exception {
        Path dir = Files.createTempDirectory("starkv-test");
        Path bad = dir.resolve("bad.gguf");
        byte[] b = new byte[64];
        b[0] = 'G'; b[1] = 'G'; b[2] = 'U'; b[3] = 'F'; b[4] = 3;
        b[13] = 1; // 2^40 tensors
        b[21] = 1; // 2^40 keys
        Files.write(bad, b);
        StarkvException e = assertThrows(StarkvException.class, () -> Model.load(bad));
        assertEquals(Status.CORRUPT, e.getStatus());
        Path truncated = dir.resolve("truncated.gguf");
        byte[] all = Files.readAllBytes(TestSupport.modelPath());
        Files.write(truncated, java.util.Arrays.copyOf(all, all.length / 2));
        StarkvException e2 = assertThrows(StarkvException.class, () -> Model.load(truncated));
        assertTrue(e2.getStatus() == Status.CORRUPT || e2.getStatus() == Status.IO, e2.getStatus().toString());
    }

    @Test void progressListener() {
        List<Double> seen = new ArrayList<>();
        try (Model m = Model.load(TestSupport.modelPath(), p -> seen.add(p))) {
            assertEquals(512, m.nVocab());
        }
        assertFalse(seen.isEmpty());
        StarkvException e = assertThrows(StarkvException.class, () -> Model.load(TestSupport.modelPath(), p -> false));
        assertEquals(Status.CANCELLED, e.getStatus());
        IllegalStateException thrown = assertThrows(IllegalStateException.class,
                () -> Model.load(TestSupport.modelPath(), p -> { throw new IllegalStateException("no"); }));
        assertEquals("no", thrown.getMessage());
    }

    @Test void closedModelThrowsButContextsKeepIt() {
        Model m = Model.load(TestSupport.modelPath());
        Context ctx = m.newContext(64, 1, 0);
        m.close();
        m.close(); // idempotent
        assertTrue(m.isClosed());
        assertThrows(IllegalStateException.class, () -> m.tokenize("x"));
        assertThrows(IllegalStateException.class, m::newContext);
        ctx.eval(new int[] {1, 2, 3}, false); // the native model lives until its last context is closed
        assertEquals(3, ctx.nPast());
        ctx.close();
        assertThrows(IllegalStateException.class, ctx::nPast);
    }
}
