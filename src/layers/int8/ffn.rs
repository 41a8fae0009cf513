//! Int8 transformer FFN `y = W2 act(W1 x + b1) + b2`: two int8 dense layers (per-channel
//! weight scales, `i32` biases) around an activation table. Integer only.

use super::norm::Int8Lut;
use crate::attention::int8::{int8_dense, Int8Dense};
use crate::error::{check_len, nonzero, product, Error};
use crate::layers::FfnShape;
use crate::projection::LinearShape;

/// The prepared layers of an int8 FFN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Int8FfnParams<'a> {
    /// `linear1`: input scale → hidden scale, `[hidden, dim]`.
    pub linear1: Int8Dense<'a>,
    /// The activation, hidden scale → activation scale.
    pub activation: Int8Lut,
    /// `linear2`: activation scale → output scale, `[dim, hidden]`.
    pub linear2: Int8Dense<'a>,
}

/// Largest values each stage of an FFN produced before saturation, in its output steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Int8FfnStats {
    /// `linear1` outputs (before the activation).
    pub hidden: i64,
    /// `linear2` outputs.
    pub out: i64,
}

/// `i8` scratch of [`int8_ffn`]: one row of hidden activations.
pub const fn int8_ffn_scratch_len(shape: FfnShape) -> usize {
    shape.hidden
}

/// Int8 FFN of `x` (`[rows, dim]`) into `y` (`[rows, dim]`), a row at a time through the
/// `hidden`-wide `scratch`. Returns the stage peaks.
///
/// Errors: a zero dimension, lengths that do not match `shape` (tensors, weights, biases,
/// multipliers), short scratch, `in_features` above
/// [`MAX_DENSE_IN`](crate::attention::int8::MAX_DENSE_IN).
pub fn int8_ffn(
    x: &[i8],
    params: &Int8FfnParams<'_>,
    y: &mut [i8],
    shape: FfnShape,
    scratch: &mut [i8],
) -> Result<Int8FfnStats, Error> {
    let FfnShape { rows, dim, hidden } = shape;
    nonzero(&[rows, dim, hidden])?;
    let n = product(&[rows, dim])?;
    check_len(x, n)?;
    check_len(y, n)?;
    let found = scratch.len();
    let h = scratch.get_mut(..hidden).ok_or(Error::ScratchTooSmall {
        needed: hidden,
        found,
    })?;
    let first = LinearShape::new(1, dim, hidden);
    let second = LinearShape::new(1, hidden, dim);
    // `int8_dense` checks each layer before it writes, so a bad layer fails on the first
    // row with `y` untouched.
    let mut stats = Int8FfnStats::default();
    for (x_row, y_row) in x.chunks_exact(dim).zip(y.chunks_exact_mut(dim)) {
        stats.hidden = stats
            .hidden
            .max(int8_dense(x_row, &params.linear1, h, first)?);
        params.activation.apply_in_place(h);
        stats.out = stats
            .out
            .max(int8_dense(h, &params.linear2, y_row, second)?);
    }
    Ok(stats)
}
