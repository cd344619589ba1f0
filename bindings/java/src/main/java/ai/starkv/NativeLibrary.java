package ai.starkv;

import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;

/**
 * Loads the JNI library once. Order: the system property {@code starkv.library.path}
 * (a directory holding libstarkv_jni.so), then {@code java.library.path}
 * ({@code System.loadLibrary}), then the copies packed in the jar under
 * {@code /ai/starkv/native/<os>-<arch>/}, extracted to a temporary directory
 * (deleted at exit) and loaded with {@code System.load}.
 */
final class NativeLibrary {
    private static final String JNI = "starkv_jni";
    private static boolean loaded, loading;

    private NativeLibrary() {}

    static synchronized void load() {
        if (loaded || loading) return; // loading: the JNI class's static block, reached from below
        loading = true;
        try {
            doLoad();
        } finally {
            loading = false;
        }
    }

    private static void doLoad() {
        String dir = System.getProperty("starkv.library.path");
        if (dir != null && !dir.isEmpty()) {
            System.load(Path.of(dir, System.mapLibraryName(JNI)).toAbsolutePath().toString());
        } else {
            try {
                System.loadLibrary(JNI);
            } catch (UnsatisfiedLinkError notOnPath) {
                try {
                    loadFromResources();
                } catch (IOException | UnsatisfiedLinkError e) {
                    UnsatisfiedLinkError err = new UnsatisfiedLinkError(
                            "starkv: cannot load " + System.mapLibraryName(JNI) + " from java.library.path ("
                                    + notOnPath.getMessage() + ") nor from the jar's resources (" + e + ")");
                    err.initCause(e);
                    throw err;
                }
            }
        }
        long major = StarkvNative.starkv_version_number() / 10000;
        if (major != StarkvNativeConstants.STARKV_VERSION_MAJOR)
            throw new UnsatisfiedLinkError("starkv: native library " + StarkvNative.starkv_version_string()
                    + " does not match the binding " + StarkvNativeConstants.STARKV_VERSION_STRING);
        loaded = true;
    }

    private static String platform() {
        String os = System.getProperty("os.name").toLowerCase().startsWith("linux") ? "linux"
                : System.getProperty("os.name").toLowerCase().replace(' ', '_');
        String arch = System.getProperty("os.arch");
        if (arch.equals("amd64")) arch = "x86_64";
        return os + "-" + arch;
    }

    private static void loadFromResources() throws IOException {
        String base = "/ai/starkv/native/" + platform() + "/";
        String[] names;
        try (InputStream list = NativeLibrary.class.getResourceAsStream(base + "libraries.txt")) {
            if (list == null) throw new IOException("no native libraries for " + platform() + " in the jar");
            names = new String(list.readAllBytes(), java.nio.charset.StandardCharsets.UTF_8).trim().split("\\s+");
        }
        Path tmp = Files.createTempDirectory("starkv-native");
        tmp.toFile().deleteOnExit();
        for (String name : names) { // dependencies first: libstarkv.so.N, then libstarkv_jni.so
            Path out = tmp.resolve(name);
            try (InputStream in = NativeLibrary.class.getResourceAsStream(base + name)) {
                if (in == null) throw new IOException("missing resource " + base + name);
                Files.copy(in, out, StandardCopyOption.REPLACE_EXISTING);
            }
            out.toFile().deleteOnExit();
            System.load(out.toAbsolutePath().toString());
        }
    }
}
