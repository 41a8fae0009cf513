//! Score functions on int8 vectors, producing fixed-point base-2 logits.
//!
//! Each score is an exact integer reduction over the feature axis followed by one fixed-point
//! multiplier (prepared from the float scales once). Query scale, key scale, the logit scale
//! and `log2(e)` all fold into that multiplier.

use super::softmax::LOGIT_FRAC_BITS;
use crate::attention::Score;
use crate::error::Error;
use crate::quant::FixedMultiplier;

/// Largest feature size `d` of the int8 kernels: `|q·k| <= 128² · d` must fit an `i32`.
pub const MAX_D: usize = 1 << 16;

/// Largest magnitude a score may reach in the logit format (checked from the multipliers and
/// `d` before a call, so logit differences can never overflow).
pub const MAX_LOGIT: u128 = 1 << 59;

/// Fractional bits of the per-element weights of [`Int8Logits::NegL1`].
pub const L1_WEIGHT_BITS: u32 = 15;

/// How the integer reductions of a query `q` and a key `k` (int8) become a logit `z` in base-2
/// units with [`LOGIT_FRAC_BITS`] fractional bits. Build with [`Int8Logits::new`] (float, once)
/// or from stored integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Int8Logits {
    /// `z = logit · Σ q_i k_i`, `logit = scale · q_scale · k_scale · log2(e) · 2^20`.
    Dot {
        /// Logit units per unit of the integer dot product.
        logit: FixedMultiplier,
    },
    /// `z = logit · cos(q, k) · 2^30` with the cosine computed exactly in integers (a zero
    /// vector has cosine 0); `logit = scale · log2(e) · 2^-10`. The quantization scales
    /// cancel in a cosine.
    Cosine {
        /// Logit units per Q30 unit of the cosine.
        logit: FixedMultiplier,
    },
    /// `z = cross · Σ q_i k_i − key · Σ k_i²`: `−scale·|q − k|²` without the query's own
    /// `|q|²`, which is the same for every key of a row and cancels in the softmax.
    /// `cross = 2 · scale · q_scale · k_scale · log2(e) · 2^20`,
    /// `key = scale · k_scale² · log2(e) · 2^20`.
    NegSqL2 {
        /// Multiplier of the integer dot product.
        cross: FixedMultiplier,
        /// Multiplier of the key's integer squared norm.
        key: FixedMultiplier,
    },
    /// `z = −logit · Σ |q_weight · q_i − k_weight · k_i|`, where the weights (Q15, in
    /// `[0, 2^15]`) put both tensors on the larger of the two scales `s`, and
    /// `logit = scale · s · 2^-15 · log2(e) · 2^20`.
    NegL1 {
        /// `round(2^15 · q_scale / s)`.
        q_weight: i32,
        /// `round(2^15 · k_scale / s)`.
        k_weight: i32,
        /// Logit units per unit of the weighted distance.
        logit: FixedMultiplier,
    },
}

const LOG2_E: f64 = core::f64::consts::LOG2_E;

impl Int8Logits {
    /// Prepares `score` with logit scale `scale` for int8 queries and keys with the given
    /// quantization scales (uses float; run it once, or store the result).
    ///
    /// Errors ([`Error::InvalidScale`]): a scale that is not finite and positive (a zero or
    /// negative logit scale is not supported by the int8 path), or multipliers outside the
    /// range of [`FixedMultiplier`] (one integer step worth `2^11` or more base-2 logit units,
    /// or less than `2^-64`).
    pub fn new(score: Score, scale: f32, q_scale: f32, k_scale: f32) -> Result<Self, Error> {
        for s in [scale, q_scale, k_scale] {
            if !(s.is_finite() && s > 0.0) {
                return Err(Error::InvalidScale);
            }
        }
        let (scale, qs, ks) = (scale as f64, q_scale as f64, k_scale as f64);
        let unit = LOG2_E * (1u64 << LOGIT_FRAC_BITS) as f64;
        Ok(match score {
            Score::Dot => Int8Logits::Dot {
                logit: FixedMultiplier::from_real(scale * qs * ks * unit)?,
            },
            Score::Cosine => Int8Logits::Cosine {
                logit: FixedMultiplier::from_real(scale * unit / (1u64 << 30) as f64)?,
            },
            Score::NegSqL2 => Int8Logits::NegSqL2 {
                cross: FixedMultiplier::from_real(2.0 * scale * qs * ks * unit)?,
                key: FixedMultiplier::from_real(scale * ks * ks * unit)?,
            },
            Score::NegL1 => {
                let s = qs.max(ks);
                let one = (1u64 << L1_WEIGHT_BITS) as f64;
                Int8Logits::NegL1 {
                    q_weight: libm::round(qs / s * one) as i32,
                    k_weight: libm::round(ks / s * one) as i32,
                    logit: FixedMultiplier::from_real(scale * s / one * unit)?,
                }
            }
        })
    }

    /// The score function this computes.
    pub fn score(&self) -> Score {
        match self {
            Int8Logits::Dot { .. } => Score::Dot,
            Int8Logits::Cosine { .. } => Score::Cosine,
            Int8Logits::NegSqL2 { .. } => Score::NegSqL2,
            Int8Logits::NegL1 { .. } => Score::NegL1,
        }
    }

    /// Checks that no logit for feature size `d` can exceed [`MAX_LOGIT`] and that L1 weights
    /// are in range (integer only). [`Error::InvalidScale`] otherwise,
    /// [`Error::InvalidParameter`] for `d > MAX_D`.
    pub fn validate(&self, d: usize) -> Result<(), Error> {
        if d > MAX_D {
            return Err(Error::InvalidParameter);
        }
        let d = d as u128;
        let product_max = (128 * 128) * d;
        let ok = match *self {
            Int8Logits::Dot { logit } => bound(product_max, logit) <= MAX_LOGIT,
            Int8Logits::Cosine { logit } => bound((1 << 30) + 1, logit) <= MAX_LOGIT,
            Int8Logits::NegSqL2 { cross, key } => {
                bound(product_max, cross) <= MAX_LOGIT / 2
                    && bound(product_max, key) <= MAX_LOGIT / 2
            }
            Int8Logits::NegL1 {
                q_weight,
                k_weight,
                logit,
            } => {
                let range = 0..=(1 << L1_WEIGHT_BITS);
                range.contains(&q_weight)
                    && range.contains(&k_weight)
                    && bound((256 << L1_WEIGHT_BITS) * d, logit) <= MAX_LOGIT
            }
        };
        if ok {
            Ok(())
        } else {
            Err(Error::InvalidScale)
        }
    }

    /// What a row computes once for its query: `Σ q_i²` for the cosine, else 0.
    #[inline]
    pub(crate) fn row_state(&self, q: &[i8]) -> i64 {
        match self {
            Int8Logits::Cosine { .. } => dot_and_key_sq(q, q).0 as i64,
            _ => 0,
        }
    }

    /// The logit of `q` against `k` (same length, at most [`MAX_D`]); `row` from
    /// [`row_state`](Self::row_state). Call [`validate`](Self::validate) first.
    #[inline]
    pub(crate) fn logit(&self, q: &[i8], k: &[i8], row: i64) -> i64 {
        match *self {
            Int8Logits::Dot { logit } => logit.mul_round(dot(q, k)),
            Int8Logits::Cosine { logit } => {
                let (qk, kk) = dot_and_key_sq(q, k);
                logit.mul_round(cosine_q30(qk, row, kk as i64))
            }
            Int8Logits::NegSqL2 { cross, key } => {
                let (qk, kk) = dot_and_key_sq(q, k);
                cross.mul_round(qk) - key.mul_round(kk)
            }
            Int8Logits::NegL1 {
                q_weight,
                k_weight,
                logit,
            } => {
                let distance: i64 = q
                    .iter()
                    .zip(k)
                    .map(|(&a, &b)| {
                        (q_weight * a as i32 - k_weight * b as i32).unsigned_abs() as i64
                    })
                    .sum();
                -logit.mul_round_wide(distance, 0)
            }
        }
    }
}

/// Upper bound of `|x · m|` for `|x| <= x_max` (u128 arithmetic; rounding adds at most 1).
pub(crate) fn bound(x_max: u128, m: FixedMultiplier) -> u128 {
    ((x_max * m.multiplier() as u128) >> m.right_shift()) + 1
}

/// `Σ a_i b_i` over the common length (exact: at most `2^14 · MAX_D = 2^30` in magnitude),
/// by the arch-selected primitive (scalar reference: [`crate::arch::scalar::dot_i8`]).
#[inline]
pub(crate) fn dot(a: &[i8], b: &[i8]) -> i32 {
    crate::arch::dot_i8(a, b)
}

/// `(Σ q_i k_i, Σ k_i²)` in one pass.
#[inline]
fn dot_and_key_sq(q: &[i8], k: &[i8]) -> (i32, i32) {
    q.iter().zip(k).fold((0i32, 0i32), |(qk, kk), (&a, &b)| {
        (qk + a as i32 * b as i32, kk + b as i32 * b as i32)
    })
}

/// `qk / sqrt(qq · kk)` in Q30, rounded (0 when either vector is zero). Needs
/// `|qk| <= sqrt(qq · kk)` (Cauchy–Schwarz) and `qq, kk <= 2^30`.
fn cosine_q30(qk: i32, qq: i64, kk: i64) -> i32 {
    if qq <= 0 || kk <= 0 {
        return 0;
    }
    let product = qq as u64 * kk as u64; // <= 2^60
                                         // Scale by an even power of two into [2^60, 2^62) so the root has 31 significant bits.
    let s = (product.leading_zeros().saturating_sub(2)) / 2;
    let root = isqrt(product << (2 * s)) as i64; // ≈ sqrt(product) · 2^s, in [2^30, 2^31)
                                                 // |qk| · 2^s <= root + 1, so the numerator is below 2^62.
    let numerator = (qk as i64) << (30 + s);
    // root >= 2^30 (checked division: no panic path for the optimizer to keep).
    let magnitude = (numerator.unsigned_abs() + root as u64 / 2)
        .checked_div(root as u64)
        .unwrap_or(0);
    let c = magnitude.min(1 << 30) as i32;
    if qk < 0 {
        -c
    } else {
        c
    }
}

/// `floor(sqrt(n))`, bit by bit (no float, no division).
fn isqrt(mut n: u64) -> u64 {
    let mut root = 0u64;
    let mut bit = 1u64 << 62;
    while bit > n {
        bit >>= 2;
    }
    while bit != 0 {
        if n >= root + bit {
            n -= root + bit;
            root = (root >> 1) + bit;
        } else {
            root >>= 1;
        }
        bit >>= 2;
    }
    root
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isqrt_is_floor_sqrt() {
        for n in (0u64..5000).chain([u64::MAX, 1 << 62, (1 << 62) - 1, 999_999_999_999]) {
            let r = isqrt(n);
            assert!(r as u128 * r as u128 <= n as u128, "{n}");
            assert!((r as u128 + 1) * (r as u128 + 1) > n as u128, "{n}");
        }
    }

    #[test]
    fn cosine_matches_f64() {
        let cases: [(&[i8], &[i8]); 5] = [
            (&[1, 0], &[0, 1]),
            (&[3, 4], &[3, 4]),
            (&[1, 2, 3], &[-3, -2, -1]),
            (&[127, -128, 5], &[-128, 127, 0]),
            (&[1], &[-1]),
        ];
        for (q, k) in cases {
            let (qk, kk) = dot_and_key_sq(q, k);
            let qq = dot(q, q) as i64;
            let got = cosine_q30(qk, qq, kk as i64) as f64 / (1u64 << 30) as f64;
            let exact = qk as f64 / libm::sqrt(qq as f64 * kk as f64);
            assert!((got - exact).abs() < 2e-9, "{q:?} {k:?}: {got} vs {exact}");
        }
        assert_eq!(cosine_q30(0, 0, 5), 0);
    }
}
