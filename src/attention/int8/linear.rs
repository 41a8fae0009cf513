//! Int8 linear attention (Katharopoulos et al., feature map `elu(x) + 1`), integers only:
//! `out_i = φ(q_i)ᵀ S / (φ(q_i) · z + eps)` with `S = Σ_j φ(k_j) v_jᵀ`, `z = Σ_j φ(k_j)`
//! over all keys, or over `j <= i` when causal.
//!
//! `φ` is computed in Q16: `1 + x·scale` for positive inputs, the fixed-point `2^-t` of the
//! softmax for the others (`e^x = 2^(x·log2(e))`). `S` and `z` are exact `i64` sums. Before the
//! contraction with `φ(q_i)`, `S` and `z` are shifted right together so that `z` keeps 24
//! significant bits (`|S_dc| <= 128 · z_d`, so `S` fits too), and `φ(q_i)` likewise to 20 bits:
//! numerator and denominator are then `i64` sums that cannot overflow for `d <= 2048`, and
//! share every rounding, so the ratio stays accurate to about `2^-20`.

use super::softmax::{exp2_neg_weight, normalize_row, LOGIT_FRAC_BITS, WEIGHT_ONE};
use crate::attention::sdpa::for_each_head;
use crate::attention::AttentionShape;
use crate::error::{check_len, product, Error};
use crate::quant::{round_shift, FixedMultiplier};

/// Largest feature size `d` of [`int8_linear_attention`].
pub const MAX_LINEAR_D: usize = 1 << 11;
/// Largest key count of [`int8_linear_attention`].
pub const MAX_LINEAR_L: usize = 1 << 20;
/// Largest `φ` (1 + the largest positive input in real units) the prepared multipliers may
/// produce: keeps `φ · v` sums within `i64` for [`MAX_LINEAR_L`] keys.
const MAX_PHI: f64 = (1u64 << 16) as f64;

/// `elu(x) + 1` of int8 inputs with one scale, as Q16 integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Int8EluFeature {
    /// `scale · 2^16`: `φ = 2^16 + x · positive` for `x > 0`.
    pub positive: FixedMultiplier,
    /// `scale · log2(e) · 2^20`: `φ = 2^-(−x · negative / 2^20)` in Q16 for `x <= 0`.
    pub negative: FixedMultiplier,
}

impl Int8EluFeature {
    /// The feature map of int8 inputs with quantization scale `scale` (prepare step, float).
    /// [`Error::InvalidScale`] unless finite, positive and `1 + 128 · scale <= 2^16`.
    pub fn new(scale: f32) -> Result<Self, Error> {
        if !(scale.is_finite() && scale > 0.0) || 1.0 + 128.0 * scale as f64 > MAX_PHI {
            return Err(Error::InvalidScale);
        }
        let s = scale as f64;
        Ok(Int8EluFeature {
            positive: FixedMultiplier::from_real(s * WEIGHT_ONE as f64)?,
            negative: FixedMultiplier::from_real(
                s * core::f64::consts::LOG2_E * (1u64 << LOGIT_FRAC_BITS) as f64,
            )?,
        })
    }

    /// `φ(x)` in Q16.
    #[inline]
    pub fn phi(&self, x: i8) -> i64 {
        if x > 0 {
            WEIGHT_ONE + self.positive.mul_round(x as i32)
        } else {
            exp2_neg_weight(self.negative.mul_round(-(x as i32)))
        }
    }

    fn validate(&self) -> Result<(), Error> {
        for m in [self.positive, self.negative] {
            FixedMultiplier::from_raw(m.multiplier(), m.shift())?;
        }
        // φ of the largest input must stay below MAX_PHI (in Q16).
        if self.positive.mul_round(128) > ((MAX_PHI as i64) << 16) {
            return Err(Error::InvalidScale);
        }
        Ok(())
    }
}

/// Parameters of an int8 linear attention call (integers only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Int8LinearAttentionParams {
    /// Query `i` sees keys `j <= i` only (requires `lq == lk`).
    pub causal: bool,
    /// Feature map of the queries.
    pub query: Int8EluFeature,
    /// Feature map of the keys.
    pub key: Int8EluFeature,
    /// `round(eps · 2^32)`: the denominator's epsilon in Q16 × Q16 units.
    pub eps_q32: i64,
    /// `v_scale / out_scale`.
    pub out: FixedMultiplier,
}

impl Int8LinearAttentionParams {
    /// Prepares the parameters from the scales (float, once). Errors: a scale not finite
    /// and positive, `eps` negative or not finite (or above 2^30) ([`Error::InvalidScale`]).
    pub fn new(
        q_scale: f32,
        k_scale: f32,
        v_scale: f32,
        out_scale: f32,
        causal: bool,
        eps: f32,
    ) -> Result<Self, Error> {
        if !(eps.is_finite() && (0.0..=(1u64 << 30) as f32).contains(&eps)) {
            return Err(Error::InvalidScale);
        }
        for s in [v_scale, out_scale] {
            if !(s.is_finite() && s > 0.0) {
                return Err(Error::InvalidScale);
            }
        }
        Ok(Int8LinearAttentionParams {
            causal,
            query: Int8EluFeature::new(q_scale)?,
            key: Int8EluFeature::new(k_scale)?,
            eps_q32: libm::round(eps as f64 * (1u64 << 32) as f64) as i64,
            out: FixedMultiplier::from_real(v_scale as f64 / out_scale as f64)?,
        })
    }
}

/// `i64` elements of scratch [`int8_linear_attention`] needs: `S` (`d · dv`), `z` and
/// `φ(q)` (`d` each), the output accumulators (`dv`). Saturates instead of overflowing.
pub const fn int8_linear_attention_scratch_len(shape: AttentionShape) -> usize {
    shape
        .d
        .saturating_mul(shape.dv)
        .saturating_add(shape.d.saturating_mul(2))
        .saturating_add(shape.dv)
}

/// Int8 linear attention over `q` `[heads, lq, d]`, `k` `[kv_heads, lk, d]`, `v`
/// `[kv_heads, lk, dv]` into `out` `[heads, lq, dv]` (int8, requantized with `params.out`).
/// Integers only.
///
/// Errors: a zero dimension, lengths that do not match `shape`, heads that do not divide,
/// causal with `lq != lk`, `d > MAX_LINEAR_D` or `lk > MAX_LINEAR_L`
/// ([`Error::InvalidParameter`]), invalid multipliers ([`Error::InvalidScale`]), short
/// scratch.
pub fn int8_linear_attention(
    q: &[i8],
    k: &[i8],
    v: &[i8],
    out: &mut [i8],
    shape: AttentionShape,
    params: &Int8LinearAttentionParams,
    scratch: &mut [i64],
) -> Result<(), Error> {
    validate(q, k, v, out, shape, params)?;
    let needed = int8_linear_attention_scratch_len(shape);
    let found = scratch.len();
    let all = scratch
        .get_mut(..needed)
        .ok_or(Error::ScratchTooSmall { needed, found })?;
    // `needed` covers the four parts; the checked splits only keep panics out of the code.
    let short = Error::ScratchTooSmall { needed, found };
    let (s, rest) = all
        .split_at_mut_checked(product(&[shape.d, shape.dv])?)
        .ok_or(short)?;
    let (z, rest) = rest.split_at_mut_checked(shape.d).ok_or(short)?;
    let (phi_q, acc) = rest.split_at_mut_checked(shape.d).ok_or(short)?;
    run(q, k, v, out, shape, params, s, z, phi_q, acc);
    Ok(())
}

/// Fixed-size single-head int8 linear attention; the state lives on the stack
/// (`8·(D·DV + 2·D + DV)` bytes).
pub fn int8_linear_attention_fixed<
    const LQ: usize,
    const LK: usize,
    const D: usize,
    const DV: usize,
>(
    q: &[[i8; D]; LQ],
    k: &[[i8; D]; LK],
    v: &[[i8; DV]; LK],
    out: &mut [[i8; DV]; LQ],
    params: &Int8LinearAttentionParams,
) -> Result<(), Error> {
    let shape = AttentionShape::single(LQ, LK, D, DV);
    let (q, k, v, out) = (
        q.as_flattened(),
        k.as_flattened(),
        v.as_flattened(),
        out.as_flattened_mut(),
    );
    validate(q, k, v, out, shape, params)?;
    let mut s = [[0i64; DV]; D];
    let (mut z, mut phi_q, mut acc) = ([0i64; D], [0i64; D], [0i64; DV]);
    run(
        q,
        k,
        v,
        out,
        shape,
        params,
        s.as_flattened_mut(),
        &mut z,
        &mut phi_q,
        &mut acc,
    );
    Ok(())
}

/// Checks every shape and parameter (integer only).
fn validate(
    q: &[i8],
    k: &[i8],
    v: &[i8],
    out: &[i8],
    shape: AttentionShape,
    params: &Int8LinearAttentionParams,
) -> Result<(), Error> {
    let (q_len, k_len, v_len, out_len) = shape.lengths()?;
    check_len(q, q_len)?;
    check_len(k, k_len)?;
    check_len(v, v_len)?;
    check_len(out, out_len)?;
    let AttentionShape { lq, lk, d, .. } = shape;
    if (params.causal && lq != lk) || d > MAX_LINEAR_D || lk > MAX_LINEAR_L {
        return Err(Error::InvalidParameter);
    }
    params.query.validate()?;
    params.key.validate()?;
    FixedMultiplier::from_raw(params.out.multiplier(), params.out.shift())?;
    if !(0..=1i64 << 62).contains(&params.eps_q32) {
        return Err(Error::InvalidScale);
    }
    Ok(())
}

/// Every head on validated inputs: `s` is `d·dv`, `z` and `phi_q` `d`, `acc` `dv`.
#[allow(clippy::too_many_arguments)]
fn run(
    q: &[i8],
    k: &[i8],
    v: &[i8],
    out: &mut [i8],
    shape: AttentionShape,
    params: &Int8LinearAttentionParams,
    s: &mut [i64],
    z: &mut [i64],
    phi_q: &mut [i64],
    acc: &mut [i64],
) {
    let AttentionShape { lk, d, dv, .. } = shape;
    // Never zero after validation; tested once so that chunking cannot panic.
    if d == 0 || dv == 0 {
        return;
    }
    for_each_head(q, k, v, out, shape, |_, q_h, k_h, v_h, out_h| {
        s.fill(0);
        z.fill(0);
        let mut seen = if params.causal { 0 } else { lk };
        add_keys(k_h, v_h, 0..seen, &params.key, s, z);
        let rows = q_h.chunks_exact(d).zip(out_h.chunks_exact_mut(dv));
        for (i, (q_row, out_row)) in rows.enumerate() {
            if params.causal {
                add_keys(k_h, v_h, seen..i + 1, &params.key, s, z);
                seen = i + 1;
            }
            for (p, &x) in phi_q.iter_mut().zip(q_row) {
                *p = params.query.phi(x);
            }
            let den = contract(phi_q, s, z, acc, params.eps_q32);
            normalize_row(acc, den, params.out, out_row);
        }
    });
}

/// `S += φ(k_j) v_jᵀ`, `z += φ(k_j)` for the keys in `range`.
fn add_keys(
    k: &[i8],
    v: &[i8],
    range: core::ops::Range<usize>,
    feature: &Int8EluFeature,
    s: &mut [i64],
    z: &mut [i64],
) {
    let d = z.len();
    let Some(dv) = s.len().checked_div(d) else {
        return;
    };
    // The keys of `range` (within the head after validation), as whole rows.
    let (Some(k_rows), Some(v_rows)) = (
        k.get(range.start * d..range.end * d),
        v.get(range.start * dv..range.end * dv),
    ) else {
        return;
    };
    if dv == 0 {
        return;
    }
    for (k_row, v_row) in k_rows.chunks_exact(d).zip(v_rows.chunks_exact(dv)) {
        for ((&x, zd), s_row) in k_row.iter().zip(z.iter_mut()).zip(s.chunks_exact_mut(dv)) {
            let phi = feature.phi(x);
            *zd += phi;
            for (sc, &vc) in s_row.iter_mut().zip(v_row) {
                *sc += phi * vc as i64;
            }
        }
    }
}

/// Numerators `Σ_d φq_d S_dc` into `acc`; returns the denominator `Σ_d φq_d z_d + eps`;
/// both after the common normalizing shifts.
fn contract(phi_q: &mut [i64], s: &[i64], z: &[i64], acc: &mut [i64], eps_q32: i64) -> i64 {
    let dv = acc.len();
    // z_d > 0 always (φ > 0), |S_dc| <= 128 z_d: shift both so max z has 24 bits.
    let z_max = z.iter().copied().max().unwrap_or(0);
    let sh = (64 - z_max.leading_zeros()).saturating_sub(24);
    let q_max = phi_q.iter().copied().max().unwrap_or(0);
    let sq = (64 - q_max.leading_zeros()).saturating_sub(20);
    for p in phi_q.iter_mut() {
        *p = round_shift(*p, sq);
    }
    acc.fill(0);
    let mut den = 0i64;
    // `dv` is never 0 (`max` only keeps the chunking from asserting it).
    for ((&p, &zd), s_row) in phi_q.iter().zip(z.iter()).zip(s.chunks_exact(dv.max(1))) {
        if p == 0 {
            continue;
        }
        den += p * round_shift(zd, sh);
        for (a, &sc) in acc.iter_mut().zip(s_row) {
            *a += p * round_shift(sc, sh);
        }
    }
    den + round_shift(eps_q32, sh + sq)
}
