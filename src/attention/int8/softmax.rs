//! Integer-only streaming softmax: fixed-point `2^-t`, running maximum and sum as integers,
//! and the final normalization and requantization of an output row.
//!
//! Formats (all two's-complement integers, no float anywhere in this file):
//!
//! | quantity | type | format |
//! |---|---|---|
//! | logit `z` | `i64` | base-2 units, [`LOGIT_FRAC_BITS`] = 20 fractional bits (`z = x·log2(e)·2^20` for a natural-log logit `x`) |
//! | weight `w = 2^(z - max)` | `i64` in `[0, 2^16]` | Q16: 1.0 = [`WEIGHT_ONE`] (16 fractional bits, twice CMSIS-NN's 8) |
//! | running sum `Σ w` | `i64` | Q16, at least `WEIGHT_ONE` once a key was seen |
//! | `P·V` accumulator | `i64` per value column | Q16 × int8 value units |
//!
//! `2^-t` splits `t = n + k/16 + r` (`n` integer, `k` in `0..16`, `r < 1/16`): `2^-n` is a
//! shift, `2^(-k/16)` a 16-entry Q30 table and `2^-r = e^(-r·ln2)` a cubic Taylor polynomial
//! in Q30 (truncation error below `1.6e-7`, far below the Q16 weight step of `1.5e-5`).

use crate::quant::{round_shift, saturate_i8, FixedMultiplier};

/// Fractional bits of the fixed-point base-2 logits.
pub const LOGIT_FRAC_BITS: u32 = 20;
/// Fractional bits of the softmax weights and running sum.
pub const WEIGHT_BITS: u32 = 16;
/// The weight of the maximum logit: 1.0 in Q16.
pub const WEIGHT_ONE: i64 = 1 << WEIGHT_BITS;

/// 1.0 in Q30.
const Q30_ONE: i64 = 1 << 30;
/// `round(2^30 · 2^(-k/16))` for `k` in `0..16` (checked against f64 in the tests).
const EXP2_NEG_SIXTEENTHS: [i64; 16] = [
    1073741824, 1028218693, 984625594, 942880699, 902905651, 864625413, 827968132, 792865000,
    759250125, 727060411, 696235434, 666717336, 638450708, 611382493, 585461881, 560640218,
];
/// `round(ln 2 · 2^30)`.
const LN2_Q30: i64 = 744261118;
/// `round(2^32 / 3)`.
const THIRD_Q32: i64 = 1431655765;

/// `2^-t` in Q30 for `t >= 0` in Q20 with integer part below 31 (the caller handles larger
/// `t`). The result is in `(2^-31, 1]·2^30` and is exactly `2^30` for `t = 0`.
#[inline]
pub(crate) fn exp2_neg_q30_frac(t: i64) -> i64 {
    let frac = t & ((1 << LOGIT_FRAC_BITS) - 1);
    let k = (frac >> (LOGIT_FRAC_BITS - 4)) as usize;
    let r = frac & ((1 << (LOGIT_FRAC_BITS - 4)) - 1);
    // u = r·ln2 in Q30, below 0.0434.
    let u = round_shift(r * LN2_Q30, LOGIT_FRAC_BITS);
    // e^-u ≈ 1 - u·(1 - (u/2)·(1 - u/3)), each product rounded in Q30.
    let c3 = Q30_ONE - round_shift(u * THIRD_Q32, 32);
    let c2 = Q30_ONE - round_shift(u * c3, 31);
    let poly = Q30_ONE - round_shift(u * c2, 30);
    round_shift(EXP2_NEG_SIXTEENTHS[k & 15] * poly, 30)
}

/// `2^-t` in Q16 (rounded half away from zero) for `t >= 0` in Q20: the softmax weight of a
/// logit `t` below the maximum. Exactly [`WEIGHT_ONE`] for `t = 0`, 0 from `t = 17` on
/// (where `2^-t` is below half a Q16 step).
#[inline]
pub fn exp2_neg_weight(t: i64) -> i64 {
    let n = t >> LOGIT_FRAC_BITS;
    if !(0..=WEIGHT_BITS as i64 + 1).contains(&n) {
        return if t < 0 { WEIGHT_ONE } else { 0 };
    }
    // Q30 → Q16 is a right shift by 14, and 2^-n adds n.
    round_shift(exp2_neg_q30_frac(t), 30 - WEIGHT_BITS + n as u32)
}

/// Running maximum and sum of one softmax row over integer logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct IntOnlineSoftmax {
    max: i64,
    sum: i64,
    seen: bool,
}

impl IntOnlineSoftmax {
    /// A row that has seen no key.
    pub(crate) const fn new() -> Self {
        IntOnlineSoftmax {
            max: 0,
            sum: 0,
            seen: false,
        }
    }

    /// Folds in a non-empty tile of logits, replacing each by its Q16 weight
    /// `2^(z - running_max)`. Returns the Q16 factor by which everything accumulated from
    /// earlier tiles must be multiplied ([`WEIGHT_ONE`]: unchanged).
    #[inline]
    pub(crate) fn update(&mut self, tile: &mut [i64]) -> i64 {
        let tile_max = tile.iter().copied().max().unwrap_or(i64::MIN);
        let mut factor = WEIGHT_ONE;
        if !self.seen {
            self.max = tile_max;
            self.seen = true;
        } else if tile_max > self.max {
            factor = exp2_neg_weight(tile_max - self.max);
            self.sum = rescale(self.sum, factor);
            self.max = tile_max;
        }
        for z in tile.iter_mut() {
            let w = exp2_neg_weight(self.max - *z);
            self.sum += w;
            *z = w;
        }
        factor
    }

    /// Sum of the weights (Q16); 0 for a row that saw no key.
    pub(crate) fn sum(&self) -> i64 {
        self.sum
    }
}

/// `x · factor / 2^16` rounded: applies a Q16 rescale factor.
#[inline]
pub(crate) fn rescale(x: i64, factor: i64) -> i64 {
    round_shift(x * factor, WEIGHT_BITS)
}

/// Writes `round(acc[c] / sum · out_multiplier)` saturated to int8 for every column: the
/// normalized weighted sum of int8 values, requantized to the output scale. A `sum` of 0 (no
/// key seen) writes zeros.
///
/// Exact for `|acc[c]| <= 128·sum + 2^16` (a weighted sum of int8 values with weights
/// summing to `sum`); larger ratios saturate instead of overflowing.
pub(crate) fn normalize_row(
    acc: &[i64],
    sum: i64,
    out_multiplier: FixedMultiplier,
    out: &mut [i8],
) {
    if sum <= 0 {
        out.fill(0);
        return;
    }
    // Bring the sum to 24 significant bits (acc with it), so that acc' · (2^54 / sum') fits.
    let bits = 64 - sum.leading_zeros() as i32;
    let s = bits - 24;
    let shift_down = |x: i64| {
        if s > 0 {
            round_shift(x, s as u32)
        } else {
            x << (-s) as u32
        }
    };
    let sum = shift_down(sum);
    // inv ≈ 2^54 / sum in [2^30, 2^31]: one 64-bit division per row.
    let inv = ((1i64 << 54) + sum / 2) / sum;
    // Fold the output multiplier into the reciprocal: mr ≈ inv · multiplier / 2^31 <= 2^31.
    let mr = round_shift(inv * out_multiplier.multiplier() as i64, 31);
    // acc'/sum' · value = acc' · mr · 2^(shift - 54).
    let n = (54 - out_multiplier.shift()) as u32;
    for (o, &a) in out.iter_mut().zip(acc) {
        *o = saturate_i8(round_shift(shift_down(a).saturating_mul(mr), n));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_f64() {
        for (k, &t) in EXP2_NEG_SIXTEENTHS.iter().enumerate() {
            let exact = libm::exp2(-(k as f64) / 16.0) * (1u64 << 30) as f64;
            assert!((t as f64 - exact).abs() <= 0.5, "k = {k}");
        }
        assert_eq!(
            LN2_Q30,
            libm::round(core::f64::consts::LN_2 * (1u64 << 30) as f64) as i64
        );
    }

    #[test]
    fn exp2_q30_is_accurate() {
        let mut worst = 0.0f64;
        for t in (0..(1i64 << 21)).step_by(97).chain([0, (1 << 20) - 1]) {
            let got = exp2_neg_q30_frac(t) as f64 / (1u64 << 30) as f64;
            let exact = libm::exp2(-((t & ((1 << 20) - 1)) as f64) / (1u64 << 20) as f64);
            worst = worst.max((got - exact).abs() / exact);
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(exp2_neg_q30_frac(0), 1 << 30);
    }

    #[test]
    fn weights_round_to_q16() {
        assert_eq!(exp2_neg_weight(0), WEIGHT_ONE);
        assert_eq!(exp2_neg_weight(1 << 20), WEIGHT_ONE / 2);
        assert_eq!(exp2_neg_weight(3 << 20), WEIGHT_ONE / 8);
        assert_eq!(exp2_neg_weight(16 << 20), 1);
        assert_eq!(exp2_neg_weight(17 << 20), 1); // 0.5 rounds away from zero
        assert_eq!(exp2_neg_weight((17 << 20) + 1), 0);
        assert_eq!(exp2_neg_weight(i64::MAX), 0);
        for t in (0..(18i64 << 20)).step_by(4099) {
            let exact = libm::exp2(-(t as f64) / (1u64 << 20) as f64) * WEIGHT_ONE as f64;
            assert!((exp2_neg_weight(t) as f64 - exact).abs() <= 0.53, "t = {t}");
        }
    }
}
