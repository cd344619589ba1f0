#!/usr/bin/env python3
"""Writes tests/fuzz/corpus/tiny.gguf: a complete, loadable llama GGUF of a few
KB (F32, F16 and Q8_0 tensors, an SPM vocabulary with a byte token), the seed
the fuzzer mutates. scripts/fuzz.sh packs it into bundle seeds with
`starkv pack`. Python 3 stdlib only."""
import os
import random
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


if __name__ == "__main__":
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "tests/fuzz/corpus/tiny.gguf"))
