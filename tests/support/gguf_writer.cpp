#include "gguf_writer.h"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <stdexcept>

namespace starkv_test {

std::string le_u32(uint32_t v) {
    std::string s(4, '\0');
    for (int i = 0; i < 4; ++i) s[static_cast<size_t>(i)] = static_cast<char>((v >> (8 * i)) & 0xff);
    return s;
}

std::string le_u64(uint64_t v) {
    std::string s(8, '\0');
    for (int i = 0; i < 8; ++i) s[static_cast<size_t>(i)] = static_cast<char>((v >> (8 * i)) & 0xff);
    return s;
}

std::string gguf_str(const std::string& s) { return le_u64(s.size()) + s; }

namespace {

std::string f32_bytes(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return le_u32(u);
}

size_t type_row_bytes(uint32_t type, uint64_t ne0) {
    switch (type) {
        case GGML_F32: return ne0 * 4;
        case GGML_F16:
        case GGML_BF16: return ne0 * 2;
        case GGML_Q8_0: return ne0 / 32 * 34;
        case GGML_Q4_0: return ne0 / 32 * 18;
        case GGML_Q4_1: return ne0 / 32 * 20;
    }
    throw std::runtime_error("read_gguf: tensor type " + std::to_string(type) + " not handled");
}

uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

}  // namespace

GgufKv* GgufWriter::find(const std::string& key) {
    for (GgufKv& kv : kvs)
        if (!kv.raw_entry && kv.key == key) return &kv;
    return nullptr;
}

GgufWriter& GgufWriter::set_raw(const std::string& key, uint32_t type, const std::string& value) {
    if (GgufKv* kv = find(key)) {
        kv->type = type;
        kv->value = value;
    } else {
        kvs.push_back(GgufKv{key, type, value, std::nullopt});
    }
    return *this;
}

GgufWriter& GgufWriter::set_u32(const std::string& k, uint32_t v) { return set_raw(k, GGUF_U32, le_u32(v)); }
GgufWriter& GgufWriter::set_i32(const std::string& k, int32_t v) {
    return set_raw(k, GGUF_I32, le_u32(static_cast<uint32_t>(v)));
}
GgufWriter& GgufWriter::set_u64(const std::string& k, uint64_t v) { return set_raw(k, GGUF_U64, le_u64(v)); }
GgufWriter& GgufWriter::set_f32(const std::string& k, float v) { return set_raw(k, GGUF_F32, f32_bytes(v)); }
GgufWriter& GgufWriter::set_bool(const std::string& k, bool v) { return set_raw(k, GGUF_BOOL, std::string(1, v ? 1 : 0)); }
GgufWriter& GgufWriter::set_string(const std::string& k, const std::string& v) {
    return set_raw(k, GGUF_STRING, gguf_str(v));
}
GgufWriter& GgufWriter::set_string_array(const std::string& k, const std::vector<std::string>& v) {
    std::string s = le_u32(GGUF_STRING) + le_u64(v.size());
    for (const std::string& x : v) s += gguf_str(x);
    return set_raw(k, GGUF_ARRAY, s);
}
GgufWriter& GgufWriter::set_f32_array(const std::string& k, const std::vector<float>& v) {
    std::string s = le_u32(GGUF_F32) + le_u64(v.size());
    for (float x : v) s += f32_bytes(x);
    return set_raw(k, GGUF_ARRAY, s);
}
GgufWriter& GgufWriter::set_i32_array(const std::string& k, const std::vector<int32_t>& v) {
    std::string s = le_u32(GGUF_I32) + le_u64(v.size());
    for (int32_t x : v) s += le_u32(static_cast<uint32_t>(x));
    return set_raw(k, GGUF_ARRAY, s);
}

bool GgufWriter::remove(const std::string& key) {
    for (auto it = kvs.begin(); it != kvs.end(); ++it)
        if (!it->raw_entry && it->key == key) {
            kvs.erase(it);
            return true;
        }
    return false;
}

GgufWriter& GgufWriter::add_tensor(const std::string& name, std::vector<uint64_t> dims, uint32_t type,
                                   std::string data) {
    tensors.push_back(GgufTensor{name, std::move(dims), type, std::move(data), std::nullopt, std::nullopt});
    return *this;
}

GgufWriter& GgufWriter::add_f32_tensor(const std::string& name, std::vector<uint64_t> dims, float scale) {
    uint64_t n = 1;
    for (uint64_t d : dims) n *= d;
    std::string data;
    data.reserve(n * 4);
    uint32_t state = 12345u + static_cast<uint32_t>(name.size()) * 7919u;
    for (uint64_t i = 0; i < n; ++i) {
        state = state * 1664525u + 1013904223u;
        float f = (static_cast<float>(state >> 8) / 16777216.0f - 0.5f) * 2.0f * scale;
        data += f32_bytes(f);
    }
    return add_tensor(name, std::move(dims), GGML_F32, std::move(data));
}

GgufTensor* GgufWriter::tensor(const std::string& name) {
    for (GgufTensor& t : tensors)
        if (t.name == name) return &t;
    return nullptr;
}

bool GgufWriter::remove_tensor(const std::string& name) {
    for (auto it = tensors.begin(); it != tensors.end(); ++it)
        if (it->name == name) {
            tensors.erase(it);
            return true;
        }
    return false;
}

namespace {

std::string header_bytes(const GgufWriter& w, const std::vector<uint64_t>& offsets) {
    std::string out = w.magic;
    out += le_u32(w.version);
    out += le_u64(w.n_tensors_override.value_or(w.tensors.size()));
    out += le_u64(w.n_kv_override.value_or(w.kvs.size()));
    for (const GgufKv& kv : w.kvs) {
        if (kv.raw_entry) {
            out += *kv.raw_entry;
            continue;
        }
        out += gguf_str(kv.key);
        out += le_u32(kv.type);
        out += kv.value;
    }
    for (size_t i = 0; i < w.tensors.size(); ++i) {
        const GgufTensor& t = w.tensors[i];
        out += gguf_str(t.name);
        out += le_u32(t.n_dims.value_or(static_cast<uint32_t>(t.dims.size())));
        for (uint64_t d : t.dims) out += le_u64(d);
        out += le_u32(t.type);
        out += le_u64(t.offset.value_or(offsets[i]));
    }
    return out;
}

std::vector<uint64_t> layout(const GgufWriter& w) {
    std::vector<uint64_t> offsets;
    uint64_t off = 0;
    for (const GgufTensor& t : w.tensors) {
        offsets.push_back(off);
        off = align_up(off + t.data.size(), w.alignment);
    }
    return offsets;
}

}  // namespace

uint64_t GgufWriter::data_start() const {
    return align_up(header_bytes(*this, layout(*this)).size(), alignment);
}

std::string GgufWriter::build() const {
    const std::vector<uint64_t> offsets = layout(*this);
    std::string out = header_bytes(*this, offsets);
    out.resize(align_up(out.size(), alignment), '\0');
    const size_t base = out.size();
    for (size_t i = 0; i < tensors.size(); ++i) {
        out.resize(base + offsets[i], '\0');
        out += tensors[i].data;
    }
    // Pad the last tensor like llama.cpp's writer does.
    if (!tensors.empty()) out.resize(align_up(out.size() - base, alignment) + base, '\0');
    return out;
}

void GgufWriter::write(const std::string& path) const {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    const std::string b = build();
    f.write(b.data(), static_cast<std::streamsize>(b.size()));
    if (!f) throw std::runtime_error("cannot write " + path);
}

namespace {

struct Reader {
    const std::string& b;
    size_t pos = 0;
    void need(size_t n) const {
        if (n > b.size() - pos) throw std::runtime_error("read_gguf: truncated at " + std::to_string(pos));
    }
    std::string bytes(size_t n) {
        need(n);
        std::string s = b.substr(pos, n);
        pos += n;
        return s;
    }
    uint32_t u32() {
        need(4);
        uint32_t v = 0;
        for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(b[pos + static_cast<size_t>(i)]);
        pos += 4;
        return v;
    }
    uint64_t u64() {
        need(8);
        uint64_t v = 0;
        for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(b[pos + static_cast<size_t>(i)]);
        pos += 8;
        return v;
    }
    std::string str() { return bytes(static_cast<size_t>(u64())); }
};

size_t scalar_bytes(uint32_t t) {
    switch (t) {
        case GGUF_U8: case GGUF_I8: case GGUF_BOOL: return 1;
        case GGUF_U16: case GGUF_I16: return 2;
        case GGUF_U32: case GGUF_I32: case GGUF_F32: return 4;
        case GGUF_U64: case GGUF_I64: case GGUF_F64: return 8;
    }
    return 0;
}

}  // namespace

GgufWriter read_gguf(const std::string& bytes) {
    Reader r{bytes};
    GgufWriter w;
    w.magic = r.bytes(4);
    w.version = r.u32();
    const uint64_t n_tensors = r.u64(), n_kv = r.u64();
    for (uint64_t k = 0; k < n_kv; ++k) {
        GgufKv kv;
        kv.key = r.str();
        kv.type = r.u32();
        const size_t start = r.pos;
        if (kv.type == GGUF_STRING) {
            r.str();
        } else if (kv.type == GGUF_ARRAY) {
            uint32_t et = r.u32();
            uint64_t n = r.u64();
            for (uint64_t i = 0; i < n; ++i) {
                if (et == GGUF_STRING) r.str();
                else if (scalar_bytes(et)) r.bytes(scalar_bytes(et));
                else throw std::runtime_error("read_gguf: bad array type");
            }
        } else if (scalar_bytes(kv.type)) {
            r.bytes(scalar_bytes(kv.type));
        } else {
            throw std::runtime_error("read_gguf: bad value type");
        }
        kv.value = bytes.substr(start, r.pos - start);
        w.kvs.push_back(std::move(kv));
    }
    if (GgufKv* a = w.find("general.alignment")) {
        Reader ar{a->value};
        w.alignment = a->type == GGUF_U64 ? ar.u64() : ar.u32();
    } else {
        w.alignment = 32;
    }
    std::vector<uint64_t> offsets;
    for (uint64_t k = 0; k < n_tensors; ++k) {
        GgufTensor t;
        t.name = r.str();
        uint32_t nd = r.u32();
        for (uint32_t d = 0; d < nd; ++d) t.dims.push_back(r.u64());
        t.type = r.u32();
        offsets.push_back(r.u64());
        w.tensors.push_back(std::move(t));
    }
    const uint64_t base = align_up(r.pos, w.alignment);
    for (size_t i = 0; i < w.tensors.size(); ++i) {
        GgufTensor& t = w.tensors[i];
        uint64_t rows = 1;
        for (size_t d = 1; d < t.dims.size(); ++d) rows *= t.dims[d];
        const size_t n = type_row_bytes(t.type, t.dims.at(0)) * rows;
        if (base + offsets[i] + n > bytes.size()) throw std::runtime_error("read_gguf: tensor past the end");
        t.data = bytes.substr(base + offsets[i], n);
    }
    return w;
}

GgufWriter tiny_llama(const TinyLlama& s) {
    GgufWriter w;
    const std::string a = s.arch + ".";
    w.set_string("general.architecture", s.arch);
    w.set_string("general.name", "tiny-test");
    w.set_u32(a + "context_length", s.n_ctx);
    w.set_u32(a + "embedding_length", s.n_embd);
    w.set_u32(a + "feed_forward_length", s.n_ff);
    w.set_u32(a + "block_count", s.n_layer);
    w.set_u32(a + "attention.head_count", s.n_head);
    w.set_u32(a + "attention.head_count_kv", s.n_head_kv);
    w.set_f32(a + "attention.layer_norm_rms_epsilon", 1e-5f);
    w.set_f32(a + "rope.freq_base", 10000.0f);
    w.set_string("tokenizer.ggml.model", "llama");
    std::vector<std::string> tokens{"<unk>", "<s>", "</s>"};
    std::vector<float> scores{0, 0, 0};
    std::vector<int32_t> types{2, 3, 3};
    for (int b = 0; b < 256 && tokens.size() < s.n_vocab; ++b) {
        char buf[8];
        std::snprintf(buf, sizeof buf, "<0x%02X>", b);
        tokens.push_back(buf);
        scores.push_back(0);
        types.push_back(6);
    }
    while (tokens.size() < s.n_vocab) {
        tokens.push_back("\xe2\x96\x81w" + std::to_string(tokens.size()));
        scores.push_back(-static_cast<float>(tokens.size()));
        types.push_back(1);
    }
    w.set_string_array("tokenizer.ggml.tokens", tokens);
    w.set_f32_array("tokenizer.ggml.scores", scores);
    w.set_i32_array("tokenizer.ggml.token_type", types);
    w.set_u32("tokenizer.ggml.bos_token_id", 1);
    w.set_u32("tokenizer.ggml.eos_token_id", 2);
    w.set_u32("tokenizer.ggml.unknown_token_id", 0);

    const uint64_t E = s.n_embd, F = s.n_ff, V = s.n_vocab;
    const uint64_t hd = s.n_embd / s.n_head, Q = hd * s.n_head, KV = hd * s.n_head_kv;
    w.add_f32_tensor("token_embd.weight", {E, V});
    w.add_f32_tensor("output_norm.weight", {E}, 1.0f);
    if (!s.tied) w.add_f32_tensor("output.weight", {E, V});
    for (uint32_t l = 0; l < s.n_layer; ++l) {
        const std::string b = "blk." + std::to_string(l) + ".";
        w.add_f32_tensor(b + "attn_norm.weight", {E}, 1.0f);
        w.add_f32_tensor(b + "attn_q.weight", {E, Q});
        w.add_f32_tensor(b + "attn_k.weight", {E, KV});
        w.add_f32_tensor(b + "attn_v.weight", {E, KV});
        w.add_f32_tensor(b + "attn_output.weight", {Q, E});
        w.add_f32_tensor(b + "ffn_norm.weight", {E}, 1.0f);
        w.add_f32_tensor(b + "ffn_gate.weight", {E, F});
        w.add_f32_tensor(b + "ffn_up.weight", {E, F});
        w.add_f32_tensor(b + "ffn_down.weight", {F, E});
    }
    return w;
}

}  // namespace starkv_test
