//! Shared pieces of the single-query int8 forms (Luong, Bahdanau): a fixed-point `tanh`, the
//! `v · tanh(W_q q + W_k k)` score, and a softmax that returns its weights (Q15) as well as
//! the requantized context.

use super::score::bound;
use super::softmax::{exp2_neg_q30_frac, exp2_neg_weight, normalize_row, LOGIT_FRAC_BITS};
use crate::error::Error;
use crate::mask::Mask;
use crate::quant::{round_shift, FixedMultiplier};

/// Logit of a masked key in the logit scratch.
pub(crate) const MASKED: i64 = i64::MIN;

/// Fractional bits of the weights the single-query forms return (`i16`, 1.0 saturates to
/// 32767).
pub const WEIGHT_Q15_BITS: u32 = 15;

/// `round(log2(e) · 2^30)`.
const LOG2E_Q30: i64 = 1549082005;

/// `tanh(x)` in Q30 for `x` in Q20 (natural units), from `e^(-2|x|)` computed with the
/// fixed-point `2^-t` and one 64-bit division. Absolute error below `5e-7`.
pub(crate) fn tanh_q30(x: i64) -> i64 {
    // tanh(20) = 1 - 8e-18: beyond that the Q30 result is exactly 1.
    let a = x.unsigned_abs().min(20 << LOGIT_FRAC_BITS) as i64;
    // t = 2 a log2(e) in Q20.
    let t = round_shift(2 * a * LOG2E_Q30, 30);
    let n = (t >> LOGIT_FRAC_BITS) as u32;
    let e = if n >= 31 {
        0
    } else {
        round_shift(exp2_neg_q30_frac(t), n)
    };
    let one = 1i64 << 30;
    // `one + e` is in [2^30, 2^31]: the checked division never fails, it only keeps a panic
    // path out of the code.
    let den = one + e;
    let r = (((one - e) << 30) + den / 2).checked_div(den).unwrap_or(0);
    if x < 0 {
        -r
    } else {
        r
    }
}

/// Multipliers that put the two halves of `W_q q + W_k k` on a common Q20 natural-log
/// scale, one per hidden unit (a row of `W_q` / `W_k`, per-output-channel weight scales) or a
/// single one for every unit (per-tensor weight scales).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Int8TanhMultipliers<'a> {
    /// `w_query_scale[a] · query_scale · 2^20`; `a` entries or 1.
    pub query: &'a [FixedMultiplier],
    /// `w_key_scale[a] · key_scale · 2^20`; `a` entries or 1.
    pub key: &'a [FixedMultiplier],
}

impl<'a> Int8TanhMultipliers<'a> {
    /// From the quantization scales (prepare step, float): `w_query_scales` and
    /// `w_key_scales` hold one scale per row (per output channel) or a single one. `storage`
    /// holds at least `w_query_scales.len() + w_key_scales.len()` multipliers.
    ///
    /// Errors: a scale that is not finite and positive, or a multiplier out of range
    /// ([`Error::InvalidScale`]); an empty scale list ([`Error::ZeroDimension`]); short
    /// storage ([`Error::ScratchTooSmall`]).
    pub fn new(
        query_scale: f32,
        w_query_scales: &[f32],
        key_scale: f32,
        w_key_scales: &[f32],
        storage: &'a mut [FixedMultiplier],
    ) -> Result<Self, Error> {
        if w_query_scales.is_empty() || w_key_scales.is_empty() {
            return Err(Error::ZeroDimension);
        }
        let needed = w_query_scales.len() + w_key_scales.len();
        let found = storage.len();
        let storage = storage
            .get_mut(..needed)
            .ok_or(Error::ScratchTooSmall { needed, found })?;
        let (query, key) = storage
            .split_at_mut_checked(w_query_scales.len())
            .ok_or(Error::ScratchTooSmall { needed, found })?;
        let unit = (1u64 << LOGIT_FRAC_BITS) as f64;
        for (m, &w) in query.iter_mut().zip(w_query_scales) {
            *m = FixedMultiplier::from_real(checked(query_scale)? * checked(w)? * unit)?;
        }
        for (m, &w) in key.iter_mut().zip(w_key_scales) {
            *m = FixedMultiplier::from_real(checked(key_scale)? * checked(w)? * unit)?;
        }
        Ok(Int8TanhMultipliers { query, key })
    }

    /// Checks the lengths (`a` or 1) and that the Q20 halves cannot overflow for feature
    /// sizes `dq` and `dk` (their sum stays below 2^61).
    pub(crate) fn validate(&self, a: usize, dq: usize, dk: usize) -> Result<(), Error> {
        for (list, d) in [(self.query, dq), (self.key, dk)] {
            if list.len() != a && list.len() != 1 {
                return Err(Error::LengthMismatch {
                    expected: a,
                    found: list.len(),
                });
            }
            for &m in list {
                FixedMultiplier::from_raw(m.multiplier(), m.shift())?;
                if bound((1 << 14) * d as u128, m) > 1 << 60 {
                    return Err(Error::InvalidScale);
                }
            }
        }
        Ok(())
    }
}

/// Entry `a` of a per-unit list, or its only entry.
#[inline]
pub(crate) fn unit(list: &[FixedMultiplier], a: usize) -> FixedMultiplier {
    list.get(a)
        .or(list.first())
        .copied()
        .unwrap_or(FixedMultiplier::ONE)
}

/// A scale as f64, or [`Error::InvalidScale`] unless finite and positive.
pub(crate) fn checked(s: f32) -> Result<f64, Error> {
    if s.is_finite() && s > 0.0 {
        Ok(s as f64)
    } else {
        Err(Error::InvalidScale)
    }
}

/// The logit multiplier of a `v · tanh(..)` score: `v_scale · log2(e) · 2^20 / 2^30`.
pub(crate) fn tanh_logit(v_scale: f32) -> Result<FixedMultiplier, Error> {
    let unit = core::f64::consts::LOG2_E * (1u64 << LOGIT_FRAC_BITS) as f64;
    FixedMultiplier::from_real(checked(v_scale)? * unit / (1u64 << 30) as f64)
}

/// `Σ_a v_a · tanh(pre_a + key_a · (W_k k)_a)` (Q30 × int8), the logit of one key:
/// `pre` holds the query half in Q20, `w_key` row `a` starts at `a · stride`.
#[allow(clippy::too_many_arguments)]
#[inline]
pub(crate) fn tanh_score(
    pre: &[i64],
    w_key: &[i8],
    stride: usize,
    k: &[i8],
    v: &[i8],
    key: &[FixedMultiplier],
    logit: FixedMultiplier,
) -> i64 {
    let dk = k.len();
    let mut s = 0i64;
    // Row `a` of `W_k` is the first `dk` elements of its `stride`-long chunk (validated: the
    // checks only keep panics out of the code; `stride` is never 0).
    let rows = w_key.chunks(stride.max(1));
    for (a, ((&p, &va), row)) in pre.iter().zip(v).zip(rows).enumerate() {
        let Some(row) = row.get(..dk) else {
            break;
        };
        let acc: i32 = row.iter().zip(k).map(|(&w, &x)| w as i32 * x as i32).sum();
        s += va as i64 * tanh_q30(p + unit(key, a).mul_round(acc));
    }
    logit.mul_round_wide(s, 0)
}

/// Scores the keys the mask allows for query row 0 into `z` (`[l]`, masked keys get
/// [`MASKED`]).
pub(crate) fn score_allowed(
    mask: &Mask<'_>,
    z: &mut [i64],
    keys: &[i8],
    dk: usize,
    mut score: impl FnMut(&[i8]) -> i64,
) {
    z.fill(MASKED);
    let l = z.len();
    for run in mask.row(0, l) {
        let (Some(z_run), Some(k_run)) = (
            z.get_mut(run.clone()),
            keys.get(run.start * dk..run.end * dk),
        ) else {
            continue;
        };
        // `dk` is never 0 (`max` only keeps the chunking from asserting it).
        for (s, k_row) in z_run.iter_mut().zip(k_run.chunks_exact(dk.max(1))) {
            *s = score(k_row);
        }
    }
}

/// Softmax of the logits `z` (Q20 base-2 units, [`MASKED`] for masked keys) into `weights`
/// (Q15, 0 for masked keys) and the requantized weighted sum of `values` (`[l, dv]`) into
/// `context`; `acc` holds `dv` accumulators. No allowed key: zeros everywhere.
pub(crate) fn softmax_context(
    z: &mut [i64],
    values: &[i8],
    acc: &mut [i64],
    out: FixedMultiplier,
    context: &mut [i8],
    weights: &mut [i16],
) {
    let dv = acc.len();
    acc.fill(0);
    let max = z.iter().copied().filter(|&s| s != MASKED).max();
    let Some(max) = max else {
        context.fill(0);
        weights.fill(0);
        return;
    };
    let mut sum = 0i64;
    // `dv` is never 0 (`max` only keeps the chunking from asserting it).
    for (s, v_row) in z.iter_mut().zip(values.chunks_exact(dv.max(1))) {
        let w = if *s == MASKED {
            0
        } else {
            exp2_neg_weight(max - *s)
        };
        *s = w;
        if w != 0 {
            sum += w;
            let w = w as i32;
            for (a, &x) in acc.iter_mut().zip(v_row) {
                *a += (w * x as i32) as i64;
            }
        }
    }
    for (o, &w) in weights.iter_mut().zip(z.iter()) {
        // `sum > 0`: the allowed key with the largest logit weighs 1.
        let q = ((w << WEIGHT_Q15_BITS) + sum / 2)
            .checked_div(sum)
            .unwrap_or(0);
        *o = q.min(i16::MAX as i64) as i16;
    }
    normalize_row(acc, sum, out, context);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tanh_matches_f64() {
        let mut worst = 0.0f64;
        for i in -4000i64..=4000 {
            let x = i * 6151; // up to ±23.5 in Q20
            let got = tanh_q30(x) as f64 / (1u64 << 30) as f64;
            let exact = libm::tanh(x as f64 / (1u64 << 20) as f64);
            worst = worst.max((got - exact).abs());
        }
        assert!(worst < 5e-7, "worst {worst}");
        assert_eq!(tanh_q30(0), 0);
        assert_eq!(tanh_q30(i64::MAX), 1 << 30);
        assert_eq!(tanh_q30(i64::MIN), -(1 << 30));
    }

    #[test]
    fn log2e_constant() {
        assert_eq!(
            LOG2E_Q30,
            libm::round(core::f64::consts::LOG2_E * (1u64 << 30) as f64) as i64
        );
    }
}
