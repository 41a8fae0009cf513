//! Position-wise feed-forward networks on top of [`crate::projection`]:
//! the transformer FFN `y = W2 act(W1 x + b1) + b2` and the gated form
//! `y = W_down (act(W_gate x) ∘ (W_up x))` (SwiGLU with SiLU as in LLaMA, GeGLU with GELU).
//!
//! Weights use PyTorch's `nn.Linear` layout (`[out_features, in_features]`). Inputs, weights
//! and outputs are stored as one [`Element`] type; the hidden activations live in the
//! caller's f32 scratch, so nothing between the two projections is rounded.
//!
//! Rows are processed in blocks as large as the scratch allows: the minimum scratch,
//! [`ffn_scratch_len`], holds one row of hidden activations; a scratch of `k` times that lets
//! each weight matrix be streamed once per `k` rows.

use super::{Activation, Footprint};
use crate::element::Element;
use crate::error::{check_len, nonzero, product, Error};
use crate::projection::{linear_mixed, linear_typed, LinearShape};

/// Sizes of a feed-forward call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FfnShape {
    /// Input rows (tokens).
    pub rows: usize,
    /// Model width: input and output features.
    pub dim: usize,
    /// Hidden width (`dim_feedforward`).
    pub hidden: usize,
}

impl FfnShape {
    /// `rows` tokens of width `dim` through a hidden layer of width `hidden`.
    pub const fn new(rows: usize, dim: usize, hidden: usize) -> Self {
        FfnShape { rows, dim, hidden }
    }
}

/// The two projections of a transformer FFN (`linear1`, `linear2` in PyTorch's encoder layer).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FfnWeights<'a, E = f32> {
    /// `[hidden, dim]`.
    pub w1: &'a [E],
    /// `[hidden]`, or none.
    pub b1: Option<&'a [E]>,
    /// `[dim, hidden]`.
    pub w2: &'a [E],
    /// `[dim]`, or none.
    pub b2: Option<&'a [E]>,
}

/// The three bias-free projections of a gated FFN (LLaMA's `w1`, `w3`, `w2`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GatedFfnWeights<'a, E = f32> {
    /// Gate projection, `[hidden, dim]` (LLaMA `w1`); the activation applies to its output.
    pub gate: &'a [E],
    /// Up projection, `[hidden, dim]` (LLaMA `w3`).
    pub up: &'a [E],
    /// Down projection, `[dim, hidden]` (LLaMA `w2`).
    pub down: &'a [E],
}

/// f32 scratch [`ffn`] needs at least: one row of hidden activations. More scratch, in
/// multiples of this, processes more rows per pass over the weights.
pub const fn ffn_scratch_len(shape: FfnShape) -> usize {
    shape.hidden
}

/// f32 scratch [`gated_ffn`] needs at least: the gate and up activations of one row.
pub const fn gated_ffn_scratch_len(shape: FfnShape) -> usize {
    shape.hidden.saturating_mul(2)
}

/// Memory of [`ffn`] with biases: `2 * dim * hidden + hidden + dim` weights and the minimum
/// scratch.
pub const fn ffn_footprint(shape: FfnShape) -> Footprint {
    Footprint {
        weights: shape
            .dim
            .saturating_mul(shape.hidden)
            .saturating_mul(2)
            .saturating_add(shape.hidden)
            .saturating_add(shape.dim),
        scratch: ffn_scratch_len(shape),
        ..Footprint::NONE
    }
}

/// Memory of [`gated_ffn`]: `3 * dim * hidden` weights and the minimum scratch.
pub const fn gated_ffn_footprint(shape: FfnShape) -> Footprint {
    Footprint {
        weights: shape.dim.saturating_mul(shape.hidden).saturating_mul(3),
        scratch: gated_ffn_scratch_len(shape),
        ..Footprint::NONE
    }
}

/// Which network a call runs.
#[derive(Clone, Copy)]
enum Net<'w, 'a, E> {
    Plain(&'w FfnWeights<'a, E>),
    Gated(&'w GatedFfnWeights<'a, E>),
}

impl<E: Element> Net<'_, '_, E> {
    /// f32 scratch per row.
    fn scratch_per_row(&self, hidden: usize) -> Result<usize, Error> {
        match self {
            Net::Plain(_) => Ok(hidden),
            Net::Gated(_) => hidden.checked_mul(2).ok_or(Error::ShapeOverflow),
        }
    }

    /// Checks the weights against `shape`.
    fn validate(&self, shape: FfnShape) -> Result<(), Error> {
        let wlen = product(&[shape.dim, shape.hidden])?;
        match self {
            Net::Plain(w) => {
                check_len(w.w1, wlen)?;
                check_len(w.w2, wlen)?;
                if let Some(b) = w.b1 {
                    check_len(b, shape.hidden)?;
                }
                if let Some(b) = w.b2 {
                    check_len(b, shape.dim)?;
                }
            }
            Net::Gated(w) => {
                check_len(w.gate, wlen)?;
                check_len(w.up, wlen)?;
                check_len(w.down, wlen)?;
            }
        }
        Ok(())
    }

    /// Hidden activations of `rows` input rows into `h` (`rows * scratch_per_row`).
    fn expand(
        &self,
        x: &[E],
        h: &mut [f32],
        rows: usize,
        shape: FfnShape,
        act: Activation,
    ) -> Result<(), Error> {
        let up = LinearShape::new(rows, shape.dim, shape.hidden);
        match self {
            Net::Plain(w) => {
                linear_typed(x, w.w1, w.b1, h, up)?;
                act.apply_in_place(h);
            }
            Net::Gated(w) => {
                let (half, found) = (rows * shape.hidden, h.len());
                let (g, u) = h.split_at_mut_checked(half).ok_or(too_small(half, found))?;
                linear_typed(x, w.gate, None, g, up)?;
                linear_typed(x, w.up, None, u, up)?;
                for (gi, &ui) in g.iter_mut().zip(u.iter()) {
                    *gi = act.apply(*gi) * ui;
                }
            }
        }
        Ok(())
    }

    /// Output rows from the hidden activations `h`.
    fn contract(&self, h: &[f32], y: &mut [E], rows: usize, shape: FfnShape) -> Result<(), Error> {
        let down = LinearShape::new(rows, shape.hidden, shape.dim);
        let needed = rows * shape.hidden;
        let h = h.get(..needed).ok_or(too_small(needed, h.len()))?;
        match self {
            Net::Plain(w) => linear_mixed(h, w.w2, w.b2, y, down),
            Net::Gated(w) => linear_mixed(h, w.down, None, y, down),
        }
    }

    /// Validates a call; returns the rows per block the scratch allows.
    fn prepare(
        &self,
        x_len: usize,
        y_len: usize,
        shape: FfnShape,
        scratch_len: usize,
    ) -> Result<usize, Error> {
        nonzero(&[shape.rows, shape.dim, shape.hidden])?;
        let io = product(&[shape.rows, shape.dim])?;
        for found in [x_len, y_len] {
            if found != io {
                return Err(Error::LengthMismatch {
                    expected: io,
                    found,
                });
            }
        }
        self.validate(shape)?;
        let per_row = self.scratch_per_row(shape.hidden)?;
        if scratch_len < per_row {
            return Err(Error::ScratchTooSmall {
                needed: per_row,
                found: scratch_len,
            });
        }
        Ok((scratch_len / per_row).min(shape.rows))
    }

    fn run(
        &self,
        x: &[E],
        y: &mut [E],
        act: Activation,
        shape: FfnShape,
        scratch: &mut [f32],
    ) -> Result<(), Error> {
        let block = self.prepare(x.len(), y.len(), shape, scratch.len())?;
        let per_row = self.scratch_per_row(shape.hidden)?;
        // Blocks are whole rows; `block` and `dim` are positive after `prepare`.
        let chunk = nonzero_product(block, shape.dim)?;
        for (xb, yb) in x.chunks(chunk).zip(y.chunks_mut(chunk)) {
            let rows = xb
                .len()
                .checked_div(shape.dim)
                .ok_or(Error::ZeroDimension)?;
            let h = scratch_part(scratch, rows * per_row)?;
            self.expand(xb, h, rows, shape, act)?;
            self.contract(h, yb, rows, shape)?;
        }
        Ok(())
    }

    fn run_in_place(
        &self,
        x: &mut [E],
        act: Activation,
        shape: FfnShape,
        scratch: &mut [f32],
    ) -> Result<(), Error> {
        let block = self.prepare(x.len(), x.len(), shape, scratch.len())?;
        let per_row = self.scratch_per_row(shape.hidden)?;
        for xb in x.chunks_mut(nonzero_product(block, shape.dim)?) {
            let rows = xb
                .len()
                .checked_div(shape.dim)
                .ok_or(Error::ZeroDimension)?;
            let h = scratch_part(scratch, rows * per_row)?;
            // The block's inputs are consumed into `h` before its outputs overwrite them.
            self.expand(xb, h, rows, shape, act)?;
            self.contract(h, xb, rows, shape)?;
        }
        Ok(())
    }
}

/// [`Error::ScratchTooSmall`] for `needed` elements out of `found`.
fn too_small(needed: usize, found: usize) -> Error {
    Error::ScratchTooSmall { needed, found }
}

/// The first `n` elements of `scratch`. Callers size the scratch first: the error is for a
/// bug, instead of a panic.
fn scratch_part(scratch: &mut [f32], n: usize) -> Result<&mut [f32], Error> {
    let found = scratch.len();
    scratch.get_mut(..n).ok_or(too_small(n, found))
}

/// `a * b`, which must be positive (a block of whole rows).
fn nonzero_product(a: usize, b: usize) -> Result<usize, Error> {
    match a.checked_mul(b) {
        Some(0) => Err(Error::ZeroDimension),
        Some(n) => Ok(n),
        None => Err(Error::ShapeOverflow),
    }
}

/// f32 scratch [`ffn_rows`] needs at least: one row of hidden activations and one output row.
pub(crate) const fn ffn_rows_scratch_len(shape: FfnShape) -> usize {
    shape.hidden.saturating_add(shape.dim)
}

/// The FFN of every row of `x` with the output kept in f32: for each row, in order,
/// `finish(x_row, y_row)` gets the input row (still unchanged, and writable) and its f32
/// output, so a transformer layer can fold the residual and the norm in without rounding
/// the FFN output to the storage type. Blocks are as large as `scratch` allows (at least
/// [`ffn_rows_scratch_len`]).
pub(crate) fn ffn_rows<E: Element>(
    x: &mut [E],
    weights: &FfnWeights<'_, E>,
    activation: Activation,
    shape: FfnShape,
    scratch: &mut [f32],
    mut finish: impl FnMut(&mut [E], &[f32]) -> Result<(), Error>,
) -> Result<(), Error> {
    let net = Net::Plain(weights);
    // Shapes and weights first (this also rules out zero sizes), then the scratch.
    let rows = net.prepare(x.len(), x.len(), shape, usize::MAX)?;
    let per_row = ffn_rows_scratch_len(shape);
    if scratch.len() < per_row {
        return Err(Error::ScratchTooSmall {
            needed: per_row,
            found: scratch.len(),
        });
    }
    let per_block = scratch
        .len()
        .checked_div(per_row)
        .ok_or(Error::ZeroDimension)?;
    let block = rows.min(per_block);
    let h_len = block * shape.hidden;
    let found = scratch.len();
    let (h_area, y_area) = scratch
        .split_at_mut_checked(h_len)
        .ok_or(too_small(h_len, found))?;
    for xb in x.chunks_mut(nonzero_product(block, shape.dim)?) {
        let rows = xb
            .len()
            .checked_div(shape.dim)
            .ok_or(Error::ZeroDimension)?;
        let h = scratch_part(h_area, rows * shape.hidden)?;
        net.expand(xb, h, rows, shape, activation)?;
        let y = scratch_part(y_area, rows * shape.dim)?;
        let down = LinearShape::new(rows, shape.hidden, shape.dim);
        linear_mixed(h, weights.w2, weights.b2, y, down)?;
        for (x_row, y_row) in xb
            .chunks_exact_mut(shape.dim)
            .zip(y.chunks_exact(shape.dim))
        {
            finish(x_row, y_row)?;
        }
    }
    Ok(())
}

/// Transformer FFN `y = W2 act(W1 x + b1) + b2` on `x` `[rows, dim]` into `y` `[rows, dim]`.
///
/// Errors: a zero dimension, a tensor or weight length that does not match `shape`,
/// `scratch` shorter than [`ffn_scratch_len`].
///
/// ```
/// use microattn::layers::{ffn, ffn_scratch_len, Activation, FfnShape, FfnWeights};
/// const SHAPE: FfnShape = FfnShape::new(1, 2, 2);
/// let eye = [1.0f32, 0.0, 0.0, 1.0];
/// let weights = FfnWeights { w1: &eye, b1: None, w2: &eye, b2: Some(&[0.5, 0.5]) };
/// let mut y = [0.0f32; 2];
/// let mut scratch = [0.0f32; ffn_scratch_len(SHAPE)];
/// ffn(&[-1.0f32, 2.0], &weights, Activation::Relu, &mut y, SHAPE, &mut scratch)?;
/// assert_eq!(y, [0.5, 2.5]);
/// # Ok::<(), microattn::Error>(())
/// ```
pub fn ffn<E: Element>(
    x: &[E],
    weights: &FfnWeights<'_, E>,
    activation: Activation,
    y: &mut [E],
    shape: FfnShape,
    scratch: &mut [f32],
) -> Result<(), Error> {
    Net::Plain(weights).run(x, y, activation, shape, scratch)
}

/// [`ffn`] with the output written over the input.
pub fn ffn_in_place<E: Element>(
    x: &mut [E],
    weights: &FfnWeights<'_, E>,
    activation: Activation,
    shape: FfnShape,
    scratch: &mut [f32],
) -> Result<(), Error> {
    Net::Plain(weights).run_in_place(x, activation, shape, scratch)
}

/// Gated FFN `y = W_down (act(W_gate x) ∘ (W_up x))`: SwiGLU with [`Activation::Silu`]
/// (LLaMA), GeGLU with [`Activation::Gelu`].
///
/// Errors: as [`ffn`], with scratch shorter than [`gated_ffn_scratch_len`].
pub fn gated_ffn<E: Element>(
    x: &[E],
    weights: &GatedFfnWeights<'_, E>,
    activation: Activation,
    y: &mut [E],
    shape: FfnShape,
    scratch: &mut [f32],
) -> Result<(), Error> {
    Net::Gated(weights).run(x, y, activation, shape, scratch)
}

/// [`gated_ffn`] with the output written over the input.
pub fn gated_ffn_in_place<E: Element>(
    x: &mut [E],
    weights: &GatedFfnWeights<'_, E>,
    activation: Activation,
    shape: FfnShape,
    scratch: &mut [f32],
) -> Result<(), Error> {
    Net::Gated(weights).run_in_place(x, activation, shape, scratch)
}

/// The two projections of a transformer FFN as arrays, for [`ffn_fixed`]: `DIM` features,
/// `HIDDEN` hidden units, PyTorch's layout.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FfnWeightsFixed<'a, E, const DIM: usize, const HIDDEN: usize> {
    /// `linear1.weight`, `[HIDDEN, DIM]`.
    pub w1: &'a [[E; DIM]; HIDDEN],
    /// `linear1.bias`, or none.
    pub b1: Option<&'a [E; HIDDEN]>,
    /// `linear2.weight`, `[DIM, HIDDEN]`.
    pub w2: &'a [[E; HIDDEN]; DIM],
    /// `linear2.bias`, or none.
    pub b2: Option<&'a [E; DIM]>,
}

impl<'a, E, const DIM: usize, const HIDDEN: usize> FfnWeightsFixed<'a, E, DIM, HIDDEN> {
    /// The same weights as slices, for [`ffn`].
    pub fn as_slices(&self) -> FfnWeights<'a, E> {
        FfnWeights {
            w1: self.w1.as_flattened(),
            b1: self.b1.map(|b| &b[..]),
            w2: self.w2.as_flattened(),
            b2: self.b2.map(|b| &b[..]),
        }
    }
}

/// The three bias-free projections of a gated FFN as arrays, for [`gated_ffn_fixed`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GatedFfnWeightsFixed<'a, E, const DIM: usize, const HIDDEN: usize> {
    /// Gate projection `[HIDDEN, DIM]` (LLaMA `w1`).
    pub gate: &'a [[E; DIM]; HIDDEN],
    /// Up projection `[HIDDEN, DIM]` (LLaMA `w3`).
    pub up: &'a [[E; DIM]; HIDDEN],
    /// Down projection `[DIM, HIDDEN]` (LLaMA `w2`).
    pub down: &'a [[E; HIDDEN]; DIM],
}

impl<'a, E, const DIM: usize, const HIDDEN: usize> GatedFfnWeightsFixed<'a, E, DIM, HIDDEN> {
    /// The same weights as slices, for [`gated_ffn`].
    pub fn as_slices(&self) -> GatedFfnWeights<'a, E> {
        GatedFfnWeights {
            gate: self.gate.as_flattened(),
            up: self.up.as_flattened(),
            down: self.down.as_flattened(),
        }
    }
}

/// Fixed-size [`ffn`]: `ROWS` rows of `DIM` features through `HIDDEN` hidden units, the
/// hidden activations of a row in `scratch`. Shapes are array lengths, so a wrong shape
/// does not compile; errors only for a zero `ROWS`, `DIM` or `HIDDEN`.
///
/// ```
/// use microattn::layers::{ffn_fixed, Activation, FfnWeightsFixed};
/// let eye = [[1.0f32, 0.0], [0.0, 1.0]];
/// let weights = FfnWeightsFixed { w1: &eye, b1: None, w2: &eye, b2: Some(&[0.5, 0.5]) };
/// let mut y = [[0.0f32; 2]; 2];
/// let mut scratch = [0.0f32; 2];
/// ffn_fixed(&[[-1.0f32, 2.0], [3.0, -4.0]], &weights, Activation::Relu, &mut y, &mut scratch)?;
/// assert_eq!(y, [[0.5, 2.5], [3.5, 0.5]]);
/// # Ok::<(), microattn::Error>(())
/// ```
pub fn ffn_fixed<E: Element, const ROWS: usize, const DIM: usize, const HIDDEN: usize>(
    x: &[[E; DIM]; ROWS],
    weights: &FfnWeightsFixed<'_, E, DIM, HIDDEN>,
    activation: Activation,
    y: &mut [[E; DIM]; ROWS],
    scratch: &mut [f32; HIDDEN],
) -> Result<(), Error> {
    ffn(
        x.as_flattened(),
        &weights.as_slices(),
        activation,
        y.as_flattened_mut(),
        FfnShape::new(ROWS, DIM, HIDDEN),
        scratch,
    )
}

/// Fixed-size [`gated_ffn`] (SwiGLU with [`Activation::Silu`]): the gate and up activations
/// of a row in `scratch`. Errors as [`ffn_fixed`].
///
/// ```
/// use microattn::layers::{gated_ffn_fixed, silu, Activation, GatedFfnWeightsFixed};
/// let eye = [[1.0f32, 0.0], [0.0, 1.0]];
/// let weights = GatedFfnWeightsFixed { gate: &eye, up: &[[2.0, 0.0], [0.0, 2.0]], down: &eye };
/// let mut y = [[0.0f32; 2]];
/// let mut scratch = [[0.0f32; 2]; 2];
/// gated_ffn_fixed(&[[1.0f32, -1.0]], &weights, Activation::Silu, &mut y, &mut scratch)?;
/// // y = silu(x) · 2x per feature.
/// assert!((y[0][0] - silu(1.0) * 2.0).abs() < 1e-6);
/// assert!((y[0][1] - silu(-1.0) * -2.0).abs() < 1e-6);
/// # Ok::<(), microattn::Error>(())
/// ```
pub fn gated_ffn_fixed<E: Element, const ROWS: usize, const DIM: usize, const HIDDEN: usize>(
    x: &[[E; DIM]; ROWS],
    weights: &GatedFfnWeightsFixed<'_, E, DIM, HIDDEN>,
    activation: Activation,
    y: &mut [[E; DIM]; ROWS],
    scratch: &mut [[f32; HIDDEN]; 2],
) -> Result<(), Error> {
    gated_ffn(
        x.as_flattened(),
        &weights.as_slices(),
        activation,
        y.as_flattened_mut(),
        FfnShape::new(ROWS, DIM, HIDDEN),
        scratch.as_flattened_mut(),
    )
}
