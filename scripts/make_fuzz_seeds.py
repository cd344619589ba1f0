#!/usr/bin/env python3
"""Writes the seed corpora of the libFuzzer targets, one folder per target
under tests/fuzz/corpus/ (all small: the whole corpus stays well under 200 KB):
  fuzz_model_load/tiny.gguf   a complete, loadable llama GGUF of a few KB (F32,
                              F16 and Q8_0 tensors, an SPM vocabulary with a
                              byte token); the .skv bundle seeds beside it were
                              packed from it with `starkv pack` (levels 0 and 3)
  fuzz_safetensors/*          small .safetensors files (F32/F16/BF16/I64)
  fuzz_hf_dir/*               a tiny Hugging Face checkpoint: config.json,
                              tokenizer.json, model.safetensors[, tokenizer_config.json]
                              joined by "\n--starkv-file--\n"
  fuzz_tokenizer_json/*       byte-level BPE and SPM-style tokenizer.json files
  fuzz_tokenize_spm/*, fuzz_tokenize_bpe/*   flag byte + text samples
  fuzz_kv_state/*             saved KV states written from docs/kv-pool.md alone
                              (mode byte 1: the target recomputes the XXH3
                              checksum, the zstd frame holds raw blocks) and raw
                              payloads (mode byte 2); valid_* must restore
Python 3 stdlib only."""
import os
import random
import json
import struct
import sys

N_VOCAB, N_EMBD, N_FF, N_HEAD, N_HEAD_KV, N_LAYER = 8, 8, 32, 2, 1, 1


def s(x):
    b = x.encode()
    return struct.pack("<Q", len(b)) + b


def kv(key, t, payload):
    return s(key) + struct.pack("<I", t) + payload


def f16(x):
    return struct.pack("<e", x)


def main(out):
    rng = random.Random(5)
    tokens = ["<unk>", "<s>", "</s>", "<0x0A>", "\u2581a", "\u2581b", "a", "b"]
    types = [2, 3, 3, 6, 1, 1, 1, 1]
    md = [
        kv("general.architecture", 8, s("llama")),
        kv("general.name", 8, s("tiny")),
        kv("llama.embedding_length", 4, struct.pack("<I", N_EMBD)),
        kv("llama.feed_forward_length", 4, struct.pack("<I", N_FF)),
        kv("llama.block_count", 4, struct.pack("<I", N_LAYER)),
        kv("llama.attention.head_count", 4, struct.pack("<I", N_HEAD)),
        kv("llama.attention.head_count_kv", 4, struct.pack("<I", N_HEAD_KV)),
        kv("llama.context_length", 4, struct.pack("<I", 64)),
        kv("llama.attention.layer_norm_rms_epsilon", 6, struct.pack("<f", 1e-5)),
        kv("tokenizer.ggml.model", 8, s("llama")),
        kv("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, len(tokens)) + b"".join(s(t) for t in tokens)),
        kv("tokenizer.ggml.scores", 9, struct.pack("<IQ", 6, len(tokens)) + b"".join(struct.pack("<f", -i) for i in range(len(tokens)))),
        kv("tokenizer.ggml.token_type", 9, struct.pack("<IQ", 5, len(tokens)) + b"".join(struct.pack("<i", t) for t in types)),
    ]
    hd = N_EMBD // N_HEAD
    shapes = [("token_embd.weight", (N_VOCAB, N_EMBD), 0), ("output_norm.weight", (N_EMBD,), 0)]
    for l in range(N_LAYER):
        b = f"blk.{l}."
        shapes += [(b + "attn_norm.weight", (N_EMBD,), 0), (b + "attn_q.weight", (N_HEAD * hd, N_EMBD), 1),
                   (b + "attn_k.weight", (N_HEAD_KV * hd, N_EMBD), 1), (b + "attn_v.weight", (N_HEAD_KV * hd, N_EMBD), 0),
                   (b + "attn_output.weight", (N_EMBD, N_HEAD * hd), 1), (b + "ffn_norm.weight", (N_EMBD,), 0),
                   (b + "ffn_gate.weight", (N_FF, N_EMBD), 0), (b + "ffn_up.weight", (N_FF, N_EMBD), 1),
                   (b + "ffn_down.weight", (N_EMBD, N_FF), 8)]
    infos, data = b"", b""
    for name, shape, typ in shapes:
        n = 1
        for d in shape:
            n *= d
        if typ == 0:
            blob = b"".join(struct.pack("<f", rng.uniform(-1, 1)) for _ in range(n))
        elif typ == 1:
            blob = b"".join(f16(rng.uniform(-1, 1)) for _ in range(n))
        else:  # Q8_0: f16 scale + 32 int8 per block
            blob = b"".join(f16(0.01) + bytes(rng.randrange(256) for _ in range(32)) for _ in range(n // 32))
        while len(data) % 32:
            data += b"\0"
        ne = list(reversed(shape))
        infos += s(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d) for d in ne)
        infos += struct.pack("<IQ", typ, len(data))
        data += blob
    head = b"GGUF" + struct.pack("<IQQ", 3, len(shapes), len(md)) + b"".join(md) + infos
    while len(head) % 32:
        head += b"\0"
    with open(out, "wb") as f:
        f.write(head + data)


SEP = b"\n--starkv-file--\n"


def byte_token(b):
    direct = lambda x: (0x21 <= x <= 0x7E) or (0xA1 <= x <= 0xAC) or (0xAE <= x <= 0xFF)
    cp = b
    if not direct(b):
        cp = 256 + sum(1 for x in range(b) if not direct(x))
    return chr(cp)


def safetensors(tensors):
    """tensors: [(name, dtype, shape, bytes)] -> file bytes."""
    header, data = {}, b""
    for name, dtype, shape, blob in tensors:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [len(data), len(data) + len(blob)]}
        data += blob
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(h)) + h + data


def values(rng, dtype, n):
    if dtype == "F32":
        return b"".join(struct.pack("<f", rng.uniform(-1, 1)) for _ in range(n))
    if dtype == "F16":
        return b"".join(f16(rng.uniform(-1, 1)) for _ in range(n))
    if dtype == "BF16":
        return b"".join(struct.pack("<f", rng.uniform(-1, 1))[2:] for _ in range(n))
    return b"".join(struct.pack("<q", rng.randrange(100)) for _ in range(n))


def bpe_tokenizer_json(merges_words=(), llama3=False):
    vocab = {byte_token(b): b for b in range(256)}
    merges = []
    for w in merges_words:
        cur = byte_token(w[0])
        for c in w[1:]:
            nxt = byte_token(c)
            merges.append(cur + " " + nxt)
            cur += nxt
            vocab.setdefault(cur, len(vocab))
    n = len(vocab)
    added = [{"id": n, "content": "<s>", "special": True}, {"id": n + 1, "content": "</s>", "special": True}]
    pre = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}
    if llama3:
        pre = {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
             "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
    tok = {"version": "1.0", "added_tokens": added, "normalizer": None, "pre_tokenizer": pre,
           "post_processor": None, "decoder": {"type": "ByteLevel"},
           "model": {"type": "BPE", "vocab": vocab, "merges": merges}}
    return json.dumps(tok, ensure_ascii=False).encode(), n + 2


def hf_checkpoint(rng, tied=False, dtype_cycle=("F32", "F16", "BF16")):
    tok, n_vocab = bpe_tokenizer_json([b" the", b"ing"])
    n_embd, n_ff, n_layer, n_head, n_head_kv = 8, 16, 1, 2, 1
    hd = n_embd // n_head
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": n_embd,
              "intermediate_size": n_ff, "num_hidden_layers": n_layer, "num_attention_heads": n_head,
              "num_key_value_heads": n_head_kv, "max_position_embeddings": 64, "rms_norm_eps": 1e-5,
              "rope_theta": 10000.0, "hidden_act": "silu", "tie_word_embeddings": tied, "vocab_size": n_vocab,
              "bos_token_id": n_vocab - 2, "eos_token_id": n_vocab - 1}
    shapes = [("model.embed_tokens.weight", (n_vocab, n_embd)), ("model.norm.weight", (n_embd,))]
    if not tied:
        shapes.append(("lm_head.weight", (n_vocab, n_embd)))
    for l in range(n_layer):
        p = "model.layers.%d." % l
        shapes += [(p + "input_layernorm.weight", (n_embd,)), (p + "post_attention_layernorm.weight", (n_embd,)),
                   (p + "self_attn.q_proj.weight", (n_head * hd, n_embd)),
                   (p + "self_attn.k_proj.weight", (n_head_kv * hd, n_embd)),
                   (p + "self_attn.v_proj.weight", (n_head_kv * hd, n_embd)),
                   (p + "self_attn.o_proj.weight", (n_embd, n_head * hd)),
                   (p + "mlp.gate_proj.weight", (n_ff, n_embd)), (p + "mlp.up_proj.weight", (n_ff, n_embd)),
                   (p + "mlp.down_proj.weight", (n_embd, n_ff))]
    tensors = []
    for i, (name, shape) in enumerate(shapes):
        n = 1
        for d in shape:
            n *= d
        dt = dtype_cycle[i % len(dtype_cycle)]
        tensors.append((name, dt, shape, values(rng, dt, n)))
    cfg = json.dumps(config, indent=1).encode()
    tcfg = json.dumps({"add_bos_token": True, "bos_token": "<s>", "eos_token": "</s>"}).encode()
    return cfg, tok, safetensors(tensors), tcfg


def write(path, blob):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(blob)


def others(corpus):
    rng = random.Random(11)
    # safetensors
    st = os.path.join(corpus, "fuzz_safetensors")
    write(os.path.join(st, "mixed.safetensors"), safetensors(
        [("a", "F32", (2, 3), values(rng, "F32", 6)), ("b", "F16", (4,), values(rng, "F16", 4)),
         ("c", "BF16", (2, 2), values(rng, "BF16", 4)), ("d", "I64", (3,), values(rng, "I64", 3))]))
    write(os.path.join(st, "empty.safetensors"), safetensors([]))
    write(os.path.join(st, "scalar.safetensors"), safetensors([("s", "F32", (), values(rng, "F32", 1))]))
    # Hugging Face directories
    hf = os.path.join(corpus, "fuzz_hf_dir")
    cfg, tok, model, tcfg = hf_checkpoint(rng)
    write(os.path.join(hf, "tiny_untied"), SEP.join([cfg, tok, model, tcfg]))
    cfg, tok, model, tcfg = hf_checkpoint(rng, tied=True, dtype_cycle=("BF16",))
    write(os.path.join(hf, "tiny_tied_bf16"), SEP.join([cfg, tok, model]))
    # tokenizer.json
    tj = os.path.join(corpus, "fuzz_tokenizer_json")
    words = [b" the", b" and", b"ing", b" of", b"Hello", b" world", b"123"]
    write(os.path.join(tj, "bpe_gpt2.json"), bpe_tokenizer_json(words)[0] + SEP + tcfg)
    write(os.path.join(tj, "bpe_llama3.json"), bpe_tokenizer_json(words, llama3=True)[0])
    spm_vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        spm_vocab["<0x%02X>" % b] = len(spm_vocab)
    for t in ["\u2581", "\u2581t", "\u2581th", "\u2581the", "h", "e", "t", "o", "\u2581o", "\u2581of"]:
        spm_vocab.setdefault(t, len(spm_vocab))
    spm = {"version": "1.0", "added_tokens": [{"id": 0, "content": "<unk>", "special": True},
                                              {"id": 1, "content": "<s>", "special": True},
                                              {"id": 2, "content": "</s>", "special": True}],
           "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"},
                                                              {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
           "pre_tokenizer": None, "decoder": {"type": "Sequence", "decoders": [{"type": "ByteFallback"}]},
           "model": {"type": "BPE", "vocab": spm_vocab, "merges": ["\u2581 t", "\u2581t h", "\u2581th e", "\u2581 o", "\u2581o f"],
                     "byte_fallback": True, "unk_token": "<unk>"}}
    write(os.path.join(tj, "spm_style.json"), json.dumps(spm, ensure_ascii=False).encode())
    # tokenizer inputs: flag byte + text
    texts = [b"Once upon a time, there was a little girl named Lily.", b"Hello world 12345 caf\xc3\xa9 \xe4\xb8\xad\xe6\x96\x87",
             b"  leading spaces\n\nnew\tlines <s> and </s> specials", b"\xff\xfe invalid \xc3 utf8 \xe2\x82",
             b"<|begin_of_text|>The <tool> said: don't, I'll, we've 1234567"]
    for name in ("fuzz_tokenize_spm", "fuzz_tokenize_bpe"):
        for i, t in enumerate(texts):
            write(os.path.join(corpus, name, "text%d" % i), bytes([i * 7 % 64]) + t)


# The layout and bundle hash of tests/fuzz/kv_state_input.h.
KV_ROW_BYTES = [8, 4, 2, 0, 6, 3, 1, 0]
KV_BUNDLE = 0x5EEDB0D1E5


def kv_payload(rng, seqs):
    """seqs: [(id, tokens, parent record or -1, n_shared)] -> raw payload."""
    out = b""
    for sid, toks, parent, shared in seqs:
        out += struct.pack("<iIiI", sid, len(toks), parent, shared)
        out += b"".join(struct.pack("<i", t) for t in toks)
        for rb in KV_ROW_BYTES:  # stream-major rows of the positions it does not share
            out += bytes(rng.randrange(256) for _ in range(rb * (len(toks) - shared)))
    return out


def zstd_raw_frame(data):
    """A zstd frame of raw (stored) blocks with an 8-byte content size."""
    frame = struct.pack("<IB", 0xFD2FB528, 0xE0) + struct.pack("<Q", len(data))
    chunks = [data[i:i + 65536] for i in range(0, len(data), 65536)] or [b""]
    for i, c in enumerate(chunks):
        last = 1 if i == len(chunks) - 1 else 0
        frame += struct.pack("<I", last | (len(c) << 3))[:3] + c
    return frame


def kv_container(n_seq, payload):
    frame = zstd_raw_frame(payload)
    head = b"SKVSTATE" + struct.pack("<IIQIIIIQQQ", 1, 0, KV_BUNDLE, 2, 2, n_seq, 0, len(payload), len(frame), 0)
    body = head + b"".join(struct.pack("<I", b) for b in KV_ROW_BYTES) + frame
    return body + b"\0" * 8  # checksum: recomputed by the target in mode 1


def kv_states(corpus):
    rng = random.Random(13)
    d = os.path.join(corpus, "fuzz_kv_state")
    one = [(0, [1, 2, 3, 4, 5], -1, 0)]
    forks = [(0, [1, 2, 3, 4, 5, 6], -1, 0), (3, [1, 2, 3, 4, 5, 6, 7, 8, 9], 0, 6), (5, [1, 2, 3, 9], 0, 3), (8, [], -1, 0)]
    write(os.path.join(d, "valid_one_sequence"), b"\x01" + kv_container(1, kv_payload(rng, one)))
    write(os.path.join(d, "valid_forks"), b"\x01" + kv_container(4, kv_payload(rng, forks)))
    write(os.path.join(d, "valid_empty"), b"\x01" + kv_container(0, b""))
    write(os.path.join(d, "valid_raw_forks"), b"\x02" + bytes([4]) + kv_payload(rng, forks))
    write(os.path.join(d, "raw_bad_parent"), b"\x02" + bytes([1]) + kv_payload(rng, [(0, [1], 0, 0)]))


if __name__ == "__main__":
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    corpus = os.path.join(root, "tests/fuzz/corpus")
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(corpus, "fuzz_model_load/tiny.gguf"))
    others(corpus)
    kv_states(corpus)
