//! Scaled dot-product attention with a streaming softmax: self and cross, multi-head with
//! grouped-query (GQA) and multi-query (MQA) key/value heads, any [`Mask`], [`Score`] and
//! [`Bias`].
//!
//! Each query row walks only its allowed key ranges in tiles of [`TILE`] keys: the tile's
//! logits live on the stack, the softmax is online, and the output row is the accumulator.
//! No scratch, no score matrix: memory is O(TILE) per call whatever the lengths.

use super::score::{Bias, Score};
use crate::arch;
use crate::element::Element;
use crate::error::{check_len, mul, nonzero, product, Error};
use crate::mask::Mask;
use crate::math::sqrt;
use crate::softmax::OnlineSoftmax;

/// Keys scored per step of the online softmax: 32 logits = 128 bytes of stack.
pub const TILE: usize = 32;

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
    for_each_row(q, k, v, shape, |h, i, q_row, k_h, v_h| {
        let out_row = &mut out[(h * shape.lq + i) * shape.dv..][..shape.dv];
        attend_row(q_row, k_h, v_h, out_row, h, i, scale, params);
    });
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
    for_each_row(q, k, v, shape, |h, i, q_row, k_h, v_h| {
        attend_row(q_row, k_h, v_h, acc, h, i, scale, params);
        let out_row = &mut out[(h * shape.lq + i) * shape.dv..][..shape.dv];
        for (o, &a) in out_row.iter_mut().zip(acc.iter()) {
            *o = E::from_f32(a);
        }
    });
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

/// Calls `f(head, row, q_row, k_head, v_head)` for every query row of every head, with the
/// KV head that query head reads. Shapes must have been validated.
#[inline]
fn for_each_row<E>(
    q: &[E],
    k: &[E],
    v: &[E],
    shape: AttentionShape,
    mut f: impl FnMut(usize, usize, &[E], &[E], &[E]),
) {
    let AttentionShape {
        heads,
        kv_heads,
        lq,
        lk,
        d,
        dv,
    } = shape;
    let group = heads / kv_heads;
    for (h, q_h) in q.chunks_exact(lq * d).enumerate() {
        let kvh = h / group;
        let k_h = &k[kvh * lk * d..][..lk * d];
        let v_h = &v[kvh * lk * dv..][..lk * dv];
        for (i, q_row) in q_h.chunks_exact(d).enumerate() {
            f(h, i, q_row, k_h, v_h);
        }
    }
}

/// One query row of one head: walks the allowed keys in tiles with an online softmax,
/// accumulating the normalized output row into `acc` (`dv` elements).
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
    let (d, dv) = (q_row.len(), acc.len());
    let lk = k_h.len() / d;
    acc.fill(0.0);
    let position = params.mask.position(row);
    let q_norm = params.score.query_norm(q_row);
    let mut softmax = OnlineSoftmax::new();
    let mut logits = [0.0f32; TILE];
    for run in params.mask.row(row, lk) {
        let mut start = run.start;
        while start < run.end {
            let end = run.end.min(start + TILE);
            let tile = &mut logits[..end - start];
            for (t, j) in tile.iter_mut().zip(start..end) {
                let k_row = &k_h[j * d..][..d];
                // Saturate at ±f32::MAX: a logit that overflowed to ±inf would otherwise
                // give NaN (inf - inf) or a zero row for an allowed key.
                *t = (params.score.logit(q_row, k_row, q_norm, scale)
                    + params.bias.value(head, position, j))
                .clamp(-f32::MAX, f32::MAX);
            }
            let rescale = softmax.update(tile);
            if rescale != 1.0 {
                arch::scale(acc, rescale);
            }
            for (&w, j) in tile.iter().zip(start..end) {
                E::axpy(w, &v_h[j * dv..][..dv], acc);
            }
            start = end;
        }
    }
    arch::scale(acc, softmax.inverse_sum());
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
