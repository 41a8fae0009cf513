//! The one error type every kernel returns.

use core::fmt;

/// Why a kernel refused its input.
///
/// Kernels check every shape and parameter before touching data, so an `Err` means no output
/// was written (output buffers may hold partial results only for errors documented otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A dimension that must be positive is zero (a length, a head count, a feature size).
    ZeroDimension,
    /// A slice does not have the length its shape requires.
    LengthMismatch {
        /// Elements the shape requires.
        expected: usize,
        /// Elements the slice has.
        found: usize,
    },
    /// Heads do not divide: query heads not a multiple of KV heads, or the embedding size not
    /// a multiple of the head count.
    HeadsMismatch,
    /// A scale or epsilon is not finite, or not positive where it must be.
    InvalidScale,
    /// A mask term is malformed (zero dilation, zero block size).
    InvalidMask,
    /// A bias does not match the heads (ALiBi slopes, T5 table) or has invalid parameters.
    InvalidBias,
    /// A parameter outside its documented domain (for example a zero bucket count).
    InvalidParameter,
    /// The caller's scratch buffer is shorter than the kernel's `*_scratch_len`.
    ScratchTooSmall {
        /// Elements the kernel needs.
        needed: usize,
        /// Elements the buffer has.
        found: usize,
    },
    /// A shape whose element count does not fit in `usize`.
    ShapeOverflow,
    /// A linear KV cache has no free slot for another token (clear it, or use a ring).
    CacheFull,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::ZeroDimension => f.write_str("a dimension that must be positive is zero"),
            Error::LengthMismatch { expected, found } => {
                write!(f, "slice has {found} elements, shape requires {expected}")
            }
            Error::HeadsMismatch => f.write_str("head counts do not divide"),
            Error::InvalidScale => f.write_str("scale or epsilon is not finite and positive"),
            Error::InvalidMask => f.write_str("mask term is malformed"),
            Error::InvalidBias => f.write_str("bias does not match the heads or is malformed"),
            Error::InvalidParameter => f.write_str("parameter outside its domain"),
            Error::ScratchTooSmall { needed, found } => {
                write!(f, "scratch has {found} elements, kernel needs {needed}")
            }
            Error::ShapeOverflow => f.write_str("shape element count overflows usize"),
            Error::CacheFull => f.write_str("KV cache has no free slot"),
        }
    }
}

impl core::error::Error for Error {}

#[cfg(feature = "defmt")]
impl defmt::Format for Error {
    fn format(&self, f: defmt::Formatter) {
        match *self {
            Error::ZeroDimension => defmt::write!(f, "ZeroDimension"),
            Error::LengthMismatch { expected, found } => {
                defmt::write!(
                    f,
                    "LengthMismatch {{ expected: {}, found: {} }}",
                    expected,
                    found
                )
            }
            Error::HeadsMismatch => defmt::write!(f, "HeadsMismatch"),
            Error::InvalidScale => defmt::write!(f, "InvalidScale"),
            Error::InvalidMask => defmt::write!(f, "InvalidMask"),
            Error::InvalidBias => defmt::write!(f, "InvalidBias"),
            Error::InvalidParameter => defmt::write!(f, "InvalidParameter"),
            Error::ScratchTooSmall { needed, found } => {
                defmt::write!(
                    f,
                    "ScratchTooSmall {{ needed: {}, found: {} }}",
                    needed,
                    found
                )
            }
            Error::ShapeOverflow => defmt::write!(f, "ShapeOverflow"),
            Error::CacheFull => defmt::write!(f, "CacheFull"),
        }
    }
}

/// `a * b`, or [`Error::ShapeOverflow`].
pub(crate) fn mul(a: usize, b: usize) -> Result<usize, Error> {
    a.checked_mul(b).ok_or(Error::ShapeOverflow)
}

/// Product of dimensions, or [`Error::ShapeOverflow`].
pub(crate) fn product(dims: &[usize]) -> Result<usize, Error> {
    dims.iter().try_fold(1usize, |acc, &d| mul(acc, d))
}

/// Every dimension positive, or [`Error::ZeroDimension`].
pub(crate) fn nonzero(dims: &[usize]) -> Result<(), Error> {
    if dims.contains(&0) {
        Err(Error::ZeroDimension)
    } else {
        Ok(())
    }
}

/// `slice.len() == expected`, or [`Error::LengthMismatch`].
pub(crate) fn check_len<T>(slice: &[T], expected: usize) -> Result<(), Error> {
    if slice.len() == expected {
        Ok(())
    } else {
        Err(Error::LengthMismatch {
            expected,
            found: slice.len(),
        })
    }
}
