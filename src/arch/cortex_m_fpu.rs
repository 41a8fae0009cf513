//! Cortex-M FPU backend (single-precision FPv4-SP / FPv5: M4F, M7, M33 with the hard-float
//! ABI; not on Helium cores, where the auto-vectorized scalar loops are faster): the f32 dot products and weighted row sums of the per-row SDPA path in
//! `asm!`, with `VLDM` (eight floats per instruction) and `VMLA.F32`.
//!
//! `VMLA.F32` on these FPUs is the chained multiply-accumulate (the product is rounded, then
//! added), the same two roundings as `acc + x * y` in the scalar reference, and the loops keep
//! the reference's order of operations: [`dot`] keeps its eight lanes (lane `l` sums elements
//! `l, l + 8, …`) and reduces them the same way, [`pv_row`] adds the weighted rows in order.
//! So the results are bit-identical to [`super::scalar`]; the QEMU conformance firmware checks
//! that on every emulated FPU core.
//!
//! The f16 primitives widen with the FPU's `VCVTB`/`VCVTT` (exact, so the sums are again the
//! reference's) instead of `half`'s bit manipulation, which costs about 20 instructions per
//! element on these cores.
//!
//! Everything else comes from the scalar backend.

use super::{scalar, Table};
use core::arch::asm;
use half::f16;

/// The backend: scalar primitives except the f32 and f16 ones below.
#[cfg(not(arm_mve))]
pub(super) static TABLE: Table = Table {
    name: "cortex-m-fpu",
    lanes: 1,
    peak_flops_per_iteration: scalar::PEAK_CHAINS * 2,
    dot,
    dot_f16,
    dot_bf16: scalar::dot_bf16,
    sq_l2_distance: scalar::sq_l2_distance,
    l1_distance: scalar::l1_distance,
    axpy: scalar::axpy,
    axpy_f16,
    axpy_bf16: scalar::axpy_bf16,
    widen_f16,
    widen_bf16: scalar::widen_bf16,
    narrow_f16: scalar::narrow_f16,
    scale: scalar::scale,
    max: scalar::max,
    exp_sum: scalar::exp_sum,
    dot_keys,
    dot_keys_f16,
    dot_keys_bf16: scalar::dot_keys_bf16,
    pv_row,
    pv_row_f16,
    pv_row_bf16: scalar::pv_row_bf16,
    qk_block: scalar::qk_block,
    softmax_block: scalar::softmax_block,
    pv_block: scalar::pv_block,
    fma_peak: scalar::fma_peak,
};

/// On Helium cores the f32 primitives stay scalar (auto-vectorized for MVE, faster than
/// these VFP loops); the f16 ones widen with `VCVTB`/`VCVTT` as elsewhere.
#[cfg(arm_mve)]
pub(super) static TABLE: Table = Table {
    name: "cortex-m-fpu-f16",
    lanes: 1,
    peak_flops_per_iteration: scalar::PEAK_CHAINS * 2,
    dot: scalar::dot,
    dot_f16,
    dot_bf16: scalar::dot_bf16,
    sq_l2_distance: scalar::sq_l2_distance,
    l1_distance: scalar::l1_distance,
    axpy: scalar::axpy,
    axpy_f16,
    axpy_bf16: scalar::axpy_bf16,
    widen_f16,
    widen_bf16: scalar::widen_bf16,
    narrow_f16: scalar::narrow_f16,
    scale: scalar::scale,
    max: scalar::max,
    exp_sum: scalar::exp_sum,
    dot_keys: scalar::dot_keys,
    dot_keys_f16,
    dot_keys_bf16: scalar::dot_keys_bf16,
    pv_row: scalar::pv_row,
    pv_row_f16,
    pv_row_bf16: scalar::pv_row_bf16,
    qk_block: scalar::qk_block,
    softmax_block: scalar::softmax_block,
    pv_block: scalar::pv_block,
    fma_peak: scalar::fma_peak,
};

/// Lanes of the scalar reference's dot product.
const LANES: usize = 8;

/// Zeros for the accumulators (`VLDM` from here is one instruction; VFP has no `VMOV #0.0`).
static ZEROS: [f32; 2 * LANES] = [0.0; 2 * LANES];

/// The reference's reduction of the eight lanes.
#[inline(always)]
fn reduce(acc: &[f32; LANES]) -> f32 {
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

#[cfg(not(arm_mve))]
/// Adds the products of the last `a.len() % 8` elements to the lanes, as the reference does.
#[inline(always)]
fn add_tail(acc: &mut [f32; LANES], a: &[f32], b: &[f32]) {
    for (l, (&x, &y)) in a.iter().zip(b).enumerate() {
        acc[l] += x * y;
    }
}

#[cfg(not(arm_mve))]
/// Dot product over the common length, bit-identical to [`scalar::dot`].
///
/// # Safety
/// None beyond the signature (kept `unsafe fn` for the table).
pub(super) unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (a.get(..n).unwrap_or(&[]), b.get(..n).unwrap_or(&[]));
    let (a_tail, b_tail) = (
        a.chunks_exact(LANES).remainder(),
        b.chunks_exact(LANES).remainder(),
    );
    let chunks = n / LANES;
    let mut acc = [0.0f32; LANES];
    if chunks > 0 {
        // SAFETY: `chunks` blocks of 8 floats are in bounds of both slices; `acc` holds 8.
        asm!(
            "vldm {zeros}, {{s0-s7}}",
            "2:",
            "vldm {a}!, {{s8-s15}}",
            "vldm {b}!, {{s16-s23}}",
            "vmla.f32 s0, s8, s16",
            "vmla.f32 s1, s9, s17",
            "vmla.f32 s2, s10, s18",
            "vmla.f32 s3, s11, s19",
            "vmla.f32 s4, s12, s20",
            "vmla.f32 s5, s13, s21",
            "vmla.f32 s6, s14, s22",
            "vmla.f32 s7, s15, s23",
            "subs {n}, {n}, #1",
            "bne 2b",
            "vstm {acc}, {{s0-s7}}",
            zeros = in(reg) ZEROS.as_ptr(),
            a = inout(reg) a.as_ptr() => _,
            b = inout(reg) b.as_ptr() => _,
            n = inout(reg) chunks => _,
            acc = in(reg) acc.as_mut_ptr(),
            out("s0") _, out("s1") _, out("s2") _, out("s3") _,
            out("s4") _, out("s5") _, out("s6") _, out("s7") _,
            out("s8") _, out("s9") _, out("s10") _, out("s11") _,
            out("s12") _, out("s13") _, out("s14") _, out("s15") _,
            out("s16") _, out("s17") _, out("s18") _, out("s19") _,
            out("s20") _, out("s21") _, out("s22") _, out("s23") _,
            options(nostack),
        );
    }
    add_tail(&mut acc, a_tail, b_tail);
    reduce(&acc)
}

#[cfg(not(arm_mve))]
/// `s[j] = scale · q·k_j` for every `j < s.len()`, key `j` at `k[j·ks..][..q.len()]`;
/// bit-identical to [`scalar::dot_keys`]. Two keys per pass share the query loads.
///
/// # Safety
/// Every key is in bounds (checked by `Backend::dot_keys`).
pub(super) unsafe fn dot_keys(q: &[f32], k: &[f32], ks: usize, scale: f32, s: &mut [f32]) {
    let d = q.len();
    let chunks = d / LANES;
    let body = chunks * LANES;
    let q_tail = q.chunks_exact(LANES).remainder();
    let mut j = 0;
    while j + 2 <= s.len() && chunks > 0 {
        let (k0, k1) = (k.as_ptr().add(j * ks), k.as_ptr().add((j + 1) * ks));
        let mut acc = [[0.0f32; LANES]; 2];
        // SAFETY: both keys hold `d >= body` floats (the caller checked the bounds).
        asm!(
            "vldm {zeros}, {{s0-s15}}",
            "2:",
            "vldm {q}!, {{s16-s23}}",
            "vldm {k0}!, {{s24-s31}}",
            "vmla.f32 s0, s16, s24",
            "vmla.f32 s1, s17, s25",
            "vmla.f32 s2, s18, s26",
            "vmla.f32 s3, s19, s27",
            "vmla.f32 s4, s20, s28",
            "vmla.f32 s5, s21, s29",
            "vmla.f32 s6, s22, s30",
            "vmla.f32 s7, s23, s31",
            "vldm {k1}!, {{s24-s31}}",
            "vmla.f32 s8, s16, s24",
            "vmla.f32 s9, s17, s25",
            "vmla.f32 s10, s18, s26",
            "vmla.f32 s11, s19, s27",
            "vmla.f32 s12, s20, s28",
            "vmla.f32 s13, s21, s29",
            "vmla.f32 s14, s22, s30",
            "vmla.f32 s15, s23, s31",
            "subs {n}, {n}, #1",
            "bne 2b",
            "vstm {acc}, {{s0-s15}}",
            zeros = in(reg) ZEROS.as_ptr(),
            q = inout(reg) q.as_ptr() => _,
            k0 = inout(reg) k0 => _,
            k1 = inout(reg) k1 => _,
            n = inout(reg) chunks => _,
            acc = in(reg) acc.as_mut_ptr(),
            out("s0") _, out("s1") _, out("s2") _, out("s3") _,
            out("s4") _, out("s5") _, out("s6") _, out("s7") _,
            out("s8") _, out("s9") _, out("s10") _, out("s11") _,
            out("s12") _, out("s13") _, out("s14") _, out("s15") _,
            out("s16") _, out("s17") _, out("s18") _, out("s19") _,
            out("s20") _, out("s21") _, out("s22") _, out("s23") _,
            out("s24") _, out("s25") _, out("s26") _, out("s27") _,
            out("s28") _, out("s29") _, out("s30") _, out("s31") _,
            options(nostack),
        );
        for (h, (lanes, sj)) in acc.iter_mut().zip(s.iter_mut().skip(j)).enumerate() {
            if !q_tail.is_empty() {
                let key =
                    core::slice::from_raw_parts(k.as_ptr().add((j + h) * ks + body), q_tail.len());
                add_tail(lanes, q_tail, key);
            }
            *sj = scale * reduce(lanes);
        }
        j += 2;
    }
    for (i, sj) in s.iter_mut().enumerate().skip(j) {
        let key = core::slice::from_raw_parts(k.as_ptr().add(i * ks), d);
        *sj = scale * dot(q, key);
    }
}

#[cfg(not(arm_mve))]
/// `acc += Σ_j p[j] · v[j·vs..][..acc.len()]`, rows in order; bit-identical to
/// [`scalar::pv_row`]. Four rows per pass over blocks of eight accumulators.
///
/// # Safety
/// Every row is in bounds (checked by `Backend::pv_row`).
pub(super) unsafe fn pv_row(p: &[f32], v: &[f32], vs: usize, acc: &mut [f32]) {
    let blocks = acc.len() / LANES;
    let body = blocks * LANES;
    for (group, w) in p.chunks(4).enumerate() {
        let j0 = group * 4;
        let row = |i: usize| v.as_ptr().add((j0 + i) * vs);
        if blocks > 0 {
            // A short last group runs row by row: padding it with zero-weight rows would add
            // `0 · v`, which can turn a `-0.0` accumulator into `+0.0`.
            if w.len() == 4 {
                pv4(
                    acc.as_mut_ptr(),
                    [row(0), row(1), row(2), row(3)],
                    w,
                    blocks,
                );
            } else {
                for (i, &wi) in w.iter().enumerate() {
                    pv1(acc.as_mut_ptr(), row(i), wi, blocks);
                }
            }
        }
        let tail = acc.chunks_exact_mut(LANES).into_remainder();
        for (i, &wi) in w.iter().enumerate() {
            let r = core::slice::from_raw_parts(row(i).add(body), tail.len());
            for (a, &x) in tail.iter_mut().zip(r) {
                *a += wi * x;
            }
        }
    }
}

#[cfg(not(arm_mve))]
/// `acc[c] += w[0]·r0[c]`, then `+= w[1]·r1[c]`, … for four rows, `8 · blocks` columns.
///
/// # Safety
/// `acc` and the four rows hold `8 · blocks` floats; `blocks >= 1`; `w.len() == 4`.
#[inline(always)]
unsafe fn pv4(acc: *mut f32, rows: [*const f32; 4], w: &[f32], blocks: usize) {
    asm!(
        "vldm {w}, {{s16-s19}}",
        "2:",
        "vldm {acc}, {{s0-s7}}",
        "vldm {r0}!, {{s8-s15}}",
        "vmla.f32 s0, s8, s16",
        "vmla.f32 s1, s9, s16",
        "vmla.f32 s2, s10, s16",
        "vmla.f32 s3, s11, s16",
        "vmla.f32 s4, s12, s16",
        "vmla.f32 s5, s13, s16",
        "vmla.f32 s6, s14, s16",
        "vmla.f32 s7, s15, s16",
        "vldm {r1}!, {{s8-s15}}",
        "vmla.f32 s0, s8, s17",
        "vmla.f32 s1, s9, s17",
        "vmla.f32 s2, s10, s17",
        "vmla.f32 s3, s11, s17",
        "vmla.f32 s4, s12, s17",
        "vmla.f32 s5, s13, s17",
        "vmla.f32 s6, s14, s17",
        "vmla.f32 s7, s15, s17",
        "vldm {r2}!, {{s8-s15}}",
        "vmla.f32 s0, s8, s18",
        "vmla.f32 s1, s9, s18",
        "vmla.f32 s2, s10, s18",
        "vmla.f32 s3, s11, s18",
        "vmla.f32 s4, s12, s18",
        "vmla.f32 s5, s13, s18",
        "vmla.f32 s6, s14, s18",
        "vmla.f32 s7, s15, s18",
        "vldm {r3}!, {{s8-s15}}",
        "vmla.f32 s0, s8, s19",
        "vmla.f32 s1, s9, s19",
        "vmla.f32 s2, s10, s19",
        "vmla.f32 s3, s11, s19",
        "vmla.f32 s4, s12, s19",
        "vmla.f32 s5, s13, s19",
        "vmla.f32 s6, s14, s19",
        "vmla.f32 s7, s15, s19",
        "vstm {acc}!, {{s0-s7}}",
        "subs {n}, {n}, #1",
        "bne 2b",
        w = in(reg) w.as_ptr(),
        acc = inout(reg) acc => _,
        r0 = inout(reg) rows[0] => _,
        r1 = inout(reg) rows[1] => _,
        r2 = inout(reg) rows[2] => _,
        r3 = inout(reg) rows[3] => _,
        n = inout(reg) blocks => _,
        out("s0") _, out("s1") _, out("s2") _, out("s3") _,
        out("s4") _, out("s5") _, out("s6") _, out("s7") _,
        out("s8") _, out("s9") _, out("s10") _, out("s11") _,
        out("s12") _, out("s13") _, out("s14") _, out("s15") _,
        out("s16") _, out("s17") _, out("s18") _, out("s19") _,
        options(nostack),
    );
}

#[cfg(not(arm_mve))]
/// `acc[c] += w·r[c]` for `8 · blocks` columns.
///
/// # Safety
/// `acc` and `r` hold `8 · blocks` floats; `blocks >= 1`.
#[inline(always)]
unsafe fn pv1(acc: *mut f32, r: *const f32, w: f32, blocks: usize) {
    asm!(
        "vmov s16, {w}",
        "2:",
        "vldm {acc}, {{s0-s7}}",
        "vldm {r}!, {{s8-s15}}",
        "vmla.f32 s0, s8, s16",
        "vmla.f32 s1, s9, s16",
        "vmla.f32 s2, s10, s16",
        "vmla.f32 s3, s11, s16",
        "vmla.f32 s4, s12, s16",
        "vmla.f32 s5, s13, s16",
        "vmla.f32 s6, s14, s16",
        "vmla.f32 s7, s15, s16",
        "vstm {acc}!, {{s0-s7}}",
        "subs {n}, {n}, #1",
        "bne 2b",
        w = in(reg) w.to_bits(),
        acc = inout(reg) acc => _,
        r = inout(reg) r => _,
        n = inout(reg) blocks => _,
        out("s0") _, out("s1") _, out("s2") _, out("s3") _,
        out("s4") _, out("s5") _, out("s6") _, out("s7") _,
        out("s8") _, out("s9") _, out("s10") _, out("s11") _,
        out("s12") _, out("s13") _, out("s14") _, out("s15") _,
        out("s16") _,
        options(nostack),
    );
}

/// An f16 widened by the FPU (`VCVTB.F32.F16`): exact, the same bits as `f16::to_f32`
/// (NaNs included: the default-NaN mode is off after reset and nothing here turns it on).
#[inline(always)]
fn widen(h: f16) -> f32 {
    let out: u32;
    // SAFETY: register-only moves and a conversion; s0 is declared clobbered. (Core registers
    // in and out: the `sreg` operand class is refused for this target's FPU feature name.)
    unsafe {
        asm!(
            "vmov s0, {i}",
            "vcvtb.f32.f16 s0, s0",
            "vmov {o}, s0",
            o = lateout(reg) out,
            i = in(reg) u32::from(h.to_bits()),
            out("s0") _,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    f32::from_bits(out)
}

/// [`scalar::dot_f16`] with the FPU's conversion.
///
/// # Safety
/// None beyond the signature (kept `unsafe fn` for the table).
unsafe fn dot_f16(a: &[f16], b: &[f16]) -> f32 {
    scalar::dot_by(a, b, widen)
}

/// [`scalar::axpy_f16`] with the FPU's conversion.
///
/// # Safety
/// None beyond the signature (kept `unsafe fn` for the table).
unsafe fn axpy_f16(alpha: f32, x: &[f16], y: &mut [f32]) {
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi += alpha * widen(xi);
    }
}

/// [`scalar::widen_f16`] with the FPU's conversion.
///
/// # Safety
/// None beyond the signature (kept `unsafe fn` for the table).
unsafe fn widen_f16(src: &[f16], dst: &mut [f32]) {
    for (d, &h) in dst.iter_mut().zip(src) {
        *d = widen(h);
    }
}

/// Longest query [`dot_keys_f16`] widens once into a stack buffer (256 bytes); longer ones
/// widen both operands element by element.
const F16_QUERY: usize = 64;

/// [`scalar::dot_keys_f16`], bit-identical: the query is widened once, each key eight elements
/// per pass inside the multiply-accumulate loop.
///
/// # Safety
/// Every key is in bounds (checked by `Backend::dot_keys_f16`).
unsafe fn dot_keys_f16(q: &[f16], k: &[f16], ks: usize, scale: f32, s: &mut [f32]) {
    let d = q.len();
    let mut wide = [0.0f32; F16_QUERY];
    match wide.get_mut(..d) {
        Some(qf) => {
            widen_f16(q, qf);
            for (j, sj) in s.iter_mut().enumerate() {
                *sj = scale * dot_f32_f16(qf, k.as_ptr().add(j * ks));
            }
        }
        None => {
            for (j, sj) in s.iter_mut().enumerate() {
                let key = core::slice::from_raw_parts(k.as_ptr().add(j * ks), d);
                *sj = scale * scalar::dot_by(q, key, widen);
            }
        }
    }
}

/// `Σ a[i] · b[i]` over `a.len()` elements, `b` f16, in the reference's eight lanes.
///
/// # Safety
/// `b` points to `a.len()` readable f16 values (any alignment: `LDR` may be unaligned on
/// these cores).
#[inline(always)]
unsafe fn dot_f32_f16(a: &[f32], b: *const f16) -> f32 {
    let chunks = a.len() / LANES;
    let body = chunks * LANES;
    let mut acc = [0.0f32; LANES];
    if chunks > 0 {
        // SAFETY: `chunks` blocks of eight elements are in bounds of `a` and `b`.
        asm!(
            "vldm {zeros}, {{s0-s7}}",
            "2:",
            "vldm {a}!, {{s8-s15}}",
            "ldr {t0}, [{b}], #4",
            "ldr {t1}, [{b}], #4",
            "vmov s16, s17, {t0}, {t1}",
            "ldr {t0}, [{b}], #4",
            "ldr {t1}, [{b}], #4",
            "vmov s18, s19, {t0}, {t1}",
            "vcvtb.f32.f16 s20, s16",
            "vcvtt.f32.f16 s21, s16",
            "vcvtb.f32.f16 s22, s17",
            "vcvtt.f32.f16 s23, s17",
            "vcvtb.f32.f16 s24, s18",
            "vcvtt.f32.f16 s25, s18",
            "vcvtb.f32.f16 s26, s19",
            "vcvtt.f32.f16 s27, s19",
            "vmla.f32 s0, s8, s20",
            "vmla.f32 s1, s9, s21",
            "vmla.f32 s2, s10, s22",
            "vmla.f32 s3, s11, s23",
            "vmla.f32 s4, s12, s24",
            "vmla.f32 s5, s13, s25",
            "vmla.f32 s6, s14, s26",
            "vmla.f32 s7, s15, s27",
            "subs {n}, {n}, #1",
            "bne 2b",
            "vstm {acc}, {{s0-s7}}",
            zeros = in(reg) ZEROS.as_ptr(),
            a = inout(reg) a.as_ptr() => _,
            b = inout(reg) b => _,
            n = inout(reg) chunks => _,
            acc = in(reg) acc.as_mut_ptr(),
            t0 = out(reg) _,
            t1 = out(reg) _,
            out("s0") _, out("s1") _, out("s2") _, out("s3") _,
            out("s4") _, out("s5") _, out("s6") _, out("s7") _,
            out("s8") _, out("s9") _, out("s10") _, out("s11") _,
            out("s12") _, out("s13") _, out("s14") _, out("s15") _,
            out("s16") _, out("s17") _, out("s18") _, out("s19") _,
            out("s20") _, out("s21") _, out("s22") _, out("s23") _,
            out("s24") _, out("s25") _, out("s26") _, out("s27") _,
            options(nostack),
        );
    }
    for (l, (lane, &x)) in acc.iter_mut().zip(a.get(body..).unwrap_or(&[])).enumerate() {
        *lane += x * widen(*b.add(body + l));
    }
    reduce(&acc)
}

/// [`scalar::pv_row_f16`], bit-identical: rows in order, each widened inside the
/// multiply-accumulate loop, eight accumulators per pass.
///
/// # Safety
/// Every row is in bounds (checked by `Backend::pv_row_f16`).
unsafe fn pv_row_f16(p: &[f32], v: &[f16], vs: usize, acc: &mut [f32]) {
    let blocks = acc.len() / LANES;
    let body = blocks * LANES;
    for (j, &w) in p.iter().enumerate() {
        let row = v.as_ptr().add(j * vs);
        if blocks > 0 {
            pv1_f16(acc.as_mut_ptr(), row, w, blocks);
        }
        let tail = acc.get_mut(body..).unwrap_or(&mut []);
        for (c, a) in tail.iter_mut().enumerate() {
            *a += w * widen(*row.add(body + c));
        }
    }
}

/// `acc[c] += w·r[c]` for `8 · blocks` columns, `r` f16.
///
/// # Safety
/// `acc` holds `8 · blocks` floats and `r` as many f16 values (any alignment); `blocks >= 1`.
#[inline(always)]
unsafe fn pv1_f16(acc: *mut f32, r: *const f16, w: f32, blocks: usize) {
    asm!(
        "vmov s28, {w}",
        "2:",
        "ldr {t0}, [{r}], #4",
        "ldr {t1}, [{r}], #4",
        "vmov s16, s17, {t0}, {t1}",
        "ldr {t0}, [{r}], #4",
        "ldr {t1}, [{r}], #4",
        "vmov s18, s19, {t0}, {t1}",
        "vldm {acc}, {{s0-s7}}",
        "vcvtb.f32.f16 s8, s16",
        "vcvtt.f32.f16 s9, s16",
        "vcvtb.f32.f16 s10, s17",
        "vcvtt.f32.f16 s11, s17",
        "vcvtb.f32.f16 s12, s18",
        "vcvtt.f32.f16 s13, s18",
        "vcvtb.f32.f16 s14, s19",
        "vcvtt.f32.f16 s15, s19",
        "vmla.f32 s0, s8, s28",
        "vmla.f32 s1, s9, s28",
        "vmla.f32 s2, s10, s28",
        "vmla.f32 s3, s11, s28",
        "vmla.f32 s4, s12, s28",
        "vmla.f32 s5, s13, s28",
        "vmla.f32 s6, s14, s28",
        "vmla.f32 s7, s15, s28",
        "vstm {acc}!, {{s0-s7}}",
        "subs {n}, {n}, #1",
        "bne 2b",
        w = in(reg) w.to_bits(),
        acc = inout(reg) acc => _,
        r = inout(reg) r => _,
        n = inout(reg) blocks => _,
        t0 = out(reg) _,
        t1 = out(reg) _,
        out("s0") _, out("s1") _, out("s2") _, out("s3") _,
        out("s4") _, out("s5") _, out("s6") _, out("s7") _,
        out("s8") _, out("s9") _, out("s10") _, out("s11") _,
        out("s12") _, out("s13") _, out("s14") _, out("s15") _,
        out("s16") _, out("s17") _, out("s18") _, out("s19") _,
        out("s28") _,
        options(nostack),
    );
}
