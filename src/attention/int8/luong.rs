//! Int8 Luong attention (dot, general, concat): one int8 query against int8 keys, integer
//! scores and softmax, an int8 context and Q15 weights.
//!
//! `general` computes `u = Wᵀ q` once (exact `i32`), then `u · k_j` in `i64`; `concat`
//! computes the query half of `W [q; k_j]` once and a fixed-point `tanh` per hidden unit and
//! key. Weight matrices use one scale per tensor.

use super::context::{
    checked, score_allowed, softmax_context, tanh_logit, tanh_score, unit, Int8TanhMultipliers,
};
use super::score::{bound, MAX_LOGIT};
use super::softmax::LOGIT_FRAC_BITS;
use crate::attention::LuongShape;
use crate::error::{check_len, nonzero, product, Error};
use crate::mask::Mask;
use crate::quant::FixedMultiplier;

/// Largest `d` (and hidden size) of the int8 Luong and Bahdanau forms.
pub const MAX_SINGLE_QUERY_D: usize = 1 << 16;

/// An int8 Luong score with its weights and the multipliers that turn it into base-2
/// fixed-point logits (20 fractional bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Int8LuongScore<'a> {
    /// `q · k_j`; `logit = q_scale · k_scale · log2(e) · 2^20`.
    Dot {
        /// Logit units per unit of the integer dot product.
        logit: FixedMultiplier,
    },
    /// `qᵀ W k_j`; `logit = q_scale · w_scale · k_scale · log2(e) · 2^20`.
    General {
        /// `W`, `[d, d]`, int8.
        w: &'a [i8],
        /// Logit units per unit of the integer bilinear form.
        logit: FixedMultiplier,
    },
    /// `v · tanh(W [q; k_j])`; the hidden size is `v.len()`.
    Concat {
        /// `W`, `[a, 2d]`, int8 (query half, then key half of each row).
        w: &'a [i8],
        /// `v`, `[a]`, int8.
        v: &'a [i8],
        /// Multipliers of the query and key halves of `W [q; k]` (Q20 natural units).
        tanh: Int8TanhMultipliers<'a>,
        /// `v_scale · log2(e) · 2^-10`: logit units per Q30 unit of `v · tanh`.
        logit: FixedMultiplier,
    },
}

const LOG2E_Q20: f64 = core::f64::consts::LOG2_E * (1u64 << LOGIT_FRAC_BITS) as f64;

impl<'a> Int8LuongScore<'a> {
    /// `dot` for queries and keys with these scales (prepare step, float).
    pub fn dot(query_scale: f32, keys_scale: f32) -> Result<Self, Error> {
        Ok(Int8LuongScore::Dot {
            logit: FixedMultiplier::from_real(
                checked(query_scale)? * checked(keys_scale)? * LOG2E_Q20,
            )?,
        })
    }

    /// `general` with int8 `w` of scale `w_scale` (prepare step, float).
    pub fn general(
        w: &'a [i8],
        query_scale: f32,
        w_scale: f32,
        keys_scale: f32,
    ) -> Result<Self, Error> {
        Ok(Int8LuongScore::General {
            w,
            logit: FixedMultiplier::from_real(
                checked(query_scale)? * checked(w_scale)? * checked(keys_scale)? * LOG2E_Q20,
            )?,
        })
    }

    /// `concat` with int8 `w` (one scale per row in `w_scales`, or a single one) and `v`
    /// (scale `v_scale`) (prepare step). `storage` holds `2 · w_scales.len()` multipliers.
    #[allow(clippy::too_many_arguments)]
    pub fn concat(
        w: &'a [i8],
        v: &'a [i8],
        query_scale: f32,
        keys_scale: f32,
        w_scales: &[f32],
        v_scale: f32,
        storage: &'a mut [FixedMultiplier],
    ) -> Result<Self, Error> {
        Ok(Int8LuongScore::Concat {
            w,
            v,
            tanh: Int8TanhMultipliers::new(query_scale, w_scales, keys_scale, w_scales, storage)?,
            logit: tanh_logit(v_scale)?,
        })
    }

    /// `i64` elements of per-query precomputation: 0, `d` (`u = Wᵀ q`) or `a`.
    const fn pre_len(&self, d: usize) -> usize {
        match self {
            Int8LuongScore::Dot { .. } => 0,
            Int8LuongScore::General { .. } => d,
            Int8LuongScore::Concat { v, .. } => v.len(),
        }
    }
}

/// Score, output multiplier and mask of an int8 Luong call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Int8LuongParams<'a> {
    /// The score and its multipliers.
    pub score: Int8LuongScore<'a>,
    /// `values_scale / context_scale`.
    pub out: FixedMultiplier,
    /// Allowed keys of the query (row 0 at `mask.q_pos_offset`).
    pub mask: Mask<'a>,
}

/// `i64` elements of scratch [`int8_luong_attention`] needs: the per-query precomputation,
/// the logits (`l`) and the context accumulators (`dv`). Saturates instead of overflowing.
pub const fn int8_luong_scratch_len(shape: LuongShape, score: &Int8LuongScore<'_>) -> usize {
    score
        .pre_len(shape.d)
        .saturating_add(shape.l)
        .saturating_add(shape.dv)
}

/// Int8 Luong attention: `weights` (`[l]`) receives the softmax in Q15 (`i16`, 0 for masked
/// keys), `context` (`[dv]`) the weighted sum of `values` requantized with `params.out`.
/// Integer arithmetic only.
///
/// Errors: a zero dimension, slice lengths that do not match `shape` (including `w`, and an
/// empty `v` for `concat`), `d` or the hidden size above [`MAX_SINGLE_QUERY_D`]
/// ([`Error::InvalidParameter`]), multipliers that could overflow ([`Error::InvalidScale`]),
/// an invalid mask, scratch too small.
///
/// ```
/// use microattn::attention::LuongShape;
/// use microattn::attention::int8::{int8_luong_attention, Int8LuongParams, Int8LuongScore};
/// use microattn::mask::Mask;
/// use microattn::quant::FixedMultiplier;
/// let shape = LuongShape { l: 2, d: 1, dv: 1 };
/// // q·k in units of 0.01 · 0.01: logits 1 and 0 for keys 100 and 0 against query 100.
/// let params = Int8LuongParams {
///     score: Int8LuongScore::dot(0.01, 0.01)?,
///     out: FixedMultiplier::from_real(1.0)?,
///     mask: Mask::NONE,
/// };
/// let (mut context, mut weights, mut scratch) = ([0i8; 1], [0i16; 2], [0i64; 3]);
/// int8_luong_attention(&[100], &[100, 0], &[100, 0], shape, &params, &mut context,
///     &mut weights, &mut scratch)?;
/// assert_eq!(weights, [23955, 8813]); // e/(1+e) and 1/(1+e) in Q15
/// assert_eq!(context, [73]);
/// # Ok::<(), microattn::Error>(())
/// ```
#[allow(clippy::too_many_arguments)]
pub fn int8_luong_attention(
    query: &[i8],
    keys: &[i8],
    values: &[i8],
    shape: LuongShape,
    params: &Int8LuongParams<'_>,
    context: &mut [i8],
    weights: &mut [i16],
    scratch: &mut [i64],
) -> Result<(), Error> {
    validate(query, keys, values, shape, params, context, weights)?;
    let LuongShape { l, d, .. } = shape;
    let needed = int8_luong_scratch_len(shape, &params.score);
    let found = scratch.len();
    let all = scratch
        .get_mut(..needed)
        .ok_or(Error::ScratchTooSmall { needed, found })?;
    // `needed` covers the three parts; the checked splits only keep panics out of the code.
    let short = Error::ScratchTooSmall { needed, found };
    let (pre, rest) = all
        .split_at_mut_checked(params.score.pre_len(d))
        .ok_or(short)?;
    let (z, acc) = rest.split_at_mut_checked(l).ok_or(short)?;
    run(
        query, keys, values, d, params, pre, z, acc, context, weights,
    );
    Ok(())
}

/// Fixed-size int8 Luong `dot` or `general` attention (scratch on the stack: `8·(D + L +
/// DV)` bytes). `concat` needs [`int8_luong_concat_fixed`]; passing it here is
/// [`Error::InvalidParameter`].
pub fn int8_luong_fixed<const L: usize, const D: usize, const DV: usize>(
    query: &[i8; D],
    keys: &[[i8; D]; L],
    values: &[[i8; DV]; L],
    params: &Int8LuongParams<'_>,
    context: &mut [i8; DV],
    weights: &mut [i16; L],
) -> Result<(), Error> {
    if let Int8LuongScore::Concat { .. } = params.score {
        return Err(Error::InvalidParameter);
    }
    let shape = LuongShape { l: L, d: D, dv: DV };
    let (keys, values) = (keys.as_flattened(), values.as_flattened());
    validate(query, keys, values, shape, params, context, weights)?;
    let (mut pre, mut z, mut acc) = ([0i64; D], [0i64; L], [0i64; DV]);
    let pre = &mut pre[..params.score.pre_len(D)];
    run(
        query, keys, values, D, params, pre, &mut z, &mut acc, context, weights,
    );
    Ok(())
}

/// Fixed-size int8 Luong `concat` attention with `A` hidden units: `params.score` must be
/// [`Int8LuongScore::Concat`] with `v` of `A` elements ([`Error::InvalidParameter`] or a
/// length error otherwise).
pub fn int8_luong_concat_fixed<const L: usize, const D: usize, const DV: usize, const A: usize>(
    query: &[i8; D],
    keys: &[[i8; D]; L],
    values: &[[i8; DV]; L],
    params: &Int8LuongParams<'_>,
    context: &mut [i8; DV],
    weights: &mut [i16; L],
) -> Result<(), Error> {
    let Int8LuongScore::Concat { v, .. } = params.score else {
        return Err(Error::InvalidParameter);
    };
    check_len(v, A)?;
    let shape = LuongShape { l: L, d: D, dv: DV };
    let (keys, values) = (keys.as_flattened(), values.as_flattened());
    validate(query, keys, values, shape, params, context, weights)?;
    let (mut pre, mut z, mut acc) = ([0i64; A], [0i64; L], [0i64; DV]);
    run(
        query, keys, values, D, params, &mut pre, &mut z, &mut acc, context, weights,
    );
    Ok(())
}

/// Checks every shape and parameter of a Luong call (integer only).
fn validate(
    query: &[i8],
    keys: &[i8],
    values: &[i8],
    shape: LuongShape,
    params: &Int8LuongParams<'_>,
    context: &[i8],
    weights: &[i16],
) -> Result<(), Error> {
    let LuongShape { l, d, dv } = shape;
    nonzero(&[l, d, dv])?;
    check_len(query, d)?;
    check_len(keys, product(&[l, d])?)?;
    check_len(values, product(&[l, dv])?)?;
    check_len(context, dv)?;
    check_len(weights, l)?;
    if d > MAX_SINGLE_QUERY_D {
        return Err(Error::InvalidParameter);
    }
    let d128 = d as u128;
    let ok = match params.score {
        Int8LuongScore::Dot { logit } => bound((1 << 14) * d128, logit) <= MAX_LOGIT,
        Int8LuongScore::General { w, logit } => {
            check_len(w, product(&[d, d])?)?;
            bound((1 << 21) * d128 * d128, logit) <= MAX_LOGIT
        }
        Int8LuongScore::Concat { w, v, logit, tanh } => {
            nonzero(&[v.len()])?;
            tanh.validate(v.len(), d, d)?;
            if v.len() > MAX_SINGLE_QUERY_D {
                return Err(Error::InvalidParameter);
            }
            check_len(w, product(&[v.len(), 2, d])?)?;
            bound((1 << 37) * v.len() as u128, logit) <= MAX_LOGIT
        }
    };
    if !ok {
        return Err(Error::InvalidScale);
    }
    FixedMultiplier::from_raw(params.out.multiplier(), params.out.shift())?;
    params.mask.validate()?;
    Ok(())
}

/// Scores, softmax and context on validated inputs; `pre`, `z`, `acc` sized as
/// [`int8_luong_scratch_len`] splits them.
#[allow(clippy::too_many_arguments)]
fn run(
    query: &[i8],
    keys: &[i8],
    values: &[i8],
    d: usize,
    params: &Int8LuongParams<'_>,
    pre: &mut [i64],
    z: &mut [i64],
    acc: &mut [i64],
    context: &mut [i8],
    weights: &mut [i16],
) {
    match params.score {
        Int8LuongScore::Dot { logit } => score_allowed(&params.mask, z, keys, d, |k| {
            logit.mul_round(super::score::dot(query, k))
        }),
        Int8LuongScore::General { w, logit } => {
            // u_c = Σ_r q_r W[r][c]: exact, |u_c| <= 2^14 · d.
            pre.fill(0);
            // `d` is never 0 (`max` only keeps the chunking from asserting it).
            for (&q, w_row) in query.iter().zip(w.chunks_exact(d.max(1))) {
                for (u, &x) in pre.iter_mut().zip(w_row) {
                    *u += q as i64 * x as i64;
                }
            }
            let u: &[i64] = pre;
            score_allowed(&params.mask, z, keys, d, |k| {
                let s: i64 = u.iter().zip(k).map(|(&a, &b)| a * b as i64).sum();
                logit.mul_round_wide(s, 0)
            })
        }
        Int8LuongScore::Concat { w, v, tanh, logit } => {
            // Row `i` of `W` is `[W_q | W_k]`; zipping with the `d`-long query reads `W_q`.
            let rows = w.chunks_exact((2 * d).max(1));
            for (i, (p, w_row)) in pre.iter_mut().zip(rows).enumerate() {
                let acc: i32 = w_row
                    .iter()
                    .zip(query)
                    .map(|(&a, &b)| a as i32 * b as i32)
                    .sum();
                *p = unit(tanh.query, i).mul_round(acc);
            }
            let (pre, w_key) = (&*pre, w.get(d..).unwrap_or(&[]));
            score_allowed(&params.mask, z, keys, d, |k| {
                tanh_score(pre, w_key, 2 * d, k, v, tanh.key, logit)
            })
        }
    }
    softmax_context(z, values, acc, params.out, context, weights);
}
