//! Helium (MVE) version of the int8 SDPA's softmax weight loop (dot score, no bias): four keys
//! per vector, the same bits as the scalar loop in `attention::int8::sdpa`
//! (`sdpa_weight_q20(ds.t(max.abs_diff(x)))` per key, summed).
//!
//! Per lane, with `d = max - x` (the running maximum is at least every raw dot product):
//!
//! - `t = d ≥ cutoff ? 17·2^20 : hi32(d·lo) + d·hi` (`VMULH.U32`, `VMUL.I32`), then
//!   `min(t, 17·2^20)`: at `t = 17·2^20` the steps below give exactly 0, as the scalar
//!   `t ≥ 17·2^20 → 0`.
//! - `2^-t` as `exp2_neg_q15`: `r = t mod 2^14`, `u = hi32((r·2^11)·ln2)` and
//!   `u/3 = hi32((r·2^12)·ln2/3)` as `VQDMULH.S32` of `r·2^11` by `ln2_q32 / 2` (even) and by
//!   `ln2_third_q32` (a doubling multiply: `(2ab) >> 32`, exact for these non-negative operands
//!   below `2^31`); `u²/2 = hi32(u·u)` and `hi32(u²/2 · u/3)` with `VMULH.U32`; the table entry
//!   `2^(-k/64)` by a `VLDRW.U32` gather; `hi32(table · poly)`; and the rounded shift by
//!   `15 + n` as one `VRSHL.U32` by `-(15 + n)` (the scalar `(x + 2^(s-1)) >> s` cannot
//!   overflow: `x ≤ 2^30`).
//! - `min(weight, 2^15 - 1)`, the sum with `VADDVA.U32`.
//!
//! The loop is tail-predicated (`DLSTP.32`/`LETP`): any number of keys.

use core::arch::asm;

/// The constants of the softmax's Q15 `exp2` (`attention::int8::softmax::exp2_neg_q15`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Exp2Q15<'a> {
    /// `round(2^31 · 2^(-k/64))` for `k` in `0..64`.
    pub table: &'a [u32; 64],
    /// `round(ln 2 · 2^32)` (even).
    pub ln2_q32: u32,
    /// `round(ln 2 / 3 · 2^32)` (below `2^31`).
    pub ln2_third_q32: u32,
}

/// The Q20 logit difference from which every weight is 0 (`17 · 2^20`).
const WEIGHT_ZERO_T: u32 = 17 << 20;

/// Replaces each raw dot product `x` of `w` by its Q15 softmax weight
/// `min(2^-t, 2^15 - 1)` with `t = d ≥ cutoff ? 17·2^20 : hi32(d·(hi·2^32 + lo))` (wrapping) and
/// `d = max - x` (`max` at least every `x`); returns the sum of the weights (below `2^32` for
/// fewer than `2^17` keys). Same bits as the scalar loop; the caller passes the constants of
/// its `exp2`.
pub(crate) fn dot_weights(
    w: &mut [i32],
    max: i32,
    lo: u32,
    hi: u32,
    cutoff: u32,
    exp2: Exp2Q15<'_>,
) -> u32 {
    if w.is_empty() {
        return 0;
    }
    let mut sum = 0u32;
    // The doubling multiply `(2·a·b) >> 32` by `ln2 / 2` is `hi32(a · ln2)`.
    let ln2_half = exp2.ln2_q32 / 2;
    // SAFETY: the tail-predicated loop reads and writes the `w.len()` words of `w` (inactive
    // lanes of the last iteration are not accessed); the gather reads `table[k]` with
    // `k = (t >> 14) & 63 < 64`, inside the 64-entry table.
    unsafe {
        asm!(
            // Constants: q7 = max, q6 = lo, q5 = 17·2^20, q4 = 2^15 - 1 (the largest weight);
            // the registers of max and lo then take 14 and 2^31.
            "vdup.32 q7, {fourteen}",
            "vdup.32 q6, {top}",
            "movw {fourteen}, #0",
            "movt {fourteen}, #{zero_t_hi}",
            "vdup.32 q5, {fourteen}",
            "vmov.i32 q4, #0x7fff",
            "movs {fourteen}, #14",
            "mov {top}, #0x80000000",
            "dlstp.32 lr, lr",
            "2:",
            "vldrw.u32 q0, [{w}]",
            // d = max - x; t = hi32(d·lo) + d·hi, or 17·2^20 from the cutoff on.
            "vsub.i32 q0, q7, q0",
            "vmulh.u32 q1, q0, q6",
            "vmul.i32 q2, q0, {hi}",
            "vadd.i32 q1, q1, q2",
            "vcmp.u32 cs, q0, {cutoff}",
            "vpsel q1, q5, q1",
            "vmin.u32 q1, q1, q5",
            // r·2^11 (r = t mod 2^14): u and u/3.
            "vshl.i32 q2, q1, #18",
            "vshr.u32 q2, q2, #7",
            "vqdmulh.s32 q3, q2, {ln2}",
            "vqdmulh.s32 q2, q2, {ln2_3}",
            // poly = 2^31 - u + u²/2 - hi32(u²/2 · u/3).
            "vmulh.u32 q0, q3, q3",
            "vmulh.u32 q2, q0, q2",
            "vsub.i32 q0, q0, q3",
            "vsub.i32 q0, q0, q2",
            "vadd.i32 q0, q0, {top}",
            // k = (t >> 14) & 63: the table entry.
            "vshl.i32 q2, q1, #12",
            "vshr.u32 q2, q2, #26",
            "vldrw.u32 q3, [{table}, q2, uxtw #2]",
            "vmulh.u32 q0, q3, q0",
            // Rounded right shift by 15 + n (n = t >> 20): VRSHL by -(15 + n) = ~n - 14.
            "vshr.u32 q2, q1, #20",
            "vmvn q2, q2",
            "vsub.i32 q2, q2, {fourteen}",
            "vrshl.u32 q0, q0, q2",
            "vmin.u32 q0, q0, q4",
            "vaddva.u32 r0, q0",
            "vstrw.32 q0, [{w}], #16",
            "letp lr, 2b",
            fourteen = inout(reg) max => _,
            top = inout(reg) lo => _,
            zero_t_hi = const WEIGHT_ZERO_T >> 16,
            hi = in(reg) hi,
            cutoff = in(reg) cutoff,
            ln2 = in(reg) ln2_half,
            ln2_3 = in(reg) exp2.ln2_third_q32,
            table = in(reg) exp2.table.as_ptr(),
            w = inout(reg) w.as_mut_ptr() => _,
            // VADDVA takes an even register.
            inout("r0") sum,
            inout("lr") w.len() => _,
            out("d0") _,
            out("d1") _,
            out("d2") _,
            out("d3") _,
            out("d4") _,
            out("d5") _,
            out("d6") _,
            out("d7") _,
            out("d8") _,
            out("d9") _,
            out("d10") _,
            out("d11") _,
            out("d12") _,
            out("d13") _,
            out("d14") _,
            out("d15") _,
            options(nostack),
        );
    }
    sum
}
