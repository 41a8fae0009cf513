//! Helium (M-profile Vector Extension, Cortex-M55/M85) versions of the int8 primitives, in
//! stable `asm!` with low-overhead loops (`DLS`/`LE`, tail-predicated `DLSTP`/`LETP`).
//!
//! - [`dot_i8_keys`]: for a query of 16, 32, 48 or 64 bytes the query stays in q4-q7 and only
//!   the keys are loaded: per key and 16 bytes one `VLDRB` and one `VMLADAV(A).S8` (16 products
//!   summed into a general-purpose register); back-to-back keys four per iteration through one
//!   post-incremented pointer, other strides two per iteration. Other query lengths: 16 bytes
//!   of the query and of four keys per iteration.
//! - [`pv_i8`]: with signed 16-bit weights (the SDPA's Q15 softmax weights) a sum over keys:
//!   per pass of 32 keys the weights are narrowed into q0-q3, and for four columns at a time
//!   `VLDRB.S16` gathers each column's bytes of eight value rows (16-bit offsets `j·stride`)
//!   for one `VMLADAVA.S16` each (45 instructions per 128 multiply-accumulates). Other
//!   weights: 16 value columns per value row with `VLDRB.S32` and `VMLA.I32`.
//!
//! Tails (lengths that are not multiples of 16, or of 4 columns) go to scalar code. Both give
//! exactly the bits of the scalar reference (wrapping `i32` arithmetic); the caller
//! ([`super::int8`]) checks that every key / value row is in bounds.

use super::scalar;
use core::arch::asm;
use core::mem::MaybeUninit;

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
    let (n, o) = (out.len(), out.as_mut_ptr());
    // The query in registers (16, 32, 48 or 64 bytes): only the keys are loaded.
    match (d, q.as_ptr()) {
        (16, q) => return held_d16(q, base, stride, o, n),
        (32, q) => return held_d32(q, base, stride, o, n),
        (48, q) => return held_d48(q, base, stride, o, n),
        (64, q) => return held_d64(q, base, stride, o, n),
        _ => {}
    }
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

/// The query's 16-byte chunks into q4-q7 (`$chunks` of them) from `[{q}]`.
macro_rules! load_query {
    (1) => {
        "vldrb.u8 q4, [{q}]\n"
    };
    (2) => {
        concat!(load_query!(1), "vldrb.u8 q5, [{q}, #16]\n")
    };
    (3) => {
        concat!(load_query!(2), "vldrb.u8 q6, [{q}, #32]\n")
    };
    (4) => {
        concat!(load_query!(3), "vldrb.u8 q7, [{q}, #48]\n")
    };
}

/// The dot product of the held query (q4-q7) with the key at `[{$k}]` into `$acc` (an even
/// register): the first chunk with `VMLADAV` (no accumulator to clear), the others with
/// `VMLADAVA`.
macro_rules! dot_key {
    (1, $k:literal, $acc:literal) => {
        concat!(
            "vldrb.u8 q0, [{",
            $k,
            "}]\n",
            "vmladav.s8 ",
            $acc,
            ", q4, q0\n"
        )
    };
    (2, $k:literal, $acc:literal) => {
        concat!(
            dot_key!(1, $k, $acc),
            "vldrb.u8 q1, [{",
            $k,
            "}, #16]\n",
            "vmladava.s8 ",
            $acc,
            ", q5, q1\n",
        )
    };
    (3, $k:literal, $acc:literal) => {
        concat!(
            dot_key!(2, $k, $acc),
            "vldrb.u8 q2, [{",
            $k,
            "}, #32]\n",
            "vmladava.s8 ",
            $acc,
            ", q6, q2\n",
        )
    };
    (4, $k:literal, $acc:literal) => {
        concat!(
            dot_key!(3, $k, $acc),
            "vldrb.u8 q3, [{",
            $k,
            "}, #48]\n",
            "vmladava.s8 ",
            $acc,
            ", q7, q3\n",
        )
    };
}

/// [`dot_key`] for keys stored back to back: every load post-increments `{$k}`, which ends
/// at the next key.
macro_rules! dot_key_next {
    (1, $k:literal, $acc:literal) => {
        concat!(
            "vldrb.u8 q0, [{",
            $k,
            "}], #16\n",
            "vmladav.s8 ",
            $acc,
            ", q4, q0\n"
        )
    };
    (2, $k:literal, $acc:literal) => {
        concat!(
            dot_key_next!(1, $k, $acc),
            "vldrb.u8 q1, [{",
            $k,
            "}], #16\n",
            "vmladava.s8 ",
            $acc,
            ", q5, q1\n",
        )
    };
    (3, $k:literal, $acc:literal) => {
        concat!(
            dot_key_next!(2, $k, $acc),
            "vldrb.u8 q2, [{",
            $k,
            "}], #16\n",
            "vmladava.s8 ",
            $acc,
            ", q6, q2\n",
        )
    };
    (4, $k:literal, $acc:literal) => {
        concat!(
            dot_key_next!(3, $k, $acc),
            "vldrb.u8 q3, [{",
            $k,
            "}], #16\n",
            "vmladava.s8 ",
            $acc,
            ", q7, q3\n",
        )
    };
}

/// A `dot_i8_keys` for one query length (`16 · $chunks` bytes) with the query held in q4-q7:
/// two keys per iteration (two pointers `2 · stride` apart each step), then the odd one.
macro_rules! held_query {
    ($name:ident, $chunks:tt) => {
        /// `out[j] = Σ_i q_i · keys[j·stride + i]` for `j < n`, the query (`16 · chunks`
        /// bytes) held in q4-q7.
        ///
        /// # Safety
        /// `q` is readable for the query's bytes, `out` writable for `n` `i32`s, and every key
        /// `keys + j·stride` (`j < n`) readable for the query's length.
        #[inline(never)]
        unsafe fn $name(q: *const i8, keys: *const i8, stride: usize, out: *mut i32, n: usize) {
            let (mut keys, mut out, mut n) = (keys, out, n);
            // Keys back to back (stride = query length): four per iteration through one
            // post-incremented pointer.
            let quads = if stride == 16 * $chunks { n / 4 } else { 0 };
            if quads > 0 {
                asm!(
                    load_query!($chunks),
                    "dls lr, {quads}",
                    "2:",
                    dot_key_next!($chunks, "k", "r0"),
                    dot_key_next!($chunks, "k", "r2"),
                    dot_key_next!($chunks, "k", "r4"),
                    dot_key_next!($chunks, "k", "r8"),
                    "strd r4, r8, [{out}, #8]",
                    "strd r0, r2, [{out}], #16",
                    "le lr, 2b",
                    q = in(reg) q,
                    quads = in(reg) quads,
                    k = inout(reg) keys,
                    out = inout(reg) out,
                    out("r0") _,
                    out("r2") _,
                    out("r4") _,
                    out("r8") _,
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
                n -= 4 * quads;
            }
            let pairs = n / 2;
            if pairs > 0 {
                asm!(
                    load_query!($chunks),
                    "dls lr, {pairs}",
                    "2:",
                    dot_key!($chunks, "ka", "r0"),
                    dot_key!($chunks, "kb", "r2"),
                    "add {ka}, {step}",
                    "add {kb}, {step}",
                    "strd r0, r2, [{out}], #8",
                    "le lr, 2b",
                    q = in(reg) q,
                    pairs = in(reg) pairs,
                    ka = inout(reg) keys => _,
                    kb = inout(reg) keys.add(stride) => _,
                    step = in(reg) 2 * stride,
                    out = inout(reg) out => _,
                    out("r0") _,
                    out("r2") _,
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
            }
            if n % 2 == 1 {
                let last = n - 1;
                asm!(
                    load_query!($chunks),
                    dot_key!($chunks, "k", "r0"),
                    "str r0, [{out}]",
                    q = in(reg) q,
                    k = in(reg) keys.add(last * stride),
                    out = in(reg) out.add(last),
                    out("r0") _,
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
    };
}

held_query!(held_d16, 1);
held_query!(held_d32, 2);
held_query!(held_d48, 3);
held_query!(held_d64, 4);

/// Keys of one gather pass of [`pv_i8`]: four blocks of eight 16-bit lanes.
const PASS_KEYS: usize = 32;
/// Largest value-row stride the 16-bit gather offsets reach in a pass (`31 · stride < 2^16`).
const MAX_GATHER_STRIDE: usize = u16::MAX as usize / (PASS_KEYS - 1);

/// `acc[c] += Σ_j w[j] · v[j·stride + c]` (wrapping), as [`scalar::pv_i8`].
///
/// With signed 16-bit weights (the SDPA's Q15 softmax weights) the sum runs over keys: per
/// pass of up to 32 keys the weights are narrowed into four 16-bit vectors, and per column
/// `VLDRB.S16` gathers the column's bytes of eight value rows (16-bit offsets `j·stride`) for
/// one `VMLADAVA.S16` (eight products summed into a general-purpose register). Other weights
/// (or strides too wide for 16-bit offsets) go row by row with `VMLA.I32`.
///
/// # Safety
/// Every value row is in bounds: `(w.len() - 1) · stride + acc.len() <= v.len()` when `w` is
/// not empty.
pub(super) unsafe fn pv_i8(w: &[i32], v: &[i8], stride: usize, acc: &mut [i32]) {
    let groups = acc.len() / 4;
    if groups == 0 || stride > MAX_GATHER_STRIDE {
        pv_rows(w, v.as_ptr(), stride, acc);
        return;
    }
    // Every lane of both buffers is written before it is read (see `narrow`, `row_offsets`):
    // no clearing of 128 bytes per call.
    let mut offsets = MaybeUninit::<[u16; PASS_KEYS]>::uninit();
    let mut weights = MaybeUninit::<[i16; PASS_KEYS]>::uninit();
    let mut offsets_for = 0;
    let (body, tail) = acc.split_at_mut(groups * 4);
    for (pass, wp) in w.chunks(PASS_KEYS).enumerate() {
        let rows = v.as_ptr().add(pass * PASS_KEYS * stride);
        let m = wp.len();
        if !narrow(wp, &mut weights) {
            pv_rows(wp, rows, stride, body);
        } else {
            if offsets_for != m {
                row_offsets(m, stride, &mut offsets);
                offsets_for = m;
            }
            gather_pass(
                weights.as_ptr().cast(),
                offsets.as_ptr().cast(),
                rows,
                body.as_mut_ptr(),
                groups,
            );
        }
        if !tail.is_empty() {
            // The last one to three columns.
            for (j, &wj) in wp.iter().enumerate() {
                let row =
                    core::slice::from_raw_parts(rows.add(j * stride + groups * 4), tail.len());
                for (a, &x) in tail.iter_mut().zip(row) {
                    *a = a.wrapping_add(wj.wrapping_mul(x as i32));
                }
            }
        }
    }
}

/// Four weights of [`narrow`]: loaded, their largest magnitude folded into `{max}`, their
/// low halfwords stored at `[r3]`.
macro_rules! narrow_four {
    () => {
        concat!(
            "vldrw.u32 q0, [{w}], #16\n",
            "vmaxav.s32 {max}, q0\n",
            "vstrh.32 q0, [r3], #8\n",
        )
    };
}

/// Narrows `w` (1 to [`PASS_KEYS`] weights) into all of `out` (zeros after `w.len()`) when
/// every weight is within `±(2^15 - 1)`; returns whether it did (`out` is then initialized).
#[inline(always)]
fn narrow(w: &[i32], out: &mut MaybeUninit<[i16; PASS_KEYS]>) -> bool {
    let m = w.len().min(PASS_KEYS);
    if m == 0 {
        return false;
    }
    let mut max_abs = 0u32;
    // SAFETY: `m` (1 to PASS_KEYS) weights are read from `w`; for a full pass the 8 vectors of
    // 4 are read straight through, otherwise `out` (PASS_KEYS halfwords) is cleared and the
    // tail-predicated loop writes the low halves of the first `m` weights (inactive lanes of
    // the last iteration are not accessed).
    unsafe {
        asm!(
            "cmp {m}, #{full}",
            "bne 3f",
            narrow_four!(),
            narrow_four!(),
            narrow_four!(),
            narrow_four!(),
            narrow_four!(),
            narrow_four!(),
            narrow_four!(),
            narrow_four!(),
            "b 4f",
            "3:",
            "vmov.i32 q0, #0",
            "vstrw.32 q0, [r3]",
            "vstrw.32 q0, [r3, #16]",
            "vstrw.32 q0, [r3, #32]",
            "vstrw.32 q0, [r3, #48]",
            "dlstp.32 lr, {m}",
            "2:",
            narrow_four!(),
            "letp lr, 2b",
            "4:",
            m = in(reg) m,
            full = const PASS_KEYS,
            w = inout(reg) w.as_ptr() => _,
            // Narrowing stores take a low base register: r3.
            inout("r3") out.as_mut_ptr() => _,
            max = inout(reg) max_abs,
            out("lr") _,
            out("d0") _,
            out("d1") _,
            options(nostack),
        );
    }
    max_abs <= i16::MAX as u32
}

/// `out[j] = min(j, m - 1) · stride` for every `j < PASS_KEYS` (`1 <= m`): a row past the
/// pass's last one is read again at the last row's offset (in bounds) with a weight of 0.
/// `31 · stride` fits 16 bits.
#[inline(always)]
fn row_offsets(m: usize, stride: usize, out: &mut MaybeUninit<[u16; PASS_KEYS]>) {
    let last = m.clamp(1, PASS_KEYS) - 1;
    // SAFETY: four 8-halfword stores fill the PASS_KEYS halfwords of `out`.
    unsafe {
        asm!(
            "movs r0, #0",
            "vdup.16 q1, {last}",
            "vidup.u16 q0, r0, #1",
            "vmin.u16 q0, q0, q1",
            "vmul.i16 q0, q0, {stride}",
            "vstrh.16 q0, [{out}]",
            "vidup.u16 q0, r0, #1",
            "vmin.u16 q0, q0, q1",
            "vmul.i16 q0, q0, {stride}",
            "vstrh.16 q0, [{out}, #16]",
            "vidup.u16 q0, r0, #1",
            "vmin.u16 q0, q0, q1",
            "vmul.i16 q0, q0, {stride}",
            "vstrh.16 q0, [{out}, #32]",
            "vidup.u16 q0, r0, #1",
            "vmin.u16 q0, q0, q1",
            "vmul.i16 q0, q0, {stride}",
            "vstrh.16 q0, [{out}, #48]",
            last = in(reg) last,
            stride = in(reg) stride,
            out = in(reg) out.as_mut_ptr(),
            // VIDUP takes an even register.
            out("r0") _,
            out("d0") _,
            out("d1") _,
            out("d2") _,
            out("d3") _,
            options(nostack),
        );
    }
}

/// One block of eight keys for four columns: `VLDRB.S16` gathers of the columns' bytes of the
/// block's rows (offsets from `[off, #OFF]`), each summed against the weights in `QW` with
/// `VMLADAVA.S16` into the columns' accumulators (r0, r2, r4, r8).
macro_rules! gather_block {
    ($qw:literal, $off:literal) => {
        concat!(
            "vldrh.u16 q4, [{off}, #",
            $off,
            "]\n",
            "vldrb.s16 q5, [{b0}, q4]\n",
            "vmladava.s16 r0, ",
            $qw,
            ", q5\n",
            "vldrb.s16 q6, [{b1}, q4]\n",
            "vmladava.s16 r2, ",
            $qw,
            ", q6\n",
            "vldrb.s16 q7, [{b2}, q4]\n",
            "vmladava.s16 r4, ",
            $qw,
            ", q7\n",
            "vldrb.s16 q5, [{b3}, q4]\n",
            "vmladava.s16 r8, ",
            $qw,
            ", q5\n",
        )
    };
}

/// Adds the weighted sum of 32 value rows (`rows + j·stride` for the offsets `offsets[j]`) to
/// `groups` groups of four accumulators: the four weight vectors stay in q0-q3, and per group
/// four blocks of eight keys (one offset load, four gathers, four `VMLADAVA.S16` each).
///
/// # Safety
/// `weights` and `offsets` point to [`PASS_KEYS`] initialized halfwords each; `acc` holds
/// `4 · groups` `i32`s (4-byte aligned), `groups >= 1`; every row at an offset of `offsets`
/// is readable for `4 · groups` bytes from `rows`.
#[inline(always)]
unsafe fn gather_pass(
    weights: *const i16,
    offsets: *const u16,
    rows: *const i8,
    acc: *mut i32,
    groups: usize,
) {
    asm!(
        "vldrh.u16 q0, [{b1}]",
        "vldrh.u16 q1, [{b1}, #16]",
        "vldrh.u16 q2, [{b1}, #32]",
        "vldrh.u16 q3, [{b1}, #48]",
        "add {b1}, {b0}, #1",
        "add {b2}, {b0}, #2",
        "add {b3}, {b0}, #3",
        "dls lr, lr",
        "2:",
        "ldrd r0, r2, [{acc}]",
        "ldrd r4, r8, [{acc}, #8]",
        gather_block!("q0", "0"),
        gather_block!("q1", "16"),
        gather_block!("q2", "32"),
        gather_block!("q3", "48"),
        "strd r4, r8, [{acc}, #8]",
        "strd r0, r2, [{acc}], #16",
        "adds {b0}, #4",
        "adds {b1}, #4",
        "adds {b2}, #4",
        "adds {b3}, #4",
        "le lr, 2b",
        b0 = inout(reg) rows => _,
        // The weights' address, then the second column's base.
        b1 = inout(reg) weights => _,
        b2 = out(reg) _,
        b3 = out(reg) _,
        off = in(reg) offsets,
        acc = inout(reg) acc => _,
        inout("lr") groups => _,
        out("r0") _,
        out("r2") _,
        out("r4") _,
        out("r8") _,
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

/// Row by row (any `i32` weights): 16 value columns per pass in four `i32` accumulator
/// vectors; per value row, four sign-extending `VLDRB.S32` and four `VMLA.I32` by the row's
/// weight. Columns past the last multiple of 16 in scalar code.
///
/// # Safety
/// `(w.len() - 1) · stride + acc.len()` bytes are readable from `v` when `w` is not empty.
unsafe fn pv_rows(w: &[i32], v: *const i8, stride: usize, acc: &mut [i32]) {
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
            inout("r1") v.add(c) => _,
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
            let row = core::slice::from_raw_parts(v.add(j * stride + body), tail.len());
            for (a, &x) in tail.iter_mut().zip(row) {
                *a = a.wrapping_add(wj.wrapping_mul(x as i32));
            }
        }
    }
}
