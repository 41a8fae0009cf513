//! Link check: no panic path survives in the kernels.
//!
//! This release firmware calls every public attention kernel (f32, f16, int8), the norms,
//! softmax and RoPE with shapes, parameters and slice lengths read at run time (volatile
//! reads, so the optimizer can assume nothing about them), and its panic handler calls a
//! function that is defined nowhere. If any call can still reach a panic (an index that may be
//! out of bounds, an `unwrap`, a division that may be by zero, ...), the optimizer cannot remove
//! the handler's call and the link fails with an undefined `microattn_panic_path_survived`.
//! `scripts/qemu-test` builds it (it is never run).
#![no_std]
#![no_main]

use core::hint::black_box;
use core::panic::PanicInfo;
use core::ptr::{addr_of, addr_of_mut, read_volatile};
use cortex_m_rt::entry;
use microattn::attention::int8::{
    int8_additive_attention, int8_linear_attention, int8_luong_attention, int8_packed_kv_words,
    int8_sdpa, int8_sdpa_packed_kv, Int8Bias, Int8LinearAttentionParams, Int8Logits,
    Int8LuongParams, Int8LuongScore, Int8PackedKv, Int8Scales, Int8SdpaParams,
};
use microattn::attention::{
    additive_attention, linear_attention, luong_attention, sdpa, sdpa_typed, AdditiveParams,
    AdditiveShape, AttentionShape, Bias, LinearAttentionParams, LuongParams, LuongScore,
    LuongShape, Score, SdpaParams,
};
use microattn::f16;
use microattn::layers::{layer_norm, rms_norm};
use microattn::mask::{Mask, MaskTerm};
use microattn::mha::{mha, MhaShape, MhaWeights};
use microattn::position::{rope, RopeLayout, RopeParams};
use microattn::quant::FixedMultiplier;
use microattn::softmax::softmax_in_place;

#[panic_handler]
fn panic(_: &PanicInfo) -> ! {
    extern "C" {
        // Defined nowhere: a panic path that survives optimization fails the link.
        fn microattn_panic_path_survived() -> !;
    }
    // SAFETY: never linked, so never called.
    unsafe { microattn_panic_path_survived() }
}

/// Elements of each working buffer.
const N: usize = 4096;

/// Run-time parameters: shapes, window sizes, selectors (read volatile).
static PARAMS: [usize; 12] = [1, 1, 8, 16, 8, 8, 3, 0, 0, 4, 2, 7];
/// Run-time floats: scales and epsilons (read volatile).
static FLOATS: [f32; 4] = [0.01, 0.02, 1e-5, 0.5];

static mut F32: [[f32; N]; 6] = [[0.0; N]; 6];
static mut F16: [[f16; N]; 4] = [[f16::ZERO; N]; 4];
static mut I8: [[i8; N]; 6] = [[0; N]; 6];
static mut I16: [i16; N] = [0; N];
static mut I32: [i32; N] = [0; N];
static mut I64: [i64; N] = [0; N];
static mut U32: [u32; N] = [0; N];
static mut MULTIPLIERS: [FixedMultiplier; 64] = [FixedMultiplier::ONE; 64];

/// `PARAMS[I]`, unknown to the optimizer.
fn p<const I: usize>() -> usize {
    // SAFETY: reads a static in bounds (I is checked at compile time by the array index).
    unsafe { read_volatile(addr_of!(PARAMS[I])) }
}

/// `FLOATS[I]`, unknown to the optimizer.
fn f<const I: usize>() -> f32 {
    // SAFETY: as `p`.
    unsafe { read_volatile(addr_of!(FLOATS[I])) }
}

/// The first `n` elements of `buf` (empty when `n` is too large: the kernels then return
/// `Err`, which is also a path the check covers).
fn first<T>(buf: &mut [T], n: usize) -> &mut [T] {
    buf.get_mut(..n).unwrap_or_default()
}

#[entry]
fn main() -> ! {
    // SAFETY: the only references to the buffers, taken once; nothing else runs.
    let f32s = unsafe { &mut *addr_of_mut!(F32) };
    let f16s = unsafe { &mut *addr_of_mut!(F16) };
    let i8s = unsafe { &mut *addr_of_mut!(I8) };
    let i16s = unsafe { &mut *addr_of_mut!(I16) };
    let i32s = unsafe { &mut *addr_of_mut!(I32) };
    let i64s = unsafe { &mut *addr_of_mut!(I64) };
    let u32s = unsafe { &mut *addr_of_mut!(U32) };
    let multipliers = unsafe { &mut *addr_of_mut!(MULTIPLIERS) };

    let (heads, kv_heads, lq, lk, d, dv) =
        (p::<0>(), p::<1>(), p::<2>(), p::<3>(), p::<4>(), p::<5>());
    let shape = AttentionShape::multi_head(heads, kv_heads, lq, lk, d, dv);
    let terms = [
        MaskTerm::Causal,
        MaskTerm::Sliding {
            left: p::<6>(),
            right: p::<7>(),
        },
        MaskTerm::KeyPadding { valid: p::<9>() },
    ];
    let mask =
        Mask::new(terms.get(..p::<10>()).unwrap_or(&terms)).with_signed_offset(p::<8>() as i64 - 2);
    let score = match p::<11>() % 4 {
        0 => Score::Dot,
        1 => Score::Cosine,
        2 => Score::NegSqL2,
        _ => Score::NegL1,
    };
    let slopes = [f::<3>(), f::<0>()];
    let bias = if p::<11>().is_multiple_of(3) {
        Bias::Alibi { slopes: &slopes }
    } else {
        Bias::None
    };
    let params = SdpaParams {
        scale: Some(f::<3>()),
        score,
        mask,
        bias,
    };
    let n = p::<3>() * p::<4>() * 4;

    // f32 and f16 attention.
    {
        let [a, b, c, o, s, _] = &mut *f32s;
        let _ = black_box(sdpa(
            first(a, n),
            first(b, n),
            first(c, n),
            first(o, n),
            shape,
            &params,
        ));
        let [x, y, z, w] = &mut *f16s;
        let _ = black_box(sdpa_typed(
            first(x, n),
            first(y, n),
            first(z, n),
            first(w, n),
            shape,
            &params,
            first(s, p::<5>()),
        ));
        let linear = LinearAttentionParams {
            causal: p::<7>() == 0,
            eps: f::<2>(),
        };
        let _ = black_box(linear_attention(
            first(a, n),
            first(b, n),
            first(c, n),
            first(o, n),
            shape,
            &linear,
            first(s, n),
        ));
    }
    {
        let [query, keys, values, context, weights, scratch] = &mut *f32s;
        let (l, a) = (p::<3>(), p::<9>());
        let additive = AdditiveShape {
            l,
            dq: d,
            dk: d,
            dv,
            a,
        };
        let (wq, rest) = query.split_at_mut(N / 4);
        let (wk, rest) = rest.split_at_mut(N / 4);
        let (vv, query) = rest.split_at_mut(N / 4);
        let ap = AdditiveParams {
            w_query: first(wq, a * d),
            w_key: first(wk, a * d),
            v: first(vv, a),
            mask,
        };
        let _ = black_box(additive_attention(
            first(query, d),
            first(keys, n),
            first(values, n),
            additive,
            &ap,
            first(context, dv),
            first(weights, l),
            first(scratch, n),
        ));
        let luong = LuongParams {
            score: if p::<7>() == 0 {
                LuongScore::Dot
            } else {
                LuongScore::General {
                    w: first(wq, d * d),
                }
            },
            mask,
        };
        let _ = black_box(luong_attention(
            first(query, d),
            first(keys, n),
            first(values, n),
            LuongShape { l, d, dv },
            &luong,
            first(context, dv),
            first(weights, l),
            first(scratch, n),
        ));
    }
    {
        let [query, key, value, wi, out, scratch] = &mut *f32s;
        let embed = p::<4>();
        let (in_w, out_w) = wi.split_at_mut(N / 2);
        let weights = MhaWeights {
            in_proj_weight: first(in_w, 3 * embed * embed),
            in_proj_bias: None,
            out_proj_weight: first(out_w, embed * embed),
            out_proj_bias: None,
        };
        let _ = black_box(mha(
            first(query, lq * embed),
            first(key, lk * embed),
            first(value, lk * embed),
            &weights,
            first(out, lq * embed),
            MhaShape::new(lq, lk, embed, p::<10>()),
            &params,
            first(scratch, N),
        ));
        // Norms, softmax, RoPE.
        let rows = p::<2>() * d;
        let _ = black_box(layer_norm(
            first(query, rows),
            first(key, d),
            Some(first(value, d)),
            first(out, rows),
            d,
            f::<2>(),
        ));
        let _ = black_box(rms_norm(
            first(query, rows),
            first(key, d),
            first(out, rows),
            d,
            f::<2>(),
        ));
        softmax_in_place(first(scratch, p::<3>()));
        let rope_params = RopeParams::new(if p::<7>() == 0 {
            RopeLayout::Interleaved
        } else {
            RopeLayout::Half
        });
        let _ = black_box(rope(first(query, rows), heads, lq, d, &rope_params));
    }

    // int8 attention, parameters both prepared from floats and given as raw integers.
    {
        let [q, k, v, out, w, w2] = &mut *i8s;
        let scales = Int8Scales {
            q: f::<0>(),
            k: f::<1>(),
            v: f::<1>(),
            out: f::<3>(),
        };
        let (thresholds, cache_words) = u32s.split_at_mut(N / 2);
        let int8_bias = Int8Bias::from_bias(&bias, heads, first(i32s, heads), first(thresholds, 0));
        let prepared =
            int8_bias.and_then(|b| Int8SdpaParams::new(scales, d, score, Some(f::<3>()), mask, b));
        if let Ok(prepared) = prepared {
            let _ = black_box(int8_sdpa(
                first(q, n),
                first(k, n),
                first(v, n),
                first(out, n),
                shape,
                &prepared,
                first(i64s, dv),
            ));
        }
        // The same over a packed KV cache of the keys and values (runtime sizes).
        if let Ok(prepared) = prepared {
            let words = int8_packed_kv_words(n, d, dv);
            if let Ok(mut cache) = Int8PackedKv::new(first(cache_words, words), n, d, dv) {
                let _ = black_box(cache.push(first(k, d), first(v, dv)));
                let _ = black_box(int8_sdpa_packed_kv(
                    first(q, n),
                    &cache,
                    first(out, n),
                    &prepared,
                    first(i64s, dv),
                ));
            }
        }
        let raw = FixedMultiplier::from_raw(p::<9>() as i32 * 1000, p::<10>() as i32 - 8);
        if let Ok(m) = raw {
            let params =
                Int8SdpaParams::from_raw(Int8Logits::Dot { logit: m }, m, mask, Int8Bias::None);
            let _ = black_box(int8_sdpa(
                first(q, n),
                first(k, n),
                first(v, n),
                first(out, n),
                shape,
                &params,
                first(i64s, dv),
            ));
        }
        let linear = Int8LinearAttentionParams::new(
            f::<0>(),
            f::<1>(),
            f::<1>(),
            f::<3>(),
            p::<7>() == 0,
            f::<2>(),
        );
        if let Ok(linear) = linear {
            let _ = black_box(int8_linear_attention(
                first(q, n),
                first(k, n),
                first(v, n),
                first(out, n),
                shape,
                &linear,
                first(i64s, N),
            ));
        }
        let l = p::<3>();
        let luong_score = if p::<7>() == 0 {
            Int8LuongScore::dot(f::<0>(), f::<1>())
        } else {
            Int8LuongScore::general(first(w, d * d), f::<0>(), f::<1>(), f::<1>())
        };
        let out_m = FixedMultiplier::from_real(f::<3>() as f64);
        if let (Ok(score), Ok(out_m)) = (luong_score, out_m) {
            let lp = Int8LuongParams {
                score,
                out: out_m,
                mask,
            };
            let _ = black_box(int8_luong_attention(
                first(q, d),
                first(k, n),
                first(v, n),
                LuongShape { l, d, dv },
                &lp,
                first(out, dv),
                first(i16s, l),
                first(i64s, N),
            ));
        }
        let a = p::<9>();
        let scales = [f::<0>(); 64];
        let additive_scales = microattn::attention::int8::Int8AdditiveScales {
            query: f::<0>(),
            keys: f::<1>(),
            values: f::<1>(),
            w_query: scales.get(..a).unwrap_or(&[]),
            w_key: scales.get(..a).unwrap_or(&[]),
            v: f::<0>(),
            context: f::<3>(),
        };
        let (wq, wk) = w2.split_at_mut(N / 2);
        let ap = microattn::attention::int8::Int8AdditiveParams::new(
            first(wq, a * d),
            first(wk, a * d),
            first(w, a),
            additive_scales,
            mask,
            &mut multipliers[..],
        );
        if let Ok(ap) = ap {
            let _ = black_box(int8_additive_attention(
                first(q, d),
                first(k, n),
                first(v, n),
                AdditiveShape {
                    l,
                    dq: d,
                    dk: d,
                    dv,
                    a,
                },
                &ap,
                first(out, dv),
                first(i16s, l),
                first(i64s, N),
            ));
        }
    }
    loop {
        core::hint::spin_loop();
    }
}
