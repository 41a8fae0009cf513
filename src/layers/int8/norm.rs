//! Integer LayerNorm (fused with the residual add of a post-norm layer), the requantizing
//! residual add of a pre-norm layer, and pointwise activations as 256-entry tables.

use crate::error::{check_len, nonzero, Error};
use crate::layers::Activation;
use crate::quant::{round_shift, saturate_i8, FixedMultiplier, QParams};

/// Largest row width of [`int8_layer_norm`]: the sum of squared deviations (each below
/// `2^42` in the internal unit) must fit an `i64`.
pub const MAX_NORM_DIM: usize = 1 << 16;

/// Fractional bits of the prepared LayerNorm `gamma` / `beta` (in output steps) and of the
/// normalized values.
pub const NORM_FRAC_BITS: u32 = 16;

/// Largest shift of the input multipliers of [`Int8LayerNorm`]: each input step is worth
/// less than `2^12` internal units, so a sum of two inputs stays below `2^20`.
const MAX_INPUT_SHIFT: i32 = 12;

/// Exclusive upper bound of the epsilon in internal units (`var << 16` must fit an `i64`).
const MAX_EPS: i64 = 1 << 45;

/// A prepared int8 LayerNorm `y = (s - mean) / sqrt(var + eps) · gamma + beta` of the sum
/// `s = x + sublayer` of two int8 tensors (post-norm) or of `x` alone (pre-norm). Integers
/// only; build with [`Int8LayerNorm::prepare`] (float, once).
///
/// Both inputs are brought to one internal unit `u` (`u = max(x_scale, sublayer_scale) / 2^11`)
/// by exact multipliers; mean and variance are exact integers, the standard deviation an
/// integer square root with 8 fractional bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Int8LayerNorm<'a> {
    /// `round(gamma[i] / out_scale · 2^16)`, `[dim]`.
    pub gamma: &'a [i32],
    /// `round(beta[i] / out_scale · 2^16)`, `[dim]`.
    pub beta: &'a [i32],
    /// `round(eps / u²)`, in `[0, 2^45)`.
    pub eps: i64,
    /// `x_scale / u` (shift at most 12).
    pub input: FixedMultiplier,
    /// `sublayer_scale / u` (shift at most 12); unused without a sublayer input.
    pub sublayer: FixedMultiplier,
}

impl<'a> Int8LayerNorm<'a> {
    /// Prepares a LayerNorm with `weight` / `bias` (`[dim]`, f32, as PyTorch's) whose input
    /// is `x` (scale `x_scale`) plus, for a post-norm residual, a sublayer output (scale
    /// `sublayer_scale`), and whose int8 output has scale `out_scale`. `storage` holds at
    /// least `2 · dim` `i32`s (`gamma`, then `beta`).
    ///
    /// Errors: a scale not finite and positive, `eps` negative or not finite, or so large
    /// against the input scales that `eps / u² >= 2^45`, `|gamma| / out_scale` or
    /// `|beta| / out_scale` of `2^15` or more ([`Error::InvalidScale`]); an empty weight, a
    /// bias of another length, short storage.
    #[allow(clippy::too_many_arguments)]
    pub fn prepare(
        weight: &[f32],
        bias: Option<&[f32]>,
        eps: f32,
        x_scale: f32,
        sublayer_scale: Option<f32>,
        out_scale: f32,
        storage: &'a mut [i32],
    ) -> Result<Self, Error> {
        let dim = weight.len();
        nonzero(&[dim])?;
        if let Some(b) = bias {
            check_len(b, dim)?;
        }
        let xs = QParams::new(x_scale)?.scale() as f64;
        let ss = match sublayer_scale {
            Some(s) => QParams::new(s)?.scale() as f64,
            None => xs,
        };
        let out = QParams::new(out_scale)?.scale() as f64;
        if !(eps.is_finite() && eps >= 0.0) {
            return Err(Error::InvalidScale);
        }
        let unit = xs.max(ss) / 2048.0;
        let eps_q = libm::round(eps as f64 / (unit * unit));
        if eps_q.is_nan() || eps_q >= MAX_EPS as f64 {
            return Err(Error::InvalidScale);
        }
        let needed = 2 * dim;
        let found = storage.len();
        let storage = storage
            .get_mut(..needed)
            .ok_or(Error::ScratchTooSmall { needed, found })?;
        let (gamma, beta) = storage.split_at_mut(dim);
        let one = (1u64 << NORM_FRAC_BITS) as f64;
        let fixed = |v: f32| {
            let q = libm::round(v as f64 / out * one);
            if q.abs() < (1u64 << 31) as f64 {
                Ok(q as i32)
            } else {
                Err(Error::InvalidScale)
            }
        };
        for (g, &w) in gamma.iter_mut().zip(weight) {
            *g = fixed(w)?;
        }
        for (i, b) in beta.iter_mut().enumerate() {
            *b = fixed(bias.map_or(0.0, |b| b[i]))?;
        }
        Ok(Int8LayerNorm {
            gamma,
            beta,
            eps: eps_q as i64,
            input: FixedMultiplier::from_real(xs / unit)?,
            sublayer: FixedMultiplier::from_real(ss / unit)?,
        })
    }

    /// Checks the parameters against `dim` (integer only).
    pub(crate) fn validate(&self, dim: usize) -> Result<(), Error> {
        if dim > MAX_NORM_DIM {
            return Err(Error::InvalidParameter);
        }
        check_len(self.gamma, dim)?;
        check_len(self.beta, dim)?;
        if !(0..MAX_EPS).contains(&self.eps) {
            return Err(Error::InvalidScale);
        }
        for m in [self.input, self.sublayer] {
            FixedMultiplier::from_raw(m.multiplier(), m.shift())?;
            if m.shift() > MAX_INPUT_SHIFT {
                return Err(Error::InvalidScale);
            }
        }
        Ok(())
    }
}

/// `floor(sqrt(v))` for `v >= 0` (bit by bit; integer only).
pub(crate) fn isqrt(v: u64) -> u64 {
    let mut rem = v;
    let mut root = 0u64;
    let mut bit = 1u64 << 62;
    while bit > v {
        bit >>= 2;
    }
    while bit != 0 {
        if rem >= root + bit {
            rem -= root + bit;
            root = (root >> 1) + bit;
        } else {
            root >>= 1;
        }
        bit >>= 2;
    }
    root
}

/// `(a + b) / d` rounded half away from zero (`d > 0`).
#[inline]
pub(crate) fn div_round(n: i64, d: i64) -> i64 {
    // (The checked division only keeps a panic out of the code.)
    let q = (n.unsigned_abs() + (d as u64) / 2)
        .checked_div(d as u64)
        .unwrap_or(0);
    if n < 0 {
        -(q as i64)
    } else {
        q as i64
    }
}

/// One LayerNorm row on validated shapes; returns the peak `|y|` before saturation.
pub(crate) fn norm_row(
    x: &[i8],
    sublayer: Option<&[i8]>,
    p: &Int8LayerNorm<'_>,
    y: &mut [i8],
) -> i64 {
    let dim = x.len() as i64;
    let value = |xi: i8, si: Option<&i8>| {
        let a = p.input.mul_round(xi as i32);
        match si {
            Some(&s) => a + p.sublayer.mul_round(s as i32),
            None => a,
        }
    };
    // The row's values in order: an iterator, nothing to bounds-check. (`sublayer`, when
    // given, is as long as `x`: the `None`s after it are never reached.)
    let subs = sublayer.into_iter().flatten().map(Some);
    let row = || {
        x.iter()
            .zip(subs.clone().chain(core::iter::repeat(None)))
            .map(|(&xi, si)| value(xi, si))
    };
    let sum: i64 = row().sum();
    let mean = div_round(sum, dim);
    let sq: i64 = row()
        .map(|v| {
            let d = v - mean;
            d * d
        })
        .sum();
    let var = div_round(sq, dim) + p.eps;
    // std with 8 fractional bits: var < 2^46, so var << 16 fits.
    let std = isqrt((var as u64) << 16) as i64;
    let mut peak = 0;
    let affine = p.gamma.iter().zip(p.beta);
    for ((o, v), (&gamma, &beta)) in y.iter_mut().zip(row()).zip(affine) {
        // Normalized value in Q16 (|n| <= sqrt(dim) · 2^16); zero for a constant row with eps 0.
        let n = if std > 0 {
            div_round((v - mean) << 24, std)
        } else {
            0
        };
        let fixed = round_shift(n * gamma as i64, NORM_FRAC_BITS) + beta as i64;
        let v = round_shift(fixed, NORM_FRAC_BITS);
        peak = peak.max(v.abs());
        *o = saturate_i8(v);
    }
    peak
}

/// Int8 LayerNorm of `x + sublayer` (post-norm residual) or of `x` alone, row by row
/// (`[rows, dim]`), into `y`. Integer only. Returns the largest `|y|` before saturation
/// (above 127: the output scale clipped).
///
/// Errors: a zero `dim` or empty `x`, `x.len()` not a multiple of `dim`, lengths that differ,
/// `dim >` [`MAX_NORM_DIM`] ([`Error::InvalidParameter`]), parameters out of range (see
/// [`Int8LayerNorm`]).
pub fn int8_layer_norm(
    x: &[i8],
    sublayer: Option<&[i8]>,
    params: &Int8LayerNorm<'_>,
    y: &mut [i8],
    dim: usize,
) -> Result<i64, Error> {
    nonzero(&[dim, x.len()])?;
    if x.len() % dim != 0 {
        return Err(Error::LengthMismatch {
            expected: x.len() / dim * dim,
            found: x.len(),
        });
    }
    if let Some(s) = sublayer {
        check_len(s, x.len())?;
    }
    check_len(y, x.len())?;
    params.validate(dim)?;
    let mut peak = 0;
    // Rows by `get` (in bounds: lengths checked above), not by zipping chunk iterators,
    // whose out-of-line `zip` keeps a division by the chunk size.
    for (r, y_row) in y.chunks_exact_mut(dim.max(1)).enumerate() {
        let rows = r * dim..(r + 1) * dim;
        let Some(x_row) = x.get(rows.clone()) else {
            break;
        };
        let s_row = sublayer.map(|s| s.get(rows).unwrap_or(&[]));
        peak = peak.max(norm_row(x_row, s_row, params, y_row));
    }
    Ok(peak)
}

/// A prepared residual add `y = x + sublayer` of two int8 tensors into a third scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Int8Add {
    /// `x_scale / out_scale`.
    pub input: FixedMultiplier,
    /// `sublayer_scale / out_scale`.
    pub sublayer: FixedMultiplier,
}

impl Default for Int8Add {
    /// Three equal scales.
    fn default() -> Self {
        Int8Add {
            input: FixedMultiplier::ONE,
            sublayer: FixedMultiplier::ONE,
        }
    }
}

impl Int8Add {
    /// The add of `x` (scale `x_scale`) and a sublayer output (scale `sublayer_scale`) into
    /// scale `out_scale` (float, once). [`Error::InvalidScale`] for a bad scale or ratio.
    pub fn prepare(x_scale: f32, sublayer_scale: f32, out_scale: f32) -> Result<Self, Error> {
        let out = QParams::new(out_scale)?.scale() as f64;
        Ok(Int8Add {
            input: FixedMultiplier::from_real(QParams::new(x_scale)?.scale() as f64 / out)?,
            sublayer: FixedMultiplier::from_real(
                QParams::new(sublayer_scale)?.scale() as f64 / out,
            )?,
        })
    }

    /// Checks the multipliers (integer only).
    pub(crate) fn validate(&self) -> Result<(), Error> {
        for m in [self.input, self.sublayer] {
            FixedMultiplier::from_raw(m.multiplier(), m.shift())?;
        }
        Ok(())
    }

    /// One element, rounded once; before saturation.
    #[inline]
    fn value(&self, x: i8, s: i8) -> i64 {
        // 16 extra fractional bits on both terms, so the sum is rounded once.
        let fixed = self.input.mul_round_wide(x as i64, 16) as i128
            + self.sublayer.mul_round_wide(s as i64, 16) as i128;
        let fixed = fixed.clamp(i64::MIN as i128 / 2, i64::MAX as i128 / 2) as i64;
        round_shift(fixed, 16)
    }
}

/// `x[i] += sublayer[i]` through `add` (the residual stream updated in place); returns the
/// peak before saturation. Lengths already checked.
pub(crate) fn add_into(x: &mut [i8], sublayer: &[i8], add: &Int8Add) -> i64 {
    let mut peak = 0;
    for (o, &s) in x.iter_mut().zip(sublayer) {
        let v = add.value(*o, s);
        peak = peak.max(v.abs());
        *o = saturate_i8(v);
    }
    peak
}

/// `y = x + sublayer` requantized by `add`. Integer only. Returns the peak `|y|` before
/// saturation. Errors: lengths that differ, multipliers out of range.
pub fn int8_add(x: &[i8], sublayer: &[i8], add: &Int8Add, y: &mut [i8]) -> Result<i64, Error> {
    check_len(sublayer, x.len())?;
    check_len(y, x.len())?;
    add.validate()?;
    y.copy_from_slice(x);
    Ok(add_into(y, sublayer, add))
}

/// A pointwise function of int8 values as a table of its 256 outputs (the TFLite way to run
/// GELU, SiLU or any activation on int8 data with no arithmetic at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Int8Lut {
    /// Output for input `q` at index `q as u8`.
    pub table: [i8; 256],
}

impl Int8Lut {
    /// The table of `activation` from input scale `in_scale` to output scale `out_scale`
    /// (float, once): entry `q` is `round(act(q · in_scale) / out_scale)`, saturated.
    /// [`Error::InvalidScale`] for a bad scale.
    pub fn prepare(activation: Activation, in_scale: f32, out_scale: f32) -> Result<Self, Error> {
        let input = QParams::new(in_scale)?;
        let output = QParams::new(out_scale)?;
        let mut table = [0i8; 256];
        for q in -128i32..=127 {
            table[q as u8 as usize] = output.quantize(activation.apply(input.dequantize(q as i8)));
        }
        Ok(Int8Lut { table })
    }

    /// The output for `q`.
    #[inline]
    pub fn get(&self, q: i8) -> i8 {
        self.table[q as u8 as usize]
    }

    /// Applies the table to every element.
    pub fn apply_in_place(&self, x: &mut [i8]) {
        for v in x.iter_mut() {
            *v = self.get(*v);
        }
    }
}
