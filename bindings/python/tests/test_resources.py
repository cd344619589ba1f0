"""Native resources are freed: no growth under repeated create/free."""
import gc
import os

import starkv
from conftest import MODEL_PATH


def rss_kib() -> int:
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cycle(model, explicit: bool) -> None:
    ctx = model.context(n_ctx=256, n_threads=1)
    s = starkv.Sampler(temperature=0)
    gen = ctx.generate("Once upon a time", max_tokens=3, sampler=s)
    next(gen)
    if explicit:
        gen.close()
        s.close()
        ctx.close()


def test_context_create_free_cycles(model):
    for i in range(20):
        cycle(model, i % 2 == 0)
    gc.collect()
    before = rss_kib()
    for i in range(200):
        cycle(model, i % 2 == 0)
    gc.collect()
    after = rss_kib()
    assert after - before < 8 * 1024, (before, after)


def test_model_load_free_cycles():
    for _ in range(5):
        starkv.Model(MODEL_PATH).close()
    gc.collect()
    before = rss_kib()
    for i in range(200):
        m = starkv.Model(MODEL_PATH)
        c = m.context(n_ctx=64, n_threads=1)
        c.eval([1, 2, 3])
        if i % 2:
            m.close()  # closes c first
            assert c.closed
        else:
            del c, m  # garbage collection frees them
    gc.collect()
    after = rss_kib()
    assert after - before < 16 * 1024, (before, after)
