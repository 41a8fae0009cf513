//! Helium (M-profile Vector Extension, Cortex-M55/M85) versions of the int8 primitives, in
//! stable `asm!` with low-overhead loops (`DLS`/`LE`).
//!
//! - [`dot_i8_keys`]: 16 bytes of the query and of four keys per iteration, each key reduced
//!   with `VMLADAVA.S8` (16 products summed into a general-purpose register): 5 `VLDRB`,
//!   4 `VMLADAVA`, 1 `LE` per 64 multiply-accumulates.
//! - [`pv_i8`]: 16 value columns per pass in four `i32` accumulator vectors; per value row,
//!   four sign-extending `VLDRB.S32` and four `VMLA.I32` by the row's weight (a 32-bit scalar:
//!   the softmax weights reach `2^16`, too wide for 16-bit lanes).
//!
//! Tails (lengths that are not multiples of 16) go to [`super::scalar`]. Both give exactly the
//! bits of the scalar reference (wrapping `i32` arithmetic); the caller ([`super::int8`])
//! checks that every key / value row is in bounds.

use super::scalar;
use core::arch::asm;

/// `out[j] = Σ_i q_i · keys[j·stride + i]` (wrapping), as [`scalar::dot_i8_keys`].
///
/// # Safety
/// Every key is in bounds: `(out.len() - 1) · stride + q.len() <= keys.len()` when `out` is
/// not empty.
pub(super) unsafe fn dot_i8_keys(q: &[i8], keys: &[i8], stride: usize, out: &mut [i32]) {
    let d = q.len();
    let chunks = d / 16;
    let body = chunks * 16;
    let base = keys.as_ptr();
    if chunks == 0 {
        out.fill(0);
    }
    // Iterators and patterns rather than indexing: no bounds-check panic survives.
    let mut fours = out.chunks_exact_mut(4);
    let mut j = 0;
    for four in &mut fours {
        let [o0, o1, o2, o3] = four else { continue };
        if chunks == 0 {
            break;
        }
        let k0 = base.add(j * stride);
        let (mut a0, mut a1, mut a2, mut a3) = (0i32, 0i32, 0i32, 0i32);
        // VMLADAVA needs even-numbered accumulator registers.
        asm!(
            "dls lr, {n}",
            "2:",
            "vldrb.u8 q0, [{qp}], #16",
            "vldrb.u8 q1, [{k0}], #16",
            "vmladava.s8 r0, q0, q1",
            "vldrb.u8 q2, [{k1}], #16",
            "vmladava.s8 r2, q0, q2",
            "vldrb.u8 q1, [{k2}], #16",
            "vmladava.s8 r4, q0, q1",
            "vldrb.u8 q2, [{k3}], #16",
            "vmladava.s8 r8, q0, q2",
            "le lr, 2b",
            n = in(reg) chunks,
            qp = inout(reg) q.as_ptr() => _,
            k0 = inout(reg) k0 => _,
            k1 = inout(reg) k0.add(stride) => _,
            k2 = inout(reg) k0.add(2 * stride) => _,
            k3 = inout(reg) k0.add(3 * stride) => _,
            inout("r0") a0,
            inout("r2") a1,
            inout("r4") a2,
            inout("r8") a3,
            out("lr") _,
            out("d0") _,
            out("d1") _,
            out("d2") _,
            out("d3") _,
            out("d4") _,
            out("d5") _,
            options(nostack, readonly),
        );
        (*o0, *o1, *o2, *o3) = (a0, a1, a2, a3);
        j += 4;
    }
    if chunks > 0 {
        for o in fours.into_remainder() {
            let mut a = 0i32;
            asm!(
                "dls lr, {n}",
                "2:",
                "vldrb.u8 q0, [{qp}], #16",
                "vldrb.u8 q1, [{k}], #16",
                "vmladava.s8 r0, q0, q1",
                "le lr, 2b",
                n = in(reg) chunks,
                qp = inout(reg) q.as_ptr() => _,
                k = inout(reg) base.add(j * stride) => _,
                inout("r0") a,
                out("lr") _,
                out("d0") _,
                out("d1") _,
                out("d2") _,
                out("d3") _,
                options(nostack, readonly),
            );
            *o = a;
            j += 1;
        }
    }
    let q_tail = q.get(body..).unwrap_or(&[]);
    if !q_tail.is_empty() {
        for (j, o) in out.iter_mut().enumerate() {
            let tail = core::slice::from_raw_parts(base.add(j * stride + body), q_tail.len());
            *o = o.wrapping_add(scalar::dot_i8(q_tail, tail));
        }
    }
}

/// `acc[c] += Σ_j w[j] · v[j·stride + c]` (wrapping), as [`scalar::pv_i8`].
///
/// # Safety
/// Every value row is in bounds: `(w.len() - 1) · stride + acc.len() <= v.len()` when `w` is
/// not empty.
pub(super) unsafe fn pv_i8(w: &[i32], v: &[i8], stride: usize, acc: &mut [i32]) {
    let cols = acc.len();
    let body = cols & !15;
    if w.is_empty() {
        return;
    }
    let mut c = 0;
    while c < body {
        asm!(
            "vldrw.u32 q4, [{acc}]",
            "vldrw.u32 q5, [{acc}, #16]",
            "vldrw.u32 q6, [{acc}, #32]",
            "vldrw.u32 q7, [{acc}, #48]",
            "dls lr, {n}",
            "2:",
            "ldr {x}, [{wp}], #4",
            // Widening loads take a low base register: r1.
            "vldrb.s32 q0, [r1]",
            "vldrb.s32 q1, [r1, #4]",
            "vldrb.s32 q2, [r1, #8]",
            "vldrb.s32 q3, [r1, #12]",
            "add r1, {stride}",
            "vmla.i32 q4, q0, {x}",
            "vmla.i32 q5, q1, {x}",
            "vmla.i32 q6, q2, {x}",
            "vmla.i32 q7, q3, {x}",
            "le lr, 2b",
            "vstrw.32 q4, [{acc}]",
            "vstrw.32 q5, [{acc}, #16]",
            "vstrw.32 q6, [{acc}, #32]",
            "vstrw.32 q7, [{acc}, #48]",
            n = in(reg) w.len(),
            wp = inout(reg) w.as_ptr() => _,
            inout("r1") v.as_ptr().add(c) => _,
            stride = in(reg) stride,
            acc = in(reg) acc.as_mut_ptr().add(c),
            x = out(reg) _,
            out("lr") _,
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
        c += 16;
    }
    let tail = acc.chunks_exact_mut(16).into_remainder();
    if !tail.is_empty() {
        for (j, &wj) in w.iter().enumerate() {
            let row = core::slice::from_raw_parts(v.as_ptr().add(j * stride + body), tail.len());
            for (a, &x) in tail.iter_mut().zip(row) {
                *a = a.wrapping_add(wj.wrapping_mul(x as i32));
            }
        }
    }
}
