use std::ptr::{self, NonNull};

use starkv_sys as sys;

use crate::error::{check, Error, Result, Status};
use crate::Token;

/// Sampling settings. Order of application: penalties, top-k, top-p, min-p,
/// temperature, draw. `Default` is the library's `starkv_sampler_params_default`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplerParams {
    /// `<= 0` is greedy (argmax after penalties). Default 0.8.
    pub temperature: f32,
    /// `<= 0` disables. Default 40.
    pub top_k: i32,
    /// `>= 1` disables. Default 0.95.
    pub top_p: f32,
    /// `<= 0` disables. Default 0.05.
    pub min_p: f32,
    /// 1 disables. Default 1.
    pub repeat_penalty: f32,
    /// 0 disables.
    pub presence_penalty: f32,
    /// 0 disables.
    pub frequency_penalty: f32,
    /// Tokens looked back for penalties. Default 64.
    pub penalty_last_n: i32,
    /// Same seed, same draws.
    pub seed: u64,
}

impl Default for SamplerParams {
    fn default() -> Self {
        let mut p = sys::starkv_sampler_params::default();
        // SAFETY: fills the struct.
        unsafe { sys::starkv_sampler_params_default(&mut p) };
        SamplerParams {
            temperature: p.temperature,
            top_k: p.top_k,
            top_p: p.top_p,
            min_p: p.min_p,
            repeat_penalty: p.repeat_penalty,
            presence_penalty: p.presence_penalty,
            frequency_penalty: p.frequency_penalty,
            penalty_last_n: p.penalty_last_n,
            seed: p.seed,
        }
    }
}

impl SamplerParams {
    /// Greedy decoding (temperature 0): the same text every run.
    pub fn greedy() -> Self {
        SamplerParams {
            temperature: 0.0,
            ..Default::default()
        }
    }
    pub fn temperature(mut self, v: f32) -> Self {
        self.temperature = v;
        self
    }
    pub fn top_k(mut self, v: i32) -> Self {
        self.top_k = v;
        self
    }
    pub fn top_p(mut self, v: f32) -> Self {
        self.top_p = v;
        self
    }
    pub fn min_p(mut self, v: f32) -> Self {
        self.min_p = v;
        self
    }
    pub fn repeat_penalty(mut self, v: f32) -> Self {
        self.repeat_penalty = v;
        self
    }
    pub fn seed(mut self, v: u64) -> Self {
        self.seed = v;
        self
    }

    pub(crate) fn to_raw(self) -> sys::starkv_sampler_params {
        let mut p = sys::starkv_sampler_params::default();
        unsafe { sys::starkv_sampler_params_default(&mut p) };
        p.temperature = self.temperature;
        p.top_k = self.top_k;
        p.top_p = self.top_p;
        p.min_p = self.min_p;
        p.repeat_penalty = self.repeat_penalty;
        p.presence_penalty = self.presence_penalty;
        p.frequency_penalty = self.frequency_penalty;
        p.penalty_last_n = self.penalty_last_n;
        p.seed = self.seed;
        p
    }
}

/// A token sampler with its penalty history and random stream; freed on drop.
///
/// `Send` but not `Sync`: the C API lets one thread at a time use a sampler, and
/// it may move between threads. Every mutating method takes `&mut self`.
#[derive(Debug)]
pub struct Sampler {
    raw: NonNull<sys::starkv_sampler>,
}

// SAFETY: starkv.h: "A starkv_context or starkv_sampler is used by one thread at a
// time (it may move between threads)." Not Sync (NonNull is !Sync).
unsafe impl Send for Sampler {}

impl Sampler {
    pub fn new(params: &SamplerParams) -> Result<Sampler> {
        let p = params.to_raw();
        let mut raw = ptr::null_mut();
        // SAFETY: valid params; out pointer written on success.
        check(unsafe { sys::starkv_sampler_create(&p, &mut raw) })?;
        Ok(Sampler {
            raw: NonNull::new(raw).ok_or_else(|| Error::new(Status::Internal, "sampler_create returned NULL"))?,
        })
    }

    /// A greedy sampler ([`SamplerParams::greedy`]).
    pub fn greedy() -> Result<Sampler> {
        Sampler::new(&SamplerParams::greedy())
    }

    /// The raw handle (for use with `starkv-sys`); stays owned by `self`.
    pub fn as_mut_ptr(&mut self) -> *mut sys::starkv_sampler {
        self.raw.as_ptr()
    }

    /// Picks a token from a row of logits (not modified). Does not record it:
    /// call [`Sampler::accept`] for the tokens that enter the sequence.
    pub fn sample(&mut self, logits: &[f32]) -> Result<Token> {
        let mut t: Token = -1;
        check(unsafe { sys::starkv_sampler_sample(self.raw.as_ptr(), logits.as_ptr(), logits.len(), &mut t) })?;
        Ok(t)
    }

    /// Records a token of the sequence (prompt or generated) for the penalties.
    pub fn accept(&mut self, token: Token) -> Result<()> {
        check(unsafe { sys::starkv_sampler_accept(self.raw.as_ptr(), token) })
    }

    /// Forgets accepted tokens and restarts the random stream from the seed.
    pub fn reset(&mut self) -> Result<()> {
        check(unsafe { sys::starkv_sampler_reset(self.raw.as_ptr()) })
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        unsafe { sys::starkv_sampler_free(self.raw.as_ptr()) };
    }
}
