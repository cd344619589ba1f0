#include "model/model.h"

namespace starkv {

Model::Model(LoadedModel loaded)
    : loaded_(std::move(loaded)),
      tokenizer_(Tokenizer::create(loaded_.vocab)),
      rope_(loaded_.config.rope) {}

uint64_t Model::n_params() const {
    const ModelWeights& w = loaded_.weights;
    uint64_t n = w.tok_embd.data.size() + w.output_norm.size() + w.output.data.size();
    for (const LayerWeights& l : w.layers) {
        n += l.attn_norm.size() + l.wq.data.size() + l.wk.data.size() + l.wv.data.size() + l.wo.data.size() +
             l.ffn_norm.size() + l.w_gate.data.size() + l.w_up.data.size() + l.w_down.data.size();
        // A STAR-KV layer's factors (which replace W_k and W_v in a bundle).
        for (size_t h = 0; h < l.lat.k_a.size(); ++h) n += l.lat.k_a[h].data.size() + l.lat.k_u[h].data.size();
        n += l.lat.v_a.data.size() + l.lat.v_u.data.size();
    }
    return n;
}

}  // namespace starkv
