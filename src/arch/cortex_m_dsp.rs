//! Cortex-M DSP (Armv7E-M / Armv8-M Mainline DSP extension: M4, M7, M33) versions of the int8
//! primitives, in stable `asm!` (the `core::arch::arm` DSP intrinsics are nightly-only).
//!
//! - [`dot_i8_keys`]: the query is unpacked once into 16-bit pairs (`(q0, q2)`, `(q1, q3)` per
//!   word), then two keys at a time are read a word at a time, unpacked with `SXTB16` (and
//!   `SXTB16 …, ROR #8`) and accumulated with `SMLAD` (two 16×16 products per instruction):
//!   per 4 bytes of 2 keys, 1 `LDRD` of query pairs, 2 `LDR`, 4 `SXTB16`, 4 `SMLAD`.
//! - [`pv_i8`]: two value rows per pass over blocks of four accumulators (`LDM`/`STM`). With
//!   signed 16-bit weights (the SDPA's Q15 softmax weights) both weights sit in one register
//!   and the rows' bytes are interleaved into `(row0[c], row1[c])` halfword pairs (`PKHBT`,
//!   `PKHTB`, `SXTB16`), so one `SMLAD` does both rows of a column: per 4 bytes of 2 rows,
//!   2 `LDR`, 2 `PKH`, 4 `SXTB16`, 4 `SMLAD`. Wider weights (up to `2^23`) use
//!   `SMLAWB`/`SMLAWT` (32×16 → top 32 bits): with the weight pre-shifted by 8 and each value
//!   byte in the high byte of a halfword (`v·256`), `(w·2^8 · v·2^8) >> 16 = w·v` exactly;
//!   per 4 bytes of 2 rows, 2 `LDR`, 4 `AND`, 8 `SMLAW`.
//!
//! Both give exactly the bits of [`super::scalar`] (wrapping `i32` arithmetic). The caller
//! ([`super::int8`]) checks that every key / value row is in bounds.

use super::scalar;
use core::arch::asm;

/// Query bytes unpacked at a time: 64 words of 16-bit pairs (256 bytes of stack).
const Q_CHUNK: usize = 128;

/// Unpacks `q` (length a multiple of 4, at most [`Q_CHUNK`]) into `(q0, q2), (q1, q3)` 16-bit
/// pairs per word; returns the number of `u32`s written.
#[inline(always)]
fn unpack_query(q: &[i8], pairs: &mut [u32; Q_CHUNK / 2]) -> usize {
    let mut n = 0;
    for (word, out) in q.chunks_exact(4).zip(pairs.chunks_exact_mut(2)) {
        let half = |x: i8| x as i16 as u16 as u32;
        out[0] = half(word[0]) | half(word[2]) << 16;
        out[1] = half(word[1]) | half(word[3]) << 16;
        n += 2;
    }
    n
}

/// Dot products of the unpacked query `qp` (`words` words of query bytes) with two keys.
///
/// # Safety
/// `qp` holds `2 · words` `u32`s; `k0` and `k1` are readable for `4 · words` bytes.
#[inline(always)]
unsafe fn dot2(qp: *const u32, k0: *const i8, k1: *const i8, words: usize) -> (i32, i32) {
    let (mut acc0, mut acc1) = (0i32, 0i32);
    let (mut qp, mut k0, mut k1) = (qp, k0, k1);
    if words & 1 == 1 {
        asm!(
            "ldrd {qe}, {qo}, [{qp}], #8",
            "ldr {a}, [{k0}], #4",
            "ldr {b}, [{k1}], #4",
            "sxtb16 {t}, {a}",
            "smlad {acc0}, {qe}, {t}, {acc0}",
            "sxtb16 {a}, {a}, ror #8",
            "smlad {acc0}, {qo}, {a}, {acc0}",
            "sxtb16 {t}, {b}",
            "smlad {acc1}, {qe}, {t}, {acc1}",
            "sxtb16 {b}, {b}, ror #8",
            "smlad {acc1}, {qo}, {b}, {acc1}",
            qp = inout(reg) qp,
            k0 = inout(reg) k0,
            k1 = inout(reg) k1,
            acc0 = inout(reg) acc0,
            acc1 = inout(reg) acc1,
            qe = out(reg) _,
            qo = out(reg) _,
            a = out(reg) _,
            b = out(reg) _,
            t = out(reg) _,
            options(nostack, readonly),
        );
    }
    let pairs = words >> 1;
    if pairs > 0 {
        // Two words of both keys per iteration.
        asm!(
            "2:",
            "ldrd {qe}, {qo}, [{qp}], #8",
            "ldr {a}, [{k0}], #4",
            "ldr {b}, [{k1}], #4",
            "sxtb16 {t}, {a}",
            "smlad {acc0}, {qe}, {t}, {acc0}",
            "sxtb16 {a}, {a}, ror #8",
            "smlad {acc0}, {qo}, {a}, {acc0}",
            "sxtb16 {t}, {b}",
            "smlad {acc1}, {qe}, {t}, {acc1}",
            "sxtb16 {b}, {b}, ror #8",
            "smlad {acc1}, {qo}, {b}, {acc1}",
            "ldrd {qe}, {qo}, [{qp}], #8",
            "ldr {a}, [{k0}], #4",
            "ldr {b}, [{k1}], #4",
            "sxtb16 {t}, {a}",
            "smlad {acc0}, {qe}, {t}, {acc0}",
            "sxtb16 {a}, {a}, ror #8",
            "smlad {acc0}, {qo}, {a}, {acc0}",
            "sxtb16 {t}, {b}",
            "smlad {acc1}, {qe}, {t}, {acc1}",
            "sxtb16 {b}, {b}, ror #8",
            "smlad {acc1}, {qo}, {b}, {acc1}",
            "subs {n}, {n}, #1",
            "bne 2b",
            n = inout(reg) pairs => _,
            qp = inout(reg) qp => _,
            k0 = inout(reg) k0 => _,
            k1 = inout(reg) k1 => _,
            acc0 = inout(reg) acc0,
            acc1 = inout(reg) acc1,
            qe = out(reg) _,
            qo = out(reg) _,
            a = out(reg) _,
            b = out(reg) _,
            t = out(reg) _,
            options(nostack, readonly),
        );
    }
    (acc0, acc1)
}

/// Dot product of the unpacked query `qp` (`words` words) with one key.
///
/// # Safety
/// `qp` holds `2 · words` `u32`s; `k` is readable for `4 · words` bytes; `words >= 1`.
#[inline(always)]
unsafe fn dot1(qp: *const u32, k: *const i8, words: usize) -> i32 {
    let mut acc = 0i32;
    asm!(
        "2:",
        "ldrd {qe}, {qo}, [{qp}], #8",
        "ldr {a}, [{k}], #4",
        "sxtb16 {t}, {a}",
        "smlad {acc}, {qe}, {t}, {acc}",
        "sxtb16 {a}, {a}, ror #8",
        "smlad {acc}, {qo}, {a}, {acc}",
        "subs {n}, {n}, #1",
        "bne 2b",
        n = inout(reg) words => _,
        qp = inout(reg) qp => _,
        k = inout(reg) k => _,
        acc = inout(reg) acc,
        qe = out(reg) _,
        qo = out(reg) _,
        a = out(reg) _,
        t = out(reg) _,
        options(nostack, readonly),
    );
    acc
}

/// `out[j] = Σ_i q_i · keys[j·stride + i]` (wrapping), as [`scalar::dot_i8_keys`].
///
/// # Safety
/// Every key is in bounds: `(out.len() - 1) · stride + q.len() <= keys.len()` when `out` is
/// not empty.
pub(super) unsafe fn dot_i8_keys(q: &[i8], keys: &[i8], stride: usize, out: &mut [i32]) {
    if out.is_empty() {
        return;
    }
    out.fill(0);
    // Written with iterators and patterns rather than indexing, so no bounds-check panic
    // survives (targets/no-panic).
    let q_tail = q.chunks_exact(4).remainder();
    let body = q.len() - q_tail.len();
    let mut pairs = [0u32; Q_CHUNK / 2];
    for (chunk, q_chunk) in q.chunks(Q_CHUNK).enumerate() {
        let words = q_chunk.len() / 4;
        if words == 0 {
            break;
        }
        unpack_query(q_chunk, &mut pairs);
        let base = keys.as_ptr().add(chunk * Q_CHUNK);
        let mut outs = out.chunks_exact_mut(2);
        let mut j = 0;
        for two in &mut outs {
            if let [o0, o1] = two {
                let k0 = base.add(j * stride);
                let (s0, s1) = dot2(pairs.as_ptr(), k0, k0.add(stride), words);
                *o0 = o0.wrapping_add(s0);
                *o1 = o1.wrapping_add(s1);
            }
            j += 2;
        }
        if let [o] = outs.into_remainder() {
            *o = o.wrapping_add(dot1(pairs.as_ptr(), base.add(j * stride), words));
        }
    }
    if !q_tail.is_empty() {
        // The last 1 to 3 bytes.
        for (j, o) in out.iter_mut().enumerate() {
            let tail =
                core::slice::from_raw_parts(keys.as_ptr().add(j * stride + body), q_tail.len());
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
    let body = cols & !3;
    if w.is_empty() || body == 0 {
        scalar::pv_i8(w, v, stride, acc);
        return;
    }
    // Signed 16-bit weights (the SDPA's Q15 softmax weights): two rows per `SMLAD`.
    let narrow = w.iter().all(|&x| i16::try_from(x).is_ok());
    // `SMLAW` needs `w · 2^8` in an i32: |w| < 2^23.
    let in_range = w.iter().all(|&x| (-(1 << 23)..(1 << 23)).contains(&x));
    if !narrow && !in_range {
        scalar::pv_i8(w, v, stride, acc);
        return;
    }
    let mut rows = w.chunks_exact(2);
    let mut j = 0;
    for two in &mut rows {
        if let [w0, w1] = two {
            let row = v.as_ptr().add(j * stride);
            if narrow {
                let pair = (*w0 as u16 as u32) | (*w1 as u32) << 16;
                pv2_pair(pair, row, stride, acc.as_mut_ptr(), body / 4);
            } else {
                pv2(w0 << 8, w1 << 8, row, stride, acc.as_mut_ptr(), body / 4);
            }
        }
        j += 2;
    }
    if let [w0] = rows.remainder() {
        // One row left: a second weight of 0 adds nothing (and reads row j again).
        let row = v.as_ptr().add(j * stride);
        if narrow {
            pv2_pair(*w0 as u16 as u32, row, 0, acc.as_mut_ptr(), body / 4);
        } else {
            pv2(w0 << 8, 0, row, 0, acc.as_mut_ptr(), body / 4);
        }
    }
    let tail = acc.chunks_exact_mut(4).into_remainder();
    if !tail.is_empty() {
        for (j, &wj) in w.iter().enumerate() {
            let row = core::slice::from_raw_parts(v.as_ptr().add(j * stride + body), tail.len());
            for (a, &x) in tail.iter_mut().zip(row) {
                *a = a.wrapping_add(wj.wrapping_mul(x as i32));
            }
        }
    }
}

/// One block of four columns of `pv2_pair`: four bytes of both rows interleaved into
/// `(row0[c], row1[c])` halfword pairs, one `SMLAD` per column.
macro_rules! pv2_pair_block {
    () => {
        concat!(
            "ldm {acc}, {{r0, r1, r2, r3}}\n",
            "ldr {a}, [{row}, {stride}]\n",
            "ldr {b}, [{row}], #4\n",
            // Halfwords (row0 bytes 0-1, row1 bytes 0-1) and (row0 bytes 2-3, row1 bytes 2-3).
            "pkhbt {x}, {b}, {a}, lsl #16\n",
            "pkhtb {a}, {a}, {b}, asr #16\n",
            "sxtb16 {b}, {x}\n",
            "smlad r0, {w}, {b}, r0\n",
            "sxtb16 {x}, {x}, ror #8\n",
            "smlad r1, {w}, {x}, r1\n",
            "sxtb16 {b}, {a}\n",
            "smlad r2, {w}, {b}, r2\n",
            "sxtb16 {a}, {a}, ror #8\n",
            "smlad r3, {w}, {a}, r3\n",
            "stm {acc}!, {{r0, r1, r2, r3}}\n",
        )
    };
}

/// Adds `w0·row0 + w1·row1` (`pair = w0 | w1 << 16`, signed 16-bit weights;
/// `row1 = row0 + stride`) to `blocks` blocks of four `i32` accumulators: per block, two
/// `LDR`, two `PKH`, four `SXTB16`, four `SMLAD`; two blocks per iteration.
///
/// # Safety
/// `acc` holds `4 · blocks` `i32`s (4-byte aligned); both rows are readable for
/// `4 · blocks` bytes; `blocks >= 1`.
#[inline(always)]
unsafe fn pv2_pair(pair: u32, row0: *const i8, stride: usize, acc: *mut i32, blocks: usize) {
    let (mut acc, mut row) = (acc, row0);
    if blocks & 1 == 1 {
        asm!(
            pv2_pair_block!(),
            acc = inout(reg) acc,
            row = inout(reg) row,
            stride = in(reg) stride,
            w = in(reg) pair,
            a = out(reg) _,
            b = out(reg) _,
            x = out(reg) _,
            out("r0") _,
            out("r1") _,
            out("r2") _,
            out("r3") _,
            options(nostack),
        );
    }
    let pairs = blocks >> 1;
    if pairs > 0 {
        asm!(
            "2:",
            pv2_pair_block!(),
            pv2_pair_block!(),
            "subs {n}, {n}, #1",
            "bne 2b",
            n = inout(reg) pairs => _,
            acc = inout(reg) acc => _,
            row = inout(reg) row => _,
            stride = in(reg) stride,
            w = in(reg) pair,
            a = out(reg) _,
            b = out(reg) _,
            x = out(reg) _,
            out("r0") _,
            out("r1") _,
            out("r2") _,
            out("r3") _,
            options(nostack),
        );
    }
}

/// One block of four columns of `pv2`: both rows' four bytes into r0-r3.
macro_rules! pv2_block {
    () => {
        concat!(
            "ldm {acc}, {{r0, r1, r2, r3}}\n",
            "ldr {x}, [{row}, {stride}]\n",
            // Odd bytes: the high byte of each halfword is v·256.
            "and {t}, {x}, {mask}\n",
            "smlawb r1, {w1}, {t}, r1\n",
            "smlawt r3, {w1}, {t}, r3\n",
            // Even bytes moved up into the high byte of each halfword.
            "and {x}, {mask}, {x}, lsl #8\n",
            "smlawb r0, {w1}, {x}, r0\n",
            "smlawt r2, {w1}, {x}, r2\n",
            "ldr {x}, [{row}], #4\n",
            "and {t}, {x}, {mask}\n",
            "smlawb r1, {w0}, {t}, r1\n",
            "smlawt r3, {w0}, {t}, r3\n",
            "and {x}, {mask}, {x}, lsl #8\n",
            "smlawb r0, {w0}, {x}, r0\n",
            "smlawt r2, {w0}, {x}, r2\n",
            "stm {acc}!, {{r0, r1, r2, r3}}\n",
        )
    };
}

/// Adds `w0·row0 + w1·row1` (weights pre-shifted left by 8; `row1 = row0 + stride`) to
/// `blocks` blocks of four `i32` accumulators: per block and row, one `LDR`, two `AND`s that
/// put the bytes into the high byte of halfwords, four `SMLAW`s; two blocks per iteration.
///
/// # Safety
/// `acc` holds `4 · blocks` `i32`s (4-byte aligned); both rows are readable for
/// `4 · blocks` bytes; `blocks >= 1`.
#[inline(always)]
unsafe fn pv2(w0: i32, w1: i32, row0: *const i8, stride: usize, acc: *mut i32, blocks: usize) {
    let (mut acc, mut row) = (acc, row0);
    let mask = 0xff00_ff00u32;
    // Accumulators in r0-r3: LDM/STM need an ascending register list.
    if blocks & 1 == 1 {
        asm!(
            pv2_block!(),
            acc = inout(reg) acc,
            row = inout(reg) row,
            stride = in(reg) stride,
            w0 = in(reg) w0,
            w1 = in(reg) w1,
            mask = in(reg) mask,
            x = out(reg) _,
            t = out(reg) _,
            out("r0") _,
            out("r1") _,
            out("r2") _,
            out("r3") _,
            options(nostack),
        );
    }
    let pairs = blocks >> 1;
    if pairs > 0 {
        asm!(
            "2:",
            pv2_block!(),
            pv2_block!(),
            "subs {n}, {n}, #1",
            "bne 2b",
            n = inout(reg) pairs => _,
            acc = inout(reg) acc => _,
            row = inout(reg) row => _,
            stride = in(reg) stride,
            w0 = in(reg) w0,
            w1 = in(reg) w1,
            mask = in(reg) mask,
            x = out(reg) _,
            t = out(reg) _,
            out("r0") _,
            out("r1") _,
            out("r2") _,
            out("r3") _,
            options(nostack),
        );
    }
}
