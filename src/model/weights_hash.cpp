#include "model/weights_hash.h"

#include <xxhash.h>

#include <memory>
#include <vector>

#include "core/error.h"

namespace starkv {
namespace {

struct StateFree {
    void operator()(XXH3_state_t* s) const { XXH3_freeState(s); }
};

class Hasher {
public:
    Hasher() : st_(XXH3_createState()) {
        if (!st_) fail(STARKV_ERR_OUT_OF_MEMORY, "cannot allocate a hash state");
        XXH3_64bits_reset(st_.get());
    }
    void bytes(const void* p, size_t n) { XXH3_64bits_update(st_.get(), p, n); }
    void i64(int64_t v) { bytes(&v, sizeof v); }
    void f32(float v) { bytes(&v, sizeof v); }
    void floats(const std::vector<float>& v) {
        i64(static_cast<int64_t>(v.size()));
        bytes(v.data(), v.size() * sizeof(float));
    }
    void matrix(const Matrix& m) {
        i64(m.rows);
        i64(m.cols);
        floats(m.data);
    }
    void quant(const LatentQuant& q) {
        for (int v : {q.width, q.block, q.split, q.hi_bits, q.lo_bits}) i64(v);
        if (q.log8()) {  // (old formats hash as before)
            i64(q.row_scale ? 2 : 1);
            floats(q.base);
            floats(q.offset);
        }
    }
    uint64_t digest() const { return XXH3_64bits_digest(st_.get()); }

private:
    std::unique_ptr<XXH3_state_t, StateFree> st_;
};

}  // namespace

uint64_t weights_hash(const ModelConfig& c, const ModelWeights& w) {
    Hasher h;
    for (int v : {c.n_vocab, c.n_embd, c.n_ff, c.n_layer, c.n_head, c.n_head_kv, c.head_dim}) h.i64(v);
    h.f32(c.rms_eps);
    h.f32(c.rope.theta);
    h.i64(static_cast<int64_t>(c.rope.scaling));
    h.f32(c.rope.factor);
    for (const LayerWeights& L : w.layers) {
        h.floats(L.attn_norm);
        for (const Matrix* m : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down}) h.matrix(*m);
        h.floats(L.ffn_norm);
        h.i64(static_cast<int64_t>(L.lat.k_a.size()));
        for (const Matrix& m : L.lat.k_a) h.matrix(m);
        for (const Matrix& m : L.lat.k_u) h.matrix(m);
        h.matrix(L.lat.v_a);
        h.matrix(L.lat.v_u);
        h.i64(static_cast<int64_t>(L.lat.k_q.size()));
        for (const LatentQuant& q : L.lat.k_q) h.quant(q);
        h.quant(L.lat.v_q);
        h.quant(L.plain_q);
    }
    h.matrix(w.tok_embd);
    h.floats(w.output_norm);
    h.matrix(w.output);
    return h.digest();
}

}  // namespace starkv
