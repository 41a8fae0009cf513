//! Scaled dot-product attention with a streaming softmax: self and cross, multi-head with
//! grouped-query (GQA) and multi-query (MQA) key/value heads, any [`Mask`], [`Score`] and
//! [`Bias`].
//!
//! Two paths compute the same function (each output row is the softmax-weighted mean of the
//! value rows its mask allows; rows with no allowed key are zero):
//!
//! - **per row** (every case): each query row walks only its allowed key ranges in tiles of
//!   64 keys (32 on microcontrollers): the tile's logits live on the stack, the softmax is
//!   online, and the output row is the accumulator. No scratch, no score matrix: memory is
//!   O(tile) per call whatever the lengths. The dot score is computed a tile at a time
//!   ([`Element::dot_keys`]) and the exponentials a vector at a time.
//! - **blocked** (x86_64 and aarch64 hosts, `Score::Dot`, `d` and `dv` at most 128, at least
//!   [`BLOCKED_MIN_ROWS`] query rows): blocks of [`arch::BLOCK_ROWS`] query rows against tiles
//!   of keys, so Q·Kᵀ and P·V run as register-blocked micro-kernels with the online softmax
//!   fused between them (`sdpa/blocked.rs`). Masks skip whole tiles; a block whose rows do not
//!   each allow a single contiguous run of keys (dilated, global or block-sparse masks) takes
//!   the per-row path. The blocked path reads every key in the union of its block's allowed
//!   runs, so a key that one row of the block may see is read (and weighted 0) for the others.
//!
//! Both accumulate `Σ_j e^(s_j - max) v_j` and divide by the sum at the end, which overflows
//! for values near `f32::MAX / keys`; the rare row that comes out non-finite is computed again
//! with weights that sum to 1/2 (see `attend_row_rescued`), so finite inputs always give
//! finite outputs, at no cost to other rows.

use super::score::{saturate, Bias, Score};
use crate::arch;
use crate::element::Element;
use crate::error::{check_len, mul, nonzero, product, Error};
use crate::mask::Mask;
use crate::math::{exp, sqrt};

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod blocked;

/// Query rows from which calls that qualify take the blocked path (fewer rows, e.g. a decode
/// step, would mostly fill a block with padding). The choice depends only on the shape, so
/// every row of a call is computed the same way.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub const BLOCKED_MIN_ROWS: usize = 8;

/// Keys scored per step of the online softmax of the int8 kernel: 32 logits = 128 bytes of
/// stack.
pub const TILE: usize = 32;

/// Keys per step of the float per-row path on hosts: 64 logits = 256 bytes of stack (fewer,
/// longer steps help decode, which streams K and V).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const ROW_TILE: usize = 2 * TILE;

/// Keys per step of the float per-row path on microcontrollers: [`TILE`], 128 bytes of stack.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const ROW_TILE: usize = TILE;

/// Shapes of one attention call. Tensors are row-major:
/// `q` is `[heads, lq, d]`, `k` is `[kv_heads, lk, d]`, `v` is `[kv_heads, lk, dv]` and the
/// output `[heads, lq, dv]`. Query head `h` reads KV head `h / (heads / kv_heads)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct AttentionShape {
    /// Query heads.
    pub heads: usize,
    /// Key/value heads: `heads` for MHA, a divisor for GQA, 1 for MQA.
    pub kv_heads: usize,
    /// Query rows per head.
    pub lq: usize,
    /// Keys per head.
    pub lk: usize,
    /// Query/key feature size.
    pub d: usize,
    /// Value feature size.
    pub dv: usize,
}

impl AttentionShape {
    /// One head: `q` `[lq, d]`, `k` `[lk, d]`, `v` `[lk, dv]`.
    pub const fn single(lq: usize, lk: usize, d: usize, dv: usize) -> Self {
        AttentionShape {
            heads: 1,
            kv_heads: 1,
            lq,
            lk,
            d,
            dv,
        }
    }

    /// `heads` query heads sharing `kv_heads` key/value heads.
    pub const fn multi_head(
        heads: usize,
        kv_heads: usize,
        lq: usize,
        lk: usize,
        d: usize,
        dv: usize,
    ) -> Self {
        AttentionShape {
            heads,
            kv_heads,
            lq,
            lk,
            d,
            dv,
        }
    }

    /// Checks the dimensions and returns the element counts of `(q, k, v, out)`.
    pub fn lengths(&self) -> Result<(usize, usize, usize, usize), Error> {
        nonzero(&[self.heads, self.kv_heads, self.lq, self.lk, self.d, self.dv])?;
        if self.heads % self.kv_heads != 0 {
            return Err(Error::HeadsMismatch);
        }
        Ok((
            product(&[self.heads, self.lq, self.d])?,
            product(&[self.kv_heads, self.lk, self.d])?,
            product(&[self.kv_heads, self.lk, self.dv])?,
            product(&[self.heads, self.lq, self.dv])?,
        ))
    }
}

/// Everything about an attention call except the tensors.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SdpaParams<'a> {
    /// Logit scale; `None` means `1 / sqrt(d)`. Must be finite.
    pub scale: Option<f32>,
    /// Score function.
    pub score: Score,
    /// Allowed keys per query row (and the query position offset).
    pub mask: Mask<'a>,
    /// Additive position bias.
    pub bias: Bias<'a>,
}

impl SdpaParams<'_> {
    /// The scale to use for feature size `d`, or [`Error::InvalidScale`].
    pub fn resolved_scale(&self, d: usize) -> Result<f32, Error> {
        let scale = self.scale.unwrap_or_else(|| 1.0 / sqrt(d as f32));
        if scale.is_finite() {
            Ok(scale)
        } else {
            Err(Error::InvalidScale)
        }
    }

    /// Checks the scale, mask and bias for `shape`; returns the scale.
    pub(crate) fn validate(&self, shape: &AttentionShape) -> Result<f32, Error> {
        self.mask.validate()?;
        self.bias.validate(shape.heads)?;
        self.resolved_scale(shape.d)
    }
}

/// Attention of `q` over `k`/`v` into `out` (f32), shapes as [`AttentionShape`] describes.
///
/// Rows with no allowed key are zero. Errors: any zero dimension, slice lengths that do not
/// match the shape, `heads % kv_heads != 0`, a non-finite scale, a malformed mask or bias.
///
/// ```
/// use microattn::attention::{sdpa, AttentionShape, SdpaParams};
/// use microattn::mask::{Mask, MaskTerm};
/// let (q, k, v) = ([1.0f32, 0.0], [1.0f32, 0.0, 0.0, 1.0], [10.0f32, 20.0]);
/// let mut out = [0.0f32; 1];
/// let causal = [MaskTerm::Causal];
/// let params = SdpaParams { mask: Mask::new(&causal), ..Default::default() };
/// sdpa(&q, &k, &v, &mut out, AttentionShape::single(1, 2, 2, 1), &params)?;
/// assert_eq!(out, [10.0]); // row 0 sees key 0 only
/// # Ok::<(), microattn::Error>(())
/// ```
pub fn sdpa(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &mut [f32],
    shape: AttentionShape,
    params: &SdpaParams<'_>,
) -> Result<(), Error> {
    let scale = validate(q, k, v, out.len(), shape, params)?;
    // f32 output rows are their own accumulators: no scratch.
    attend(q, k, v, out, shape, scale, params, &mut []);
    Ok(())
}

/// Attention with tensors stored as `E` (`f16`, `bf16`, or `f32`) and f32 arithmetic.
/// `scratch` holds one f32 output row: at least [`sdpa_scratch_len`] elements.
///
/// ```
/// use microattn::attention::{sdpa_typed, sdpa_scratch_len, AttentionShape, SdpaParams};
/// use microattn::f16;
/// const SHAPE: AttentionShape = AttentionShape::single(1, 2, 2, 1);
/// let q = [f16::from_f32(1.0), f16::ZERO];
/// let k = [f16::from_f32(1.0), f16::ZERO, f16::ZERO, f16::from_f32(1.0)];
/// let v = [f16::from_f32(10.0), f16::from_f32(20.0)];
/// let mut out = [f16::ZERO; 1];
/// let mut scratch = [0.0f32; sdpa_scratch_len(SHAPE)];
/// sdpa_typed(&q, &k, &v, &mut out, SHAPE, &SdpaParams::default(), &mut scratch)?;
/// assert!((out[0].to_f32() - 13.3).abs() < 0.1);
/// # Ok::<(), microattn::Error>(())
/// ```
pub fn sdpa_typed<E: Element>(
    q: &[E],
    k: &[E],
    v: &[E],
    out: &mut [E],
    shape: AttentionShape,
    params: &SdpaParams<'_>,
    scratch: &mut [f32],
) -> Result<(), Error> {
    let scale = validate(q, k, v, out.len(), shape, params)?;
    let needed = sdpa_scratch_len(shape);
    let found = scratch.len();
    let acc = scratch
        .get_mut(..needed)
        .ok_or(Error::ScratchTooSmall { needed, found })?;
    attend(q, k, v, out, shape, scale, params, acc);
    Ok(())
}

/// f32 elements of scratch [`sdpa_typed`] needs: one output row.
pub const fn sdpa_scratch_len(shape: AttentionShape) -> usize {
    shape.dv
}

/// Checks every shape and parameter of an attention call; returns the scale.
fn validate<E>(
    q: &[E],
    k: &[E],
    v: &[E],
    out_len: usize,
    shape: AttentionShape,
    params: &SdpaParams<'_>,
) -> Result<f32, Error> {
    let (q_len, k_len, v_len, expected_out) = shape.lengths()?;
    check_len(q, q_len)?;
    check_len(k, k_len)?;
    check_len(v, v_len)?;
    if out_len != expected_out {
        return Err(Error::LengthMismatch {
            expected: expected_out,
            found: out_len,
        });
    }
    params.validate(&shape)
}

/// Attention of validated tensors: the blocked path where it applies, else row by row.
/// `acc` is one f32 output row for element types other than f32 (whose output rows are their
/// own accumulators).
#[allow(clippy::too_many_arguments)]
fn attend<E: Element>(
    q: &[E],
    k: &[E],
    v: &[E],
    out: &mut [E],
    shape: AttentionShape,
    scale: f32,
    params: &SdpaParams<'_>,
    acc: &mut [f32],
) {
    let mut row = |h: usize, i: usize, q_row: &[E], k_h: &[E], v_h: &[E], out_row: &mut [E]| {
        match E::as_f32_mut(out_row) {
            Some(out_row) => attend_row(q_row, k_h, v_h, out_row, h, i, scale, params),
            None => {
                attend_row(q_row, k_h, v_h, acc, h, i, scale, params);
                E::narrow(acc, out_row);
            }
        }
    };
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    if blocked::applies(shape, params) {
        blocked::attend(q, k, v, out, shape, scale, params, &mut row);
        return;
    }
    let (d, dv) = (shape.d, shape.dv);
    // Never zero after validation; tested once so that chunking cannot panic.
    if d == 0 || dv == 0 {
        return;
    }
    for_each_head(q, k, v, out, shape, |h, q_h, k_h, v_h, out_h| {
        let rows = q_h.chunks_exact(d).zip(out_h.chunks_exact_mut(dv));
        for (i, (q_row, out_row)) in rows.enumerate() {
            row(h, i, q_row, k_h, v_h, out_row);
        }
    });
}

/// Calls `f(head, q_head, k_head, v_head, out_head)` for every query head, with the KV head
/// that query head reads. Shapes must have been validated.
#[inline]
pub(crate) fn for_each_head<E>(
    q: &[E],
    k: &[E],
    v: &[E],
    out: &mut [E],
    shape: AttentionShape,
    mut f: impl FnMut(usize, &[E], &[E], &[E], &mut [E]),
) {
    let AttentionShape {
        heads,
        kv_heads,
        lq,
        lk,
        d,
        dv,
    } = shape;
    // Validated shapes have nonzero dimensions and `kv_heads` dividing `heads`; checking again
    // here (once per call) lets the compiler drop the division and chunking panics.
    let Some(group) = heads.checked_div(kv_heads) else {
        return;
    };
    let (q_head, out_head) = (lq * d, lq * dv);
    let (k_head, v_head) = (lk * d, lk * dv);
    let (q_group, out_group) = (q_head * group, out_head * group);
    // One test per value: the optimizer keeps what each says (through a combined `||` it may
    // not).
    for n in [q_head, out_head, k_head, v_head, q_group, out_group] {
        if n == 0 {
            return;
        }
    }
    // Query heads `kvh * group .. (kvh + 1) * group` read KV head `kvh`.
    let kv_iter = k.chunks_exact(k_head).zip(v.chunks_exact(v_head));
    let groups_iter = q.chunks_exact(q_group).zip(out.chunks_exact_mut(out_group));
    let mut h = 0;
    for ((k_h, v_h), (q_g, out_g)) in kv_iter.zip(groups_iter) {
        for (q_h, out_h) in q_g
            .chunks_exact(q_head)
            .zip(out_g.chunks_exact_mut(out_head))
        {
            f(h, q_h, k_h, v_h, out_h);
            h += 1;
        }
    }
}

/// Running maximum and sum of one row's online softmax, with the exponentials of a tile
/// computed by the selected backend a vector at a time (as `softmax::OnlineSoftmax`, whose
/// scalar `exp` per logit would dominate a decode step).
struct RowSoftmax {
    max: f32,
    sum: f32,
}

impl RowSoftmax {
    const fn new() -> Self {
        RowSoftmax {
            max: f32::NEG_INFINITY,
            sum: 0.0,
        }
    }

    /// Replaces each score by `exp(score - running_max)`; returns the factor for what was
    /// accumulated before (1 when the maximum did not move).
    fn update(&mut self, backend: arch::Backend, scores: &mut [f32]) -> f32 {
        let new_max = self.max.max(backend.max(scores));
        if new_max == f32::NEG_INFINITY {
            // Only -inf scores so far: they carry no weight.
            scores.fill(0.0);
            return 1.0;
        }
        let rescale = if self.max == new_max {
            1.0
        } else {
            exp(self.max - new_max)
        };
        let tile_sum = backend.exp_sum(scores, new_max);
        self.sum = self.sum * rescale + tile_sum;
        self.max = new_max;
        rescale
    }

    /// `1 / sum`, or 0 for a row that saw no weight (a fully masked row gives zeros).
    fn inverse_sum(&self) -> f32 {
        if self.sum > 0.0 {
            1.0 / self.sum
        } else {
            0.0
        }
    }
}

/// One query row of one head: walks the allowed keys in tiles with an online softmax,
/// accumulating the normalized output row into `acc` (`dv` elements).
///
/// The unnormalized accumulator `Σ_j e^(s_j - max) v_j` can overflow for finite values near
/// `f32::MAX / keys` although the output, a convex combination of value rows, cannot: a row
/// that comes out non-finite is computed again by [`attend_row_rescued`] (finite inputs never
/// give a non-finite row; the check costs one look at the `dv` outputs).
#[allow(clippy::too_many_arguments)]
#[inline]
fn attend_row<E: Element>(
    q_row: &[E],
    k_h: &[E],
    v_h: &[E],
    acc: &mut [f32],
    head: usize,
    row: usize,
    scale: f32,
    params: &SdpaParams<'_>,
) {
    let dv = acc.len();
    acc.fill(0.0);
    let backend = arch::backend();
    let mut softmax = RowSoftmax::new();
    let keys = RowKeys {
        q_row,
        k_h,
        v_h,
        dv,
        head,
        row,
        scale,
        params,
    };
    keys.for_each_tile(|tile, v_tile| {
        let rescale = softmax.update(backend, tile);
        if rescale != 1.0 {
            backend.scale(acc, rescale);
        }
        accumulate(tile, v_tile, dv, acc);
    });
    backend.scale(acc, softmax.inverse_sum());
    if !all_finite(acc) {
        attend_row_rescued(keys, softmax.max, softmax.inverse_sum(), acc);
    }
}

/// Whether every element is finite. `x - x` is 0 for a finite `x` and NaN for ±inf and
/// NaN, so sums of it in eight lanes stay 0 exactly when every element is finite; the lanes
/// make it vectorize on the baseline instruction set (a fold of `is_finite` runs an element
/// at a time, which showed in the blocked path's time).
#[inline]
#[allow(clippy::eq_op)] // `v - v` is the test itself (0, or NaN for a non-finite `v`).
pub(super) fn all_finite(x: &[f32]) -> bool {
    let mut lanes = [0.0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for (lane, &v) in lanes.iter_mut().zip(c) {
            *lane += v - v;
        }
    }
    for (lane, &v) in lanes.iter_mut().zip(tail) {
        *lane += v - v;
    }
    lanes.iter().sum::<f32>() == 0.0
}

/// `acc += Σ_j w_j v_j` over a tile's weights and value rows.
#[inline(always)]
fn accumulate<E: Element>(weights: &[f32], v_tile: &[E], dv: usize, acc: &mut [f32]) {
    if !E::pv_row(weights, v_tile, dv, acc) {
        // Rows through `get`: no chunking by a size the optimizer cannot see is non-zero.
        for (j, &w) in weights.iter().enumerate() {
            if let Some(v_row) = v_tile.get(j * dv..(j + 1) * dv) {
                E::axpy(w, v_row, acc);
            }
        }
    }
}

/// A row whose accumulator overflowed, again, in a second pass that knows the softmax's final
/// maximum `max` and `inverse_sum = 1 / sum`: each weight is `e^(s_j - max) / sum / 2`, so the weights sum to 1/2 and
/// every partial sum of `Σ_j w_j v_j` is at most `max |v| / 2` in magnitude (no overflow);
/// the result is doubled (exact) and saturated at `±f32::MAX` (rounding may carry a result
/// at `f32::MAX` just past it). Halving loses nothing a float can hold but the last bit of
/// subnormal products. Rows with non-finite inputs stay non-finite.
#[cold]
#[inline(never)]
fn attend_row_rescued<E: Element>(
    keys: RowKeys<'_, '_, E>,
    max: f32,
    inverse_sum: f32,
    acc: &mut [f32],
) {
    let dv = acc.len();
    acc.fill(0.0);
    if inverse_sum == 0.0 {
        return;
    }
    let backend = arch::backend();
    let half = 0.5 * inverse_sum;
    keys.for_each_tile(|tile, v_tile| {
        backend.exp_sum(tile, max);
        backend.scale(tile, half);
        accumulate(tile, v_tile, dv, acc);
    });
    for a in acc.iter_mut() {
        *a = saturate(*a * 2.0);
    }
}

/// The keys one query row attends to, and how its logits are computed.
#[derive(Clone, Copy)]
struct RowKeys<'r, 'p, E> {
    q_row: &'r [E],
    k_h: &'r [E],
    v_h: &'r [E],
    /// Value features (the output row's length).
    dv: usize,
    head: usize,
    row: usize,
    scale: f32,
    params: &'r SdpaParams<'p>,
}

impl<E: Element> RowKeys<'_, '_, E> {
    /// Walks the allowed keys in tiles of at most [`ROW_TILE`]: calls `f(logits, v_tile)` with
    /// each tile's final logits (score, bias, saturated) and its value rows.
    #[inline(always)]
    fn for_each_tile(&self, mut f: impl FnMut(&mut [f32], &[E])) {
        let RowKeys {
            q_row,
            k_h,
            v_h,
            dv,
            head,
            row,
            scale,
            params,
        } = *self;
        let d = q_row.len();
        // Never zero after validation (products of validated lengths); checked once so that
        // no division or chunking can panic. (One test per value: the optimizer keeps what
        // each says, through a combined `||` it may not.)
        let (k_step, v_step) = (ROW_TILE * d, ROW_TILE * dv);
        for n in [d, dv, k_step, v_step] {
            if n == 0 {
                return;
            }
        }
        let lk = k_h.len() / d;
        let position = params.mask.position(row);
        let q_norm = params.score.query_norm(q_row);
        let mut logits = [0.0f32; ROW_TILE];
        for run in params.mask.row(row, lk) {
            // Runs lie within `0..lk`; `get` (once per run) keeps a malformed one from reading
            // out of bounds.
            let (Some(k_run), Some(v_run)) = (
                k_h.get(run.start * d..run.end * d),
                v_h.get(run.start * dv..run.end * dv),
            ) else {
                continue;
            };
            let mut start = run.start;
            for (k_tile, v_tile) in k_run.chunks(k_step).zip(v_run.chunks(v_step)) {
                let n = (run.end - start).min(ROW_TILE);
                let Some(tile) = logits.get_mut(..n) else {
                    break;
                };
                // Dot scores a tile at a time (several keys per pass over q).
                let batched =
                    params.score == Score::Dot && E::dot_keys(q_row, k_tile, d, scale, tile);
                // Finite batched logits without a bias are final (saturating changes nothing).
                let done = batched
                    && params.bias == Bias::None
                    && tile.iter().fold(true, |all, t| all & t.is_finite());
                if !done {
                    let keys = k_tile.chunks_exact(d).zip(start..);
                    for (t, (k_row, j)) in tile.iter_mut().zip(keys) {
                        // A batched logit that overflowed is recomputed by the score, which
                        // rescales.
                        let logit = if batched && t.is_finite() {
                            *t
                        } else {
                            params.score.logit(q_row, k_row, q_norm, scale)
                        };
                        // Saturate at ±f32::MAX: a logit that overflowed to ±inf would
                        // otherwise give NaN (inf - inf) or a zero row for an allowed key.
                        *t = saturate(saturate(logit) + params.bias.value(head, position, j));
                    }
                }
                f(tile, v_tile);
                start += n;
            }
        }
    }
}

/// Elements of `[heads, lq, dv]` attention output: a `const fn` for sizing `static` buffers.
pub const fn sdpa_output_len(shape: AttentionShape) -> usize {
    shape.heads * shape.lq * shape.dv
}

/// Fixed-size single-head attention: shapes are const generics, so a wrong shape does not
/// compile. Errors only for parameters (scale, mask, bias).
///
/// ```
/// use microattn::attention::{sdpa_fixed, SdpaParams};
/// let q = [[1.0f32, 0.0]; 3];
/// let k = [[1.0f32, 0.0], [0.0, 1.0]];
/// let v = [[1.0f32], [3.0]];
/// let mut out = [[0.0f32; 1]; 3];
/// sdpa_fixed(&q, &k, &v, &mut out, &SdpaParams::default())?;
/// assert!(out[0][0] > 1.0 && out[0][0] < 2.0);
/// # Ok::<(), microattn::Error>(())
/// ```
pub fn sdpa_fixed<const LQ: usize, const LK: usize, const D: usize, const DV: usize>(
    q: &[[f32; D]; LQ],
    k: &[[f32; D]; LK],
    v: &[[f32; DV]; LK],
    out: &mut [[f32; DV]; LQ],
    params: &SdpaParams<'_>,
) -> Result<(), Error> {
    sdpa(
        q.as_flattened(),
        k.as_flattened(),
        v.as_flattened(),
        out.as_flattened_mut(),
        AttentionShape::single(LQ, LK, D, DV),
        params,
    )
}

/// Fixed-size multi-head attention with `H` query heads over `HKV` key/value heads (GQA/MQA
/// when `HKV < H`).
pub fn sdpa_heads_fixed<
    const H: usize,
    const HKV: usize,
    const LQ: usize,
    const LK: usize,
    const D: usize,
    const DV: usize,
>(
    q: &[[[f32; D]; LQ]; H],
    k: &[[[f32; D]; LK]; HKV],
    v: &[[[f32; DV]; LK]; HKV],
    out: &mut [[[f32; DV]; LQ]; H],
    params: &SdpaParams<'_>,
) -> Result<(), Error> {
    sdpa(
        q.as_flattened().as_flattened(),
        k.as_flattened().as_flattened(),
        v.as_flattened().as_flattened(),
        out.as_flattened_mut().as_flattened_mut(),
        AttentionShape::multi_head(H, HKV, LQ, LK, D, DV),
        params,
    )
}

/// Number of keys attention visits for `shape` under `mask`, summed over rows and heads:
/// the work of a sparse kernel is proportional to this, not to `lq * lk`.
pub fn visited_keys(shape: AttentionShape, mask: &Mask<'_>) -> Result<usize, Error> {
    shape.lengths()?;
    mask.validate()?;
    let mut total = 0usize;
    for i in 0..shape.lq {
        for run in mask.row(i, shape.lk) {
            total = total.saturating_add(run.len());
        }
    }
    mul(total, shape.heads)
}
