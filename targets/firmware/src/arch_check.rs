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
//! ```

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
    let failed = failed + check_f16(&mut rng) + check_i8_long(&mut rng);
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
