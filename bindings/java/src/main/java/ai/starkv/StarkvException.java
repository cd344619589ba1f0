package ai.starkv;

/**
 * A starkv call failed. Carries the C {@link Status} and the library's one-line
 * message ({@code starkv_last_error()}). Unchecked, like the JDK's
 * {@code UncheckedIOException}: catch it where you can act on it.
 */
public class StarkvException extends RuntimeException {
    private static final long serialVersionUID = 1L;
    private final Status status;

    public StarkvException(Status status, String message) {
        super(message + " [STARKV_ERR_" + status.name() + "]");
        this.status = status;
    }

    /** Why the call failed. */
    public Status getStatus() { return status; }

    /** Throws for a failed status code, with the calling thread's last error. */
    static void check(int code) {
        if (code != 0) throw new StarkvException(Status.fromCode(code), StarkvNative.starkv_last_error());
    }
}
