#include "kv/page_pool.h"

#include <xxhash.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <new>
#include <string>

#include "core/error.h"

namespace starkv {

namespace {

constexpr uint64_t kAlign = 64;
// Seed of the first page's chain hash (any fixed value).
constexpr uint64_t kChainRoot = 0x9E3779B97F4A7C15ull;

uint64_t round_up(uint64_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

[[noreturn]] void bad(const std::string& msg) { fail(STARKV_ERR_INVALID_ARGUMENT, msg); }

}  // namespace

RowLayout::RowLayout(int n_layer, int n_head_kv, std::vector<uint32_t> row_bytes)
    : n_layer_(n_layer), n_head_kv_(n_head_kv), row_bytes_(std::move(row_bytes)) {
    if (n_layer < 1 || n_head_kv < 1) bad("row layout: needs at least one layer and one KV head");
    if (row_bytes_.size() != static_cast<size_t>(n_layer) * static_cast<size_t>(n_head_kv) * 2)
        bad("row layout: " + std::to_string(row_bytes_.size()) + " row sizes for " + std::to_string(n_layer) +
            " layers x " + std::to_string(n_head_kv) + " KV heads x 2");
    for (uint32_t b : row_bytes_) bytes_per_token_ += b;
}

void PagePool::AlignedFree::operator()(uint8_t* p) const { ::operator delete(p, std::align_val_t{kAlign}); }

PagePool::PagePool(const RowLayout& layout, const PagePoolOptions& options)
    : layout_(layout),
      page_tokens_(options.page_tokens),
      prefix_caching_(options.prefix_caching),
      evict_(options.evict_cached_prefixes),
      budget_(options.budget_bytes) {
    if (page_tokens_ < 1 || page_tokens_ > (1 << 20))
        bad("KV pool: page_tokens " + std::to_string(page_tokens_) + " is not in [1, 2^20]");
    if (layout_.bytes_per_token() == 0) bad("KV pool: the row layout holds no bytes");
    stream_offset_.resize(layout_.n_streams());
    for (size_t s = 0; s < layout_.n_streams(); ++s) {
        stream_offset_[s] = page_bytes_;
        page_bytes_ += round_up(static_cast<uint64_t>(page_tokens_) * layout_.row_bytes(s));
    }
    pages_total_ = std::min<uint64_t>(budget_ / page_bytes_, INT32_MAX);
    if (pages_total_ == 0)
        bad("KV pool: a budget of " + std::to_string(budget_) + " bytes is below one page (" +
            std::to_string(page_bytes_) + " bytes)");
}

PagePool::~PagePool() = default;

uint64_t PagePool::page_bytes_for(const RowLayout& layout, int page_tokens) {
    uint64_t bytes = 0;
    for (size_t s = 0; s < layout.n_streams(); ++s)
        bytes += round_up(static_cast<uint64_t>(page_tokens) * layout.row_bytes(s));
    return bytes;
}

// ---- sequences ---------------------------------------------------------------

PagePool::Sequence& PagePool::seq_ref(SeqId seq) {
    auto it = seqs_.find(seq);
    if (it == seqs_.end()) bad("KV pool: no sequence " + std::to_string(seq));
    return it->second;
}

const PagePool::Sequence& PagePool::seq_ref(SeqId seq) const {
    auto it = seqs_.find(seq);
    if (it == seqs_.end()) bad("KV pool: no sequence " + std::to_string(seq));
    return it->second;
}

void PagePool::create(SeqId seq) {
    if (seq < 0) bad("KV pool: sequence id " + std::to_string(seq) + " is negative");
    if (has(seq)) bad("KV pool: sequence " + std::to_string(seq) + " exists");
    seqs_.emplace(seq, Sequence{});
}

void PagePool::remove(SeqId seq) {
    Sequence& s = seq_ref(seq);
    // Tail first: a prefix's last pages become the least recently used, so
    // eviction takes a chain from its end and its head stays reusable.
    for (auto it = s.pages.rbegin(); it != s.pages.rend(); ++it) release(*it);
    seqs_.erase(seq);
}

void PagePool::truncate(SeqId seq, int n_tokens) {
    Sequence& s = seq_ref(seq);
    if (n_tokens < 0 || n_tokens > s.length)
        bad("KV pool: cannot truncate sequence " + std::to_string(seq) + " of " + std::to_string(s.length) +
            " tokens to " + std::to_string(n_tokens));
    const size_t keep = (static_cast<size_t>(n_tokens) + page_tokens_ - 1) / page_tokens_;
    while (s.pages.size() > keep) {
        release(s.pages.back());
        s.pages.pop_back();
    }
    s.hashes.resize(std::min(s.hashes.size(), static_cast<size_t>(n_tokens / page_tokens_)));
    s.length = n_tokens;
}

void PagePool::fork(SeqId src, SeqId dst) {
    const Sequence& s = seq_ref(src);
    if (dst < 0) bad("KV pool: sequence id " + std::to_string(dst) + " is negative");
    if (has(dst)) bad("KV pool: sequence " + std::to_string(dst) + " exists");
    try {
        seqs_.emplace(dst, s);  // copies first; nothing is shared until it is in
    } catch (const std::bad_alloc&) {
        fail(STARKV_ERR_OUT_OF_MEMORY, "KV pool: out of memory forking a sequence");
    }
    for (int32_t p : seqs_.at(dst).pages) ++pages_[p].refs;
}

int PagePool::length(SeqId seq) const { return seq_ref(seq).length; }

std::vector<SeqId> PagePool::sequences() const {
    std::vector<SeqId> ids;
    ids.reserve(seqs_.size());
    for (const auto& [id, s] : seqs_) ids.push_back(id);
    std::sort(ids.begin(), ids.end());
    return ids;
}

std::vector<int32_t> PagePool::tokens(SeqId seq) const {
    const Sequence& s = seq_ref(seq);
    std::vector<int32_t> out(static_cast<size_t>(s.length));
    for (size_t i = 0; i < s.pages.size(); ++i) {
        const size_t begin = i * page_tokens_;
        const size_t n = std::min<size_t>(page_tokens_, out.size() - begin);
        std::memcpy(out.data() + begin, pages_[s.pages[i]].tokens.data(), n * sizeof(int32_t));
    }
    return out;
}

// ---- pages -------------------------------------------------------------------

uint8_t* PagePool::page_data(int32_t page) const { return pages_[page].data.get(); }

uint64_t PagePool::pages_available() const {
    return free_.size() + (pages_total_ - pages_.size()) + (evict_ ? n_cached_idle_ : 0);
}

std::vector<int32_t> PagePool::take_pages(size_t n) {
    if (n > pages_available())
        fail(STARKV_ERR_KV_POOL_FULL, "KV pool full: " + std::to_string(n) + " pages needed, " +
                                          std::to_string(pages_available()) + " available of " +
                                          std::to_string(pages_total_));
    std::vector<int32_t> got;
    try {
        got.reserve(n);
        while (got.size() < n && !free_.empty()) {
            got.push_back(free_.back());
            free_.pop_back();
        }
        // Fresh memory next (lazily, up to the budget); eviction last, as it
        // discards cached data and cannot fail.
        while (got.size() < n && pages_.size() < pages_total_) {
            Page p;
            p.tokens.resize(static_cast<size_t>(page_tokens_));
            p.data.reset(static_cast<uint8_t*>(::operator new(page_bytes_, std::align_val_t{kAlign}, std::nothrow)));
            if (!p.data) throw std::bad_alloc();
            if (free_.capacity() < pages_.size() + 1)  // so that release() never allocates
                free_.reserve(std::max<size_t>(16, 2 * free_.capacity()));
            pages_.push_back(std::move(p));
            got.push_back(static_cast<int32_t>(pages_.size() - 1));
        }
    } catch (const std::bad_alloc&) {
        for (int32_t p : got) free_.push_back(p);
        fail(STARKV_ERR_OUT_OF_MEMORY, "KV pool: out of memory allocating a " + std::to_string(page_bytes_) +
                                           "-byte page");
    }
    while (got.size() < n) {
        const int32_t p = lru_head_;
        lru_unlink(p);
        unregister(p);
        ++evictions_;
        got.push_back(p);
    }
    for (int32_t p : got) {
        pages_[p].refs = 1;
        pages_[p].registered = false;
    }
    return got;
}

void PagePool::release(int32_t page) {
    Page& p = pages_[page];
    if (--p.refs > 0) return;
    if (p.registered)
        lru_push(page);
    else
        free_.push_back(page);
}

void PagePool::unregister(int32_t page) {
    Page& p = pages_[page];
    if (!p.registered) return;
    auto it = prefix_.find(p.hash);
    if (it != prefix_.end() && it->second == page) prefix_.erase(it);
    p.registered = false;
}

void PagePool::lru_push(int32_t page) {
    Page& p = pages_[page];
    p.lru_prev = lru_tail_;
    p.lru_next = -1;
    if (lru_tail_ >= 0)
        pages_[lru_tail_].lru_next = page;
    else
        lru_head_ = page;
    lru_tail_ = page;
    ++n_cached_idle_;
}

void PagePool::lru_unlink(int32_t page) {
    Page& p = pages_[page];
    if (p.lru_prev >= 0)
        pages_[p.lru_prev].lru_next = p.lru_next;
    else
        lru_head_ = p.lru_next;
    if (p.lru_next >= 0)
        pages_[p.lru_next].lru_prev = p.lru_prev;
    else
        lru_tail_ = p.lru_prev;
    p.lru_prev = p.lru_next = -1;
    --n_cached_idle_;
}

void PagePool::make_page_writable(Sequence& s, size_t page_index) {
    const int32_t old = s.pages[page_index];
    if (pages_[old].refs > 1) {
        const int32_t fresh = take_pages(1)[0];
        std::memcpy(page_data(fresh), page_data(old), page_bytes_);
        pages_[fresh].tokens = pages_[old].tokens;  // same size: no allocation
        release(old);
        s.pages[page_index] = fresh;
        ++cow_copies_;
    } else {
        unregister(old);  // its rows are about to change
    }
    s.hashes.resize(std::min(s.hashes.size(), page_index));
}

void PagePool::make_writable(SeqId seq, int pos) {
    Sequence& s = seq_ref(seq);
    if (pos < 0 || pos >= s.length)
        bad("KV pool: position " + std::to_string(pos) + " is outside sequence " + std::to_string(seq));
    make_page_writable(s, static_cast<size_t>(pos / page_tokens_));
}

uint64_t PagePool::pages_to_append(SeqId seq, int n_tokens) const {
    const Sequence& s = seq_ref(seq);
    if (n_tokens <= 0) return 0;
    const uint64_t want = (static_cast<uint64_t>(s.length) + n_tokens + page_tokens_ - 1) / page_tokens_;
    const bool copy = s.length % page_tokens_ != 0 && pages_[s.pages.back()].refs > 1;
    return want - s.pages.size() + (copy ? 1 : 0);
}

bool PagePool::can_append(SeqId seq, int n_tokens) const {
    const int length = seq_ref(seq).length;
    if (n_tokens < 0 || static_cast<uint64_t>(length) + n_tokens > capacity_tokens() ||
        static_cast<uint64_t>(length) + n_tokens > INT_MAX)
        return false;
    return pages_to_append(seq, n_tokens) <= pages_available();
}

void PagePool::append(SeqId seq, std::span<const int32_t> tokens) {
    Sequence& s = seq_ref(seq);
    if (tokens.empty()) return;
    const uint64_t new_len = static_cast<uint64_t>(s.length) + tokens.size();
    if (new_len > capacity_tokens() || new_len > INT_MAX)
        fail(STARKV_ERR_KV_POOL_FULL, "KV pool full: a sequence of " + std::to_string(new_len) +
                                          " tokens exceeds the pool's capacity of " +
                                          std::to_string(capacity_tokens()));
    const size_t want = static_cast<size_t>((new_len + page_tokens_ - 1) / page_tokens_);
    const bool partial = s.length % page_tokens_ != 0;
    const bool copy = partial && pages_[s.pages.back()].refs > 1;
    try {
        s.pages.reserve(want);
    } catch (const std::bad_alloc&) {
        fail(STARKV_ERR_OUT_OF_MEMORY, "KV pool: out of memory growing a page table");
    }
    std::vector<int32_t> got = take_pages(want - s.pages.size() + (copy ? 1 : 0));
    size_t next = 0;
    if (partial) {
        const size_t last = s.pages.size() - 1;
        const int32_t old = s.pages[last];
        if (copy) {
            const int32_t fresh = got[next++];
            std::memcpy(page_data(fresh), page_data(old), page_bytes_);
            pages_[fresh].tokens = pages_[old].tokens;
            release(old);
            s.pages[last] = fresh;
            ++cow_copies_;
        } else {
            unregister(old);
        }
        s.hashes.resize(std::min(s.hashes.size(), last));
    }
    while (next < got.size()) s.pages.push_back(got[next++]);
    for (size_t i = 0; i < tokens.size(); ++i) {
        const size_t pos = static_cast<size_t>(s.length) + i;
        pages_[s.pages[pos / page_tokens_]].tokens[pos % page_tokens_] = tokens[i];
    }
    s.length = static_cast<int>(new_len);
}

// ---- rows ----------------------------------------------------------------------

const uint8_t* PagePool::row(SeqId seq, int layer, int kv_head, KvKind kind, int pos) const {
    const Sequence& s = seq_ref(seq);
    if (pos < 0 || pos >= s.length || layer < 0 || layer >= layout_.n_layer() || kv_head < 0 ||
        kv_head >= layout_.n_head_kv())
        bad("KV pool: row (layer " + std::to_string(layer) + ", head " + std::to_string(kv_head) + ", position " +
            std::to_string(pos) + ") is outside sequence " + std::to_string(seq));
    const size_t st = layout_.stream(layer, kv_head, kind);
    return page_data(s.pages[pos / page_tokens_]) + stream_offset_[st] +
           static_cast<uint64_t>(pos % page_tokens_) * layout_.row_bytes(st);
}

uint8_t* PagePool::mutable_row(SeqId seq, int layer, int kv_head, KvKind kind, int pos) {
    const uint8_t* r = row(seq, layer, kv_head, kind, pos);  // validates
    const int32_t page = seq_ref(seq).pages[pos / page_tokens_];
    if (pages_[page].refs == 1 && !pages_[page].registered) return const_cast<uint8_t*>(r);
    make_writable(seq, pos);
    return const_cast<uint8_t*>(row(seq, layer, kv_head, kind, pos));
}

int PagePool::n_pages(SeqId seq) const { return static_cast<int>(seq_ref(seq).pages.size()); }

PageSpan PagePool::page_span(SeqId seq, int page_index, int layer, int kv_head, KvKind kind) const {
    const Sequence& s = seq_ref(seq);
    if (page_index < 0 || static_cast<size_t>(page_index) >= s.pages.size() || layer < 0 ||
        layer >= layout_.n_layer() || kv_head < 0 || kv_head >= layout_.n_head_kv())
        bad("KV pool: page " + std::to_string(page_index) + " (layer " + std::to_string(layer) + ", head " +
            std::to_string(kv_head) + ") is outside sequence " + std::to_string(seq));
    const size_t st = layout_.stream(layer, kv_head, kind);
    return {page_data(s.pages[page_index]) + stream_offset_[st],
            std::min(page_tokens_, s.length - page_index * page_tokens_)};
}

int32_t PagePool::page_id(SeqId seq, int page_index) const {
    const Sequence& s = seq_ref(seq);
    if (page_index < 0 || static_cast<size_t>(page_index) >= s.pages.size())
        bad("KV pool: sequence " + std::to_string(seq) + " has no page " + std::to_string(page_index));
    return s.pages[page_index];
}

// ---- prefix caching --------------------------------------------------------------

uint64_t PagePool::page_hash(uint64_t parent, const int32_t* tokens) const {
    return XXH3_64bits_withSeed(tokens, static_cast<size_t>(page_tokens_) * sizeof(int32_t), parent);
}

void PagePool::commit(SeqId seq) {
    if (!prefix_caching_) return;
    Sequence& s = seq_ref(seq);
    const size_t full = static_cast<size_t>(s.length / page_tokens_);
    try {
        s.hashes.reserve(full);
        for (size_t i = s.hashes.size(); i < full; ++i) {
            const uint64_t parent = i ? s.hashes[i - 1] : kChainRoot;
            Page& p = pages_[s.pages[i]];
            const uint64_t h = p.registered ? p.hash : page_hash(parent, p.tokens.data());
            // A page computed twice (two sequences, one prompt) stays private:
            // the first one registered serves later lookups.
            if (!p.registered && prefix_.emplace(h, s.pages[i]).second) {
                p.registered = true;
                p.hash = h;
                p.parent_hash = parent;
            }
            s.hashes.push_back(h);
        }
    } catch (const std::bad_alloc&) {
        fail(STARKV_ERR_OUT_OF_MEMORY, "KV pool: out of memory registering cached prefixes");
    }
}

int PagePool::lookup_prefix(std::span<const int32_t> tokens) const {
    uint64_t parent = kChainRoot;
    size_t n = 0;
    for (; (n + 1) * page_tokens_ <= tokens.size(); ++n) {
        const int32_t* t = tokens.data() + n * page_tokens_;
        const uint64_t h = page_hash(parent, t);
        auto it = prefix_.find(h);
        if (it == prefix_.end()) break;
        const Page& p = pages_[it->second];
        // The hash names the chain; the tokens are compared too, so a page
        // is reused only for exactly its tokens after a matching parent.
        if (p.parent_hash != parent || std::memcmp(p.tokens.data(), t, page_tokens_ * sizeof(int32_t)) != 0) break;
        parent = h;
    }
    return static_cast<int>(n * page_tokens_);
}

int PagePool::reuse_prefix(SeqId seq, std::span<const int32_t> tokens) {
    Sequence& s = seq_ref(seq);
    if (s.length != 0) bad("KV pool: reuse_prefix needs an empty sequence, " + std::to_string(seq) + " is not");
    const size_t n_pages = static_cast<size_t>(lookup_prefix(tokens) / page_tokens_);
    try {
        s.pages.reserve(n_pages);
        s.hashes.reserve(n_pages);
    } catch (const std::bad_alloc&) {
        fail(STARKV_ERR_OUT_OF_MEMORY, "KV pool: out of memory growing a page table");
    }
    uint64_t parent = kChainRoot;
    for (size_t i = 0; i < n_pages; ++i) {
        parent = page_hash(parent, tokens.data() + i * page_tokens_);
        const int32_t page = prefix_.at(parent);
        if (pages_[page].refs++ == 0) lru_unlink(page);
        s.pages.push_back(page);
        s.hashes.push_back(parent);
    }
    s.length = static_cast<int>(n_pages * page_tokens_);
    queried_ += tokens.size() / page_tokens_ * page_tokens_;
    hits_ += static_cast<uint64_t>(s.length);
    return s.length;
}

void PagePool::clear_prefix_cache() {
    while (lru_head_ >= 0) {
        const int32_t p = lru_head_;
        lru_unlink(p);
        unregister(p);
        free_.push_back(p);
    }
}

PagePoolStats PagePool::stats() const {
    PagePoolStats st;
    st.page_bytes = page_bytes_;
    st.page_tokens = static_cast<uint32_t>(page_tokens_);
    st.pages_total = pages_total_;
    st.pages_allocated = pages_.size();
    st.pages_cached = n_cached_idle_;
    st.pages_used = pages_.size() - free_.size() - n_cached_idle_;
    st.pages_free = pages_total_ - st.pages_used - st.pages_cached;
    st.bytes_budget = budget_;
    st.bytes_allocated = pages_.size() * page_bytes_;
    st.bytes_used = st.pages_used * page_bytes_;
    st.capacity_tokens = capacity_tokens();
    for (const auto& [id, s] : seqs_) st.tokens += static_cast<uint64_t>(s.length);
    st.n_sequences = seqs_.size();
    st.prefix_queried_tokens = queried_;
    st.prefix_hit_tokens = hits_;
    st.evictions = evictions_;
    st.cow_copies = cow_copies_;
    return st;
}

}  // namespace starkv
