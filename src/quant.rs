//! Symmetric int8 quantization: per-tensor scales for activations, per-output-channel scales
//! for weights, and integer requantization with a fixed-point multiplier.
//!
//! A real value `x` is stored as `q = round(x / scale)` saturated to the narrow symmetric range
//! `[-127, 127]` (so `-q` never overflows and `0.0` is exactly `0`); there is no zero point.
//! Kernels accept any `i8`, including `-128`.
//!
//! Float appears only where a real number is turned into integers ("prepare"): building
//! [`QParams`], quantizing, and [`FixedMultiplier::from_real`]. Everything a kernel does with
//! the result ([`FixedMultiplier::mul_round`], [`requantize`]) is integer arithmetic, so firmware
//! on an FPU-less core can store precomputed multipliers ([`FixedMultiplier::from_raw`]) and
//! never link a soft-float routine.
//!
//! # Rounding
//!
//! Requantization computes the exact 64-bit product `x * multiplier` and rounds it once, half
//! away from zero, to `x * multiplier * 2^(shift - 31)`. This is the rounding TFLite and
//! gemmlowp aim for, but without their double rounding (`SaturatingRoundingDoublingHighMul`
//! then `RoundingDivideByPOT` round twice, and can differ from the exact result by one in
//! rare ties); here the result is always the correctly rounded one. Quantization of floats
//! rounds half away from zero as well (`libm::round`).
//!
//! ```
//! use microattn::quant::{requantize, FixedMultiplier, QParams};
//! let act = QParams::new(0.05)?;
//! assert_eq!(act.quantize(1.0), 20);
//! assert_eq!(act.quantize(100.0), 127); // saturated
//! let m = FixedMultiplier::from_real(0.25)?; // prepare step (float)
//! assert_eq!(requantize(10, m), 3); // 2.5 rounds away from zero
//! assert_eq!(requantize(-10, m), -3);
//! # Ok::<(), microattn::Error>(())
//! ```

use crate::error::{check_len, Error};

/// Largest magnitude of a quantized value: the range is `[-I8_LIMIT, I8_LIMIT]`.
pub const I8_LIMIT: i32 = 127;

/// Scale of a symmetric per-tensor int8 quantization: `x ≈ scale * q`.
///
/// The scale is finite and positive by construction.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct QParams {
    scale: f32,
}

impl QParams {
    /// A quantization with step `scale`; [`Error::InvalidScale`] unless finite and positive.
    pub fn new(scale: f32) -> Result<Self, Error> {
        check_scale(scale)?;
        Ok(QParams { scale })
    }

    /// Imports an affine quantization (TFLite style) that must in fact be symmetric:
    /// [`Error::InvalidParameter`] for a nonzero zero point, [`Error::InvalidScale`] for a bad
    /// scale.
    pub fn from_scale_zero_point(scale: f32, zero_point: i32) -> Result<Self, Error> {
        if zero_point != 0 {
            return Err(Error::InvalidParameter);
        }
        Self::new(scale)
    }

    /// The scale that maps `[-max_abs, max_abs]` onto `[-127, 127]`. A `max_abs` of zero (an
    /// all-zero tensor, which any scale represents exactly) gives scale 1.
    /// [`Error::InvalidScale`] for a negative or non-finite `max_abs`, or one so small that
    /// the scale underflows to zero.
    pub fn from_max_abs(max_abs: f32) -> Result<Self, Error> {
        if !max_abs.is_finite() || max_abs < 0.0 {
            return Err(Error::InvalidScale);
        }
        if max_abs == 0.0 {
            return Ok(QParams { scale: 1.0 });
        }
        Self::new(max_abs / I8_LIMIT as f32)
    }

    /// The step between neighbouring quantized values.
    pub fn scale(self) -> f32 {
        self.scale
    }

    /// `round(x / scale)` (half away from zero), saturated to `[-127, 127]`; NaN gives 0.
    pub fn quantize(self, x: f32) -> i8 {
        quantize_with(x, self.scale)
    }

    /// `scale * q`.
    pub fn dequantize(self, q: i8) -> f32 {
        self.scale * q as f32
    }
}

fn check_scale(scale: f32) -> Result<(), Error> {
    if scale.is_finite() && scale > 0.0 {
        Ok(())
    } else {
        Err(Error::InvalidScale)
    }
}

fn quantize_with(x: f32, scale: f32) -> i8 {
    let r = libm::roundf(x / scale);
    if r.is_nan() {
        0
    } else {
        // `as` saturates; the clamp keeps the range symmetric.
        r.clamp(-(I8_LIMIT as f32), I8_LIMIT as f32) as i8
    }
}

/// Quantizes `x` into `out` with one per-tensor scale. Errors: lengths differ.
pub fn quantize(x: &[f32], params: QParams, out: &mut [i8]) -> Result<(), Error> {
    check_len(out, x.len())?;
    for (o, &v) in out.iter_mut().zip(x) {
        *o = params.quantize(v);
    }
    Ok(())
}

/// Dequantizes `q` into `out` with one per-tensor scale. Errors: lengths differ.
pub fn dequantize(q: &[i8], params: QParams, out: &mut [f32]) -> Result<(), Error> {
    check_len(out, q.len())?;
    for (o, &v) in out.iter_mut().zip(q) {
        *o = params.dequantize(v);
    }
    Ok(())
}

/// Quantizes a weight matrix `[channels, cols]` (row-major, one output channel per row, as
/// PyTorch's `Linear.weight`) with one scale per channel: `w[c][i] ≈ scales[c] * out[c][i]`.
///
/// Errors: an empty `scales` ([`Error::ZeroDimension`]), a length that is not
/// `scales.len() * cols`, a scale that is not finite and positive.
pub fn quantize_per_channel(w: &[f32], scales: &[f32], out: &mut [i8]) -> Result<(), Error> {
    let cols = per_channel_cols(w.len(), scales)?;
    check_len(out, w.len())?;
    if cols == 0 {
        return Ok(());
    }
    for ((o_row, w_row), &s) in out
        .chunks_exact_mut(cols)
        .zip(w.chunks_exact(cols))
        .zip(scales)
    {
        for (o, &x) in o_row.iter_mut().zip(w_row) {
            *o = quantize_with(x, s);
        }
    }
    Ok(())
}

/// Inverse of [`quantize_per_channel`]: `out[c][i] = scales[c] * q[c][i]`.
pub fn dequantize_per_channel(q: &[i8], scales: &[f32], out: &mut [f32]) -> Result<(), Error> {
    let cols = per_channel_cols(q.len(), scales)?;
    check_len(out, q.len())?;
    if cols == 0 {
        return Ok(());
    }
    for ((o_row, q_row), &s) in out
        .chunks_exact_mut(cols)
        .zip(q.chunks_exact(cols))
        .zip(scales)
    {
        for (o, &x) in o_row.iter_mut().zip(q_row) {
            *o = s * x as f32;
        }
    }
    Ok(())
}

/// Columns per channel of a `[scales.len(), cols]` matrix of `len` elements; checks scales.
fn per_channel_cols(len: usize, scales: &[f32]) -> Result<usize, Error> {
    if scales.is_empty() {
        return Err(Error::ZeroDimension);
    }
    for &s in scales {
        check_scale(s)?;
    }
    let cols = len / scales.len();
    if cols * scales.len() != len {
        return Err(Error::LengthMismatch {
            expected: (cols + 1) * scales.len(),
            found: len,
        });
    }
    Ok(cols)
}

/// A positive real number as an integer: `multiplier * 2^(shift - 31)`.
///
/// [`from_real`](Self::from_real) normalizes the multiplier into `[2^30, 2^31)` (31
/// significant bits, relative error at most `2^-31`); values below `2^-33` get a smaller
/// multiplier at the lowest shift. The allowed range is `shift` in `[-32, 31]` and
/// `multiplier` in `[1, 2^31 - 1]`, so a multiplier represents reals from `2^-63` up to just
/// under `2^31`, and `x * multiplier` of an `i32` fits in 62 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FixedMultiplier {
    multiplier: i32,
    shift: i32,
}

/// Lowest allowed [`FixedMultiplier`] shift.
pub const MIN_SHIFT: i32 = -32;
/// Highest allowed [`FixedMultiplier`] shift.
pub const MAX_SHIFT: i32 = 31;

impl Default for FixedMultiplier {
    /// [`FixedMultiplier::ONE`].
    fn default() -> Self {
        Self::ONE
    }
}

impl FixedMultiplier {
    /// The multiplier 1.0 (`2^30 * 2^(1 - 31)`).
    pub const ONE: FixedMultiplier = FixedMultiplier {
        multiplier: 1 << 30,
        shift: 1,
    };

    /// The multiplier `multiplier * 2^(shift - 31)` from precomputed integers (no float):
    /// [`Error::InvalidScale`] unless `multiplier >= 1` and `shift` is in
    /// [`MIN_SHIFT`]`..=`[`MAX_SHIFT`].
    ///
    /// ```
    /// use microattn::quant::FixedMultiplier;
    /// let half = FixedMultiplier::from_raw(1 << 30, 0)?;
    /// assert_eq!(half.mul_round(7), 4); // 3.5 → 4
    /// assert!(FixedMultiplier::from_raw(0, 0).is_err());
    /// # Ok::<(), microattn::Error>(())
    /// ```
    pub const fn from_raw(multiplier: i32, shift: i32) -> Result<Self, Error> {
        if multiplier < 1 || shift < MIN_SHIFT || shift > MAX_SHIFT {
            Err(Error::InvalidScale)
        } else {
            Ok(FixedMultiplier { multiplier, shift })
        }
    }

    /// The nearest multiplier to `real` (prepare step; uses f64).
    /// [`Error::InvalidScale`] for zero, negative or non-finite values, values of `2^31` and
    /// more, and values below `2^-64` (they would round to zero).
    pub fn from_real(real: f64) -> Result<Self, Error> {
        if !real.is_finite() || real <= 0.0 {
            return Err(Error::InvalidScale);
        }
        // real = mantissa * 2^exponent with mantissa in [0.5, 1).
        let (mantissa, exponent) = libm::frexp(real);
        let mut shift = exponent;
        let mut m = libm::round(mantissa * (1u64 << 31) as f64) as i64;
        if m == 1 << 31 {
            m = 1 << 30;
            shift += 1;
        }
        if shift > MAX_SHIFT {
            return Err(Error::InvalidScale);
        }
        if shift < MIN_SHIFT {
            // Too small to normalize: keep the lowest shift and fewer significant bits.
            m = libm::round(libm::ldexp(real, 31 - MIN_SHIFT)) as i64;
            shift = MIN_SHIFT;
        }
        let m = i32::try_from(m).map_err(|_| Error::InvalidScale)?;
        Self::from_raw(m, shift)
    }

    /// The integer multiplier.
    pub const fn multiplier(self) -> i32 {
        self.multiplier
    }

    /// The power-of-two exponent: the value is `multiplier * 2^(shift - 31)`.
    pub const fn shift(self) -> i32 {
        self.shift
    }

    /// The represented real number (for tests and reports; kernels never call it).
    pub fn to_f64(self) -> f64 {
        libm::ldexp(self.multiplier as f64, self.shift - 31)
    }

    /// Right shift that turns `x * multiplier` into `x * value`: `31 - shift`, in `0..=63`.
    #[inline]
    pub(crate) const fn right_shift(self) -> u32 {
        (31 - self.shift) as u32
    }

    /// `x * value`, rounded half away from zero. Exact up to that one rounding; never
    /// overflows (`|x * value| < 2^62`).
    ///
    /// ```
    /// use microattn::quant::FixedMultiplier;
    /// let m = FixedMultiplier::from_raw(3 << 29, 1)?; // 0.75 * 2 = 1.5
    /// assert_eq!(m.mul_round(3), 5); // 4.5 → 5
    /// assert_eq!(m.mul_round(-3), -5);
    /// # Ok::<(), microattn::Error>(())
    /// ```
    #[inline]
    pub fn mul_round(self, x: i32) -> i64 {
        round_shift(x as i64 * self.multiplier as i64, self.right_shift())
    }

    /// `x * value * 2^extra`, rounded half away from zero, for a wide `x` (computed in 128
    /// bits). Saturates to the `i64` range.
    #[inline]
    pub(crate) fn mul_round_wide(self, x: i64, extra: i32) -> i64 {
        let product = x as i128 * self.multiplier as i128;
        let n = self.right_shift() as i32 - extra;
        let r = if n <= 0 {
            // Only reachable for `extra > 31 - shift`: the shift is at most 63 bits left.
            product.checked_shl((-n) as u32).unwrap_or(if product < 0 {
                i128::MIN
            } else {
                i128::MAX
            })
        } else {
            round_shift_wide(product, n as u32)
        };
        r.clamp(i64::MIN as i128, i64::MAX as i128) as i64
    }
}

/// `p / 2^n` rounded half away from zero (`n` may be 0 or 64 and more).
#[inline]
pub(crate) fn round_shift(p: i64, n: u32) -> i64 {
    if n == 0 {
        return p;
    }
    if n >= 64 {
        // |p| <= 2^63, so |p| / 2^64 <= 1/2 — a tie only at i64::MIN, which rounds away to -1.
        return if p == i64::MIN && n == 64 { -1 } else { 0 };
    }
    let magnitude = p.unsigned_abs();
    // magnitude <= 2^63 and the half is <= 2^62: no u64 overflow.
    let rounded = ((magnitude + (1u64 << (n - 1))) >> n) as i64;
    if p < 0 {
        -rounded
    } else {
        rounded
    }
}

/// `p / 2^n` rounded half away from zero, 128-bit (`n >= 1`).
#[inline]
pub(crate) fn round_shift_wide(p: i128, n: u32) -> i128 {
    if n >= 127 {
        return 0;
    }
    let magnitude = p.unsigned_abs();
    let rounded = magnitude.saturating_add(1u128 << (n - 1)) >> n;
    let rounded = rounded as i128;
    if p < 0 {
        -rounded
    } else {
        rounded
    }
}

/// `acc * multiplier` rounded half away from zero and saturated to `[-127, 127]`: an int32
/// accumulator back to int8. Integer only.
///
/// ```
/// use microattn::quant::{requantize, FixedMultiplier};
/// let m = FixedMultiplier::from_real(1.0 / 64.0)?;
/// assert_eq!(requantize(96, m), 2); // 1.5 → 2
/// assert_eq!(requantize(1 << 20, m), 127);
/// # Ok::<(), microattn::Error>(())
/// ```
#[inline]
pub fn requantize(acc: i32, multiplier: FixedMultiplier) -> i8 {
    saturate_i8(multiplier.mul_round(acc))
}

/// Clamps to the symmetric int8 range `[-127, 127]`.
#[inline]
pub fn saturate_i8(x: i64) -> i8 {
    x.clamp(-(I8_LIMIT as i64), I8_LIMIT as i64) as i8
}

/// Calibration on the host: choosing scales from data.
#[cfg(feature = "std")]
pub mod calibrate {
    use super::QParams;
    use crate::error::Error;
    use std::vec::Vec;

    /// Largest `|x|`. Errors: empty ([`Error::ZeroDimension`]), a non-finite value
    /// ([`Error::InvalidParameter`]).
    pub fn max_abs(x: &[f32]) -> Result<f32, Error> {
        if x.is_empty() {
            return Err(Error::ZeroDimension);
        }
        x.iter().try_fold(0.0f32, |m, &v| {
            if v.is_finite() {
                Ok(m.max(v.abs()))
            } else {
                Err(Error::InvalidParameter)
            }
        })
    }

    /// The `percent`-th percentile of `|x|` (nearest rank: the smallest `|x|` that at least
    /// `percent`% of the values do not exceed). Clipping outliers this way spends the 8 bits
    /// on the bulk of the values. `percent = 100` is [`max_abs`].
    ///
    /// Errors: empty, a non-finite value, `percent` outside `(0, 100]`
    /// ([`Error::InvalidParameter`]).
    pub fn percentile_abs(x: &[f32], percent: f64) -> Result<f32, Error> {
        if !(percent > 0.0 && percent <= 100.0) {
            return Err(Error::InvalidParameter);
        }
        max_abs(x)?;
        let mut magnitudes: Vec<f32> = x.iter().map(|v| v.abs()).collect();
        let n = magnitudes.len();
        let rank = (percent / 100.0 * n as f64).ceil() as usize;
        let index = rank.clamp(1, n) - 1;
        let (_, value, _) = magnitudes.select_nth_unstable_by(index, f32::total_cmp);
        Ok(*value)
    }

    /// Per-tensor parameters from the max-abs of `x`.
    pub fn qparams_max_abs(x: &[f32]) -> Result<QParams, Error> {
        QParams::from_max_abs(max_abs(x)?)
    }

    /// Per-tensor parameters from the `percent`-th percentile of `|x|`.
    pub fn qparams_percentile(x: &[f32], percent: f64) -> Result<QParams, Error> {
        QParams::from_max_abs(percentile_abs(x, percent)?)
    }

    /// One max-abs scale per output channel of the row-major `[scales.len(), cols]` matrix
    /// `w`, written to `scales` (a zero row gets scale 1). Errors: as [`max_abs`], or a length
    /// mismatch.
    pub fn per_channel_scales(w: &[f32], scales: &mut [f32]) -> Result<(), Error> {
        if scales.is_empty() || w.is_empty() {
            return Err(Error::ZeroDimension);
        }
        let cols = w.len() / scales.len();
        if cols == 0 || cols * scales.len() != w.len() {
            return Err(Error::LengthMismatch {
                expected: cols.max(1) * scales.len(),
                found: w.len(),
            });
        }
        for (s, row) in scales.iter_mut().zip(w.chunks_exact(cols)) {
            *s = QParams::from_max_abs(max_abs(row)?)?.scale();
        }
        Ok(())
    }
}
