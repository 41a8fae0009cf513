//! Benchmark firmware: instruction counts of single-head SDPA (f32, i8, f16) under
//! `qemu-system-arm -icount shift=0`, one line per run:
//!
//! ```text
//! bench machine=M kernel=sdpa type=T lq=N lk=N d=N dv=N instructions=N macs=N instr_per_mac=X
//! ```
//!
//! After them, the i8 decode step over the packed KV cache (`kernel=sdpa_packed_kv`: the
//! append of the newest key and value row and the attention of one query over the cache,
//! `int8_sdpa_packed_kv`), in the same line format.
//!
//! Runs that do not fit the machine print `skipped REASON` instead of the counts. Then, per
//! type, the stack high-water mark of the kernel (measured on the smallest run that fits):
//!
//! ```text
//! mem machine=M kernel=sdpa type=T lq=N lk=N d=N dv=N stack_bytes=N scratch_bytes=N
//! ```
//!
//! Inputs are pseudo-random in [-1, 1] (`build.rs`), read from flash; no mask, dot score,
//! scale `1/sqrt(d)`. `scripts/qemu-bench` turns the lines into BENCHMARKS.md.
#![no_std]
#![no_main]

use core::ptr::addr_of_mut;
use cortex_m_rt::entry;
use defmt::println;
use microattn::attention::int8::{
    int8_packed_kv_words, int8_sdpa, int8_sdpa_packed_kv, int8_sdpa_packed_scratch_len,
    int8_sdpa_scratch_len, Int8Bias, Int8PackedKv, Int8Scales, Int8SdpaParams,
};
use microattn::attention::{sdpa, sdpa_scratch_len, sdpa_typed, AttentionShape, Score, SdpaParams};
use microattn::mask::Mask;
use microattn::{f16, Error};
use microattn_firmware::bench::{
    paint_stack, ratio_3, record_entry, stack_used, Clock, Ty, ARENA, PACKED_I8, PLAN, POOL_F16,
    POOL_F32, POOL_I8,
};
use microattn_firmware::{command_line, exit_failure, exit_success, MACHINE};

#[repr(C, align(8))]
struct Aligned<T: ?Sized>(T);

static POOL_F32_BYTES: &Aligned<[u8]> =
    &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/pool_f32.bin")));
static POOL_I8_BYTES: &Aligned<[u8]> =
    &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/pool_i8.bin")));
static POOL_F16_BYTES: &Aligned<[u8]> =
    &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/pool_f16.bin")));

/// Output and scratch of one run (one arena shared by all runs, sized by `build.rs`).
static mut ARENA_BYTES: Aligned<[u8; ARENA]> = Aligned([0; ARENA]);

/// The pools as typed slices.
fn pools() -> (&'static [f32], &'static [i8], &'static [f16]) {
    // SAFETY: the pools are 8-byte aligned and hold POOL_* elements of plain-data types
    // (every bit pattern is a valid f32, i8 or f16).
    unsafe {
        (
            core::slice::from_raw_parts(POOL_F32_BYTES.0.as_ptr().cast(), POOL_F32),
            core::slice::from_raw_parts(POOL_I8_BYTES.0.as_ptr().cast(), POOL_I8),
            core::slice::from_raw_parts(POOL_F16_BYTES.0.as_ptr().cast(), POOL_F16),
        )
    }
}

/// `q`, `k`, `v`: consecutive slices of a pool.
fn inputs<T>(pool: &[T], s: AttentionShape) -> (&[T], &[T], &[T]) {
    let (q, rest) = pool.split_at(s.lq * s.d);
    let (k, rest) = rest.split_at(s.lk * s.d);
    (q, k, &rest[..s.lk * s.dv])
}

/// The arena as an output of `n` `T`s followed by a scratch of `m` `S`s.
fn carve<T, S>(n: usize, m: usize) -> (&'static mut [T], &'static mut [S]) {
    let base = addr_of_mut!(ARENA_BYTES) as *mut u8;
    let at = (n * core::mem::size_of::<T>()).next_multiple_of(8);
    assert!(at + m * core::mem::size_of::<S>() <= ARENA);
    // SAFETY: in bounds (checked), 8-byte aligned, plain-data types; the bench uses one
    // carving at a time.
    unsafe {
        (
            core::slice::from_raw_parts_mut(base.cast(), n),
            core::slice::from_raw_parts_mut(base.add(at).cast(), m),
        )
    }
}

// The kernels behind non-inlined, unmangled entry points, so that `scripts/qemu-bench` can
// find their code in the ELF. The caller records its stack pointer just before the call
// (`record_entry`): the wrapper's frame, which holds the inlined kernel's, is measured too.

#[no_mangle]
#[inline(never)]
fn bench_sdpa_f32(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &mut [f32],
    shape: AttentionShape,
    params: &SdpaParams<'_>,
) -> Result<(), Error> {
    sdpa(q, k, v, out, shape, params)
}

#[no_mangle]
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn bench_sdpa_f16(
    q: &[f16],
    k: &[f16],
    v: &[f16],
    out: &mut [f16],
    shape: AttentionShape,
    params: &SdpaParams<'_>,
    scratch: &mut [f32],
) -> Result<(), Error> {
    sdpa_typed(q, k, v, out, shape, params, scratch)
}

#[no_mangle]
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn bench_sdpa_i8(
    q: &[i8],
    k: &[i8],
    v: &[i8],
    out: &mut [i8],
    shape: AttentionShape,
    params: &Int8SdpaParams<'_>,
    scratch: &mut [i64],
) -> Result<(), Error> {
    int8_sdpa(q, k, v, out, shape, params, scratch)
}

/// Runs one kernel on the pools; returns its instruction count.
fn run(clock: &Clock, ty: Ty, shape: AttentionShape) -> Result<u64, Error> {
    let (pf32, pi8, pf16) = pools();
    let params = SdpaParams::default();
    let (n, result) = match ty {
        Ty::F32 => {
            let (q, k, v) = inputs(pf32, shape);
            let (out, _) = carve::<f32, u8>(shape.lq * shape.dv, 0);
            clock.instructions(|| {
                record_entry();
                bench_sdpa_f32(q, k, v, out, shape, &params)
            })
        }
        Ty::F16 => {
            let (q, k, v) = inputs(pf16, shape);
            let (out, scratch) = carve::<f16, f32>(shape.lq * shape.dv, sdpa_scratch_len(shape));
            clock.instructions(|| {
                record_entry();
                bench_sdpa_f16(q, k, v, out, shape, &params, scratch)
            })
        }
        Ty::I8 => {
            let (q, k, v) = inputs(pi8, shape);
            let (out, scratch) = carve::<i8, i64>(shape.lq * shape.dv, i8_scratch_len(shape));
            // Inputs are x·127 for x in [-1, 1]; the output scale equals the value scale.
            let s = 1.0 / 127.0;
            let scales = Int8Scales {
                q: s,
                k: s,
                v: s,
                out: s,
            };
            let params = Int8SdpaParams::new(
                scales,
                shape.d,
                Score::Dot,
                None,
                Mask::NONE,
                Int8Bias::None,
            )?;
            clock.instructions(|| {
                record_entry();
                bench_sdpa_i8(q, k, v, out, shape, &params, scratch)
            })
        }
    };
    result.map(|()| n)
}

/// `i64`s of scratch the i8 runs get: on the DSP cores ([`PACKED_I8`]) enough for
/// `int8_sdpa` to pack keys and values once per call when there are two or more query rows.
fn i8_scratch_len(shape: AttentionShape) -> usize {
    if PACKED_I8 && shape.lq >= 2 {
        int8_sdpa_packed_scratch_len(shape)
    } else {
        int8_sdpa_scratch_len(shape)
    }
}

#[no_mangle]
#[inline(never)]
fn bench_sdpa_packed_kv_i8(
    q: &[i8],
    k: &[i8],
    v: &[i8],
    cache: &mut Int8PackedKv<'_>,
    out: &mut [i8],
    params: &Int8SdpaParams<'_>,
    scratch: &mut [i64],
) -> Result<(), Error> {
    cache.push(k, v)?;
    int8_sdpa_packed_kv(q, cache, out, params, scratch)
}

/// The decode step over the packed KV cache for `shape` (`lq = 1`): all keys but the last
/// appended first (not counted), then the append of the last one and the attention.
fn run_packed_kv(clock: &Clock, shape: AttentionShape) -> Result<u64, Error> {
    let (_, pi8, _) = pools();
    let (q, k, v) = inputs(pi8, shape);
    let (lk, d, dv) = (shape.lk, shape.d, shape.dv);
    let words = int8_packed_kv_words(lk, d, dv);
    let (out, rest) = carve::<i8, u32>(shape.lq * dv, words + 2 * int8_sdpa_scratch_len(shape));
    let (storage, scratch) = rest.split_at_mut(words);
    // SAFETY: `scratch` is 8-byte aligned (the arena is, and `words` is even for these
    // shapes: checked) and holds `2 · dv` words, that is `dv` i64s of plain data.
    if words % 2 != 0 {
        return Err(Error::InvalidParameter);
    }
    let scratch: &mut [i64] =
        unsafe { core::slice::from_raw_parts_mut(scratch.as_mut_ptr().cast(), scratch.len() / 2) };
    let mut cache = Int8PackedKv::new(storage, lk, d, dv)?;
    for (kr, vr) in k.chunks_exact(d).zip(v.chunks_exact(dv)).take(lk - 1) {
        cache.push(kr, vr)?;
    }
    let s = 1.0 / 127.0;
    let scales = Int8Scales {
        q: s,
        k: s,
        v: s,
        out: s,
    };
    let params = Int8SdpaParams::new(scales, d, Score::Dot, None, Mask::NONE, Int8Bias::None)?;
    let (last_k, last_v) = (&k[(lk - 1) * d..], &v[(lk - 1) * dv..]);
    let (n, result) = clock.instructions(|| {
        record_entry();
        bench_sdpa_packed_kv_i8(q, last_k, last_v, &mut cache, out, &params, scratch)
    });
    result.map(|()| n)
}

/// Scratch bytes a kernel needs for `shape`.
fn scratch_bytes(ty: Ty, shape: AttentionShape) -> usize {
    match ty {
        Ty::F32 => 0,
        Ty::F16 => 4 * sdpa_scratch_len(shape),
        Ty::I8 => 8 * i8_scratch_len(shape),
    }
}

#[entry]
fn main() -> ! {
    let Some(cp) = cortex_m::Peripherals::take() else {
        exit_failure()
    };
    let mut clock = Clock::start(cp.SYST);
    // Optional filters on the command line (for profiling one run): `type=i8`, `lq=1`.
    let mut cmdline = [0u8; 64];
    let cmdline = command_line(&mut cmdline);
    let wanted = |ty: Ty, lq: usize| {
        cmdline.split(' ').all(|word| match word.split_once('=') {
            Some(("type", t)) => t == ty.name(),
            Some(("lq", n)) => n.parse() == Ok(lq),
            _ => true,
        })
    };
    let mut buf = [0u8; 24];
    println!(
        "calibration machine={=str} instructions_per_tick={=str}",
        MACHINE,
        ratio_3(clock.milli_instructions_per_tick(), 1000, &mut buf)
    );
    for &(ty, lq, lk, d, dv, skip) in PLAN {
        if !wanted(ty, lq) {
            continue;
        }
        let shape = AttentionShape::single(lq, lk, d, dv);
        if let Some(reason) = skip {
            println!(
                "bench machine={=str} kernel=sdpa type={=str} lq={=usize} lk={=usize} d={=usize} dv={=usize} skipped {=str}",
                MACHINE, ty.name(), lq, lk, d, dv, reason
            );
            continue;
        }
        let n = match run(&clock, ty, shape) {
            Ok(n) => n,
            Err(e) => {
                println!("bench {=str} {=str} failed: {}", MACHINE, ty.name(), e);
                exit_failure()
            }
        };
        let macs = (lq * lk * (d + dv)) as u64;
        println!(
            "bench machine={=str} kernel=sdpa type={=str} lq={=usize} lk={=usize} d={=usize} dv={=usize} instructions={=u64} macs={=u64} instr_per_mac={=str}",
            MACHINE, ty.name(), lq, lk, d, dv, n, macs, ratio_3(n, macs, &mut buf)
        );
    }
    // The decode step over the packed KV cache, where its storage fits the arena.
    for &(ty, lq, lk, d, dv, skip) in PLAN {
        if ty != Ty::I8 || lq != 1 || !wanted(ty, lq) {
            continue;
        }
        let shape = AttentionShape::single(lq, lk, d, dv);
        let words = int8_packed_kv_words(lk, d, dv);
        let bytes = (lq * dv).next_multiple_of(8) + 4 * words + 8 * dv + 8;
        let reason = match skip {
            Some(reason) => Some(reason),
            None if bytes > ARENA => {
                Some("the packed cache does not fit this machine's bench RAM budget")
            }
            None => None,
        };
        if let Some(reason) = reason {
            println!(
                "bench machine={=str} kernel=sdpa_packed_kv type=i8 lq={=usize} lk={=usize} d={=usize} dv={=usize} skipped {=str}",
                MACHINE, lq, lk, d, dv, reason
            );
            continue;
        }
        let n = match run_packed_kv(&clock, shape) {
            Ok(n) => n,
            Err(e) => {
                println!("bench {=str} i8 packed kv failed: {}", MACHINE, e);
                exit_failure()
            }
        };
        let macs = (lq * lk * (d + dv)) as u64;
        println!(
            "bench machine={=str} kernel=sdpa_packed_kv type=i8 lq={=usize} lk={=usize} d={=usize} dv={=usize} instructions={=u64} macs={=u64} instr_per_mac={=str}",
            MACHINE, lq, lk, d, dv, n, macs, ratio_3(n, macs, &mut buf)
        );
    }
    // Stack high-water marks: the kernels' stack does not depend on the shape (fixed tiles),
    // so the smallest run of each type that fits is measured, with the SysTick exception off
    // so that no exception frame lands on the painted stack.
    for ty in [Ty::F32, Ty::I8, Ty::F16] {
        let smallest = PLAN
            .iter()
            .filter(|p| p.0 == ty && p.5.is_none() && wanted(p.0, p.1))
            .min_by_key(|p| p.1 * p.2 * (p.3 + p.4));
        let Some(&(_, lq, lk, d, dv, _)) = smallest else {
            continue;
        };
        let shape = AttentionShape::single(lq, lk, d, dv);
        clock.set_interrupt(false);
        paint_stack();
        let result = run(&clock, ty, shape);
        let used = stack_used();
        clock.set_interrupt(true);
        if result.is_err() {
            exit_failure()
        }
        println!(
            "mem machine={=str} kernel=sdpa type={=str} lq={=usize} lk={=usize} d={=usize} dv={=usize} stack_bytes={=usize} scratch_bytes={=usize}",
            MACHINE, ty.name(), lq, lk, d, dv, used, scratch_bytes(ty, shape)
        );
    }
    println!("bench done {=str}", MACHINE);
    exit_success()
}
