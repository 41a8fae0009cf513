//! Row normalizations: LayerNorm (as `torch.nn.LayerNorm` over the last dimension) and
//! RMSNorm (as LLaMA / llama2.c).
//!
//! `x` is `[rows, dim]`; each row is normalized on its own. Statistics are computed in f32
//! in two passes (mean, then the mean squared deviation), which avoids the cancellation of
//! the one-pass `E[x²] - E[x]²`. A row whose sums overflow f32 (values near `f32::MAX`) or
//! whose squares underflow (values near the subnormal range, with `eps` too small to hide
//! them) has its statistics computed again on the values scaled by a power of two (exact), so
//! finite inputs give finite, accurate outputs; other rows pay nothing for it. Values may be
//! stored as any [`Element`]; weights may use a different element type than the activations
//! (f32 activations in a scratch buffer with f16 weights, for instance). No scratch, no state: weights are `dim` (+ `dim` bias).
//!
//! `eps` must be finite and non-negative. A constant row with `eps = 0` would divide zero by
//! zero: it is normalized to zeros instead (the output is then the bias).

use super::Footprint;
use crate::element::Element;
use crate::error::{check_len, nonzero, Error};
use crate::math::sqrt;

/// Checks the shared shapes of a norm call: `x.len()` a positive multiple of `dim`, weights
/// of `dim`, an epsilon that is finite and non-negative.
fn validate<W>(
    x_len: usize,
    weight: &[W],
    bias: Option<&[W]>,
    dim: usize,
    eps: f32,
) -> Result<(), Error> {
    nonzero(&[dim, x_len])?;
    if x_len % dim != 0 {
        return Err(Error::LengthMismatch {
            expected: x_len / dim * dim,
            found: x_len,
        });
    }
    check_len(weight, dim)?;
    if let Some(b) = bias {
        check_len(b, dim)?;
    }
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(Error::InvalidScale);
    }
    Ok(())
}

/// `1 / sqrt(v)` for a variance-like `v`, or 0 when `v` is 0 or infinite (so a constant row
/// with no epsilon gives zeros rather than NaN or inf).
#[inline]
fn inverse_sqrt(v: f32) -> f32 {
    if v > 0.0 && v.is_finite() {
        1.0 / sqrt(v)
    } else {
        0.0
    }
}

/// Below this mean square, squares of the row's values may have underflowed (a square under
/// 2^-126 loses bits; when the mean square is at least 2^-100 such terms are negligible).
const TINY_SQUARES: f32 = 7.888_609e-31; // 2^-100
/// Epsilons from this one on dominate a mean square below [`TINY_SQUARES`]: the lost bits do
/// not show, so such rows need no rescaling.
const TINY_EPS: f32 = 8.470_329e-22; // 2^-70

/// How to normalize one row: `n(x) = (x · scale - shift) · inv`, where `scale` is 1 (`None`)
/// unless the row's statistics had to be computed on values rescaled by a power of two.
#[derive(Clone, Copy)]
struct RowNorm {
    scale: Option<f32>,
    shift: f32,
    inv: f32,
}

/// Whether a mean square (or variance) `v` from the plain f32 sums can be used: finite, and
/// not so small that underflowed squares could matter next to `eps`.
#[inline]
fn plain_ok(v: f32, eps: f32) -> bool {
    v.is_finite() && !(v < TINY_SQUARES && eps < TINY_EPS)
}

/// The power of two that brings `max_abs` (positive, finite) to `[1, 2)`, within `2^±126` so
/// that it is a normal f32 (multiplying by it is exact unless a result is subnormal).
fn power_of_two_scale(max_abs: f32) -> f32 {
    let biased = ((max_abs.to_bits() >> 23) & 0xff) as i32;
    let k = (127 - biased).clamp(-126, 126);
    f32::from_bits(((k + 127) as u32) << 23)
}

/// `1 / sqrt(v + eps · scale²)`: the inverse deviation of values scaled by `scale`. When
/// `eps · scale²` overflows (tiny values, `scale` large), `v <= 64` is negligible next to it
/// and the result is `1 / (sqrt(eps) · scale)`.
fn scaled_inverse_sqrt(v: f32, eps: f32, scale: f32) -> f32 {
    let eps_scaled = eps * scale * scale;
    if eps_scaled.is_finite() {
        inverse_sqrt(v + eps_scaled)
    } else {
        inverse_sqrt(eps) / scale
    }
}

/// The LayerNorm of a row: mean and `1/std` in two passes over the f32 values `row` (an
/// iterator, not indices: nothing to bounds-check). When the sums overflow (values near
/// `f32::MAX`) or the squares underflow, the statistics are computed again on the values
/// scaled by a power of two: `scaled(s)` yields the values times `s`, `max_part` is the
/// largest magnitude of the parts those values are sums of (each part is scaled before the
/// parts are added, so the scaled values are at most 4 in magnitude).
#[inline(always)]
fn layer_norm_stats<I, F, J>(
    dim: usize,
    row: I,
    eps: f32,
    max_part: impl FnOnce() -> f32,
    scaled: F,
) -> RowNorm
where
    I: Iterator<Item = f32> + Clone,
    F: Fn(f32) -> J,
    J: Iterator<Item = f32> + Clone,
{
    let n = dim as f32;
    let mean = row.clone().sum::<f32>() / n;
    // A non-finite mean makes the variance non-finite too: the rescaled path takes it.
    let var = row
        .map(|v| {
            let d = v - mean;
            d * d
        })
        .sum::<f32>()
        / n;
    if plain_ok(var, eps) {
        return RowNorm {
            scale: None,
            shift: mean,
            inv: inverse_sqrt(var + eps),
        };
    }
    scaled_layer_norm_stats(dim, eps, max_part(), scaled).unwrap_or(RowNorm {
        scale: None,
        shift: mean,
        inv: inverse_sqrt(var + eps),
    })
}

/// [`layer_norm_stats`] of the values scaled by the power of two that brings `max_part` to
/// `[1, 2)`: the sums cannot overflow (the values are at most 4 in magnitude) and the
/// squares of any deviation that matters do not underflow. `None` for a row of zeros or of
/// non-finite values (nothing to rescale). Inlined, although rare: as a call in the row loop
/// it made every row of 64 features about 4% slower (measured on x86_64).
#[inline(always)]
fn scaled_layer_norm_stats<F, J>(dim: usize, eps: f32, max_part: f32, scaled: F) -> Option<RowNorm>
where
    F: Fn(f32) -> J,
    J: Iterator<Item = f32> + Clone,
{
    if !(max_part > 0.0 && max_part.is_finite()) {
        return None;
    }
    let n = dim as f32;
    let s = power_of_two_scale(max_part);
    let mean = scaled(s).sum::<f32>() / n;
    let var = scaled(s)
        .map(|v| {
            let d = v - mean;
            d * d
        })
        .sum::<f32>()
        / n;
    Some(RowNorm {
        scale: Some(s),
        shift: mean,
        inv: scaled_inverse_sqrt(var, eps, s),
    })
}

/// `1 / rms` of a row for RMSNorm (the row is `x · scale` normalized by `inv`; `shift` is 0),
/// rescaled as [`layer_norm_stats`] when the mean square overflows or underflows.
#[inline(always)]
fn rms_stats<I, F, J>(
    dim: usize,
    row: I,
    eps: f32,
    max_part: impl FnOnce() -> f32,
    scaled: F,
) -> RowNorm
where
    I: Iterator<Item = f32>,
    F: Fn(f32) -> J,
    J: Iterator<Item = f32>,
{
    let ms = row.map(|v| v * v).sum::<f32>() / dim as f32;
    let plain = RowNorm {
        scale: None,
        shift: 0.0,
        inv: inverse_sqrt(ms + eps),
    };
    if plain_ok(ms, eps) {
        return plain;
    }
    scaled_rms_stats(dim, eps, max_part(), scaled).unwrap_or(plain)
}

/// [`rms_stats`] of the values scaled as in [`scaled_layer_norm_stats`] (inlined likewise).
#[inline(always)]
fn scaled_rms_stats<F, J>(dim: usize, eps: f32, max_part: f32, scaled: F) -> Option<RowNorm>
where
    F: Fn(f32) -> J,
    J: Iterator<Item = f32>,
{
    if !(max_part > 0.0 && max_part.is_finite()) {
        return None;
    }
    let s = power_of_two_scale(max_part);
    let ms = scaled(s).map(|v| v * v).sum::<f32>() / dim as f32;
    Some(RowNorm {
        scale: Some(s),
        shift: 0.0,
        inv: scaled_inverse_sqrt(ms, eps, s),
    })
}

/// The largest magnitude in a row, ignoring NaN.
fn max_abs<E: Element>(row: &[E]) -> f32 {
    row.iter().map(|v| v.to_f32().abs()).fold(0.0, f32::max)
}

/// The LayerNorm statistics of the stored row `row`.
#[inline(always)]
fn row_layer_norm<E: Element>(dim: usize, row: &[E], eps: f32) -> RowNorm {
    layer_norm_stats(
        dim,
        widened(row),
        eps,
        || max_abs(row),
        |s| row.iter().map(move |v| v.to_f32() * s),
    )
}

/// The RMSNorm statistics of the stored row `row`.
#[inline(always)]
fn row_rms<E: Element>(dim: usize, row: &[E], eps: f32) -> RowNorm {
    rms_stats(
        dim,
        widened(row),
        eps,
        || max_abs(row),
        |s| row.iter().map(move |v| v.to_f32() * s),
    )
}

/// `x` normalized: `(x · scale - shift) · inv`, without the subtraction for RMSNorm
/// (`CENTER = false`) and without the multiplication by `scale` when it is 1.
#[inline(always)]
fn normalized<const CENTER: bool>(x: f32, scale: Option<f32>, shift: f32, inv: f32) -> f32 {
    let x = match scale {
        None => x,
        Some(s) => x * s,
    };
    if CENTER {
        (x - shift) * inv
    } else {
        x * inv
    }
}

/// Writes `f(normalized x[i], i)` to every element `i` of `y_row`. (Two loops, so that the
/// common unscaled form has no extra multiplication.)
#[inline(always)]
fn write_normalized<const CENTER: bool, E: Element, X: Element>(
    y_row: &mut [E],
    x_row: &[X],
    norm: RowNorm,
    f: impl Fn(f32, usize) -> f32,
) {
    let RowNorm { scale, shift, inv } = norm;
    let pairs = y_row.iter_mut().zip(x_row).enumerate();
    match scale {
        None => pairs.for_each(|(i, (y, x))| {
            *y = E::from_f32(f(normalized::<CENTER>(x.to_f32(), None, shift, inv), i))
        }),
        Some(s) => pairs.for_each(|(i, (y, x))| {
            *y = E::from_f32(f(normalized::<CENTER>(x.to_f32(), Some(s), shift, inv), i))
        }),
    }
}

/// [`write_normalized`] in place.
#[inline]
fn normalize_in_place<const CENTER: bool, E: Element>(
    row: &mut [E],
    norm: RowNorm,
    f: impl Fn(f32, usize) -> f32,
) {
    let RowNorm { scale, shift, inv } = norm;
    let values = row.iter_mut().enumerate();
    match scale {
        None => values.for_each(|(i, v)| {
            *v = E::from_f32(f(normalized::<CENTER>(v.to_f32(), None, shift, inv), i))
        }),
        Some(s) => values.for_each(|(i, v)| {
            *v = E::from_f32(f(normalized::<CENTER>(v.to_f32(), Some(s), shift, inv), i))
        }),
    }
}

/// The values of a row in f32.
#[inline]
fn widened<E: Element>(row: &[E]) -> impl Iterator<Item = f32> + Clone + '_ {
    row.iter().map(|v| v.to_f32())
}

/// LayerNorm of every row of `x` (`[rows, dim]`) into `y`:
/// `y = (x - mean) / sqrt(var + eps) * weight + bias`, with the biased variance.
///
/// Errors: `dim` or `x` empty, `x.len()` not a multiple of `dim`, `y` not as long as `x`,
/// `weight` or `bias` not `dim` long ([`Error::LengthMismatch`]), `eps` negative or not
/// finite ([`Error::InvalidScale`]).
///
/// ```
/// use microattn::layers::layer_norm;
/// let x = [1.0f32, 3.0];
/// let mut y = [0.0f32; 2];
/// layer_norm(&x, &[1.0f32, 2.0], Some(&[0.0, 1.0]), &mut y, 2, 0.0)?;
/// assert_eq!(y, [-1.0, 3.0]);
/// # Ok::<(), microattn::Error>(())
/// ```
pub fn layer_norm<E: Element, W: Element>(
    x: &[E],
    weight: &[W],
    bias: Option<&[W]>,
    y: &mut [E],
    dim: usize,
    eps: f32,
) -> Result<(), Error> {
    validate(x.len(), weight, bias, dim, eps)?;
    check_len(y, x.len())?;
    for (x_row, y_row) in x.chunks_exact(dim).zip(y.chunks_exact_mut(dim)) {
        let norm = row_layer_norm(dim, x_row, eps);
        write_normalized::<true, _, _>(y_row, x_row, norm, |n, i| affine(n, i, weight, bias));
    }
    Ok(())
}

/// [`layer_norm`] in place.
pub fn layer_norm_in_place<E: Element, W: Element>(
    x: &mut [E],
    weight: &[W],
    bias: Option<&[W]>,
    dim: usize,
    eps: f32,
) -> Result<(), Error> {
    validate(x.len(), weight, bias, dim, eps)?;
    for row in x.chunks_exact_mut(dim) {
        let norm = row_layer_norm(dim, row, eps);
        normalize_in_place::<true, _>(row, norm, |n, i| affine(n, i, weight, bias));
    }
    Ok(())
}

/// The residual step of a post-norm transformer, `x = LayerNorm(x + residual)`, in place,
/// with the sum kept in f32 (no rounding to the storage type before the norm). The residual
/// may have another element type than `x` (an f32 sublayer output, for instance).
///
/// Errors: as [`layer_norm`], and `residual` not as long as `x`.
pub fn add_layer_norm<E: Element, R: Element, W: Element>(
    x: &mut [E],
    residual: &[R],
    weight: &[W],
    bias: Option<&[W]>,
    dim: usize,
    eps: f32,
) -> Result<(), Error> {
    validate(x.len(), weight, bias, dim, eps)?;
    check_len(residual, x.len())?;
    for (row, res) in x.chunks_exact_mut(dim).zip(residual.chunks_exact(dim)) {
        let sum = row.iter().zip(res).map(|(v, r)| v.to_f32() + r.to_f32());
        // A sum may itself overflow (both parts near f32::MAX): the rescaled statistics scale
        // each part before adding them.
        let norm = layer_norm_stats(
            dim,
            sum,
            eps,
            || max_abs(row).max(max_abs(res)),
            |s| {
                let parts = row.iter().zip(res);
                parts.map(move |(v, r)| v.to_f32() * s + r.to_f32() * s)
            },
        );
        let RowNorm { scale, shift, inv } = norm;
        let values = row.iter_mut().zip(res).enumerate();
        match scale {
            None => values.for_each(|(i, (v, r))| {
                let n = (v.to_f32() + r.to_f32() - shift) * inv;
                *v = E::from_f32(affine(n, i, weight, bias));
            }),
            Some(s) => values.for_each(|(i, (v, r))| {
                let n = (v.to_f32() * s + r.to_f32() * s - shift) * inv;
                *v = E::from_f32(affine(n, i, weight, bias));
            }),
        }
    }
    Ok(())
}

/// RMSNorm of every row of `x` into `y`: `y = x / sqrt(mean(x²) + eps) * weight`.
///
/// Errors: as [`layer_norm`].
///
/// ```
/// use microattn::layers::rms_norm;
/// let x = [3.0f32, -4.0];
/// let mut y = [0.0f32; 2];
/// rms_norm(&x, &[1.0f32, 1.0], &mut y, 2, 0.0)?;
/// let rms = (12.5f32).sqrt();
/// assert_eq!(y, [3.0 / rms, -4.0 / rms]);
/// # Ok::<(), microattn::Error>(())
/// ```
pub fn rms_norm<E: Element, W: Element>(
    x: &[E],
    weight: &[W],
    y: &mut [E],
    dim: usize,
    eps: f32,
) -> Result<(), Error> {
    validate(x.len(), weight, None, dim, eps)?;
    check_len(y, x.len())?;
    for (x_row, y_row) in x.chunks_exact(dim).zip(y.chunks_exact_mut(dim)) {
        let norm = row_rms(dim, x_row, eps);
        write_normalized::<false, _, _>(y_row, x_row, norm, |n, i| affine(n, i, weight, None));
    }
    Ok(())
}

/// [`rms_norm`] in place.
pub fn rms_norm_in_place<E: Element, W: Element>(
    x: &mut [E],
    weight: &[W],
    dim: usize,
    eps: f32,
) -> Result<(), Error> {
    validate(x.len(), weight, None, dim, eps)?;
    for row in x.chunks_exact_mut(dim) {
        let norm = row_rms(dim, row, eps);
        normalize_in_place::<false, _>(row, norm, |n, i| {
            n * weight.get(i).map_or(1.0, |w| w.to_f32())
        });
    }
    Ok(())
}

/// The parameters of one LayerNorm (`weight`, `bias` in PyTorch's state dict).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerNormWeights<'a, E = f32> {
    /// `[dim]`.
    pub weight: &'a [E],
    /// `[dim]`, or none (`bias=False`).
    pub bias: Option<&'a [E]>,
}

impl<E: Element> LayerNormWeights<'_, E> {
    /// Checks the lengths against `dim`.
    pub(crate) fn check(&self, dim: usize) -> Result<(), Error> {
        check_len(self.weight, dim)?;
        if let Some(b) = self.bias {
            check_len(b, dim)?;
        }
        Ok(())
    }
}

/// `n * weight[i] + bias[i]`.
#[inline]
fn affine<W: Element>(n: f32, i: usize, weight: &[W], bias: Option<&[W]>) -> f32 {
    let w = weight.get(i).map_or(1.0, |w| w.to_f32());
    let b = bias.and_then(|b| b.get(i)).map_or(0.0, |b| b.to_f32());
    n * w + b
}

/// Memory of a LayerNorm over `dim` features: `2 * dim` weights (weight and bias), nothing
/// else. RMSNorm has half of that.
pub const fn layer_norm_footprint(dim: usize) -> Footprint {
    Footprint {
        weights: dim.saturating_mul(2),
        ..Footprint::NONE
    }
}

/// Memory of an RMSNorm over `dim` features: `dim` weights.
pub const fn rms_norm_footprint(dim: usize) -> Footprint {
    Footprint {
        weights: dim,
        ..Footprint::NONE
    }
}
