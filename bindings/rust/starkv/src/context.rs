use std::any::Any;
use std::borrow::Cow;
use std::ffi::{c_char, c_void};
use std::marker::PhantomData;
use std::panic::{self, AssertUnwindSafe};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use starkv_sys as sys;

use crate::error::{check, Error, Result, Status};
use crate::model::Model;
use crate::sampler::Sampler;
use crate::Token;

/// Context settings. `Default` is the library's `starkv_context_params_default`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextParams {
    /// Tokens of KV cache; 0 = the model's training context.
    pub n_ctx: u32,
    /// Worker threads; 0 = all hardware threads.
    pub n_threads: u32,
    /// Seed of the default sampler of [`Context::generate`] with no sampler.
    pub seed: u64,
}

impl Default for ContextParams {
    fn default() -> Self {
        let mut p = sys::starkv_context_params::default();
        unsafe { sys::starkv_context_params_default(&mut p) };
        ContextParams {
            n_ctx: p.n_ctx,
            n_threads: p.n_threads,
            seed: p.seed,
        }
    }
}

impl ContextParams {
    pub fn n_ctx(mut self, n_ctx: u32) -> Self {
        self.n_ctx = n_ctx;
        self
    }
    pub fn n_threads(mut self, n_threads: u32) -> Self {
        self.n_threads = n_threads;
        self
    }
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    fn to_raw(self) -> sys::starkv_context_params {
        let mut p = sys::starkv_context_params::default();
        unsafe { sys::starkv_context_params_default(&mut p) };
        p.n_ctx = self.n_ctx;
        p.n_threads = self.n_threads;
        p.seed = self.seed;
        p
    }
}

/// KV-cache occupancy and sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvStats {
    /// Tokens held.
    pub n_tokens: u32,
    /// Capacity in tokens.
    pub n_ctx: u32,
    /// Bytes holding the `n_tokens` tokens.
    pub bytes_in_use: u64,
    /// Bytes allocated for the whole capacity.
    pub bytes_reserved: u64,
    /// All layers, keys and values.
    pub bytes_per_token: u64,
    /// The same model's cache without STAR-KV (compare with `bytes_per_token`).
    pub bytes_per_token_uncompressed: u64,
    /// GPU memory of a GPU-backed context; 0 on the CPU.
    pub device_bytes: u64,
}

/// Result of [`Context::score`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// Sum of `-ln p(token[i] | tokens[..i])` for `i >= 1`.
    pub nll_sum: f64,
    /// Tokens scored (`n - 1`).
    pub n_scored: usize,
}

impl Score {
    /// `exp(nll_sum / n_scored)`.
    pub fn perplexity(&self) -> f64 {
        (self.nll_sum / self.n_scored as f64).exp()
    }
}

/// Generation settings. `Default` is the library's `starkv_generate_params_default`
/// (128 tokens, stop at end of sequence).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenerateParams {
    pub max_tokens: u32,
    pub stop_at_eos: bool,
}

impl Default for GenerateParams {
    fn default() -> Self {
        let mut p = sys::starkv_generate_params::default();
        unsafe { sys::starkv_generate_params_default(&mut p) };
        GenerateParams {
            max_tokens: p.max_tokens.max(0) as u32,
            stop_at_eos: p.stop_at_eos,
        }
    }
}

impl GenerateParams {
    pub fn max_tokens(mut self, n: u32) -> Self {
        self.max_tokens = n;
        self
    }
    pub fn stop_at_eos(mut self, stop: bool) -> Self {
        self.stop_at_eos = stop;
        self
    }
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    MaxTokens,
    Eos,
    /// The callback returned `false` (or panicked).
    Callback,
    /// The context filled up (not an error: the generated tokens are in the cache).
    ContextFull,
    Unknown(i32),
}

/// What [`Context::generate`] reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GenerateResult {
    pub n_prompt_tokens: u32,
    pub n_generated: u32,
    pub stop_reason: StopReason,
    pub prompt_seconds: f64,
    pub decode_seconds: f64,
}

impl GenerateResult {
    /// Generated tokens per second of decoding (0 when nothing was timed).
    pub fn decode_tokens_per_second(&self) -> f64 {
        if self.decode_seconds > 0.0 {
            self.n_generated as f64 / self.decode_seconds
        } else {
            0.0
        }
    }
}

/// A context: KV cache, scratch, thread pool and logits for one sequence; freed on drop.
///
/// It cannot outlive its model: `Context<'m>` borrows the model for `'m`
/// ([`Context::new`]), or `Context<'static>` keeps an `Arc<Model>` alive
/// ([`Context::with_shared_model`]). Either way the C context is freed before the model.
///
/// `Send` but not `Sync`: the C API lets one thread at a time use a context, and
/// it may move between threads. Methods that change it take `&mut self`; logits
/// borrow `&self`, so they cannot outlive the next eval/reset/rewind.
///
/// ```compile_fail
/// // A Context cannot be shared between threads (it is !Sync):
/// fn share<T: Sync>(_: &T) {}
/// let model = starkv::Model::load("m.gguf").unwrap();
/// let ctx = starkv::Context::new(&model, &Default::default()).unwrap();
/// share(&ctx);
/// ```
///
/// ```compile_fail
/// // A Context cannot outlive the model it borrows:
/// let ctx = {
///     let model = starkv::Model::load("m.gguf").unwrap();
///     starkv::Context::new(&model, &Default::default()).unwrap()
/// };
/// ```
#[derive(Debug)]
pub struct Context<'m> {
    raw: NonNull<sys::starkv_context>,
    n_vocab: usize,
    // Dropped after Drop::drop has freed the C context.
    _shared: Option<Arc<Model>>,
    // The flag the abort callback reads; kept alive while it is installed.
    cancel: Option<Arc<AtomicBool>>,
    _model: PhantomData<&'m Model>,
}

// SAFETY: see the type's documentation (starkv.h's thread-safety contract). The
// borrowed/shared Model is Sync. Not Sync: NonNull is !Sync and no impl adds it.
unsafe impl Send for Context<'_> {}

struct PieceState<F> {
    f: F,
    panic: Option<Box<dyn Any + Send + 'static>>,
}

unsafe extern "C" fn piece_trampoline<F>(
    piece: *const c_char,
    len: usize,
    token: sys::starkv_token,
    user: *mut c_void,
) -> bool
where
    F: FnMut(&[u8], Token) -> bool,
{
    // SAFETY: user is the &mut PieceState<F> of generate_bytes, alive for the whole
    // starkv_generate call, which calls back on its own thread.
    let state = unsafe { &mut *(user as *mut PieceState<F>) };
    if state.panic.is_some() {
        return false;
    }
    let bytes: &[u8] = if len == 0 || piece.is_null() {
        &[]
    } else {
        // SAFETY: the library passes len valid bytes, alive during the call.
        unsafe { std::slice::from_raw_parts(piece as *const u8, len) }
    };
    // A panic must not unwind through the library's C/C++ frames: catch it here,
    // stop generation, and resume it after starkv_generate returns.
    match panic::catch_unwind(AssertUnwindSafe(|| (state.f)(bytes, token))) {
        Ok(go_on) => go_on,
        Err(payload) => {
            state.panic = Some(payload);
            false
        }
    }
}

unsafe extern "C" fn abort_trampoline(user_data: *mut c_void) -> bool {
    // SAFETY: user_data is the AtomicBool of the Arc the context keeps in `cancel`.
    unsafe { (*(user_data as *const AtomicBool)).load(Ordering::Acquire) }
}

impl<'m> Context<'m> {
    /// Lets another thread cancel this context's long work: while `flag` is set,
    /// an eval (between 64-token chunks), a generation (before each token) or a
    /// score stops with [`Status::Cancelled`]. A cancelled eval leaves the context
    /// as it was; a generation keeps the tokens it emitted. `None` removes it.
    pub fn set_cancel_flag(&mut self, flag: Option<Arc<AtomicBool>>) -> Result<()> {
        let (cb, user): (sys::starkv_abort_fn, *mut c_void) = match &flag {
            Some(f) => (Some(abort_trampoline), Arc::as_ptr(f) as *mut c_void),
            None => (None, ptr::null_mut()),
        };
        check(unsafe { sys::starkv_context_set_abort_callback(self.raw.as_ptr(), cb, user) })?;
        self.cancel = flag;
        Ok(())
    }


    /// A context on a borrowed model. With an `Arc<Model>`, `Context::new(&arc, ..)`
    /// borrows through it; [`Context::with_shared_model`] gives a `'static` context.
    pub fn new(model: &'m Model, params: &ContextParams) -> Result<Context<'m>> {
        Self::create(model, params, None)
    }

    fn create(model: &Model, params: &ContextParams, shared: Option<Arc<Model>>) -> Result<Context<'m>> {
        let n_vocab = model.n_vocab()?;
        let p = params.to_raw();
        let mut raw = ptr::null_mut();
        check(unsafe { sys::starkv_context_create(model.as_ptr(), &p, &mut raw) })?;
        Ok(Context {
            raw: NonNull::new(raw).ok_or_else(|| Error::new(Status::Internal, "context_create returned NULL"))?,
            n_vocab,
            _shared: shared,
            cancel: None,
            _model: PhantomData,
        })
    }

    /// The raw handle (for use with `starkv-sys`); stays owned by `self`.
    pub fn as_mut_ptr(&mut self) -> *mut sys::starkv_context {
        self.raw.as_ptr()
    }

    /// Runs `tokens` at positions `n_past..` and appends them to the KV cache.
    /// Logits are kept for the last token, or for every token with `all_logits`.
    /// [`Status::ContextFull`] (nothing changed) when they do not fit.
    pub fn eval(&mut self, tokens: &[Token], all_logits: bool) -> Result<()> {
        check(unsafe { sys::starkv_context_eval(self.raw.as_ptr(), tokens.as_ptr(), tokens.len(), all_logits) })
    }

    /// One decode step (eval of one token).
    pub fn decode(&mut self, token: Token) -> Result<()> {
        check(unsafe { sys::starkv_context_decode(self.raw.as_ptr(), token) })
    }

    /// Logits of the last evaluated token (`n_vocab` floats).
    pub fn logits(&self) -> Result<&[f32]> {
        self.logits_at(-1)
    }

    /// Logits of the `i`-th token of the last eval (`-1` = the last one; others
    /// need `all_logits`). Borrowed from the context until it changes.
    pub fn logits_at(&self, i: i32) -> Result<&[f32]> {
        let mut p: *const f32 = ptr::null();
        check(unsafe { sys::starkv_context_logits(self.raw.as_ptr(), i, &mut p) })?;
        if p.is_null() {
            return Err(Error::new(Status::Internal, "logits returned NULL"));
        }
        // SAFETY: n_vocab floats owned by the context, valid until the next
        // eval/reset/rewind, all of which need &mut self.
        Ok(unsafe { std::slice::from_raw_parts(p, self.n_vocab) })
    }

    /// Tokens in the KV cache (the next position).
    pub fn n_past(&self) -> u32 {
        unsafe { sys::starkv_context_n_past(self.raw.as_ptr()) }
    }

    /// Capacity in tokens.
    pub fn n_ctx(&self) -> u32 {
        unsafe { sys::starkv_context_n_ctx(self.raw.as_ptr()) }
    }

    /// Forgets every token (and restarts the default sampler).
    pub fn reset(&mut self) -> Result<()> {
        check(unsafe { sys::starkv_context_reset(self.raw.as_ptr()) })
    }

    /// Forgets every token at position `>= n_past` (`n_past <= self.n_past()`).
    pub fn rewind(&mut self, n_past: u32) -> Result<()> {
        check(unsafe { sys::starkv_context_rewind(self.raw.as_ptr(), n_past) })
    }

    pub fn kv_stats(&self) -> Result<KvStats> {
        let mut s = sys::starkv_kv_stats::default();
        unsafe { sys::starkv_kv_stats_default(&mut s) };
        check(unsafe { sys::starkv_context_kv_stats(self.raw.as_ptr(), &mut s) })?;
        Ok(KvStats {
            n_tokens: s.n_tokens,
            n_ctx: s.n_ctx,
            bytes_in_use: s.bytes_in_use,
            bytes_reserved: s.bytes_reserved,
            bytes_per_token: s.bytes_per_token,
            bytes_per_token_uncompressed: s.bytes_per_token_uncompressed,
            device_bytes: s.device_bytes,
        })
    }

    /// Resets the context and scores `tokens` (at least 2): the summed negative
    /// log-likelihood of each token after the first. See [`Score::perplexity`].
    pub fn score(&mut self, tokens: &[Token]) -> Result<Score> {
        let mut nll = 0.0f64;
        let mut n = 0usize;
        check(unsafe {
            sys::starkv_context_score(self.raw.as_ptr(), tokens.as_ptr(), tokens.len(), &mut nll, &mut n)
        })?;
        Ok(Score {
            nll_sum: nll,
            n_scored: n,
        })
    }

    /// Perplexity of `tokens` (resets the context).
    pub fn perplexity(&mut self, tokens: &[Token]) -> Result<f64> {
        Ok(self.score(tokens)?.perplexity())
    }

    /// Evaluates `prompt` after what the context holds, then samples and evaluates
    /// up to `params.max_tokens` tokens, passing each piece's bytes and token to
    /// `on_piece` as soon as the piece is complete UTF-8. Return `false` to stop.
    ///
    /// `sampler`: `None` uses the context's default sampler (library defaults with
    /// the context's seed). An empty `prompt` continues from the last eval.
    ///
    /// A panic in `on_piece` stops generation (the library sees `false`) and is
    /// resumed here once the library has returned; the context stays usable.
    pub fn generate_bytes<F>(
        &mut self,
        sampler: Option<&mut Sampler>,
        prompt: &[Token],
        params: &GenerateParams,
        on_piece: F,
    ) -> Result<GenerateResult>
    where
        F: FnMut(&[u8], Token) -> bool,
    {
        let mut state = PieceState {
            f: on_piece,
            panic: None,
        };
        let mut gp = sys::starkv_generate_params::default();
        unsafe { sys::starkv_generate_params_default(&mut gp) };
        gp.max_tokens = params.max_tokens.min(i32::MAX as u32) as i32;
        gp.stop_at_eos = params.stop_at_eos;
        gp.on_piece = Some(piece_trampoline::<F>);
        gp.user_data = &mut state as *mut PieceState<F> as *mut c_void;
        let mut r = sys::starkv_generate_result::default();
        unsafe { sys::starkv_generate_result_default(&mut r) };
        let sampler_ptr = sampler.map_or(ptr::null_mut(), |s| s.as_mut_ptr());
        // SAFETY: all pointers outlive the call; prompt may be empty (len 0).
        let st = unsafe {
            sys::starkv_generate(
                self.raw.as_ptr(),
                sampler_ptr,
                prompt.as_ptr(),
                prompt.len(),
                &gp,
                &mut r,
            )
        };
        // Read the error message before anything else can call into the library.
        let result = check(st);
        if let Some(payload) = state.panic.take() {
            panic::resume_unwind(payload);
        }
        result?;
        Ok(GenerateResult {
            n_prompt_tokens: r.n_prompt_tokens,
            n_generated: r.n_generated,
            stop_reason: match r.stop_reason as u32 {
                sys::STARKV_STOP_MAX_TOKENS => StopReason::MaxTokens,
                sys::STARKV_STOP_EOS => StopReason::Eos,
                sys::STARKV_STOP_CALLBACK => StopReason::Callback,
                sys::STARKV_STOP_CONTEXT_FULL => StopReason::ContextFull,
                _ => StopReason::Unknown(r.stop_reason),
            },
            prompt_seconds: r.prompt_seconds,
            decode_seconds: r.decode_seconds,
        })
    }

    /// [`Context::generate_bytes`] with each piece as text. The library sends
    /// complete UTF-8; should a piece ever not be, it is passed through
    /// `String::from_utf8_lossy`.
    pub fn generate<F>(
        &mut self,
        sampler: Option<&mut Sampler>,
        prompt: &[Token],
        params: &GenerateParams,
        mut on_piece: F,
    ) -> Result<GenerateResult>
    where
        F: FnMut(&str) -> bool,
    {
        self.generate_bytes(sampler, prompt, params, |bytes, _token| {
            let text: Cow<'_, str> = String::from_utf8_lossy(bytes);
            on_piece(&text)
        })
    }

    /// Generates and collects the text.
    pub fn generate_to_string(
        &mut self,
        sampler: Option<&mut Sampler>,
        prompt: &[Token],
        params: &GenerateParams,
    ) -> Result<(String, GenerateResult)> {
        let mut bytes = Vec::new();
        let r = self.generate_bytes(sampler, prompt, params, |piece, _| {
            bytes.extend_from_slice(piece);
            true
        })?;
        let text = match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        };
        Ok((text, r))
    }
}

impl Context<'static> {
    /// A context that keeps its model alive through an `Arc`: `'static`, so it can
    /// be stored anywhere or moved into a spawned thread.
    pub fn with_shared_model(model: Arc<Model>, params: &ContextParams) -> Result<Context<'static>> {
        let m = Arc::clone(&model);
        Self::create(&m, params, Some(model))
    }
}

impl Drop for Context<'_> {
    fn drop(&mut self) {
        // SAFETY: we own the context; its model is still alive (borrow or Arc field,
        // which is dropped after this).
        unsafe { sys::starkv_context_free(self.raw.as_ptr()) };
    }
}
