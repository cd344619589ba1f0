"""Model loading, info, tokenizer."""
import dataclasses

import starkv
from conftest import MODEL_PATH


def test_version_matches_package():
    major, minor, patch = starkv.version()
    assert starkv.__version__ == f"{major}.{minor}.{patch}"


def test_info_is_a_dataclass(model):
    info = model.info
    assert dataclasses.is_dataclass(info)
    assert info.architecture == "llama"
    assert info.format == "gguf"
    assert (info.n_vocab, info.n_embd, info.n_layer, info.n_head, info.n_head_kv) == (512, 64, 5, 8, 4)
    assert info.head_dim == 8 and info.n_ff == 172
    assert info.bos_token == model.bos_token >= 0
    assert info.eos_token == model.eos_token >= 0
    assert info.n_params > 200_000
    assert abs(info.rope_theta - 10000.0) < 1e-3


def test_tensors(model):
    tensors = model.tensors()
    assert len(tensors) > 10
    emb = [t for t in tensors if t.name == "token_embd.weight"]
    assert len(emb) == 1
    assert emb[0].dtype == "F32"
    assert emb[0].shape[0] * emb[0].shape[1] == 512 * 64
    assert emb[0].n_bytes == 512 * 64 * 4


def test_tokenize_roundtrip(model):
    text = "Once upon a time, there was a little girl named Lily."
    tokens = model.tokenize(text)
    assert tokens[0] == model.bos_token
    assert all(isinstance(t, int) for t in tokens)
    assert model.tokenize(text, add_bos=False) == tokens[1:]
    assert model.detokenize(tokens) == text
    assert model.detokenize(tokens[1:]) == text


def test_tokenize_unicode_and_bytes(model):
    text = "Zoë saw a café 🐱"
    tokens = model.tokenize(text, add_bos=False)
    assert model.detokenize(tokens) == text
    assert model.tokenize(text.encode("utf-8"), add_bos=False) == tokens
    assert model.detokenize_bytes(tokens) == text.encode("utf-8")
    # the cat is spelled with byte-fallback tokens: each one alone is part of a character
    joined = b"".join(model.token_to_bytes(t) for t in tokens)
    assert joined.decode("utf-8").strip() == text


def test_token_to_piece(model):
    tokens = model.tokenize(" girl", add_bos=False)
    assert "".join(model.token_to_piece(t) for t in tokens).strip() == "girl"
    assert model.token_to_piece(model.bos_token) == ""
    assert model.token_to_piece(model.bos_token, render_special=True) != ""


def test_parse_special(model):
    assert model.tokenize("<s>", add_bos=False, parse_special=True) == [model.bos_token]
    assert model.bos_token not in model.tokenize("<s>", add_bos=False, parse_special=False)


def test_load_from_pathlike_and_progress():
    seen = []
    with starkv.Model.load(MODEL_PATH, progress=lambda p: seen.append(p)) as m:
        assert m.info.n_vocab == 512
    assert seen and all(0.0 <= p <= 1.0 for p in seen)
    assert m.closed
    m.close()  # idempotent


def test_repr(model):
    assert "starkv.Model" in repr(model)
