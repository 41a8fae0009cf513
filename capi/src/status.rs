//! microattn_status_t codes: one per [`microattn::Error`] variant, plus the failures only C can cause.

use core::ffi::c_char;
use microattn::Error;

/// Result of every `microattn_*` call: `MICROATTN_OK` (0) on success, a negative
/// `MICROATTN_ERR_*` code otherwise. On error no output element has been written, except
/// where a function documents otherwise.
pub type microattn_status_t = i32;

/// Success.
pub const MICROATTN_OK: microattn_status_t = 0;
/// A dimension that must be positive is zero (a length, a head count, a feature size).
pub const MICROATTN_ERR_ZERO_DIMENSION: microattn_status_t = -1;
/// A buffer's element count does not match what the shape requires.
pub const MICROATTN_ERR_LENGTH_MISMATCH: microattn_status_t = -2;
/// Heads do not divide: query heads not a multiple of KV heads, or the embedding size not a
/// multiple of the head count.
pub const MICROATTN_ERR_HEADS_MISMATCH: microattn_status_t = -3;
/// A scale or epsilon is not finite, or not positive where it must be (including int8
/// multipliers out of range).
pub const MICROATTN_ERR_INVALID_SCALE: microattn_status_t = -4;
/// A mask term is malformed: unknown kind, zero dilation, zero block size.
pub const MICROATTN_ERR_INVALID_MASK: microattn_status_t = -5;
/// A bias does not match the heads (ALiBi slopes, T5 table), has an unknown kind, or has
/// invalid parameters.
pub const MICROATTN_ERR_INVALID_BIAS: microattn_status_t = -6;
/// A parameter outside its documented domain (for example a zero T5 bucket count, or a
/// causal linear attention with `lq != lk`).
pub const MICROATTN_ERR_INVALID_PARAMETER: microattn_status_t = -7;
/// The scratch buffer is shorter than the kernel's `*_scratch_len` query returns.
pub const MICROATTN_ERR_SCRATCH_TOO_SMALL: microattn_status_t = -8;
/// A shape whose element count does not fit in `size_t`.
pub const MICROATTN_ERR_SHAPE_OVERFLOW: microattn_status_t = -9;
/// A null pointer where a buffer of nonzero length, a state or an output is required.
pub const MICROATTN_ERR_NULL_POINTER: microattn_status_t = -10;
/// An argument C can get wrong but Rust cannot: a misaligned pointer, a buffer larger than
/// the address space, an unknown score kind, too many mask terms, an uninitialized state.
pub const MICROATTN_ERR_INVALID_ARGUMENT: microattn_status_t = -11;
/// An output buffer overlaps another buffer of the same call.
pub const MICROATTN_ERR_BUFFER_OVERLAP: microattn_status_t = -12;
/// An error this version of the header has no code for (a newer library).
pub const MICROATTN_ERR_UNKNOWN: microattn_status_t = -13;
/// A linear KV cache has no free slot for another token (the Rust `KvCache`; no C function
/// returns it today).
pub const MICROATTN_ERR_CACHE_FULL: microattn_status_t = -14;

/// Why a call failed, as the code C receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fail(pub(crate) microattn_status_t);

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        Fail(match e {
            Error::ZeroDimension => MICROATTN_ERR_ZERO_DIMENSION,
            Error::LengthMismatch { .. } => MICROATTN_ERR_LENGTH_MISMATCH,
            Error::HeadsMismatch => MICROATTN_ERR_HEADS_MISMATCH,
            Error::InvalidScale => MICROATTN_ERR_INVALID_SCALE,
            Error::InvalidMask => MICROATTN_ERR_INVALID_MASK,
            Error::InvalidBias => MICROATTN_ERR_INVALID_BIAS,
            Error::InvalidParameter => MICROATTN_ERR_INVALID_PARAMETER,
            Error::ScratchTooSmall { .. } => MICROATTN_ERR_SCRATCH_TOO_SMALL,
            Error::ShapeOverflow => MICROATTN_ERR_SHAPE_OVERFLOW,
            Error::CacheFull => MICROATTN_ERR_CACHE_FULL,
            _ => MICROATTN_ERR_UNKNOWN,
        })
    }
}

/// The status of a call's result.
pub(crate) fn status(result: Result<(), Fail>) -> microattn_status_t {
    match result {
        Ok(()) => MICROATTN_OK,
        Err(Fail(code)) => code,
    }
}

/// Short English description of a status code: a static, NUL-terminated string, never NULL
/// ("unknown status" for a value that is not a `MICROATTN_*` code).
#[no_mangle]
pub extern "C" fn microattn_status_str(status: microattn_status_t) -> *const c_char {
    let text: &'static core::ffi::CStr = match status {
        MICROATTN_OK => c"ok",
        MICROATTN_ERR_ZERO_DIMENSION => c"a dimension that must be positive is zero",
        MICROATTN_ERR_LENGTH_MISMATCH => c"buffer length does not match the shape",
        MICROATTN_ERR_HEADS_MISMATCH => c"head counts do not divide",
        MICROATTN_ERR_INVALID_SCALE => c"scale or epsilon is not finite and positive",
        MICROATTN_ERR_INVALID_MASK => c"mask term is malformed",
        MICROATTN_ERR_INVALID_BIAS => c"bias does not match the heads or is malformed",
        MICROATTN_ERR_INVALID_PARAMETER => c"parameter outside its domain",
        MICROATTN_ERR_SCRATCH_TOO_SMALL => c"scratch buffer too small",
        MICROATTN_ERR_SHAPE_OVERFLOW => c"shape element count overflows size_t",
        MICROATTN_ERR_NULL_POINTER => c"null pointer",
        MICROATTN_ERR_INVALID_ARGUMENT => c"invalid argument",
        MICROATTN_ERR_BUFFER_OVERLAP => c"output buffer overlaps another buffer",
        MICROATTN_ERR_UNKNOWN => c"error unknown to this header version",
        MICROATTN_ERR_CACHE_FULL => c"KV cache has no free slot",
        _ => c"unknown status",
    };
    text.as_ptr()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_its_own_code() {
        let errors = [
            Error::ZeroDimension,
            Error::LengthMismatch {
                expected: 1,
                found: 2,
            },
            Error::HeadsMismatch,
            Error::InvalidScale,
            Error::InvalidMask,
            Error::InvalidBias,
            Error::InvalidParameter,
            Error::ScratchTooSmall {
                needed: 1,
                found: 0,
            },
            Error::ShapeOverflow,
            Error::CacheFull,
        ];
        let codes: std::vec::Vec<microattn_status_t> =
            errors.iter().map(|&e| Fail::from(e).0).collect();
        for (i, &c) in codes.iter().enumerate() {
            assert!(c < 0 && c != MICROATTN_ERR_UNKNOWN);
            assert!(!codes[..i].contains(&c), "duplicate code {c}");
            let text = unsafe { core::ffi::CStr::from_ptr(microattn_status_str(c)) };
            assert_ne!(text.to_bytes(), b"unknown status");
        }
    }
}
