use std::any::Any;
use std::ffi::{c_char, c_void, CString};
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::ptr::{self, NonNull};

use starkv_sys as sys;

use crate::error::{check, with_growing_buffer, Error, Result, Status};
use crate::Token;

/// A loaded model: immutable, freed on drop.
///
/// `Model` is `Send + Sync`: the C API allows sharing one model across any number
/// of threads and contexts. Share it by reference (contexts borrow it) or through
/// `Arc<Model>` ([`crate::Context::with_shared_model`]).
#[derive(Debug)]
pub struct Model {
    raw: NonNull<sys::starkv_model>,
}

// SAFETY: starkv.h: "A loaded starkv_model is immutable: share it across any
// number of threads and contexts." No method takes &mut of the C object.
unsafe impl Send for Model {}
unsafe impl Sync for Model {}

/// Which tokenizer the model uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenizerKind {
    /// SentencePiece-style BPE with scores and byte fallback.
    Spm,
    /// Byte-level BPE with merges (GPT-2, Llama 3).
    Bpe,
    /// A kind this crate does not know.
    Unknown(i32),
}

/// RoPE scaling of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RopeScaling {
    None,
    Linear,
    Llama3,
    Unknown(i32),
}

/// What `starkv_model_get_info` reports.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    pub architecture: String,
    pub name: String,
    /// `"gguf"` or `"hf"`.
    pub format: String,
    pub n_vocab: i32,
    pub n_embd: i32,
    pub n_layer: i32,
    pub n_head: i32,
    pub n_head_kv: i32,
    pub head_dim: i32,
    pub n_ff: i32,
    pub n_ctx_train: i32,
    pub rope_theta: f32,
    pub rope_scaling: RopeScaling,
    pub rope_scaling_factor: f32,
    pub rms_norm_eps: f32,
    pub tied_embeddings: bool,
    pub tokenizer: TokenizerKind,
    pub bos_token: Option<Token>,
    pub eos_token: Option<Token>,
    pub unk_token: Option<Token>,
    pub pad_token: Option<Token>,
    pub n_params: u64,
}

/// One entry of the file's tensor table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// As stored: `"F32"`, `"F16"`, `"BF16"`, `"Q8_0"`, `"Q4_0"`, `"Q4_1"`.
    pub dtype: String,
    /// Outermost first.
    pub shape: Vec<i64>,
    /// Byte offset in its file.
    pub offset: u64,
    /// Stored bytes.
    pub n_bytes: u64,
}

pub(crate) fn c_chars_to_string(chars: &[c_char]) -> String {
    let bytes: Vec<u8> = chars.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn opt_token(t: sys::starkv_token) -> Option<Token> {
    if t < 0 {
        None
    } else {
        Some(t)
    }
}

fn path_to_cstring(path: &Path) -> Result<CString> {
    #[cfg(unix)]
    let bytes = {
        use std::os::unix::ffi::OsStrExt;
        path.as_os_str().as_bytes().to_vec()
    };
    #[cfg(not(unix))]
    let bytes = path
        .to_str()
        .ok_or_else(|| Error::new(Status::InvalidArgument, "path is not valid Unicode"))?
        .as_bytes()
        .to_vec();
    CString::new(bytes).map_err(|_| Error::new(Status::InvalidArgument, "path contains a NUL byte"))
}

struct ProgressState<F> {
    f: F,
    panic: Option<Box<dyn Any + Send + 'static>>,
}

unsafe extern "C" fn progress_trampoline<F: FnMut(f32) -> bool>(progress: f32, user: *mut c_void) -> bool {
    // SAFETY: user is the &mut ProgressState<F> of load_with_progress, alive for the
    // whole starkv_model_load call, which invokes the callback on its own thread.
    let state = unsafe { &mut *(user as *mut ProgressState<F>) };
    if state.panic.is_some() {
        return false;
    }
    // A panic must not unwind through C frames: catch it, cancel the load, and
    // resume it once starkv_model_load has returned.
    match panic::catch_unwind(AssertUnwindSafe(|| (state.f)(progress))) {
        Ok(go_on) => go_on,
        Err(payload) => {
            state.panic = Some(payload);
            false
        }
    }
}

impl Model {
    /// Loads a GGUF file or a Hugging Face model directory.
    ///
    /// Errors: [`Status::Io`] for a missing or unreadable path, [`Status::Corrupt`]
    /// for a damaged file, [`Status::Unsupported`] for a model the library does not run.
    pub fn load(path: impl AsRef<Path>) -> Result<Model> {
        let c_path = path_to_cstring(path.as_ref())?;
        let mut raw = ptr::null_mut();
        // SAFETY: valid NUL-terminated path; params NULL means defaults.
        let st = unsafe { sys::starkv_model_load(c_path.as_ptr(), ptr::null(), &mut raw) };
        check(st)?;
        Ok(Model {
            raw: NonNull::new(raw).ok_or_else(|| Error::new(Status::Internal, "load returned NULL"))?,
        })
    }

    /// Loads like [`Model::load`], calling `progress` with values in `[0, 1]` on
    /// this thread. Returning `false` cancels the load ([`Status::Cancelled`]). A
    /// panic in `progress` cancels the load and then resumes in the caller.
    pub fn load_with_progress<F>(path: impl AsRef<Path>, progress: F) -> Result<Model>
    where
        F: FnMut(f32) -> bool,
    {
        let c_path = path_to_cstring(path.as_ref())?;
        let mut state = ProgressState {
            f: progress,
            panic: None,
        };
        let mut params = sys::starkv_model_params::default();
        // SAFETY: fills the struct (and its struct_size).
        unsafe { sys::starkv_model_params_default(&mut params) };
        params.progress = Some(progress_trampoline::<F>);
        params.progress_user_data = &mut state as *mut ProgressState<F> as *mut c_void;
        let mut raw = ptr::null_mut();
        // SAFETY: params and state outlive the call; the callback runs only during it.
        let st = unsafe { sys::starkv_model_load(c_path.as_ptr(), &params, &mut raw) };
        let result = check(st);
        if let Some(payload) = state.panic.take() {
            // SAFETY: NULL or a model we own; freeing NULL is a no-op.
            unsafe { sys::starkv_model_free(raw) };
            panic::resume_unwind(payload);
        }
        result?;
        Ok(Model {
            raw: NonNull::new(raw).ok_or_else(|| Error::new(Status::Internal, "load returned NULL"))?,
        })
    }

    /// The raw handle (for use with `starkv-sys`); stays owned by `self`.
    pub fn as_ptr(&self) -> *const sys::starkv_model {
        self.raw.as_ptr()
    }

    /// Architecture, dimensions, tokenizer and special tokens.
    pub fn info(&self) -> Result<ModelInfo> {
        let mut i = sys::starkv_model_info::default();
        // SAFETY: fills struct_size and defaults; then the model writes into it.
        unsafe { sys::starkv_model_info_default(&mut i) };
        check(unsafe { sys::starkv_model_get_info(self.raw.as_ptr(), &mut i) })?;
        Ok(ModelInfo {
            architecture: c_chars_to_string(&i.architecture),
            name: c_chars_to_string(&i.name),
            format: c_chars_to_string(&i.format),
            n_vocab: i.n_vocab,
            n_embd: i.n_embd,
            n_layer: i.n_layer,
            n_head: i.n_head,
            n_head_kv: i.n_head_kv,
            head_dim: i.head_dim,
            n_ff: i.n_ff,
            n_ctx_train: i.n_ctx_train,
            rope_theta: i.rope_theta,
            rope_scaling: match i.rope_scaling as u32 {
                sys::STARKV_ROPE_SCALING_NONE => RopeScaling::None,
                sys::STARKV_ROPE_SCALING_LINEAR => RopeScaling::Linear,
                sys::STARKV_ROPE_SCALING_LLAMA3 => RopeScaling::Llama3,
                _ => RopeScaling::Unknown(i.rope_scaling),
            },
            rope_scaling_factor: i.rope_scaling_factor,
            rms_norm_eps: i.rms_norm_eps,
            tied_embeddings: i.tied_embeddings,
            tokenizer: match i.tokenizer as u32 {
                sys::STARKV_TOKENIZER_SPM => TokenizerKind::Spm,
                sys::STARKV_TOKENIZER_BPE => TokenizerKind::Bpe,
                _ => TokenizerKind::Unknown(i.tokenizer),
            },
            bos_token: opt_token(i.bos_token),
            eos_token: opt_token(i.eos_token),
            unk_token: opt_token(i.unk_token),
            pad_token: opt_token(i.pad_token),
            n_params: i.n_params,
        })
    }

    /// Vocabulary size (the length of a logits row).
    pub fn n_vocab(&self) -> Result<usize> {
        Ok(self.info()?.n_vocab.max(0) as usize)
    }

    /// The file's tensor table.
    pub fn tensors(&self) -> Result<Vec<TensorInfo>> {
        // SAFETY: plain query on a live model.
        let n = unsafe { sys::starkv_model_n_tensors(self.raw.as_ptr()) };
        let mut out = Vec::with_capacity(n);
        for index in 0..n {
            let mut t = sys::starkv_tensor_info::default();
            unsafe { sys::starkv_tensor_info_default(&mut t) };
            check(unsafe { sys::starkv_model_tensor(self.raw.as_ptr(), index, &mut t) })?;
            let n_dims = t.n_dims.clamp(0, t.shape.len() as i32) as usize;
            out.push(TensorInfo {
                name: c_chars_to_string(&t.name),
                dtype: c_chars_to_string(&t.dtype),
                shape: t.shape[..n_dims].to_vec(),
                offset: t.offset,
                n_bytes: t.n_bytes,
            });
        }
        Ok(out)
    }

    /// Tokenizes `text`. With `parse_special`, text spelling a control token
    /// (like `"<s>"`) becomes that token.
    pub fn tokenize(&self, text: &str, add_bos: bool, parse_special: bool) -> Result<Vec<Token>> {
        self.tokenize_bytes(text.as_bytes(), add_bos, parse_special)
    }

    /// [`Model::tokenize`] of raw bytes (need not be UTF-8).
    pub fn tokenize_bytes(&self, text: &[u8], add_bos: bool, parse_special: bool) -> Result<Vec<Token>> {
        // Deliberately a small first guess: a long text exercises the resize path.
        with_growing_buffer(text.len() / 4 + 16, |buf, cap, n| unsafe {
            sys::starkv_tokenize(
                self.raw.as_ptr(),
                text.as_ptr() as *const c_char,
                text.len(),
                add_bos,
                parse_special,
                buf,
                cap,
                n,
            )
        })
    }

    /// Bytes of one token as it reads inside text (a byte-fallback token is a
    /// single byte, possibly part of a UTF-8 character). Control tokens give no
    /// bytes unless `render_special`.
    pub fn token_to_piece(&self, token: Token, render_special: bool) -> Result<Vec<u8>> {
        let bytes: Vec<u8> = with_growing_buffer(16, |buf: *mut u8, cap, n| unsafe {
            sys::starkv_token_to_piece(self.raw.as_ptr(), token, render_special, buf as *mut c_char, cap, n)
        })?;
        Ok(bytes)
    }

    /// Bytes of a token sequence (control tokens dropped, SPM's leading space
    /// removed), so that `detokenize(tokenize(s, add_bos))` is `s`.
    pub fn detokenize_bytes(&self, tokens: &[Token]) -> Result<Vec<u8>> {
        with_growing_buffer(tokens.len() * 4 + 16, |buf: *mut u8, cap, n| unsafe {
            sys::starkv_detokenize(
                self.raw.as_ptr(),
                tokens.as_ptr(),
                tokens.len(),
                buf as *mut c_char,
                cap,
                n,
            )
        })
    }

    /// [`Model::detokenize_bytes`] as a string (invalid UTF-8, e.g. a sequence cut
    /// inside a character, becomes U+FFFD).
    pub fn detokenize(&self, tokens: &[Token]) -> Result<String> {
        let bytes = self.detokenize_bytes(tokens)?;
        Ok(match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        // SAFETY: we own the model; contexts borrow it (lifetime) or hold an Arc,
        // so none is alive here.
        unsafe { sys::starkv_model_free(self.raw.as_ptr()) };
    }
}
