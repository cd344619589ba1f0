use std::ffi::CStr;
use std::fmt;

use starkv_sys as sys;

/// A failure status of the C API (`starkv_status` without `STARKV_OK`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Status {
    /// `STARKV_ERR_INVALID_ARGUMENT`: null pointer, out-of-range value.
    InvalidArgument,
    /// `STARKV_ERR_IO`: missing file, unreadable path.
    Io,
    /// `STARKV_ERR_CORRUPT`: wrong magic, truncated or inconsistent file.
    Corrupt,
    /// `STARKV_ERR_UNSUPPORTED`: valid file, but a model/feature the library does not run.
    Unsupported,
    /// `STARKV_ERR_OUT_OF_MEMORY`.
    OutOfMemory,
    /// `STARKV_ERR_CONTEXT_FULL`: the tokens do not fit in the context.
    ContextFull,
    /// `STARKV_ERR_CANCELLED`: a callback asked to stop.
    Cancelled,
    /// `STARKV_ERR_BUFFER_TOO_SMALL` (the wrapper resizes its buffers, so it is rarely seen).
    BufferTooSmall,
    /// `STARKV_ERR_KV_POOL_FULL`: no free KV pages left.
    KvPoolFull,
    /// `STARKV_ERR_INTERNAL`.
    Internal,
    /// `STARKV_ERR_NO_DEVICE`: a GPU backend was asked for and none is usable.
    NoDevice,
    /// A status this version of the crate does not know (a newer library).
    Unknown(u32),
}

impl Status {
    /// `None` for `STARKV_OK`.
    #[allow(clippy::unnecessary_cast)] // starkv_status is i32 on some targets
    pub fn from_raw(raw: sys::starkv_status) -> Option<Status> {
        Some(match raw {
            sys::STARKV_OK => return None,
            sys::STARKV_ERR_INVALID_ARGUMENT => Status::InvalidArgument,
            sys::STARKV_ERR_IO => Status::Io,
            sys::STARKV_ERR_CORRUPT => Status::Corrupt,
            sys::STARKV_ERR_UNSUPPORTED => Status::Unsupported,
            sys::STARKV_ERR_OUT_OF_MEMORY => Status::OutOfMemory,
            sys::STARKV_ERR_CONTEXT_FULL => Status::ContextFull,
            sys::STARKV_ERR_CANCELLED => Status::Cancelled,
            sys::STARKV_ERR_BUFFER_TOO_SMALL => Status::BufferTooSmall,
            sys::STARKV_ERR_KV_POOL_FULL => Status::KvPoolFull,
            sys::STARKV_ERR_INTERNAL => Status::Internal,
            sys::STARKV_ERR_NO_DEVICE => Status::NoDevice,
            other => Status::Unknown(other as u32),
        })
    }

    /// The C value.
    #[allow(clippy::unnecessary_cast)]
    pub fn to_raw(self) -> sys::starkv_status {
        match self {
            Status::InvalidArgument => sys::STARKV_ERR_INVALID_ARGUMENT,
            Status::Io => sys::STARKV_ERR_IO,
            Status::Corrupt => sys::STARKV_ERR_CORRUPT,
            Status::Unsupported => sys::STARKV_ERR_UNSUPPORTED,
            Status::OutOfMemory => sys::STARKV_ERR_OUT_OF_MEMORY,
            Status::ContextFull => sys::STARKV_ERR_CONTEXT_FULL,
            Status::Cancelled => sys::STARKV_ERR_CANCELLED,
            Status::BufferTooSmall => sys::STARKV_ERR_BUFFER_TOO_SMALL,
            Status::KvPoolFull => sys::STARKV_ERR_KV_POOL_FULL,
            Status::Internal => sys::STARKV_ERR_INTERNAL,
            Status::NoDevice => sys::STARKV_ERR_NO_DEVICE,
            Status::Unknown(v) => v as sys::starkv_status,
        }
    }

    /// The library's name of the status, e.g. `"STARKV_ERR_IO"`.
    pub fn name(self) -> &'static str {
        // SAFETY: starkv_status_name returns a static, NUL-terminated string, never NULL.
        let s = unsafe { CStr::from_ptr(sys::starkv_status_name(self.to_raw())) };
        s.to_str().unwrap_or("STARKV_ERR_?")
    }
}

/// An error of the C API: its status and the thread-local message of
/// `starkv_last_error()`, read on the failing thread right after the failing call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    status: Status,
    message: String,
}

impl Error {
    pub(crate) fn new(status: Status, message: impl Into<String>) -> Error {
        Error {
            status,
            message: message.into(),
        }
    }

    /// Builds the error of a failed call. Must run right after that call, on its
    /// thread, before any other starkv call.
    pub(crate) fn last(raw: sys::starkv_status) -> Error {
        // SAFETY: never NULL; valid until the next starkv call on this thread, and
        // copied out at once.
        let msg = unsafe { CStr::from_ptr(sys::starkv_last_error()) };
        Error {
            status: Status::from_raw(raw).unwrap_or(Status::Internal),
            message: msg.to_string_lossy().into_owned(),
        }
    }

    /// The status of the failure.
    pub fn status(&self) -> Status {
        self.status
    }

    /// The library's one-line message ("" when it gave none).
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            f.write_str(self.status.name())
        } else {
            write!(f, "{}: {}", self.status.name(), self.message)
        }
    }
}

impl std::error::Error for Error {}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// `Ok(())` for `STARKV_OK`, else the error with its message.
pub(crate) fn check(raw: sys::starkv_status) -> Result<()> {
    if raw == sys::STARKV_OK {
        Ok(())
    } else {
        Err(Error::last(raw))
    }
}

/// Calls `f(buf, capacity, &mut n_out)` and grows the buffer while the library
/// answers `STARKV_ERR_BUFFER_TOO_SMALL` (with the size needed in `n_out`).
pub(crate) fn with_growing_buffer<T: Copy + Default>(
    initial: usize,
    mut f: impl FnMut(*mut T, usize, &mut usize) -> sys::starkv_status,
) -> Result<Vec<T>> {
    let mut buf = vec![T::default(); initial.max(1)];
    loop {
        let mut n = 0usize;
        let st = f(buf.as_mut_ptr(), buf.len(), &mut n);
        if st == sys::STARKV_OK {
            buf.truncate(n.min(buf.len()));
            return Ok(buf);
        }
        if st == sys::STARKV_ERR_BUFFER_TOO_SMALL && n > buf.len() {
            buf.resize(n, T::default());
            continue;
        }
        return Err(Error::last(st));
    }
}
