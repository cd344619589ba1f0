// The per-layer KV quantization plan in bundle metadata
// (compression.kv_quant.layers, docs/bundle-format.md): one entry per layer,
// null for a layer without quantized latents, else
// {"k": [plan per KV head], "v": plan} for a latent layer, {"plain": plan}
// for a plain layer whose K/V rows are quantized, a plan being
// {"width", "block", "split", "hi_bits", "lo_bits", "zero_point"} (width 0 =
// fp32 latent), plus for the log8 scale format (feature kv-quant-v2)
// {"scale": "log8", "row_scale", "base": [per group], "offset": [per channel]}.
#pragma once

#include <vector>

#include <nlohmann/json.hpp>

#include "kv/latent_quant.h"
#include "model/config.h"

namespace starkv::bundle {

nlohmann::json kv_quant_layers_to_json(const std::vector<LatentQuantLayer>& plan);
// Whether any plan of compression.kv_quant.layers has a "scale" other than
// the fp16 default (the writer then requires feature kv-quant-v2, which
// older readers refuse).
bool kv_quant_layers_need_v2(const nlohmann::json& layers);
// Validates shape and values (bits, block, split, width <= head_dim for keys,
// <= n_head_kv * head_dim for values); Error(STARKV_ERR_CORRUPT) with a
// one-line message on garbage.
std::vector<LatentQuantLayer> kv_quant_layers_from_json(const nlohmann::json& layers, const ModelConfig& c);

}  // namespace starkv::bundle
