//! The attention workload both board examples run (included with `#[path]`): an int8 decode
//! step (one query over a 256-key cache, d = 64: over row-major int8 keys and values, and over
//! the same rows in a packed cache, `Int8PackedKv`) and f32 causal self-attention over 32
//! tokens (d = 32), on deterministic pseudo-random inputs. Each is timed with the board's timer and
//! reported over defmt-rtt with a checksum; the LED toggles after every round.

use defmt::info;
use embedded_hal::delay::DelayNs;
use embedded_hal::digital::OutputPin;
use microattn::attention::int8::{
    int8_packed_kv_words, int8_sdpa, int8_sdpa_packed_kv, Int8Bias, Int8PackedKv, Int8Scales,
    Int8SdpaParams,
};
use microattn::attention::{sdpa, AttentionShape, Score, SdpaParams};
use microattn::mask::{Mask, MaskTerm};

const KEYS: usize = 256;
const D: usize = 64;
const TOKENS: usize = 32;
const DF: usize = 32;

static mut K_I8: [i8; KEYS * D] = [0; KEYS * D];
static mut V_I8: [i8; KEYS * D] = [0; KEYS * D];
static mut CACHE: [u32; int8_packed_kv_words(KEYS, D, D)] = [0; int8_packed_kv_words(KEYS, D, D)];
static mut X_F32: [f32; TOKENS * DF] = [0.0; TOKENS * DF];
static mut OUT_F32: [f32; TOKENS * DF] = [0.0; TOKENS * DF];

/// xorshift32 bytes in [-127, 127].
fn fill(seed: &mut u32, x: &mut [i8]) {
    for v in x.iter_mut() {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 17;
        *seed ^= *seed << 5;
        *v = ((*seed % 255) as i32 - 127) as i8;
    }
}

/// Runs the workload forever. `now` reads the board's timer in `unit`s (wrapping).
pub fn run(
    board: &str,
    led: &mut impl OutputPin,
    delay: &mut impl DelayNs,
    now: impl Fn() -> u32,
    unit: &str,
) -> ! {
    // SAFETY: the only references to the buffers, taken once; no interrupt uses them.
    let (k, v, storage, x, out) = unsafe {
        (
            &mut *core::ptr::addr_of_mut!(K_I8),
            &mut *core::ptr::addr_of_mut!(V_I8),
            &mut *core::ptr::addr_of_mut!(CACHE),
            &mut *core::ptr::addr_of_mut!(X_F32),
            &mut *core::ptr::addr_of_mut!(OUT_F32),
        )
    };
    let mut seed = 0x2545_f491;
    fill(&mut seed, k);
    fill(&mut seed, v);
    let mut q = [0i8; D];
    fill(&mut seed, &mut q);
    for (i, value) in x.iter_mut().enumerate() {
        *value = ((i * 37 % 101) as f32 - 50.0) / 50.0;
    }
    info!("microattn on {=str}: int8 decode 1x{=usize}x{=usize}, f32 causal {=usize}x{=usize}x{=usize}", board, KEYS, D, TOKENS, TOKENS, DF);

    let s = 1.0 / 127.0;
    let scales = Int8Scales {
        q: s,
        k: s,
        v: s,
        out: s,
    };
    let Ok(params_i8) =
        Int8SdpaParams::new(scales, D, Score::Dot, None, Mask::NONE, Int8Bias::None)
    else {
        panic!("int8 parameters");
    };
    // The same keys and values in a packed cache (on the DSP cores its decode step reads
    // ready 16-bit pairs; elsewhere it is plain loops).
    let Ok(mut cache) = Int8PackedKv::new(storage, KEYS, D, D) else {
        panic!("packed cache");
    };
    for (kr, vr) in k.chunks_exact(D).zip(v.chunks_exact(D)) {
        if cache.push(kr, vr).is_err() {
            panic!("packed cache push");
        }
    }
    let causal = [MaskTerm::Causal];
    let params = SdpaParams {
        mask: Mask::new(&causal),
        ..Default::default()
    };
    let mut round = 0u32;
    loop {
        let mut out_i8 = [0i8; D];
        let mut scratch = [0i64; D];
        let t0 = now();
        let r = int8_sdpa(
            &q,
            k,
            v,
            &mut out_i8,
            AttentionShape::single(1, KEYS, D, D),
            &params_i8,
            &mut scratch,
        );
        let t1 = now();
        let sum: i32 = out_i8.iter().map(|&o| o as i32).sum();
        info!(
            "round {=u32}: int8 decode {=u32} {=str} (ok {=bool}, checksum {=i32})",
            round,
            t1.wrapping_sub(t0),
            unit,
            r.is_ok(),
            sum
        );

        let mut packed_i8 = [0i8; D];
        let t0 = now();
        let r = int8_sdpa_packed_kv(&q, &cache, &mut packed_i8, &params_i8, &mut scratch);
        let t1 = now();
        info!(
            "round {=u32}: int8 decode, packed cache {=u32} {=str} (ok {=bool}, same bytes {=bool})",
            round,
            t1.wrapping_sub(t0),
            unit,
            r.is_ok(),
            packed_i8 == out_i8
        );

        let t0 = now();
        let r = sdpa(
            x,
            x,
            x,
            out,
            AttentionShape::single(TOKENS, TOKENS, DF, DF),
            &params,
        );
        let t1 = now();
        info!(
            "round {=u32}: f32 causal {=u32} {=str} (ok {=bool}, out[0] {=f32})",
            round,
            t1.wrapping_sub(t0),
            unit,
            r.is_ok(),
            out[0]
        );

        let _ = if round % 2 == 0 {
            led.set_high()
        } else {
            led.set_low()
        };
        delay.delay_ms(500);
        round = round.wrapping_add(1);
    }
}
