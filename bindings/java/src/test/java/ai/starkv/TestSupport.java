package ai.starkv;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;

/** Paths of the shared test data: STARKV_SHARED_DIR or ../shared beside the checkout. */
final class TestSupport {
    private TestSupport() {}

    static Path shared() {
        String env = System.getenv("STARKV_SHARED_DIR");
        return env != null && !env.isEmpty() ? Path.of(env) : Path.of("..", "shared");
    }

    static Path modelPath() { return shared().resolve("models/stories260K.gguf"); }

    static String golden() throws IOException {
        String g = Files.readString(shared().resolve("golden/stories260K_greedy_from_bos_256.txt"), StandardCharsets.UTF_8);
        return g.endsWith("\n") ? g.substring(0, g.length() - 1) : g;
    }
}
