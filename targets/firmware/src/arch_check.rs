//! On-target check that the primitives the kernels use on this core give exactly the bits of
//! the scalar reference: the int8 ones (`microattn::arch::{dot_i8, dot_i8_keys, pv_i8}`:
//! Cortex-M DSP `asm!`, Helium, or scalar) against `microattn::arch::scalar`, and the f32 ones
//! of the selected backend (`cortex-m-fpu` on hard-float cores) against the scalar backend. A
//! host test cannot run the `asm!`, so this runs on every emulated core. One line per
//! primitive:
//!
//! ```text
//! check arch_i8 PRIMITIVE cases N failed M
//! check arch_f32 BACKEND PRIMITIVE cases N failed M
//! check arch_f16 BACKEND PRIMITIVE cases N failed M   (hard-float cores only)
//! check arch_i8 long_passes cases N failed M          (hard-float cores only)
//! check arch_i8 dot_weights_q15 cases N failed M      (hard-float cores only)
//! check arch_i8 packed_sdpa cases N failed M          (hard-float cores only)
//! ```
//!
//! The last line runs `int8_sdpa` with the compact scratch and with
//! `int8_sdpa_packed_scratch_len` (keys and values packed once per call on the DSP cores, with
//! the `d = 64` and full-tile loops the conformance cases are too small to reach) and requires
//! the same int8 bytes.

use defmt::println;
use microattn::arch::{self, scalar};

/// Longest vector and most keys / rows tried.
const MAX_LEN: usize = 72;
const MAX_ROWS: usize = 5;
const POOL: usize = MAX_ROWS * (MAX_LEN + 3);

/// xorshift32.
struct Rng(u32);

impl Rng {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        self.0
    }

    /// Bytes over the whole int8 range, with the extremes -128 and 127 often.
    fn fill(&mut self, x: &mut [i8]) {
        for v in x.iter_mut() {
            let r = self.next();
            *v = match r % 16 {
                0 => -128,
                1 => 127,
                _ => (r >> 8) as u8 as i8,
            };
        }
    }
}

/// Runs the checks and prints their lines; returns the number of failed cases.
pub fn run() -> usize {
    let mut rng = Rng(0x1234_5678);
    let failed = check_i8(&mut rng) + check_f32(&mut rng);
    // The f16 lines only where a hard-float backend could differ from scalar (the M0's flash
    // has no room for a scalar-against-scalar check).
    #[cfg(target_abi = "eabihf")]
    let failed = failed
        + check_f16(&mut rng)
        + check_i8_long(&mut rng)
        + check_weights(&mut rng)
        + check_packed_sdpa(&mut rng);
    failed
}

/// Most keys / value rows of [`check_i8_long`]: past the 32-key passes of the Helium P·V and
/// the multi-key Q·K loops of the DSP and Helium versions, with remainders.
#[cfg(target_abi = "eabihf")]
const LONG_ROWS: usize = 70;

/// The int8 primitives on many keys and rows with the SDPA's own weight range (Q15 softmax
/// weights, 0 ..= 2^15, some negative ones too), which the short sweep of [`check_i8`] rarely
/// reaches. Hard-float cores only: they are the ones with DSP or Helium versions.
#[cfg(target_abi = "eabihf")]
#[inline(never)]
fn check_i8_long(rng: &mut Rng) -> usize {
    const ROWS: [usize; 9] = [6, 8, 16, 31, 32, 33, 63, 64, LONG_ROWS];
    const LENS: [usize; 8] = [1, 4, 15, 16, 32, 48, 64, 72];
    let mut q = [0i8; MAX_LEN];
    let mut pool = [0i8; LONG_ROWS * (MAX_LEN + 3)];
    let (mut cases, mut failed) = (0, 0);
    for &rows in &ROWS {
        for &len in &LENS {
            // Back-to-back rows and padded ones.
            for stride in [len, len + 3] {
                rng.fill(&mut q);
                rng.fill(&mut pool);
                let (mut got, mut want) = ([0i32; LONG_ROWS], [0i32; LONG_ROWS]);
                let ok = arch::dot_i8_keys(&q[..len], &pool, stride, &mut got[..rows]).is_ok();
                scalar::dot_i8_keys(&q[..len], &pool, stride, &mut want[..rows]);
                cases += 1;
                if !ok || got != want {
                    failed += 1;
                }
                let mut w = [0i32; LONG_ROWS];
                for x in w.iter_mut() {
                    let r = rng.next();
                    *x = match r % 16 {
                        0 => 1 << 15,
                        1 => 0,
                        2 => -((r >> 17) as i32), // -(2^15 - 1) ..= 0
                        _ => (r >> 17) as i32,    // 0 ..= 2^15 - 1
                    };
                }
                let mut got = [0i32; MAX_LEN];
                for (i, a) in got.iter_mut().enumerate() {
                    *a = (i as i32 - 20) * 1000;
                }
                let mut want = got;
                let ok = arch::pv_i8(&w[..rows], &pool, stride, &mut got[..len]).is_ok();
                scalar::pv_i8(&w[..rows], &pool, stride, &mut want[..len]);
                cases += 1;
                if !ok || got != want {
                    failed += 1;
                    if failed == 1 {
                        println!(
                            "pv_i8 long cols={=usize} rows={=usize}: mismatch",
                            len, rows
                        );
                    }
                }
            }
        }
    }
    println!(
        "check arch_i8 long_passes cases {=usize} failed {=usize}",
        cases, failed
    );
    failed
}

/// `arch::dot_weights_q15` (the int8 SDPA's softmax weights: `asm!` on the DSP cores)
/// against `arch::scalar` on every Q20 logit difference that gives a distinct weight path:
/// a sweep of `t` over `0 ..= 17·2^20 + 2^16` (the weight-0 limit) in steps that meet
/// every `2^-n` and table entry, with random raw dot products around a maximum.
#[cfg(target_abi = "eabihf")]
#[inline(never)]
fn check_weights(rng: &mut Rng) -> usize {
    use microattn::arch::Exp2Q15;
    let mut table = [0u32; 64];
    for (k, t) in table.iter_mut().enumerate() {
        // round(2^31 · 2^(-k/64)), as the library's table (any table checks the arithmetic).
        *t = libm::round(libm::exp2(31.0 - k as f64 / 64.0)) as u32;
    }
    let exp2 = Exp2Q15 {
        table: &table,
        ln2_q32: 2_977_044_472,
        ln2_third_q32: 992_348_157,
    };
    let (mut cases, mut failed) = (0, 0);
    // Multiplier 2^20 / 2^32 per unit (lo = 2^20, hi = 0 would be t = d >> 12): use hi = 1,
    // lo = 0 so that t = d, and sweep d directly.
    let mut d = 0u32;
    while d <= (17 << 20) + (1 << 16) {
        let mut got = [0i32; 61];
        for (j, x) in got.iter_mut().enumerate() {
            *x = 0i32.wrapping_sub(d as i32).wrapping_sub(j as i32 * 977);
        }
        let mut want = got;
        let g = arch::dot_weights_q15(&mut got, 0, 0, 1, u32::MAX, &exp2);
        let w = scalar::dot_weights_q15(&mut want, 0, 0, 1, u32::MAX, &exp2);
        cases += 1;
        if g != w || got != want {
            failed += 1;
        }
        d += 3989;
    }
    for _ in 0..64 {
        let (lo, hi, cutoff) = (rng.next(), rng.next() % 4, rng.next() >> (rng.next() % 32));
        let max = rng.next() as i32 >> 4;
        let mut got = [0i32; 64];
        for x in got.iter_mut() {
            *x = max.wrapping_sub((rng.next() >> (rng.next() % 32)) as i32);
        }
        let mut want = got;
        let g = arch::dot_weights_q15(&mut got, max, lo, hi, cutoff, &exp2);
        let w = scalar::dot_weights_q15(&mut want, max, lo, hi, cutoff, &exp2);
        cases += 1;
        if g != w || got != want {
            failed += 1;
        }
    }
    println!(
        "check arch_i8 dot_weights_q15 cases {=usize} failed {=usize}",
        cases, failed
    );
    failed
}

/// Largest `lk · (d + dv)` and packed scratch of [`check_packed_sdpa`].
#[cfg(target_abi = "eabihf")]
const PACKED_KV: usize = 130 * 128;
#[cfg(target_abi = "eabihf")]
const PACKED_SCRATCH: usize = 4 * 1024 + 256;
#[cfg(target_abi = "eabihf")]
const PACKED_CACHE: usize = 5 * 1024;

/// `int8_sdpa` with the compact scratch, with room to pack keys and values, and (one head)
/// `int8_sdpa_packed_kv` over a packed cache of the same rows: the same bytes.
#[cfg(target_abi = "eabihf")]
#[inline(never)]
fn check_packed_sdpa(rng: &mut Rng) -> usize {
    use core::ptr::addr_of_mut;
    use microattn::attention::int8::{
        int8_packed_kv_words, int8_sdpa, int8_sdpa_packed_kv, int8_sdpa_packed_scratch_len,
        int8_sdpa_scratch_len, Int8Bias, Int8PackedKv, Int8Scales, Int8SdpaParams,
    };
    use microattn::attention::{AttentionShape, Score};
    use microattn::mask::{Mask, MaskTerm};
    use microattn::Error;
    static mut KV: [i8; PACKED_KV] = [0; PACKED_KV];
    static mut SCRATCH: [i64; PACKED_SCRATCH] = [0; PACKED_SCRATCH];
    static mut CACHE: [u32; PACKED_CACHE] = [0; PACKED_CACHE];
    // SAFETY: only this function uses these statics, once at a time.
    let (kv, scratch, cache) = unsafe {
        (
            &mut *addr_of_mut!(KV),
            &mut *addr_of_mut!(SCRATCH),
            &mut *addr_of_mut!(CACHE),
        )
    };
    // (heads, kv_heads, lq, lk, d, dv): full 64-key tiles and a partial one, d = 64 (the
    // unrolled Q·K) and other multiples of 4, odd key counts, GQA.
    const SHAPES: [(usize, usize, usize, usize, usize, usize); 6] = [
        (1, 1, 3, 70, 64, 64),
        (1, 1, 2, 128, 64, 8),
        (1, 1, 2, 65, 32, 36),
        (2, 1, 1, 64, 64, 64),
        (1, 1, 4, 9, 12, 4),
        (1, 1, 2, 130, 16, 48),
    ];
    let causal = [MaskTerm::Causal];
    let (mut cases, mut failed) = (0, 0);
    for (heads, kv_heads, lq, lk, d, dv) in SHAPES {
        for (mask, scale) in [(Mask::NONE, 0.02f32), (Mask::new(&causal), 0.05)] {
            let shape = AttentionShape::multi_head(heads, kv_heads, lq, lk, d, dv);
            let mut q = [0i8; 4 * 64];
            let mut out = [[0i8; 4 * 64]; 2];
            let q = &mut q[..heads * lq * d];
            let (k, rest) = kv.split_at_mut(kv_heads * lk * d);
            let v = &mut rest[..kv_heads * lk * dv];
            rng.fill(q);
            rng.fill(k);
            rng.fill(v);
            let scales = Int8Scales {
                q: scale,
                k: scale,
                v: 0.01,
                out: 0.008,
            };
            let packed_len = int8_sdpa_packed_scratch_len(shape);
            let n = heads * lq * dv;
            let params = Int8SdpaParams::new(scales, d, Score::Dot, None, mask, Int8Bias::None);
            let ok = packed_len <= PACKED_SCRATCH
                && params
                    .and_then(|params| {
                        let [compact_out, packed_out] = &mut out;
                        let compact = &mut scratch[..int8_sdpa_scratch_len(shape)];
                        int8_sdpa(q, k, v, &mut compact_out[..n], shape, &params, compact)?;
                        let packed = &mut scratch[..packed_len];
                        int8_sdpa(q, k, v, &mut packed_out[..n], shape, &params, packed)
                    })
                    .is_ok();
            cases += 1;
            if !ok || out[0] != out[1] {
                failed += 1;
            }
            // The same single-head attention over a packed KV cache filled row by row.
            if heads == 1 {
                let ok = params
                    .and_then(|params| {
                        let words = int8_packed_kv_words(lk, d, dv);
                        let storage = cache.get_mut(..words).ok_or(Error::InvalidParameter)?;
                        let mut cache = Int8PackedKv::new(storage, lk, d, dv)?;
                        for (kr, vr) in k.chunks_exact(d).zip(v.chunks_exact(dv)) {
                            cache.push(kr, vr)?;
                        }
                        let compact = &mut scratch[..int8_sdpa_scratch_len(shape)];
                        int8_sdpa_packed_kv(q, &cache, &mut out[1][..n], &params, compact)
                    })
                    .is_ok();
                cases += 1;
                if !ok || out[0] != out[1] {
                    failed += 1;
                }
            }
        }
    }
    println!(
        "check arch_i8 packed_sdpa cases {=usize} failed {=usize}",
        cases, failed
    );
    failed
}

/// The int8 primitives against `arch::scalar` (separate frame from [`check_f32`]: the
/// buffers of both on the stack at once would not leave the M0 enough).
#[inline(never)]
fn check_i8(rng: &mut Rng) -> usize {
    let mut q = [0i8; MAX_LEN];
    let mut pool = [0i8; POOL];
    let mut failed_total = 0;

    // dot_i8_keys and dot_i8: every length up to MAX_LEN, 0 to MAX_ROWS keys, padded strides.
    let (mut cases, mut failed) = (0, 0);
    for d in 0..=MAX_LEN {
        for keys in 0..=MAX_ROWS {
            let stride = d + (d + keys) % 4;
            rng.fill(&mut q);
            rng.fill(&mut pool);
            let (mut got, mut want) = ([0i32; MAX_ROWS], [0i32; MAX_ROWS]);
            let ok = arch::dot_i8_keys(&q[..d], &pool, stride, &mut got[..keys]).is_ok();
            scalar::dot_i8_keys(&q[..d], &pool, stride, &mut want[..keys]);
            cases += 1;
            if !ok || got != want {
                failed += 1;
                if failed == 1 {
                    println!(
                        "dot_i8_keys d={=usize} keys={=usize}: {} != {}",
                        d,
                        keys,
                        &got[..keys],
                        &want[..keys]
                    );
                }
            }
            let offset = keys % 4; // unaligned starts too
            let (a, b) = (&q[..d], &pool[offset..offset + d]);
            cases += 1;
            if arch::dot_i8(a, b) != scalar::dot_i8(a, b) {
                failed += 1;
            }
        }
    }
    println!(
        "check arch_i8 dot_i8_keys cases {=usize} failed {=usize}",
        cases, failed
    );
    failed_total += failed;

    // pv_i8: softmax-like weights (0 ..= 2^16), some beyond the DSP range (|w| >= 2^23,
    // which takes the scalar fallback), every column count up to MAX_LEN.
    let (mut cases, mut failed) = (0, 0);
    for cols in 0..=MAX_LEN {
        for rows in 0..=MAX_ROWS {
            let stride = cols + (cols + rows) % 4;
            rng.fill(&mut pool);
            let mut w = [0i32; MAX_ROWS];
            for x in w.iter_mut() {
                let r = rng.next();
                *x = match r % 8 {
                    0 => 1 << 16,
                    1 => 0,
                    2 if cols % 5 == 0 => (r as i32) >> 6, // beyond 2^23: scalar fallback
                    3 => -((r >> 15) as i32),
                    _ => (r >> 15) as i32, // 0 ..= 2^17 - 1
                };
            }
            let mut got = [0i32; MAX_LEN];
            for (i, a) in got.iter_mut().enumerate() {
                *a = (i as i32 - 20) * 1000;
            }
            let mut want = got;
            let ok = arch::pv_i8(&w[..rows], &pool, stride, &mut got[..cols]).is_ok();
            scalar::pv_i8(&w[..rows], &pool, stride, &mut want[..cols]);
            cases += 1;
            if !ok || got != want {
                failed += 1;
                if failed == 1 {
                    println!("pv_i8 cols={=usize} rows={=usize}: mismatch", cols, rows);
                }
            }
        }
    }
    println!(
        "check arch_i8 pv_i8 cases {=usize} failed {=usize}",
        cases, failed
    );
    failed_total + failed
}

/// Floats in [-2, 2) with a few exact zeros, negative zeros and large values.
fn floats(rng: &mut Rng, x: &mut [f32]) {
    for v in x.iter_mut() {
        let r = rng.next();
        *v = match r % 32 {
            0 => 0.0,
            1 => -0.0,
            2 => 1.0e30,
            _ => ((r >> 8) as f32 / (1u32 << 24) as f32) * 4.0 - 2.0,
        };
    }
}

/// The f32 primitives of the selected backend (`cortex-m-fpu` on hard-float cores) against the
/// scalar backend, bit for bit.
#[inline(never)]
fn check_f32(rng: &mut Rng) -> usize {
    let selected = arch::backend();
    let Some(reference) = arch::backends().next() else {
        println!("check arch_f32 backends cases 0 failed 1");
        return 1;
    };
    let mut q = [0.0f32; MAX_LEN];
    let mut pool = [0.0f32; POOL];
    let (mut cases, mut failed) = (0, 0);
    for d in 0..=MAX_LEN {
        for keys in 0..=MAX_ROWS {
            let stride = d + (d + keys) % 4;
            floats(rng, &mut q);
            floats(rng, &mut pool);
            let (mut got, mut want) = ([0.0f32; MAX_ROWS], [0.0f32; MAX_ROWS]);
            let a = selected.dot_keys(&q[..d], &pool, stride, 0.125, &mut got[..keys]);
            let b = reference.dot_keys(&q[..d], &pool, stride, 0.125, &mut want[..keys]);
            cases += 1;
            if a.is_err() || b.is_err() || !same_bits(&got, &want) {
                failed += 1;
            }
            cases += 1;
            let (x, y) = (&q[..d], &pool[keys..keys + d]);
            if selected.dot(x, y).to_bits() != reference.dot(x, y).to_bits() {
                failed += 1;
            }
        }
    }
    println!(
        "check arch_f32 {=str} dot_keys cases {=usize} failed {=usize}",
        selected.name(),
        cases,
        failed
    );
    let fails = failed;
    let (mut cases, mut failed) = (0, 0);
    for cols in 0..=MAX_LEN {
        for rows in 0..=MAX_ROWS {
            let stride = cols + (cols + rows) % 4;
            floats(rng, &mut pool);
            let mut w = [0.0f32; MAX_ROWS];
            floats(rng, &mut w);
            let mut got = [0.0f32; MAX_LEN];
            floats(rng, &mut got);
            let mut want = got;
            let a = selected.pv_row(&w[..rows], &pool, stride, &mut got[..cols]);
            let b = reference.pv_row(&w[..rows], &pool, stride, &mut want[..cols]);
            cases += 1;
            if a.is_err() || b.is_err() || !same_bits(&got, &want) {
                failed += 1;
            }
        }
    }
    println!(
        "check arch_f32 {=str} pv_row cases {=usize} failed {=usize}",
        selected.name(),
        cases,
        failed
    );
    fails + failed
}

/// Bitwise equality (NaN payloads and signed zeros included).
fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

#[cfg(target_abi = "eabihf")]
/// f16 values: every finite bit pattern is as likely (subnormals, ±0 and ±65504 included),
/// infinities and NaNs left out (their products' NaN choice is not part of the contract).
fn halves(rng: &mut Rng, x: &mut [microattn::f16]) {
    for v in x.iter_mut() {
        let h = microattn::f16::from_bits(rng.next() as u16);
        *v = if h.is_finite() {
            h
        } else {
            microattn::f16::ONE
        };
    }
}

#[cfg(target_abi = "eabihf")]
/// The f16 primitives of the selected backend (`cortex-m-fpu` widens with `VCVTB`/`VCVTT`)
/// against the scalar backend, bit for bit.
#[inline(never)]
fn check_f16(rng: &mut Rng) -> usize {
    let selected = arch::backend();
    let Some(reference) = arch::backends().next() else {
        println!("check arch_f16 backends cases 0 failed 1");
        return 1;
    };
    let zero = microattn::f16::ZERO;
    let mut q = [zero; MAX_LEN];
    let mut pool = [zero; POOL];
    let (mut cases, mut failed) = (0, 0);
    for d in 0..=MAX_LEN {
        for keys in 0..=MAX_ROWS {
            let stride = d + (d + keys) % 4;
            halves(rng, &mut q);
            halves(rng, &mut pool);
            let (mut got, mut want) = ([0.0f32; MAX_ROWS], [0.0f32; MAX_ROWS]);
            let a = selected.dot_keys_f16(&q[..d], &pool, stride, 0.125, &mut got[..keys]);
            let b = reference.dot_keys_f16(&q[..d], &pool, stride, 0.125, &mut want[..keys]);
            cases += 1;
            if a.is_err() || b.is_err() || !same_bits(&got, &want) {
                failed += 1;
            }
        }
    }
    println!(
        "check arch_f16 {=str} dot_keys cases {=usize} failed {=usize}",
        selected.name(),
        cases,
        failed
    );
    let fails = failed;
    let (mut cases, mut failed) = (0, 0);
    for cols in 0..=MAX_LEN {
        for rows in 0..=MAX_ROWS {
            let stride = cols + (cols + rows) % 4;
            halves(rng, &mut pool);
            let mut w = [0.0f32; MAX_ROWS];
            floats(rng, &mut w);
            let mut got = [0.0f32; MAX_LEN];
            floats(rng, &mut got);
            let mut want = got;
            let a = selected.pv_row_f16(&w[..rows], &pool, stride, &mut got[..cols]);
            let b = reference.pv_row_f16(&w[..rows], &pool, stride, &mut want[..cols]);
            cases += 1;
            if a.is_err() || b.is_err() || !same_bits(&got, &want) {
                failed += 1;
            }
        }
    }
    println!(
        "check arch_f16 {=str} pv_row cases {=usize} failed {=usize}",
        selected.name(),
        cases,
        failed
    );
    fails + failed
}
