package ai.starkv;

/** Why generation stopped ({@code starkv_stop_reason}). */
public enum StopReason {
    MAX_TOKENS, EOS, CALLBACK, CONTEXT_FULL;

    static StopReason fromCode(int code) {
        return code >= 0 && code < values().length ? values()[code] : MAX_TOKENS;
    }
}
