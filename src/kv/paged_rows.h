// The rows of the sequences in one forward pass, as the attention loops read
// them: each sequence's page pointers gathered once per pass, so that a row
// is a page lookup and two offsets (no hash-map lookup per row, as
// PagePool::row would do). Valid until the next non-const call on the pool.
// Reused across passes (clear() keeps the memory: a step allocates nothing).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kv/page_pool.h"

namespace starkv {

class PagedRows {
public:
    // Forgets the sequences; takes pool's page geometry.
    void clear(const PagePool& pool) {
        page_tokens_ = pool.page_tokens();
        layout_ = &pool.layout();
        offset_.resize(layout_->n_streams());
        for (size_t s = 0; s < offset_.size(); ++s) offset_[s] = pool.stream_offset(s);
        pages_.clear();
        first_.clear();
    }

    // Adds seq (its pages as they are now) and returns its index. The rows a
    // pass writes must be in pages seq holds alone (PagePool::append ensures it).
    int add(const PagePool& pool, SeqId seq) {
        first_.push_back(pages_.size());
        const int n = pool.n_pages(seq);
        for (int i = 0; i < n; ++i)
            pages_.push_back(const_cast<uint8_t*>(pool.page_span(seq, i, 0, 0, KvKind::K).data) - offset_[0]);
        return static_cast<int>(first_.size()) - 1;
    }

    int page_tokens() const { return page_tokens_; }
    size_t stream(int layer, int kv_head, KvKind kind) const { return layout_->stream(layer, kv_head, kind); }
    uint32_t row_bytes(size_t stream) const { return layout_->row_bytes(stream); }
    // First row of page p of sequence s in a stream (rows row_bytes apart).
    uint8_t* page_rows(int s, int p, size_t stream) const {
        return pages_[first_[static_cast<size_t>(s)] + static_cast<size_t>(p)] + offset_[stream];
    }
    uint8_t* row(int s, size_t stream, int pos) const {
        return page_rows(s, pos / page_tokens_, stream) +
               static_cast<size_t>(pos % page_tokens_) * layout_->row_bytes(stream);
    }

private:
    int page_tokens_ = 1;
    const RowLayout* layout_ = nullptr;
    std::vector<uint64_t> offset_;
    std::vector<uint8_t*> pages_;  // every sequence's page pointers, back to back
    std::vector<size_t> first_;    // index in pages_ of each sequence's first page
};

}  // namespace starkv
