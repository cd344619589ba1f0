#include "model/context.h"

#include <algorithm>
#include <thread>

#include "backend/cuda_loader.h"
#include "core/error.h"
#include "kv/kv_state.h"
#include "kv/paged_rows.h"
#include "model/weights_hash.h"

namespace starkv {
namespace {

int resolve_threads(int n) {
    if (n > 0) return n;
    unsigned hw = std::thread::hardware_concurrency();
    return hw ? static_cast<int>(hw) : 1;
}

int resolve_ctx(const Model& model, int n_ctx) {
    if (n_ctx < 0) fail(STARKV_ERR_INVALID_ARGUMENT, "n_ctx must not be negative");
    if (n_ctx == 0) n_ctx = model.config().n_ctx_train;
    if (n_ctx > (1 << 24)) fail(STARKV_ERR_INVALID_ARGUMENT, "n_ctx " + std::to_string(n_ctx) + " is too large");
    return n_ctx;
}

std::unique_ptr<PagePool> make_pool(const KvCache& fmt, const ContextOptions& o) {
    if (o.page_tokens < 1 || o.page_tokens > 4096)
        fail(STARKV_ERR_INVALID_ARGUMENT, "page_tokens " + std::to_string(o.page_tokens) + " is not in [1, 4096]");
    if (o.max_sequences < 1)
        fail(STARKV_ERR_INVALID_ARGUMENT, "max_sequences must be at least 1");
    const RowLayout layout = fmt.row_layout();
    PagePoolOptions po;
    po.page_tokens = o.page_tokens;
    po.prefix_caching = o.prefix_caching;
    po.evict_cached_prefixes = o.evict_cached_prefixes;
    po.budget_bytes = o.kv_budget_bytes;
    if (po.budget_bytes == 0) {
        const uint64_t pages = (static_cast<uint64_t>(fmt.n_ctx()) + o.page_tokens - 1) / o.page_tokens;
        po.budget_bytes = std::max<uint64_t>(pages, 1) * PagePool::page_bytes_for(layout, o.page_tokens);
    }
    return std::make_unique<PagePool>(layout, po);
}

}  // namespace

Context::Context(std::shared_ptr<const Model> model, const ContextOptions& options)
    : model_(std::move(model)),
      fmt_(model_->config(), model_->weights(), resolve_ctx(*model_, options.n_ctx)),
      kv_(make_pool(fmt_, options)),
      max_sequences_(options.max_sequences),
      pool_(std::min(resolve_threads(options.n_threads), 256)),
      device_(backend::open_device_forward(*model_, fmt_.n_ctx(), options.backend, options.device,
                                            options.device_memory_limit, options.device_type)) {
    kv_->create(0);
}

Context::~Context() = default;

uint64_t Context::device_bytes() const { return device_ ? device_->device_bytes() : 0; }
uint64_t Context::device_weight_bytes() const { return device_ ? device_->weight_bytes() : 0; }

uint64_t Context::kv_bytes_reserved() const {
    const PagePoolStats st = kv_->stats();
    return st.pages_allocated * st.page_tokens * fmt_.bytes_per_token();
}

int Context::n_past() const { return device_ ? device_n_past_ : kv_->length(0); }

void Context::require_cpu(const char* what) const {
    if (device_) fail(STARKV_ERR_UNSUPPORTED, std::string(what) + " is not supported on a GPU backend yet");
}

namespace {

// Index of seq in v (pairs keyed by sequence), or -1.
template <class T>
int find_seq(const std::vector<std::pair<SeqId, T>>& v, SeqId seq) {
    for (size_t i = 0; i < v.size(); ++i)
        if (v[i].first == seq) return static_cast<int>(i);
    return -1;
}

}  // namespace

void Context::check_items(std::span<const BatchItem> items) const {
    if (items.empty()) fail(STARKV_ERR_INVALID_ARGUMENT, "no tokens to evaluate");
    const int n_vocab = model_->config().n_vocab;
    auto& next = step_.seqs;  // position each sequence's next item must have
    next.clear();
    for (size_t i = 0; i < items.size(); ++i) {
        const BatchItem& it = items[i];
        if (it.token < 0 || it.token >= n_vocab)
            fail(STARKV_ERR_INVALID_ARGUMENT, "token id " + std::to_string(it.token) + " is outside the vocabulary");
        int k = find_seq(next, it.seq);
        if (k < 0) {
            if (!kv_->has(it.seq)) fail(STARKV_ERR_INVALID_ARGUMENT, "no sequence " + std::to_string(it.seq));
            next.emplace_back(it.seq, kv_->length(it.seq));
            k = static_cast<int>(next.size()) - 1;
        }
        int& at = next[static_cast<size_t>(k)].second;
        if (it.pos != at)
            fail(STARKV_ERR_INVALID_ARGUMENT, "item " + std::to_string(i) + ": sequence " + std::to_string(it.seq) +
                                                  " is at position " + std::to_string(at) + ", not " +
                                                  std::to_string(it.pos));
        if (at >= fmt_.n_ctx())
            fail(STARKV_ERR_CONTEXT_FULL, "context full: sequence " + std::to_string(it.seq) + " would exceed n_ctx " +
                                              std::to_string(fmt_.n_ctx()) + " tokens");
        ++at;
    }
    uint64_t pages = 0;
    for (const auto& [seq, end] : next) {
        const int n = end - kv_->length(seq);
        if (static_cast<uint64_t>(end) > kv_->capacity_tokens())
            fail(STARKV_ERR_KV_POOL_FULL, "KV pool full: sequence " + std::to_string(seq) + " of " +
                                              std::to_string(end) + " tokens exceeds the pool's capacity of " +
                                              std::to_string(kv_->capacity_tokens()));
        pages += kv_->pages_to_append(seq, n);
    }
    if (pages > kv_->pages_available())
        fail(STARKV_ERR_KV_POOL_FULL, "KV pool full: the batch needs " + std::to_string(pages) + " pages, " +
                                          std::to_string(kv_->pages_available()) + " available of " +
                                          std::to_string(kv_->pages_total()));
}

void Context::run(std::span<const BatchItem> items, float* out, bool check_abort) {
    StepScratch& w = step_;
    // Sequences in order of first appearance, with their lengths before the step.
    w.seqs.clear();
    for (const BatchItem& it : items)
        if (find_seq(w.seqs, it.seq) < 0) w.seqs.emplace_back(it.seq, kv_->length(it.seq));
    const size_t V = static_cast<size_t>(model_->config().n_vocab);
    w.last_row.clear();
    size_t n_appended = 0;  // for the rollback: w.seqs[0, n_appended) were appended to
    w.fresh.clear();          // sequences whose logits buffer was empty (cleared again on failure)
    auto rollback = [&] {
        for (size_t i = 0; i < n_appended; ++i) kv_->truncate(w.seqs[i].first, w.seqs[i].second);
        for (SeqId seq : w.fresh) seq_logits_[seq].clear();
    };
    try {
        // Every allocation a step may need happens here, before the rows change.
        if (out)
            for (const BatchItem& it : items) {
                if (!it.logits) continue;
                std::vector<float>& l = seq_logits_[it.seq];
                if (l.empty()) {
                    w.fresh.push_back(it.seq);
                    l.resize(V);
                }
            }
        for (const auto& [seq, before] : w.seqs) {
            w.tokens.clear();
            for (const BatchItem& it : items)
                if (it.seq == seq) w.tokens.push_back(it.token);
            kv_->append(seq, w.tokens);
            ++n_appended;
        }
        scratch_.reserve(model_->config(), static_cast<int>(std::min<size_t>(items.size(), kMicroBatch)),
                         fmt_.n_ctx(), pool_.size());
        // Sequence i of w.seqs is index i of the PagedRows.
        w.rows.clear(*kv_);
        for (const auto& sp : w.seqs) w.rows.add(*kv_, sp.first);

        int64_t produced = 0;
        for (size_t done = 0; done < items.size();) {
            if (check_abort && aborted())
                fail(STARKV_ERR_CANCELLED, "evaluation cancelled by the abort callback after " + std::to_string(done) +
                                               " of " + std::to_string(items.size()) + " tokens");
            const size_t m = std::min<size_t>(items.size() - done, kMicroBatch);
            w.tk.clear(), w.pos.clear(), w.sq.clear(), w.lr.clear();
            for (size_t i = 0; i < m; ++i) {
                const BatchItem& it = items[done + i];
                w.tk.push_back(it.token);
                w.pos.push_back(it.pos);
                w.sq.push_back(find_seq(w.seqs, it.seq));
                if (it.logits) {
                    w.lr.push_back(static_cast<int32_t>(i));
                    const int64_t row = produced + static_cast<int64_t>(w.lr.size()) - 1;
                    const int k = find_seq(w.last_row, it.seq);
                    if (k < 0) w.last_row.emplace_back(it.seq, row);
                    else w.last_row[static_cast<size_t>(k)].second = row;
                }
            }
            ForwardRows fr{w.tk.data(), w.pos.data(), w.sq.data(), static_cast<int>(m), w.lr.data(),
                           static_cast<int>(w.lr.size())};
            forward(*model_, fmt_, w.rows, scratch_, pool_, fr, out ? out + static_cast<size_t>(produced) * V : nullptr);
            produced += static_cast<int64_t>(w.lr.size());
            done += m;
        }
    } catch (const std::bad_alloc&) {
        rollback();
        fail(STARKV_ERR_OUT_OF_MEMORY, "cannot allocate buffers for " + std::to_string(items.size()) + " tokens");
    } catch (...) {
        rollback();
        throw;
    }
    for (const auto& [seq, before] : w.seqs) {
        // Registering pages for prefix reuse is an optimisation: without memory
        // for it the step still succeeded (the pages just stay private).
        try {
            kv_->commit(seq);
        } catch (const std::bad_alloc&) {
        } catch (const Error& e) {
            if (e.status() != STARKV_ERR_OUT_OF_MEMORY) throw;
        }
        if (!out || find_seq(w.last_row, seq) < 0) clear_seq_logits(seq);
    }
    if (!out) return;
    for (const auto& [seq, row] : w.last_row)  // buffers sized above: no allocation
        std::copy_n(out + static_cast<size_t>(row) * V, V, seq_logits_[seq].data());
}

void Context::eval(const int32_t* tokens, size_t n, bool all_logits, bool check_abort) {
    if (n == 0) fail(STARKV_ERR_INVALID_ARGUMENT, "no tokens to evaluate");
    const int past = n_past();
    if (n > static_cast<size_t>(fmt_.n_ctx() - past))
        fail(STARKV_ERR_CONTEXT_FULL, "context full: " + std::to_string(past) + " + " + std::to_string(n) +
                                          " tokens exceed n_ctx " + std::to_string(fmt_.n_ctx()));
    const int n_vocab = model_->config().n_vocab;
    for (size_t i = 0; i < n; ++i)
        if (tokens[i] < 0 || tokens[i] >= n_vocab)
            fail(STARKV_ERR_INVALID_ARGUMENT, "token id " + std::to_string(tokens[i]) + " is outside the vocabulary");
    const size_t V = static_cast<size_t>(n_vocab);

    if (!device_) {
        std::vector<BatchItem>& items = step_.items;
        items.resize(n);
        for (size_t i = 0; i < n; ++i) items[i] = {tokens[i], 0, past + static_cast<int32_t>(i), all_logits || i + 1 == n};
        check_items(items);
        try {
            logits_.resize((all_logits ? n : 1) * V);
        } catch (const std::bad_alloc&) {
            n_logits_ = 0;
            fail(STARKV_ERR_OUT_OF_MEMORY, "cannot allocate logits for " + std::to_string(n) + " tokens");
        }
        try {
            run(items, logits_.data(), check_abort);
        } catch (...) {
            n_logits_ = 0;
            throw;
        }
        n_logits_ = all_logits ? static_cast<int>(n) : 1;
        return;
    }

    try {
        logits_.resize((all_logits ? n : 1) * V);
    } catch (const std::bad_alloc&) {
        fail(STARKV_ERR_OUT_OF_MEMORY, "cannot allocate buffers for " + std::to_string(n) + " tokens");
    }
    const int n_past_before = device_n_past_;
    for (size_t done = 0; done < n;) {
        if (check_abort && aborted()) {
            device_n_past_ = n_past_before;
            n_logits_ = 0;
            fail(STARKV_ERR_CANCELLED, "evaluation cancelled by the abort callback after " + std::to_string(done) +
                                           " of " + std::to_string(n) + " tokens");
        }
        const int m = static_cast<int>(std::min<size_t>(n - done, kMicroBatch));
        const bool last = done + static_cast<size_t>(m) == n;
        float* out = all_logits ? logits_.data() + done * V : (last ? logits_.data() : nullptr);
        device_->forward(tokens + done, m, device_n_past_, all_logits, out);
        device_n_past_ += m;
        done += static_cast<size_t>(m);
    }
    n_logits_ = all_logits ? static_cast<int>(n) : 1;
}

const float* Context::logits(int i) const {
    if (n_logits_ == 0) return nullptr;
    if (i < 0) i = n_logits_ + i;
    if (i < 0 || i >= n_logits_) return nullptr;
    return logits_.data() + static_cast<size_t>(i) * static_cast<size_t>(model_->config().n_vocab);
}

void Context::reset() { rewind(0); }

void Context::rewind(int n_past) {
    const int past = this->n_past();
    if (n_past < 0 || n_past > past)
        fail(STARKV_ERR_INVALID_ARGUMENT, "cannot rewind to " + std::to_string(n_past) + " (holding " +
                                              std::to_string(past) + " tokens)");
    if (device_) device_n_past_ = n_past;
    else kv_->truncate(0, n_past);
    clear_seq_logits(0);
    n_logits_ = 0;  // the old logits no longer describe the sequence's end
}

// ---- sequences -------------------------------------------------------------------

void Context::seq_create(SeqId seq) {
    require_cpu("sequences");
    if (seq < 0) fail(STARKV_ERR_INVALID_ARGUMENT, "sequence ids are non-negative");
    if (kv_->has(seq)) fail(STARKV_ERR_INVALID_ARGUMENT, "sequence " + std::to_string(seq) + " exists");
    if (kv_->stats().n_sequences >= static_cast<uint64_t>(max_sequences_))
        fail(STARKV_ERR_INVALID_ARGUMENT, "the context holds its maximum of " + std::to_string(max_sequences_) + " sequences");
    kv_->create(seq);
}

void Context::seq_remove(SeqId seq) {
    require_cpu("sequences");
    if (seq == 0) fail(STARKV_ERR_INVALID_ARGUMENT, "sequence 0 cannot be removed (truncate it to 0 instead)");
    kv_->remove(seq);
    seq_logits_.erase(seq);
}

void Context::seq_truncate(SeqId seq, int n_past) {
    if (seq == 0) return rewind(n_past);
    require_cpu("sequences");
    if (!kv_->has(seq)) fail(STARKV_ERR_INVALID_ARGUMENT, "no sequence " + std::to_string(seq));
    if (n_past < 0 || n_past > kv_->length(seq))
        fail(STARKV_ERR_INVALID_ARGUMENT, "cannot truncate sequence " + std::to_string(seq) + " to " +
                                              std::to_string(n_past) + " (holding " +
                                              std::to_string(kv_->length(seq)) + " tokens)");
    kv_->truncate(seq, n_past);
    clear_seq_logits(seq);
}

void Context::seq_fork(SeqId src, SeqId dst) {
    require_cpu("sequences");
    if (dst < 0) fail(STARKV_ERR_INVALID_ARGUMENT, "sequence ids are non-negative");
    if (!kv_->has(src)) fail(STARKV_ERR_INVALID_ARGUMENT, "no sequence " + std::to_string(src));
    if (kv_->has(dst)) fail(STARKV_ERR_INVALID_ARGUMENT, "sequence " + std::to_string(dst) + " exists");
    if (kv_->stats().n_sequences >= static_cast<uint64_t>(max_sequences_))
        fail(STARKV_ERR_INVALID_ARGUMENT, "the context holds its maximum of " + std::to_string(max_sequences_) + " sequences");
    kv_->fork(src, dst);
    auto it = seq_logits_.find(src);
    if (it != seq_logits_.end() && !it->second.empty()) {
        try {
            seq_logits_[dst] = it->second;
        } catch (...) {
            kv_->remove(dst);
            throw;
        }
    }
}

int Context::seq_n_past(SeqId seq) const {
    if (seq == 0) return n_past();
    if (!kv_->has(seq)) fail(STARKV_ERR_INVALID_ARGUMENT, "no sequence " + std::to_string(seq));
    return kv_->length(seq);
}

bool Context::seq_exists(SeqId seq) const { return seq == 0 || kv_->has(seq); }

int Context::seq_prefill(SeqId seq, const int32_t* tokens, size_t n) {
    require_cpu("sequences");
    if (!kv_->has(seq)) fail(STARKV_ERR_INVALID_ARGUMENT, "no sequence " + std::to_string(seq));
    if (kv_->length(seq) != 0)
        fail(STARKV_ERR_INVALID_ARGUMENT, "sequence " + std::to_string(seq) + " is not empty (prefill starts a sequence)");
    if (n == 0) fail(STARKV_ERR_INVALID_ARGUMENT, "no tokens to evaluate");
    if (n > static_cast<size_t>(fmt_.n_ctx()))
        fail(STARKV_ERR_CONTEXT_FULL, "context full: " + std::to_string(n) + " tokens exceed n_ctx " +
                                          std::to_string(fmt_.n_ctx()));
    const int n_vocab = model_->config().n_vocab;
    for (size_t i = 0; i < n; ++i)
        if (tokens[i] < 0 || tokens[i] >= n_vocab)
            fail(STARKV_ERR_INVALID_ARGUMENT, "token id " + std::to_string(tokens[i]) + " is outside the vocabulary");
    // The last token is always computed: it gives the logits.
    const int reused = kv_->reuse_prefix(seq, std::span<const int32_t>(tokens, n - 1));
    try {
        std::vector<BatchItem> items;
        for (size_t i = static_cast<size_t>(reused); i < n; ++i)
            items.push_back({tokens[i], seq, static_cast<int32_t>(i), i + 1 == n});
        check_items(items);
        std::vector<float> out(static_cast<size_t>(n_vocab));
        run(items, out.data(), /*check_abort=*/true);
    } catch (...) {
        kv_->truncate(seq, 0);
        throw;
    }
    if (seq == 0) n_logits_ = 0;
    return reused;
}

void Context::eval_batch(std::span<const BatchItem> items) {
    require_cpu("batches");
    check_items(items);
    batch_row_.assign(items.size(), -1);
    int64_t rows = 0;
    bool touches_0 = false;
    for (size_t i = 0; i < items.size(); ++i) {
        if (items[i].logits) batch_row_[i] = rows++;
        touches_0 = touches_0 || items[i].seq == 0;
    }
    try {
        batch_logits_.resize(static_cast<size_t>(rows) * static_cast<size_t>(model_->config().n_vocab));
        run(items, batch_logits_.data(), /*check_abort=*/true);
    } catch (const std::bad_alloc&) {
        batch_row_.clear();
        fail(STARKV_ERR_OUT_OF_MEMORY, "cannot allocate logits for " + std::to_string(rows) + " rows");
    } catch (...) {
        batch_row_.clear();
        throw;
    }
    if (touches_0) n_logits_ = 0;
}

const float* Context::batch_logits(size_t i) const {
    if (i >= batch_row_.size() || batch_row_[i] < 0) return nullptr;
    return batch_logits_.data() + static_cast<size_t>(batch_row_[i]) * static_cast<size_t>(model_->config().n_vocab);
}

const float* Context::seq_logits(SeqId seq) const {
    auto it = seq_logits_.find(seq);
    return it == seq_logits_.end() || it->second.empty() ? nullptr : it->second.data();
}

void Context::clear_seq_logits(SeqId seq) {
    auto it = seq_logits_.find(seq);
    if (it != seq_logits_.end()) it->second.clear();  // keeps the memory for the next step
}

// ---- saved state -------------------------------------------------------------------

uint64_t Context::bundle_hash() const {
    if (!bundle_hash_) bundle_hash_ = weights_hash(model_->config(), model_->weights());
    return *bundle_hash_;
}

std::vector<uint8_t> Context::save_state(std::span<const SeqId> seqs) const {
    require_cpu("saved KV state");
    std::vector<SeqId> all;
    if (seqs.empty()) {
        all = kv_->sequences();
        seqs = all;
    }
    for (SeqId s : seqs)
        if (!kv_->has(s)) fail(STARKV_ERR_INVALID_ARGUMENT, "no sequence " + std::to_string(s));
    return save_kv_state(*kv_, bundle_hash(), seqs);
}

std::vector<SeqId> Context::restore_state(std::span<const uint8_t> state, SeqId target) {
    require_cpu("saved KV state");
    // An empty sequence 0 makes way for a saved one; it comes back otherwise.
    const bool drop0 = kv_->length(0) == 0;
    if (drop0) kv_->remove(0);
    std::vector<SeqId> ids;
    try {
        KvStateRestoreOptions opt;
        opt.target_seq = target;
        opt.n_vocab = model_->config().n_vocab;
        ids = restore_kv_state(*kv_, bundle_hash(), state, opt);
        // Sequence 0 comes back below if the state did not hold it.
        if (kv_->stats().n_sequences + (kv_->has(0) ? 0 : 1) > static_cast<uint64_t>(max_sequences_)) {
            for (SeqId s : ids) kv_->remove(s);
            fail(STARKV_ERR_INVALID_ARGUMENT, "the state's sequences exceed the context's maximum of " +
                                                  std::to_string(max_sequences_));
        }
    } catch (...) {
        if (!kv_->has(0)) kv_->create(0);
        throw;
    }
    if (!kv_->has(0)) kv_->create(0);
    for (SeqId s : ids) {
        clear_seq_logits(s);
        if (s == 0) n_logits_ = 0;
    }
    return ids;
}

}  // namespace starkv
