//! x86_64 versions of the int8 primitives [`super::dot_i8_keys`], [`super::pv_i8`] and
//! [`super::dot_weights_q15`] (the int8 SDPA's softmax weights):
//!
//! | path | needs | dot products | weighted rows | softmax weights |
//! |---|---|---|---|---|
//! | `vnni512` | AVX-512F/BW/VL + AVX512_VNNI, rustc ≥ 1.89 (`cfg(microattn_avx512)`) | `vpdpbusd`, 16 keys per block (4 keys per vector for `d <= 16`; `d = 64, 128` unrolled) | weights in `0..2^16` (the SDPA's): their two bytes by `vpdpbusd`, four rows per instruction; other `i16` weights `vpdpwssd` on row pairs; else `vpmulld` | 16 keys per step, the 64-entry table in four registers (`vpermt2d`) |
//! | `avx2` | AVX2 | `vpmovsxbw` + `vpmaddwd`, 8 keys per block | `vpmaddwd` on row pairs for `i16` weights, else `vpmulld` | 8 keys per step, the table by `vpgatherdd` |
//! | `scalar` | – | [`super::scalar`] | [`super::scalar`] | [`super::scalar`] (the SDPA runs its own loop) |
//!
//! Every path gives the scalar bits: all arithmetic is `i32` modulo 2^32, where the order of
//! the additions does not matter, and every product is exact (`vpmaddwd` of sign-extended
//! bytes, `vpmulld` keeps the low 32 bits as `wrapping_mul` does, a 16-bit weight is
//! `lo + 256·hi`); the softmax weights repeat the scalar `u32` operations lane by lane.
//!
//! `vpdpbusd` multiplies unsigned by signed bytes, so the keys are biased to unsigned
//! (`k ^ 0x80 = k + 128`) and the bias is taken off once per query:
//! `Σ (k_i + 128)·q_i - 128·Σ q_i = Σ k_i·q_i`.
//!
//! The path follows the f32 backend ([`super::backend`]): `MICROATTN_BACKEND=scalar` or
//! `select("scalar")` gives scalar int8 too, `avx2` caps it at `avx2`. The CPU features are
//! detected once with `std` and taken from the compile-time target features without.

use super::int8::WEIGHT_ZERO_T;
use super::{scalar, Exp2Q15};
use core::arch::x86_64::*;

/// The int8 code paths, worst to best.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Path {
    Scalar = 1,
    Avx2 = 2,
    // Without `std`, only built when the target features enable it.
    #[cfg(microattn_avx512)]
    #[cfg_attr(not(feature = "std"), allow(dead_code))]
    Vnni512 = 3,
}

/// The best path the CPU supports, with `std`: detected at the first call, then cached.
#[cfg(feature = "std")]
fn detected() -> Path {
    use core::sync::atomic::{AtomicU8, Ordering};
    static DETECTED: AtomicU8 = AtomicU8::new(0);
    match DETECTED.load(Ordering::Relaxed) {
        1 => Path::Scalar,
        2 => Path::Avx2,
        #[cfg(microattn_avx512)]
        3 => Path::Vnni512,
        _ => {
            let path = detect();
            DETECTED.store(path as u8, Ordering::Relaxed);
            path
        }
    }
}

/// Runs the CPU feature checks (once, from [`detected`]).
#[cfg(feature = "std")]
fn detect() -> Path {
    #[cfg(microattn_avx512)]
    if std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512bw")
        && std::is_x86_feature_detected!("avx512vl")
        && std::is_x86_feature_detected!("avx512vnni")
        && std::is_x86_feature_detected!("avx2")
    {
        return Path::Vnni512;
    }
    if std::is_x86_feature_detected!("avx2") {
        return Path::Avx2;
    }
    Path::Scalar
}

/// Without `std`: the best path the compile-time target features allow.
#[cfg(not(feature = "std"))]
fn detected() -> Path {
    #[cfg(all(
        microattn_avx512,
        target_feature = "avx512f",
        target_feature = "avx512bw",
        target_feature = "avx512vl",
        target_feature = "avx512vnni",
        target_feature = "avx2"
    ))]
    return Path::Vnni512;
    #[allow(unreachable_code)]
    if cfg!(target_feature = "avx2") {
        Path::Avx2
    } else {
        Path::Scalar
    }
}

/// The path for this call: the detected one, capped by the selected f32 backend (its lane
/// count tells scalar, avx2 and avx512 apart without comparing names).
#[inline]
fn path() -> Path {
    let cap = match super::backend().lanes() {
        1 => Path::Scalar,
        8 => Path::Avx2,
        _ => return detected(),
    };
    detected().min(cap)
}

/// The name of the int8 path the kernels use now: `vnni512`, `avx2` or `scalar`.
pub fn int8_path() -> &'static str {
    match path() {
        Path::Scalar => "scalar",
        Path::Avx2 => "avx2",
        #[cfg(microattn_avx512)]
        Path::Vnni512 => "vnni512",
    }
}

/// [`scalar::dot_i8_keys`] on the best path.
///
/// # Safety
/// Every key fits: `(out.len() - 1)·stride + q.len() <= keys.len()` when `out` is not empty.
#[inline]
pub(super) unsafe fn dot_i8_keys(q: &[i8], keys: &[i8], stride: usize, out: &mut [i32]) {
    match path() {
        Path::Scalar => scalar::dot_i8_keys(q, keys, stride, out),
        Path::Avx2 => dot_keys_avx2(q, keys, stride, out),
        #[cfg(microattn_avx512)]
        Path::Vnni512 => dot_keys_vnni(q, keys, stride, out),
    }
}

/// [`scalar::pv_i8`] on the best path.
///
/// # Safety
/// Every row fits: `(w.len() - 1)·stride + acc.len() <= v.len()` when `w` is not empty.
#[inline]
pub(super) unsafe fn pv_i8(w: &[i32], v: &[i8], stride: usize, acc: &mut [i32]) {
    match path() {
        Path::Scalar => scalar::pv_i8(w, v, stride, acc),
        Path::Avx2 => pv_avx2(w, v, stride, acc),
        #[cfg(microattn_avx512)]
        Path::Vnni512 => pv_avx512(w, v, stride, acc),
    }
}

/// [`scalar::dot_weights_q15`] on the best vector path; `None` on the scalar path (`w` is
/// untouched).
#[inline]
pub(super) fn dot_weights_q15(
    w: &mut [i32],
    max: i32,
    lo: u32,
    hi: u32,
    cutoff: u32,
    exp2: &Exp2Q15<'_>,
) -> Option<u32> {
    let scale = WeightScale {
        max,
        lo,
        hi,
        cutoff,
    };
    match path() {
        Path::Scalar => None,
        // SAFETY: the path is only chosen when the CPU has AVX2.
        Path::Avx2 => Some(unsafe { weights_avx2(w, scale, exp2) }),
        // SAFETY: the path is only chosen when the CPU has AVX-512F/BW/VL and VNNI.
        #[cfg(microattn_avx512)]
        Path::Vnni512 => Some(unsafe { weights_avx512(w, scale, exp2) }),
    }
}

/// The int8 SDPA's fast row normalization (the loop of `normalize_row_fast` in
/// `attention::int8::sdpa`): per column `saturate_i8((x·mr + 2^(n-1) - [x·mr < 0]) >> n)` with
/// `x = acc[c] << up` in `i32`, eight columns per step with AVX-512. `false` on the other
/// paths, for `up > 31` or `n` outside `32..=62`, and at the first column whose `x` does not
/// fit an `i32` (`out` may then hold anything: the caller runs its general path).
#[inline]
pub(super) fn normalize_row(acc: &[i64], up: u32, mr: i32, n: u32, out: &mut [i8]) -> bool {
    if up > 31 || !(32..=62).contains(&n) {
        return false;
    }
    match path() {
        // SAFETY: the path is only chosen when the CPU has AVX-512F/BW/VL and VNNI.
        #[cfg(microattn_avx512)]
        Path::Vnni512 => unsafe { normalize_row_avx512(acc, up, mr, n, out) },
        _ => false,
    }
}

/// Caller: AVX-512F, `up <= 31`, `32 <= n <= 62`. The range check is `(x >> up) == acc[c]`
/// with `x` the sign-extended low word of `acc[c] << up` (as `i32` arithmetic wraps), the
/// product `vpmuldq`, the rounding shift `vpsraq`, the clamp `vpmaxsq` to -127 and the
/// saturating narrowing `vpmovsqb` to 127; the last step masked.
#[cfg(microattn_avx512)]
#[allow(clippy::incompatible_msrv)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2")]
unsafe fn normalize_row_avx512(acc: &[i64], up: u32, mr: i32, n: u32, out: &mut [i8]) -> bool {
    let len = acc.len().min(out.len());
    let (up_count, n_count) = (_mm_cvtsi32_si128(up as i32), _mm_cvtsi32_si128(n as i32));
    let mr = _mm512_set1_epi64(mr as i64);
    let half = _mm512_set1_epi64(1i64 << (n - 1));
    let low = _mm512_set1_epi64(-127);
    let mut j = 0;
    while j < len {
        let mask = ((1u32 << (len - j).min(8)) - 1) as __mmask8;
        let a = _mm512_maskz_loadu_epi64(mask, acc.as_ptr().add(j));
        let x = _mm512_srai_epi64::<32>(_mm512_slli_epi64::<32>(_mm512_sll_epi64(a, up_count)));
        if _mm512_mask_cmpneq_epi64_mask(mask, _mm512_sra_epi64(x, up_count), a) != 0 {
            return false;
        }
        let p = _mm512_mul_epi32(x, mr);
        let rounded = _mm512_add_epi64(_mm512_add_epi64(p, half), _mm512_srai_epi64::<63>(p));
        let r = _mm512_max_epi64(_mm512_sra_epi64(rounded, n_count), low);
        _mm512_mask_cvtsepi64_storeu_epi8(out.as_mut_ptr().add(j).cast(), mask, r);
        j += 8;
    }
    true
}

/// The largest element of `w` (`None` when empty) on the best vector path.
#[inline]
pub(super) fn max_i32(w: &[i32]) -> Option<i32> {
    match path() {
        Path::Scalar => w.iter().copied().max(),
        // SAFETY: the path is only chosen when the CPU has AVX2.
        Path::Avx2 => unsafe { max_avx2(w) },
        // SAFETY: the path is only chosen when the CPU has AVX-512F/BW/VL and VNNI.
        #[cfg(microattn_avx512)]
        Path::Vnni512 => unsafe { max_avx512(w) },
    }
}

/// Caller: AVX2. Eight lanes of `vpmaxsd`, the last `w.len() % 8` in scalar code.
#[target_feature(enable = "avx2")]
unsafe fn max_avx2(w: &[i32]) -> Option<i32> {
    let first = *w.first()?;
    let mut m = _mm256_set1_epi32(first);
    let mut chunks = w.chunks_exact(8);
    for c in chunks.by_ref() {
        m = _mm256_max_epi32(m, _mm256_loadu_si256(c.as_ptr().cast()));
    }
    let mut lanes = [0i32; 8];
    _mm256_storeu_si256(lanes.as_mut_ptr().cast(), m);
    lanes.iter().chain(chunks.remainder()).copied().max()
}

/// Caller: AVX-512F. Sixteen lanes of `vpmaxsd`, the last step masked (its absent lanes
/// keep the first element).
#[cfg(microattn_avx512)]
#[allow(clippy::incompatible_msrv)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2")]
unsafe fn max_avx512(w: &[i32]) -> Option<i32> {
    let first = *w.first()?;
    let mut m = _mm512_set1_epi32(first);
    let n = w.len();
    let mut j = 0;
    while j < n {
        let valid = (((1u32 << (n - j).min(16)) - 1) & 0xFFFF) as __mmask16;
        m = _mm512_max_epi32(m, _mm512_mask_loadu_epi32(m, valid, w.as_ptr().add(j)));
        j += 16;
    }
    Some(_mm512_reduce_max_epi32(m))
}

/// The per-call operands of [`dot_weights_q15`] besides the weights and the `exp2` constants.
#[derive(Clone, Copy)]
struct WeightScale {
    max: i32,
    lo: u32,
    hi: u32,
    cutoff: u32,
}

// ---------------------------------------------------------------------------------------------
// AVX2.

/// Keys per block of the AVX2 dot products (one `ymm` accumulator each).
const AVX2_KEYS: usize = 8;

/// The lane sums of eight `ymm` vectors of `i32`, `[Σv0, ..., Σv7]` (wrapping).
#[inline(always)]
unsafe fn sum8_epi32(v: &[__m256i; 8]) -> __m256i {
    let h01 = _mm256_hadd_epi32(v[0], v[1]);
    let h23 = _mm256_hadd_epi32(v[2], v[3]);
    let h45 = _mm256_hadd_epi32(v[4], v[5]);
    let h67 = _mm256_hadd_epi32(v[6], v[7]);
    let h0123 = _mm256_hadd_epi32(h01, h23);
    let h4567 = _mm256_hadd_epi32(h45, h67);
    let low = _mm256_permute2x128_si256::<0x20>(h0123, h4567);
    let high = _mm256_permute2x128_si256::<0x31>(h0123, h4567);
    _mm256_add_epi32(low, high)
}

/// Caller: AVX2; every key fits (see [`dot_i8_keys`]).
#[target_feature(enable = "avx2")]
unsafe fn dot_keys_avx2(q: &[i8], keys: &[i8], stride: usize, out: &mut [i32]) {
    let d = q.len();
    let (chunks, tail) = (d / 16, d - d % 16);
    let qp = q.as_ptr();
    let n = out.len();
    let mut j = 0;
    while j < n {
        let count = (n - j).min(AVX2_KEYS);
        // Keys past `count` repeat key `j` (in bounds); their sums are not stored.
        let mut ptrs = [keys.as_ptr().add(j * stride); AVX2_KEYS];
        for (i, p) in ptrs.iter_mut().enumerate().take(count) {
            *p = keys.as_ptr().add((j + i) * stride);
        }
        let mut acc = [_mm256_setzero_si256(); AVX2_KEYS];
        for c in 0..chunks {
            // 16 query bytes as i16, then one exact pairwise i16 product-sum per key.
            let qx = _mm256_cvtepi8_epi16(_mm_loadu_si128(qp.add(16 * c).cast()));
            for (a, p) in acc.iter_mut().zip(ptrs) {
                let kx = _mm256_cvtepi8_epi16(_mm_loadu_si128(p.add(16 * c).cast()));
                *a = _mm256_add_epi32(*a, _mm256_madd_epi16(kx, qx));
            }
        }
        let mut sums = [0i32; AVX2_KEYS];
        _mm256_storeu_si256(sums.as_mut_ptr().cast(), sum8_epi32(&acc));
        // The last d % 16 bytes of each key (no indexing: nothing here can panic).
        let q_tail = q.get(tail..).unwrap_or_default();
        for ((o, s), p) in out.iter_mut().skip(j).take(count).zip(sums).zip(ptrs) {
            let key = core::slice::from_raw_parts(p.add(tail), d - tail);
            *o = s.wrapping_add(scalar::dot_i8(q_tail, key));
        }
        j += count;
    }
}

/// Whether every weight is a signed 16-bit value (the SDPA's Q15 weights are): then two
/// rows go through one `vpmaddwd` / `vpdpwssd`, with products exact in `i32`.
#[inline(always)]
fn weights_fit_i16(w: &[i32]) -> bool {
    w.iter().fold(true, |ok, &x| ok & (x as i16 as i32 == x))
}

/// Whether every weight is an unsigned 16-bit value (the SDPA's Q15 weights are): then each
/// weight is two unsigned bytes, four rows go through one `vpdpbusd` per byte, and
/// `Σ w·v = Σ lo·v + 256·Σ hi·v` (modulo 2^32, as the scalar sum wraps).
#[cfg(microattn_avx512)]
#[inline(always)]
fn weights_fit_u16(w: &[i32]) -> bool {
    w.iter().fold(true, |ok, &x| ok & (x as u16 as i32 == x))
}

/// The pair of 16-bit weights `(w0, w1)` as one `i32` lane (`w0` in the low half, matching
/// the interleaved rows `[row0[c], row1[c]]`).
#[inline(always)]
fn weight_pair(w0: i32, w1: i32) -> i32 {
    (w0 & 0xFFFF) | (w1 << 16)
}

/// Caller: AVX2; every row fits (see [`pv_i8`]).
#[target_feature(enable = "avx2")]
unsafe fn pv_avx2(w: &[i32], v: &[i8], stride: usize, acc: &mut [i32]) {
    let dv = acc.len();
    if weights_fit_i16(w) {
        // 16 columns at a time with two rows per `vpmaddwd`; the last dv % 16 below.
        let mut col = 0;
        while col + 16 <= dv {
            pv_avx2_pairs(w, v, stride, acc, col);
            col += 16;
        }
        pv_tail(w, v, stride, acc, col);
        return;
    }
    let full = dv / 8;
    let mut chunk = 0;
    // Four 8-column chunks at a time (4 accumulators), then one at a time.
    while chunk + 4 <= full {
        pv_avx2_chunks::<4>(w, v, stride, acc, 8 * chunk);
        chunk += 4;
    }
    while chunk < full {
        pv_avx2_chunks::<1>(w, v, stride, acc, 8 * chunk);
        chunk += 1;
    }
    pv_tail(w, v, stride, acc, 8 * full);
}

/// Columns `col..` of [`pv_i8`] in scalar code. Caller: rows fit.
#[inline(always)]
unsafe fn pv_tail(w: &[i32], v: &[i8], stride: usize, acc: &mut [i32], col: usize) {
    let dv = acc.len();
    if let Some(tail) = acc.get_mut(col..) {
        for (j, &wj) in w.iter().enumerate() {
            let row = core::slice::from_raw_parts(v.as_ptr().add(j * stride + col), dv - col);
            for (a, &x) in tail.iter_mut().zip(row) {
                *a = a.wrapping_add(wj.wrapping_mul(x as i32));
            }
        }
    }
}

/// Columns `col..col + 16` of [`pv_avx2`] with 16-bit weights: rows `j, j+1` interleaved as
/// `i16` pairs, one `vpmaddwd` per pair of rows. Caller: AVX2, rows fit, `col + 16 <= dv`,
/// weights fit in `i16`.
#[inline(always)]
unsafe fn pv_avx2_pairs(w: &[i32], v: &[i8], stride: usize, acc: &mut [i32], col: usize) {
    // lo: columns [0..4, 8..12], hi: [4..8, 12..16] (of `col..`), from the in-lane unpacks.
    let (mut lo, mut hi) = (_mm256_setzero_si256(), _mm256_setzero_si256());
    let base = v.as_ptr().add(col);
    let mut pairs = w.chunks_exact(2);
    let mut j = 0;
    for pair in pairs.by_ref() {
        let ws = _mm256_set1_epi32(weight_pair(pair[0], pair[1]));
        let a = _mm256_cvtepi8_epi16(_mm_loadu_si128(base.add(j * stride).cast()));
        let b = _mm256_cvtepi8_epi16(_mm_loadu_si128(base.add((j + 1) * stride).cast()));
        lo = _mm256_add_epi32(lo, _mm256_madd_epi16(_mm256_unpacklo_epi16(a, b), ws));
        hi = _mm256_add_epi32(hi, _mm256_madd_epi16(_mm256_unpackhi_epi16(a, b), ws));
        j += 2;
    }
    if let [last] = pairs.remainder() {
        let ws = _mm256_set1_epi32(weight_pair(*last, 0));
        let a = _mm256_cvtepi8_epi16(_mm_loadu_si128(base.add(j * stride).cast()));
        let z = _mm256_setzero_si256();
        lo = _mm256_add_epi32(lo, _mm256_madd_epi16(_mm256_unpacklo_epi16(a, z), ws));
        hi = _mm256_add_epi32(hi, _mm256_madd_epi16(_mm256_unpackhi_epi16(a, z), ws));
    }
    let ap = acc.as_mut_ptr().add(col);
    let first = _mm256_permute2x128_si256::<0x20>(lo, hi);
    let second = _mm256_permute2x128_si256::<0x31>(lo, hi);
    let a0 = _mm256_loadu_si256(ap.cast());
    let a1 = _mm256_loadu_si256(ap.add(8).cast());
    _mm256_storeu_si256(ap.cast(), _mm256_add_epi32(a0, first));
    _mm256_storeu_si256(ap.add(8).cast(), _mm256_add_epi32(a1, second));
}

/// Columns `col..col + 8·N` of [`pv_avx2`]. Caller: AVX2, rows fit, `col + 8·N <= acc.len()`.
#[inline(always)]
unsafe fn pv_avx2_chunks<const N: usize>(
    w: &[i32],
    v: &[i8],
    stride: usize,
    acc: &mut [i32],
    col: usize,
) {
    let ap = acc.as_mut_ptr().add(col);
    let mut a = [_mm256_setzero_si256(); N];
    for (k, x) in a.iter_mut().enumerate() {
        *x = _mm256_loadu_si256(ap.add(8 * k).cast());
    }
    for (j, &wj) in w.iter().enumerate() {
        let ws = _mm256_set1_epi32(wj);
        let row = v.as_ptr().add(j * stride + col);
        for (k, x) in a.iter_mut().enumerate() {
            let vx = _mm256_cvtepi8_epi32(_mm_loadl_epi64(row.add(8 * k).cast()));
            *x = _mm256_add_epi32(*x, _mm256_mullo_epi32(ws, vx));
        }
    }
    for (k, x) in a.iter().enumerate() {
        _mm256_storeu_si256(ap.add(8 * k).cast(), *x);
    }
}

// ---------------------------------------------------------------------------------------------
// AVX-512 VNNI. The intrinsics are stable from rustc 1.89; `build.rs` enables this code only
// there (`cfg(microattn_avx512)`).

/// Keys per block of the VNNI dot products (one `zmm` accumulator each).
#[cfg(microattn_avx512)]
const VNNI_KEYS: usize = 16;

/// Fewer keys than this left: one key at a time with a horizontal sum (a 16-key block costs
/// about 45 shuffles and adds for its reduction, a single key about 6).
#[cfg(microattn_avx512)]
const VNNI_SINGLE_BELOW: usize = 10;

/// `[Σv0, ..., Σv15]` of sixteen `zmm` vectors of `i32` (wrapping): a transposing reduction
/// that shares its shuffles between the vectors (45 instructions).
#[cfg(microattn_avx512)]
#[allow(clippy::incompatible_msrv)]
#[inline(always)]
unsafe fn sum16_epi32(v: &[__m512i; 16]) -> __m512i {
    // Per 128-bit block: [a0+a2, b0+b2, a1+a3, b1+b3].
    let mut s = [_mm512_setzero_si512(); 8];
    for (i, x) in s.iter_mut().enumerate() {
        let (a, b) = (v[2 * i], v[2 * i + 1]);
        *x = _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
    }
    // Per 128-bit block: the block sums of four keys, in order.
    let mut t = [_mm512_setzero_si512(); 4];
    for (i, x) in t.iter_mut().enumerate() {
        let (a, b) = (s[2 * i], s[2 * i + 1]);
        *x = _mm512_add_epi32(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b));
    }
    // Blocks 0+1 and 2+3 of two such vectors: [t0 01, t0 23, t1 01, t1 23].
    let pair = |a: __m512i, b: __m512i| {
        _mm512_add_epi32(
            _mm512_shuffle_i32x4::<0x88>(a, b),
            _mm512_shuffle_i32x4::<0xDD>(a, b),
        )
    };
    let (u0, u1) = (pair(t[0], t[1]), pair(t[2], t[3]));
    pair(u0, u1)
}

/// Caller: AVX-512F/BW/VL, AVX512_VNNI; every key fits (see [`dot_i8_keys`]).
#[cfg(microattn_avx512)]
#[allow(clippy::incompatible_msrv)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2")]
unsafe fn dot_keys_vnni(q: &[i8], keys: &[i8], stride: usize, out: &mut [i32]) {
    // The common head sizes with the chunk count known at compile time: no loops in a block,
    // every accumulator in a register.
    match q.len() {
        64 => dot_keys_vnni_chunks::<1>(q, keys, stride, out),
        128 => dot_keys_vnni_chunks::<2>(q, keys, stride, out),
        1..=16 => dot_keys_vnni_short(q, keys, stride, out),
        _ => dot_keys_vnni_chunks::<0>(q, keys, stride, out),
    }
}

/// [`dot_keys_vnni`] for `d <= 16`: four keys per vector, one in each 128-bit block (a
/// single load when the keys are 16 bytes apart, else four), the query repeated in every
/// block, so a 16-key block is four `vpdpbusd` and a 10-instruction reduction. Caller: as
/// there, `1 <= q.len() <= 16`.
#[cfg(microattn_avx512)]
#[allow(clippy::incompatible_msrv)]
#[inline(always)]
unsafe fn dot_keys_vnni_short(q: &[i8], keys: &[i8], stride: usize, out: &mut [i32]) {
    let d = q.len();
    // The key's bytes in a block; masked-off bytes are 0 in the query, so their biased key
    // bytes (0x80) add nothing.
    let row: u64 = (1u64 << d) - 1;
    let qv = _mm512_broadcast_i32x4(_mm_maskz_loadu_epi8(row as __mmask16, q.as_ptr().cast()));
    let flip = _mm512_set1_epi8(-128);
    // 128·Σq in every lane: each block's sum of 128·q (four blocks of the repeated query).
    let bias = _mm512_dpbusd_epi32(_mm512_setzero_si512(), flip, qv);
    let correction = _mm512_set1_epi32(_mm512_reduce_add_epi32(bias) / 4);
    // Lane 4b + g of the reduction holds key 4g + b.
    let order = _mm512_set_epi32(15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1, 12, 8, 4, 0);
    let zero = _mm512_setzero_si512();
    let n = out.len();
    let mut j = 0;
    while j < n {
        let count = (n - j).min(VNNI_KEYS);
        let mut acc = [zero; 4];
        for (g, a) in acc.iter_mut().enumerate() {
            let first = j + 4 * g;
            // Keys first.. of this vector that exist (0 to 4); absent keys are zeros.
            let keys_here = count.saturating_sub(4 * g).min(4);
            let mut v = zero;
            if keys_here > 0 {
                let p = keys.as_ptr().add(first * stride);
                if stride == 16 {
                    // Four consecutive keys: one load, each block's first d bytes.
                    let blocks = (1u64 << (16 * keys_here as u32 - 1) << 1).wrapping_sub(1);
                    let mask = row.wrapping_mul(0x0001_0001_0001_0001) & blocks;
                    v = _mm512_maskz_loadu_epi8(mask, p.cast());
                } else {
                    let load = |i: usize| {
                        if i < keys_here {
                            _mm_maskz_loadu_epi8(row as __mmask16, p.add(i * stride).cast())
                        } else {
                            _mm_setzero_si128()
                        }
                    };
                    v = _mm512_castsi128_si512(load(0));
                    v = _mm512_inserti32x4::<1>(v, load(1));
                    v = _mm512_inserti32x4::<2>(v, load(2));
                    v = _mm512_inserti32x4::<3>(v, load(3));
                }
            }
            *a = _mm512_dpbusd_epi32(zero, _mm512_xor_si512(v, flip), qv);
        }
        // Per block b: [Σ key b, Σ key 4 + b, Σ key 8 + b, Σ key 12 + b].
        let s01 = _mm512_add_epi32(
            _mm512_unpacklo_epi32(acc[0], acc[1]),
            _mm512_unpackhi_epi32(acc[0], acc[1]),
        );
        let s23 = _mm512_add_epi32(
            _mm512_unpacklo_epi32(acc[2], acc[3]),
            _mm512_unpackhi_epi32(acc[2], acc[3]),
        );
        let t = _mm512_add_epi32(
            _mm512_unpacklo_epi64(s01, s23),
            _mm512_unpackhi_epi64(s01, s23),
        );
        let sums = _mm512_sub_epi32(_mm512_permutexvar_epi32(order, t), correction);
        let store_mask: __mmask16 = ((1u32 << count) - 1) as u16;
        _mm512_mask_storeu_epi32(out.as_mut_ptr().add(j).cast(), store_mask, sums);
        j += count;
    }
}

/// [`dot_keys_vnni`] for `d = 64·CHUNKS`, or any `d` for `CHUNKS = 0`. Caller: as there.
#[cfg(microattn_avx512)]
#[allow(clippy::incompatible_msrv)]
#[inline(always)]
unsafe fn dot_keys_vnni_chunks<const CHUNKS: usize>(
    q: &[i8],
    keys: &[i8],
    stride: usize,
    out: &mut [i32],
) {
    let d = q.len();
    let chunks = if CHUNKS > 0 { CHUNKS } else { d / 64 };
    // Bytes of the last, partial 64-byte chunk (masked loads read nothing past them).
    let tail_mask: __mmask64 = if CHUNKS > 0 {
        0
    } else {
        (1u64 << (d % 64)) - 1
    };
    let qp = q.as_ptr();
    let flip = _mm512_set1_epi8(-128);
    // The bias correction 128·Σq (Σ(k + 128)·q - 128·Σq = Σ k·q), by `vpdpbusd` of the
    // bias bytes (0x80 = 128 unsigned) and the query.
    let mut bias = _mm512_setzero_si512();
    for c in 0..chunks {
        bias = _mm512_dpbusd_epi32(bias, flip, _mm512_loadu_si512(qp.add(64 * c).cast()));
    }
    if tail_mask != 0 {
        let qv = _mm512_maskz_loadu_epi8(tail_mask, qp.add(64 * chunks));
        bias = _mm512_dpbusd_epi32(bias, flip, qv);
    }
    let correction = _mm512_reduce_add_epi32(bias);
    let n = out.len();
    let mut j = 0;
    while n - j >= VNNI_SINGLE_BELOW {
        let count = (n - j).min(VNNI_KEYS);
        let mut acc = [_mm512_setzero_si512(); VNNI_KEYS];
        // One running pointer (sixteen would not fit in registers); keys past `count` repeat
        // the last one (in bounds), their sums are not stored.
        let mut p = keys.as_ptr().add(j * stride);
        for (i, a) in acc.iter_mut().enumerate() {
            for c in 0..chunks {
                let qv = _mm512_loadu_si512(qp.add(64 * c).cast());
                let kv = _mm512_xor_si512(_mm512_loadu_si512(p.add(64 * c).cast()), flip);
                *a = _mm512_dpbusd_epi32(*a, kv, qv);
            }
            if tail_mask != 0 {
                // Masked-off bytes: q = 0, so their biased keys (0x80) add nothing.
                let qv = _mm512_maskz_loadu_epi8(tail_mask, qp.add(64 * chunks));
                let k = _mm512_maskz_loadu_epi8(tail_mask, p.add(64 * chunks));
                *a = _mm512_dpbusd_epi32(*a, _mm512_xor_si512(k, flip), qv);
            }
            if i + 1 < count {
                p = p.add(stride);
            }
        }
        let sums = _mm512_sub_epi32(sum16_epi32(&acc), _mm512_set1_epi32(correction));
        let store_mask: __mmask16 = ((1u32 << count) - 1) as u16;
        _mm512_mask_storeu_epi32(out.as_mut_ptr().add(j).cast(), store_mask, sums);
        j += count;
    }
    // The last few keys one at a time.
    for (i, o) in out.iter_mut().skip(j).enumerate() {
        let p = keys.as_ptr().add((j + i) * stride);
        let mut a = _mm512_setzero_si512();
        for c in 0..chunks {
            let qv = _mm512_loadu_si512(qp.add(64 * c).cast());
            let kv = _mm512_xor_si512(_mm512_loadu_si512(p.add(64 * c).cast()), flip);
            a = _mm512_dpbusd_epi32(a, kv, qv);
        }
        if tail_mask != 0 {
            let qv = _mm512_maskz_loadu_epi8(tail_mask, qp.add(64 * chunks));
            let k = _mm512_maskz_loadu_epi8(tail_mask, p.add(64 * chunks));
            a = _mm512_dpbusd_epi32(a, _mm512_xor_si512(k, flip), qv);
        }
        *o = _mm512_reduce_add_epi32(a).wrapping_sub(correction);
    }
}

/// Caller: AVX-512F/BW/VL, AVX512_VNNI; every row fits (see [`pv_i8`]).
#[cfg(microattn_avx512)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2")]
unsafe fn pv_avx512(w: &[i32], v: &[i8], stride: usize, acc: &mut [i32]) {
    let dv = acc.len();
    if weights_fit_u16(w) {
        if dv <= 16 {
            pv_vnni_short(w, v, stride, acc);
            return;
        }
        // 64 columns at a time, four rows per `vpdpbusd` (one for the weights' low bytes,
        // one for their high bytes); the last group's loads and stores are masked.
        let mut col = 0;
        while col < dv {
            pv_vnni_quads(w, v, stride, acc, col, (dv - col).min(64));
            col += 64;
        }
        return;
    }
    if weights_fit_i16(w) {
        // 64 columns (four accumulators) at a time, two rows per `vpdpwssd`; the last
        // group's loads and stores are masked.
        let mut col = 0;
        while col < dv {
            let left = dv - col;
            if left > 32 {
                pv_vnni_pairs::<2>(w, v, stride, acc, col, left.min(64));
            } else {
                pv_vnni_pairs::<1>(w, v, stride, acc, col, left);
            }
            col += 64;
        }
        return;
    }
    let mut col = 0;
    // 64 columns (four `zmm` accumulators) at a time; the last group's chunks are masked.
    while col < dv {
        let left = dv - col;
        match left.div_ceil(16) {
            1 => pv_avx512_chunks::<1>(w, v, stride, acc, col, left),
            2 => pv_avx512_chunks::<2>(w, v, stride, acc, col, left),
            3 => pv_avx512_chunks::<3>(w, v, stride, acc, col, left),
            _ => pv_avx512_chunks::<4>(w, v, stride, acc, col, left.min(64)),
        }
        col += 64;
    }
}

/// Columns `col..col + cols` of [`pv_avx512`] (`16·(N-1) < cols <= 16·N`). Caller:
/// AVX-512F/BW/VL, rows fit, `col + cols <= acc.len()`.
#[cfg(microattn_avx512)]
#[allow(clippy::incompatible_msrv)]
#[inline(always)]
unsafe fn pv_avx512_chunks<const N: usize>(
    w: &[i32],
    v: &[i8],
    stride: usize,
    acc: &mut [i32],
    col: usize,
    cols: usize,
) {
    let ap = acc.as_mut_ptr().add(col);
    let mut masks = [0u16; N];
    for (k, m) in masks.iter_mut().enumerate() {
        let lanes = cols.saturating_sub(16 * k).min(16);
        *m = ((1u32 << lanes) - 1) as u16;
    }
    let mut a = [_mm512_setzero_si512(); N];
    for (k, (x, &m)) in a.iter_mut().zip(&masks).enumerate() {
        *x = _mm512_maskz_loadu_epi32(m, ap.add(16 * k).cast());
    }
    for (j, &wj) in w.iter().enumerate() {
        let ws = _mm512_set1_epi32(wj);
        let row = v.as_ptr().add(j * stride + col);
        for (k, (x, &m)) in a.iter_mut().zip(&masks).enumerate() {
            let bytes = _mm_maskz_loadu_epi8(m, row.add(16 * k).cast());
            *x = _mm512_add_epi32(*x, _mm512_mullo_epi32(ws, _mm512_cvtepi8_epi32(bytes)));
        }
    }
    for (k, (x, &m)) in a.iter().zip(&masks).enumerate() {
        _mm512_mask_storeu_epi32(ap.add(16 * k).cast(), m, *x);
    }
}

/// Columns `col..col + cols` of [`pv_avx512`] with 16-bit weights (`32·(N-1) < cols <=
/// 32·N`): per 32 columns, rows `j, j+1` sign-extended to `i16`, interleaved in-lane and
/// summed with one `vpdpwssd` per half; the halves hold columns in the unpack order and are
/// put back in order once, at the end. Caller: AVX-512F/BW/VL + VNNI, rows fit,
/// `col + cols <= acc.len()`, weights fit in `i16`.
#[cfg(microattn_avx512)]
#[allow(clippy::incompatible_msrv)]
#[inline(always)]
unsafe fn pv_vnni_pairs<const N: usize>(
    w: &[i32],
    v: &[i8],
    stride: usize,
    acc: &mut [i32],
    col: usize,
    cols: usize,
) {
    let mut masks = [0u32; N];
    for (g, m) in masks.iter_mut().enumerate() {
        let lanes = cols.saturating_sub(32 * g).min(32);
        *m = (((1u64 << lanes) - 1) & 0xFFFF_FFFF) as u32;
    }
    // Per group: lo = columns 8L..8L+4 of each 128-bit lane L, hi = 8L+4..8L+8.
    let mut lo = [_mm512_setzero_si512(); N];
    let mut hi = [_mm512_setzero_si512(); N];
    let base = v.as_ptr().add(col);
    let rows = |j: usize, g: usize, m: u32| {
        _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(
            m,
            base.add(j * stride + 32 * g).cast(),
        ))
    };
    let mut pairs = w.chunks_exact(2);
    let mut j = 0;
    for pair in pairs.by_ref() {
        let ws = _mm512_set1_epi32(weight_pair(pair[0], pair[1]));
        for (g, &m) in masks.iter().enumerate() {
            let (a, b) = (rows(j, g, m), rows(j + 1, g, m));
            lo[g] = _mm512_dpwssd_epi32(lo[g], _mm512_unpacklo_epi16(a, b), ws);
            hi[g] = _mm512_dpwssd_epi32(hi[g], _mm512_unpackhi_epi16(a, b), ws);
        }
        j += 2;
    }
    if let [last] = pairs.remainder() {
        let ws = _mm512_set1_epi32(weight_pair(*last, 0));
        let z = _mm512_setzero_si512();
        for (g, &m) in masks.iter().enumerate() {
            let a = rows(j, g, m);
            lo[g] = _mm512_dpwssd_epi32(lo[g], _mm512_unpacklo_epi16(a, z), ws);
            hi[g] = _mm512_dpwssd_epi32(hi[g], _mm512_unpackhi_epi16(a, z), ws);
        }
    }
    // Column c of a group sits in lane 4·(c/8) + c%4 of lo (c%8 < 4) or of hi (index + 16
    // for `vpermt2d`).
    let index = |first: i32| {
        let mut idx = [0i32; 16];
        for (i, x) in idx.iter_mut().enumerate() {
            let c = first + i as i32;
            *x = 4 * (c / 8) + c % 4 + if c % 8 >= 4 { 16 } else { 0 };
        }
        _mm512_loadu_si512(idx.as_ptr().cast())
    };
    let (idx0, idx1) = (index(0), index(16));
    let ap = acc.as_mut_ptr().add(col);
    for (g, &m) in masks.iter().enumerate() {
        let halves = [
            (_mm512_permutex2var_epi32(lo[g], idx0, hi[g]), m as u16),
            (
                _mm512_permutex2var_epi32(lo[g], idx1, hi[g]),
                (m >> 16) as u16,
            ),
        ];
        for (h, (sum, mask)) in halves.into_iter().enumerate() {
            let p = ap.add(32 * g + 16 * h);
            let a = _mm512_maskz_loadu_epi32(mask, p.cast());
            _mm512_mask_storeu_epi32(p.cast(), mask, _mm512_add_epi32(a, sum));
        }
    }
}

/// `(a·b) >> 32` per 32-bit lane: `vpmuludq` on the even lanes and on the odd lanes moved
/// down, the high halves put back in place by a blend.
#[inline(always)]
unsafe fn mul_hi_avx2(a: __m256i, b: __m256i) -> __m256i {
    let even = _mm256_mul_epu32(a, b);
    let odd = _mm256_mul_epu32(_mm256_srli_epi64::<32>(a), _mm256_srli_epi64::<32>(b));
    _mm256_blend_epi32::<0xAA>(_mm256_srli_epi64::<32>(even), odd)
}

/// Lanes where `a >= b` as unsigned (all ones), else 0.
#[inline(always)]
unsafe fn ge_epu32_avx2(a: __m256i, b: __m256i) -> __m256i {
    _mm256_cmpeq_epi32(_mm256_max_epu32(a, b), a)
}

/// Caller: AVX2. Eight keys per step as [`scalar::dot_weights_q15`] does one (the same `u32`
/// operations lane by lane, the table entry by a gather); the last `w.len() % 8` keys in
/// scalar code.
#[target_feature(enable = "avx2")]
unsafe fn weights_avx2(w: &mut [i32], s: WeightScale, exp2: &Exp2Q15<'_>) -> u32 {
    let c = |x: u32| _mm256_set1_epi32(x as i32);
    let (max, lo, hi, cutoff) = (_mm256_set1_epi32(s.max), c(s.lo), c(s.hi), c(s.cutoff));
    let (ln2, ln2_third) = (c(exp2.ln2_q32), c(exp2.ln2_third_q32));
    let (zero_t, top, cap) = (c(WEIGHT_ZERO_T), c(1 << 31), c((1 << 15) - 1));
    let (one, fourteen, k_mask) = (c(1), c(14), c(63));
    let table = exp2.table.as_ptr().cast::<i32>();
    let mut sum = _mm256_setzero_si256();
    let mut chunks = w.chunks_exact_mut(8);
    for chunk in chunks.by_ref() {
        let x = _mm256_loadu_si256(chunk.as_ptr().cast());
        // d = |max - x|; t = hi32(d·lo) + d·hi; weight 0 from d >= cutoff or t >= 17·2^20.
        let d = _mm256_sub_epi32(_mm256_max_epi32(max, x), _mm256_min_epi32(max, x));
        let t = _mm256_add_epi32(mul_hi_avx2(d, lo), _mm256_mullo_epi32(d, hi));
        let zero = _mm256_or_si256(ge_epu32_avx2(d, cutoff), ge_epu32_avx2(t, zero_t));
        // r·2^11 and r·2^12 (r = t mod 2^14): u and u/3.
        let r11 = _mm256_srli_epi32::<7>(_mm256_slli_epi32::<18>(t));
        let u = mul_hi_avx2(r11, ln2);
        let u3 = mul_hi_avx2(_mm256_slli_epi32::<1>(r11), ln2_third);
        let half_sq = mul_hi_avx2(u, u);
        let poly = _mm256_sub_epi32(
            _mm256_add_epi32(_mm256_sub_epi32(top, u), half_sq),
            mul_hi_avx2(half_sq, u3),
        );
        let k = _mm256_and_si256(_mm256_srli_epi32::<14>(t), k_mask);
        let entry = _mm256_i32gather_epi32::<4>(table, k);
        let q30 = mul_hi_avx2(entry, poly);
        // ((q30 >> (14 + n)) + 1) >> 1: rounded, as (q30 + 2^(14+n)) >> (15+n).
        let shift = _mm256_add_epi32(_mm256_srli_epi32::<20>(t), fourteen);
        let rounded = _mm256_srli_epi32::<1>(_mm256_add_epi32(_mm256_srlv_epi32(q30, shift), one));
        let weight = _mm256_andnot_si256(zero, _mm256_min_epu32(rounded, cap));
        sum = _mm256_add_epi32(sum, weight);
        _mm256_storeu_si256(chunk.as_mut_ptr().cast(), weight);
    }
    let half = _mm_add_epi32(
        _mm256_castsi256_si128(sum),
        _mm256_extracti128_si256::<1>(sum),
    );
    let mut lanes = [0u32; 4];
    _mm_storeu_si128(lanes.as_mut_ptr().cast(), half);
    let tail = chunks.into_remainder();
    let tail_sum = scalar::dot_weights_q15(tail, s.max, s.lo, s.hi, s.cutoff, exp2);
    lanes.iter().fold(tail_sum, |acc, &x| acc.wrapping_add(x))
}

/// `(a·b) >> 32` per 32-bit lane (see [`mul_hi_avx2`]).
#[cfg(microattn_avx512)]
#[allow(clippy::incompatible_msrv)]
#[inline(always)]
unsafe fn mul_hi_avx512(a: __m512i, b: __m512i) -> __m512i {
    let even = _mm512_mul_epu32(a, b);
    let odd = _mm512_mul_epu32(_mm512_srli_epi64::<32>(a), _mm512_srli_epi64::<32>(b));
    _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64::<32>(even), odd)
}

/// Caller: AVX-512F/BW/VL. Sixteen keys per step as [`scalar::dot_weights_q15`] does one (the
/// same `u32` operations lane by lane); the 64-entry table sits in four registers and
/// `vpermt2d` picks from two of them by the index's low 5 bits, a blend by its 6th; the last
/// step's loads and stores are masked.
#[cfg(microattn_avx512)]
#[allow(clippy::incompatible_msrv)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2")]
unsafe fn weights_avx512(w: &mut [i32], s: WeightScale, exp2: &Exp2Q15<'_>) -> u32 {
    let c = |x: u32| _mm512_set1_epi32(x as i32);
    let (max, lo, hi, cutoff) = (_mm512_set1_epi32(s.max), c(s.lo), c(s.hi), c(s.cutoff));
    let (ln2, ln2_third) = (c(exp2.ln2_q32), c(exp2.ln2_third_q32));
    let (zero_t, top, cap) = (c(WEIGHT_ZERO_T), c(1 << 31), c((1 << 15) - 1));
    let (one, fourteen, bit5) = (c(1), c(14), c(1 << 19));
    let tp = exp2.table.as_ptr();
    let tables = [
        _mm512_loadu_si512(tp.cast()),
        _mm512_loadu_si512(tp.add(16).cast()),
        _mm512_loadu_si512(tp.add(32).cast()),
        _mm512_loadu_si512(tp.add(48).cast()),
    ];
    // One step: the weights of 16 keys (`valid` lanes), 0 elsewhere.
    let weights = |x: __m512i, valid: __mmask16| {
        // d = |max - x|; t = hi32(d·lo) + d·hi; weight 0 from d >= cutoff or t >= 17·2^20.
        let d = _mm512_sub_epi32(_mm512_max_epi32(max, x), _mm512_min_epi32(max, x));
        let t = _mm512_add_epi32(mul_hi_avx512(d, lo), _mm512_mullo_epi32(d, hi));
        let zero = _mm512_cmpge_epu32_mask(d, cutoff) | _mm512_cmpge_epu32_mask(t, zero_t);
        // r·2^11 and r·2^12 (r = t mod 2^14): u and u/3.
        let r11 = _mm512_srli_epi32::<7>(_mm512_slli_epi32::<18>(t));
        let u = mul_hi_avx512(r11, ln2);
        let u3 = mul_hi_avx512(_mm512_slli_epi32::<1>(r11), ln2_third);
        let half_sq = mul_hi_avx512(u, u);
        let poly = _mm512_sub_epi32(
            _mm512_add_epi32(_mm512_sub_epi32(top, u), half_sq),
            mul_hi_avx512(half_sq, u3),
        );
        // k = (t >> 14) & 63: entries 0..32 or 32..64 by bit 5 of k.
        let k = _mm512_srli_epi32::<14>(t);
        let low = _mm512_permutex2var_epi32(tables[0], k, tables[1]);
        let high = _mm512_permutex2var_epi32(tables[2], k, tables[3]);
        let entry = _mm512_mask_blend_epi32(_mm512_test_epi32_mask(t, bit5), low, high);
        let q30 = mul_hi_avx512(entry, poly);
        // ((q30 >> (14 + n)) + 1) >> 1: rounded, as (q30 + 2^(14+n)) >> (15+n).
        let shift = _mm512_add_epi32(_mm512_srli_epi32::<20>(t), fourteen);
        let rounded = _mm512_srli_epi32::<1>(_mm512_add_epi32(_mm512_srlv_epi32(q30, shift), one));
        _mm512_maskz_min_epu32(valid & !zero, rounded, cap)
    };
    let mut sum = _mm512_setzero_si512();
    let n = w.len();
    let p = w.as_mut_ptr();
    let mut j = 0;
    // Two steps at a time: independent chains of about 50 cycles of latency each.
    while j + 32 <= n {
        let x0 = _mm512_loadu_si512(p.add(j).cast());
        let x1 = _mm512_loadu_si512(p.add(j + 16).cast());
        let (w0, w1) = (weights(x0, !0), weights(x1, !0));
        sum = _mm512_add_epi32(sum, _mm512_add_epi32(w0, w1));
        _mm512_storeu_si512(p.add(j).cast(), w0);
        _mm512_storeu_si512(p.add(j + 16).cast(), w1);
        j += 32;
    }
    while j < n {
        let valid = (((1u32 << (n - j).min(16)) - 1) & 0xFFFF) as __mmask16;
        let x = _mm512_maskz_loadu_epi32(valid, p.add(j).cast());
        let weight = weights(x, valid);
        sum = _mm512_add_epi32(sum, weight);
        _mm512_mask_storeu_epi32(p.add(j).cast(), valid, weight);
        j += 16;
    }
    _mm512_reduce_add_epi32(sum) as u32
}

/// Columns `col..col + cols` (`cols <= 64`) of [`pv_avx512`] with weights in `0..=65535`: rows
/// `j..j+4` interleaved byte by byte (two in-lane unpack steps, a 4×4 transpose per 128-bit
/// lane), so each 32-bit lane holds one column of four rows, and `vpdpbusd` multiplies them by
/// the four weights' low bytes (one accumulator) and high bytes (another), unsigned by signed
/// with exact `i32` sums. Lane block `l` of accumulator `k` holds columns `16l + 4k..+4`;
/// the blocks are put in order once, at the end. Caller: AVX-512F/BW/VL + VNNI, rows fit,
/// `col + cols <= acc.len()`, weights in `0..=65535`.
#[cfg(microattn_avx512)]
#[allow(clippy::incompatible_msrv)]
#[inline(always)]
unsafe fn pv_vnni_quads(
    w: &[i32],
    v: &[i8],
    stride: usize,
    acc: &mut [i32],
    col: usize,
    cols: usize,
) {
    let m: __mmask64 = if cols >= 64 { !0 } else { (1u64 << cols) - 1 };
    let mut lo = [_mm512_setzero_si512(); 4];
    let mut hi = [_mm512_setzero_si512(); 4];
    let zero = _mm512_setzero_si512();
    let mut row = v.as_ptr().add(col);
    for chunk in w.chunks(64) {
        // The weights' low and high bytes, four keys per `u32` (key 4g + i in byte i).
        let (mut low_bytes, mut high_bytes) = ([0u32; 16], [0u32; 16]);
        for (q, part) in chunk.chunks(16).enumerate() {
            let keep = (((1u32 << part.len()) - 1) & 0xFFFF) as __mmask16;
            let wv = _mm512_maskz_loadu_epi32(keep, part.as_ptr());
            let (l, h) = (low_bytes.as_mut_ptr(), high_bytes.as_mut_ptr());
            _mm_storeu_si128(l.add(4 * q).cast(), _mm512_cvtepi32_epi8(wv));
            let high = _mm512_cvtepi32_epi8(_mm512_srli_epi32::<8>(wv));
            _mm_storeu_si128(h.add(4 * q).cast(), high);
        }
        let rows = chunk.len();
        for g in 0..rows / 4 {
            let r = [
                _mm512_maskz_loadu_epi8(m, row.cast()),
                _mm512_maskz_loadu_epi8(m, row.add(stride).cast()),
                _mm512_maskz_loadu_epi8(m, row.add(2 * stride).cast()),
                _mm512_maskz_loadu_epi8(m, row.add(3 * stride).cast()),
            ];
            row = row.add(4 * stride);
            let (wl, wh) = (low_bytes[g & 15], high_bytes[g & 15]);
            quad_step(&mut lo, &mut hi, r, wl, wh);
        }
        if rows % 4 != 0 {
            // The last rows; rows past the chunk (weight 0) are zeros, not read.
            let mut r = [zero; 4];
            for x in r.iter_mut().take(rows % 4) {
                *x = _mm512_maskz_loadu_epi8(m, row.cast());
                row = row.add(stride);
            }
            let g = rows / 4;
            quad_step(&mut lo, &mut hi, r, low_bytes[g & 15], high_bytes[g & 15]);
        }
    }
    let mut s = [zero; 4];
    for (k, x) in s.iter_mut().enumerate() {
        *x = _mm512_add_epi32(lo[k], _mm512_slli_epi32::<8>(hi[k]));
    }
    // Block l of s[k] is columns 16l + 4k..+4: a 4×4 transpose of 128-bit blocks.
    let t0 = _mm512_shuffle_i32x4::<0x44>(s[0], s[1]);
    let t1 = _mm512_shuffle_i32x4::<0xEE>(s[0], s[1]);
    let t2 = _mm512_shuffle_i32x4::<0x44>(s[2], s[3]);
    let t3 = _mm512_shuffle_i32x4::<0xEE>(s[2], s[3]);
    let out = [
        _mm512_shuffle_i32x4::<0x88>(t0, t2),
        _mm512_shuffle_i32x4::<0xDD>(t0, t2),
        _mm512_shuffle_i32x4::<0x88>(t1, t3),
        _mm512_shuffle_i32x4::<0xDD>(t1, t3),
    ];
    let ap = acc.as_mut_ptr().add(col);
    for (q, sum) in out.into_iter().enumerate() {
        let mask = ((m >> (16 * q)) & 0xFFFF) as __mmask16;
        if mask == 0 {
            break;
        }
        let p = ap.add(16 * q);
        let a = _mm512_maskz_loadu_epi32(mask, p);
        _mm512_mask_storeu_epi32(p, mask, _mm512_add_epi32(a, sum));
    }
}

/// One step of [`pv_vnni_quads`]: four rows (64 columns each) times the four weights' low
/// bytes `wl` and high bytes `wh` into the accumulators. Caller: AVX-512BW + VNNI.
#[cfg(microattn_avx512)]
#[allow(clippy::incompatible_msrv)]
#[inline(always)]
unsafe fn quad_step(
    lo: &mut [__m512i; 4],
    hi: &mut [__m512i; 4],
    r: [__m512i; 4],
    wl: u32,
    wh: u32,
) {
    let (wl, wh) = (_mm512_set1_epi32(wl as i32), _mm512_set1_epi32(wh as i32));
    let a = _mm512_unpacklo_epi8(r[0], r[1]);
    let b = _mm512_unpackhi_epi8(r[0], r[1]);
    let c = _mm512_unpacklo_epi8(r[2], r[3]);
    let d = _mm512_unpackhi_epi8(r[2], r[3]);
    // Columns 16l + 4k..+4 of the four rows in block l of x[k].
    let x = [
        _mm512_unpacklo_epi16(a, c),
        _mm512_unpackhi_epi16(a, c),
        _mm512_unpacklo_epi16(b, d),
        _mm512_unpackhi_epi16(b, d),
    ];
    for k in 0..4 {
        lo[k] = _mm512_dpbusd_epi32(lo[k], wl, x[k]);
        hi[k] = _mm512_dpbusd_epi32(hi[k], wh, x[k]);
    }
}

/// [`pv_avx512`] for `dv <= 16` with weights in `0..=65535`: sixteen rows per step, row
/// `4g + b` in block `b` of vector `g` (one load when the rows are 16 bytes apart), two unpack
/// steps put rows `b, 4 + b, 8 + b, 12 + b` of one column in each 32-bit lane of block `b`,
/// and the weights' bytes are shuffled to match (`vpshufb` per block); the four blocks hold
/// different rows of the same columns and are added at the end. Caller: AVX-512F/BW/VL +
/// VNNI, rows fit, `acc.len() <= 16`, weights in `0..=65535`.
#[cfg(microattn_avx512)]
#[allow(clippy::incompatible_msrv)]
#[inline(always)]
unsafe fn pv_vnni_short(w: &[i32], v: &[i8], stride: usize, acc: &mut [i32]) {
    let dv = acc.len();
    // The row's bytes in a block (loads read nothing past them).
    let row: u64 = (1u64 << dv) - 1;
    let zero = _mm512_setzero_si512();
    // Block b takes bytes b, 4 + b, 8 + b, 12 + b of the 16 weight bytes, in every lane.
    let spread = _mm512_set_epi32(
        0x0F0B_0703,
        0x0F0B_0703,
        0x0F0B_0703,
        0x0F0B_0703,
        0x0E0A_0602,
        0x0E0A_0602,
        0x0E0A_0602,
        0x0E0A_0602,
        0x0D09_0501,
        0x0D09_0501,
        0x0D09_0501,
        0x0D09_0501,
        0x0C08_0400,
        0x0C08_0400,
        0x0C08_0400,
        0x0C08_0400,
    );
    let mut lo = [zero; 4];
    let mut hi = [zero; 4];
    let mut base = v.as_ptr();
    for chunk in w.chunks(16) {
        let rows = chunk.len();
        let keep = (((1u32 << rows) - 1) & 0xFFFF) as __mmask16;
        let wv = _mm512_maskz_loadu_epi32(keep, chunk.as_ptr());
        let low = _mm512_broadcast_i32x4(_mm512_cvtepi32_epi8(wv));
        let high = _mm512_broadcast_i32x4(_mm512_cvtepi32_epi8(_mm512_srli_epi32::<8>(wv)));
        let (wl, wh) = (
            _mm512_shuffle_epi8(low, spread),
            _mm512_shuffle_epi8(high, spread),
        );
        let mut z = [zero; 4];
        for (g, x) in z.iter_mut().enumerate() {
            // Rows 4g.. of this chunk that exist (0 to 4); absent rows are zeros.
            let rows_here = rows.saturating_sub(4 * g).min(4);
            if rows_here == 0 {
                continue;
            }
            let p = base.add(4 * g * stride);
            if stride == 16 {
                let blocks = (1u64 << (16 * rows_here as u32 - 1) << 1).wrapping_sub(1);
                let mask = row.wrapping_mul(0x0001_0001_0001_0001) & blocks;
                *x = _mm512_maskz_loadu_epi8(mask, p);
            } else {
                let load = |i: usize| {
                    if i < rows_here {
                        _mm_maskz_loadu_epi8(row as __mmask16, p.add(i * stride))
                    } else {
                        _mm_setzero_si128()
                    }
                };
                let mut y = _mm512_castsi128_si512(load(0));
                y = _mm512_inserti32x4::<1>(y, load(1));
                y = _mm512_inserti32x4::<2>(y, load(2));
                *x = _mm512_inserti32x4::<3>(y, load(3));
            }
        }
        base = base.add(rows * stride);
        let a = _mm512_unpacklo_epi8(z[0], z[1]);
        let b = _mm512_unpackhi_epi8(z[0], z[1]);
        let c = _mm512_unpacklo_epi8(z[2], z[3]);
        let d = _mm512_unpackhi_epi8(z[2], z[3]);
        // Columns 4k..4k + 4 of rows b, 4 + b, 8 + b, 12 + b in block b.
        let x = [
            _mm512_unpacklo_epi16(a, c),
            _mm512_unpackhi_epi16(a, c),
            _mm512_unpacklo_epi16(b, d),
            _mm512_unpackhi_epi16(b, d),
        ];
        for k in 0..4 {
            lo[k] = _mm512_dpbusd_epi32(lo[k], wl, x[k]);
            hi[k] = _mm512_dpbusd_epi32(hi[k], wh, x[k]);
        }
    }
    let mut s = [zero; 4];
    for (k, x) in s.iter_mut().enumerate() {
        *x = _mm512_add_epi32(lo[k], _mm512_slli_epi32::<8>(hi[k]));
    }
    // The four blocks of s[k] summed: columns 4k..4k + 4, in order.
    let half = |a: __m512i, b: __m512i| {
        _mm512_add_epi32(
            _mm512_shuffle_i32x4::<0x44>(a, b),
            _mm512_shuffle_i32x4::<0xEE>(a, b),
        )
    };
    let (u01, u23) = (half(s[0], s[1]), half(s[2], s[3]));
    let sum = _mm512_add_epi32(
        _mm512_shuffle_i32x4::<0x88>(u01, u23),
        _mm512_shuffle_i32x4::<0xDD>(u01, u23),
    );
    let mask = (row & 0xFFFF) as __mmask16;
    let a = _mm512_maskz_loadu_epi32(mask, acc.as_ptr());
    _mm512_mask_storeu_epi32(acc.as_mut_ptr(), mask, _mm512_add_epi32(a, sum));
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use std::vec::Vec;

    /// The vector maxima against the iterator's, on every length up to 70 and random values
    /// (each path called directly when the CPU has it: no global backend switch).
    #[test]
    fn max_i32_matches_iterator() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for len in 0..70 {
            for round in 0..20 {
                let w: Vec<i32> = (0..len)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        match round % 3 {
                            0 => state as i32,
                            1 => -((state % 1000) as i32),
                            _ => i32::MIN + (state % 3) as i32,
                        }
                    })
                    .collect();
                let want = w.iter().copied().max();
                assert_eq!(max_i32(&w), want);
                if std::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2.
                    assert_eq!(unsafe { max_avx2(&w) }, want, "avx2 {w:?}");
                }
                #[cfg(microattn_avx512)]
                if std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512bw")
                    && std::is_x86_feature_detected!("avx512vl")
                    && std::is_x86_feature_detected!("avx512vnni")
                {
                    // SAFETY: the CPU has the features.
                    assert_eq!(unsafe { max_avx512(&w) }, want, "avx512 {w:?}");
                }
            }
        }
    }
}
