//! Luong (multiplicative) attention: one query against a sequence of keys, returning the
//! context vector and the attention weights, with the three scores of Luong et al. (2015):
//!
//! ```text
//! dot:     score_j = q · k_j
//! general: score_j = qᵀ W k_j              W [d, d]
//! concat:  score_j = v · tanh(W [q; k_j])   W [a, 2d], v [a]
//! ```
//!
//! Whatever depends only on the query is computed once into scratch: `u = Wᵀ q` for
//! `general` (then `score_j = u · k_j`, O(d) per key instead of O(d²)), and the query half
//! `W[:, ..d] q` for `concat`. Masks, weights and context behave as in
//! [`additive_attention`](super::additive_attention): masked keys get weight exactly 0, and a
//! query with no allowed key gets zero weights and a zero context.

use super::additive::{
    check_output_lens, score_allowed, softmax_context, split_typed_scratch, store, take_scratch,
    tanh_score_rescaled,
};
use super::score::{dot_rescaled, max_exponent, scale_back};
use crate::element::Element;
use crate::error::{check_len, mul, nonzero, product, Error};
use crate::mask::Mask;
use crate::math::tanh;

/// A Luong score function and its learned weights (row-major).
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum LuongScore<'a, E = f32> {
    /// `q · k_j`.
    Dot,
    /// `qᵀ W k_j`.
    General {
        /// `W`, `[d, d]`.
        w: &'a [E],
    },
    /// `v · tanh(W [q; k_j])`; the hidden size `a` is `v.len()`.
    Concat {
        /// `W`, `[a, 2d]`: each row is the query half then the key half.
        w: &'a [E],
        /// `v`, `[a]`.
        v: &'a [E],
    },
}

/// Score function and mask of a Luong call.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct LuongParams<'a, E = f32> {
    /// The score function.
    pub score: LuongScore<'a, E>,
    /// Allowed keys of the query, which is row 0 at position `mask.q_pos_offset`.
    pub mask: Mask<'a>,
}

/// Shapes of a Luong call: `query` `[d]`, `keys` `[l, d]`, `values` `[l, dv]`; outputs
/// `context` `[dv]`, `weights` `[l]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct LuongShape {
    /// Keys (sequence length).
    pub l: usize,
    /// Query and key feature size.
    pub d: usize,
    /// Value feature size.
    pub dv: usize,
}

/// f32 elements of scratch [`luong_attention`] needs for `score`: 0 for `Dot`, `d` for
/// `General` (`u = Wᵀ q`), `a` for `Concat` (the query half of `W [q; k]`).
pub const fn luong_attention_scratch_len<E>(shape: LuongShape, score: &LuongScore<'_, E>) -> usize {
    match score {
        LuongScore::Dot => 0,
        LuongScore::General { .. } => shape.d,
        LuongScore::Concat { v, .. } => v.len(),
    }
}

/// f32 elements of scratch [`luong_attention_typed`] needs: those of
/// [`luong_attention_scratch_len`] plus the scores (`l`) and the context accumulator (`dv`).
/// Saturates instead of overflowing.
pub const fn luong_attention_typed_scratch_len<E>(
    shape: LuongShape,
    score: &LuongScore<'_, E>,
) -> usize {
    luong_attention_scratch_len(shape, score)
        .saturating_add(shape.l)
        .saturating_add(shape.dv)
}

/// Luong attention (f32): scores the allowed keys, writes their softmax into `weights`
/// (`[l]`, 0 for masked keys) and the weighted sum of `values` into `context` (`[dv]`).
/// `scratch` needs [`luong_attention_scratch_len`] elements (none for `Dot`).
///
/// Errors: a zero dimension (including an empty `v` for `Concat`), a slice whose length does
/// not match `shape`, an invalid mask, scratch too small.
///
/// ```
/// use microattn::attention::{luong_attention, LuongParams, LuongScore, LuongShape};
/// use microattn::mask::Mask;
/// let shape = LuongShape { l: 2, d: 2, dv: 1 };
/// let query = [1.0f32, 0.0];
/// let keys = [1.0f32, 0.0, 0.0, 1.0];
/// let values = [1.0f32, 0.0];
/// let params = LuongParams { score: LuongScore::Dot, mask: Mask::NONE };
/// let (mut context, mut weights) = ([0.0f32; 1], [0.0f32; 2]);
/// luong_attention(&query, &keys, &values, shape, &params, &mut context, &mut weights, &mut [])?;
/// let e = core::f32::consts::E;
/// assert!((weights[0] - e / (e + 1.0)).abs() < 1e-6); // softmax of the scores [1, 0]
/// assert_eq!(context[0], weights[0]);
/// # Ok::<(), microattn::Error>(())
/// ```
#[allow(clippy::too_many_arguments)]
pub fn luong_attention(
    query: &[f32],
    keys: &[f32],
    values: &[f32],
    shape: LuongShape,
    params: &LuongParams<'_, f32>,
    context: &mut [f32],
    weights: &mut [f32],
    scratch: &mut [f32],
) -> Result<(), Error> {
    validate(
        query,
        keys,
        values,
        shape,
        params,
        context.len(),
        weights.len(),
    )?;
    let pre = take_scratch(scratch, luong_attention_scratch_len(shape, &params.score))?;
    // f32 outputs are their own accumulators: the weights slice holds the scores.
    luong_core(query, keys, values, shape, params, pre, weights, context);
    Ok(())
}

/// [`luong_attention`] with tensors and outputs stored as `E` (`f16`, `bf16` or `f32`) and
/// f32 arithmetic. `scratch` needs [`luong_attention_typed_scratch_len`] elements.
///
/// ```
/// use microattn::attention::{luong_attention_typed, luong_attention_typed_scratch_len};
/// use microattn::attention::{LuongParams, LuongScore, LuongShape};
/// use microattn::{f16, mask::{Mask, MaskTerm}};
/// const SHAPE: LuongShape = LuongShape { l: 2, d: 1, dv: 1 };
/// let h = f16::from_f32;
/// let w = [h(2.0)];
/// let causal = [MaskTerm::Causal];
/// // The query sits at position 0: only key 0 is allowed.
/// let params = LuongParams { score: LuongScore::General { w: &w }, mask: Mask::new(&causal) };
/// let (mut context, mut weights) = ([f16::ZERO; 1], [f16::ZERO; 2]);
/// let mut scratch = [0.0f32; 4]; // u (d), scores (l), context (dv)
/// assert_eq!(luong_attention_typed_scratch_len(SHAPE, &params.score), scratch.len());
/// luong_attention_typed(&[h(1.0)], &[h(1.0), h(5.0)], &[h(7.0), h(9.0)], SHAPE, &params,
///     &mut context, &mut weights, &mut scratch)?;
/// assert_eq!(weights, [h(1.0), h(0.0)]);
/// assert_eq!(context, [h(7.0)]);
/// # Ok::<(), microattn::Error>(())
/// ```
#[allow(clippy::too_many_arguments)]
pub fn luong_attention_typed<E: Element>(
    query: &[E],
    keys: &[E],
    values: &[E],
    shape: LuongShape,
    params: &LuongParams<'_, E>,
    context: &mut [E],
    weights: &mut [E],
    scratch: &mut [f32],
) -> Result<(), Error> {
    validate(
        query,
        keys,
        values,
        shape,
        params,
        context.len(),
        weights.len(),
    )?;
    let pre_len = luong_attention_scratch_len(shape, &params.score);
    let (pre, scores, acc) = split_typed_scratch(scratch, pre_len, shape.l, shape.dv)?;
    luong_core(query, keys, values, shape, params, pre, scores, acc);
    store(scores, weights);
    store(acc, context);
    Ok(())
}

/// Fixed-size Luong `dot` attention. Errors only for an invalid mask or a zero dimension.
///
/// ```
/// use microattn::attention::luong_dot_fixed;
/// use microattn::mask::{Mask, MaskTerm};
/// let padding = [MaskTerm::KeyPadding { valid: 1 }];
/// let (mut context, mut weights) = ([0.0f32; 1], [0.0f32; 2]);
/// luong_dot_fixed(&[1.0], &[[3.0], [4.0]], &[[5.0], [6.0]], &Mask::new(&padding),
///     &mut context, &mut weights)?;
/// assert_eq!((context, weights), ([5.0], [1.0, 0.0]));
/// # Ok::<(), microattn::Error>(())
/// ```
pub fn luong_dot_fixed<const L: usize, const D: usize, const DV: usize>(
    query: &[f32; D],
    keys: &[[f32; D]; L],
    values: &[[f32; DV]; L],
    mask: &Mask<'_>,
    context: &mut [f32; DV],
    weights: &mut [f32; L],
) -> Result<(), Error> {
    let params = LuongParams {
        score: LuongScore::Dot,
        mask: *mask,
    };
    fixed(query, keys, values, &params, context, weights, &mut [])
}

/// Fixed-size Luong `general` attention with `W` `[D, D]`. Errors only for an invalid mask or
/// a zero dimension.
///
/// ```
/// use microattn::attention::luong_general_fixed;
/// use microattn::mask::Mask;
/// let w = [[1.0f32, 0.0], [0.0, -1.0]];
/// let keys = [[1.0f32, 1.0], [1.0, -1.0]];
/// let values = [[0.0f32], [1.0]];
/// let (mut context, mut weights) = ([0.0f32; 1], [0.0f32; 2]);
/// luong_general_fixed(&[0.0, 1.0], &keys, &values, &w, &Mask::NONE, &mut context, &mut weights)?;
/// assert!(weights[1] > weights[0]); // scores -1 and +1
/// # Ok::<(), microattn::Error>(())
/// ```
pub fn luong_general_fixed<const L: usize, const D: usize, const DV: usize>(
    query: &[f32; D],
    keys: &[[f32; D]; L],
    values: &[[f32; DV]; L],
    w: &[[f32; D]; D],
    mask: &Mask<'_>,
    context: &mut [f32; DV],
    weights: &mut [f32; L],
) -> Result<(), Error> {
    let params = LuongParams {
        score: LuongScore::General {
            w: w.as_flattened(),
        },
        mask: *mask,
    };
    fixed(
        query,
        keys,
        values,
        &params,
        context,
        weights,
        &mut [0.0; D],
    )
}

/// Fixed-size Luong `concat` attention with `A` hidden units: `w` is `[A, 2D]` written as
/// `[[query half, key half]; A]`. Errors only for an invalid mask or a zero dimension.
///
/// ```
/// use microattn::attention::luong_concat_fixed;
/// use microattn::mask::Mask;
/// let w = [[[1.0f32], [1.0]]]; // A = 1, D = 1: tanh(q + k)
/// let (mut context, mut weights) = ([0.0f32; 1], [0.0f32; 2]);
/// luong_concat_fixed(&[0.0], &[[0.0], [0.0]], &[[2.0], [4.0]], &w, &[1.0], &Mask::NONE,
///     &mut context, &mut weights)?;
/// assert_eq!((context, weights), ([3.0], [0.5, 0.5]));
/// # Ok::<(), microattn::Error>(())
/// ```
#[allow(clippy::too_many_arguments)]
pub fn luong_concat_fixed<const L: usize, const D: usize, const DV: usize, const A: usize>(
    query: &[f32; D],
    keys: &[[f32; D]; L],
    values: &[[f32; DV]; L],
    w: &[[[f32; D]; 2]; A],
    v: &[f32; A],
    mask: &Mask<'_>,
    context: &mut [f32; DV],
    weights: &mut [f32; L],
) -> Result<(), Error> {
    let params = LuongParams {
        score: LuongScore::Concat {
            w: w.as_flattened().as_flattened(),
            v,
        },
        mask: *mask,
    };
    fixed(
        query,
        keys,
        values,
        &params,
        context,
        weights,
        &mut [0.0; A],
    )
}

/// The fixed tier's call into the slice tier.
fn fixed<const L: usize, const D: usize, const DV: usize>(
    query: &[f32; D],
    keys: &[[f32; D]; L],
    values: &[[f32; DV]; L],
    params: &LuongParams<'_, f32>,
    context: &mut [f32; DV],
    weights: &mut [f32; L],
    scratch: &mut [f32],
) -> Result<(), Error> {
    luong_attention(
        query,
        keys.as_flattened(),
        values.as_flattened(),
        LuongShape { l: L, d: D, dv: DV },
        params,
        context,
        weights,
        scratch,
    )
}

/// Checks every dimension, slice length and the mask.
fn validate<E>(
    query: &[E],
    keys: &[E],
    values: &[E],
    shape: LuongShape,
    params: &LuongParams<'_, E>,
    context_len: usize,
    weights_len: usize,
) -> Result<(), Error> {
    let LuongShape { l, d, dv } = shape;
    nonzero(&[l, d, dv])?;
    check_len(query, d)?;
    check_len(keys, product(&[l, d])?)?;
    check_len(values, product(&[l, dv])?)?;
    match params.score {
        LuongScore::Dot => {}
        LuongScore::General { w } => check_len(w, product(&[d, d])?)?,
        LuongScore::Concat { w, v } => {
            nonzero(&[v.len()])?;
            check_len(w, product(&[v.len(), mul(2, d)?])?)?;
        }
    }
    check_output_lens(dv, l, context_len, weights_len)?;
    params.mask.validate()
}

/// `Σ u_i x_i` in f32 for an f32 `u` and an `E` vector `x` (the general score after `u = Wᵀ q`).
#[inline]
fn dot_f32<E: Element>(u: &[f32], x: &[E]) -> f32 {
    let mut s = 0.0f32;
    for (&a, &b) in u.iter().zip(x) {
        s += a * b.to_f32();
    }
    s
}

/// `qᵀ W k` with `q`, `W` and `k` each divided by a power of two so no sum overflows, for
/// inputs where the plain f32 score did: finite (saturated at `±f32::MAX`) for finite inputs.
/// O(d²), only on that rare path. `w` is `[d, d]` with `d = q.len()`.
#[cold]
fn general_rescaled<E: Element>(q: &[E], w: &[E], k: &[E]) -> f32 {
    let (eq, ew, ek) = (max_exponent(q), max_exponent(w), max_exponent(k));
    let mut sum = 0.0f32;
    for (&q_r, w_row) in q.iter().zip(w.chunks_exact(k.len().max(1))) {
        let mut inner = 0.0f32;
        for (&w_rc, &k_c) in w_row.iter().zip(k) {
            inner += libm::scalbnf(w_rc.to_f32(), -ew) * libm::scalbnf(k_c.to_f32(), -ek);
        }
        sum += libm::scalbnf(q_r.to_f32(), -eq) * inner;
    }
    scale_back(1.0, sum, eq + ew + ek)
}

/// Shapes validated: `pre` as [`luong_attention_scratch_len`], `scores` `[l]`, `context`
/// `[dv]` (all f32).
#[allow(clippy::too_many_arguments)]
fn luong_core<E: Element>(
    query: &[E],
    keys: &[E],
    values: &[E],
    shape: LuongShape,
    params: &LuongParams<'_, E>,
    pre: &mut [f32],
    scores: &mut [f32],
    context: &mut [f32],
) {
    let d = shape.d;
    match params.score {
        LuongScore::Dot => {
            score_allowed(&params.mask, scores, keys, d, |k_row| {
                let s = E::dot(query, k_row);
                if s.is_finite() {
                    s
                } else {
                    // The f32 sum overflowed: recompute it rescaled (finite for finite inputs).
                    dot_rescaled(&[(query, k_row)], 1.0)
                }
            });
        }
        LuongScore::General { w } => {
            // u = Wᵀ q = Σ_r q_r W[r, :], so that qᵀ W k = u · k.
            pre.fill(0.0);
            for (&q_r, w_row) in query.iter().zip(w.chunks_exact(d.max(1))) {
                E::axpy(q_r.to_f32(), w_row, pre);
            }
            let u = &*pre;
            score_allowed(&params.mask, scores, keys, d, |k_row| {
                // An overflow in `u` or in `u · k` shows as a non-finite score.
                let s = dot_f32(u, k_row);
                if s.is_finite() {
                    s
                } else {
                    general_rescaled(query, w, k_row)
                }
            });
        }
        LuongScore::Concat { w, v } => {
            // Row a of W is [W_q a | W_k a]: W [q; k] = W_q q + W_k k, and W_q q is per query.
            let halves = || {
                w.chunks_exact((2 * d).max(1))
                    .map(|row| row.split_at(d.min(row.len())))
            };
            for (p, (w_q, _)) in pre.iter_mut().zip(halves()) {
                *p = E::dot(w_q, query);
            }
            let pre = &*pre;
            score_allowed(&params.mask, scores, keys, d, |k_row| {
                let mut s = 0.0f32;
                let mut in_range = true;
                for ((&p, (_, w_k)), &v_a) in pre.iter().zip(halves()).zip(v) {
                    let x = p + E::dot(w_k, k_row);
                    in_range &= x.is_finite();
                    s += v_a.to_f32() * tanh(x);
                }
                if in_range && s.is_finite() {
                    s
                } else {
                    tanh_score_rescaled(v, halves(), query, k_row)
                }
            });
        }
    }
    softmax_context(scores, values, context);
}
