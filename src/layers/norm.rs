//! Row normalizations: LayerNorm (as `torch.nn.LayerNorm` over the last dimension) and
//! RMSNorm (as LLaMA / llama2.c).
//!
//! `x` is `[rows, dim]`; each row is normalized on its own. Statistics are computed in f32
//! in two passes (mean, then the mean squared deviation), which avoids the cancellation of
//! the one-pass `E[x²] - E[x]²`. Values may be stored as any [`Element`]; weights may use a
//! different element type than the activations (f32 activations in a scratch buffer with
//! f16 weights, for instance). No scratch, no state: weights are `dim` (+ `dim` bias).
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
/// with no epsilon, or an overflowing one, gives zeros rather than NaN or inf).
#[inline]
fn inverse_sqrt(v: f32) -> f32 {
    if v > 0.0 && v.is_finite() {
        1.0 / sqrt(v)
    } else {
        0.0
    }
}

/// `(mean, 1/std)` of the `dim` values of `row` for LayerNorm, in two passes. (An iterator,
/// not indices: nothing to bounds-check.)
#[inline]
fn layer_norm_stats(dim: usize, row: impl Iterator<Item = f32> + Clone, eps: f32) -> (f32, f32) {
    let n = dim as f32;
    let mean = row.clone().sum::<f32>() / n;
    let var = row
        .map(|v| {
            let d = v - mean;
            d * d
        })
        .sum::<f32>()
        / n;
    (mean, inverse_sqrt(var + eps))
}

/// `1 / rms` of the `dim` values of `row` for RMSNorm.
#[inline]
fn rms_stats(dim: usize, row: impl Iterator<Item = f32>, eps: f32) -> f32 {
    let ms = row.map(|v| v * v).sum::<f32>() / dim as f32;
    inverse_sqrt(ms + eps)
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
        let (mean, inv_std) = layer_norm_stats(dim, widened(x_row), eps);
        write_affine(y_row, x_row, |x| (x - mean) * inv_std, weight, bias);
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
        let (mean, inv_std) = layer_norm_stats(dim, widened(row), eps);
        for (i, v) in row.iter_mut().enumerate() {
            let n = (v.to_f32() - mean) * inv_std;
            *v = E::from_f32(affine(n, i, weight, bias));
        }
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
        let (mean, inv_std) = layer_norm_stats(dim, sum, eps);
        for (i, (v, r)) in row.iter_mut().zip(res).enumerate() {
            let n = (v.to_f32() + r.to_f32() - mean) * inv_std;
            *v = E::from_f32(affine(n, i, weight, bias));
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
        let inv_rms = rms_stats(dim, widened(x_row), eps);
        write_affine(y_row, x_row, |x| x * inv_rms, weight, None);
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
        let inv_rms = rms_stats(dim, widened(row), eps);
        for (v, w) in row.iter_mut().zip(weight) {
            *v = E::from_f32(v.to_f32() * inv_rms * w.to_f32());
        }
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

/// Writes `affine(normalize(x[i]), i)` to every element `i` of `y_row`.
#[inline]
fn write_affine<E: Element, W: Element>(
    y_row: &mut [E],
    x_row: &[E],
    normalize: impl Fn(f32) -> f32,
    weight: &[W],
    bias: Option<&[W]>,
) {
    for (i, (v, x)) in y_row.iter_mut().zip(x_row).enumerate() {
        *v = E::from_f32(affine(normalize(x.to_f32()), i, weight, bias));
    }
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
