//! Safe Rust bindings to **starkv**, an embeddable LLM inference runtime.
//!
//! ```no_run
//! use starkv::{Context, ContextParams, GenerateParams, Model, Sampler};
//!
//! # fn main() -> starkv::Result<()> {
//! let model = Model::load("stories260K.gguf")?;
//! let mut ctx = Context::new(&model, &ContextParams::default())?;
//! let mut sampler = Sampler::greedy()?;
//! let prompt = model.tokenize("Once upon a time", true, false)?;
//! ctx.generate(Some(&mut sampler), &prompt, &GenerateParams::default(), |piece| {
//!     print!("{piece}");
//!     true // false stops generation
//! })?;
//! # Ok(())
//! # }
//! ```
//!
//! # Design
//!
//! - Handles are owned and freed on drop: [`Model`], [`Context`], [`Sampler`].
//! - Every fallible call returns [`Result`]; an [`Error`] carries the [`Status`]
//!   and the library's message (`starkv_last_error`, read on the same thread right
//!   after the failing call).
//! - Threads, as the C API allows: `Model: Send + Sync` (immutable, shared);
//!   `Context` and `Sampler` are `Send` but not `Sync` (one thread at a time, may
//!   move). A `Context` cannot outlive its model (it borrows it, or holds an
//!   `Arc<Model>`).
//! - Generation is callback-driven, as in the C API ([`Context::generate`],
//!   [`Context::generate_bytes`], [`Context::generate_to_string`]). There is no
//!   iterator over pieces: `starkv_generate` owns the loop, so an iterator would
//!   need a helper thread and a channel per call (and a `'static` or scoped
//!   context). A pull-style loop is available instead through the low-level calls:
//!   [`Context::eval`]/[`Context::decode`], [`Context::logits`], [`Sampler::sample`]
//!   and [`Model::token_to_piece`].
//! - A panicking callback never unwinds through C frames: the trampoline catches
//!   the panic, tells the library to stop, and resumes the panic once the C call
//!   has returned.
//!
//! The shared library `libstarkv` is linked by `starkv-sys` (`STARKV_LIB_DIR`,
//! default `<repo>/build`); this crate's tests, examples and binaries get an rpath
//! to it.
#![warn(missing_debug_implementations)]

mod context;
mod error;
mod model;
mod sampler;

use std::ffi::{c_char, c_void, CStr};
use std::panic::{self, AssertUnwindSafe};
use std::sync::RwLock;

pub use context::{Context, ContextParams, GenerateParams, GenerateResult, KvStats, Score, StopReason};
pub use error::{Error, Result, Status};
pub use model::{Model, ModelInfo, RopeScaling, TensorInfo, TokenizerKind};
pub use sampler::{Sampler, SamplerParams};
/// The raw bindings this crate wraps.
pub use starkv_sys as sys;

/// A token id.
pub type Token = i32;

/// Version of the loaded library, e.g. `"0.1.0"`.
pub fn version() -> &'static str {
    // SAFETY: a static NUL-terminated string.
    unsafe { CStr::from_ptr(sys::starkv_version_string()) }
        .to_str()
        .unwrap_or("")
}

/// `major * 10000 + minor * 100 + patch` of the loaded library.
pub fn version_number() -> u32 {
    unsafe { sys::starkv_version_number() }
}

/// Version of the header the bindings were generated from.
pub const HEADER_VERSION_NUMBER: u32 = sys::STARKV_VERSION_NUMBER;

/// Severity of a library log message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

type LogFn = Box<dyn Fn(LogLevel, &str) + Send + Sync + 'static>;
static LOGGER: RwLock<Option<LogFn>> = RwLock::new(None);

unsafe extern "C" fn log_trampoline(level: sys::starkv_log_level, message: *const c_char, _user: *mut c_void) {
    let level = match level {
        sys::STARKV_LOG_DEBUG => LogLevel::Debug,
        sys::STARKV_LOG_INFO => LogLevel::Info,
        sys::STARKV_LOG_WARN => LogLevel::Warn,
        _ => LogLevel::Error,
    };
    let text = if message.is_null() {
        Default::default()
    } else {
        unsafe { CStr::from_ptr(message) }.to_string_lossy()
    };
    // A panic cannot be handed back to anyone here: swallow it (it must not unwind
    // into the library).
    let _ = panic::catch_unwind(AssertUnwindSafe(|| {
        if let Ok(guard) = LOGGER.read() {
            if let Some(f) = guard.as_ref() {
                f(level, &text);
            }
        }
    }));
}

/// Routes the library's log messages (process-wide) to `f`, which may be called
/// from any thread that calls into the library. Must not itself call
/// [`set_log_callback`] or [`clear_log_callback`].
pub fn set_log_callback<F>(f: F)
where
    F: Fn(LogLevel, &str) + Send + Sync + 'static,
{
    *LOGGER.write().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(f));
    unsafe { sys::starkv_set_log_callback(Some(log_trampoline), std::ptr::null_mut()) };
}

/// Discards log messages again (the library's default).
pub fn clear_log_callback() {
    unsafe { sys::starkv_set_log_callback(None, std::ptr::null_mut()) };
    *LOGGER.write().unwrap_or_else(|e| e.into_inner()) = None;
}

// ---- compile-time checks of the thread-safety contract ----------------------

#[allow(dead_code)]
fn assert_send<T: Send>() {}
#[allow(dead_code)]
fn assert_sync<T: Sync>() {}
const _: fn() = || {
    assert_send::<Model>();
    assert_sync::<Model>();
    assert_send::<Context<'static>>();
    assert_send::<Sampler>();
    assert_send::<Error>();
    assert_sync::<Error>();
};

// `Context` and `Sampler` must NOT be Sync. The method lookup below is ambiguous
// (a compile error) exactly when the type implements Sync: both impls apply.
#[allow(dead_code)]
trait AmbiguousIfSync<A> {
    fn check() {}
}
impl<T: ?Sized> AmbiguousIfSync<()> for T {}
#[allow(dead_code)]
struct IsSync;
impl<T: ?Sized + Sync> AmbiguousIfSync<IsSync> for T {}
const _: fn() = || {
    let _ = <Context<'static> as AmbiguousIfSync<_>>::check;
    let _ = <Sampler as AmbiguousIfSync<_>>::check;
};
