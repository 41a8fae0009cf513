//! Stack high-water mark of the public slice-tier kernels on target (all but the int8
//! decoder layer, prepared like the encoder one; not yet measured).
//!
//! Each kernel runs once, with small shapes, through [`measure`]: the free stack below
//! `measure`'s frame is painted ([`paint_stack`]), the stack pointer recorded
//! ([`record_entry`]), the kernel called through a closure (an indirect call, so the
//! closure's frame, which holds the inlined kernel's, is a frame of its own), and the lowest
//! overwritten word found ([`stack_used`]). The number is the kernel's deepest stack use
//! plus the closure's few bytes of argument setup. No exception runs meanwhile (SysTick is
//! off in this firmware). Kernels use no recursion and no shape-sized stack arrays (scratch
//! is caller-provided), so the figure does not grow with the shapes; the firmware checks
//! it against [`BUDGET`].
//!
//! Output lines: `stack <kernel> <bytes>`; `scripts/qemu-stack` turns them into the table
//! of BENCHMARKS.md. Exit status 0 when every kernel returned `Ok` within the budget.
#![no_std]
#![no_main]

use core::ptr::addr_of_mut;
use cortex_m_rt::entry;
use defmt::println;
use microattn::attention::int8::{
    int8_additive_attention, int8_dense, int8_linear_attention, int8_luong_attention, int8_mha,
    int8_mha_acc_len, int8_mha_scratch_len, int8_packed_kv_words, int8_sdpa, int8_sdpa_packed_kv,
    int8_sdpa_packed_scratch_len, Int8AdditiveParams, Int8AdditiveScales, Int8Bias, Int8Dense,
    Int8LinearAttentionParams, Int8LuongParams, Int8LuongScore, Int8MhaParams, Int8PackedKv,
    Int8Scales, Int8SdpaParams,
};
use microattn::attention::{
    additive_attention, linear_attention, linear_attention_scratch_len, luong_attention, sdpa,
    sdpa_typed, AdditiveParams, AdditiveShape, AttentionShape, Bias, LinearAttentionParams,
    LuongParams, LuongScore, LuongShape, Score, SdpaParams,
};
use microattn::graph::{gat, gat_scratch_len, GatParams, GatShape, GatWeights};
use microattn::graph_int8::{int8_gat, int8_gat_acc_len, int8_gat_scratch_len, Int8GatParams};
use microattn::kv_cache::{CacheMode, KvCache, KvShape};
use microattn::layers::int8::{
    int8_encoder_layer, int8_encoder_scratch_len, int8_encoder_storage_len, int8_ffn,
    int8_ffn_scratch_len, int8_layer_acc_len, int8_layer_norm, int8_patch_embed,
    int8_patch_embed_scratch_len, int8_patch_offsets_len, Int8FfnParams, Int8LayerNorm,
    Int8LayerQuant, Int8Lut, Int8PatchEmbed,
};
use microattn::layers::{
    decoder_buffer_len, decoder_layer, decoder_scratch_len, encoder_buffer_len, encoder_layer,
    encoder_scratch_len, ffn, ffn_scratch_len, gated_ffn, layer_norm, patch_embed,
    patch_embed_scratch_len, rms_norm, Activation, DecoderShape, DecoderWeights, EncoderShape,
    EncoderWeights, FfnShape, FfnWeights, GatedFfnWeights, LayerConfig, LayerNormWeights,
    PatchEmbedWeights, PatchShape,
};
use microattn::mask::{Mask, MaskTerm};
use microattn::mha::{mha, mha_scratch_len, MhaShape, MhaWeights};
use microattn::position::{rope, sinusoidal_table, RopeLayout, RopeParams};
use microattn::projection::{linear, LinearShape};
use microattn::quant::FixedMultiplier;
use microattn::softmax::softmax_in_place;
use microattn::ssm::{selective_scan, ScanSequence, ScanShape, ScanWeights};
use microattn::{f16, Error};
use microattn_firmware::bench::{paint_stack, record_entry, stack_used};
use microattn_firmware::{exit_failure, exit_success, MACHINE};

/// Largest stack any kernel may use (bytes): well inside the few KiB of stack a Cortex-M
/// application gives a library call.
const BUDGET: usize = 4096;

/// Elements of each working buffer.
const N: usize = 4096;

static mut F32: [[f32; N]; 8] = [[0.0; N]; 8];
static mut F16: [[f16; N]; 4] = [[f16::ZERO; N]; 4];
static mut I8: [[i8; N]; 8] = [[0; N]; 8];
static mut I16: [i16; N] = [0; N];
static mut I32: [i32; N] = [0; N];
static mut I64: [i64; N] = [0; N];
static mut U32: [u32; N] = [0; N];

/// Attention shape of the attention kernels: 2 query heads over 1 KV head (GQA), 4 query
/// rows, 16 keys, 16 features.
const SHAPE: AttentionShape = AttentionShape::multi_head(2, 1, 4, 16, 16, 16);
const L: usize = 16;
const D: usize = 16;
const A: usize = 8;

/// Runs `f` on a freshly painted stack; prints and returns `(bytes used, ok)`.
#[inline(never)]
fn measure(name: &str, f: &mut dyn FnMut() -> Result<(), Error>) -> bool {
    paint_stack();
    record_entry();
    let result = f();
    let used = stack_used();
    match result {
        Ok(()) if used <= BUDGET => {
            println!("stack {=str} {=usize}", name, used);
            true
        }
        Ok(()) => {
            println!(
                "stack {=str} {=usize} OVER BUDGET {=usize}",
                name, used, BUDGET
            );
            false
        }
        Err(e) => {
            println!("stack {=str} FAILED: {}", name, e);
            false
        }
    }
}

/// Attention weights (with biases) of width `e` read from `w`.
fn mha_weights(w: &[f32], e: usize) -> MhaWeights<'_> {
    MhaWeights {
        in_proj_weight: &w[..3 * e * e],
        in_proj_bias: Some(&w[..3 * e]),
        out_proj_weight: &w[3 * e * e..4 * e * e],
        out_proj_bias: Some(&w[..e]),
    }
}

/// The first `n` elements of `buf`.
fn first<T>(buf: &mut [T], n: usize) -> &mut [T] {
    buf.get_mut(..n).unwrap_or_default()
}

#[entry]
fn main() -> ! {
    println!(
        "microattn stack per kernel on {=str} (budget {=usize} bytes)",
        MACHINE, BUDGET
    );
    // SAFETY: the only references to the buffers, taken once; nothing else runs.
    let f32s = unsafe { &mut *addr_of_mut!(F32) };
    let f16s = unsafe { &mut *addr_of_mut!(F16) };
    let i8s = unsafe { &mut *addr_of_mut!(I8) };
    let i16s = unsafe { &mut *addr_of_mut!(I16) };
    let i32s = unsafe { &mut *addr_of_mut!(I32) };
    let i64s = unsafe { &mut *addr_of_mut!(I64) };
    // Small deterministic values (the ordinary code paths, no overflow rescue).
    for (b, buf) in f32s.iter_mut().enumerate() {
        for (i, x) in buf.iter_mut().enumerate() {
            *x = (((i * 37 + b * 11) % 29) as f32 - 14.0) / 64.0;
        }
    }
    for (b, buf) in f16s.iter_mut().enumerate() {
        for (i, x) in buf.iter_mut().enumerate() {
            *x = f16::from_f32((((i * 37 + b * 11) % 29) as f32 - 14.0) / 64.0);
        }
    }
    for (b, buf) in i8s.iter_mut().enumerate() {
        for (i, x) in buf.iter_mut().enumerate() {
            *x = ((i * 37 + b * 11) % 61) as i8 - 30;
        }
    }
    let causal = [MaskTerm::Causal];
    let mask = Mask::new(&causal);
    let mut ok = true;

    // f32 and f16 attention.
    {
        let [q, k, v, out, s, w, _, _] = &mut *f32s;
        let params = SdpaParams {
            mask,
            ..Default::default()
        };
        let n = 2 * 4 * 16;
        ok &= measure("sdpa", &mut || {
            sdpa(
                &q[..n],
                &k[..L * D],
                &v[..L * D],
                first(out, n),
                SHAPE,
                &params,
            )
        });
        let [x, y, z, o] = &mut *f16s;
        ok &= measure("sdpa_typed (f16)", &mut || {
            sdpa_typed(
                &x[..n],
                &y[..L * D],
                &z[..L * D],
                first(o, n),
                SHAPE,
                &params,
                first(s, D),
            )
        });
        let alibi = [0.5f32, 0.25];
        let biased = SdpaParams {
            score: Score::NegL1,
            bias: Bias::Alibi { slopes: &alibi },
            ..params
        };
        ok &= measure("sdpa (neg. L1, ALiBi)", &mut || {
            sdpa(
                &q[..n],
                &k[..L * D],
                &v[..L * D],
                first(out, n),
                SHAPE,
                &biased,
            )
        });
        let lp = LinearAttentionParams {
            causal: false,
            eps: 1e-6,
        };
        ok &= measure("linear_attention", &mut || {
            linear_attention(
                &q[..n],
                &k[..L * D],
                &v[..L * D],
                first(out, n),
                SHAPE,
                &lp,
                first(s, linear_attention_scratch_len(SHAPE)),
            )
        });
        let ap = AdditiveParams {
            w_query: &w[..A * D],
            w_key: &w[A * D..2 * A * D],
            v: &w[2 * A * D..2 * A * D + A],
            mask: Mask::NONE,
        };
        let additive = AdditiveShape {
            l: L,
            dq: D,
            dk: D,
            dv: D,
            a: A,
        };
        let (context, weights) = out.split_at_mut(N / 2);
        ok &= measure("additive_attention", &mut || {
            additive_attention(
                &q[..D],
                &k[..L * D],
                &v[..L * D],
                additive,
                &ap,
                first(context, D),
                first(weights, L),
                first(s, A),
            )
        });
        let lp = LuongParams {
            score: LuongScore::General { w: &w[..D * D] },
            mask: Mask::NONE,
        };
        ok &= measure("luong_attention (general)", &mut || {
            luong_attention(
                &q[..D],
                &k[..L * D],
                &v[..L * D],
                LuongShape { l: L, d: D, dv: D },
                &lp,
                first(context, D),
                first(weights, L),
                first(s, D),
            )
        });
    }

    // Multi-head attention, projections, norms, softmax, positions.
    {
        let [x, y, z, wi, out, s, _, _] = &mut *f32s;
        let e = 16;
        let (in_w, rest) = wi.split_at_mut(3 * e * e);
        let weights = MhaWeights {
            in_proj_weight: in_w,
            in_proj_bias: Some(&rest[..3 * e]),
            out_proj_weight: &rest[3 * e..3 * e + e * e],
            out_proj_bias: Some(&rest[..e]),
        };
        let params = SdpaParams {
            mask,
            ..Default::default()
        };
        let shape = MhaShape::new(4, 16, e, 2);
        ok &= measure("mha", &mut || {
            mha(
                &x[..4 * e],
                &y[..16 * e],
                &z[..16 * e],
                &weights,
                first(out, 4 * e),
                shape,
                &params,
                first(s, mha_scratch_len(4, 16, e)),
            )
        });
        ok &= measure("linear", &mut || {
            linear(
                &x[..4 * e],
                &wi[..e * e],
                Some(&y[..e]),
                first(out, 4 * e),
                LinearShape::new(4, e, e),
            )
        });
        ok &= measure("layer_norm", &mut || {
            layer_norm(
                &x[..4 * D],
                &y[..D],
                Some(&z[..D]),
                first(out, 4 * D),
                D,
                1e-5,
            )
        });
        ok &= measure("rms_norm", &mut || {
            rms_norm(&x[..4 * D], &y[..D], first(out, 4 * D), D, 1e-5)
        });
        ok &= measure("softmax_in_place", &mut || {
            softmax_in_place(first(out, 64));
            Ok(())
        });
        let rp = RopeParams::new(RopeLayout::Half);
        ok &= measure("rope", &mut || rope(first(out, 2 * 4 * D), 2, 4, D, &rp));
        ok &= measure("sinusoidal_table", &mut || {
            sinusoidal_table(first(out, 16 * D), 16, D, 0, 10000.0)
        });
    }

    // Layers.
    {
        let [x, w1, w2, w3, out, s, buffer, mem] = &mut *f32s;
        let fs = FfnShape::new(4, D, 64);
        let fw = FfnWeights {
            w1: &w1[..64 * D],
            b1: Some(&w3[..64]),
            w2: &w2[..D * 64],
            b2: Some(&w3[64..64 + D]),
        };
        ok &= measure("ffn (GELU)", &mut || {
            ffn(
                &x[..4 * D],
                &fw,
                Activation::Gelu,
                first(out, 4 * D),
                fs,
                first(s, ffn_scratch_len(fs)),
            )
        });
        let gw = GatedFfnWeights {
            gate: &w1[..64 * D],
            up: &w3[..64 * D],
            down: &w2[..D * 64],
        };
        ok &= measure("gated_ffn (SiLU)", &mut || {
            gated_ffn(
                &x[..4 * D],
                &gw,
                Activation::Silu,
                first(out, 4 * D),
                fs,
                first(s, 2 * 64),
            )
        });
        let e = 16;
        let (hidden, len, mem_len) = (32, 4, 8);
        let (w1, w2): (&[f32], &[f32]) = (w1, w2);
        let attn = |w| mha_weights(w, e);
        let ffw = FfnWeights {
            w1: &w2[..hidden * e],
            b1: Some(&w2[..hidden]),
            w2: &w2[hidden * e..2 * hidden * e],
            b2: Some(&w2[..e]),
        };
        let norm = LayerNormWeights {
            weight: &w1[..e],
            bias: Some(&w2[..e]),
        };
        let enc = EncoderWeights {
            self_attn: attn(w1),
            ffn: ffw,
            norm1: norm,
            norm2: norm,
        };
        let config = LayerConfig {
            self_attention: SdpaParams {
                mask,
                ..Default::default()
            },
            ..LayerConfig::default()
        };
        let es = EncoderShape::new(len, e, 2, hidden);
        ok &= measure("encoder_layer", &mut || {
            encoder_layer(
                &x[..len * e],
                &enc,
                first(out, len * e),
                es,
                &config,
                first(buffer, encoder_buffer_len(es, false)),
                first(s, encoder_scratch_len(es)),
            )
        });
        let dec = DecoderWeights {
            self_attn: attn(w1),
            cross_attn: attn(w2),
            ffn: ffw,
            norm1: norm,
            norm2: norm,
            norm3: norm,
        };
        let ds = DecoderShape::new(len, mem_len, e, 2, hidden);
        ok &= measure("decoder_layer", &mut || {
            decoder_layer(
                &x[..len * e],
                &mem[..mem_len * e],
                &dec,
                first(out, len * e),
                ds,
                &config,
                first(buffer, decoder_buffer_len(ds, false)),
                first(s, decoder_scratch_len(ds)),
            )
        });
        // int8 encoder layer: quantized from the f32 layer above, scales calibrated on an
        // int8 input (scale 0.05) in two rounds; the kernel call alone is measured.
        {
            let st = int8_encoder_storage_len(es);
            let [src, wq, o8, sc8, _, _, _, _] = &mut *i8s;
            let mut mults = [FixedMultiplier::ONE; 512];
            let prepared = Int8LayerQuant::encoder(
                &enc,
                es,
                &config,
                first(wq, st.weights),
                first(w3, st.weight_scales),
            )
            .and_then(|layer| {
                let scales = layer.calibrate(
                    &src[..len * e],
                    0.05,
                    None,
                    2,
                    first(o8, len * e),
                    first(sc8, int8_encoder_scratch_len(es)),
                    &mut i64s[..],
                    first(i32s, st.ints),
                    first(&mut mults, st.multipliers),
                )?;
                let mut ints = [0i32; 1024];
                let mut m2 = [FixedMultiplier::ONE; 512];
                let params = layer.prepare_encoder(
                    &scales,
                    0.05,
                    first(&mut ints, st.ints),
                    first(&mut m2, st.multipliers),
                )?;
                Ok(measure("int8_encoder_layer", &mut || {
                    int8_encoder_layer(
                        &src[..len * e],
                        &params,
                        first(o8, len * e),
                        es,
                        first(sc8, int8_encoder_scratch_len(es)),
                        first(i64s, int8_layer_acc_len(e, 2)),
                        None,
                    )
                }))
            });
            match prepared {
                Ok(measured) => ok &= measured,
                Err(e) => {
                    println!("int8 encoder layer preparation failed: {}", e);
                    ok = false;
                }
            }
        }
        // ViT patch embedding: 3×8×8 image, 4×4 patches, width 16, class token.
        let ps = PatchShape::new(3, 8, 8, 4, e);
        let pw = PatchEmbedWeights {
            patch_weight: &w1[..e * 48],
            patch_bias: Some(&w2[..e]),
            cls_token: Some(&w2[e..2 * e]),
            pos_embed: Some(&w2[..5 * e]),
        };
        ok &= measure("patch_embed", &mut || {
            patch_embed(
                &x[..3 * 64],
                &pw,
                first(out, 5 * e),
                ps,
                first(s, patch_embed_scratch_len(ps)),
            )
        });
        // GAT: 6 nodes, 8 features in, 2 heads of 8, 8 edges.
        let gs = GatShape::new(6, 8, 8, 2);
        let edges: [u16; 16] = [0, 1, 2, 3, 4, 5, 0, 2, 1, 2, 3, 4, 5, 0, 3, 5];
        let gw = GatWeights {
            lin_weight: &w1[..16 * 8],
            att_src: &w2[..16],
            att_dst: &w2[16..32],
            bias: Some(&w2[..16]),
        };
        let gp = GatParams::default();
        ok &= measure("gat", &mut || {
            gat(
                &x[..6 * 8],
                &edges,
                &gw,
                first(out, 6 * 16),
                gs,
                &gp,
                first(s, gat_scratch_len(gs)),
            )
        });
        // Selective scan (Mamba): 16 channels, state 8, 8 tokens.
        let ss = ScanShape::new(16, 8);
        let sw = ScanWeights {
            a: &w1[..16 * 8],
            d: Some(&w2[..16]),
            delta_bias: Some(&w2[16..32]),
            delta_softplus: true,
        };
        let seq = ScanSequence {
            u: &x[..8 * 16],
            delta: &mem[..8 * 16],
            b: &w2[..8 * 8],
            c: &w2[64..128],
            z: Some(&mem[128..256]),
        };
        ok &= measure("selective_scan", &mut || {
            let state = first(s, 16 * 8);
            state.fill(0.0);
            selective_scan(state, &sw, &seq, first(out, 8 * 16), ss)
        });
    }

    // KV cache decode step (f32): 16 tokens cached, 2 query heads over 1 KV head.
    {
        let [k_store, v_store, x, _, out, s, _, _] = &mut *f32s;
        let shape = KvShape::new(1, 16, D, D);
        match KvCache::new(
            first(k_store, 16 * D),
            first(v_store, 16 * D),
            shape,
            CacheMode::Linear,
        ) {
            Ok(mut cache) => {
                for t in 0..16 {
                    ok &= cache.append(&x[t * D..][..D], &x[t * D + 7..][..D]).is_ok();
                }
                let params = SdpaParams {
                    mask,
                    ..Default::default()
                };
                ok &= measure("KvCache::attend (f32)", &mut || {
                    cache.attend(&x[..2 * D], first(out, 2 * D), 2, &params, first(s, D))
                });
            }
            Err(e) => {
                println!("KvCache::new failed: {}", e);
                ok = false;
            }
        }
    }

    // int8 kernels.
    {
        let [q, k, v, out, w, w2, k_store, v_store] = &mut *i8s;
        let scales = Int8Scales {
            q: 0.02,
            k: 0.02,
            v: 0.03,
            out: 0.03,
        };
        let n = 2 * 4 * 16;
        match Int8SdpaParams::new(scales, D, Score::Dot, None, mask, Int8Bias::None) {
            Ok(params) => {
                ok &= measure("int8_sdpa", &mut || {
                    int8_sdpa(
                        &q[..n],
                        &k[..L * D],
                        &v[..L * D],
                        first(out, n),
                        SHAPE,
                        &params,
                        first(i64s, D),
                    )
                });
                ok &= measure("int8_sdpa (packed scratch)", &mut || {
                    int8_sdpa(
                        &q[..n],
                        &k[..L * D],
                        &v[..L * D],
                        first(out, n),
                        SHAPE,
                        &params,
                        first(i64s, int8_sdpa_packed_scratch_len(SHAPE)),
                    )
                });
                // SAFETY: the only reference to the buffer, taken once.
                let u32s = unsafe { &mut *addr_of_mut!(U32) };
                let words = int8_packed_kv_words(L, D, D);
                if let Ok(mut cache) = Int8PackedKv::new(first(u32s, words), L, D, D) {
                    for t in 0..L {
                        ok &= cache.push(&k[t * D..][..D], &v[t * D..][..D]).is_ok();
                    }
                    ok &= measure("int8_sdpa_packed_kv", &mut || {
                        int8_sdpa_packed_kv(
                            &q[..4 * D],
                            &cache,
                            first(out, 4 * D),
                            &params,
                            first(i64s, D),
                        )
                    });
                }
                let shape = KvShape::new(1, 16, D, D);
                if let Ok(mut cache) = KvCache::new(
                    first(k_store, 16 * D),
                    first(v_store, 16 * D),
                    shape,
                    CacheMode::Linear,
                ) {
                    for t in 0..16 {
                        ok &= cache.append(&k[t * D..][..D], &v[t * D..][..D]).is_ok();
                    }
                    ok &= measure("KvCache::attend_int8", &mut || {
                        cache.attend_int8(
                            &q[..2 * D],
                            first(out, 2 * D),
                            2,
                            &params,
                            first(i64s, D),
                        )
                    });
                }
            }
            Err(e) => {
                println!("Int8SdpaParams::new failed: {}", e);
                ok = false;
            }
        }
        match Int8LinearAttentionParams::new(0.02, 0.02, 0.03, 0.03, false, 1e-6) {
            Ok(lp) => {
                ok &= measure("int8_linear_attention", &mut || {
                    int8_linear_attention(
                        &q[..n],
                        &k[..L * D],
                        &v[..L * D],
                        first(out, n),
                        SHAPE,
                        &lp,
                        first(i64s, D * D + 3 * D),
                    )
                })
            }
            Err(e) => {
                println!("Int8LinearAttentionParams::new failed: {}", e);
                ok = false;
            }
        }
        let luong = Int8LuongScore::general(&w[..D * D], 0.02, 0.01, 0.02);
        let out_m = FixedMultiplier::from_real(1.0);
        if let (Ok(score), Ok(out_m)) = (luong, out_m) {
            let lp = Int8LuongParams {
                score,
                out: out_m,
                mask: Mask::NONE,
            };
            ok &= measure("int8_luong_attention (general)", &mut || {
                int8_luong_attention(
                    &q[..D],
                    &k[..L * D],
                    &v[..L * D],
                    LuongShape { l: L, d: D, dv: D },
                    &lp,
                    first(out, D),
                    first(i16s, L),
                    first(i64s, D + L + D),
                )
            });
        } else {
            ok = false;
        }
        let w_scales = [0.01f32; A];
        let mut multipliers = [FixedMultiplier::ONE; 2 * A];
        let additive_scales = Int8AdditiveScales {
            query: 0.02,
            keys: 0.02,
            values: 0.03,
            w_query: &w_scales,
            w_key: &w_scales,
            v: 0.01,
            context: 0.03,
        };
        match Int8AdditiveParams::new(
            &w[..A * D],
            &w[A * D..2 * A * D],
            &w2[..A],
            additive_scales,
            Mask::NONE,
            &mut multipliers,
        ) {
            Ok(ap) => {
                let shape = AdditiveShape {
                    l: L,
                    dq: D,
                    dk: D,
                    dv: D,
                    a: A,
                };
                ok &= measure("int8_additive_attention", &mut || {
                    int8_additive_attention(
                        &q[..D],
                        &k[..L * D],
                        &v[..L * D],
                        shape,
                        &ap,
                        first(out, D),
                        first(i16s, L),
                        first(i64s, A + L + D),
                    )
                });
            }
            Err(e) => {
                println!("Int8AdditiveParams::new failed: {}", e);
                ok = false;
            }
        }
        // Dense layers and int8 MHA (E = 16, 2 heads), per-channel multipliers.
        let e = 16;
        let mults = [FixedMultiplier::from_real(0.004).unwrap_or(FixedMultiplier::ONE); 16];
        let (bias, _) = i32s.split_at_mut(e);
        bias.fill(100);
        let layer = Int8Dense {
            weight: &w[..e * e],
            bias: Some(bias),
            multipliers: &mults,
        };
        ok &= measure("int8_dense", &mut || {
            int8_dense(
                &q[..4 * e],
                &layer,
                first(out, 4 * e),
                LinearShape::new(4, e, e),
            )
            .map(|_| ())
        });
        if let Ok(attention) =
            Int8SdpaParams::new(scales, e / 2, Score::Dot, None, mask, Int8Bias::None)
        {
            let params = Int8MhaParams {
                q_proj: layer,
                k_proj: layer,
                v_proj: layer,
                out_proj: layer,
                attention,
            };
            let (scratch, rest) = w2.split_at_mut(int8_mha_scratch_len(4, 16, e));
            let _ = rest;
            ok &= measure("int8_mha", &mut || {
                int8_mha(
                    &q[..4 * e],
                    &k[..16 * e],
                    &v[..16 * e],
                    &params,
                    first(out, 4 * e),
                    MhaShape::new(4, 16, e, 2),
                    scratch,
                    first(i64s, int8_mha_acc_len(e, 2)),
                    None,
                )
            });
        } else {
            ok = false;
        }
    }

    // int8 layer norm and FFN.
    {
        let [x, w1, w2, out, scratch, _, _, _] = &mut *i8s;
        let (gamma, beta) = i32s.split_at_mut(D);
        gamma.fill(1 << 16);
        let norm = Int8LayerNorm {
            gamma,
            beta: &beta[..D],
            eps: 1,
            input: FixedMultiplier::ONE,
            sublayer: FixedMultiplier::ONE,
        };
        ok &= measure("int8_layer_norm", &mut || {
            int8_layer_norm(&x[..4 * D], None, &norm, first(out, 4 * D), D).map(|_| ())
        });
        let m = [FixedMultiplier::from_real(0.004).unwrap_or(FixedMultiplier::ONE)];
        match Int8Lut::prepare(Activation::Gelu, 0.05, 0.05) {
            Ok(lut) => {
                let params = Int8FfnParams {
                    linear1: Int8Dense {
                        weight: &w1[..64 * D],
                        bias: None,
                        multipliers: &m,
                    },
                    activation: lut,
                    linear2: Int8Dense {
                        weight: &w2[..D * 64],
                        bias: None,
                        multipliers: &m,
                    },
                };
                let fs = FfnShape::new(4, D, 64);
                ok &= measure("int8_ffn (GELU table)", &mut || {
                    int8_ffn(
                        &x[..4 * D],
                        &params,
                        first(out, 4 * D),
                        fs,
                        first(scratch, int8_ffn_scratch_len(fs)),
                    )
                    .map(|_| ())
                });
            }
            Err(e) => {
                println!("Int8Lut::prepare failed: {}", e);
                ok = false;
            }
        }
    }

    // int8 GAT and patch embedding, with integer parameters given directly.
    {
        let [x, w, att, out, scratch, image, _, _] = &mut *i8s;
        let m = [FixedMultiplier::from_real(0.004).unwrap_or(FixedMultiplier::ONE)];
        let gs = GatShape::new(6, 8, 8, 2);
        let edges: [u16; 16] = [0, 1, 2, 3, 4, 5, 0, 2, 1, 2, 3, 4, 5, 0, 3, 5];
        let params = Int8GatParams {
            lin: Int8Dense {
                weight: &w[..16 * 8],
                bias: None,
                multipliers: &m,
            },
            att_src: &att[..16],
            att_dst: &att[16..32],
            src_logit: FixedMultiplier::from_real(1.0).unwrap_or(FixedMultiplier::ONE),
            dst_logit: FixedMultiplier::from_real(1.0).unwrap_or(FixedMultiplier::ONE),
            slope_q16: 13107,
            out: FixedMultiplier::from_real(0.01).unwrap_or(FixedMultiplier::ONE),
            bias: None,
            concat: true,
            add_self_loops: true,
        };
        ok &= measure("int8_gat", &mut || {
            int8_gat(
                &x[..6 * 8],
                &edges,
                &params,
                first(out, 6 * 16),
                gs,
                first(scratch, int8_gat_scratch_len(gs)),
                first(i64s, int8_gat_acc_len(gs)),
                None,
            )
        });
        let ps = PatchShape::new(3, 8, 8, 4, 16);
        let (offsets, _) = i32s.split_at_mut(int8_patch_offsets_len(ps));
        offsets.fill(50);
        let pe = Int8PatchEmbed {
            weight: &w[..16 * 48],
            offsets,
            multipliers: &m,
            cls: Some(&att[..16]),
        };
        ok &= measure("int8_patch_embed", &mut || {
            int8_patch_embed(
                &image[..3 * 64],
                &pe,
                first(out, 5 * 16),
                ps,
                first(scratch, int8_patch_embed_scratch_len(ps)),
            )
            .map(|_| ())
        });
    }

    if ok {
        println!("stack: every kernel ok");
        exit_success()
    } else {
        println!("stack: FAILED");
        exit_failure()
    }
}
