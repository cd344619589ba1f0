package ai.starkv;

/** Receives generated text as it is produced. */
@FunctionalInterface
public interface PieceListener {
    /**
     * Called with each piece of generated text (complete UTF-8 characters) and the
     * token that completed it, on the thread that called generate.
     *
     * @return true to continue, false to stop generation. An exception thrown here
     *     also stops generation (cleanly) and is rethrown by generate.
     */
    boolean onPiece(String piece, int token);
}
