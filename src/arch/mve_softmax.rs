//! Helium (MVE) version of the int8 SDPA's softmax weight loop (dot score, no bias): four keys
//! per vector, the same bits as [`super::scalar::dot_weights_q15`] (which the other targets'
//! `arch::dot_weights_q15` versions match too).
//!
//! Per lane, with `d = max - x` (the running maximum is at least every raw dot product):
//!
//! - `t = d ≥ cutoff ? 17·2^20 : hi32(d·lo) + d·hi` (`VMULH.U32`, `VMUL.I32`), then
//!   `min(t, 17·2^20)`: at `t = 17·2^20` the steps below give exactly 0, as the scalar
//!   `t ≥ 17·2^20 → 0`.
//! - `2^-t` as `scalar::exp2_neg_q15`: `r = t mod 2^14`, `u = hi32((r·2^11)·ln2)` and
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

use super::Exp2Q15;

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

/// One group of four columns, from the i64 accumulators de-interleaved into q0 (low words)
/// and q1 (high words) to the int8 outputs: `a'` (in `$a`, an i32 lane each; `$t` a scratch
/// register) times `mr`,
/// rounded half away from zero by `n = 32 + k` bits and clamped to ±127. With `|p| = |a'|·mr`
/// and `hi = hi32(|p|)` (`VMULH.U32`), `(|p| + 2^(n-1)) >> n = (hi + 2^(k-1)) >> k` for
/// `k >= 1` (the low word cannot carry into the result), one `VRSHL.U32` by `-k`; the sign
/// goes back with a predicated `VNEG`.
macro_rules! requantize_group {
    ($a:literal, $t:literal) => {
        concat!(
            "vabs.s32 ",
            $t,
            ", ",
            $a,
            "\n",
            "vmulh.u32 ",
            $t,
            ", ",
            $t,
            ", q7\n",
            "vrshl.u32 ",
            $t,
            ", {neg_k}\n",
            "vmin.u32 ",
            $t,
            ", ",
            $t,
            ", q5\n",
            "vpt.s32 lt, ",
            $a,
            ", {zero}\n",
            "vnegt.s32 ",
            $t,
            ", ",
            $t,
            "\n",
            "vstrb.32 ",
            $t,
            ", [r1], #4\n",
        )
    };
}

/// The Helium body of the int8 SDPA's `normalize_row` (`attention::int8::softmax`): for every
/// column, `saturate_i8(round_shift(shift_down(acc[c]) · mr, n))` with `shift_down` a rounded
/// (half away from zero) right shift by `s` for `s > 0` and a left shift by `-s` otherwise.
/// Four columns per iteration, the accumulators de-interleaved by `VLD20`/`VLD21`.
///
/// Exact whenever every `shift_down(acc[c])` fits an `i32` (the usual case: a weighted mean of
/// int8 values scaled to a 24-bit sum is below `2^31` in magnitude), `1 <= mr < 2^32`,
/// `33 <= n <= 150`, `|s| <= 31`, and the column count is a non-zero multiple of 4. Returns
/// `false` otherwise (`out` may then hold anything): the caller runs its scalar loop.
pub(crate) fn normalize_row(acc: &[i64], s: i32, mr: i64, n: u32, out: &mut [i8]) -> bool {
    let cols = acc.len();
    let fits = cols == out.len()
        && cols > 0
        && cols % 4 == 0
        && (1..=u32::MAX as i64).contains(&mr)
        && (33..=150).contains(&n)
        && (-31..=31).contains(&s);
    if !fits {
        return false;
    }
    let neg_k = 32i32 - n as i32;
    let mut bad = 0u32;
    let (groups, a, o) = (cols / 4, acc.as_ptr(), out.as_mut_ptr());
    if s <= 0 {
        // a' = a << -s: the low word shifted with saturation (`VQSHL` sets FPSCR.QC when a
        // value does not fit), the high word checked against the low word's sign.
        // SAFETY: `groups · 4` accumulators are read (32 bytes per `VLD20`/`VLD21` pair) and as
        // many bytes written; FPSCR is restored (QC only read).
        unsafe {
            asm!(
                "vmrs {saved}, fpscr",
                "bic {t}, {saved}, #0x08000000",
                "vmsr fpscr, {t}",
                "vdup.32 q7, {mr}",
                "vmov.i32 q6, #0",
                "vmov.i32 q5, #127",
                "dls lr, lr",
                "2:",
                "vld20.32 {{q0, q1}}, [{acc}]",
                "vld21.32 {{q0, q1}}, [{acc}]!",
                "vshr.s32 q2, q0, #31",
                "veor q2, q2, q1",
                "vorr q6, q6, q2",
                "vqshl.s32 q0, {left}",
                requantize_group!("q0", "q3"),
                "le lr, 2b",
                "vmaxav.s32 {bad}, q6",
                "vmrs {t}, fpscr",
                "and {t}, {t}, #0x08000000",
                "orr {bad}, {bad}, {t}",
                "vmsr fpscr, {saved}",
                saved = out(reg) _,
                t = out(reg) _,
                mr = in(reg) mr as u32,
                left = in(reg) -s,
                neg_k = in(reg) neg_k,
                zero = in(reg) 0,
                acc = inout(reg) a => _,
                // Narrowing stores take a low base register: r1.
                inout("r1") o => _,
                bad = inout(reg) bad,
                inout("lr") groups => _,
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
    } else {
        // a' = (a + 2^(s-1) - [a < 0]) >> s (floor): half away from zero, in two words.
        // SAFETY: as above (no FPSCR access).
        unsafe {
            asm!(
                "vdup.32 q7, {mr}",
                "vmov.i32 q6, #0",
                "vmov.i32 q5, #127",
                "dls lr, lr",
                "2:",
                "vld20.32 {{q0, q1}}, [{acc}]",
                "vld21.32 {{q0, q1}}, [{acc}]!",
                // b = 2^(s-1) - [a < 0]; low word + b with the carry into the high word.
                "vshr.s32 q2, q1, #31",
                "vadd.i32 q2, q2, {half}",
                "vadd.i32 q3, q0, q2",
                "vpt.u32 hi, q2, q3",
                "vaddt.i32 q1, q1, {one}",
                // r = (hi:lo) >> s: low word (lo >> s) | (hi << (32 - s)), high word hi >> s.
                "vshl.u32 q3, {neg_s}",
                "vmov q0, q1",
                "vshl.u32 q0, {up}",
                "vorr q3, q3, q0",
                "vshl.s32 q1, {neg_s}",
                // It fits an i32 if the high word is the low word's sign.
                "vshr.s32 q0, q3, #31",
                "veor q0, q0, q1",
                "vorr q6, q6, q0",
                requantize_group!("q3", "q0"),
                "le lr, 2b",
                "vmaxav.s32 {bad}, q6",
                mr = in(reg) mr as u32,
                half = in(reg) 1u32 << (s - 1),
                one = in(reg) 1u32,
                neg_s = in(reg) -s,
                up = in(reg) 32 - s,
                neg_k = in(reg) neg_k,
                zero = in(reg) 0,
                acc = inout(reg) a => _,
                // Narrowing stores take a low base register: r1.
                inout("r1") o => _,
                bad = inout(reg) bad,
                inout("lr") groups => _,
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
    }
    bad == 0
}

/// `acc[c] + parts[c]` (an i64 plus a sign-extended i32) in two-word lanes: the accumulators
/// de-interleaved into q0 (low words) and q1 (high words), the partial sums from `[{parts}]`
/// (cleared behind); the sum's low words land in q0, its high words in q1.
macro_rules! add_parts {
    () => {
        concat!(
            "vld20.32 {{q0, q1}}, [{acc}]\n",
            "vld21.32 {{q0, q1}}, [{acc}]\n",
            "vldrw.u32 q2, [{parts}]\n",
            "vstrw.32 q6, [{parts}], #16\n",
            "vadd.i32 q0, q0, q2\n",
            // The carry of the low words: their sum is below the (unsigned) partial sum.
            "vpt.u32 hi, q2, q0\n",
            "vaddt.i32 q1, q1, {one}\n",
            "vshr.s32 q2, q2, #31\n",
            "vadd.i32 q1, q1, q2\n",
        )
    };
}

/// The column count `acc` and `parts` share for [`flush`] and [`flush_rescale`] (a non-zero
/// multiple of 4), if any.
fn paired_columns(acc: &[i64], parts: &[i32]) -> Option<usize> {
    let cols = acc.len();
    (cols > 0 && cols % 4 == 0 && parts.len() >= cols).then_some(cols)
}

/// The int8 SDPA's flush of its `i32` partial sums into the `i64` accumulators
/// (`acc[c] += parts[c] as i64; parts[c] = 0` for `c < acc.len()`), four columns per
/// iteration. Returns `false` (nothing done) unless the column count is a non-zero multiple
/// of 4 and `parts` has that many elements.
pub(crate) fn flush(acc: &mut [i64], parts: &mut [i32]) -> bool {
    let Some(cols) = paired_columns(acc, parts) else {
        return false;
    };
    // SAFETY: `cols / 4` iterations read and write 4 accumulators (32 bytes, 8-byte aligned)
    // and 4 partial sums each, all within `acc` and `parts` (`parts.len() >= cols`).
    unsafe {
        asm!(
            "vmov.i32 q6, #0",
            "dls lr, lr",
            "2:",
            add_parts!(),
            "vst20.32 {{q0, q1}}, [{acc}]",
            "vst21.32 {{q0, q1}}, [{acc}]!",
            "le lr, 2b",
            acc = inout(reg) acc.as_mut_ptr() => _,
            parts = inout(reg) parts.as_mut_ptr() => _,
            one = in(reg) 1u32,
            inout("lr") cols / 4 => _,
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
            options(nostack),
        );
    }
    true
}

/// [`flush`], then the rescale of every accumulator by a Q15 `factor` in `0..=2^15`:
/// `acc[c] = round(acc[c] · factor / 2^15)` (half away from zero, as the scalar `rescale`:
/// `(p + 2^14 - [p < 0]) >> 15` on the two-word product). Exact while the products fit an
/// i64 (the SDPA's accumulators stay below `2^46`). Returns `false` (nothing done) when
/// [`flush`] would, or for a factor out of range.
pub(crate) fn flush_rescale(acc: &mut [i64], parts: &mut [i32], factor: i64) -> bool {
    let Some(cols) = paired_columns(acc, parts) else {
        return false;
    };
    if !(0..=1 << 15).contains(&factor) {
        return false;
    }
    let f = factor as u32;
    // SAFETY: as in `flush`.
    unsafe {
        asm!(
            "vdup.32 q7, {f}",
            "vmov.i32 q6, #0",
            "dls lr, lr",
            "2:",
            add_parts!(),
            // p = x · f: low word lo·f, high word hi·f + hi32(lo·f).
            "vmulh.u32 q3, q0, q7",
            "vmul.i32 q0, q0, {f}",
            "vmul.i32 q1, q1, {f}",
            "vadd.i32 q1, q1, q3",
            // + 2^14 - [p < 0], with the carry into the high word.
            "vshr.s32 q2, q1, #31",
            "vadd.i32 q2, q2, {half}",
            "vadd.i32 q0, q0, q2",
            "vpt.u32 hi, q2, q0",
            "vaddt.i32 q1, q1, {one}",
            // >> 15 over both words.
            "vshr.u32 q0, q0, #15",
            "vshl.i32 q2, q1, #17",
            "vorr q0, q0, q2",
            "vshr.s32 q1, q1, #15",
            "vst20.32 {{q0, q1}}, [{acc}]",
            "vst21.32 {{q0, q1}}, [{acc}]!",
            "le lr, 2b",
            acc = inout(reg) acc.as_mut_ptr() => _,
            parts = inout(reg) parts.as_mut_ptr() => _,
            f = in(reg) f,
            half = in(reg) 1u32 << 14,
            one = in(reg) 1u32,
            inout("lr") cols / 4 => _,
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
    true
}
