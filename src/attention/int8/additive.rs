//! Int8 Bahdanau (additive) attention: `score_j = v · tanh(W_q q + W_k k_j)` with int8
//! weights (one scale per row of `W_q` / `W_k`, or per tensor), a fixed-point `tanh`, integer softmax, an int8 context and
//! Q15 weights.

use super::context::{
    checked, score_allowed, softmax_context, tanh_logit, tanh_score, unit, Int8TanhMultipliers,
};
use super::luong::MAX_SINGLE_QUERY_D;
use super::score::{bound, MAX_LOGIT};
use crate::attention::AdditiveShape;
use crate::error::{check_len, nonzero, product, Error};
use crate::mask::Mask;
use crate::quant::FixedMultiplier;

/// Quantization scales of an int8 Bahdanau call (per tensor).
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Int8AdditiveScales<'s> {
    /// Query scale.
    pub query: f32,
    /// Keys scale.
    pub keys: f32,
    /// Values scale.
    pub values: f32,
    /// `W_q` scales: one per row, or a single one.
    pub w_query: &'s [f32],
    /// `W_k` scales: one per row, or a single one.
    pub w_key: &'s [f32],
    /// `v` scale.
    pub v: f32,
    /// Context (output) scale; `values` never saturates.
    pub context: f32,
}

/// Int8 weights, multipliers and mask of a Bahdanau call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Int8AdditiveParams<'a> {
    /// `W_q`, `[a, dq]`.
    pub w_query: &'a [i8],
    /// `W_k`, `[a, dk]`.
    pub w_key: &'a [i8],
    /// `v`, `[a]`.
    pub v: &'a [i8],
    /// Multipliers putting `W_q q` and `W_k k` on a Q20 natural-log scale.
    pub tanh: Int8TanhMultipliers<'a>,
    /// `v_scale · log2(e) · 2^-10`.
    pub logit: FixedMultiplier,
    /// `values_scale / context_scale`.
    pub out: FixedMultiplier,
    /// Allowed keys of the query (row 0 at `mask.q_pos_offset`).
    pub mask: Mask<'a>,
}

impl<'a> Int8AdditiveParams<'a> {
    /// Prepares the multipliers from the scales (float, once). `storage` holds
    /// `scales.w_query.len() + scales.w_key.len()` multipliers.
    pub fn new(
        w_query: &'a [i8],
        w_key: &'a [i8],
        v: &'a [i8],
        scales: Int8AdditiveScales<'_>,
        mask: Mask<'a>,
        storage: &'a mut [FixedMultiplier],
    ) -> Result<Self, Error> {
        Ok(Int8AdditiveParams {
            w_query,
            w_key,
            v,
            tanh: Int8TanhMultipliers::new(
                scales.query,
                scales.w_query,
                scales.keys,
                scales.w_key,
                storage,
            )?,
            logit: tanh_logit(scales.v)?,
            out: FixedMultiplier::from_real(checked(scales.values)? / checked(scales.context)?)?,
            mask,
        })
    }
}

/// `i64` elements of scratch [`int8_additive_attention`] needs: `W_q q` (`a`), the logits
/// (`l`) and the context accumulators (`dv`). Saturates instead of overflowing.
pub const fn int8_additive_scratch_len(shape: AdditiveShape) -> usize {
    shape.a.saturating_add(shape.l).saturating_add(shape.dv)
}

/// Int8 Bahdanau attention: `weights` (`[l]`) gets the softmax in Q15 (0 for masked keys),
/// `context` (`[dv]`) the requantized weighted sum of `values`. Integer arithmetic only.
///
/// Errors: a zero dimension, slice lengths that do not match `shape`, `dq`, `dk` or `a` above
/// [`MAX_SINGLE_QUERY_D`] ([`Error::InvalidParameter`]), a logit multiplier that could
/// overflow ([`Error::InvalidScale`]), an invalid mask, scratch too small.
#[allow(clippy::too_many_arguments)]
pub fn int8_additive_attention(
    query: &[i8],
    keys: &[i8],
    values: &[i8],
    shape: AdditiveShape,
    params: &Int8AdditiveParams<'_>,
    context: &mut [i8],
    weights: &mut [i16],
    scratch: &mut [i64],
) -> Result<(), Error> {
    validate(query, keys, values, shape, params, context, weights)?;
    let needed = int8_additive_scratch_len(shape);
    let found = scratch.len();
    let all = scratch
        .get_mut(..needed)
        .ok_or(Error::ScratchTooSmall { needed, found })?;
    // `needed` covers the three parts; the checked splits only keep panics out of the code.
    let short = Error::ScratchTooSmall { needed, found };
    let (pre, rest) = all.split_at_mut_checked(shape.a).ok_or(short)?;
    let (z, acc) = rest.split_at_mut_checked(shape.l).ok_or(short)?;
    run(
        query, keys, values, shape, params, pre, z, acc, context, weights,
    );
    Ok(())
}

/// Fixed-size int8 Bahdanau attention (scratch on the stack: `8·(A + L + DV)` bytes).
#[allow(clippy::too_many_arguments)]
pub fn int8_additive_attention_fixed<
    const L: usize,
    const DQ: usize,
    const DK: usize,
    const DV: usize,
    const A: usize,
>(
    query: &[i8; DQ],
    keys: &[[i8; DK]; L],
    values: &[[i8; DV]; L],
    params: &Int8AdditiveParams<'_>,
    context: &mut [i8; DV],
    weights: &mut [i16; L],
) -> Result<(), Error> {
    let shape = AdditiveShape {
        l: L,
        dq: DQ,
        dk: DK,
        dv: DV,
        a: A,
    };
    let (keys, values) = (keys.as_flattened(), values.as_flattened());
    validate(query, keys, values, shape, params, context, weights)?;
    let (mut pre, mut z, mut acc) = ([0i64; A], [0i64; L], [0i64; DV]);
    run(
        query, keys, values, shape, params, &mut pre, &mut z, &mut acc, context, weights,
    );
    Ok(())
}

/// Checks every shape and parameter of a Bahdanau call (integer only).
fn validate(
    query: &[i8],
    keys: &[i8],
    values: &[i8],
    shape: AdditiveShape,
    params: &Int8AdditiveParams<'_>,
    context: &[i8],
    weights: &[i16],
) -> Result<(), Error> {
    let AdditiveShape { l, dq, dk, dv, a } = shape;
    nonzero(&[l, dq, dk, dv, a])?;
    check_len(query, dq)?;
    check_len(keys, product(&[l, dk])?)?;
    check_len(values, product(&[l, dv])?)?;
    check_len(params.w_query, product(&[a, dq])?)?;
    check_len(params.w_key, product(&[a, dk])?)?;
    check_len(params.v, a)?;
    check_len(context, dv)?;
    check_len(weights, l)?;
    if dq.max(dk).max(a) > MAX_SINGLE_QUERY_D {
        return Err(Error::InvalidParameter);
    }
    if bound((1 << 37) * a as u128, params.logit) > MAX_LOGIT {
        return Err(Error::InvalidScale);
    }
    params.tanh.validate(a, dq, dk)?;
    FixedMultiplier::from_raw(params.out.multiplier(), params.out.shift())?;
    params.mask.validate()?;
    Ok(())
}

/// Scores, softmax and context on validated inputs.
#[allow(clippy::too_many_arguments)]
fn run(
    query: &[i8],
    keys: &[i8],
    values: &[i8],
    shape: AdditiveShape,
    params: &Int8AdditiveParams<'_>,
    pre: &mut [i64],
    z: &mut [i64],
    acc: &mut [i64],
    context: &mut [i8],
    weights: &mut [i16],
) {
    let AdditiveShape { dq, dk, .. } = shape;
    for (i, (p, w_row)) in pre
        .iter_mut()
        // `dq` is never 0 (`max` only keeps the chunking from asserting it).
        .zip(params.w_query.chunks_exact(dq.max(1)))
        .enumerate()
    {
        let s: i32 = w_row
            .iter()
            .zip(query)
            .map(|(&w, &x)| w as i32 * x as i32)
            .sum();
        *p = unit(params.tanh.query, i).mul_round(s);
    }
    let pre = &*pre;
    score_allowed(&params.mask, z, keys, dk, |k| {
        tanh_score(
            pre,
            params.w_key,
            dk,
            k,
            params.v,
            params.tanh.key,
            params.logit,
        )
    });
    softmax_context(z, values, acc, params.out, context, weights);
}
