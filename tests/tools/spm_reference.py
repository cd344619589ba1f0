#!/usr/bin/env python3
"""Independent, deliberately naive SentencePiece-BPE reference encoder
(Python 3 stdlib only) used to generate tests/golden/tokenizer_stories260K.txt.

It follows llama2.c's `encode` loop (scan all adjacent pairs, merge the one
whose concatenation is a vocab token with the highest score, leftmost on
ties, repeat) with llama.cpp's conventions: a leading U+2581 prefix for
non-empty text, ' ' -> U+2581, characters split by the UTF-8 lead byte
(llama.cpp's unicode_len_utf8) except that a broken multi-byte sequence
becomes single bytes (so that invalid UTF-8 round-trips), only normal/user-defined/undefined tokens
are merge targets, and symbols without a token fall back to <0xAB> byte
tokens.

Regenerate (from the repository root):
    python3 tests/tools/spm_reference.py ../shared/models/stories260K.gguf \
        ../shared/data > tests/golden/tokenizer_stories260K.txt
"""
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gguf_meta  # noqa: E402

SPACE = "\u2581".encode("utf-8")
MERGEABLE = {0, 1, 4}  # undefined, normal, user-defined


def utf8_len(b):
    return (1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4)[b >> 4]


class Reference:
    def __init__(self, meta):
        self.tokens = [t.encode("utf-8", errors="surrogateescape")
                       for t in meta["tokenizer.ggml.tokens"]]
        self.scores = meta["tokenizer.ggml.scores"]
        types = meta["tokenizer.ggml.token_type"]
        self.ids = {}
        for i, t in enumerate(self.tokens):
            if types[i] in MERGEABLE and t not in self.ids:
                self.ids[t] = i
        self.byte_ids = {}
        for i, t in enumerate(self.tokens):
            if types[i] == 6:
                self.byte_ids.setdefault(int(t[3:5], 16), i)
        self.add_space_prefix = meta.get("tokenizer.ggml.add_space_prefix", True)

    def encode(self, text):
        if not text:
            return []
        if self.add_space_prefix:
            text = b" " + text
        text = text.replace(b" ", SPACE)
        syms = []
        i = 0
        while i < len(text):
            n = utf8_len(text[i])
            # A broken sequence (truncated, or a non-continuation byte
            # inside) is split into single bytes.
            if n > len(text) - i or any(b & 0xC0 != 0x80 for b in text[i + 1:i + n]):
                n = 1
            syms.append(text[i:i + n])
            i += n
        while True:
            best, best_score = None, None
            for k in range(len(syms) - 1):
                tid = self.ids.get(syms[k] + syms[k + 1])
                if tid is not None and (best is None or self.scores[tid] > best_score):
                    best, best_score = k, self.scores[tid]
            if best is None:
                break
            syms[best:best + 2] = [syms[best] + syms[best + 1]]
        out = []
        for s in syms:
            if s in self.ids:
                out.append(self.ids[s])
            else:
                out.extend(self.byte_ids[b] for b in s)
        return out


def cases(data_dir):
    fixed = [
        b"", b"a", b" ", b"  ", b"Hello world", b" leading space", b"  two leading",
        b"trailing ", b"Once upon a time", b"Once upon a time, there was a little girl named Lily.",
        b"a\nb\n\nc", b"tab\there", b"line\r\nbreak", b"x  y   z",
        "caf\u00e9 na\u00efve \u2014 \u201cquotes\u201d \u65e5\u672c\u8a9e \U0001F642".encode(),
        b"12345 3.14 1,000,000", b"<s> not special </s> <unk>", b"<0x41>",
        b"\x00\x01\x7f", b"\xff\xfe abc \xc3", b"\xe2\x96", b"\xe2\x96\x81", b"\x80\x80\x80",
        b"She said, \"Don't worry!\" and ran.", b"ALL CAPS TEXT", b"MiXeD cAsE wOrDs",
    ]
    for c in fixed:
        yield c
    def paragraphs(name, sep, count):
        with open(os.path.join(data_dir, name), "rb") as f:
            text = f.read()
        n = 0
        for p in text.split(sep):
            if p.strip() and len(p) <= 700:
                yield p
                n += 1
                if n == count:
                    return
    yield from paragraphs("tinystories_val.txt", b"\n\n", 60)
    yield from paragraphs("wiki.test.raw", b"\n", 40)
    yield from paragraphs("tinyshakespeare_input.txt", b"\n\n", 40)
    rng = random.Random(20240601)
    alphabet = [b"a", b"e", b" ", b"t", b"\n", "\u00e9".encode(), "\u4e2d".encode(),
                "\U0001F600".encode(), b"\xff", b"\x80", b"\xc3", b"\xe2\x82"]
    for _ in range(30):
        yield b"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40)))
    for _ in range(10):
        yield bytes(rng.randrange(256) for _ in range(rng.randint(1, 40)))


def main():
    model, data_dir = sys.argv[1], sys.argv[2]
    ref = Reference(gguf_meta.read_metadata(model))
    print("# Golden SPM tokenizations of stories260K.gguf's vocab, made by")
    print("# tests/tools/spm_reference.py (independent naive Python encoder).")
    print("# Format: <input bytes as hex>\\t<token ids, no BOS>. Empty input is '-'.")
    for text in cases(data_dir):
        ids = ref.encode(text)
        print("%s\t%s" % (text.hex() or "-", " ".join(map(str, ids))))


if __name__ == "__main__":
    main()
