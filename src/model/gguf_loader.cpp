// GGUF v2/v3 reader for llama-architecture models.
// Every count, length, offset and shape is checked against the file size and
// the config before it is used, so a hostile file is an Error, not a crash or a
// huge allocation.
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <unordered_map>
#include <variant>

#include "core/mapped_file.h"
#include "model/dequant.h"
#include "model/model_source.h"

namespace starkv {
namespace {

enum GgufType : uint32_t {
    kU8 = 0, kI8 = 1, kU16 = 2, kI16 = 3, kU32 = 4, kI32 = 5, kF32 = 6, kBool = 7,
    kString = 8, kArray = 9, kU64 = 10, kI64 = 11, kF64 = 12,
};

size_t scalar_size(uint32_t t) {
    switch (t) {
        case kU8: case kI8: case kBool: return 1;
        case kU16: case kI16: return 2;
        case kU32: case kI32: case kF32: return 4;
        case kU64: case kI64: case kF64: return 8;
        default: return 0;
    }
}

// A metadata value: numbers as double/int64, strings, or arrays of them.
struct Value {
    uint32_t type = 0;
    int64_t i = 0;
    double f = 0;
    std::string s;
    uint32_t elem_type = 0;
    std::vector<int64_t> ints;
    std::vector<double> floats;
    std::vector<std::string> strings;
};

class GgufParser {
public:
    explicit GgufParser(const MappedFile& file) : r_(file.data(), file.size(), "GGUF " + file.path()) {}

    std::string read_string() {
        uint64_t n = r_.read<uint64_t>();
        if (n > r_.remaining()) corrupt(where() + "string length " + std::to_string(n) + " exceeds the file");
        return std::string(r_.read_bytes(static_cast<size_t>(n)));
    }

    int64_t read_int(uint32_t t) {
        switch (t) {
            case kU8: return r_.read<uint8_t>();
            case kI8: return r_.read<int8_t>();
            case kBool: return r_.read<uint8_t>() != 0;
            case kU16: return r_.read<uint16_t>();
            case kI16: return r_.read<int16_t>();
            case kU32: return r_.read<uint32_t>();
            case kI32: return r_.read<int32_t>();
            case kU64: return static_cast<int64_t>(r_.read<uint64_t>());
            case kI64: return r_.read<int64_t>();
            default: corrupt(where() + "bad integer type " + std::to_string(t));
        }
    }

    Value read_value(uint32_t t, int depth = 0) {
        Value v;
        v.type = t;
        if (t == kString) {
            v.s = read_string();
        } else if (t == kF32) {
            v.f = r_.read<float>();
        } else if (t == kF64) {
            v.f = r_.read<double>();
        } else if (t == kArray) {
            if (depth > 0) unsupported(where() + "nested arrays");
            v.elem_type = r_.read<uint32_t>();
            uint64_t n = r_.read<uint64_t>();
            size_t min_size = v.elem_type == kString ? 8 : scalar_size(v.elem_type);
            if (min_size == 0) corrupt(where() + "bad array element type " + std::to_string(v.elem_type));
            if (n > r_.remaining() / min_size)
                corrupt(where() + "array of " + std::to_string(n) + " elements exceeds the file");
            if (v.elem_type == kString) {
                v.strings.reserve(n);
                for (uint64_t k = 0; k < n; ++k) v.strings.push_back(read_string());
            } else if (v.elem_type == kF32 || v.elem_type == kF64) {
                v.floats.reserve(n);
                for (uint64_t k = 0; k < n; ++k)
                    v.floats.push_back(v.elem_type == kF32 ? r_.read<float>() : r_.read<double>());
            } else {
                v.ints.reserve(n);
                for (uint64_t k = 0; k < n; ++k) v.ints.push_back(read_int(v.elem_type));
            }
        } else if (scalar_size(t) != 0) {
            v.i = read_int(t);
            v.f = static_cast<double>(v.i);
        } else {
            corrupt(where() + "unknown metadata type " + std::to_string(t));
        }
        return v;
    }

    std::string where() const { return "GGUF: at offset " + std::to_string(r_.offset()) + ": "; }
    ByteReader& reader() { return r_; }

private:
    ByteReader r_;
};

struct TensorRecord {
    std::string name;
    std::vector<uint64_t> ne;  // innermost first, as GGUF stores it
    uint32_t type = 0;
    uint64_t offset = 0;       // relative to the data section
    uint64_t n_elems = 0;
    uint64_t n_bytes = 0;
};

class Metadata {
public:
    std::unordered_map<std::string, Value> kv;

    const Value* find(const std::string& key) const {
        auto it = kv.find(key);
        return it == kv.end() ? nullptr : &it->second;
    }
    int64_t get_int(const std::string& key, std::optional<int64_t> def = std::nullopt) const {
        const Value* v = find(key);
        if (!v) {
            if (def) return *def;
            unsupported("GGUF: missing metadata key '" + key + "'");
        }
        if (v->type == kF32 || v->type == kF64 || v->type == kString || v->type == kArray)
            corrupt("GGUF: metadata '" + key + "' is not an integer");
        return v->i;
    }
    double get_float(const std::string& key, double def) const {
        const Value* v = find(key);
        if (!v) return def;
        if (v->type == kString || v->type == kArray) corrupt("GGUF: metadata '" + key + "' is not a number");
        return v->f;
    }
    std::string get_string(const std::string& key, const std::string& def) const {
        const Value* v = find(key);
        if (!v) return def;
        if (v->type != kString) corrupt("GGUF: metadata '" + key + "' is not a string");
        return v->s;
    }
};

int checked_dim(int64_t v, const char* what) {
    if (v <= 0 || v > (int64_t{1} << 30)) corrupt(std::string("GGUF: invalid ") + what + " " + std::to_string(v));
    return static_cast<int>(v);
}

ModelConfig read_config(const Metadata& md) {
    ModelConfig c;
    c.architecture = md.get_string("general.architecture", "");
    if (c.architecture.empty()) corrupt("GGUF: missing general.architecture");
    if (c.architecture != "llama" && c.architecture != "mistral")
        unsupported("GGUF: architecture '" + c.architecture + "' is not supported (llama family only)");
    const std::string a = c.architecture + ".";
    c.name = md.get_string("general.name", "");
    c.n_embd = checked_dim(md.get_int(a + "embedding_length"), "embedding_length");
    c.n_ff = checked_dim(md.get_int(a + "feed_forward_length"), "feed_forward_length");
    c.n_layer = checked_dim(md.get_int(a + "block_count"), "block_count");
    c.n_head = checked_dim(md.get_int(a + "attention.head_count"), "attention.head_count");
    c.n_head_kv = checked_dim(md.get_int(a + "attention.head_count_kv", c.n_head), "attention.head_count_kv");
    if (c.n_embd % c.n_head != 0 && !md.find(a + "attention.key_length"))
        corrupt("GGUF: embedding_length is not a multiple of head_count");
    c.head_dim = checked_dim(md.get_int(a + "attention.key_length", c.n_embd / c.n_head), "attention.key_length");
    int64_t vdim = md.get_int(a + "attention.value_length", c.head_dim);
    if (vdim != c.head_dim) unsupported("GGUF: value_length != key_length is not supported");
    c.n_ctx_train = checked_dim(md.get_int(a + "context_length", 2048), "context_length");
    c.rms_eps = static_cast<float>(md.get_float(a + "attention.layer_norm_rms_epsilon", 1e-5));
    c.rope.theta = static_cast<float>(md.get_float(a + "rope.freq_base", 10000.0));
    c.rope.n_dims = checked_dim(md.get_int(a + "rope.dimension_count", c.head_dim), "rope.dimension_count");
    c.rope.layout = RopeLayout::Adjacent;  // llama.cpp's converter permuted Q/K for this
    std::string scaling = md.get_string(a + "rope.scaling.type", "none");
    double factor = md.get_float(a + "rope.scaling.factor", 0.0);
    if (scaling == "linear" || (scaling == "none" && md.find(a + "rope.scale_linear"))) {
        if (scaling == "none") factor = md.get_float(a + "rope.scale_linear", 1.0);
        if (factor > 0 && factor != 1.0) {
            c.rope.scaling = RopeScaling::Linear;
            c.rope.factor = static_cast<float>(factor);
        }
    } else if (scaling != "none" && scaling != "") {
        unsupported("GGUF: rope scaling '" + scaling + "' is not supported");
    }
    return c;
}

Vocab read_vocab(const Metadata& md) {
    Vocab v;
    std::string model = md.get_string("tokenizer.ggml.model", "");
    if (model == "llama") v.kind = TokenizerKind::Spm;
    else if (model == "gpt2") v.kind = TokenizerKind::Bpe;
    else if (model.empty()) unsupported("GGUF: no tokenizer (tokenizer.ggml.model missing)");
    else unsupported("GGUF: tokenizer model '" + model + "' is not supported");

    const Value* tokens = md.find("tokenizer.ggml.tokens");
    if (!tokens || tokens->type != kArray || tokens->elem_type != kString)
        corrupt("GGUF: tokenizer.ggml.tokens missing or not a string array");
    v.tokens = tokens->strings;
    const size_t n = v.tokens.size();
    if (const Value* s = md.find("tokenizer.ggml.scores")) {
        if (s->type != kArray || s->floats.size() != n) corrupt("GGUF: tokenizer.ggml.scores does not match the tokens");
        v.scores.assign(s->floats.begin(), s->floats.end());
    } else if (v.kind == TokenizerKind::Spm) {
        v.scores.assign(n, 0.0f);
    }
    if (const Value* t = md.find("tokenizer.ggml.token_type")) {
        if (t->type != kArray || t->ints.size() != n) corrupt("GGUF: tokenizer.ggml.token_type does not match the tokens");
        v.types.reserve(n);
        for (int64_t x : t->ints) v.types.push_back(static_cast<TokenType>(x));
    } else {
        v.types.assign(n, TokenType::Normal);
    }
    if (const Value* m = md.find("tokenizer.ggml.merges")) {
        if (m->type != kArray || m->elem_type != kString) corrupt("GGUF: tokenizer.ggml.merges is not a string array");
        v.merges = m->strings;
    }
    v.pre = md.get_string("tokenizer.ggml.pre", v.kind == TokenizerKind::Bpe ? "gpt2" : "");
    auto id = [&](const char* key, int64_t def) -> int32_t {
        int64_t x = md.get_int(key, def);
        if (x == 0xFFFFFFFFll || x < 0) return -1;  // "none" as llama.cpp writes it
        if (x > INT32_MAX) corrupt(std::string("GGUF: ") + key + " " + std::to_string(x) + " is out of range");
        return static_cast<int32_t>(x);
    };
    v.bos = id("tokenizer.ggml.bos_token_id", v.kind == TokenizerKind::Spm ? 1 : -1);
    v.eos = id("tokenizer.ggml.eos_token_id", v.kind == TokenizerKind::Spm ? 2 : -1);
    v.unk = id("tokenizer.ggml.unknown_token_id", v.kind == TokenizerKind::Spm ? 0 : -1);
    v.pad = id("tokenizer.ggml.padding_token_id", -1);
    v.add_bos = md.get_int("tokenizer.ggml.add_bos_token", v.kind == TokenizerKind::Spm ? 1 : (v.bos >= 0)) != 0;
    v.add_space_prefix = md.get_int("tokenizer.ggml.add_space_prefix", v.kind == TokenizerKind::Spm ? 1 : 0) != 0;
    v.validate();
    return v;
}

}  // namespace

ModelSource open_gguf_source(const std::string& path) {
    auto file = std::make_shared<MappedFile>(path);
    GgufParser p(*file);
    ByteReader& r = p.reader();
    if (file->size() < 4 || std::memcmp(file->data(), "GGUF", 4) != 0)
        corrupt("'" + path + "' is not a GGUF file (wrong magic)");
    r.seek(4);
    uint32_t version = r.read<uint32_t>();
    if (version < 2 || version > 3)
        unsupported("GGUF version " + std::to_string(version) + " is not supported (2 and 3 are)");
    uint64_t n_tensors = r.read<uint64_t>();
    uint64_t n_kv = r.read<uint64_t>();
    // Each metadata entry and tensor info takes at least 8+4 bytes.
    if (n_kv > r.remaining() / 12 || n_tensors > r.remaining() / 12)
        corrupt("GGUF: " + std::to_string(n_kv) + " metadata entries / " + std::to_string(n_tensors) +
                " tensors cannot fit in the file");

    Metadata md;
    for (uint64_t k = 0; k < n_kv; ++k) {
        std::string key = p.read_string();
        uint32_t type = r.read<uint32_t>();
        md.kv[key] = p.read_value(type);
    }

    std::vector<TensorRecord> records(n_tensors);
    std::unordered_map<std::string, size_t> by_name;
    for (uint64_t k = 0; k < n_tensors; ++k) {
        TensorRecord& t = records[k];
        t.name = p.read_string();
        uint32_t n_dims = r.read<uint32_t>();
        if (n_dims == 0 || n_dims > 4) corrupt("GGUF: tensor '" + t.name + "' has " + std::to_string(n_dims) + " dimensions");
        t.n_elems = 1;
        for (uint32_t d = 0; d < n_dims; ++d) {
            uint64_t ne = r.read<uint64_t>();
            if (ne == 0 || ne > (uint64_t{1} << 32) || t.n_elems > (uint64_t{1} << 40) / ne)
                corrupt("GGUF: tensor '" + t.name + "' has an absurd shape");
            t.ne.push_back(ne);
            t.n_elems *= ne;
        }
        t.type = r.read<uint32_t>();
        t.offset = r.read<uint64_t>();
        if (!by_name.emplace(t.name, k).second) corrupt("GGUF: duplicate tensor '" + t.name + "'");
    }

    uint64_t alignment = static_cast<uint64_t>(md.get_int("general.alignment", 32));
    if (alignment == 0 || (alignment & (alignment - 1)) != 0) corrupt("GGUF: general.alignment is not a power of two");
    if (r.offset() > UINT64_MAX - alignment) corrupt("GGUF: bad alignment");
    uint64_t data_start = (r.offset() + alignment - 1) / alignment * alignment;
    if (data_start > file->size()) corrupt("GGUF: truncated before the tensor data");
    const uint64_t data_size = file->size() - data_start;

    ModelSource out;
    out.format = "gguf";
    out.label = "GGUF";
    out.config = read_config(md);
    out.vocab = read_vocab(md);

    for (TensorRecord& t : records) {
        SourceTensor st;
        st.name = t.name;
        st.dtype = t.type;
        st.dtype_name = ggml_type_name(t.type);
        for (size_t d = t.ne.size(); d-- > 0;) st.shape.push_back(static_cast<int64_t>(t.ne[d]));
        if (ggml_type_supported(t.type)) {
            size_t block = ggml_block_elems(static_cast<GgmlType>(t.type));
            if (t.ne[0] % block != 0) corrupt("GGUF: tensor '" + t.name + "' rows are not a whole number of blocks");
            t.n_bytes = ggml_row_bytes(static_cast<GgmlType>(t.type), static_cast<size_t>(t.ne[0])) * (t.n_elems / t.ne[0]);
            if (t.offset % alignment != 0)
                corrupt("GGUF: tensor '" + t.name + "' offset " + std::to_string(t.offset) +
                        " is not a multiple of the alignment " + std::to_string(alignment));
            if (t.offset > data_size || t.n_bytes > data_size - t.offset)
                corrupt("GGUF: tensor '" + t.name + "' lies past the end of the file (truncated?)");
            st.data = file->data() + data_start + t.offset;
            st.n_bytes = static_cast<size_t>(t.n_bytes);
        }
        TensorInfo info;
        info.name = t.name;
        info.dtype = st.dtype_name;
        info.shape = st.shape;
        info.offset = data_start + t.offset;
        info.n_bytes = t.n_bytes;
        out.infos.push_back(std::move(info));
        out.tensors.push_back(std::move(st));
    }

    // The token embedding fixes n_vocab when the tokenizer and file disagree;
    // no output.weight means the head is tied to it.
    ModelConfig& c = out.config;
    if (c.n_vocab == 0) c.n_vocab = static_cast<int>(out.vocab.tokens.size());
    // Blocks beyond block_count mean the metadata and tensors disagree.
    for (const TensorRecord& t : records) {
        if (t.name.rfind("blk.", 0) != 0) continue;
        const long layer = std::strtol(t.name.c_str() + 4, nullptr, 10);
        if (layer < 0 || layer >= c.n_layer)
            corrupt("GGUF: tensor '" + t.name + "' is beyond block_count " + std::to_string(c.n_layer));
    }
    auto te = by_name.find("token_embd.weight");
    if (te == by_name.end()) corrupt("GGUF: missing tensor 'token_embd.weight'");
    if (records[te->second].ne.size() == 2)
        c.n_vocab = checked_dim(static_cast<int64_t>(records[te->second].ne[1]), "vocabulary size");
    c.tied_embeddings = by_name.count("output.weight") == 0;
    out.owners.push_back(std::move(file));
    return out;
}

}  // namespace starkv
