#include "kv/kv_state.h"

#include <xxhash.h>
#include <zstd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <new>
#include <unordered_set>

#include "core/error.h"

namespace starkv {

namespace {

constexpr char kMagic[8] = {'S', 'K', 'V', 'S', 'T', 'A', 'T', 'E'};
constexpr size_t kChecksumBytes = 8;
constexpr size_t kRecordHeaderBytes = 16;  // seq id, n_tokens, parent, n_shared
constexpr uint32_t kMaxSequences = 1u << 20;
constexpr uint64_t kMaxStreams = 1u << 24;

// Little-endian writes and bounds-checked reads.
void put32(std::vector<uint8_t>& out, uint32_t v) {
    for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
void put64(std::vector<uint8_t>& out, uint64_t v) {
    for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
uint32_t get32(const uint8_t* p) {
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(p[i]) << (8 * i);
    return v;
}
uint64_t get64(const uint8_t* p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
    return v;
}

struct Reader {
    const uint8_t* p;
    size_t left;
    const uint8_t* take(size_t n, const char* what) {
        if (n > left) corrupt(std::string("KV state: the payload ends inside ") + what);
        const uint8_t* at = p;
        p += n;
        left -= n;
        return at;
    }
};

struct Record {
    SeqId id = 0;
    uint32_t n_tokens = 0;
    int32_t parent = -1;
    uint32_t n_shared = 0;
    const uint8_t* tokens = nullptr;  // n_tokens little-endian int32
    const uint8_t* rows = nullptr;    // per stream, rows [n_shared, n_tokens)
};

int32_t token_at(const Record& r, size_t i) { return static_cast<int32_t>(get32(r.tokens + 4 * i)); }

// Leading tokens b can take from a (they hold the same pages up to there).
uint32_t shared_tokens(const PagePool& pool, SeqId a, SeqId b) {
    const int n = std::min(pool.n_pages(a), pool.n_pages(b));
    int common = 0;
    while (common < n && pool.page_id(a, common) == pool.page_id(b, common)) ++common;
    const int64_t t = static_cast<int64_t>(common) * pool.page_tokens();
    return static_cast<uint32_t>(std::min<int64_t>({t, pool.length(a), pool.length(b)}));
}

}  // namespace

std::vector<uint8_t> encode_kv_state(const RowLayout& layout, uint64_t bundle_hash, uint32_t n_sequences,
                                     std::span<const uint8_t> raw_payload, int zstd_level) {
    if (zstd_level < 1 || zstd_level > ZSTD_maxCLevel())
        fail(STARKV_ERR_INVALID_ARGUMENT, "KV state: zstd level " + std::to_string(zstd_level) + " is not in [1, " +
                                              std::to_string(ZSTD_maxCLevel()) + "]");
    const size_t bound = ZSTD_compressBound(raw_payload.size());
    std::vector<uint8_t> out;
    out.reserve(kKvStateHeaderBytes + 4 * layout.n_streams() + bound + kChecksumBytes);
    out.resize(sizeof kMagic);
    std::memcpy(out.data(), kMagic, sizeof kMagic);
    put32(out, kKvStateVersion);
    put32(out, 0);  // flags
    put64(out, bundle_hash);
    put32(out, static_cast<uint32_t>(layout.n_layer()));
    put32(out, static_cast<uint32_t>(layout.n_head_kv()));
    put32(out, n_sequences);
    put32(out, 0);  // reserved
    put64(out, raw_payload.size());
    const size_t stored_at = out.size();
    put64(out, 0);  // stored size, patched below
    put64(out, 0);  // reserved
    for (uint32_t b : layout.all_row_bytes()) put32(out, b);
    const size_t frame_at = out.size();
    out.resize(frame_at + bound);
    const size_t z = ZSTD_compress(out.data() + frame_at, bound, raw_payload.data(), raw_payload.size(), zstd_level);
    if (ZSTD_isError(z)) fail(STARKV_ERR_INTERNAL, std::string("KV state: zstd: ") + ZSTD_getErrorName(z));
    out.resize(frame_at + z);
    for (int i = 0; i < 8; ++i) out[stored_at + i] = static_cast<uint8_t>(static_cast<uint64_t>(z) >> (8 * i));
    put64(out, XXH3_64bits(out.data(), out.size()));
    return out;
}

std::vector<uint8_t> save_kv_state(const PagePool& pool, uint64_t bundle_hash, std::span<const SeqId> seqs,
                                   int zstd_level) {
    const RowLayout& layout = pool.layout();
    if (seqs.size() > kMaxSequences) fail(STARKV_ERR_INVALID_ARGUMENT, "KV state: too many sequences");
    {
        std::unordered_set<SeqId> seen;
        for (SeqId s : seqs) {
            (void)pool.length(s);  // throws for an unknown id
            if (!seen.insert(s).second)
                fail(STARKV_ERR_INVALID_ARGUMENT, "KV state: sequence " + std::to_string(s) + " listed twice");
        }
    }
    std::vector<uint8_t> raw;
    for (size_t j = 0; j < seqs.size(); ++j) {
        const SeqId id = seqs[j];
        const uint32_t n = static_cast<uint32_t>(pool.length(id));
        int32_t parent = -1;
        uint32_t n_shared = 0;
        for (size_t i = 0; i < j; ++i) {
            const uint32_t t = shared_tokens(pool, seqs[i], id);
            if (t > n_shared) {
                n_shared = t;
                parent = static_cast<int32_t>(i);
            }
        }
        put32(raw, static_cast<uint32_t>(id));
        put32(raw, n);
        put32(raw, static_cast<uint32_t>(parent));
        put32(raw, n_shared);
        for (int32_t t : pool.tokens(id)) put32(raw, static_cast<uint32_t>(t));
        // Stream-major: one stream's rows together compress better.
        for (int l = 0; l < layout.n_layer(); ++l)
            for (int h = 0; h < layout.n_head_kv(); ++h)
                for (KvKind k : {KvKind::K, KvKind::V}) {
                    const uint32_t rb = layout.row_bytes(l, h, k);
                    if (rb == 0) continue;
                    for (uint32_t pos = n_shared; pos < n; ++pos) {
                        const uint8_t* r = pool.row(id, l, h, k, static_cast<int>(pos));
                        raw.insert(raw.end(), r, r + rb);
                    }
                }
    }
    return encode_kv_state(layout, bundle_hash, static_cast<uint32_t>(seqs.size()), raw, zstd_level);
}

std::vector<SeqId> restore_kv_state(PagePool& pool, uint64_t bundle_hash, std::span<const uint8_t> state,
                                    const KvStateRestoreOptions& options) {
    const RowLayout& layout = pool.layout();
    // ---- container: sizes, then the checksum, then what the header says
    if (state.size() < kKvStateHeaderBytes + kChecksumBytes) corrupt("KV state: truncated (" + std::to_string(state.size()) + " bytes)");
    const uint8_t* h = state.data();
    if (std::memcmp(h, kMagic, 8) != 0) corrupt("KV state: bad magic (not a saved KV state)");
    const uint64_t n_layer = get32(h + 24), n_head_kv = get32(h + 28);
    const uint64_t n_streams = n_layer * n_head_kv * 2;
    if (n_streams == 0 || n_streams > kMaxStreams)
        corrupt("KV state: " + std::to_string(n_layer) + " layers x " + std::to_string(n_head_kv) + " KV heads is not a layout");
    const uint64_t stored = get64(h + 48);
    const uint64_t fixed = kKvStateHeaderBytes + 4 * n_streams + kChecksumBytes;
    if (stored > state.size() || state.size() - stored != fixed)
        corrupt("KV state: " + std::to_string(state.size()) + " bytes where the header implies " +
                (stored > UINT64_MAX - fixed ? std::string("more") : std::to_string(fixed + stored)) + " (truncated?)");
    const size_t body = state.size() - kChecksumBytes;
    if (XXH3_64bits(h, body) != get64(h + body)) corrupt("KV state: checksum mismatch (the data is damaged)");
    const uint32_t version = get32(h + 8);
    if (version > kKvStateVersion)
        unsupported("KV state: format version " + std::to_string(version) + " is newer than this library's (" +
                    std::to_string(kKvStateVersion) + ")");
    if (version != kKvStateVersion) corrupt("KV state: format version " + std::to_string(version) + " is invalid");
    if (get32(h + 12) != 0 || get32(h + 36) != 0 || get64(h + 56) != 0) corrupt("KV state: reserved header fields are set");
    if (get64(h + 16) != bundle_hash) fail(STARKV_ERR_INVALID_ARGUMENT, "KV state: saved from another bundle");
    std::vector<uint32_t> row_bytes(n_streams);
    for (uint64_t s = 0; s < n_streams; ++s) row_bytes[s] = get32(h + kKvStateHeaderBytes + 4 * s);
    if (n_layer != static_cast<uint64_t>(layout.n_layer()) || n_head_kv != static_cast<uint64_t>(layout.n_head_kv()) ||
        row_bytes != layout.all_row_bytes())
        fail(STARKV_ERR_INVALID_ARGUMENT, "KV state: its row layout differs from this context's");

    // ---- payload: bounded before it is decompressed
    const uint32_t n_seq = get32(h + 32);
    if (n_seq > kMaxSequences) corrupt("KV state: " + std::to_string(n_seq) + " sequences");
    if (options.target_seq >= 0 && n_seq != 1)
        fail(STARKV_ERR_INVALID_ARGUMENT, "KV state: holds " + std::to_string(n_seq) +
                                              " sequences; a target id needs exactly one");
    const uint64_t raw_size = get64(h + 40);
    // capacity * bytes per token is at most the pool's budget, so this fits 128 bits.
    const unsigned __int128 most = static_cast<unsigned __int128>(n_seq) *
                                   (kRecordHeaderBytes + pool.capacity_tokens() * (4 + layout.bytes_per_token()));
    if (raw_size > most)
        corrupt("KV state: a payload of " + std::to_string(raw_size) + " bytes cannot hold " + std::to_string(n_seq) +
                " sequences of this pool");
    const uint8_t* frame = h + kKvStateHeaderBytes + 4 * n_streams;
    const unsigned long long content = ZSTD_getFrameContentSize(frame, stored);
    if (content >= ZSTD_CONTENTSIZE_ERROR || content != raw_size)  // the first: an error or unknown size
        corrupt("KV state: the zstd frame does not hold " + std::to_string(raw_size) + " bytes");
    std::unique_ptr<uint8_t[]> raw;
    try {
        raw.reset(new uint8_t[raw_size ? raw_size : 1]);
    } catch (const std::bad_alloc&) {
        fail(STARKV_ERR_OUT_OF_MEMORY, "KV state: out of memory for " + std::to_string(raw_size) + " bytes");
    }
    const size_t got = ZSTD_decompress(raw.get(), raw_size, frame, stored);
    if (ZSTD_isError(got) || got != raw_size) corrupt("KV state: the zstd data is corrupt");

    // ---- records: all parsed and checked before the pool is touched
    Reader in{raw.get(), static_cast<size_t>(raw_size)};
    std::vector<Record> recs(n_seq);
    std::unordered_set<SeqId> ids;
    uint64_t pages_needed = 0;
    const uint64_t P = static_cast<uint64_t>(pool.page_tokens());
    for (uint32_t j = 0; j < n_seq; ++j) {
        Record& r = recs[j];
        const uint8_t* rh = in.take(kRecordHeaderBytes, "a sequence header");
        r.id = static_cast<SeqId>(get32(rh));
        r.n_tokens = get32(rh + 4);
        r.parent = static_cast<int32_t>(get32(rh + 8));
        r.n_shared = get32(rh + 12);
        if (options.target_seq >= 0) r.id = options.target_seq;
        if (r.id < 0) corrupt("KV state: sequence id " + std::to_string(r.id) + " is negative");
        if (!ids.insert(r.id).second) corrupt("KV state: sequence " + std::to_string(r.id) + " appears twice");
        if (pool.has(r.id)) fail(STARKV_ERR_INVALID_ARGUMENT, "KV state: sequence " + std::to_string(r.id) + " exists");
        if (r.n_tokens > pool.capacity_tokens())
            fail(STARKV_ERR_KV_POOL_FULL, "KV state: a sequence of " + std::to_string(r.n_tokens) +
                                              " tokens exceeds the pool's capacity of " +
                                              std::to_string(pool.capacity_tokens()));
        if (r.parent < -1 || r.parent >= static_cast<int32_t>(j))
            corrupt("KV state: sequence record " + std::to_string(j) + " names record " + std::to_string(r.parent) +
                    " as its parent");
        const uint32_t parent_len = r.parent >= 0 ? recs[r.parent].n_tokens : 0;
        if (r.n_shared > std::min(r.n_tokens, parent_len))
            corrupt("KV state: sequence record " + std::to_string(j) + " shares " + std::to_string(r.n_shared) +
                    " tokens it cannot");
        r.tokens = in.take(4ull * r.n_tokens, "token ids");
        for (uint32_t i = 0; i < r.n_tokens; ++i) {
            const int32_t t = token_at(r, i);
            if (t < 0 || (options.n_vocab > 0 && t >= options.n_vocab))
                corrupt("KV state: token id " + std::to_string(t) + " is out of range");
            if (i < r.n_shared && t != token_at(recs[r.parent], i))
                corrupt("KV state: sequence record " + std::to_string(j) + " differs from its parent in a shared token");
        }
        r.rows = in.take((r.n_tokens - r.n_shared) * layout.bytes_per_token(), "rows");
        // Pages of its own: all but the whole pages it shares (a partial
        // shared page is copied when the sequence grows past it).
        const uint64_t own = (r.n_tokens + P - 1) / P;
        pages_needed += r.n_tokens > r.n_shared ? own - r.n_shared / P : 0;
    }
    if (in.left != 0) corrupt("KV state: " + std::to_string(in.left) + " bytes follow the last sequence");
    if (pages_needed > pool.pages_available())
        fail(STARKV_ERR_KV_POOL_FULL, "KV state: needs " + std::to_string(pages_needed) + " pages, " +
                                          std::to_string(pool.pages_available()) + " available");

    // ---- apply; on failure the sequences made so far are removed
    std::vector<SeqId> made;
    try {
        made.reserve(n_seq);
        std::vector<int32_t> toks;
        for (const Record& r : recs) {
            if (r.parent >= 0) {
                pool.fork(recs[r.parent].id, r.id);
                made.push_back(r.id);
                pool.truncate(r.id, static_cast<int>(r.n_shared));
            } else {
                pool.create(r.id);
                made.push_back(r.id);
            }
            toks.resize(r.n_tokens - r.n_shared);
            for (size_t i = 0; i < toks.size(); ++i) toks[i] = token_at(r, r.n_shared + i);
            pool.append(r.id, toks);
            const uint8_t* src = r.rows;
            for (int l = 0; l < layout.n_layer(); ++l)
                for (int hd = 0; hd < layout.n_head_kv(); ++hd)
                    for (KvKind k : {KvKind::K, KvKind::V}) {
                        const uint32_t rb = layout.row_bytes(l, hd, k);
                        if (rb == 0) continue;
                        for (uint32_t pos = r.n_shared; pos < r.n_tokens; ++pos, src += rb)
                            std::memcpy(pool.mutable_row(r.id, l, hd, k, static_cast<int>(pos)), src, rb);
                    }
            pool.commit(r.id);
        }
    } catch (...) {
        for (auto it = made.rbegin(); it != made.rend(); ++it) pool.remove(*it);
        try {
            throw;
        } catch (const std::bad_alloc&) {
            fail(STARKV_ERR_OUT_OF_MEMORY, "KV state: out of memory restoring sequences");
        }
    }
    return made;
}

void write_kv_state_file(const std::string& path, std::span<const uint8_t> state) {
    std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "wb"), std::fclose);
    if (!f) fail(STARKV_ERR_IO, "KV state: cannot create " + path);
    if (std::fwrite(state.data(), 1, state.size(), f.get()) != state.size() || std::fflush(f.get()) != 0)
        fail(STARKV_ERR_IO, "KV state: cannot write " + path);
    if (std::fclose(f.release()) != 0) fail(STARKV_ERR_IO, "KV state: cannot write " + path);
}

std::vector<uint8_t> read_kv_state_file(const std::string& path, uint64_t max_bytes) {
    std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), std::fclose);
    if (!f) fail(STARKV_ERR_IO, "KV state: cannot open " + path);
    std::vector<uint8_t> out;
    uint8_t buf[1 << 16];
    for (;;) {
        const size_t n = std::fread(buf, 1, sizeof buf, f.get());
        if (out.size() + n > max_bytes)
            fail(STARKV_ERR_INVALID_ARGUMENT, "KV state: " + path + " is over " + std::to_string(max_bytes) + " bytes");
        out.insert(out.end(), buf, buf + n);
        if (n < sizeof buf) break;
    }
    if (std::ferror(f.get())) fail(STARKV_ERR_IO, "KV state: cannot read " + path);
    return out;
}

}  // namespace starkv
