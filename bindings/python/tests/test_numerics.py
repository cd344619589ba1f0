"""Logits as numpy arrays, scoring and perplexity."""
import math

import numpy as np
import pytest

import starkv
from conftest import SHARED


def test_logits_numpy_copy(model, ctx):
    tokens = model.tokenize("Once upon a time")
    ctx.eval(tokens)
    logits = ctx.logits()
    assert isinstance(logits, np.ndarray)
    assert logits.dtype == np.float32 and logits.shape == (512,)
    assert np.isfinite(logits).all()
    first = logits.copy()
    ctx.decode(int(np.argmax(logits)))
    assert np.array_equal(logits, first)  # a copy: not changed by the next eval
    assert not np.array_equal(ctx.logits(), first)


def test_all_logits_match_incremental(model, ctx):
    tokens = model.tokenize("Once upon a time, there was")
    ctx.eval(tokens, all_logits=True)
    full = ctx.all_logits()
    assert full.shape == (len(tokens), 512)
    ctx.reset()
    for i, t in enumerate(tokens):
        ctx.decode(t)
        np.testing.assert_allclose(ctx.logits(), full[i], rtol=1e-4, atol=1e-4)


def test_greedy_sampler_is_argmax(model, ctx):
    ctx.eval(model.tokenize("Once upon a time"))
    logits = ctx.logits()
    with starkv.Sampler(temperature=0) as s:
        assert s.sample(logits) == int(np.argmax(logits))
        assert s.sample(list(map(float, logits))) == int(np.argmax(logits))


def test_score_and_perplexity(model, ctx):
    tokens = model.tokenize("Once upon a time, there was a little girl named Lily.")
    nll, n = ctx.score(tokens)
    assert n == len(tokens) - 1
    ppl = ctx.perplexity(tokens)
    assert ppl == pytest.approx(math.exp(nll / n))
    assert ctx.perplexity("Once upon a time, there was a little girl named Lily.") == pytest.approx(ppl)
    # score = sum of -log softmax from the logits
    ctx.reset()
    ctx.eval(tokens, all_logits=True)
    lg = ctx.all_logits().astype(np.float64)
    logp = lg - lg.max(axis=1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
    ref = -sum(logp[i - 1, tokens[i]] for i in range(1, len(tokens)))
    assert nll == pytest.approx(ref, rel=1e-4)


def test_perplexity_in_domain(model):
    text = (SHARED / "data" / "tinystories_val.txt").read_text(encoding="utf-8")
    docs = [d.strip() for d in text.split("\n\n") if d.strip()][:20]
    nll, n = 0.0, 0
    with model.context(n_ctx=512) as ctx:
        for d in docs:
            a, b = ctx.score(model.tokenize(d)[:512])
            nll, n = nll + a, n + b
    assert 3.0 < math.exp(nll / n) < 7.0


def test_kv_stats(model, ctx):
    ctx.eval(model.tokenize("Once upon a time"))
    st = ctx.kv_stats()
    assert st.n_tokens == ctx.n_past == 5
    assert st.n_ctx == ctx.n_ctx == 512
    assert st.bytes_per_token == 5 * 2 * 4 * 8 * 4  # layers * (k,v) * kv heads * head_dim * fp32
    assert st.bytes_in_use == 5 * st.bytes_per_token
    assert st.bytes_per_token_uncompressed == st.bytes_per_token  # a plain model: no STAR-KV saving
    ctx.rewind(2)
    assert ctx.n_past == 2
