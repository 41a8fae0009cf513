//! Bahdanau (additive) attention: one query against a sequence of keys, returning the context
//! vector and the attention weights.
//!
//! ```text
//! score_j = v · tanh(W_q q + W_k k_j),   weights = softmax(score) over allowed keys,
//! context = Σ_j weights_j values_j
//! ```
//!
//! `W_q q` does not depend on the key, so it is computed once into scratch (`a` floats) and
//! each key costs `a·dk` multiply-adds and `a` tanh. Masked keys are never scored: their
//! weight is exactly 0, and a query with no allowed key gets zero weights and a zero context.

use super::score::{dot_rescaled, max_exponent, saturate, scale_back};
use crate::element::Element;
use crate::error::{check_len, nonzero, product, Error};
use crate::mask::Mask;
use crate::math::tanh;
use crate::softmax::softmax_in_place;

/// Shapes of a Bahdanau call: `query` `[dq]`, `keys` `[l, dk]`, `values` `[l, dv]`,
/// `w_query` `[a, dq]`, `w_key` `[a, dk]`, `v` `[a]`; outputs `context` `[dv]`, `weights` `[l]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct AdditiveShape {
    /// Keys (sequence length).
    pub l: usize,
    /// Query feature size.
    pub dq: usize,
    /// Key feature size.
    pub dk: usize,
    /// Value feature size.
    pub dv: usize,
    /// Attention hidden size (rows of `w_query` and `w_key`).
    pub a: usize,
}

/// The learned weights of Bahdanau attention (row-major) and the mask of the query.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct AdditiveParams<'a, E = f32> {
    /// `W_q`, `[a, dq]`.
    pub w_query: &'a [E],
    /// `W_k`, `[a, dk]`.
    pub w_key: &'a [E],
    /// `v`, `[a]`.
    pub v: &'a [E],
    /// Allowed keys of the query, which is row 0 at position `mask.q_pos_offset`.
    pub mask: Mask<'a>,
}

/// Fixed-size [`AdditiveParams`]: `A` hidden units, query size `DQ`, key size `DK`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct AdditiveParamsFixed<'a, const A: usize, const DQ: usize, const DK: usize> {
    /// `W_q`.
    pub w_query: &'a [[f32; DQ]; A],
    /// `W_k`.
    pub w_key: &'a [[f32; DK]; A],
    /// `v`.
    pub v: &'a [f32; A],
    /// Allowed keys of the query.
    pub mask: Mask<'a>,
}

/// f32 elements of scratch [`additive_attention`] needs: `W_q q` (`a`).
pub const fn additive_attention_scratch_len(shape: AdditiveShape) -> usize {
    shape.a
}

/// f32 elements of scratch [`additive_attention_typed`] needs: `W_q q` (`a`), the scores
/// (`l`) and the context accumulator (`dv`). Saturates instead of overflowing.
pub const fn additive_attention_typed_scratch_len(shape: AdditiveShape) -> usize {
    shape.a.saturating_add(shape.l).saturating_add(shape.dv)
}

/// Bahdanau attention (f32): scores the allowed keys, writes their softmax into `weights`
/// (`[l]`, 0 for masked keys) and the weighted sum of `values` into `context` (`[dv]`).
/// `scratch` needs [`additive_attention_scratch_len`] elements.
///
/// Errors: a zero dimension, a slice whose length does not match `shape`, an invalid mask,
/// scratch too small.
///
/// ```
/// use microattn::attention::{additive_attention, AdditiveParams, AdditiveShape};
/// use microattn::mask::{Mask, MaskTerm};
/// let shape = AdditiveShape { l: 3, dq: 1, dk: 1, dv: 1, a: 1 };
/// let query = [0.0f32];
/// let keys = [1.0f32, -1.0, 5.0];
/// let values = [10.0f32, 20.0, 30.0];
/// let padding = [MaskTerm::KeyPadding { valid: 2 }];
/// let params = AdditiveParams {
///     w_query: &[1.0], w_key: &[1.0], v: &[1.0], mask: Mask::new(&padding),
/// };
/// let (mut context, mut weights, mut scratch) = ([0.0f32; 1], [0.0f32; 3], [0.0f32; 1]);
/// additive_attention(&query, &keys, &values, shape, &params, &mut context, &mut weights, &mut scratch)?;
/// assert_eq!(weights[2], 0.0); // padded
/// assert!(weights[0] > weights[1]); // tanh(1) > tanh(-1)
/// assert!((context[0] - (10.0 * weights[0] + 20.0 * weights[1])).abs() < 1e-5);
/// # Ok::<(), microattn::Error>(())
/// ```
#[allow(clippy::too_many_arguments)]
pub fn additive_attention(
    query: &[f32],
    keys: &[f32],
    values: &[f32],
    shape: AdditiveShape,
    params: &AdditiveParams<'_, f32>,
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
    let proj = take_scratch(scratch, additive_attention_scratch_len(shape))?;
    // f32 outputs are their own accumulators: the weights slice holds the scores.
    additive_core(query, keys, values, shape, params, proj, weights, context);
    Ok(())
}

/// [`additive_attention`] with tensors and outputs stored as `E` (`f16`, `bf16` or `f32`) and
/// f32 arithmetic. `scratch` needs [`additive_attention_typed_scratch_len`] elements.
///
/// ```
/// use microattn::attention::{additive_attention_typed, additive_attention_typed_scratch_len};
/// use microattn::attention::{AdditiveParams, AdditiveShape};
/// use microattn::{f16, mask::Mask};
/// const SHAPE: AdditiveShape = AdditiveShape { l: 2, dq: 1, dk: 1, dv: 1, a: 1 };
/// let h = f16::from_f32;
/// let params = AdditiveParams { w_query: &[h(1.0)], w_key: &[h(1.0)], v: &[h(1.0)], mask: Mask::NONE };
/// let (mut context, mut weights) = ([f16::ZERO; 1], [f16::ZERO; 2]);
/// let mut scratch = [0.0f32; additive_attention_typed_scratch_len(SHAPE)];
/// additive_attention_typed(&[h(0.0)], &[h(0.5), h(0.5)], &[h(1.0), h(3.0)], SHAPE, &params,
///     &mut context, &mut weights, &mut scratch)?;
/// assert_eq!(weights, [h(0.5), h(0.5)]); // equal keys, equal weights
/// assert_eq!(context, [h(2.0)]);
/// # Ok::<(), microattn::Error>(())
/// ```
#[allow(clippy::too_many_arguments)]
pub fn additive_attention_typed<E: Element>(
    query: &[E],
    keys: &[E],
    values: &[E],
    shape: AdditiveShape,
    params: &AdditiveParams<'_, E>,
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
    let (proj, scores, acc) = split_typed_scratch(scratch, shape.a, shape.l, shape.dv)?;
    additive_core(query, keys, values, shape, params, proj, scores, acc);
    store(scores, weights);
    store(acc, context);
    Ok(())
}

/// Fixed-size Bahdanau attention: every shape is a const generic. Errors only for an invalid
/// mask or a zero dimension.
///
/// ```
/// use microattn::attention::{additive_attention_fixed, AdditiveParamsFixed};
/// use microattn::mask::Mask;
/// let params = AdditiveParamsFixed {
///     w_query: &[[1.0f32, 0.0], [0.0, 1.0]],
///     w_key: &[[1.0f32], [-1.0]],
///     v: &[0.5, 0.5],
///     mask: Mask::NONE,
/// };
/// let keys = [[0.2f32], [0.9], [-0.4]];
/// let values = [[1.0f32, 0.0], [0.0, 1.0], [1.0, 1.0]];
/// let (mut context, mut weights) = ([0.0f32; 2], [0.0f32; 3]);
/// additive_attention_fixed(&[0.1, -0.3], &keys, &values, &params, &mut context, &mut weights)?;
/// assert!((weights.iter().sum::<f32>() - 1.0).abs() < 1e-6);
/// # Ok::<(), microattn::Error>(())
/// ```
pub fn additive_attention_fixed<
    const L: usize,
    const DQ: usize,
    const DK: usize,
    const DV: usize,
    const A: usize,
>(
    query: &[f32; DQ],
    keys: &[[f32; DK]; L],
    values: &[[f32; DV]; L],
    params: &AdditiveParamsFixed<'_, A, DQ, DK>,
    context: &mut [f32; DV],
    weights: &mut [f32; L],
) -> Result<(), Error> {
    let mut proj = [0.0f32; A];
    additive_attention(
        query,
        keys.as_flattened(),
        values.as_flattened(),
        AdditiveShape {
            l: L,
            dq: DQ,
            dk: DK,
            dv: DV,
            a: A,
        },
        &AdditiveParams {
            w_query: params.w_query.as_flattened(),
            w_key: params.w_key.as_flattened(),
            v: params.v,
            mask: params.mask,
        },
        context,
        weights,
        &mut proj,
    )
}

/// Checks every dimension, slice length and the mask.
fn validate<E>(
    query: &[E],
    keys: &[E],
    values: &[E],
    shape: AdditiveShape,
    params: &AdditiveParams<'_, E>,
    context_len: usize,
    weights_len: usize,
) -> Result<(), Error> {
    let AdditiveShape { l, dq, dk, dv, a } = shape;
    nonzero(&[l, dq, dk, dv, a])?;
    check_len(query, dq)?;
    check_len(keys, product(&[l, dk])?)?;
    check_len(values, product(&[l, dv])?)?;
    check_len(params.w_query, product(&[a, dq])?)?;
    check_len(params.w_key, product(&[a, dk])?)?;
    check_len(params.v, a)?;
    check_output_lens(shape.dv, shape.l, context_len, weights_len)?;
    params.mask.validate()
}

/// `context` has `dv` elements and `weights` `l`, or [`Error::LengthMismatch`].
pub(super) fn check_output_lens(
    dv: usize,
    l: usize,
    context_len: usize,
    weights_len: usize,
) -> Result<(), Error> {
    for (expected, found) in [(dv, context_len), (l, weights_len)] {
        if expected != found {
            return Err(Error::LengthMismatch { expected, found });
        }
    }
    Ok(())
}

/// The first `needed` elements of `scratch`, or [`Error::ScratchTooSmall`].
pub(super) fn take_scratch(scratch: &mut [f32], needed: usize) -> Result<&mut [f32], Error> {
    let found = scratch.len();
    scratch
        .get_mut(..needed)
        .ok_or(Error::ScratchTooSmall { needed, found })
}

/// The parts of a typed entry point's scratch: score-specific, scores, context accumulator.
pub(super) type TypedScratch<'a> = (&'a mut [f32], &'a mut [f32], &'a mut [f32]);

/// Splits the scratch of a typed (f16/bf16) entry point into its score-specific part
/// (`pre` elements), the scores (`l`) and the context accumulator (`dv`), or
/// [`Error::ScratchTooSmall`].
pub(super) fn split_typed_scratch(
    scratch: &mut [f32],
    pre: usize,
    l: usize,
    dv: usize,
) -> Result<TypedScratch<'_>, Error> {
    let all = take_scratch(scratch, pre.saturating_add(l).saturating_add(dv))?;
    // `all` has exactly pre + l + dv elements; the `min`s only let the compiler see that the
    // splits cannot fail (no panic path).
    let (pre, rest) = all.split_at_mut(pre.min(all.len()));
    let (scores, acc) = rest.split_at_mut(l.min(rest.len()));
    Ok((pre, scores, acc))
}

/// Rounds f32 results into an `E` output of the same length.
pub(super) fn store<E: Element>(from: &[f32], to: &mut [E]) {
    for (t, &f) in to.iter_mut().zip(from) {
        *t = E::from_f32(f);
    }
}

/// Shapes validated: `proj` `[a]`, `scores` `[l]`, `context` `[dv]` (all f32).
#[allow(clippy::too_many_arguments)]
fn additive_core<E: Element>(
    query: &[E],
    keys: &[E],
    values: &[E],
    shape: AdditiveShape,
    params: &AdditiveParams<'_, E>,
    proj: &mut [f32],
    scores: &mut [f32],
    context: &mut [f32],
) {
    for (p, w_row) in proj
        .iter_mut()
        .zip(params.w_query.chunks_exact(shape.dq.max(1)))
    {
        *p = E::dot(w_row, query);
    }
    let proj = &*proj;
    score_allowed(&params.mask, scores, keys, shape.dk, |k_row| {
        let mut s = 0.0f32;
        let mut in_range = true;
        for ((&p, w_row), &v_a) in proj
            .iter()
            .zip(params.w_key.chunks_exact(shape.dk.max(1)))
            .zip(params.v)
        {
            let x = p + E::dot(w_row, k_row);
            in_range &= x.is_finite();
            s += v_a.to_f32() * tanh(x);
        }
        if in_range && s.is_finite() {
            s
        } else {
            let rows = params
                .w_query
                .chunks_exact(shape.dq.max(1))
                .zip(params.w_key.chunks_exact(shape.dk.max(1)));
            tanh_score_rescaled(params.v, rows, query, k_row)
        }
    });
    softmax_context(scores, values, context);
}

/// `Σ_a v_a · tanh(wq_a · q + wk_a · k)` over the rows `(wq_a, wk_a)`, for inputs where the
/// plain f32 sums overflowed (an infinite or NaN tanh argument or score): every sum is
/// rescaled by powers of two ([`dot_rescaled`]), so the score is finite (saturated at
/// `±f32::MAX`) whenever the inputs are.
#[cold]
pub(super) fn tanh_score_rescaled<'w, E: Element>(
    v: &[E],
    rows: impl Iterator<Item = (&'w [E], &'w [E])>,
    q: &[E],
    k: &[E],
) -> f32 {
    let ev = max_exponent(v);
    let mut sum = 0.0f32;
    let mut rows = rows;
    for &v_a in v {
        // `next` rather than `zip`: zip asks the chunk iterator for its length, a division
        // whose divisor the compiler cannot see is non-zero here (a panic path).
        let Some((wq, wk)) = rows.next() else {
            break;
        };
        let x = dot_rescaled(&[(wq, q), (wk, k)], 1.0);
        sum += libm::scalbnf(v_a.to_f32(), -ev) * tanh(x);
    }
    scale_back(1.0, sum, ev)
}

/// Fills `scores` (`[l]`) with `score(key row)` for the keys the mask allows to query row 0,
/// and `-inf` elsewhere, visiting only the allowed keys. `keys` is `[l, dk]`, `dk > 0`.
pub(super) fn score_allowed<E>(
    mask: &Mask<'_>,
    scores: &mut [f32],
    keys: &[E],
    dk: usize,
    mut score: impl FnMut(&[E]) -> f32,
) {
    scores.fill(f32::NEG_INFINITY);
    let l = scores.len();
    for run in mask.row(0, l) {
        // The mask yields ranges within 0..l, so both lookups succeed.
        let (Some(s_run), Some(k_run)) = (
            scores.get_mut(run.clone()),
            keys.get(run.start * dk..run.end * dk),
        ) else {
            continue;
        };
        for (s, k_row) in s_run.iter_mut().zip(k_run.chunks_exact(dk.max(1))) {
            *s = score(k_row);
        }
    }
}

/// Turns `scores` (`-inf` for masked keys) into softmax weights in place and writes
/// `Σ_j weights_j values_j` into `context` (`[dv]`, `dv > 0`); all zeros when no key is allowed.
pub(super) fn softmax_context<E: Element>(scores: &mut [f32], values: &[E], context: &mut [f32]) {
    softmax_in_place(scores);
    context.fill(0.0);
    for (&w, v_row) in scores.iter().zip(values.chunks_exact(context.len().max(1))) {
        // Masked keys have weight exactly 0: skip their values.
        if w != 0.0 {
            E::axpy(w, v_row, context);
        }
    }
    // Weights summing to 1 + rounding can push a combination of values near f32::MAX to
    // infinity (never to NaN: a running sum that reached inf stays there).
    for c in context.iter_mut() {
        *c = saturate(*c);
    }
}
