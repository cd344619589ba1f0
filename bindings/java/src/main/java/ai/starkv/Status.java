package ai.starkv;

/** Mirror of {@code starkv_status}: why a call failed. */
public enum Status {
    OK(0), INVALID_ARGUMENT(1), IO(2), CORRUPT(3), UNSUPPORTED(4), OUT_OF_MEMORY(5),
    CONTEXT_FULL(6), CANCELLED(7), BUFFER_TOO_SMALL(8), KV_POOL_FULL(9), INTERNAL(10),
    NO_DEVICE(11);

    private final int code;

    Status(int code) { this.code = code; }

    /** The C ABI's value. */
    public int code() { return code; }

    /** The status of a C value ({@link #INTERNAL} for an unknown one). */
    public static Status fromCode(int code) {
        for (Status s : values()) if (s.code == code) return s;
        return INTERNAL;
    }
}
