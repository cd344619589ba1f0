"""Generation: golden text, the C CLI, iterator and callback forms, stopping."""
import gc
import subprocess
import threading

import pytest

import starkv
from conftest import CLI, MODEL_PATH, golden_text


def test_greedy_from_bos_matches_golden(model, ctx):
    pieces = []
    r = ctx.generate([model.bos_token], max_tokens=256, stop_at_eos=False, temperature=0,
                     on_piece=lambda piece, token: pieces.append(piece))
    assert (r.n_prompt_tokens, r.n_generated, r.stop) == (1, 256, "max_tokens")
    assert "".join(pieces) == golden_text()
    # the iterator form streams the same text
    ctx.reset()
    with ctx.generate([model.bos_token], max_tokens=256, stop_at_eos=False, temperature=0) as gen:
        assert "".join(gen) == golden_text()
    assert gen.result.n_generated == 256


@pytest.mark.parametrize("prompt", ["Once upon a time", "The cat", "Lily and Tom went to the park"])
def test_greedy_matches_c_cli(model, prompt):
    assert CLI.is_file(), f"missing CLI {CLI}"
    out = subprocess.run([str(CLI), "run", "--model", str(MODEL_PATH), "--prompt", prompt, "-n", "50",
                          "--temp", "0"], check=True, capture_output=True).stdout.decode("utf-8")
    with model.context() as ctx:
        text = ctx.complete(prompt, max_tokens=50, temperature=0)
    assert out.rstrip("\n") == (prompt + text).rstrip("\n")


def test_default_sampler_is_seeded(model):
    def run(seed):
        with model.context(seed=seed) as c:
            return c.complete("Once upon a time", max_tokens=40)
    assert run(7) == run(7)
    texts = {run(s) for s in range(1, 6)}
    assert len(texts) > 1


def test_explicit_sampler(model, ctx):
    with starkv.Sampler(temperature=0.9, top_k=20, seed=42) as s:
        a = ctx.complete("Once upon a time", max_tokens=40, sampler=s)
        ctx.reset()
        s.reset()
        b = ctx.complete("Once upon a time", max_tokens=40, sampler=s)
    assert a == b
    with pytest.raises(TypeError):
        ctx.generate("x", sampler=starkv.Sampler(), temperature=0)


def test_callback_false_stops(model, ctx):
    seen = []

    def cb(piece, token):
        seen.append(token)
        return len(seen) < 5

    r = ctx.generate("Once upon a time", max_tokens=100, temperature=0, on_piece=cb)
    assert r.stop == "callback"
    assert len(seen) == 5


def test_callback_exception_is_reraised(model, ctx):
    class Boom(RuntimeError):
        pass

    calls = []

    def cb(piece, token):
        calls.append(piece)
        if len(calls) == 3:
            raise Boom("from the callback")
        return True

    with pytest.raises(Boom, match="from the callback"):
        ctx.generate("Once upon a time", max_tokens=100, temperature=0, on_piece=cb)
    assert len(calls) == 3  # not called again after raising
    # the context is intact: continue generating from where it stopped
    n = ctx.n_past
    assert n > 0
    more = ctx.complete(None, max_tokens=5, temperature=0)
    assert ctx.n_past > n and isinstance(more, str)


def test_callback_keyboard_interrupt_like(model, ctx):
    def cb(piece, token):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ctx.generate("Once", max_tokens=10, on_piece=cb)


def test_iterator_break_stops_and_releases_context(model, ctx):
    gen = ctx.generate("Once upon a time", max_tokens=200, temperature=0)
    pieces = []
    for piece in gen:
        pieces.append(piece)
        if len(pieces) == 4:
            break
    with pytest.raises(RuntimeError, match="in use"):
        ctx.eval([1])
    gen.close()
    assert gen.result.stop == "callback"
    assert gen.result.n_generated == 4
    # usable again, and the kv cache holds prompt + every emitted token (the 4th,
    # at which the callback stopped, included)
    assert ctx.n_past == gen.result.n_prompt_tokens + 4


def test_iterator_garbage_collected(model, ctx):
    gen = ctx.generate("Once upon a time", max_tokens=200)
    next(gen)
    del gen
    gc.collect()
    ctx.reset()  # not busy any more


def test_iterator_not_started_does_not_hold_context(model, ctx):
    gen = ctx.generate("Once upon a time", max_tokens=10)
    ctx.eval([model.bos_token])  # fine: nothing runs until next()
    gen.close()
    assert list(gen) == []


def test_iterator_error_raised_in_consumer(model):
    with model.context(n_ctx=8) as ctx:
        gen = ctx.generate(list(range(1, 20)), max_tokens=3)
        with pytest.raises(starkv.ContextFullError):
            next(gen)
        ctx.reset()  # released


def test_context_close_stops_iterator(model):
    ctx = model.context()
    gen = ctx.generate("Once upon a time", max_tokens=200)
    next(gen)
    ctx.close()
    assert gen.result is not None and gen.result.stop == "callback"
    with pytest.raises(StopIteration):
        next(gen)


def test_continuation_equals_one_shot(model):
    with model.context() as c:
        full = c.complete("Once upon a time", max_tokens=30, temperature=0)
    with model.context() as c:
        with starkv.Sampler(temperature=0) as s:
            a = c.complete("Once upon a time", max_tokens=10, sampler=s)
            b = c.complete(None, max_tokens=20, sampler=s)
    assert a + b == full


def test_result_fields(model, ctx):
    gen = ctx.generate("Once upon a time", max_tokens=20, temperature=0, stop_at_eos=False)
    text = gen.text()
    r = gen.result
    assert text
    assert r.n_prompt_tokens == len(model.tokenize("Once upon a time"))
    assert r.n_generated == 20 and r.stop == "max_tokens"
    assert r.decode_seconds > 0 and r.tokens_per_second > 0


def test_contexts_in_threads(model):
    expected = None
    with model.context() as c:
        expected = c.complete("Once upon a time", max_tokens=40, temperature=0)
    results, errors = [], []

    def worker():
        try:
            with model.context(n_threads=1) as c:
                for _ in range(3):
                    c.reset()
                    results.append("".join(c.generate("Once upon a time", max_tokens=40, temperature=0)))
        except BaseException as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results == [expected] * 12


def test_cancel_from_the_piece_callback_keeps_the_emitted_tokens(model):
    with model.context(n_ctx=2048, n_threads=1) as ctx:
        prompt = model.tokenize("Once upon a time", add_bos=True)
        seen = []

        def on_piece(piece, token):
            seen.append(piece)
            if len(seen) == 5:
                ctx.cancel()  # from the same thread here; the flag is what another thread would set
            return True

        with pytest.raises(starkv.CancelledError):
            ctx.generate(prompt, max_tokens=1000, stop_at_eos=False, temperature=0, on_piece=on_piece)
        assert ctx.n_past == len(prompt) + 5  # every emitted token is cached
        # The request is cleared by the next call, which continues the same greedy text.
        rest = ctx.generate(None, max_tokens=20, stop_at_eos=False, temperature=0,
                            on_piece=lambda piece, token: seen.append(piece))
        assert rest.n_generated == 20
        with model.context(n_threads=1) as ref:
            assert "".join(seen) == ref.complete(prompt, max_tokens=25, stop_at_eos=False, temperature=0)


def test_cancel_from_another_thread_stops_a_generation(model):
    with model.context(n_ctx=2048, n_threads=1) as ctx:
        started = threading.Event()

        def on_piece(piece, token):
            started.set()
            return True

        canceller = threading.Thread(target=lambda: (started.wait(10), ctx.cancel()))
        canceller.start()
        with pytest.raises(starkv.CancelledError):
            ctx.generate([model.bos_token], max_tokens=2040, stop_at_eos=False, temperature=0, on_piece=on_piece)
        canceller.join()
        assert 1 < ctx.n_past < 2041


def test_kv_stats_report_the_uncompressed_bytes(ctx):
    s = ctx.kv_stats()
    assert s.bytes_per_token == s.bytes_per_token_uncompressed > 0  # a plain GGUF
    assert s.device_bytes == 0
