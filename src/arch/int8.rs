//! Int8 primitives of the int8 kernels, with the backend chosen at compile time:
//!
//! | cfg (from `build.rs`) | cores | version |
//! |---|---|---|
//! | `arm_mve` | Cortex-M55/M85 | [`mve`](super::mve): Helium `VMLADAVA.S8` / `VMLA.I32` in `asm!` (`scripts/qemu-test` checks the M55 firmware's int8 kernel for MVE instructions) |
//! | `arm_dsp` | Cortex-M4/M7/M33 | [`cortex_m_dsp`](super::cortex_m_dsp): `SXTB16`/`SMLAD`/`SMLAW` in `asm!` |
//! | otherwise | everything else | [`scalar`] |
//!
//! All versions give the same bits (wrapping `i32` arithmetic). A host test cannot run the
//! `asm!`, so the QEMU conformance firmware compares them with [`scalar`] on every machine,
//! and the int8 outputs on target with the host's (FNV-1a hashes).

use super::scalar;
use crate::error::Error;

/// `Σ a_i b_i` of int8 vectors over the common length (wrapping `i32`).
///
/// ```
/// assert_eq!(microattn::arch::dot_i8(&[1, 2, 3], &[4, 5, 6]), 32);
/// ```
#[inline]
pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    let mut out = [0i32; 1];
    let n = a.len().min(b.len());
    // One key of length n: always fits.
    match dot_i8_keys(&a[..n], &b[..n], n, &mut out) {
        Ok(()) => out[0],
        Err(_) => scalar::dot_i8(a, b),
    }
}

/// `out[j] = Σ_i q_i · keys[j·stride + i]` for every `j < out.len()` (wrapping `i32`): the
/// dot products of one int8 query with `out.len()` keys `stride` bytes apart.
///
/// Errors: [`Error::LengthMismatch`] when `keys` is shorter than the last key's end,
/// [`Error::ShapeOverflow`] when that end overflows.
///
/// ```
/// let keys = [1i8, 0, 0, 1, 2, 2];
/// let mut out = [0i32; 3];
/// microattn::arch::dot_i8_keys(&[3, 4], &keys, 2, &mut out)?;
/// assert_eq!(out, [3, 4, 14]);
/// # Ok::<(), microattn::Error>(())
/// ```
#[inline]
pub fn dot_i8_keys(q: &[i8], keys: &[i8], stride: usize, out: &mut [i32]) -> Result<(), Error> {
    rows_fit(keys.len(), out.len(), stride, q.len())?;
    #[cfg(all(target_arch = "arm", arm_mve))]
    // SAFETY: the keys fit (checked above).
    unsafe {
        super::mve::dot_i8_keys(q, keys, stride, out)
    };
    #[cfg(all(target_arch = "arm", arm_dsp, not(arm_mve)))]
    // SAFETY: the keys fit (checked above).
    unsafe {
        super::cortex_m_dsp::dot_i8_keys(q, keys, stride, out)
    };
    #[cfg(target_arch = "x86_64")]
    // SAFETY: checked above, as for the Arm versions.
    unsafe {
        super::x86_int8::dot_i8_keys(q, keys, stride, out)
    };
    #[cfg(not(any(
        target_arch = "x86_64",
        all(target_arch = "arm", any(arm_dsp, arm_mve))
    )))]
    scalar::dot_i8_keys(q, keys, stride, out);
    Ok(())
}

/// `acc[c] += Σ_j w[j] · v[j·stride + c]` for `c < acc.len()`, `j < w.len()` (wrapping
/// `i32`): a weighted sum of `w.len()` int8 value rows `stride` bytes apart.
///
/// Errors: [`Error::LengthMismatch`] when `v` is shorter than the last row's end,
/// [`Error::ShapeOverflow`] when that end overflows.
///
/// ```
/// let v = [1i8, 2, 3, 4];
/// let mut acc = [10i32, 20];
/// microattn::arch::pv_i8(&[2, -1], &v, 2, &mut acc)?;
/// assert_eq!(acc, [10 + 2 - 3, 20 + 4 - 4]);
/// # Ok::<(), microattn::Error>(())
/// ```
#[inline]
pub fn pv_i8(w: &[i32], v: &[i8], stride: usize, acc: &mut [i32]) -> Result<(), Error> {
    rows_fit(v.len(), w.len(), stride, acc.len())?;
    #[cfg(all(target_arch = "arm", arm_mve))]
    // SAFETY: the rows fit (checked above).
    unsafe {
        super::mve::pv_i8(w, v, stride, acc)
    };
    #[cfg(all(target_arch = "arm", arm_dsp, not(arm_mve)))]
    // SAFETY: the rows fit (checked above).
    unsafe {
        super::cortex_m_dsp::pv_i8(w, v, stride, acc)
    };
    #[cfg(target_arch = "x86_64")]
    // SAFETY: checked above, as for the Arm versions.
    unsafe {
        super::x86_int8::pv_i8(w, v, stride, acc)
    };
    #[cfg(not(any(
        target_arch = "x86_64",
        all(target_arch = "arm", any(arm_dsp, arm_mve))
    )))]
    scalar::pv_i8(w, v, stride, acc);
    Ok(())
}

/// The constants of the int8 SDPA's Q15 `exp2` (`2^-t` for a Q20 `t`), as
/// [`dot_weights_q15`] takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exp2Q15<'a> {
    /// `round(2^31 · 2^(-k/64))` for `k` in `0..64`.
    pub table: &'a [u32; 64],
    /// `round(ln 2 · 2^32)`.
    pub ln2_q32: u32,
    /// `round(ln 2 / 3 · 2^32)`.
    pub ln2_third_q32: u32,
}

/// The Q20 logit difference from which every [`dot_weights_q15`] weight is 0: 17.
pub(super) const WEIGHT_ZERO_T: u32 = 17 << 20;

/// Replaces each raw dot product `x` of `w` by its Q15 softmax weight against the running
/// maximum `max` and returns the sum of the weights (wrapping `u32`): the int8 SDPA's weight
/// loop (dot score, no bias), every version with the bits of [`scalar::dot_weights_q15`].
///
/// Per key, with `d = |max - x|` (a `u32`): `t = hi32(d·lo) + d·hi` (wrapping), the Q20 base-2
/// logit difference for the logit multiplier `(hi·2^32 + lo) / 2^32`; the weight is 0 when
/// `d >= cutoff` or `t >= 17·2^20`, else `min(2^-t in Q15, 2^15 - 1)`, with
/// `t = n + k/64 + r`: `2^-n` a rounded shift, `2^(-k/64)` from `exp2.table` and
/// `2^-r = e^(-r·ln 2)` a cubic, all in `u32` (see [`scalar::dot_weights_q15`]).
///
/// ```
/// use microattn::arch::{dot_weights_q15, Exp2Q15};
/// let mut table = [0u32; 64];
/// for (k, t) in table.iter_mut().enumerate() {
///     *t = (2f64.powf(31.0 - k as f64 / 64.0)).round() as u32;
/// }
/// let ln2 = core::f64::consts::LN_2 * 2f64.powi(32);
/// let exp2 = Exp2Q15 {
///     table: &table,
///     ln2_q32: ln2.round() as u32,
///     ln2_third_q32: (ln2 / 3.0).round() as u32,
/// };
/// // Multiplier 2^20 / 2^32 · 2^32 = 2^20 per unit of d: d = 1 is t = 1.0, weight 1/2.
/// let mut w = [5, 4, 3, -100];
/// let sum = dot_weights_q15(&mut w, 5, 0, 1 << 20, u32::MAX, &exp2);
/// assert_eq!(w, [32767, 16384, 8192, 0]);
/// assert_eq!(sum, 32767 + 16384 + 8192);
/// ```
#[inline]
pub fn dot_weights_q15(
    w: &mut [i32],
    max: i32,
    lo: u32,
    hi: u32,
    cutoff: u32,
    exp2: &Exp2Q15<'_>,
) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if let Some(sum) = super::x86_int8::dot_weights_q15(w, max, lo, hi, cutoff, exp2) {
        return sum;
    }
    #[cfg(all(target_arch = "arm", arm_dsp, not(arm_mve)))]
    return super::cortex_m_dsp::dot_weights_q15(w, max, lo, hi, cutoff, exp2);
    #[cfg(not(all(target_arch = "arm", arm_dsp, not(arm_mve))))]
    scalar::dot_weights_q15(w, max, lo, hi, cutoff, exp2)
}

/// The largest element of `w` (`None` when empty), with AVX2 / AVX-512 on x86_64 (the
/// baseline x86_64 target has no 32-bit `max` instruction).
#[inline]
pub(crate) fn max_i32(w: &[i32]) -> Option<i32> {
    #[cfg(target_arch = "x86_64")]
    return super::x86_int8::max_i32(w);
    #[cfg(not(target_arch = "x86_64"))]
    w.iter().copied().max()
}

/// The int8 SDPA's fast row normalization where a faster version runs here (AVX-512 on x86_64,
/// the Cortex-M DSP cores' `asm!`): per column `saturate_i8((x·mr + 2^(n-1) - [x·mr < 0]) >> n)`
/// with `x = acc[c] << up` in `i32`. `false` otherwise, or when a column's `x` does not fit
/// (`out` may then hold anything: the caller runs its own loop).
#[inline]
pub(crate) fn normalize_row_q(acc: &[i64], up: u32, mr: i32, n: u32, out: &mut [i8]) -> bool {
    #[cfg(target_arch = "x86_64")]
    return super::x86_int8::normalize_row(acc, up, mr, n, out);
    #[cfg(all(target_arch = "arm", arm_dsp, not(arm_mve)))]
    return super::cortex_m_dsp::normalize_row(acc, up, mr, n, out);
    #[cfg(not(any(
        target_arch = "x86_64",
        all(target_arch = "arm", arm_dsp, not(arm_mve))
    )))]
    {
        let _ = (acc, up, mr, n, out);
        false
    }
}

/// `rows` rows of `width` elements, `stride` apart, fit in `len` elements.
fn rows_fit(len: usize, rows: usize, stride: usize, width: usize) -> Result<(), Error> {
    if rows == 0 {
        return Ok(());
    }
    let needed = (rows - 1)
        .checked_mul(stride)
        .and_then(|x| x.checked_add(width))
        .ok_or(Error::ShapeOverflow)?;
    if len >= needed {
        Ok(())
    } else {
        Err(Error::LengthMismatch {
            expected: needed,
            found: len,
        })
    }
}
