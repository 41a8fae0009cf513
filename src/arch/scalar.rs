//! Portable scalar primitives: the reference for every other backend.
//!
//! Sums use eight independent accumulators: that breaks the add dependency chain (so a
//! superscalar core or the auto-vectorizer can overlap them) and keeps rounding error growth
//! at O(n/8) instead of O(n).

use super::BLOCK_ROWS as ROWS;
use half::{bf16, f16};

const LANES: usize = 8;

/// Sums eight partial accumulators pairwise.
#[inline(always)]
fn reduce(acc: [f32; LANES]) -> f32 {
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

/// Sum over `i` of `term(a[i], b[i])`, over the common length of `a` and `b`.
#[inline(always)]
fn reduce_pairs<T: Copy>(a: &[T], b: &[T], term: impl Fn(T, T) -> f32) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (a_tail, b_tail) = (a_chunks.remainder(), b_chunks.remainder());
    for (x, y) in a_chunks.zip(b_chunks) {
        for l in 0..LANES {
            acc[l] += term(x[l], y[l]);
        }
    }
    for (l, (&x, &y)) in a_tail.iter().zip(b_tail).enumerate() {
        acc[l] += term(x, y);
    }
    reduce(acc)
}

/// Dot product over the common length of `a` and `b`.
///
/// ```
/// assert_eq!(microattn::arch::dot(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]), 32.0);
/// ```
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    reduce_pairs(a, b, |x, y| x * y)
}

/// Squared Euclidean distance over the common length.
#[inline]
pub fn sq_l2_distance(a: &[f32], b: &[f32]) -> f32 {
    reduce_pairs(a, b, |x, y| (x - y) * (x - y))
}

/// Manhattan distance over the common length.
#[inline]
pub fn l1_distance(a: &[f32], b: &[f32]) -> f32 {
    reduce_pairs(a, b, |x, y| libm::fabsf(x - y))
}

/// [`dot`] of any element type, widened to f32 by `widen`.
#[inline]
pub fn dot_by<T: Copy>(a: &[T], b: &[T], widen: impl Fn(T) -> f32) -> f32 {
    reduce_pairs(a, b, |x, y| widen(x) * widen(y))
}

/// [`sq_l2_distance`] of any element type, widened to f32 by `widen`.
#[inline]
pub fn sq_l2_distance_by<T: Copy>(a: &[T], b: &[T], widen: impl Fn(T) -> f32) -> f32 {
    reduce_pairs(a, b, |x, y| {
        let d = widen(x) - widen(y);
        d * d
    })
}

/// [`l1_distance`] of any element type, widened to f32 by `widen`.
#[inline]
pub fn l1_distance_by<T: Copy>(a: &[T], b: &[T], widen: impl Fn(T) -> f32) -> f32 {
    reduce_pairs(a, b, |x, y| libm::fabsf(widen(x) - widen(y)))
}

/// `y += alpha * x` over the common length.
#[inline]
pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

/// `y *= alpha`.
#[inline]
pub fn scale(y: &mut [f32], alpha: f32) {
    for yi in y.iter_mut() {
        *yi *= alpha;
    }
}

// ---------------------------------------------------------------------------------------------
// References for the rest of the primitive set (see `super::Backend` for the contracts). The
// crate calls them through `super::Backend`, which checks the slice lengths first.

/// [`dot`] of f16 vectors.
pub(crate) fn dot_f16(a: &[f16], b: &[f16]) -> f32 {
    dot_by(a, b, f16::to_f32)
}

/// [`dot`] of bf16 vectors.
pub(crate) fn dot_bf16(a: &[bf16], b: &[bf16]) -> f32 {
    dot_by(a, b, bf16::to_f32)
}

/// [`axpy`] with `x` stored as f16.
pub(crate) fn axpy_f16(alpha: f32, x: &[f16], y: &mut [f32]) {
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi.to_f32();
    }
}

/// [`axpy`] with `x` stored as bf16.
pub(crate) fn axpy_bf16(alpha: f32, x: &[bf16], y: &mut [f32]) {
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi.to_f32();
    }
}

/// `dst = src` widened from f16.
pub(crate) fn widen_f16(src: &[f16], dst: &mut [f32]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = s.to_f32();
    }
}

/// `dst = src` widened from bf16.
pub(crate) fn widen_bf16(src: &[bf16], dst: &mut [f32]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = s.to_f32();
    }
}

/// `dst = src` rounded to f16.
pub(crate) fn narrow_f16(src: &[f32], dst: &mut [f16]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = f16::from_f32(s);
    }
}

/// Largest element ignoring NaN; `-inf` when empty.
pub(crate) fn max(x: &[f32]) -> f32 {
    x.iter().copied().fold(f32::NEG_INFINITY, f32::max)
}

/// `x_i = e^(x_i - shift)` with libm's `expf`; returns the sum.
pub(crate) fn exp_sum(x: &mut [f32], shift: f32) -> f32 {
    let mut sum = 0.0;
    for xi in x.iter_mut() {
        *xi = crate::math::exp(*xi - shift);
        sum += *xi;
    }
    sum
}

/// `s[j] = scale · q·k_j`, key `j` at `k[j·ks..][..q.len()]`, widened by `widen`.
fn dot_keys_by<T: Copy>(
    q: &[T],
    k: &[T],
    ks: usize,
    scale: f32,
    s: &mut [f32],
    widen: impl Fn(T) -> f32,
) {
    for (j, sj) in s.iter_mut().enumerate() {
        if let Some(key) = k.get(j * ks..j * ks + q.len()) {
            *sj = scale * dot_by(q, key, &widen);
        }
    }
}

/// `s[j] = scale · q·k_j`, key `j` at `k[j·ks..][..q.len()]`.
pub(crate) fn dot_keys(q: &[f32], k: &[f32], ks: usize, scale: f32, s: &mut [f32]) {
    for (j, sj) in s.iter_mut().enumerate() {
        if let Some(key) = k.get(j * ks..j * ks + q.len()) {
            *sj = scale * dot(q, key);
        }
    }
}

/// [`dot_keys`] of f16 vectors.
pub(crate) fn dot_keys_f16(q: &[f16], k: &[f16], ks: usize, scale: f32, s: &mut [f32]) {
    dot_keys_by(q, k, ks, scale, s, f16::to_f32)
}

/// [`dot_keys`] of bf16 vectors.
pub(crate) fn dot_keys_bf16(q: &[bf16], k: &[bf16], ks: usize, scale: f32, s: &mut [f32]) {
    dot_keys_by(q, k, ks, scale, s, bf16::to_f32)
}

/// `acc += Σ_j p[j] · v[j·vs..][..acc.len()]`.
pub(crate) fn pv_row(p: &[f32], v: &[f32], vs: usize, acc: &mut [f32]) {
    for (j, &w) in p.iter().enumerate() {
        if let Some(row) = v.get(j * vs..j * vs + acc.len()) {
            axpy(w, row, acc);
        }
    }
}

/// [`pv_row`] with f16 value rows.
pub(crate) fn pv_row_f16(p: &[f32], v: &[f16], vs: usize, acc: &mut [f32]) {
    for (j, &w) in p.iter().enumerate() {
        if let Some(row) = v.get(j * vs..j * vs + acc.len()) {
            axpy_f16(w, row, acc);
        }
    }
}

/// [`pv_row`] with bf16 value rows.
pub(crate) fn pv_row_bf16(p: &[f32], v: &[bf16], vs: usize, acc: &mut [f32]) {
    for (j, &w) in p.iter().enumerate() {
        if let Some(row) = v.get(j * vs..j * vs + acc.len()) {
            axpy_bf16(w, row, acc);
        }
    }
}

/// Q·Kᵀ of a block: `s[j·ROWS + r] = scale · Σ_c qt[c·ROWS + r] · k[j·ks + c]`; returns
/// whether every logit is finite.
pub(crate) fn qk_block(
    qt: &[f32],
    d: usize,
    k: &[f32],
    ks: usize,
    scale: f32,
    s: &mut [f32],
) -> bool {
    let mut finite = true;
    for (j, s_row) in s.chunks_exact_mut(ROWS).enumerate() {
        for (r, sr) in s_row.iter_mut().enumerate() {
            let mut sum = 0.0f32;
            for c in 0..d {
                sum += qt.get(c * ROWS + r).copied().unwrap_or(0.0)
                    * k.get(j * ks + c).copied().unwrap_or(0.0);
            }
            *sr = scale * sum;
            finite &= sr.is_finite();
        }
    }
    finite
}

/// One online-softmax step for every row of a block (see `super::Backend::softmax_block`).
pub(crate) fn softmax_block(
    s: &mut [f32],
    m: &mut [f32; ROWS],
    l: &mut [f32; ROWS],
    alpha: &mut [f32; ROWS],
) {
    for r in 0..ROWS {
        let tile_max = s
            .iter()
            .skip(r)
            .step_by(ROWS)
            .copied()
            .fold(f32::NEG_INFINITY, f32::max);
        let m_new = m[r].max(tile_max);
        let shift = if m_new == f32::NEG_INFINITY {
            0.0
        } else {
            m_new
        };
        alpha[r] = crate::math::exp(m[r] - shift);
        let mut sum = 0.0;
        for x in s.iter_mut().skip(r).step_by(ROWS) {
            *x = crate::math::exp(*x - shift);
            sum += *x;
        }
        l[r] = l[r] * alpha[r] + sum;
        m[r] = m_new;
    }
}

/// P·V of a block: `acc[r·dvp + c] = acc[r·dvp + c]·alpha[r] + Σ_j p[j·ROWS + r]·v[j·vs + c]`.
pub(crate) fn pv_block(
    p: &[f32],
    v: &[f32],
    vs: usize,
    dvp: usize,
    alpha: &[f32; ROWS],
    acc: &mut [f32],
) {
    // `dvp` is never 0 through `Backend::pv_block` (a multiple of the column alignment that
    // covers `dv >= 1`); tested so that the chunking cannot panic (this function is reached
    // through a pointer, so the caller's checks do not reach the optimizer).
    if dvp == 0 {
        return;
    }
    for (r, (acc_row, &a)) in acc.chunks_exact_mut(dvp).zip(alpha).enumerate() {
        scale(acc_row, a);
        for (j, p_row) in p.chunks_exact(ROWS).enumerate() {
            if let (Some(&w), Some(v_row)) = (p_row.get(r), v.get(j * vs..j * vs + dvp)) {
                axpy(w, v_row, acc_row);
            }
        }
    }
}

/// Independent multiply-add chains of the FMA-peak probe.
pub(crate) const PEAK_CHAINS: usize = 8;

/// `iterations` rounds of `PEAK_CHAINS` independent multiply-adds; returns their sum.
pub(crate) fn fma_peak(iterations: usize) -> f32 {
    let mut acc = [0.0f32; PEAK_CHAINS];
    for _ in 0..iterations {
        for x in acc.iter_mut() {
            *x = *x * 0.999_999 + 1e-6;
        }
    }
    acc.iter().sum()
}

// ---------------------------------------------------------------------------------------------
// Int8 references. The int8 kernels call these through `super::int8` (which checks lengths
// and picks the Cortex-M DSP or Helium version at compile time); every other version must
// give the same bits. Arithmetic wraps like the hardware (`|a_i b_i| <= 2^14`, so dots of up
// to 2^17 elements are exact).

/// `Σ a_i b_i` of int8 vectors over the common length, in wrapping `i32` arithmetic.
///
/// ```
/// assert_eq!(microattn::arch::scalar::dot_i8(&[1, -2, 3], &[4, 5, -128]), 4 - 10 - 384);
/// ```
#[inline]
pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    // Fixed-width chunks of 16 products: a simple shape the auto-vectorizer turns into one
    // widening multiply-accumulate per chunk (Helium `vmladava.s8`).
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut sum = 0i32;
    let (a_chunks, b_chunks) = (a.chunks_exact(16), b.chunks_exact(16));
    let (a_tail, b_tail) = (a_chunks.remainder(), b_chunks.remainder());
    for (x, y) in a_chunks.zip(b_chunks) {
        let mut s = 0i32;
        for l in 0..16 {
            s = s.wrapping_add(x[l] as i32 * y[l] as i32);
        }
        sum = sum.wrapping_add(s);
    }
    for (&x, &y) in a_tail.iter().zip(b_tail) {
        sum = sum.wrapping_add(x as i32 * y as i32);
    }
    sum
}

/// `out[j] = dot_i8(q, key_j)` for `j < out.len()`, where key `j` is
/// `keys[j·stride..][..q.len()]`; keys that do not fit in `keys` give 0 (the checked entry
/// point, [`super::dot_i8_keys`], rejects such calls).
#[inline]
pub fn dot_i8_keys(q: &[i8], keys: &[i8], stride: usize, out: &mut [i32]) {
    for (j, o) in out.iter_mut().enumerate() {
        let key = j
            .checked_mul(stride)
            .and_then(|start| keys.get(start..)?.get(..q.len()));
        *o = key.map_or(0, |k| dot_i8(q, k));
    }
}

/// `acc[c] += Σ_j w[j] · v[j·stride + c]` for `c < acc.len()` and `j < w.len()`, in wrapping
/// `i32` arithmetic; value rows that do not fit in `v` are skipped (the checked entry point,
/// [`super::pv_i8`], rejects such calls).
#[inline]
pub fn pv_i8(w: &[i32], v: &[i8], stride: usize, acc: &mut [i32]) {
    for (j, &wj) in w.iter().enumerate() {
        let row = j
            .checked_mul(stride)
            .and_then(|start| v.get(start..)?.get(..acc.len()));
        if let Some(row) = row {
            // One weight times a row of bytes: a plain loop the auto-vectorizer widens
            // (Helium `vmla.s32` on sign-extending byte loads).
            for (a, &x) in acc.iter_mut().zip(row) {
                *a = a.wrapping_add(wj.wrapping_mul(x as i32));
            }
        }
    }
}

/// The int8 SDPA's Q15 softmax weights (the reference of [`super::dot_weights_q15`]): each raw
/// dot product `x` of `w` becomes `min(2^-t, 2^15 - 1)` in Q15 for `d = |max - x|`,
/// `t = hi32(d·lo) + d·hi` (Q20), or 0 when `d >= cutoff` or `t >= 17·2^20`; returns the sum
/// of the weights (wrapping).
///
/// `2^-t` with `t = n + k/64 + r`: `2^-n` is a rounded shift, `2^(-k/64)` the Q31 table entry
/// and `2^-r = e^(-u) ≈ 1 - u + u²/2 - u³/6` for `u = r·ln 2`, every product the top 32 bits
/// of a 32×32-bit one and every sum wrapping `u32`.
pub fn dot_weights_q15(
    w: &mut [i32],
    max: i32,
    lo: u32,
    hi: u32,
    cutoff: u32,
    exp2: &super::Exp2Q15<'_>,
) -> u32 {
    let mut sum = 0u32;
    for x in w.iter_mut() {
        let d = max.abs_diff(*x);
        let weight = if d >= cutoff {
            0
        } else {
            weight_q15(mul_hi(d, lo).wrapping_add(d.wrapping_mul(hi)), exp2)
        };
        sum = sum.wrapping_add(weight);
        *x = weight as i32;
    }
    sum
}

/// `(a·b) >> 32` of 32-bit operands.
#[inline(always)]
fn mul_hi(a: u32, b: u32) -> u32 {
    ((a as u64 * b as u64) >> 32) as u32
}

/// `min(2^-t, 2^15 - 1)` in Q15 for a Q20 `t` (0 from `t = 17·2^20` on).
#[inline(always)]
fn weight_q15(t: u32, exp2: &super::Exp2Q15<'_>) -> u32 {
    exp2_neg_q15(t, exp2).min((1 << 15) - 1)
}

/// `2^-t` in Q15 for a Q20 `t`, rounded half up: in `[0, 2^15]`, exactly `2^15` for `t = 0`
/// and 0 from `t = 17·2^20` on (the int8 softmax's `exp2`, also used for its rescale
/// factors, which may be 1.0).
#[inline(always)]
pub(crate) fn exp2_neg_q15(t: u32, exp2: &super::Exp2Q15<'_>) -> u32 {
    if t >= super::int8::WEIGHT_ZERO_T {
        return 0;
    }
    let n = t >> 20;
    let k = (t >> 14) & 63;
    let r = t & ((1 << 14) - 1);
    // u = r·ln 2 in Q31, u/3 in Q32.
    let u = mul_hi(r << 11, exp2.ln2_q32);
    let u3 = mul_hi(r << 12, exp2.ln2_third_q32);
    // 1 - u + u²/2 - u³/6 in Q31.
    let half_sq = mul_hi(u, u);
    let poly = (1u32 << 31)
        .wrapping_sub(u)
        .wrapping_add(half_sq)
        .wrapping_sub(mul_hi(half_sq, u3));
    let x = mul_hi(exp2.table.get(k as usize).copied().unwrap_or(0), poly);
    // Q30 to Q15 with 2^-n, rounded half up: (x + 2^(14+n)) >> (15+n), in a form that
    // cannot overflow (n <= 16).
    ((x >> (14 + n)) + 1) >> 1
}
