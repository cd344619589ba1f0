// The paged KV pool: fixed-size pages of tokens shared by many sequences,
// each sequence with its own page table (vLLM's paged attention, TensorRT-LLM's
// block pool). The pool is storage-agnostic: a RowLayout says how many bytes a
// token takes in each (layer, KV head, K|V) stream (fp32 rows, latents or
// quantized bytes alike); the pool hands out row pointers and never looks at
// row contents. Design and thread-safety contract: docs/kv-pool.md.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <unordered_map>
#include <vector>

namespace starkv {

enum class KvKind : uint8_t { K = 0, V = 1 };

using SeqId = int32_t;  // >= 0

// Row sizes in bytes of every (layer, KV head, K|V) stream; 0 is allowed (a
// STAR-KV layer keeps its value latent in KV head 0's V stream only).
class RowLayout {
public:
    RowLayout() = default;
    // row_bytes[stream(layer, head, kind)]; n_layer * n_head_kv * 2 entries.
    RowLayout(int n_layer, int n_head_kv, std::vector<uint32_t> row_bytes);

    int n_layer() const { return n_layer_; }
    int n_head_kv() const { return n_head_kv_; }
    size_t n_streams() const { return row_bytes_.size(); }
    size_t stream(int layer, int kv_head, KvKind kind) const {
        return (static_cast<size_t>(layer) * static_cast<size_t>(n_head_kv_) + static_cast<size_t>(kv_head)) * 2 +
               static_cast<size_t>(kind);
    }
    uint32_t row_bytes(size_t stream) const { return row_bytes_[stream]; }
    uint32_t row_bytes(int layer, int kv_head, KvKind kind) const { return row_bytes_[stream(layer, kv_head, kind)]; }
    const std::vector<uint32_t>& all_row_bytes() const { return row_bytes_; }
    uint64_t bytes_per_token() const { return bytes_per_token_; }

    bool operator==(const RowLayout& o) const {
        return n_layer_ == o.n_layer_ && n_head_kv_ == o.n_head_kv_ && row_bytes_ == o.row_bytes_;
    }

private:
    int n_layer_ = 0;
    int n_head_kv_ = 0;
    std::vector<uint32_t> row_bytes_;
    uint64_t bytes_per_token_ = 0;
};

struct PagePoolOptions {
    int page_tokens = 16;
    uint64_t budget_bytes = 0;          // page memory the pool may take (metadata is outside it)
    bool prefix_caching = true;         // commit() registers full pages for reuse
    bool evict_cached_prefixes = true;  // when full, reuse cached pages no sequence holds (LRU)
};

struct PagePoolStats {
    uint64_t page_bytes = 0;
    uint32_t page_tokens = 0;
    uint64_t pages_total = 0;        // what the budget allows
    uint64_t pages_allocated = 0;    // backed by memory so far (lazy)
    uint64_t pages_used = 0;         // held by at least one sequence
    uint64_t pages_cached = 0;       // held by none, kept for prefix reuse (evictable)
    uint64_t pages_free = 0;         // pages_total - used - cached
    uint64_t bytes_budget = 0;
    uint64_t bytes_allocated = 0;
    uint64_t bytes_used = 0;         // pages_used * page_bytes
    uint64_t capacity_tokens = 0;    // pages_total * page_tokens
    uint64_t tokens = 0;             // sum of the sequences' lengths (shared tokens counted per sequence)
    uint64_t n_sequences = 0;
    uint64_t prefix_queried_tokens = 0;  // full-page tokens offered to reuse_prefix()
    uint64_t prefix_hit_tokens = 0;      // of which found in the cache
    uint64_t evictions = 0;              // cached pages taken back for new data
    uint64_t cow_copies = 0;             // shared pages copied before a write
};

// A run of rows of one stream inside one page: rows [0, n_rows) at data,
// row_bytes apart.
struct PageSpan {
    const uint8_t* data = nullptr;
    int n_rows = 0;
};

class PagePool {
public:
    // Throws Error(STARKV_ERR_INVALID_ARGUMENT) for page_tokens < 1, an empty
    // layout (0 bytes per token) or a budget below one page.
    PagePool(const RowLayout& layout, const PagePoolOptions& options);
    ~PagePool();
    PagePool(const PagePool&) = delete;
    PagePool& operator=(const PagePool&) = delete;

    // Bytes of one page of layout with page_tokens positions (what the
    // constructor computes; sizes a budget in pages).
    static uint64_t page_bytes_for(const RowLayout& layout, int page_tokens);

    const RowLayout& layout() const { return layout_; }
    int page_tokens() const { return page_tokens_; }
    uint64_t page_bytes() const { return page_bytes_; }
    uint64_t pages_total() const { return pages_total_; }
    uint64_t capacity_tokens() const { return pages_total_ * static_cast<uint64_t>(page_tokens_); }
    // Pages a request may still take: free, not yet allocated, and (with
    // eviction) cached ones no sequence holds.
    uint64_t pages_available() const;
    // Byte offset of a stream's rows inside a page (64-byte aligned).
    uint64_t stream_offset(size_t stream) const { return stream_offset_[stream]; }

    // ---- sequences (INVALID_ARGUMENT for an unknown id, or a known one where a new one is asked)
    bool has(SeqId seq) const { return seqs_.count(seq) != 0; }
    void create(SeqId seq);
    void remove(SeqId seq);
    // Drops positions [n_tokens, length).
    void truncate(SeqId seq, int n_tokens);
    // dst (new) shares all of src's pages; a write to a shared page copies it first.
    void fork(SeqId src, SeqId dst);
    int length(SeqId seq) const;
    std::vector<SeqId> sequences() const;  // ascending
    std::vector<int32_t> tokens(SeqId seq) const;

    // Reserves positions [length, length + tokens.size()) and records their
    // token ids; their rows are then writable (unshared) and hold garbage
    // until the caller writes them. STARKV_ERR_KV_POOL_FULL when the pages
    // cannot be had, STARKV_ERR_OUT_OF_MEMORY when memory cannot be: either
    // way nothing changed.
    void append(SeqId seq, std::span<const int32_t> tokens);
    // Pages append(seq, n tokens) would take (a batch sums them and compares
    // with pages_available() before computing anything).
    uint64_t pages_to_append(SeqId seq, int n_tokens) const;
    // Whether append(seq, n tokens) alone would succeed as far as pages go.
    bool can_append(SeqId seq, int n_tokens) const;

    // ---- rows: pointers stay valid until the next non-const call on the pool.
    const uint8_t* row(SeqId seq, int layer, int kv_head, KvKind kind, int pos) const;
    // Copies the page holding pos first when another sequence shares it (or
    // unregisters it from the prefix cache); may throw like append().
    uint8_t* mutable_row(SeqId seq, int layer, int kv_head, KvKind kind, int pos);
    void make_writable(SeqId seq, int pos);
    int n_pages(SeqId seq) const;
    // Rows of page page_index of seq in one stream (the last page may be partial).
    PageSpan page_span(SeqId seq, int page_index, int layer, int kv_head, KvKind kind) const;
    // Physical page id of a sequence's page (for tests and diagnostics).
    int32_t page_id(SeqId seq, int page_index) const;

    // ---- prefix caching
    // The caller has written every row of seq: its full pages become reusable.
    void commit(SeqId seq);
    // How many leading tokens (whole pages) are cached; counts nothing.
    int lookup_prefix(std::span<const int32_t> tokens) const;
    // seq (empty) takes the cached pages of tokens' longest cached prefix;
    // returns the tokens reused and counts hits and misses. Callers pass the
    // prompt without its last token so that one token is left to compute.
    int reuse_prefix(SeqId seq, std::span<const int32_t> tokens);
    // Frees every cached page no sequence holds.
    void clear_prefix_cache();

    PagePoolStats stats() const;

private:
    struct AlignedFree {
        void operator()(uint8_t* p) const;
    };
    struct Page {
        std::unique_ptr<uint8_t, AlignedFree> data;
        std::vector<int32_t> tokens;  // page_tokens ids (those past a holder's length are stale)
        uint64_t hash = 0, parent_hash = 0;  // prefix chain, valid while registered
        int32_t refs = 0;                    // sequences holding the page
        bool registered = false;             // in prefix_ (then never written in place)
        int32_t lru_prev = -1, lru_next = -1;
    };
    struct Sequence {
        std::vector<int32_t> pages;
        std::vector<uint64_t> hashes;  // chain hashes of its committed full pages
        int length = 0;
    };

    Sequence& seq_ref(SeqId seq);
    const Sequence& seq_ref(SeqId seq) const;
    uint8_t* page_data(int32_t page) const;
    // n pages with refcount 1, unregistered; all or nothing.
    std::vector<int32_t> take_pages(size_t n);
    void release(int32_t page);
    void unregister(int32_t page);
    void lru_push(int32_t page);
    void lru_unlink(int32_t page);
    void make_page_writable(Sequence& s, size_t page_index);
    uint64_t page_hash(uint64_t parent, const int32_t* tokens) const;

    RowLayout layout_;
    int page_tokens_;
    bool prefix_caching_, evict_;
    uint64_t page_bytes_ = 0, pages_total_ = 0, budget_;
    std::vector<uint64_t> stream_offset_;

    std::vector<Page> pages_;          // allocated pages, by id
    std::vector<int32_t> free_;        // allocated, unheld, uncached
    int32_t lru_head_ = -1, lru_tail_ = -1;  // cached unheld pages, oldest at head
    uint64_t n_cached_idle_ = 0;
    std::unordered_map<uint64_t, int32_t> prefix_;  // chain hash -> page
    std::unordered_map<SeqId, Sequence> seqs_;
    uint64_t queried_ = 0, hits_ = 0, evictions_ = 0, cow_copies_ = 0;
};

}  // namespace starkv
