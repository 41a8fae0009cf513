//! Real, published models on the library's kernels: the llama2.c decoder format
//! (Karpathy's `stories260K` and the other tinyllamas), its BPE tokenizer and its sampler.
//!
//! Everything here works on borrowed bytes and caller-provided buffers, so firmware can run a
//! model from flash (`include_bytes!` through [`Align4`]) with `static` buffers sized by
//! `const fn`s of the [`llama2::Config`], and a host can load the same files into a `Vec`.
//! Nothing allocates; every malformed input is an `Err`, never a panic.
//!
//! ```
//! use microattn::models::llama2::{Config, Llama2, RunState};
//! use microattn::models::Align4;
//!
//! // A tiny checkpoint with all-zero weights: the 28-byte header, then the f32 tensors.
//! const CONFIG: Config = Config { dim: 8, hidden_dim: 16, n_layers: 1, n_heads: 2,
//!     n_kv_heads: 1, vocab_size: 4, seq_len: 4, shared_classifier: true };
//! let mut file = Align4([0u8; CONFIG.checkpoint_bytes()]);
//! file.0[..28].copy_from_slice(&CONFIG.header_bytes());
//! let model = Llama2::from_bytes(&file.0)?;
//! // State and KV cache for 4 positions, sized at compile time (a `static` in firmware).
//! let mut buffer = [0.0f32; RunState::buffer_len(&CONFIG, 4)];
//! let mut state = RunState::new(model.config(), 4, &mut buffer)?;
//! let logits = model.forward(&mut state, 1, 0)?;
//! assert_eq!(logits, &[0.0; 4]);
//! # Ok::<(), microattn::models::ModelError>(())
//! ```

pub mod bert;
pub mod generate;
pub mod llama2;
pub mod q8;
pub mod safetensors;
pub mod sampler;
pub mod tokenizer;

use crate::error::Error;
use core::fmt;

/// Bytes aligned to 4, so a checkpoint embedded with `include_bytes!` can be viewed as `f32`
/// without a copy:
///
/// ```
/// use microattn::models::Align4;
/// static BYTES: &Align4<[u8]> = &Align4(*b"abcd");
/// assert_eq!(BYTES.0.as_ptr() as usize % 4, 0);
/// // static MODEL: &Align4<[u8]> = &Align4(*include_bytes!("stories260K.bin"));
/// ```
#[repr(C, align(4))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Align4<B: ?Sized>(pub B);

/// Why a model, tokenizer or sampler refused its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ModelError {
    /// The file ends before the data its header announces.
    Truncated {
        /// Bytes the header requires.
        needed: usize,
        /// Bytes there are.
        found: usize,
    },
    /// Checkpoint bytes that do not start at a 4-byte boundary (wrap them in [`Align4`]), or
    /// a big-endian target, where the little-endian floats cannot be viewed in place.
    Misaligned,
    /// Header values that are not positive or do not fit together (heads not dividing the
    /// width, an odd head size, sizes overflowing `usize`).
    InvalidConfig,
    /// A token id outside the vocabulary.
    TokenOutOfRange {
        /// The token.
        token: u32,
        /// Vocabulary size.
        vocab_size: usize,
    },
    /// A position at or beyond the KV cache capacity.
    PositionOutOfRange {
        /// The position.
        pos: usize,
        /// Positions the cache holds.
        capacity: usize,
    },
    /// A caller buffer shorter than the `*_len` function asks for.
    BufferTooSmall {
        /// Elements needed.
        needed: usize,
        /// Elements found.
        found: usize,
    },
    /// A run state built for another configuration.
    StateMismatch,
    /// A malformed tokenizer file (negative lengths, pieces past the end).
    InvalidTokenizer,
    /// A text the tokenizer cannot encode (no `" "` piece for the dummy prefix).
    Unencodable,
    /// A temperature or top-p that is negative or not finite.
    InvalidSampling,
    /// A kernel refused its input.
    Kernel(Error),
}

impl From<Error> for ModelError {
    fn from(e: Error) -> Self {
        ModelError::Kernel(e)
    }
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ModelError::Truncated { needed, found } => {
                write!(f, "file has {found} bytes, its header needs {needed}")
            }
            ModelError::Misaligned => {
                f.write_str("checkpoint bytes not 4-aligned (or big-endian target)")
            }
            ModelError::InvalidConfig => f.write_str("invalid model configuration"),
            ModelError::TokenOutOfRange { token, vocab_size } => {
                write!(f, "token {token} outside vocabulary of {vocab_size}")
            }
            ModelError::PositionOutOfRange { pos, capacity } => {
                write!(f, "position {pos} beyond cache of {capacity}")
            }
            ModelError::BufferTooSmall { needed, found } => {
                write!(f, "buffer has {found} elements, needs {needed}")
            }
            ModelError::StateMismatch => f.write_str("run state built for another model"),
            ModelError::InvalidTokenizer => f.write_str("malformed tokenizer file"),
            ModelError::Unencodable => f.write_str("text cannot be encoded"),
            ModelError::InvalidSampling => f.write_str("invalid temperature or top-p"),
            ModelError::Kernel(e) => write!(f, "kernel error: {e}"),
        }
    }
}

impl core::error::Error for ModelError {}

/// Splits the first `n` elements off `rest`, or [`ModelError::BufferTooSmall`] naming `total`.
pub(crate) fn take<'s, T>(
    rest: &mut &'s mut [T],
    n: usize,
    total: usize,
    found: usize,
) -> Result<&'s mut [T], ModelError> {
    let buf = core::mem::take(rest);
    match buf.split_at_mut_checked(n) {
        Some((head, tail)) => {
            *rest = tail;
            Ok(head)
        }
        None => Err(ModelError::BufferTooSmall {
            needed: total,
            found,
        }),
    }
}
