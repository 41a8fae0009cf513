//! Linear attention with the `elu(x) + 1` feature map (Katharopoulos et al., 2020).
//!
//! With `phi(x) = elu(x) + 1` applied elementwise, the output row of query `i` is
//!
//! ```text
//! out_i = phi(q_i)ᵀ S / (phi(q_i) · z + eps),   S = Σ_j phi(k_j) v_jᵀ  [d, dv],   z = Σ_j phi(k_j)  [d]
//! ```
//!
//! over every key (non-causal) or over `j <= i` (causal). Nothing of size `lq × lk` exists:
//! the non-causal kernel builds `S` and `z` once (O(lk·d·dv)) and reads them for every query
//! (O(lq·d·dv)); the causal kernel is a recurrence on a fixed-size running state
//! ([`LinearAttentionState`], [`LinearAttentionStateFixed`]) that a decode loop can also drive
//! one token at a time.
//!
//! `phi(x) = x + 1` for `x > 0` and `e^x` for `x <= 0`: that is `elu(x) + 1` exactly, and
//! computing `e^x` directly (rather than `expm1(x) + 1`) keeps full relative precision for very
//! negative `x`, where `expm1(x) + 1` cancels to zero long before `e^x` underflows.
//!
//! **Denominator.** `phi > 0` for every finite input, so with `eps > 0` the denominator is
//! positive. It can only be zero (or, with overflowing inputs, not finite) when `eps = 0` and
//! every `phi(q_i)_a · z_a` underflows, for example all query features below about -104.
//! Such a row carries no usable information and is written as zeros, never NaN or infinity.
//! So is a row whose numerator `phi(q_i)ᵀ S` overflowed f32 (the running sums grow with the
//! number of keys: finite results need `Σ_j phi(k_j)_a |v_j|` below `f32::MAX`).

use super::score::saturate;
use super::sdpa::AttentionShape;
use crate::arch;
use crate::element::Element;
use crate::error::{check_len, mul, nonzero, Error};
use crate::math::exp;

/// The feature map `elu(x) + 1`, written as `e^x` for `x <= 0` (the same function, without
/// the cancellation of `expm1(x) + 1`).
///
/// ```
/// use microattn::attention::elu_plus_one;
/// assert_eq!(elu_plus_one(2.0), 3.0);
/// assert_eq!(elu_plus_one(0.0), 1.0);
/// assert!((elu_plus_one(-1.0) - 0.367_879_44).abs() < 1e-7);
/// ```
#[inline]
pub fn elu_plus_one(x: f32) -> f32 {
    if x > 0.0 {
        x + 1.0
    } else {
        exp(x)
    }
}

/// Parameters of a whole-sequence linear attention call.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct LinearAttentionParams {
    /// Query `i` sees keys `j <= i` only (requires `lq == lk`).
    pub causal: bool,
    /// Added to the denominator; must be finite and `>= 0`.
    pub eps: f32,
}

impl Default for LinearAttentionParams {
    /// Non-causal, `eps = 1e-6` (the value of the reference implementation).
    fn default() -> Self {
        LinearAttentionParams {
            causal: false,
            eps: 1e-6,
        }
    }
}

/// [`Error::InvalidScale`] unless `eps` is finite and `>= 0`.
fn check_eps(eps: f32) -> Result<(), Error> {
    if eps.is_finite() && eps >= 0.0 {
        Ok(())
    } else {
        Err(Error::InvalidScale)
    }
}

/// f32 elements of a [`LinearAttentionState`] buffer: `S` (`d·dv`), `z` (`d`) and one output
/// row accumulator (`dv`). Saturates instead of overflowing (the state then reports
/// [`Error::ShapeOverflow`]).
pub const fn linear_state_len(d: usize, dv: usize) -> usize {
    d.saturating_mul(dv).saturating_add(d).saturating_add(dv)
}

/// f32 elements of scratch [`linear_attention`] and [`linear_attention_typed`] need: one
/// running state, reused for every key/value head.
pub const fn linear_attention_scratch_len(shape: AttentionShape) -> usize {
    linear_state_len(shape.d, shape.dv)
}

/// `S += phi(k) vᵀ`, `z += phi(k)`. `s` is `[z.len(), dv]` with `dv > 0`; `k` has `z.len()`
/// elements and `v` `dv` (checked by the callers).
#[inline]
fn push_core<E: Element>(s: &mut [f32], z: &mut [f32], dv: usize, k: &[E], v: &[E]) {
    for ((s_row, z_a), &k_a) in s.chunks_exact_mut(dv.max(1)).zip(z.iter_mut()).zip(k) {
        let p = elu_plus_one(k_a.to_f32());
        *z_a += p;
        E::axpy(p, v, s_row);
    }
}

/// `out = phi(q)ᵀ S / (phi(q) · z + eps)`, or zeros when that denominator is not a positive
/// finite number (see the module docs). `acc` is one f32 output row (`dv > 0` elements).
#[inline]
fn query_core<E: Element>(s: &[f32], z: &[f32], acc: &mut [f32], eps: f32, q: &[E], out: &mut [E]) {
    let dv = acc.len();
    acc.fill(0.0);
    let mut den = 0.0f32;
    for ((s_row, &z_a), &q_a) in s.chunks_exact(dv.max(1)).zip(z).zip(q) {
        let p = elu_plus_one(q_a.to_f32());
        den += p * z_a;
        arch::axpy(p, s_row, acc);
    }
    den += eps;
    // A numerator that overflowed (running sums of `phi(k) v` past f32::MAX) is as unusable
    // as a bad denominator; the quotient itself is a convex combination of values, so it can
    // only pass f32::MAX by rounding and saturates.
    if den > 0.0 && den.is_finite() && acc.iter().all(|a| a.is_finite()) {
        for (o, &a) in out.iter_mut().zip(acc.iter()) {
            *o = E::from_f32(saturate(a / den));
        }
    } else {
        out.fill(E::from_f32(0.0));
    }
}

/// The running state of causal linear attention over caller-provided memory: `S` `[d, dv]`,
/// `z` `[d]` and an output-row accumulator, all f32 whatever the element type of the tokens.
///
/// Feed it one token at a time: [`step`](Self::step) adds the token's key/value and returns
/// its output, so after `t` steps the state has seen exactly keys `0..t`. Memory is
/// [`linear_state_len`] floats however long the sequence.
///
/// ```
/// use microattn::attention::{linear_state_len, LinearAttentionState};
/// const D: usize = 2;
/// const DV: usize = 1;
/// let mut buffer = [0.0f32; linear_state_len(D, DV)];
/// let mut state = LinearAttentionState::new(&mut buffer, D, DV, 0.0)?;
/// let mut out = [0.0f32; DV];
/// // Token 0 sees only itself: its output is its own value.
/// state.step(&[0.3f32, -0.2], &[1.0f32, 0.5], &[4.0f32], &mut out)?;
/// assert!((out[0] - 4.0).abs() < 1e-6);
/// // Token 1 averages values 0 and 1: phi(q) = [1.5, 1.5] gives both keys the same weight.
/// state.step(&[0.5f32, 0.5], &[0.5f32, 1.0], &[2.0f32], &mut out)?;
/// assert!((out[0] - 3.0).abs() < 1e-6);
/// # Ok::<(), microattn::Error>(())
/// ```
#[derive(Debug)]
pub struct LinearAttentionState<'a> {
    s: &'a mut [f32],
    z: &'a mut [f32],
    acc: &'a mut [f32],
    eps: f32,
}

impl<'a> LinearAttentionState<'a> {
    /// An empty state for key size `d` and value size `dv` in the first
    /// [`linear_state_len`]`(d, dv)` elements of `buffer` (which are zeroed).
    ///
    /// Errors: `d` or `dv` zero, `buffer` too short, `eps` negative or not finite.
    pub fn new(buffer: &'a mut [f32], d: usize, dv: usize, eps: f32) -> Result<Self, Error> {
        nonzero(&[d, dv])?;
        check_eps(eps)?;
        let s_len = mul(d, dv)?;
        let needed = s_len
            .checked_add(d)
            .and_then(|n| n.checked_add(dv))
            .ok_or(Error::ShapeOverflow)?;
        let found = buffer.len();
        let buffer = buffer
            .get_mut(..needed)
            .ok_or(Error::ScratchTooSmall { needed, found })?;
        buffer.fill(0.0);
        // `buffer` has exactly s_len + d + dv elements; the `min`s only let the compiler
        // see that the splits cannot fail (no panic path).
        let (s, rest) = buffer.split_at_mut(s_len.min(buffer.len()));
        let (z, acc) = rest.split_at_mut(d.min(rest.len()));
        Ok(LinearAttentionState { s, z, acc, eps })
    }

    /// Key/query feature size `d`.
    pub fn d(&self) -> usize {
        self.z.len()
    }

    /// Value feature size `dv`.
    pub fn dv(&self) -> usize {
        self.acc.len()
    }

    /// Forgets every token (start of a new sequence).
    pub fn reset(&mut self) {
        self.s.fill(0.0);
        self.z.fill(0.0);
    }

    /// Adds one key/value pair to the state. Errors when `k` is not `d` or `v` not `dv` long.
    pub fn push<E: Element>(&mut self, k: &[E], v: &[E]) -> Result<(), Error> {
        check_len(k, self.d())?;
        check_len(v, self.dv())?;
        push_core(self.s, self.z, self.acc.len(), k, v);
        Ok(())
    }

    /// The output of query `q` against the keys pushed so far, into `out` (`dv`). Pushing a
    /// token and then querying its own query is one causal step; several query heads that
    /// share this key/value head (GQA) can each query the same state.
    pub fn query<E: Element>(&mut self, q: &[E], out: &mut [E]) -> Result<(), Error> {
        check_len(q, self.d())?;
        check_len(out, self.dv())?;
        query_core(self.s, self.z, self.acc, self.eps, q, out);
        Ok(())
    }

    /// One causal decode step: [`push`](Self::push) `k`, `v`, then [`query`](Self::query) `q`.
    /// All lengths are checked before the state changes.
    pub fn step<E: Element>(
        &mut self,
        q: &[E],
        k: &[E],
        v: &[E],
        out: &mut [E],
    ) -> Result<(), Error> {
        check_len(q, self.d())?;
        check_len(out, self.dv())?;
        self.push(k, v)?;
        query_core(self.s, self.z, self.acc, self.eps, q, out);
        Ok(())
    }
}

/// [`LinearAttentionState`] with its memory inline: `D` and `DV` are const generics, so a
/// token of the wrong size does not compile and steps cannot fail.
///
/// ```
/// use microattn::attention::LinearAttentionStateFixed;
/// let mut state = LinearAttentionStateFixed::<2, 1>::new(1e-6)?;
/// let mut out = [0.0f32];
/// for (k, v) in [([1.0f32, 0.5], [4.0f32]), ([0.5, 1.0], [2.0])] {
///     state.step(&[0.5, 0.5], &k, &v, &mut out);
/// }
/// assert!((out[0] - 3.0).abs() < 1e-5);
/// # Ok::<(), microattn::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct LinearAttentionStateFixed<const D: usize, const DV: usize> {
    s: [[f32; DV]; D],
    z: [f32; D],
    acc: [f32; DV],
    eps: f32,
}

impl<const D: usize, const DV: usize> LinearAttentionStateFixed<D, DV> {
    /// An empty state. Errors: `D` or `DV` zero, `eps` negative or not finite.
    pub fn new(eps: f32) -> Result<Self, Error> {
        nonzero(&[D, DV])?;
        check_eps(eps)?;
        Ok(LinearAttentionStateFixed {
            s: [[0.0; DV]; D],
            z: [0.0; D],
            acc: [0.0; DV],
            eps,
        })
    }

    /// Forgets every token (start of a new sequence).
    pub fn reset(&mut self) {
        self.s = [[0.0; DV]; D];
        self.z = [0.0; D];
    }

    /// Adds one key/value pair to the state.
    pub fn push<E: Element>(&mut self, k: &[E; D], v: &[E; DV]) {
        push_core(self.s.as_flattened_mut(), &mut self.z, DV, k, v);
    }

    /// The output of query `q` against the keys pushed so far.
    pub fn query<E: Element>(&mut self, q: &[E; D], out: &mut [E; DV]) {
        query_core(
            self.s.as_flattened(),
            &self.z,
            &mut self.acc,
            self.eps,
            q,
            out,
        );
    }

    /// One causal decode step: push `k`, `v`, then query `q`.
    pub fn step<E: Element>(&mut self, q: &[E; D], k: &[E; D], v: &[E; DV], out: &mut [E; DV]) {
        self.push(k, v);
        self.query(q, out);
    }
}

/// Linear attention (f32) over `q` `[heads, lq, d]`, `k` `[kv_heads, lk, d]`, `v`
/// `[kv_heads, lk, dv]` into `out` `[heads, lq, dv]`; query head `h` reads key/value head
/// `h / (heads / kv_heads)`. `scratch` holds the running state: at least
/// [`linear_attention_scratch_len`] elements.
///
/// Non-causal calls may have `lq != lk`; causal calls need `lq == lk` and use exactly the
/// [`LinearAttentionState::step`] recurrence. Errors: zero dimensions, slice lengths that do
/// not match `shape`, heads that do not divide, causal with `lq != lk`
/// ([`Error::InvalidParameter`]), `eps` negative or not finite, scratch too small.
///
/// ```
/// use microattn::attention::{linear_attention, linear_attention_scratch_len};
/// use microattn::attention::{AttentionShape, LinearAttentionParams};
/// const SHAPE: AttentionShape = AttentionShape::single(1, 2, 1, 1);
/// let (q, k, v) = ([0.0f32], [0.0f32, 0.0], [1.0f32, 3.0]);
/// let mut out = [0.0f32];
/// let mut scratch = [0.0f32; linear_attention_scratch_len(SHAPE)];
/// let params = LinearAttentionParams { causal: false, eps: 0.0 };
/// linear_attention(&q, &k, &v, &mut out, SHAPE, &params, &mut scratch)?;
/// assert_eq!(out, [2.0]); // equal features: the mean of the values
/// # Ok::<(), microattn::Error>(())
/// ```
pub fn linear_attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &mut [f32],
    shape: AttentionShape,
    params: &LinearAttentionParams,
    scratch: &mut [f32],
) -> Result<(), Error> {
    linear_attention_typed(q, k, v, out, shape, params, scratch)
}

/// [`linear_attention`] with tensors stored as `E` (`f16`, `bf16` or `f32`); the state and
/// every sum are f32.
///
/// ```
/// use microattn::attention::{linear_attention_typed, linear_attention_scratch_len};
/// use microattn::attention::{AttentionShape, LinearAttentionParams};
/// use microattn::f16;
/// const SHAPE: AttentionShape = AttentionShape::single(2, 2, 1, 1);
/// let h = f16::from_f32;
/// let (q, k, v) = ([h(0.0), h(0.0)], [h(0.0), h(0.0)], [h(1.0), h(3.0)]);
/// let mut out = [f16::ZERO; 2];
/// let mut scratch = [0.0f32; linear_attention_scratch_len(SHAPE)];
/// let params = LinearAttentionParams { causal: true, eps: 0.0 };
/// linear_attention_typed(&q, &k, &v, &mut out, SHAPE, &params, &mut scratch)?;
/// assert_eq!(out, [h(1.0), h(2.0)]); // row 0 sees key 0, row 1 both
/// # Ok::<(), microattn::Error>(())
/// ```
pub fn linear_attention_typed<E: Element>(
    q: &[E],
    k: &[E],
    v: &[E],
    out: &mut [E],
    shape: AttentionShape,
    params: &LinearAttentionParams,
    scratch: &mut [f32],
) -> Result<(), Error> {
    let (q_len, k_len, v_len, out_len) = shape.lengths()?;
    check_len(q, q_len)?;
    check_len(k, k_len)?;
    check_len(v, v_len)?;
    check_len(out, out_len)?;
    check_eps(params.eps)?;
    if params.causal && shape.lq != shape.lk {
        return Err(Error::InvalidParameter);
    }
    let AttentionShape {
        heads,
        kv_heads,
        lq,
        lk,
        d,
        dv,
    } = shape;
    let mut state = LinearAttentionState::new(scratch, d, dv, params.eps)?;
    let group = heads / kv_heads.max(1);
    // Each key/value head's state is built once and read by the `group` query heads that
    // share it; the lengths above make every chunk below exact. The `max(1)`s and the
    // `next` calls (rather than `zip`, which divides by the chunk sizes to find its length)
    // only let the compiler see there is no panic path.
    let mut k_heads = k.chunks_exact((lk * d).max(1));
    let mut v_heads = v.chunks_exact((lk * dv).max(1));
    let mut q_groups = q.chunks_exact((group * lq * d).max(1));
    let mut out_groups = out.chunks_exact_mut((group * lq * dv).max(1));
    while let (Some(k_h), Some(v_h), Some(q_g), Some(out_g)) = (
        k_heads.next(),
        v_heads.next(),
        q_groups.next(),
        out_groups.next(),
    ) {
        state.reset();
        let tokens = k_h.chunks_exact(d.max(1)).zip(v_h.chunks_exact(dv.max(1)));
        if params.causal {
            for (t, (k_t, v_t)) in tokens.enumerate() {
                push_core(state.s, state.z, dv, k_t, v_t);
                for (q_h, out_h) in q_g
                    .chunks_exact((lq * d).max(1))
                    .zip(out_g.chunks_exact_mut((lq * dv).max(1)))
                {
                    let (Some(q_t), Some(out_t)) = (
                        q_h.get(t * d..(t + 1) * d),
                        out_h.get_mut(t * dv..(t + 1) * dv),
                    ) else {
                        continue; // unreachable: lq == lk was checked
                    };
                    query_core(state.s, state.z, state.acc, state.eps, q_t, out_t);
                }
            }
        } else {
            for (k_t, v_t) in tokens {
                push_core(state.s, state.z, dv, k_t, v_t);
            }
            for (q_i, out_i) in q_g
                .chunks_exact(d.max(1))
                .zip(out_g.chunks_exact_mut(dv.max(1)))
            {
                query_core(state.s, state.z, state.acc, state.eps, q_i, out_i);
            }
        }
    }
    Ok(())
}

/// Fixed-size single-head linear attention: shapes are const generics and the state lives on
/// the stack (`D·DV + D + DV` floats). Errors: a zero dimension, `eps` negative or not
/// finite, causal with `LQ != LK`.
///
/// ```
/// use microattn::attention::{linear_attention_fixed, LinearAttentionParams};
/// let q = [[0.5f32, -1.0]; 3];
/// let k = [[0.1f32, 0.2], [0.3, -0.4], [2.0, 1.0]];
/// let v = [[1.0f32], [2.0], [3.0]];
/// let mut out = [[0.0f32; 1]; 3];
/// let params = LinearAttentionParams { causal: true, ..Default::default() };
/// linear_attention_fixed(&q, &k, &v, &mut out, &params)?;
/// assert!((out[0][0] - 1.0).abs() < 1e-5); // the first row sees only key 0
/// # Ok::<(), microattn::Error>(())
/// ```
pub fn linear_attention_fixed<const LQ: usize, const LK: usize, const D: usize, const DV: usize>(
    q: &[[f32; D]; LQ],
    k: &[[f32; D]; LK],
    v: &[[f32; DV]; LK],
    out: &mut [[f32; DV]; LQ],
    params: &LinearAttentionParams,
) -> Result<(), Error> {
    nonzero(&[LQ, LK])?;
    if params.causal && LQ != LK {
        return Err(Error::InvalidParameter);
    }
    let mut state = LinearAttentionStateFixed::<D, DV>::new(params.eps)?;
    if params.causal {
        for (((q_t, k_t), v_t), out_t) in q.iter().zip(k).zip(v).zip(out.iter_mut()) {
            state.step(q_t, k_t, v_t, out_t);
        }
    } else {
        for (k_t, v_t) in k.iter().zip(v) {
            state.push(k_t, v_t);
        }
        for (q_i, out_i) in q.iter().zip(out.iter_mut()) {
            state.query(q_i, out_i);
        }
    }
    Ok(())
}
