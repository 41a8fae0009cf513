//! Cortex-M DSP (Armv7E-M / Armv8-M Mainline DSP extension: M4, M7, M33) versions of the int8
//! primitives, in stable `asm!` (the `core::arch::arm` DSP intrinsics are nightly-only).
//!
//! - [`dot_i8_keys`]: the query is unpacked once per call (per 128 bytes) into 16-bit pairs
//!   (`(q0, q2)`, `(q1, q3)` per word, `SXTB16` and `SXTB16 …, ROR #8`), then three keys at a
//!   time are read a word at a time, unpacked the same way and accumulated with `SMLAD` (two
//!   16×16 products per instruction): per 4 bytes of 3 keys, 1 `LDRD` of query pairs, 3 `LDR`,
//!   6 `SXTB16`, 6 `SMLAD` (about 1.4 instructions per MAC with the loop; 1.67 with the call,
//!   the unpacking and the key loop at d = 64).
//! - [`pv_i8`]: two value rows per pass over blocks of four accumulators (`LDM`/`STM`), the
//!   version chosen per row pair from its two weights. With signed 16-bit weights (the SDPA's
//!   Q15 softmax weights) both weights sit in one register and the rows' bytes are
//!   interleaved into `(row0[c], row1[c])` halfword pairs (`PKHBT`, `PKHTB`, `SXTB16`), so one
//!   `SMLAD` does both rows of a column: per 4 bytes of 2 rows, 2 `LDR`, 2 `PKH`, 4 `SXTB16`,
//!   4 `SMLAD` (1.875 instructions per MAC with `LDM`/`STM` and the loop; 2.14 with the call
//!   and the row-pair loop at dv = 64). Wider weights (up to `2^23`) use `SMLAWB`/`SMLAWT`
//!   (32×16 → top 32 bits): with the weight pre-shifted by 8 and each value byte in the high
//!   byte of a halfword (`v·256`), `(w·2^8 · v·2^8) >> 16 = w·v` exactly;
//!   per 4 bytes of 2 rows, 2 `LDR`, 4 `AND`, 8 `SMLAW`.
//!
//! - [`dot_i8_packed`], [`pv_i8_packed`]: the same on keys and values packed into 16-bit
//!   pairs once per call or cache row (`super::int8_packed`): `LDRD`/`LDM` of ready pairs and
//!   `SMLAD`, no unpacking (0.69 instructions per MAC each at d = dv = 64, unrolled).
//! - [`dot_weights_q15`]: the int8 SDPA's Q15 softmax weights; [`normalize_row`]: its row
//!   normalization (`SMULL`, a 64-bit rounding add, `SSAT`).
//!
//! All give exactly the bits of [`super::scalar`] (wrapping `i32` arithmetic) and of the
//! kernel's scalar loops. The callers ([`super::int8`], `super::int8_packed`) check that every
//! key / value row is in bounds.

use super::scalar;
use core::arch::asm;

/// Query bytes unpacked at a time: 64 words of 16-bit pairs (256 bytes of stack).
const Q_CHUNK: usize = 128;

/// Unpacks `words` words of query bytes at `q` into `(q0, q2), (q1, q3)` 16-bit pairs per
/// word (`SXTB16`, `SXTB16 …, ROR #8`) at `pairs`.
///
/// # Safety
/// `q` is readable for `4 · words` bytes (any alignment: `LDR` allows unaligned access on
/// these cores), `pairs` writable for `2 · words` `u32`s (4-byte aligned); `words >= 1`.
#[inline(always)]
unsafe fn unpack_query(q: *const i8, pairs: *mut u32, words: usize) {
    asm!(
        "2:",
        "ldr {a}, [{q}], #4",
        "sxtb16 {e}, {a}",
        "sxtb16 {a}, {a}, ror #8",
        "strd {e}, {a}, [{p}], #8",
        "subs {n}, {n}, #1",
        "bne 2b",
        n = inout(reg) words => _,
        q = inout(reg) q => _,
        p = inout(reg) pairs => _,
        a = out(reg) _,
        e = out(reg) _,
        options(nostack),
    );
}

/// One word (4 bytes) of two keys against one word of the unpacked query.
macro_rules! dot2_word {
    () => {
        concat!(
            "ldrd {qe}, {qo}, [{qp}], #8\n",
            "ldr {a}, [{k0}], #4\n",
            "ldr {b}, [{k1}], #4\n",
            "sxtb16 {t}, {a}\n",
            "smlad {acc0}, {qe}, {t}, {acc0}\n",
            "sxtb16 {a}, {a}, ror #8\n",
            "smlad {acc0}, {qo}, {a}, {acc0}\n",
            "sxtb16 {t}, {b}\n",
            "smlad {acc1}, {qe}, {t}, {acc1}\n",
            "sxtb16 {b}, {b}, ror #8\n",
            "smlad {acc1}, {qo}, {b}, {acc1}\n",
        )
    };
}

/// Dot products of the unpacked query `qp` (`words` words of query bytes) with two keys:
/// `words % 4` single words first, then four words per iteration.
///
/// # Safety
/// `qp` holds `2 · words` `u32`s; `k0` and `k1` are readable for `4 · words` bytes;
/// `words >= 1`.
#[inline(always)]
unsafe fn dot2(qp: *const u32, k0: *const i8, k1: *const i8, words: usize) -> (i32, i32) {
    let (mut acc0, mut acc1) = (0i32, 0i32);
    asm!(
        "ands {r}, {n}, #3",
        "beq 3f",
        "2:",
        dot2_word!(),
        "subs {r}, {r}, #1",
        "bne 2b",
        "3:",
        "lsrs {n}, {n}, #2",
        "beq 5f",
        "4:",
        dot2_word!(),
        dot2_word!(),
        dot2_word!(),
        dot2_word!(),
        "subs {n}, {n}, #1",
        "bne 4b",
        "5:",
        n = inout(reg) words => _,
        r = out(reg) _,
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
    (acc0, acc1)
}

/// One word (4 bytes) of three keys against one word of the unpacked query.
macro_rules! dot3_word {
    () => {
        concat!(
            "ldrd {qe}, {qo}, [{qp}], #8\n",
            "ldr {a}, [{k0}], #4\n",
            "sxtb16 {t}, {a}\n",
            "smlad {acc0}, {qe}, {t}, {acc0}\n",
            "sxtb16 {a}, {a}, ror #8\n",
            "smlad {acc0}, {qo}, {a}, {acc0}\n",
            "ldr {a}, [{k1}], #4\n",
            "sxtb16 {t}, {a}\n",
            "smlad {acc1}, {qe}, {t}, {acc1}\n",
            "sxtb16 {a}, {a}, ror #8\n",
            "smlad {acc1}, {qo}, {a}, {acc1}\n",
            "ldr {a}, [{k2}], #4\n",
            "sxtb16 {t}, {a}\n",
            "smlad {acc2}, {qe}, {t}, {acc2}\n",
            "sxtb16 {a}, {a}, ror #8\n",
            "smlad {acc2}, {qo}, {a}, {acc2}\n",
        )
    };
}

/// Dot products of the unpacked query `qp` (`words` words of query bytes) with three keys
/// `stride` bytes apart: an odd word first, then two words per iteration (per word and
/// three keys: one `LDRD`, three `LDR`, six `SXTB16`, six `SMLAD`).
///
/// # Safety
/// `qp` holds `2 · words` `u32`s; the keys at `k0`, `k0 + stride`, `k0 + 2 · stride` are
/// readable for `4 · words` bytes; `words >= 1`.
#[inline(always)]
unsafe fn dot3(qp: *const u32, k0: *const i8, stride: usize, words: usize) -> [i32; 3] {
    let (mut acc0, mut acc1, mut acc2) = (0i32, 0i32, 0i32);
    let (mut qp, mut k0, mut k1, mut k2) = (qp, k0, k0.add(stride), k0.add(2 * stride));
    if words & 1 == 1 {
        asm!(
            dot3_word!(),
            qp = inout(reg) qp,
            k0 = inout(reg) k0,
            k1 = inout(reg) k1,
            k2 = inout(reg) k2,
            acc0 = inout(reg) acc0,
            acc1 = inout(reg) acc1,
            acc2 = inout(reg) acc2,
            qe = out(reg) _,
            qo = out(reg) _,
            a = out(reg) _,
            t = out(reg) _,
            options(nostack, readonly),
        );
    }
    let pairs = words >> 1;
    if pairs > 0 {
        asm!(
            "2:",
            dot3_word!(),
            dot3_word!(),
            "subs {n}, {n}, #1",
            "bne 2b",
            n = inout(reg) pairs => _,
            qp = inout(reg) qp => _,
            k0 = inout(reg) k0 => _,
            k1 = inout(reg) k1 => _,
            k2 = inout(reg) k2 => _,
            acc0 = inout(reg) acc0,
            acc1 = inout(reg) acc1,
            acc2 = inout(reg) acc2,
            qe = out(reg) _,
            qo = out(reg) _,
            a = out(reg) _,
            t = out(reg) _,
            options(nostack, readonly),
        );
    }
    [acc0, acc1, acc2]
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
/// The query is unpacked [`Q_CHUNK`] bytes at a time (once per call for `d <= Q_CHUNK`),
/// then every key pair of the chunk runs through [`dot2`]; the last 1 to 3 bytes of `q`
/// (when `q.len() % 4 != 0`) are added by [`scalar::dot_i8`].
///
/// # Safety
/// Every key is in bounds: `(out.len() - 1) · stride + q.len() <= keys.len()` when `out` is
/// not empty.
pub(super) unsafe fn dot_i8_keys(q: &[i8], keys: &[i8], stride: usize, out: &mut [i32]) {
    if out.is_empty() {
        return;
    }
    // Written with iterators and patterns rather than indexing, so no bounds-check panic
    // survives (targets/no-panic).
    let q_tail = q.chunks_exact(4).remainder();
    let body = q.len() - q_tail.len();
    // Only the words unpacked for the chunk are read.
    let mut pairs = core::mem::MaybeUninit::<[u32; Q_CHUNK / 2]>::uninit();
    let mut first = true;
    for (chunk, q_chunk) in q.chunks(Q_CHUNK).enumerate() {
        let words = q_chunk.len() / 4;
        if words == 0 {
            break;
        }
        unpack_query(q_chunk.as_ptr(), pairs.as_mut_ptr().cast(), words);
        let qp = pairs.as_ptr().cast::<u32>();
        let mut k = keys.as_ptr().add(chunk * Q_CHUNK);
        let mut outs = out.chunks_exact_mut(3);
        for three in &mut outs {
            if let [o0, o1, o2] = three {
                let [s0, s1, s2] = dot3(qp, k, stride, words);
                if first {
                    // The first chunk writes, later ones add.
                    (*o0, *o1, *o2) = (s0, s1, s2);
                } else {
                    *o0 = o0.wrapping_add(s0);
                    *o1 = o1.wrapping_add(s1);
                    *o2 = o2.wrapping_add(s2);
                }
            }
            // Past the last key this pointer is never read (wrapping: it may leave `keys`).
            k = k.wrapping_add(3 * stride);
        }
        match outs.into_remainder() {
            [o0, o1] => {
                let (s0, s1) = dot2(qp, k, k.add(stride), words);
                if first {
                    (*o0, *o1) = (s0, s1);
                } else {
                    *o0 = o0.wrapping_add(s0);
                    *o1 = o1.wrapping_add(s1);
                }
            }
            [o] => {
                let s = dot1(qp, k, words);
                *o = if first { s } else { o.wrapping_add(s) };
            }
            _ => {}
        }
        first = false;
    }
    if first {
        out.fill(0);
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
/// Rows go two at a time; each pair takes [`pv2_pair`] when both weights are signed 16-bit
/// values (always for the SDPA's Q15 softmax weights), [`pv2`] when both are below `2^23`
/// in magnitude, [`scalar::pv_i8`] otherwise. The last `acc.len() % 4` columns are scalar.
///
/// # Safety
/// Every value row is in bounds: `(w.len() - 1) · stride + acc.len() <= v.len()` when `w` is
/// not empty.
pub(super) unsafe fn pv_i8(w: &[i32], v: &[i8], stride: usize, acc: &mut [i32]) {
    let cols = acc.len();
    let blocks = cols / 4;
    if w.is_empty() || blocks == 0 {
        scalar::pv_i8(w, v, stride, acc);
        return;
    }
    let body = blocks * 4;
    let mut row = v.as_ptr();
    let mut rows = w.chunks_exact(2);
    for two in &mut rows {
        if let [w0, w1] = *two {
            pv_row_pair(w0, w1, row, stride, acc, blocks);
        }
        // Past the last pair this pointer is never read (wrapping: it may leave `v`).
        row = row.wrapping_add(2 * stride);
    }
    if let [w0] = *rows.remainder() {
        // One row left: a second weight of 0 adds nothing (and reads the same row again).
        pv_row_pair(w0, 0, row, 0, acc, blocks);
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

/// Adds `w0·row0 + w1·row1` (`row1 = row0 + stride`) to the first `4 · blocks` accumulators
/// with the fastest version the two weights allow.
///
/// # Safety
/// Both rows are readable for `4 · blocks` bytes; `acc.len() >= 4 · blocks`; `blocks >= 1`.
#[inline(always)]
unsafe fn pv_row_pair(
    w0: i32,
    w1: i32,
    row: *const i8,
    stride: usize,
    acc: &mut [i32],
    blocks: usize,
) {
    let body = 4 * blocks;
    match (i16::try_from(w0), i16::try_from(w1)) {
        (Ok(a), Ok(b)) => {
            let pair = (a as u16 as u32) | (b as u16 as u32) << 16;
            pv2_pair(pair, row, stride, acc.as_mut_ptr(), blocks);
        }
        _ if fits_smlaw(w0) && fits_smlaw(w1) => {
            pv2(w0 << 8, w1 << 8, row, stride, acc.as_mut_ptr(), blocks);
        }
        _ => {
            let rows = core::slice::from_raw_parts(row, stride + body);
            let acc = acc.get_mut(..body).unwrap_or_default();
            scalar::pv_i8(&[w0, w1], rows, stride, acc);
        }
    }
}

/// `SMLAW` needs `w · 2^8` in an i32: `|w| < 2^23`.
#[inline(always)]
fn fits_smlaw(w: i32) -> bool {
    (-(1 << 23)..(1 << 23)).contains(&w)
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

/// One 4-byte block of four packed keys against one word pair of the unpacked query: one
/// `LDRD` of the query, one per key, two `SMLAD` per key.
macro_rules! dot4_packed_block {
    () => {
        concat!(
            "ldrd {qe}, {qo}, [{qp}], #8\n",
            "ldrd {a}, {b}, [{kp}], #8\n",
            "smlad {acc0}, {qe}, {a}, {acc0}\n",
            "smlad {acc0}, {qo}, {b}, {acc0}\n",
            "ldrd {a}, {b}, [{kp}], #8\n",
            "smlad {acc1}, {qe}, {a}, {acc1}\n",
            "smlad {acc1}, {qo}, {b}, {acc1}\n",
            "ldrd {a}, {b}, [{kp}], #8\n",
            "smlad {acc2}, {qe}, {a}, {acc2}\n",
            "smlad {acc2}, {qo}, {b}, {acc2}\n",
            "ldrd {a}, {b}, [{kp}], #8\n",
            "smlad {acc3}, {qe}, {a}, {acc3}\n",
            "smlad {acc3}, {qo}, {b}, {acc3}\n",
        )
    };
}

/// Dot products of the unpacked query `qp` (`blocks` 4-byte blocks) with the four keys of a
/// packed group starting at block `kp`: an odd block first, then two per iteration.
///
/// # Safety
/// `qp` holds `2 · blocks` `u32`s, `kp` `8 · blocks`; `blocks >= 1`.
#[inline(always)]
unsafe fn dot4_packed(qp: *const u32, kp: *const u32, blocks: usize) -> [i32; 4] {
    let (mut acc0, mut acc1, mut acc2, mut acc3) = (0i32, 0i32, 0i32, 0i32);
    let (mut qp, mut kp) = (qp, kp);
    if blocks & 1 == 1 {
        asm!(
            dot4_packed_block!(),
            qp = inout(reg) qp,
            kp = inout(reg) kp,
            acc0 = inout(reg) acc0,
            acc1 = inout(reg) acc1,
            acc2 = inout(reg) acc2,
            acc3 = inout(reg) acc3,
            qe = out(reg) _,
            qo = out(reg) _,
            a = out(reg) _,
            b = out(reg) _,
            options(nostack, readonly),
        );
    }
    let pairs = blocks >> 1;
    if pairs > 0 {
        asm!(
            "2:",
            dot4_packed_block!(),
            dot4_packed_block!(),
            "subs {n}, {n}, #1",
            "bne 2b",
            n = inout(reg) pairs => _,
            qp = inout(reg) qp => _,
            kp = inout(reg) kp => _,
            acc0 = inout(reg) acc0,
            acc1 = inout(reg) acc1,
            acc2 = inout(reg) acc2,
            acc3 = inout(reg) acc3,
            qe = out(reg) _,
            qo = out(reg) _,
            a = out(reg) _,
            b = out(reg) _,
            options(nostack, readonly),
        );
    }
    [acc0, acc1, acc2, acc3]
}

/// One 4-byte block of the unrolled group loops ([`dot4_packed_groups`]): the query's word
/// pair at byte offset `$off` of `qp`, the four keys' pairs by two `LDM`s into r4, r5, r8,
/// r10 and the sums in r0-r3 (`LDM`/`STM` need ascending lists): 11 instructions per 16
/// MACs. The first block multiplies without accumulating (`SMUAD`), so nothing is cleared.
macro_rules! dot4_r0_block {
    ($off:literal, first) => {
        concat!(
            "ldrd {qe}, {qo}, [{qp}, #",
            $off,
            "]\n",
            "ldm {kp}!, {{r4, r5, r8, r10}}\n",
            "smuad r0, {qe}, r4\n",
            "smlad r0, {qo}, r5, r0\n",
            "smuad r1, {qe}, r8\n",
            "smlad r1, {qo}, r10, r1\n",
            "ldm {kp}!, {{r4, r5, r8, r10}}\n",
            "smuad r2, {qe}, r4\n",
            "smlad r2, {qo}, r5, r2\n",
            "smuad r3, {qe}, r8\n",
            "smlad r3, {qo}, r10, r3\n",
        )
    };
    ($off:literal) => {
        concat!(
            "ldrd {qe}, {qo}, [{qp}, #",
            $off,
            "]\n",
            "ldm {kp}!, {{r4, r5, r8, r10}}\n",
            "smlad r0, {qe}, r4, r0\n",
            "smlad r0, {qo}, r5, r0\n",
            "smlad r1, {qe}, r8, r1\n",
            "smlad r1, {qo}, r10, r1\n",
            "ldm {kp}!, {{r4, r5, r8, r10}}\n",
            "smlad r2, {qe}, r4, r2\n",
            "smlad r2, {qo}, r5, r2\n",
            "smlad r3, {qe}, r8, r3\n",
            "smlad r3, {qo}, r10, r3\n",
        )
    };
}

/// Defines `$name(qp, kp, out, groups)`: [`dot4_packed`] for `d = 4 · (1 + offsets)` over
/// `groups` whole groups in one `asm!` loop, unrolled over the blocks, the four sums stored
/// with one `STM`. Every register is taken, so the output pointer and the group count live
/// in words 32 and 33 of the query-pairs buffer (`qp`; `d <= 64` uses at most words 0-31).
macro_rules! dot4_packed_groups {
    ($name:ident, $($off:literal),+) => {
        /// See [`dot4_packed_groups`].
        ///
        /// # Safety
        /// `qp` holds 34 `u32`s (the query pairs first), `kp` `2 · d · groups`, `out`
        /// `4 · groups` `i32`s; `groups >= 1`.
        #[inline(always)]
        unsafe fn $name(qp: *mut u32, kp: *const u32, out: *mut i32, groups: usize) {
            qp.add(32).write(out as u32);
            qp.add(33).write(groups as u32);
            asm!(
                "2:",
                dot4_r0_block!("0", first),
                $(dot4_r0_block!($off),)+
                "ldr {qe}, [{qp}, #128]",
                "stm {qe}!, {{r0, r1, r2, r3}}",
                "str {qe}, [{qp}, #128]",
                "ldr {qe}, [{qp}, #132]",
                "subs {qe}, {qe}, #1",
                "str {qe}, [{qp}, #132]",
                "bne 2b",
                qp = in(reg) qp,
                kp = inout(reg) kp => _,
                qe = out(reg) _,
                qo = out(reg) _,
                out("r0") _,
                out("r1") _,
                out("r2") _,
                out("r3") _,
                out("r4") _,
                out("r5") _,
                out("r8") _,
                out("r10") _,
                options(nostack),
            );
        }
    };
}

dot4_packed_groups!(
    dot4_packed_64_groups,
    "8",
    "16",
    "24",
    "32",
    "40",
    "48",
    "56",
    "64",
    "72",
    "80",
    "88",
    "96",
    "104",
    "112",
    "120"
);
dot4_packed_groups!(
    dot4_packed_32_groups,
    "8",
    "16",
    "24",
    "32",
    "40",
    "48",
    "56"
);

/// `out[j]` = the query's dot product with key `j` of `groups`, packed groups of four keys
/// (`super::int8_packed`): the query is unpacked [`Q_CHUNK`] bytes at a time, then each
/// group runs through [`dot4_packed`].
///
/// # Safety
/// `q.len()` is a non-zero multiple of 4; `groups` holds `out.len().div_ceil(4)` groups of
/// `2 · q.len()` words.
pub(super) unsafe fn dot_i8_packed(q: &[i8], groups: &[u32], out: &mut [i32]) {
    let group_words = 2 * q.len();
    // Only the words unpacked for the chunk are read.
    let mut pairs = core::mem::MaybeUninit::<[u32; Q_CHUNK / 2]>::uninit();
    for (chunk, q_chunk) in q.chunks(Q_CHUNK).enumerate() {
        let blocks = q_chunk.len() / 4;
        unpack_query(q_chunk.as_ptr(), pairs.as_mut_ptr().cast(), blocks);
        let qp = pairs.as_ptr().cast::<u32>();
        // The chunk's first block within each group (eight words per block).
        let offset = chunk * (Q_CHUNK / 4) * 8;
        // d = 64 and 32: whole groups in one unrolled loop, a partial last group on its own.
        if q.len() == 64 || q.len() == 32 {
            let whole = out.len() / 4;
            if whole > 0 {
                let qp = pairs.as_mut_ptr().cast::<u32>();
                let (kp, op) = (groups.as_ptr(), out.as_mut_ptr());
                if q.len() == 64 {
                    dot4_packed_64_groups(qp, kp, op, whole);
                } else {
                    dot4_packed_32_groups(qp, kp, op, whole);
                }
            }
            let rest = out.chunks_exact_mut(4).into_remainder();
            if let Some(group) = groups.chunks_exact(group_words).nth(whole) {
                for (o, s) in rest.iter_mut().zip(dot4_packed(qp, group.as_ptr(), blocks)) {
                    *o = s;
                }
            }
            return;
        }
        for (four, group) in out.chunks_mut(4).zip(groups.chunks_exact(group_words)) {
            let sums = dot4_packed(qp, group.as_ptr().add(offset), blocks);
            for (o, s) in four.iter_mut().zip(sums) {
                // The first chunk writes, later ones add.
                *o = if chunk == 0 { s } else { o.wrapping_add(s) };
            }
        }
    }
}

/// One key pair of [`pv_i8_packed`]: the pair's two weights in one word, the four columns'
/// value pairs in r4, r5, r8, r10 (`LDM` needs an ascending list), one `SMLAD` per column.
macro_rules! pv_packed_pair {
    () => {
        concat!(
            "ldr {w}, [{wp}], #4\n",
            "ldm {v}!, {{r4, r5, r8, r10}}\n",
            "smlad r0, {w}, r4, r0\n",
            "smlad r1, {w}, r5, r1\n",
            "smlad r2, {w}, r8, r2\n",
            "smlad r3, {w}, r10, r3\n",
        )
    };
}

/// Two key pairs of [`pv_i8_packed_32`]: their weight words into r11, r12 by one `LDM`.
macro_rules! pv_packed_two_pairs {
    () => {
        concat!(
            "ldm {wp}!, {{r11, r12}}\n",
            "ldm {v}!, {{r4, r5, r8, r10}}\n",
            "smlad r0, r11, r4, r0\n",
            "smlad r1, r11, r5, r1\n",
            "smlad r2, r11, r8, r2\n",
            "smlad r3, r11, r10, r3\n",
            "ldm {v}!, {{r4, r5, r8, r10}}\n",
            "smlad r0, r12, r4, r0\n",
            "smlad r1, r12, r5, r1\n",
            "smlad r2, r12, r8, r2\n",
            "smlad r3, r12, r10, r3\n",
        )
    };
}

/// [`pv_i8_packed`] for a whole tile of 32 key pairs, unrolled (no loop counter, so the
/// weights of two pairs come in by one `LDM`): 11 instructions per 16 MACs.
///
/// # Safety
/// `wp` holds 32 `u32`s, `v` 128; `acc` has 4 elements.
#[inline(always)]
unsafe fn pv_i8_packed_32(wp: *const u32, v: *const u32, acc: &mut [i32; 4]) {
    let [a0, a1, a2, a3] = acc;
    asm!(
        pv_packed_two_pairs!(),
        pv_packed_two_pairs!(),
        pv_packed_two_pairs!(),
        pv_packed_two_pairs!(),
        pv_packed_two_pairs!(),
        pv_packed_two_pairs!(),
        pv_packed_two_pairs!(),
        pv_packed_two_pairs!(),
        pv_packed_two_pairs!(),
        pv_packed_two_pairs!(),
        pv_packed_two_pairs!(),
        pv_packed_two_pairs!(),
        pv_packed_two_pairs!(),
        pv_packed_two_pairs!(),
        pv_packed_two_pairs!(),
        pv_packed_two_pairs!(),
        wp = inout(reg) wp => _,
        v = inout(reg) v => _,
        inout("r0") *a0,
        inout("r1") *a1,
        inout("r2") *a2,
        inout("r3") *a3,
        out("r4") _,
        out("r5") _,
        out("r8") _,
        out("r10") _,
        out("r11") _,
        out("r12") _,
        options(nostack, readonly),
    );
}

/// `acc[c] += Σ_p SMLAD(weight_pairs[p], rows[4p + c])` for the four columns of a block of
/// packed value pairs (`super::int8_packed`), the accumulators in r0-r3 throughout: per key
/// pair one `LDR`, one `LDM`, four `SMLAD`; `len % 4` single pairs, then four per iteration.
///
/// # Safety
/// `rows` holds `4 · weight_pairs.len()` words.
pub(super) unsafe fn pv_i8_packed(weight_pairs: &[u32], rows: &[u32], acc: &mut [i32]) {
    if let (32, Ok(acc)) = (weight_pairs.len(), <&mut [i32; 4]>::try_from(&mut *acc)) {
        pv_i8_packed_32(weight_pairs.as_ptr(), rows.as_ptr(), acc);
        return;
    }
    let [a0, a1, a2, a3] = acc else {
        return;
    };
    let (mut wp, mut v) = (weight_pairs.as_ptr(), rows.as_ptr());
    let singles = weight_pairs.len() & 3;
    if singles > 0 {
        asm!(
            "2:",
            pv_packed_pair!(),
            "subs {n}, {n}, #1",
            "bne 2b",
            n = inout(reg) singles => _,
            wp = inout(reg) wp,
            v = inout(reg) v,
            w = out(reg) _,
            inout("r0") *a0,
            inout("r1") *a1,
            inout("r2") *a2,
            inout("r3") *a3,
            out("r4") _,
            out("r5") _,
            out("r8") _,
            out("r10") _,
            options(nostack, readonly),
        );
    }
    let fours = weight_pairs.len() >> 2;
    if fours > 0 {
        asm!(
            "2:",
            pv_packed_pair!(),
            pv_packed_pair!(),
            pv_packed_pair!(),
            pv_packed_pair!(),
            "subs {n}, {n}, #1",
            "bne 2b",
            n = inout(reg) fours => _,
            wp = inout(reg) wp => _,
            v = inout(reg) v => _,
            w = out(reg) _,
            inout("r0") *a0,
            inout("r1") *a1,
            inout("r2") *a2,
            inout("r3") *a3,
            out("r4") _,
            out("r5") _,
            out("r8") _,
            out("r10") _,
            options(nostack, readonly),
        );
    }
}

/// [`super::dot_weights_q15`] in two passes, so that each loop keeps its constants in
/// registers: the Q20 logit differences `t` (Rust), then their Q15 weights in `asm!`
/// (about 27 instructions per key: the compiler's single loop rebuilt its constants with
/// `MOVW`/`MOVT` for every key). Same bits as [`scalar::dot_weights_q15`].
pub(super) fn dot_weights_q15(
    w: &mut [i32],
    max: i32,
    lo: u32,
    hi: u32,
    cutoff: u32,
    exp2: &super::Exp2Q15<'_>,
) -> u32 {
    for x in w.iter_mut() {
        let d = max.abs_diff(*x);
        let t = if d >= cutoff {
            super::int8::WEIGHT_ZERO_T
        } else {
            ((d as u64 * lo as u64) >> 32) as u32 + d.wrapping_mul(hi)
        };
        *x = t as i32;
    }
    if w.is_empty() {
        return 0;
    }
    let mut sum = 0u32;
    // SAFETY: reads and writes `w.len() >= 1` words of `w`; `table` has 64 entries and the
    // index is 6 bits.
    unsafe {
        asm!(
            "2:",
            "ldr {t}, [{p}]",
            // t >= 17·2^20: weight 0.
            "cmp {t}, #0x1100000",
            "bhs 5f",
            // u = hi(r·2^11 · ln2), u3 = hi(r·2^12 · ln2/3) for the low 14 bits r of t.
            "ubfx {a}, {t}, #0, #14",
            "lsls {x}, {a}, #11",
            "umull {x}, {u}, {x}, {ln2}",
            "lsls {a}, {a}, #12",
            "umull {x}, {u3}, {a}, {ln2_3}",
            // 1 - u + u²/2 - u³/6 in Q31: hi(u·u) = u²/2 in Q31, hi(that · u/3).
            "umull {x}, {a}, {u}, {u}",
            "umull {x}, {u3}, {a}, {u3}",
            "rsb {u}, {u}, #0x80000000",
            "add {u}, {u}, {a}",
            "sub {u}, {u}, {u3}",
            // · 2^(-k/64) from the table (Q30), then 2^-n with rounding, to Q15.
            "ubfx {a}, {t}, #14, #6",
            "ldr {a}, [{table}, {a}, lsl #2]",
            "umull {x}, {a}, {a}, {u}",
            "lsrs {u}, {t}, #20",
            "mov {u3}, #0x4000",
            "lsls {u3}, {u3}, {u}",
            "add {a}, {a}, {u3}",
            "adds {u}, {u}, #15",
            "lsrs {a}, {a}, {u}",
            "usat {a}, #15, {a}",
            "4:",
            "add {sum}, {sum}, {a}",
            "str {a}, [{p}], #4",
            "subs {n}, {n}, #1",
            "bne 2b",
            "b 6f",
            "5:",
            "movs {a}, #0",
            "b 4b",
            "6:",
            p = inout(reg) w.as_mut_ptr() => _,
            n = inout(reg) w.len() => _,
            sum = inout(reg) sum,
            table = in(reg) exp2.table.as_ptr(),
            ln2 = in(reg) exp2.ln2_q32,
            ln2_3 = in(reg) exp2.ln2_third_q32,
            t = out(reg) _,
            a = out(reg) _,
            x = out(reg) _,
            u = out(reg) _,
            u3 = out(reg) _,
            options(nostack),
        );
    }
    sum
}

/// The DSP body of the fast path of the int8 SDPA's row normalization
/// (`attention::int8::sdpa`): per column `saturate_i8(((x·mr + 2^(n-1) - [x·mr < 0]) >> n)`
/// with `x = acc[c] · 2^up`, which must fit an `i32` (checked per column: `false` is
/// returned at the first column where it does not, and the caller's general path
/// redoes the row). One `SMULL`, a 64-bit rounding add, `SSAT`: 16 instructions a column.
/// Needs `0 <= up <= 31` and `33 <= n <= 62`; `false` otherwise.
pub(super) fn normalize_row(acc: &[i64], up: u32, mr: i32, n: u32, out: &mut [i8]) -> bool {
    let len = acc.len().min(out.len());
    if len == 0 || up > 31 || !(33..=62).contains(&n) {
        return false;
    }
    let (n_hi, half_hi) = (n - 32, 1u32 << (n - 33));
    let ok: u32;
    // SAFETY: reads `len` `i64`s of `acc` and writes `len` bytes of `out` (both hold that
    // many); `LDRD` needs the 4-byte alignment `i64` has.
    unsafe {
        asm!(
            "2:",
            "ldrd {lo}, {hi}, [{acc}], #8",
            // acc[c] fits an i32, and so does x = acc[c] << up.
            "cmp {hi}, {lo}, asr #31",
            "bne 8f",
            "lsl {x}, {lo}, {up}",
            "asr {hi}, {x}, {up}",
            "cmp {hi}, {lo}",
            "bne 8f",
            // p = x·mr; p + (p < 0 ? -1 : 0) in 64 bits; + 2^(n-1) (in the high word); >> n.
            "smull {x}, {hi}, {x}, {mr}",
            "adds {x}, {x}, {hi}, asr #31",
            "adc {hi}, {hi}, {hi}, asr #31",
            "add {hi}, {hi}, {half}",
            "asr {hi}, {hi}, {nhi}",
            "ssat {hi}, #8, {hi}",
            "strb {hi}, [{out}], #1",
            "subs {cnt}, {cnt}, #1",
            "bne 2b",
            "movs {ok}, #1",
            "b 9f",
            "8:",
            "movs {ok}, #0",
            "9:",
            acc = inout(reg) acc.as_ptr() => _,
            out = inout(reg) out.as_mut_ptr() => _,
            cnt = inout(reg) len => _,
            up = in(reg) up,
            mr = in(reg) mr,
            nhi = in(reg) n_hi,
            half = in(reg) half_hi,
            ok = out(reg) ok,
            lo = out(reg) _,
            hi = out(reg) _,
            x = out(reg) _,
            options(nostack),
        );
    }
    ok == 1
}
