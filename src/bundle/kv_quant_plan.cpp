#include "bundle/kv_quant_plan.h"

#include "core/error.h"

namespace starkv::bundle {

using json = nlohmann::json;

namespace {

json to_json(const LatentQuant& q) {
    json j{{"width", q.width}, {"block", q.block}, {"split", q.split}, {"hi_bits", q.hi_bits}, {"lo_bits", q.lo_bits},
           {"zero_point", q.zero_point}};
    if (q.log8()) {
        j["scale"] = "log8";
        j["row_scale"] = q.row_scale;
        j["base"] = q.base;
        j["offset"] = q.offset;
    }
    return j;
}

std::vector<float> floats(const json& j, const char* k, const std::string& where) {
    auto it = j.find(k);
    if (it == j.end() || !it->is_array()) corrupt(where + ": KV quantization plan has no array '" + k + "'");
    std::vector<float> out;
    out.reserve(it->size());
    for (const json& v : *it) {
        if (!v.is_number()) corrupt(where + ": KV quantization plan '" + k + "' holds a non-number");
        out.push_back(v.get<float>());
    }
    return out;
}

LatentQuant from_json(const json& j, int max_width, const std::string& where) {
    if (!j.is_object()) corrupt(where + ": KV quantization plan is not an object");
    auto field = [&](const char* k) {
        auto it = j.find(k);
        if (it == j.end() || !it->is_number_integer()) corrupt(where + ": KV quantization plan has no integer '" + k + "'");
        const int64_t v = it->get<int64_t>();
        if (v < 0 || v > 1 << 20) corrupt(where + ": KV quantization plan '" + k + "' out of range");
        return static_cast<int>(v);
    };
    LatentQuant q;
    q.width = field("width");
    if (q.width == 0) return q;  // fp32 latent
    q.block = field("block");
    q.split = field("split");
    q.hi_bits = field("hi_bits");
    q.lo_bits = field("lo_bits");
    if (auto zp = j.find("zero_point"); zp != j.end()) {
        if (!zp->is_boolean()) corrupt(where + ": KV quantization plan 'zero_point' is not a boolean");
        q.zero_point = zp->get<bool>();
    }
    if (auto sc = j.find("scale"); sc != j.end()) {
        if (!sc->is_string() || sc->get<std::string>() != "log8")
            corrupt(where + ": KV quantization plan 'scale' is not \"log8\"");
        q.scale = QuantScale::Log8;
        auto rs = j.find("row_scale");
        if (rs == j.end() || !rs->is_boolean()) corrupt(where + ": KV quantization plan 'row_scale' is not a boolean");
        q.row_scale = rs->get<bool>();
        q.base = floats(j, "base", where);
        q.offset = floats(j, "offset", where);
    }
    q.validate(max_width, where);
    return q;
}

}  // namespace

bool kv_quant_layers_need_v2(const json& layers) {
    auto is_v2 = [](const json& q) { return q.is_object() && q.contains("scale"); };
    if (!layers.is_array()) return false;
    for (const json& L : layers) {
        if (!L.is_object()) continue;
        for (const char* k : {"v", "plain"})
            if (L.contains(k) && is_v2(L[k])) return true;
        if (L.contains("k") && L["k"].is_array())
            for (const json& q : L["k"])
                if (is_v2(q)) return true;
    }
    return false;
}

json kv_quant_layers_to_json(const std::vector<LatentQuantLayer>& plan) {
    json out = json::array();
    for (const LatentQuantLayer& L : plan) {
        if (L.empty()) {
            out.push_back(nullptr);
            continue;
        }
        if (L.plain.active()) {
            out.push_back({{"plain", to_json(L.plain)}});
            continue;
        }
        json k = json::array();
        for (const LatentQuant& q : L.k) k.push_back(to_json(q));
        out.push_back({{"k", k}, {"v", to_json(L.v)}});
    }
    return out;
}

std::vector<LatentQuantLayer> kv_quant_layers_from_json(const json& layers, const ModelConfig& c) {
    if (!layers.is_array() || layers.size() != static_cast<size_t>(c.n_layer))
        corrupt("bundle: compression.kv_quant.layers is not an array of " + std::to_string(c.n_layer) + " layers");
    std::vector<LatentQuantLayer> out(layers.size());
    for (size_t l = 0; l < layers.size(); ++l) {
        const json& L = layers[l];
        if (L.is_null()) continue;
        const std::string where = "bundle: layer " + std::to_string(l);
        if (L.is_object() && L.contains("plain")) {
            out[l].plain = from_json(L["plain"], c.head_dim, where + " plain K/V");
            if (out[l].plain.active() && out[l].plain.width != c.head_dim)
                corrupt(where + ": plain K/V quantization width must be head_dim " + std::to_string(c.head_dim));
            continue;
        }
        if (!L.is_object() || !L.contains("k") || !L["k"].is_array() || L["k"].size() != static_cast<size_t>(c.n_head_kv) ||
            !L.contains("v"))
            corrupt(where + ": KV quantization plan needs 'k' (one per KV head) and 'v'");
        for (const json& k : L["k"]) out[l].k.push_back(from_json(k, c.head_dim, where + " keys"));
        out[l].v = from_json(L["v"], c.n_head_kv * c.head_dim, where + " values");
    }
    return out;
}

}  // namespace starkv::bundle
