"""starkv: embeddable LLM inference, from Python.

A thin layer over the C ABI (``include/starkv/starkv.h``, mirrored one-to-one by
``starkv.capi``): every computation happens in the library; this module only
converts arguments, owns handles and raises exceptions.

    >>> import starkv
    >>> with starkv.Model("stories260K.gguf") as model, model.context() as ctx:
    ...     for piece in ctx.generate("Once upon a time", max_tokens=32, temperature=0):
    ...         print(piece, end="")

Threading: a :class:`Model` is immutable and may be shared by any number of
threads; a :class:`Context` or :class:`Sampler` is used by one thread at a time.
The GIL is released while the library computes.
"""
from __future__ import annotations

import dataclasses
import os
import math
import queue
import threading
import weakref
from typing import (Any, Callable, Iterable, Iterator, List, Optional, Sequence,
                    Tuple, Union, overload)

import numpy as np

from . import capi
from ._errors import (BufferTooSmallError, CancelledError, ContextFullError,
                      CorruptError, InternalError, InvalidArgumentError,
                      KVPoolFullError, OutOfMemoryError, Status, StarkvError,
                      StarkvIOError, UnsupportedError)

__all__ = [
    "Model", "Context", "Sampler", "ModelInfo", "TensorInfo", "KVStats",
    "GenerateResult", "Generation", "StopReason", "Status", "StarkvError",
    "InvalidArgumentError", "StarkvIOError", "CorruptError", "UnsupportedError",
    "OutOfMemoryError", "ContextFullError", "CancelledError", "BufferTooSmallError",
    "KVPoolFullError", "InternalError", "version", "set_log_callback", "__version__",
]

__version__: str = capi.starkv_version_string()

TokensLike = Union[Sequence[int], "np.ndarray"]
PieceCallback = Callable[[str, int], Optional[bool]]


def version() -> Tuple[int, int, int]:
    """Version of the loaded native library as (major, minor, patch)."""
    n = capi.starkv_version_number()
    return (n // 10000, n // 100 % 100, n % 100)


def set_log_callback(fn: Optional[Callable[[int, str], None]]) -> None:
    """Route the library's log messages to ``fn(level, message)`` (level is a
    ``starkv_log_level``: 0 debug .. 3 error), or discard them (None). Process-wide;
    ``fn`` may be called from any thread that calls into the library."""
    if fn is None:
        capi.py_set_log_callback(None)
    else:
        capi.py_set_log_callback(lambda level, msg: fn(level, msg.decode("utf-8", "replace")))


def _tokens_array(tokens: TokensLike) -> "np.ndarray":
    arr = np.asarray(tokens)
    if arr.ndim != 1:
        raise ValueError("tokens must be a 1-D sequence of token ids")
    if arr.size == 0:
        return np.zeros(0, dtype=np.int32)
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"token ids must be integers, not {arr.dtype}")
    if arr.min() < -(2**31) or arr.max() >= 2**31:
        raise InvalidArgumentError(Status.INVALID_ARGUMENT, "token id out of int32 range")
    return np.ascontiguousarray(arr, dtype=np.int32)


class StopReason:
    """Why generation stopped (``starkv_stop_reason``)."""

    MAX_TOKENS = capi.STARKV_STOP_MAX_TOKENS
    EOS = capi.STARKV_STOP_EOS
    CALLBACK = capi.STARKV_STOP_CALLBACK
    CONTEXT_FULL = capi.STARKV_STOP_CONTEXT_FULL
    NAMES = {0: "max_tokens", 1: "eos", 2: "callback", 3: "context_full"}


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """``starkv_model_info`` as attributes."""

    architecture: str
    name: str
    format: str
    n_vocab: int
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    n_ctx_train: int
    rope_theta: float
    rope_scaling: int
    rope_scaling_factor: float
    rms_norm_eps: float
    tied_embeddings: bool
    tokenizer: int
    bos_token: int
    eos_token: int
    unk_token: int
    pad_token: int
    n_params: int


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """One entry of the model file's tensor table (``starkv_tensor_info``)."""

    name: str
    dtype: str
    shape: Tuple[int, ...]
    offset: int
    n_bytes: int


@dataclasses.dataclass(frozen=True)
class KVStats:
    """``starkv_kv_stats``: KV-cache occupancy and bytes."""

    n_tokens: int
    n_ctx: int
    bytes_in_use: int
    bytes_reserved: int
    bytes_per_token: int
    bytes_per_token_uncompressed: int = 0  # the same model's cache without STAR-KV
    device_bytes: int = 0  # GPU memory of a GPU-backed context


@dataclasses.dataclass(frozen=True)
class GenerateResult:
    """``starkv_generate_result``: counts, stop reason and timings of one generation."""

    n_prompt_tokens: int
    n_generated: int
    stop_reason: int
    prompt_seconds: float
    decode_seconds: float

    @property
    def stop(self) -> str:
        """The stop reason as a word: max_tokens, eos, callback, context_full."""
        return StopReason.NAMES.get(self.stop_reason, str(self.stop_reason))

    @property
    def tokens_per_second(self) -> float:
        """Decode speed (generated tokens / decode seconds)."""
        return self.n_generated / self.decode_seconds if self.decode_seconds > 0 else math.inf


def _fields(obj: Any, cls: type) -> dict:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(cls)}


class Model:
    """A loaded model (GGUF file or Hugging Face directory). Immutable: share it
    across threads and contexts. Frees its native memory on :meth:`close`, at the
    end of a ``with`` block, or when garbage-collected; closing a model first
    closes the contexts created from it.

    :param path: a ``.gguf`` file or a Hugging Face model directory.
    :param progress: optional ``progress(fraction) -> bool|None``; returning False
        cancels the load (:class:`CancelledError`); an exception it raises is
        re-raised here.
    :raises StarkvIOError: missing or unreadable file.
    :raises CorruptError: a damaged file.
    :raises UnsupportedError: a model starkv does not run.
    """

    def __init__(self, path: Union[str, "os.PathLike[str]"],
                 progress: Optional[Callable[[float], Optional[bool]]] = None) -> None:
        self._handle = capi.py_model_load(os.fspath(path), progress)
        self._finalizer = weakref.finalize(self, capi.starkv_model_free, self._handle)
        self._contexts: "weakref.WeakSet[Context]" = weakref.WeakSet()
        raw = capi.starkv_model_info()
        capi.starkv_model_info_default(raw)
        capi.starkv_model_get_info(self._handle, raw)
        self._info = ModelInfo(**_fields(raw, ModelInfo))

    @classmethod
    def load(cls, path: Union[str, "os.PathLike[str]"],
             progress: Optional[Callable[[float], Optional[bool]]] = None) -> "Model":
        """Same as ``Model(path, progress)``."""
        return cls(path, progress)

    # -- lifetime ---------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def close(self) -> None:
        """Close every context of this model, then free the model. Idempotent."""
        for ctx in list(self._contexts):
            ctx.close()
        self._finalizer()

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _h(self) -> Any:
        if not self._finalizer.alive:
            raise ValueError("the model is closed")
        return self._handle

    # -- information --------------------------------------------------------------
    @property
    def info(self) -> ModelInfo:
        """Architecture, dimensions, tokenizer and special tokens."""
        return self._info

    @property
    def n_vocab(self) -> int:
        return self._info.n_vocab

    @property
    def bos_token(self) -> int:
        """BOS id, -1 when the model has none."""
        return self._info.bos_token

    @property
    def eos_token(self) -> int:
        return self._info.eos_token

    def tensors(self) -> List[TensorInfo]:
        """The file's tensor table."""
        h = self._h()
        out = []
        for i in range(capi.starkv_model_n_tensors(h)):
            t = capi.starkv_tensor_info()
            capi.starkv_tensor_info_default(t)
            capi.starkv_model_tensor(h, i, t)
            shape = tuple(capi.py_tensor_shape(t))
            out.append(TensorInfo(t.name, t.dtype, shape, t.offset, t.n_bytes))
        return out

    # -- tokenizer ------------------------------------------------------------------
    def tokenize(self, text: Union[str, bytes], add_bos: bool = True, parse_special: bool = False) -> List[int]:
        """Token ids of ``text`` (UTF-8). With ``parse_special``, text spelling a
        control token (``"<s>"``) becomes that token."""
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        return capi.py_tokenize(self._h(), data, add_bos, parse_special)

    def detokenize(self, tokens: TokensLike) -> str:
        """Text of a token sequence (control tokens dropped); inverse of
        :meth:`tokenize`. Invalid UTF-8 becomes U+FFFD."""
        return self.detokenize_bytes(tokens).decode("utf-8", "replace")

    def detokenize_bytes(self, tokens: TokensLike) -> bytes:
        """Like :meth:`detokenize`, as raw bytes."""
        return capi.py_detokenize(self._h(), _tokens_array(tokens))

    def token_to_piece(self, token: int, render_special: bool = False) -> str:
        """Text of one token as it reads inside text. A token that is part of a
        multi-byte character decodes to U+FFFD: use :meth:`token_to_bytes`."""
        return self.token_to_bytes(token, render_special).decode("utf-8", "replace")

    def token_to_bytes(self, token: int, render_special: bool = False) -> bytes:
        """Bytes of one token."""
        return capi.py_token_to_piece(self._h(), int(token), render_special)

    # -- contexts -------------------------------------------------------------------
    def context(self, n_ctx: int = 0, n_threads: int = 0, seed: Optional[int] = None) -> "Context":
        """A new :class:`Context` (KV cache) on this model."""
        return Context(self, n_ctx=n_ctx, n_threads=n_threads, seed=seed)

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self._info.n_params} params"
        return f"<starkv.Model {self._info.name or self._info.architecture!r} ({state})>"


class Sampler:
    """Token sampler (``starkv_sampler``): penalties, top-k, top-p, min-p,
    temperature, a seeded draw. ``temperature <= 0`` is greedy. Unset arguments
    keep the library's defaults. One thread at a time."""

    def __init__(self, temperature: Optional[float] = None, top_k: Optional[int] = None,
                 top_p: Optional[float] = None, min_p: Optional[float] = None,
                 repeat_penalty: Optional[float] = None, presence_penalty: Optional[float] = None,
                 frequency_penalty: Optional[float] = None, penalty_last_n: Optional[int] = None,
                 seed: Optional[int] = None) -> None:
        p = capi.starkv_sampler_params()
        capi.starkv_sampler_params_default(p)
        for name, value in (("temperature", temperature), ("top_k", top_k), ("top_p", top_p),
                            ("min_p", min_p), ("repeat_penalty", repeat_penalty),
                            ("presence_penalty", presence_penalty),
                            ("frequency_penalty", frequency_penalty),
                            ("penalty_last_n", penalty_last_n), ("seed", seed)):
            if value is not None:
                setattr(p, name, value)
        self._handle = capi.starkv_sampler_create(p)
        self._finalizer = weakref.finalize(self, capi.starkv_sampler_free, self._handle)

    def close(self) -> None:
        """Free the sampler. Idempotent."""
        self._finalizer()

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def __enter__(self) -> "Sampler":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _h(self) -> Any:
        if not self._finalizer.alive:
            raise ValueError("the sampler is closed")
        return self._handle

    def sample(self, logits: "np.ndarray") -> int:
        """Pick a token from a float32 logits vector (not modified, not recorded)."""
        arr = np.ascontiguousarray(logits, dtype=np.float32)
        return capi.starkv_sampler_sample(self._h(), arr)

    def accept(self, token: int) -> None:
        """Record a token of the sequence for the penalties."""
        capi.starkv_sampler_accept(self._h(), int(token))

    def reset(self) -> None:
        """Forget accepted tokens and restart the random stream from the seed."""
        capi.starkv_sampler_reset(self._h())


def _free_context(handle: Any, cancel_flag: Any) -> None:
    capi.starkv_context_free(handle)  # cancel_flag (its abort callback's data) dies after this


class Context:
    """An inference session on a :class:`Model`: KV cache, scratch and logits.
    Used by one thread at a time. Frees its native memory on :meth:`close`, at
    the end of a ``with`` block or when garbage-collected.

    :param n_ctx: tokens of KV cache (0: the model's training context).
    :param n_threads: compute threads (0: all hardware threads).
    :param seed: seed of the default sampler used by :meth:`generate` when no
        sampler or sampling argument is given.
    """

    def __init__(self, model: Model, n_ctx: int = 0, n_threads: int = 0, seed: Optional[int] = None) -> None:
        p = capi.starkv_context_params()
        capi.starkv_context_params_default(p)
        p.n_ctx = n_ctx
        p.n_threads = n_threads
        if seed is not None:
            p.seed = seed
        self._model = model  # keeps the model alive while the context is
        self._handle = capi.starkv_context_create(model._h(), p)
        try:
            self._cancel_flag = capi.py_cancel_flag_install(self._handle)
        except BaseException:
            capi.starkv_context_free(self._handle)
            raise
        # The flag outlives the context: the finalizer holds it until the free.
        self._finalizer = weakref.finalize(self, _free_context, self._handle, self._cancel_flag)
        self._busy: Optional[str] = None
        self._n_last_eval = 0
        model._contexts.add(self)

    # -- lifetime ---------------------------------------------------------------
    @property
    def model(self) -> Model:
        return self._model

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def close(self) -> None:
        """Free the context. Idempotent. A running :meth:`generate` iterator is
        stopped first."""
        gen = self._busy_gen() if self._busy else None
        if gen is not None:
            gen.close()
        self._finalizer()

    def __enter__(self) -> "Context":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _h(self) -> Any:
        if not self._finalizer.alive:
            raise ValueError("the context is closed")
        if self._busy:
            raise RuntimeError("the context is in use by a running generate() iterator; "
                               "exhaust or close it first")
        return self._handle

    def _busy_gen(self) -> Optional["Generation"]:
        ref = getattr(self, "_gen_ref", None)
        return ref() if ref is not None else None

    def cancel(self) -> None:
        """Stop the :meth:`eval`, :meth:`score` or :meth:`generate` running on this
        context in another thread: it raises :class:`CancelledError` (an eval
        leaves the context as it was; a generation keeps the tokens it emitted).
        Thread-safe. Each of those calls clears the request when it starts, so
        a cancel() with nothing running has no effect."""
        if self._finalizer.alive:
            capi.py_cancel_flag_set(self._cancel_flag, True)

    def _arm(self) -> None:
        capi.py_cancel_flag_set(self._cancel_flag, False)

    # -- state ------------------------------------------------------------------------
    @property
    def n_past(self) -> int:
        """Tokens held in the KV cache."""
        return capi.starkv_context_n_past(self._h())

    @property
    def n_ctx(self) -> int:
        """Capacity of the KV cache in tokens."""
        return capi.starkv_context_n_ctx(self._h())

    def reset(self) -> None:
        """Forget every token (and restart the default sampler)."""
        capi.starkv_context_reset(self._h())

    def rewind(self, n_past: int) -> None:
        """Forget every token at position >= n_past."""
        capi.starkv_context_rewind(self._h(), n_past)

    def kv_stats(self) -> KVStats:
        """KV-cache occupancy and bytes."""
        s = capi.starkv_kv_stats()
        capi.starkv_kv_stats_default(s)
        capi.starkv_context_kv_stats(self._h(), s)
        return KVStats(**_fields(s, KVStats))

    # -- evaluation -------------------------------------------------------------------
    def eval(self, tokens: TokensLike, all_logits: bool = False) -> None:
        """Run tokens after what the cache holds. Logits are kept for the last
        token, or for every token with ``all_logits``.

        :raises ContextFullError: they do not fit (nothing changed)."""
        arr = _tokens_array(tokens)
        h = self._h()
        self._arm()
        capi.starkv_context_eval(h, arr, all_logits)
        self._n_last_eval = arr.size if all_logits else 1

    def decode(self, token: int) -> None:
        """One decode step (eval of one token)."""
        capi.starkv_context_decode(self._h(), int(token))
        self._n_last_eval = 1

    def logits(self, i: int = -1) -> "np.ndarray":
        """Logits (float32, n_vocab) of the i-th token of the last eval (-1: the
        last). A copy: it stays valid after the next eval."""
        return capi.py_context_logits(self._h(), i, self._model.n_vocab)

    def all_logits(self) -> "np.ndarray":
        """Logits of every token of the last ``eval(..., all_logits=True)`` as an
        (n_tokens, n_vocab) float32 array (a copy)."""
        return np.stack([self.logits(i) for i in range(self._n_last_eval)])

    def score(self, tokens: TokensLike) -> Tuple[float, int]:
        """``starkv_context_score``: resets the context, evaluates the tokens and
        returns (sum of -log p(token_i | tokens before), number scored)."""
        h = self._h()
        self._arm()
        return tuple(capi.starkv_context_score(h, _tokens_array(tokens)))  # type: ignore[return-value]

    def perplexity(self, text_or_tokens: Union[str, TokensLike]) -> float:
        """Perplexity of a text (tokenized with BOS) or of token ids: exp(mean NLL).
        Resets the context. Needs at least 2 tokens."""
        tokens = (self._model.tokenize(text_or_tokens, add_bos=True)
                  if isinstance(text_or_tokens, (str, bytes)) else text_or_tokens)
        nll, n = self.score(tokens)
        return math.exp(nll / n)

    # -- generation --------------------------------------------------------------------
    def _prompt_tokens(self, prompt: Union[str, TokensLike, None], add_bos: Optional[bool]) -> "np.ndarray":
        if prompt is None:
            return np.zeros(0, dtype=np.int32)
        if isinstance(prompt, (str, bytes)):
            if add_bos is None:
                add_bos = self.n_past == 0
            return _tokens_array(self._model.tokenize(prompt, add_bos=add_bos))
        return _tokens_array(prompt)

    @staticmethod
    def _sampler_for(sampler: Optional[Sampler], sampling: dict) -> Tuple[Optional[Sampler], bool]:
        """The sampler to use and whether generate() owns (and closes) it."""
        sampling = {k: v for k, v in sampling.items() if v is not None}
        if sampler is not None and sampling:
            raise TypeError("pass either sampler= or sampling arguments, not both")
        if sampling:
            return Sampler(**sampling), True
        return sampler, False

    @overload
    def generate(self, prompt: Union[str, TokensLike, None] = ..., *, max_tokens: int = ...,
                 stop_at_eos: bool = ..., add_bos: Optional[bool] = ..., sampler: Optional[Sampler] = ...,
                 on_piece: None = ..., temperature: Optional[float] = ..., top_k: Optional[int] = ...,
                 top_p: Optional[float] = ..., min_p: Optional[float] = ...,
                 repeat_penalty: Optional[float] = ..., seed: Optional[int] = ...) -> "Generation": ...

    @overload
    def generate(self, prompt: Union[str, TokensLike, None] = ..., *, max_tokens: int = ...,
                 stop_at_eos: bool = ..., add_bos: Optional[bool] = ..., sampler: Optional[Sampler] = ...,
                 on_piece: PieceCallback, temperature: Optional[float] = ..., top_k: Optional[int] = ...,
                 top_p: Optional[float] = ..., min_p: Optional[float] = ...,
                 repeat_penalty: Optional[float] = ..., seed: Optional[int] = ...) -> GenerateResult: ...

    def generate(self, prompt: Union[str, TokensLike, None] = None, *, max_tokens: int = 128,
                 stop_at_eos: bool = True, add_bos: Optional[bool] = None, sampler: Optional[Sampler] = None,
                 on_piece: Optional[PieceCallback] = None, temperature: Optional[float] = None,
                 top_k: Optional[int] = None, top_p: Optional[float] = None, min_p: Optional[float] = None,
                 repeat_penalty: Optional[float] = None, seed: Optional[int] = None):
        """Evaluate ``prompt`` after what the context holds, then generate up to
        ``max_tokens`` tokens (``starkv_generate``).

        ``prompt``: text (tokenized with BOS when the context is empty, unless
        ``add_bos`` says otherwise), token ids, or None/"" to continue from the
        last logits. Sampling: a :class:`Sampler`, or sampling keyword arguments
        (a sampler made for this call), or neither (the context's default sampler,
        seeded by the context's seed).

        Without ``on_piece``: returns a :class:`Generation`, an iterator of text
        pieces (complete UTF-8). With ``on_piece(piece, token)``: calls it for each
        piece in this thread and returns the :class:`GenerateResult`; returning
        False stops generation; an exception it raises stops generation and is
        re-raised here once the library has returned.

        :raises ContextFullError: the prompt does not fit.
        """
        self._h()
        tokens = self._prompt_tokens(prompt, add_bos)
        smp, owned = self._sampler_for(sampler, dict(temperature=temperature, top_k=top_k, top_p=top_p,
                                                     min_p=min_p, repeat_penalty=repeat_penalty, seed=seed))
        if on_piece is None:
            return Generation(self, tokens, max_tokens, stop_at_eos, smp, owned)
        try:
            cb = lambda piece, token: on_piece(piece.decode("utf-8", "replace"), token)  # noqa: E731
            return self._run(tokens, max_tokens, stop_at_eos, smp, cb)
        finally:
            if owned and smp is not None:
                smp.close()

    def _run(self, tokens: "np.ndarray", max_tokens: int, stop_at_eos: bool, sampler: Optional[Sampler],
             cb: Optional[Callable[[bytes, int], Optional[bool]]], handle: Any = None) -> GenerateResult:
        res = capi.starkv_generate_result()
        capi.starkv_generate_result_default(res)
        self._arm()
        capi.py_generate(handle if handle is not None else self._h(),
                         sampler._h() if sampler is not None else None,
                         tokens, max_tokens, stop_at_eos, cb, res)
        return GenerateResult(**_fields(res, GenerateResult))

    def complete(self, prompt: Union[str, TokensLike, None] = None, **kwargs: Any) -> str:
        """``"".join(generate(prompt, **kwargs))``: the generated text."""
        return "".join(self.generate(prompt, **kwargs))

    def __repr__(self) -> str:
        if self.closed:
            return "<starkv.Context (closed)>"
        return f"<starkv.Context n_past={capi.starkv_context_n_past(self._handle)} " \
               f"n_ctx={capi.starkv_context_n_ctx(self._handle)}>"


_DONE = object()


class Generation(Iterator[str]):
    """Iterator of the text pieces of one :meth:`Context.generate` call.

    How it works (the C API streams through a callback, and a Python generator
    cannot yield from inside a C callback): the first ``next()`` starts
    ``starkv_generate`` on a worker thread, with the GIL released while the
    library computes. Its piece callback hands each piece to the iterating thread
    and waits for the next ``next()`` before returning, so generation advances
    one piece per ``next()`` and nothing runs ahead of the consumer. ``close()``
    (also: leaving a ``with`` block, ``break`` + garbage collection) makes that
    callback return False: the library stops cleanly (stop reason "callback").
    While the iterator runs, the context belongs to it: other calls on the
    context raise RuntimeError. ``result`` is the :class:`GenerateResult` once
    the iterator is exhausted or closed.
    """

    def __init__(self, ctx: Context, tokens: "np.ndarray", max_tokens: int, stop_at_eos: bool,
                 sampler: Optional[Sampler], owns_sampler: bool) -> None:
        self._ctx = ctx
        self._args = (tokens, max_tokens, stop_at_eos, sampler)
        self._owns_sampler = owns_sampler
        self._to_consumer: "queue.Queue[Any]" = queue.Queue()
        self._to_producer: "queue.Queue[bool]" = queue.Queue()
        self._thread: Optional[threading.Thread] = None
        self._awaiting_reply = False
        self._finished = False
        self.result: Optional[GenerateResult] = None

    def _start(self) -> None:
        ctx = self._ctx
        handle = ctx._h()  # raises if closed or busy
        ctx._busy = "generate"
        ctx._gen_ref = weakref.ref(self)
        tokens, max_tokens, stop_at_eos, sampler = self._args
        if sampler is not None:
            sampler._h()
        to_consumer, to_producer = self._to_consumer, self._to_producer

        def on_piece(piece: bytes, token: int) -> bool:
            to_consumer.put(("piece", piece.decode("utf-8", "replace")))
            return to_producer.get()

        def work() -> None:
            try:
                to_consumer.put(("done", ctx._run(tokens, max_tokens, stop_at_eos, sampler, on_piece, handle)))
            except BaseException as e:  # handed to the consumer, raised there
                to_consumer.put(("error", e))

        self._thread = threading.Thread(target=work, name="starkv-generate", daemon=True)
        self._thread.start()

    def __iter__(self) -> "Generation":
        return self

    def __next__(self) -> str:
        if self._finished:
            raise StopIteration
        if self._thread is None:
            self._start()
        if self._awaiting_reply:
            self._awaiting_reply = False
            self._to_producer.put(True)
        kind, value = self._to_consumer.get()
        if kind == "piece":
            self._awaiting_reply = True
            return value
        self._finish()
        if kind == "error":
            raise value
        self.result = value
        raise StopIteration

    def _finish(self) -> None:
        self._finished = True
        if self._thread is not None:
            self._thread.join()
        self._ctx._busy = None
        self._ctx._gen_ref = None
        if self._owns_sampler and self._args[3] is not None:
            self._args[3].close()

    def close(self) -> None:
        """Stop generation (if running) and release the context. Idempotent."""
        if self._finished:
            return
        if self._thread is None:
            self._finished = True
            if self._owns_sampler and self._args[3] is not None:
                self._args[3].close()
            return
        if self._awaiting_reply:
            self._awaiting_reply = False
            self._to_producer.put(False)
        kind, value = self._to_consumer.get()
        while kind == "piece":  # not expected: the producer waits for each reply
            self._to_producer.put(False)
            kind, value = self._to_consumer.get()
        self._finish()
        if kind == "done":
            self.result = value

    def __enter__(self) -> "Generation":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def text(self) -> str:
        """The remaining pieces joined."""
        return "".join(self)
