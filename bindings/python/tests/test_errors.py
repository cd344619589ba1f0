"""Errors surface as exceptions carrying the C status."""
import pickle

import numpy as np
import pytest

import starkv
from conftest import MODEL_PATH


def test_missing_file_is_io_error(tmp_path):
    with pytest.raises(starkv.StarkvIOError) as ei:
        starkv.Model(tmp_path / "nope.gguf")
    e = ei.value
    assert isinstance(e, starkv.StarkvError) and isinstance(e, OSError)
    assert e.status == starkv.Status.IO == 2
    assert "nope.gguf" in e.message
    assert "STARKV_ERR_IO" in str(e)


def test_corrupt_file(tmp_path):
    bad = tmp_path / "bad.gguf"
    # a valid header that announces more tensors and keys than the file can hold
    bad.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + (2**40).to_bytes(8, "little") * 2 + b"\0" * 32)
    with pytest.raises(starkv.CorruptError) as ei:
        starkv.Model(bad)
    assert ei.value.status == starkv.Status.CORRUPT


def test_truncated_file(tmp_path):
    data = MODEL_PATH.read_bytes()
    bad = tmp_path / "truncated.gguf"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(starkv.StarkvError) as ei:
        starkv.Model(bad)
    assert ei.value.status in (starkv.Status.CORRUPT, starkv.Status.IO)


def test_context_overflow(model):
    with model.context(n_ctx=16) as ctx:
        with pytest.raises(starkv.ContextFullError) as ei:
            ctx.eval(list(range(1, 40)))
        assert ei.value.status == starkv.Status.CONTEXT_FULL
        assert ctx.n_past == 0  # nothing changed
        ctx.eval([model.bos_token])
        with pytest.raises(starkv.ContextFullError):
            ctx.generate(list(range(1, 40)), max_tokens=4, on_piece=lambda p, t: True)
        with pytest.raises(starkv.ContextFullError):
            list(ctx.generate(list(range(1, 40)), max_tokens=4))
        # the context still works
        ctx.reset()
        r = ctx.generate([model.bos_token], max_tokens=100, temperature=0, stop_at_eos=False,
                         on_piece=lambda p, t: None)
        assert r.stop == "context_full"


def test_invalid_arguments(model, ctx):
    with pytest.raises(starkv.InvalidArgumentError) as ei:
        ctx.eval([100000])
    assert isinstance(ei.value, ValueError)
    assert ei.value.status == starkv.Status.INVALID_ARGUMENT
    with pytest.raises(starkv.InvalidArgumentError):
        ctx.score([1])  # needs 2 tokens
    with pytest.raises(starkv.InvalidArgumentError):
        ctx.rewind(10)
    with pytest.raises(starkv.InvalidArgumentError):
        model.token_to_piece(-5)
    with pytest.raises(TypeError):
        ctx.eval(np.array([1.5, 2.5]))


def test_closed_handles_raise(model):
    ctx = model.context(n_ctx=32)
    ctx.close()
    with pytest.raises(ValueError, match="closed"):
        ctx.eval([1])
    with pytest.raises(ValueError, match="closed"):
        _ = ctx.n_past
    s = starkv.Sampler()
    s.close()
    with pytest.raises(ValueError):
        s.accept(1)


def test_progress_exception_propagates():
    class Boom(Exception):
        pass

    def progress(p):
        raise Boom("stop loading")

    with pytest.raises(Boom):
        starkv.Model(MODEL_PATH, progress=progress)


def test_progress_false_cancels():
    with pytest.raises(starkv.CancelledError) as ei:
        starkv.Model(MODEL_PATH, progress=lambda p: False)
    assert ei.value.status == starkv.Status.CANCELLED


def test_error_pickles():
    e = starkv._errors.make_error(6, "too long")
    assert type(e) is starkv.ContextFullError
    e2 = pickle.loads(pickle.dumps(e))
    assert type(e2) is starkv.ContextFullError and e2.status == 6 and e2.message == "too long"
