package ai.starkv;

/**
 * KV-cache occupancy and bytes ({@code starkv_kv_stats}): {@code bytesPerTokenUncompressed}
 * is the same model's cache without STAR-KV, {@code deviceBytes} the GPU memory of a
 * GPU-backed context (0 on the CPU).
 */
public record KvStats(long nTokens, long nCtx, long bytesInUse, long bytesReserved, long bytesPerToken,
                      long bytesPerTokenUncompressed, long deviceBytes) {}
