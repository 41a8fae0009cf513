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

/// Fractional bits of the SDPA softmax weights ([`exp2_neg_q15`]): Q15, so that a weight fits
/// the signed 16-bit operands of the Cortex-M `SMLAD` (two weights per register in `P·V`).
pub(crate) const SDPA_WEIGHT_BITS: u32 = 15;
/// 1.0 in Q15, the rescale factor that changes nothing.
pub(crate) const SDPA_ONE: i64 = 1 << SDPA_WEIGHT_BITS;
/// Largest SDPA weight: `2^15 - 1` (the weight of the maximum, 1.0, is capped one step below so
/// it is a signed 16-bit value).
pub(crate) const SDPA_WEIGHT_MAX: u32 = (1 << SDPA_WEIGHT_BITS) - 1;

/// `round(2^31 · 2^(-k/64))` for `k` in `0..64` (checked against f64 in the tests).
pub(crate) const EXP2_NEG_64THS_Q31: [u32; 64] = [
    2147483648, 2124350982, 2101467502, 2078830522, 2056437387, 2034285470, 2012372174, 1990694927,
    1969251188, 1948038440, 1927054196, 1906295993, 1885761398, 1865448001, 1845353420, 1825475297,
    1805811301, 1786359126, 1767116489, 1748081133, 1729250827, 1710623359, 1692196547, 1673968228,
    1655936265, 1638098541, 1620452965, 1602997467, 1585730000, 1568648537, 1551751076, 1535035634,
    1518500250, 1502142985, 1485961921, 1469955159, 1454120821, 1438457051, 1422962010, 1407633882,
    1392470869, 1377471191, 1362633090, 1347954824, 1333434672, 1319070932, 1304861917, 1290805962,
    1276901417, 1263146652, 1249540052, 1236080024, 1222764986, 1209593378, 1196563654, 1183674286,
    1170923762, 1158310587, 1145833280, 1133490379, 1121280436, 1109202018, 1097253708, 1085434106,
];
/// `round(ln 2 · 2^32)`.
pub(crate) const LN2_Q32: u32 = 2977044472;
/// `round(ln 2 / 3 · 2^32)`.
pub(crate) const LN2_THIRD_Q32: u32 = 992348157;

/// The Q20 logit difference from which every SDPA weight is 0: 17.
pub(crate) const WEIGHT_ZERO_T: u32 = 17 << LOGIT_FRAC_BITS;

/// The constants of the Q15 `exp2` as the arch primitives take them.
pub(crate) const EXP2_Q15: crate::arch::Exp2Q15<'static> = crate::arch::Exp2Q15 {
    table: &EXP2_NEG_64THS_Q31,
    ln2_q32: LN2_Q32,
    ln2_third_q32: LN2_THIRD_Q32,
};

/// `2^-t` in Q15, rounded (half up), for `t >= 0` in Q20: in `[0, 2^15]`, exactly `2^15` for
/// `t = 0` and 0 from `t = 17` on. Unsigned 32-bit arithmetic only (five 32×32→64
/// multiplies, one table load): `t = n + k/64 + r` with `2^-n` a shift, `2^(-k/64)` a Q31
/// table and `2^-r = e^(-r·ln2) ≈ 1 - u + u²/2 - u³/6` for `u = r·ln2 < 0.011` (truncation
/// below `1e-9`, against a Q15 step of `3e-5`); the arithmetic is
/// [`crate::arch::scalar::exp2_neg_q15`]'s, shared with the weight primitives.
#[inline(always)]
pub(crate) fn exp2_neg_q15(t: u64) -> u32 {
    if t >= WEIGHT_ZERO_T as u64 {
        return 0;
    }
    crate::arch::scalar::exp2_neg_q15(t as u32, &EXP2_Q15)
}

/// Running maximum and sum of one SDPA softmax row (Q15 weights from [`exp2_neg_q15`]). The
/// maximum is kept in whatever units the caller's logits are in (raw dot products or
/// fixed-point logits); the caller turns differences to the maximum into Q20 base-2 units.
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

    /// Folds in the maximum of a new tile; `to_t` turns a non-negative difference of logits
    /// into Q20 base-2 units. Returns the Q15 factor by which everything accumulated from
    /// earlier tiles must be multiplied ([`SDPA_ONE`]: unchanged), and the running maximum.
    #[inline]
    pub(crate) fn fold_max(&mut self, tile_max: i64, to_t: impl Fn(u64) -> u64) -> (i64, i64) {
        let mut factor = SDPA_ONE;
        if !self.seen {
            self.max = tile_max;
            self.seen = true;
        } else if tile_max > self.max {
            factor = exp2_neg_q15(to_t(tile_max.abs_diff(self.max))) as i64;
            if factor != SDPA_ONE {
                self.sum = rescale(self.sum, factor);
            }
            self.max = tile_max;
        }
        (factor, self.max)
    }

    /// Adds the weights of a tile to the running sum.
    #[inline]
    pub(crate) fn add(&mut self, weights: i64) {
        self.sum += weights;
    }

    /// Sum of the weights (Q15); 0 for a row that saw no key.
    pub(crate) fn sum(&self) -> i64 {
        self.sum
    }
}

/// The SDPA weight of a logit `t >= 0` (Q20) below the maximum: [`exp2_neg_q15`] capped at
/// [`SDPA_WEIGHT_MAX`].
#[inline]
pub(crate) fn sdpa_weight(t: u64) -> i32 {
    exp2_neg_q15(t).min(SDPA_WEIGHT_MAX) as i32
}

/// `x · factor / 2^15` rounded: applies a Q15 rescale factor.
#[inline]
pub(crate) fn rescale(x: i64, factor: i64) -> i64 {
    round_shift(x * factor, SDPA_WEIGHT_BITS)
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
    // inv ≈ 2^54 / sum in [2^30, 2^31]: one 64-bit division per row (sum' >= 2^23; the
    // checked division only spares the optimizer a panic path).
    let inv = ((1u64 << 54) + sum as u64 / 2)
        .checked_div(sum as u64)
        .unwrap_or(0) as i64;
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
    #[cfg_attr(miri, ignore = "long sweep: too slow under Miri")]
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
    fn q15_table_matches_f64() {
        for (k, &t) in EXP2_NEG_64THS_Q31.iter().enumerate() {
            let exact = libm::exp2(-(k as f64) / 64.0) * (1u64 << 31) as f64;
            assert!((t as f64 - exact).abs() <= 0.5, "k = {k}");
        }
        assert_eq!(
            LN2_Q32 as f64,
            libm::round(core::f64::consts::LN_2 * (1u64 << 32) as f64)
        );
    }

    #[test]
    #[cfg_attr(miri, ignore = "long sweep: too slow under Miri")]
    fn q15_weights_round_to_the_exact_value() {
        assert_eq!(exp2_neg_q15(0), 1 << 15);
        assert_eq!(sdpa_weight(0), (1 << 15) - 1);
        assert_eq!(exp2_neg_q15(1 << 20), 1 << 14);
        assert_eq!(exp2_neg_q15(15 << 20), 1);
        assert_eq!(exp2_neg_q15(16 << 20), 1); // 0.5 rounds up
        assert_eq!(exp2_neg_q15((16 << 20) + 64), 0);
        assert_eq!(exp2_neg_q15(17 << 20), 0);
        assert_eq!(exp2_neg_q15(u64::MAX), 0);
        // Every t of the first two units, then a stride: within half a step plus 1e-3 of
        // a step of the exact value (the polynomial and the truncations).
        let mut worst = 0.0f64;
        for t in (0..(2u64 << 20)).chain((0..(18u64 << 20)).step_by(1021)) {
            let exact = libm::exp2(-(t as f64) / (1u64 << 20) as f64) * 32768.0;
            let err = (exp2_neg_q15(t) as f64 - exact).abs();
            worst = worst.max(err);
        }
        assert!(worst <= 0.5002, "worst error {worst} steps");
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
