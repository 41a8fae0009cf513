//! Selective state-space scan (Mamba's `selective_scan`): the linear-time, constant-memory
//! alternative to attention. Each of `D` channels carries an `N`-wide state that is decayed
//! and fed once per token, so decoding costs `O(D·N)` per token whatever the sequence length.
//!
//! Per token `t`, with `dt = softplus(delta_t + delta_bias)` (or without softplus):
//! `x[d][n] = exp(dt[d]·A[d][n]) · x[d][n] + dt[d]·u_t[d]·B_t[n]`,
//! `y_t[d] = Σ_n x[d][n]·C_t[n] + D[d]·u_t[d]`, then `y_t[d] · silu(z_t[d])` when `z` is given.
//!
//! The state is f32 and belongs to the caller: a slice of [`scan_state_len`] for the slice
//! tier, or a [`ScanState`] array for the fixed tier. [`selective_scan`] runs a whole
//! sequence, [`selective_scan_step`] one token (the decoding loop); both continue from the
//! state they are given, so a sequence may be processed in chunks.

use crate::element::Element;
use crate::error::{check_len, mul, nonzero, Error};
use crate::layers::{silu, softplus, Footprint};
use crate::math::exp;

/// Sizes of a scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ScanShape {
    /// Channels `D` (Mamba's `d_inner`).
    pub channels: usize,
    /// State size per channel `N` (Mamba's `d_state`).
    pub state: usize,
}

impl ScanShape {
    /// `channels` channels of `state` states each.
    pub const fn new(channels: usize, state: usize) -> Self {
        ScanShape { channels, state }
    }
}

/// The time-invariant parameters of a scan, stored as `E`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScanWeights<'a, E = f32> {
    /// State matrix `A`, `[D, N]` (Mamba stores `-exp(A_log)`: negative for a decaying state).
    pub a: &'a [E],
    /// Skip term `D`, `[D]`, or none.
    pub d: Option<&'a [E]>,
    /// Added to `delta` before the softplus (Mamba's `dt_proj` bias), `[D]`, or none.
    pub delta_bias: Option<&'a [E]>,
    /// Apply softplus to `delta` (`delta_softplus`).
    pub delta_softplus: bool,
}

/// One token's inputs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScanToken<'a, E = f32> {
    /// `u_t`, `[D]`.
    pub u: &'a [E],
    /// `delta_t`, `[D]`.
    pub delta: &'a [E],
    /// `B_t`, `[N]`.
    pub b: &'a [E],
    /// `C_t`, `[N]`.
    pub c: &'a [E],
    /// Gate `z_t`, `[D]`, or none.
    pub z: Option<&'a [E]>,
}

/// A whole sequence of `L` tokens, row-major.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScanSequence<'a, E = f32> {
    /// `u`, `[L, D]`.
    pub u: &'a [E],
    /// `delta`, `[L, D]`.
    pub delta: &'a [E],
    /// `B`, `[L, N]`.
    pub b: &'a [E],
    /// `C`, `[L, N]`.
    pub c: &'a [E],
    /// Gate `z`, `[L, D]`, or none.
    pub z: Option<&'a [E]>,
}

/// f32 elements of the scan state, `D·N` (saturating).
pub const fn scan_state_len(shape: ScanShape) -> usize {
    shape.channels.saturating_mul(shape.state)
}

/// Memory of a scan: `A`, `D` and the delta bias as weights, the `D·N` state, no scratch.
pub const fn scan_footprint(shape: ScanShape) -> Footprint {
    Footprint {
        weights: scan_state_len(shape).saturating_add(shape.channels.saturating_mul(2)),
        state: scan_state_len(shape),
        ..Footprint::NONE
    }
}

/// Checks the weights and state against `shape`.
fn check_weights<E>(
    weights: &ScanWeights<'_, E>,
    state: &[f32],
    shape: ScanShape,
) -> Result<(), Error> {
    nonzero(&[shape.channels, shape.state])?;
    let dn = mul(shape.channels, shape.state)?;
    check_len(weights.a, dn)?;
    for v in [weights.d, weights.delta_bias].into_iter().flatten() {
        check_len(v, shape.channels)?;
    }
    check_len(state, dn)
}

/// The scan of one token on validated shapes.
#[inline]
fn step<E: Element>(
    state: &mut [f32],
    weights: &ScanWeights<'_, E>,
    token: &ScanToken<'_, E>,
    y: &mut [E],
    n: usize,
) {
    // Per channel: its state row, output, input, step size and `A` row. (`n` is positive:
    // `max` only keeps the chunking from asserting it; the optional per-channel weights use
    // `get`, in bounds after validation.)
    let n = n.max(1);
    let channels = state
        .chunks_exact_mut(n)
        .zip(y.iter_mut())
        .zip(token.u.iter().zip(token.delta))
        .zip(weights.a.chunks_exact(n));
    for (ch, (((x, y), (u, delta)), a_row)) in channels.enumerate() {
        let channel = |v: Option<&[E]>| v.and_then(|v| v.get(ch)).map(|v| v.to_f32());
        let bias = channel(weights.delta_bias).unwrap_or(0.0);
        let raw = delta.to_f32() + bias;
        let dt = if weights.delta_softplus {
            softplus(raw)
        } else {
            raw
        };
        let u = u.to_f32();
        let du = dt * u;
        let mut out = 0.0f32;
        for (((xi, &a), &b), &c) in x.iter_mut().zip(a_row).zip(token.b).zip(token.c) {
            *xi = exp(dt * a.to_f32()) * *xi + du * b.to_f32();
            out += *xi * c.to_f32();
        }
        out += channel(weights.d).unwrap_or(0.0) * u;
        if let Some(z) = channel(token.z) {
            out *= silu(z);
        }
        *y = E::from_f32(out);
    }
}

/// One token of the scan: updates `state` (`[D, N]` f32) and writes `y_t` (`[D]`).
///
/// Errors: a zero dimension, a weight, input, state or output length that does not match
/// `shape`. Nothing is written on `Err`.
///
/// ```
/// use microattn::ssm::{selective_scan_step, ScanShape, ScanToken, ScanWeights};
/// // One channel, one state: a leaky integrator x = e^-1 x + u, read out with C = 1.
/// let weights = ScanWeights { a: &[-1.0f32], d: None, delta_bias: None, delta_softplus: false };
/// let mut state = [0.0f32];
/// let mut y = [0.0f32];
/// for _ in 0..2 {
///     let token = ScanToken { u: &[1.0], delta: &[1.0], b: &[1.0], c: &[1.0], z: None };
///     selective_scan_step(&mut state, &weights, &token, &mut y, ScanShape::new(1, 1))?;
/// }
/// assert!((y[0] - (1.0 + (-1.0f32).exp())).abs() < 1e-6);
/// # Ok::<(), microattn::Error>(())
/// ```
pub fn selective_scan_step<E: Element>(
    state: &mut [f32],
    weights: &ScanWeights<'_, E>,
    token: &ScanToken<'_, E>,
    y: &mut [E],
    shape: ScanShape,
) -> Result<(), Error> {
    check_weights(weights, state, shape)?;
    let (d, n) = (shape.channels, shape.state);
    check_len(token.u, d)?;
    check_len(token.delta, d)?;
    check_len(token.b, n)?;
    check_len(token.c, n)?;
    if let Some(z) = token.z {
        check_len(z, d)?;
    }
    check_len(y, d)?;
    step(state, weights, token, y, n);
    Ok(())
}

/// The scan over a whole sequence: `y` is `[L, D]` with `L = u.len() / D`; `state` (`[D, N]`
/// f32) holds the state before the first token and after the last. Zero it to start a
/// sequence.
///
/// Errors: a zero dimension (including `L = 0`), a length that does not match the shapes.
/// Nothing is written on `Err`.
pub fn selective_scan<E: Element>(
    state: &mut [f32],
    weights: &ScanWeights<'_, E>,
    seq: &ScanSequence<'_, E>,
    y: &mut [E],
    shape: ScanShape,
) -> Result<(), Error> {
    check_weights(weights, state, shape)?;
    let (d, n) = (shape.channels, shape.state);
    let len = seq.u.len().checked_div(d).ok_or(Error::ZeroDimension)?;
    nonzero(&[len])?;
    let ld = mul(len, d)?;
    let ln = mul(len, n)?;
    check_len(seq.u, ld)?;
    check_len(seq.delta, ld)?;
    check_len(seq.b, ln)?;
    check_len(seq.c, ln)?;
    if let Some(z) = seq.z {
        check_len(z, ld)?;
    }
    check_len(y, ld)?;
    // Token `t` is row `t` of every sequence tensor (`d` and `n` are positive: `max` only
    // keeps the chunking from asserting it; `z` rows are in bounds after validation).
    let (d, n) = (d.max(1), n.max(1));
    // (Input rows by `get`, not by zipping chunk iterators: the out-of-line copy of such a
    // `zip` keeps a division by the chunk size.)
    fn row<T>(x: &[T], t: usize, len: usize) -> Option<&[T]> {
        x.get(t * len..(t + 1) * len)
    }
    for (t, y_t) in y.chunks_exact_mut(d).enumerate() {
        let (Some(u), Some(delta), Some(b), Some(c)) = (
            row(seq.u, t, d),
            row(seq.delta, t, d),
            row(seq.b, t, n),
            row(seq.c, t, n),
        ) else {
            break;
        };
        let z = match seq.z {
            Some(z) => match row(z, t, d) {
                Some(z_t) => Some(z_t),
                None => break,
            },
            None => None,
        };
        let token = ScanToken { u, delta, b, c, z };
        step(state, weights, &token, y_t, n);
    }
    Ok(())
}

/// A fixed-size scan state of `D` channels and `N` states: `D·N` f32, a `static` if need be.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanState<const D: usize, const N: usize> {
    x: [[f32; N]; D],
}

impl<const D: usize, const N: usize> Default for ScanState<D, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const D: usize, const N: usize> ScanState<D, N> {
    /// The zero state of a fresh sequence (a `const fn`, so it can initialize a `static`).
    pub const fn new() -> Self {
        ScanState { x: [[0.0; N]; D] }
    }

    /// Back to the zero state.
    pub fn reset(&mut self) {
        self.x = [[0.0; N]; D];
    }

    /// The state, `[D][N]`.
    pub fn values(&self) -> &[[f32; N]; D] {
        &self.x
    }

    /// One token: updates the state and returns `y_t`. Errors: a zero `D` or `N`, weights
    /// whose lengths do not match `D` and `N`.
    ///
    /// ```
    /// use microattn::ssm::{ScanState, ScanWeights};
    /// let a = [[-0.5f32; 4]; 2];
    /// let weights = ScanWeights {
    ///     a: a.as_flattened(), d: Some(&[1.0, 1.0]), delta_bias: None, delta_softplus: true,
    /// };
    /// let mut state = ScanState::<2, 4>::new();
    /// let y = state.step(&weights, &[1.0, -1.0], &[0.0; 2], &[1.0; 4], &[1.0; 4], None)?;
    /// assert!(y[0] > 1.0 && y[1] < -1.0);
    /// # Ok::<(), microattn::Error>(())
    /// ```
    pub fn step<E: Element>(
        &mut self,
        weights: &ScanWeights<'_, E>,
        u: &[E; D],
        delta: &[E; D],
        b: &[E; N],
        c: &[E; N],
        z: Option<&[E; D]>,
    ) -> Result<[E; D], Error> {
        let mut y = [E::default(); D];
        let token = ScanToken {
            u,
            delta,
            b,
            c,
            z: z.map(|z| &z[..]),
        };
        selective_scan_step(
            self.x.as_flattened_mut(),
            weights,
            &token,
            &mut y,
            ScanShape::new(D, N),
        )?;
        Ok(y)
    }
}
