//! Dense layers: `y = x Wᵀ + b`, PyTorch's `nn.Linear` with its weight layout.
//!
//! `x` is `[rows, in_features]`, `W` is `[out_features, in_features]` (row-major, as PyTorch
//! stores it), `b` is `[out_features]` or absent, `y` is `[rows, out_features]`. Every output
//! is the dot product of an `x` row and a `W` row: both are contiguous, so no transpose is
//! ever needed. Rows are processed in blocks of [`ROW_BLOCK`]: each `W` row is loaded once per
//! block instead of once per row, which keeps large weight matrices from being re-streamed
//! from memory for every input row.
//!
//! Tiers: [`linear`] (f32), [`linear_typed`] (`x` and `W` in one storage type, output in any
//! storage type, f32 arithmetic), [`linear_mixed`] (f32 activations, e.g. from a scratch
//! buffer, against weights stored as f16/bf16), and [`linear_fixed`] (const-generic shapes).
//!
//! Finite inputs give finite f32 results: a dot product whose f32 sum overflows (to inf, or
//! to `inf - inf = NaN`) is recomputed on rescaled inputs and saturates at `±f32::MAX`.

use crate::attention::score::{dot_rescaled, saturate};
use crate::element::Element;
use crate::error::{check_len, nonzero, product, Error};

/// Input rows that share one pass over the weight matrix.
pub const ROW_BLOCK: usize = 8;

/// Shape of a dense layer call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct LinearShape {
    /// Input rows (tokens).
    pub rows: usize,
    /// Features per input row: the row length of `x` and of `W`.
    pub in_features: usize,
    /// Features per output row: the number of rows of `W` and the length of `b`.
    pub out_features: usize,
}

impl LinearShape {
    /// `rows` inputs of `in_features` mapped to `out_features`.
    pub const fn new(rows: usize, in_features: usize, out_features: usize) -> Self {
        LinearShape {
            rows,
            in_features,
            out_features,
        }
    }

    /// Checks the dimensions and returns the element counts of `(x, W, y)`.
    pub fn lengths(&self) -> Result<(usize, usize, usize), Error> {
        nonzero(&[self.rows, self.in_features, self.out_features])?;
        Ok((
            product(&[self.rows, self.in_features])?,
            product(&[self.out_features, self.in_features])?,
            product(&[self.rows, self.out_features])?,
        ))
    }
}

/// `y = x Wᵀ + b` in f32.
///
/// Errors: a zero dimension, or `x`, `w`, `b`, `y` lengths that do not match `shape`.
///
/// ```
/// use microattn::projection::{linear, LinearShape};
/// let x = [1.0f32, 2.0]; // one row, two features
/// let w = [1.0f32, 0.0, 0.0, 1.0, 1.0, 1.0]; // three outputs
/// let mut y = [0.0f32; 3];
/// linear(&x, &w, Some(&[0.5, 0.5, 0.5]), &mut y, LinearShape::new(1, 2, 3))?;
/// assert_eq!(y, [1.5, 2.5, 3.5]);
/// # Ok::<(), microattn::Error>(())
/// ```
pub fn linear(
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    y: &mut [f32],
    shape: LinearShape,
) -> Result<(), Error> {
    linear_typed(x, w, b, y, shape)
}

/// `y = x Wᵀ + b` with `x`, `W`, `b` stored as `E` and `y` stored as `Y` (each `f32`, `f16`
/// or `bf16`); products and sums in f32, one rounding to `Y` per output. `Y = f32` writes
/// activations into an f32 scratch buffer.
///
/// ```
/// use microattn::projection::{linear_typed, LinearShape};
/// use microattn::f16;
/// let x = [f16::from_f32(1.0), f16::from_f32(2.0)];
/// let w = [f16::from_f32(3.0), f16::from_f32(4.0)];
/// let mut y = [0.0f32; 1];
/// linear_typed(&x, &w, None, &mut y, LinearShape::new(1, 2, 1))?;
/// assert_eq!(y, [11.0]);
/// # Ok::<(), microattn::Error>(())
/// ```
pub fn linear_typed<E: Element, Y: Element>(
    x: &[E],
    w: &[E],
    b: Option<&[E]>,
    y: &mut [Y],
    shape: LinearShape,
) -> Result<(), Error> {
    validate(x, w, b, y.len(), shape)?;
    linear_core(x, w, b, y, shape, E::dot);
    Ok(())
}

/// `y = x Wᵀ + b` with f32 activations `x` against weights and bias stored as `W`, output
/// stored as `Y`: the form a layer takes when its input comes from an f32 scratch buffer
/// and its weights are stored in f16 or bf16.
///
/// ```
/// use microattn::projection::{linear_mixed, LinearShape};
/// use microattn::bf16;
/// let x = [0.5f32, 0.25];
/// let w = [bf16::from_f32(2.0), bf16::from_f32(4.0)];
/// let mut y = [bf16::ZERO; 1];
/// linear_mixed(&x, &w, Some(&[bf16::from_f32(1.0)]), &mut y, LinearShape::new(1, 2, 1))?;
/// assert_eq!(y[0].to_f32(), 3.0);
/// # Ok::<(), microattn::Error>(())
/// ```
pub fn linear_mixed<W: Element, Y: Element>(
    x: &[f32],
    w: &[W],
    b: Option<&[W]>,
    y: &mut [Y],
    shape: LinearShape,
) -> Result<(), Error> {
    validate(x, w, b, y.len(), shape)?;
    linear_core(x, w, b, y, shape, dot_mixed::<W>);
    Ok(())
}

/// Fixed-size f32 dense layer: a wrong shape does not compile. Errors only when a dimension
/// is zero.
///
/// ```
/// use microattn::projection::linear_fixed;
/// let x = [[1.0f32, 2.0], [3.0, 4.0]];
/// let w = [[1.0f32, 1.0]];
/// let mut y = [[0.0f32; 1]; 2];
/// linear_fixed(&x, &w, None, &mut y)?;
/// assert_eq!(y, [[3.0], [7.0]]);
/// # Ok::<(), microattn::Error>(())
/// ```
pub fn linear_fixed<const N: usize, const IN: usize, const OUT: usize>(
    x: &[[f32; IN]; N],
    w: &[[f32; IN]; OUT],
    b: Option<&[f32; OUT]>,
    y: &mut [[f32; OUT]; N],
) -> Result<(), Error> {
    linear(
        x.as_flattened(),
        w.as_flattened(),
        b.map(|b| &b[..]),
        y.as_flattened_mut(),
        LinearShape::new(N, IN, OUT),
    )
}

/// Checks every length of a dense layer call.
fn validate<X, W>(
    x: &[X],
    w: &[W],
    b: Option<&[W]>,
    y_len: usize,
    shape: LinearShape,
) -> Result<(), Error> {
    let (x_len, w_len, expected_y) = shape.lengths()?;
    check_len(x, x_len)?;
    check_len(w, w_len)?;
    if let Some(b) = b {
        check_len(b, shape.out_features)?;
    }
    if y_len != expected_y {
        return Err(Error::LengthMismatch {
            expected: expected_y,
            found: y_len,
        });
    }
    Ok(())
}

/// The shared loop: for each block of input rows, each `W` row meets every row of the block
/// while it is hot in cache. Lengths must have been validated.
#[inline]
fn linear_core<X: Element, W: Element, Y: Element>(
    x: &[X],
    w: &[W],
    b: Option<&[W]>,
    y: &mut [Y],
    shape: LinearShape,
    dot: impl Fn(&[X], &[W]) -> f32,
) {
    // Validated positive; `max(1)` only lets the compiler drop the zero-chunk panic paths.
    let (n_in, n_out) = (shape.in_features.max(1), shape.out_features.max(1));
    // Saturating: a wrapped block size could be 0.
    let x_blocks = x.chunks(ROW_BLOCK.saturating_mul(n_in));
    let y_blocks = y.chunks_mut(ROW_BLOCK.saturating_mul(n_out));
    for (x_block, y_block) in x_blocks.zip(y_blocks) {
        for (o, w_row) in w.chunks_exact(n_in).enumerate() {
            let bias = b.and_then(|b| b.get(o)).map_or(0.0, |&b| b.to_f32());
            let rows = x_block
                .chunks_exact(n_in)
                .zip(y_block.chunks_exact_mut(n_out));
            for (x_row, y_row) in rows {
                if let Some(out) = y_row.get_mut(o) {
                    let mut value = dot(x_row, w_row) + bias;
                    if !value.is_finite() {
                        // The f32 sum overflowed (inf, or inf - inf = NaN): recompute it
                        // rescaled, so finite inputs give a finite (saturated) output.
                        value = saturate(dot_rescaled(&[(x_row, w_row)], 1.0) + bias);
                    }
                    *out = Y::from_f32(value);
                }
            }
        }
    }
}

/// Dot product of f32 activations with weights stored as `W`, with the same eight
/// independent accumulators and pairwise reduction as [`crate::arch::dot`] so both paths
/// round alike.
#[inline]
fn dot_mixed<W: Element>(x: &[f32], w: &[W]) -> f32 {
    const LANES: usize = 8;
    let mut acc = [0.0f32; LANES];
    let (x_chunks, w_chunks) = (x.chunks_exact(LANES), w.chunks_exact(LANES));
    let (x_tail, w_tail) = (x_chunks.remainder(), w_chunks.remainder());
    for (xs, ws) in x_chunks.zip(w_chunks) {
        for ((a, &xi), &wi) in acc.iter_mut().zip(xs).zip(ws) {
            *a += xi * wi.to_f32();
        }
    }
    for ((a, &xi), &wi) in acc.iter_mut().zip(x_tail).zip(w_tail) {
        *a += xi * wi.to_f32();
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}
