package ai.starkv;

/** KV-cache occupancy and bytes ({@code starkv_kv_stats}). */
public record KvStats(long nTokens, long nCtx, long bytesInUse, long bytesReserved, long bytesPerToken) {}
