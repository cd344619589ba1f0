// Test-only reader of the tokenizer metadata of a GGUF file, so the
// tokenizer tests do not depend on the model loader. Minimal on purpose:
// it trusts the file (the loader's own tests cover corrupt files).
#pragma once

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include "test_paths.h"
#include "tokenizer/vocab.h"

namespace starkv_test {

inline starkv::Vocab read_gguf_vocab(const std::string& path) {
    const std::string data = read_file(path);
    size_t pos = 0;
    auto need = [&](size_t n) {
        if (n > data.size() - pos) throw std::runtime_error("gguf_test_vocab: truncated");
    };
    auto u32 = [&] { need(4); uint32_t v; std::memcpy(&v, data.data() + pos, 4); pos += 4; return v; };
    auto u64 = [&] { need(8); uint64_t v; std::memcpy(&v, data.data() + pos, 8); pos += 8; return v; };
    auto str = [&] { const uint64_t n = u64(); need(n); std::string s = data.substr(pos, n); pos += n; return s; };
    static const size_t scalar_size[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

    if (data.compare(0, 4, "GGUF") != 0) throw std::runtime_error("gguf_test_vocab: not GGUF");
    pos = 4;
    u32();
    u64();
    const uint64_t n_kv = u64();
    starkv::Vocab v;
    std::string model;
    auto as_i64 = [&](uint32_t type) -> int64_t {
        need(scalar_size[type]);
        int64_t out = 0;
        switch (type) {
            case 4: { uint32_t x; std::memcpy(&x, data.data() + pos, 4); out = x == 0xFFFFFFFFu ? -1 : x; break; }
            case 5: { int32_t x; std::memcpy(&x, data.data() + pos, 4); out = x; break; }
            case 7: out = data[pos] != 0; break;
            default: throw std::runtime_error("gguf_test_vocab: unexpected scalar type");
        }
        pos += scalar_size[type];
        return out;
    };
    for (uint64_t k = 0; k < n_kv; ++k) {
        const std::string key = str();
        const uint32_t type = u32();
        if (type == 8) {
            const std::string s = str();
            if (key == "tokenizer.ggml.model") model = s;
            if (key == "tokenizer.ggml.pre") v.pre = s;
        } else if (type == 9) {
            const uint32_t et = u32();
            const uint64_t n = u64();
            for (uint64_t i = 0; i < n; ++i) {
                if (et == 8) {
                    std::string s = str();
                    if (key == "tokenizer.ggml.tokens") v.tokens.push_back(std::move(s));
                    if (key == "tokenizer.ggml.merges") v.merges.push_back(std::move(s));
                } else if (et < 13 && et != 9) {
                    need(scalar_size[et]);
                    if (key == "tokenizer.ggml.scores" && et == 6) {
                        float f; std::memcpy(&f, data.data() + pos, 4); v.scores.push_back(f);
                    } else if (key == "tokenizer.ggml.token_type" && et == 5) {
                        int32_t t; std::memcpy(&t, data.data() + pos, 4);
                        v.types.push_back(static_cast<starkv::TokenType>(t));
                    }
                    pos += scalar_size[et];
                } else {
                    throw std::runtime_error("gguf_test_vocab: nested arrays");
                }
            }
        } else if (type < 13) {
            if (key == "tokenizer.ggml.bos_token_id") v.bos = static_cast<int32_t>(as_i64(type));
            else if (key == "tokenizer.ggml.eos_token_id") v.eos = static_cast<int32_t>(as_i64(type));
            else if (key == "tokenizer.ggml.unknown_token_id") v.unk = static_cast<int32_t>(as_i64(type));
            else if (key == "tokenizer.ggml.padding_token_id") v.pad = static_cast<int32_t>(as_i64(type));
            else if (key == "tokenizer.ggml.add_bos_token") v.add_bos = as_i64(type) != 0;
            else if (key == "tokenizer.ggml.add_space_prefix") v.add_space_prefix = as_i64(type) != 0;
            else { need(scalar_size[type]); pos += scalar_size[type]; }
        } else {
            throw std::runtime_error("gguf_test_vocab: unknown type");
        }
    }
    v.kind = model == "gpt2" ? starkv::TokenizerKind::Bpe : starkv::TokenizerKind::Spm;
    return v;
}

}  // namespace starkv_test
