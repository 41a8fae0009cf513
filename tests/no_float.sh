#!/usr/bin/env bash
# No float in the int8 kernels: links a throwaway firmware image for thumbv6m-none-eabi
# (Cortex-M0, no FPU: every float operation would be a call into a soft-float routine) whose
# only code path runs the int8 entry points (sdpa, MHA, dense, Luong, Bahdanau, linear, requantize,
# and the layers: LayerNorm, residual add, FFN, encoder and decoder layers, ViT patch embedding,
# GAT) with parameters built from raw integers (`FixedMultiplier::from_raw`,
# `Int8SdpaParams::from_raw`, the public integer fields of the layer parameter structs, never
# their float `prepare`), every score, mask term, bias, table and shape chosen at run time so
# nothing is optimized away. The linker keeps only reachable code
# (--gc-sections), so a soft-float symbol in the image means the int8 path uses float.
#
# A control image that also runs the float "prepare" step (`Int8SdpaParams::new`) must show
# soft-float symbols: that proves the detector can fail.
#
# Needs: cargo, the thumbv6m-none-eabi target (rustup target add thumbv6m-none-eabi), grep.
# Prints PASS or FAIL and exits non-zero on FAIL.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
probe="$root/target/no_float_probe"
rm -rf "$probe/src"
mkdir -p "$probe/src/bin"

cat >"$probe/Cargo.toml" <<EOF
[package]
name = "no_float_probe"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
microattn = { path = "$root" }

[profile.release]
panic = "abort"
opt-level = 3
debug = false

# Not part of the microattn workspace.
[workspace]
EOF
# Same dependency versions as the project, without touching the network when possible.
[ -f "$root/Cargo.lock" ] && cp "$root/Cargo.lock" "$probe/Cargo.lock"

cat >"$probe/src/lib.rs" <<'EOF'
//! Shared probe: runs every int8 entry point on inputs and parameters read at run time.
#![no_std]

use core::ptr::{addr_of, read_volatile};
use microattn::attention::int8::{
    int8_additive_attention, int8_dense, int8_linear_attention, int8_luong_attention, int8_mha,
    int8_sdpa, Int8AdditiveParams, Int8Bias, Int8Dense, Int8EluFeature,
    Int8LinearAttentionParams, Int8Logits, Int8LuongParams, Int8LuongScore, Int8MhaParams,
    Int8SdpaParams, Int8TanhMultipliers,
};
use microattn::attention::{AdditiveShape, AttentionShape, LuongShape};
use microattn::graph::GatShape;
use microattn::graph_int8::{int8_gat, Int8GatParams, Int8GatStats};
use microattn::layers::int8::{
    int8_add, int8_decoder_layer, int8_encoder_layer, int8_ffn, int8_layer_norm,
    int8_patch_embed, Int8Add, Int8DecoderParams, Int8EncoderParams, Int8FfnParams,
    Int8LayerNorm, Int8LayerStats, Int8Lut, Int8PatchEmbed,
};
use microattn::layers::{DecoderShape, EncoderShape, FfnShape, PatchShape};
use microattn::mha::MhaShape;
use microattn::projection::LinearShape;
use microattn::mask::{Mask, MaskTerm};
use microattn::quant::{requantize, FixedMultiplier};

/// Inputs the optimizer cannot see through.
pub static mut RAW: [i32; 32] = [0; 32];
pub static mut DATA: [i8; 4096] = [0; 4096];
pub static mut OUT: [i8; 512] = [0; 512];
pub static mut SCRATCH: [i64; 64] = [0; 64];
pub static mut TABLE: [i32; 64] = [0; 64];
pub static mut THRESHOLDS: [u32; 16] = [0; 16];
pub static mut GLOBAL: [usize; 4] = [0; 4];
pub static mut RANDOM: [(usize, usize); 4] = [(0, 0); 4];

pub fn raw(i: usize) -> i32 {
    unsafe { read_volatile(addr_of!(RAW).cast::<i32>().add(i % 32)) }
}

fn multiplier(i: usize) -> FixedMultiplier {
    FixedMultiplier::from_raw(raw(i), raw(i + 1)).unwrap_or(match FixedMultiplier::from_raw(1, 0) {
        Ok(m) => m,
        Err(_) => loop {},
    })
}

fn term<'a>(kind: i32, global: &'a [usize], random: &'a [(usize, usize)]) -> MaskTerm<'a> {
    let (a, b, c) = (raw(20) as usize, raw(21) as usize, raw(22) as usize);
    match kind {
        0 => MaskTerm::None,
        1 => MaskTerm::Causal,
        2 => MaskTerm::Sliding { left: a, right: b },
        3 => MaskTerm::Dilated { left: a, right: b, dilation: c },
        4 => MaskTerm::GlobalSliding { left: a, right: b, global },
        5 => MaskTerm::BlockSparse { block: a, window: b, global, random },
        _ => MaskTerm::KeyPadding { valid: a },
    }
}

/// Runs the int8 kernel with everything decided by `RAW`; returns a checksum.
pub fn probe() -> i32 {
    let logits = match raw(0) {
        0 => Int8Logits::Dot { logit: multiplier(1) },
        1 => Int8Logits::Cosine { logit: multiplier(1) },
        2 => Int8Logits::NegSqL2 { cross: multiplier(1), key: multiplier(3) },
        _ => Int8Logits::NegL1 { q_weight: raw(3), k_weight: raw(4), logit: multiplier(1) },
    };
    let (global, random, table, thresholds) = unsafe {
        (
            &*addr_of!(GLOBAL),
            &*addr_of!(RANDOM),
            &*addr_of!(TABLE),
            &*addr_of!(THRESHOLDS),
        )
    };
    let terms = [term(raw(7), global, random), term(raw(8), global, random)];
    let mask = Mask::new(&terms).with_offset(raw(9) as usize);
    let n = raw(10) as usize % 64;
    let bias = match raw(11) {
        0 => Int8Bias::None,
        1 => Int8Bias::Alibi { slopes: &table[..n] },
        _ => Int8Bias::T5 {
            bidirectional: raw(12) != 0,
            num_buckets: raw(13) as usize,
            table: &table[..n],
            thresholds: &thresholds[..raw(14) as usize % 16],
        },
    };
    let params = Int8SdpaParams::from_raw(logits, multiplier(5), mask, bias);
    let dim = |i: usize| raw(i) as usize % 16 + 1;
    let shape = AttentionShape::multi_head(dim(15), dim(16), dim(17), dim(18), dim(19), dim(23));
    let (data, out, scratch) = unsafe {
        (&*addr_of!(DATA), &mut *core::ptr::addr_of_mut!(OUT), &mut *core::ptr::addr_of_mut!(SCRATCH))
    };
    let (q, rest) = data.split_at(raw(24) as usize % 1024);
    let (k, v) = rest.split_at(raw(25) as usize % 1024);
    let v = &v[..(raw(26) as usize % 1024).min(v.len())];
    let out = &mut out[..(raw(27) as usize % 512)];
    let status = match int8_sdpa(q, k, v, out, shape, &params, scratch) {
        Ok(()) => 0,
        Err(_) => 1,
    };
    let mut total = status + requantize(raw(28), multiplier(29)) as i32;
    total += out.iter().map(|&x| x as i32).sum::<i32>();
    total + others(&params, q, k, v) + layers(&params, q, k, v)
}

/// The int8 layers (LayerNorm, add, FFN, encoder, decoder, ViT patch embedding, GAT), chosen by
/// `RAW[2]`, every parameter from the public integer fields (no float `prepare`).
fn layers(attention: &Int8SdpaParams<'_>, x: &[i8], w: &[i8], v: &[i8]) -> i32 {
    let ms = [multiplier(1), multiplier(3), multiplier(5), multiplier(29)];
    let n = raw(31) as usize % 4 + 1;
    let dim = |i: usize| raw(i) as usize % 16 + 1;
    let table = unsafe { &*addr_of!(TABLE) };
    let dense = Int8Dense {
        weight: w,
        bias: if raw(12) != 0 { Some(&table[..n]) } else { None },
        multipliers: &ms[..n],
    };
    let attn = Int8MhaParams {
        q_proj: dense,
        k_proj: dense,
        v_proj: dense,
        out_proj: dense,
        attention: *attention,
    };
    let norm = |i: usize| Int8LayerNorm {
        gamma: &table[..dim(15)],
        beta: &table[dim(16)..][..dim(15)],
        eps: raw(13) as i64 + ((raw(14) as i64) << 32),
        input: ms[i % 4],
        sublayer: ms[(i + 1) % 4],
    };
    let add = |i: usize| Int8Add { input: ms[i % 4], sublayer: ms[(i + 2) % 4] };
    let ffn = Int8FfnParams {
        linear1: dense,
        activation: Int8Lut { table: core::array::from_fn(|i| raw(i) as i8) },
        linear2: Int8Dense { weight: v, ..dense },
    };
    let (out, acc) = unsafe { (&mut *core::ptr::addr_of_mut!(OUT), &mut *core::ptr::addr_of_mut!(SCRATCH)) };
    let (y, scratch) = out.split_at_mut(raw(27) as usize % 512);
    let sub = if raw(12) != 0 { Some(v) } else { None };
    let peak = |r: Result<i64, microattn::Error>| r.unwrap_or(-1) as i32;
    let ok = |r: Result<(), microattn::Error>| r.is_ok() as i32;
    let mut stats = Int8LayerStats::default();
    let status = match raw(2) {
        0 => peak(int8_layer_norm(x, sub, &norm(0), y, dim(15))),
        1 => peak(int8_add(x, v, &add(0), y)),
        2 => {
            let shape = FfnShape::new(dim(15), dim(16), dim(17));
            int8_ffn(x, &ffn, y, shape, scratch).map_or(-1, |s| (s.hidden + s.out) as i32)
        }
        3 => {
            let params = Int8EncoderParams {
                self_attn: attn,
                ffn,
                norm1: norm(0),
                norm2: norm(1),
                residual1: add(0),
                residual2: add(1),
                norm_first: raw(21) != 0,
            };
            let shape = EncoderShape::new(dim(15), dim(16), dim(17), dim(18));
            ok(int8_encoder_layer(x, &params, y, shape, scratch, acc, Some(&mut stats)))
        }
        4 => {
            let params = Int8DecoderParams {
                self_attn: attn,
                cross_attn: Int8MhaParams { k_proj: Int8Dense { weight: x, ..dense }, ..attn },
                ffn,
                norm1: norm(0),
                norm2: norm(1),
                norm3: norm(2),
                residual1: add(0),
                residual2: add(1),
                residual3: add(2),
                norm_first: raw(21) != 0,
            };
            let shape = DecoderShape::new(dim(15), dim(16), dim(17), dim(18), dim(19));
            ok(int8_decoder_layer(x, w, &params, y, shape, scratch, acc, Some(&mut stats)))
        }
        5 => {
            let params = Int8PatchEmbed {
                weight: w,
                offsets: &table[..raw(10) as usize % 64],
                multipliers: &ms[..n],
                cls: sub,
            };
            let shape = PatchShape::new(dim(15), dim(16), dim(17), dim(18), dim(19));
            peak(int8_patch_embed(x, &params, y, shape, scratch))
        }
        _ => {
            let params = Int8GatParams {
                lin: dense,
                att_src: v,
                att_dst: &w[..(raw(26) as usize % 64).min(w.len())],
                src_logit: ms[0],
                dst_logit: ms[1],
                slope_q16: raw(20),
                out: ms[2],
                bias: if raw(21) != 0 { Some(&table[..n]) } else { None },
                concat: raw(22) != 0,
                add_self_loops: raw(23) != 0,
            };
            let edges: [i32; 8] = core::array::from_fn(|i| raw(i + 16));
            let edges = &edges[..raw(24) as usize % 9];
            let shape = GatShape::new(dim(15), dim(16), dim(17), dim(18));
            let mut gat = Int8GatStats::default();
            let r = ok(int8_gat(x, edges, &params, y, shape, scratch, acc, Some(&mut gat)));
            r + (gat.projected + gat.out) as i32
        }
    };
    let s = stats;
    let peaks = s.self_attn.out + s.cross_attn.q + s.ffn.hidden + s.norm[0] + s.norm[2] + s.residual[1];
    status + peaks as i32 + y.iter().map(|&b| b as i32).sum::<i32>()
}

/// The other int8 entry points: dense, MHA, Luong, linear, Bahdanau, chosen by `RAW[30]`.
fn others(attention: &Int8SdpaParams<'_>, x: &[i8], w: &[i8], v: &[i8]) -> i32 {
    let ms = [multiplier(1), multiplier(3), multiplier(5), multiplier(29)];
    let n = raw(31) as usize % 4 + 1;
    let table = unsafe { &*addr_of!(TABLE) };
    let dense = Int8Dense {
        weight: w,
        bias: if raw(12) != 0 { Some(&table[..n]) } else { None },
        multipliers: &ms[..n],
    };
    let dim = |i: usize| raw(i) as usize % 16 + 1;
    let (out, scratch) = unsafe { (&mut *core::ptr::addr_of_mut!(OUT), &mut *core::ptr::addr_of_mut!(SCRATCH)) };
    let mut weights = [0i16; 16];
    let ok = |r: Result<(), microattn::Error>| r.is_ok() as i32;
    match raw(30) {
        0 => int8_dense(x, &dense, out, LinearShape::new(dim(15), dim(16), dim(17))).unwrap_or(0) as i32,
        1 => {
            let params = Int8MhaParams {
                q_proj: dense,
                k_proj: dense,
                v_proj: dense,
                out_proj: dense,
                attention: *attention,
            };
            let (scratch8, out8) = out.split_at_mut(256);
            let shape = MhaShape::new(dim(15), dim(16), dim(17), dim(18));
            ok(int8_mha(x, w, v, &params, out8, shape, scratch8, scratch, None))
        }
        2 => {
            let score = match raw(0) {
                0 => Int8LuongScore::Dot { logit: ms[0] },
                1 => Int8LuongScore::General { w, logit: ms[1] },
                _ => Int8LuongScore::Concat {
                    w,
                    v,
                    tanh: Int8TanhMultipliers { query: &ms[..n], key: &ms[1..] },
                    logit: ms[2],
                },
            };
            let params = Int8LuongParams { score, out: ms[3], mask: attention.mask };
            let shape = LuongShape { l: dim(15), d: dim(16), dv: dim(17) };
            ok(int8_luong_attention(x, w, v, shape, &params, out, &mut weights, scratch))
        }
        3 => {
            let feature = |i: usize| Int8EluFeature { positive: ms[i], negative: ms[i + 1] };
            let params = Int8LinearAttentionParams {
                causal: raw(12) != 0,
                query: feature(0),
                key: feature(1),
                eps_q32: raw(13) as i64,
                out: ms[3],
            };
            let shape = AttentionShape::multi_head(dim(15), dim(16), dim(17), dim(18), dim(19), dim(23));
            ok(int8_linear_attention(x, w, v, out, shape, &params, scratch))
        }
        _ => {
            let params = Int8AdditiveParams {
                w_query: w,
                w_key: x,
                v,
                tanh: Int8TanhMultipliers { query: &ms[..n], key: &ms[1..] },
                logit: ms[2],
                out: ms[3],
                mask: attention.mask,
            };
            let shape = AdditiveShape { l: dim(15), dq: dim(16), dk: dim(17), dv: dim(18), a: dim(19) };
            ok(int8_additive_attention(x, w, v, shape, &params, out, &mut weights, scratch))
        }
    }
}
EOF

cat >"$probe/src/bin/int8_only.rs" <<'EOF'
#![no_std]
#![no_main]

#[no_mangle]
pub extern "C" fn _start() -> ! {
    let r = no_float_probe::probe();
    unsafe { core::ptr::write_volatile(core::ptr::addr_of_mut!(no_float_probe::RAW).cast::<i32>(), r) };
    loop {}
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}
EOF

cat >"$probe/src/bin/control.rs" <<'EOF'
#![no_std]
#![no_main]
//! Control: the float prepare step must show up as soft-float symbols.
use microattn::attention::int8::{Int8Bias, Int8Scales, Int8SdpaParams};
use microattn::attention::Score;
use microattn::mask::Mask;

#[no_mangle]
pub extern "C" fn _start() -> ! {
    let f = |i| f32::from_bits(no_float_probe::raw(i) as u32);
    let scales = Int8Scales { q: f(0), k: f(1), v: f(2), out: f(3) };
    let r = match Int8SdpaParams::new(scales, 16, Score::Dot, Some(f(4)), Mask::NONE, Int8Bias::None) {
        Ok(p) => p.out.multiplier(),
        Err(_) => 0,
    };
    unsafe { core::ptr::write_volatile(core::ptr::addr_of_mut!(no_float_probe::RAW).cast::<i32>(), r + no_float_probe::probe()) };
    loop {}
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}
EOF

target=thumbv6m-none-eabi
if ! (cd "$probe" && CARGO_TARGET_DIR="$probe/target" cargo build --quiet --release --target "$target" --bins); then
  echo "no_float: FAIL (could not build the $target probe; is the target installed?)"
  exit 1
fi

# Soft-float entry points: ARM RTABI helpers on f32/f64 (__aeabi_f*, __aeabi_d*, conversions
# from integers, float compares) and the generic libgcc/compiler-rt names.
pattern='__aeabi_(f|d|cf|cd|i2f|ui2f|l2f|ul2f|i2d|ui2d|l2d|ul2d)[a-z0-9]*|__(add|sub|mul|div|neg|eq|ne|lt|le|gt|ge|un|unord|cmp|pow)[sd]f[0-9]|__float[a-z]*[sd]f|__fix[a-z]*[sd]f[a-z]*|__extendsfdf2|__truncdfsf2'
bin="$probe/target/$target/release"
found=$(grep -aoE "$pattern" "$bin/int8_only" | sort -u | tr '\n' ' ' || true)
control=$(grep -aoE "$pattern" "$bin/control" | sort -u | tr '\n' ' ' || true)
size=$(wc -c <"$bin/int8_only")

if [ -z "$control" ]; then
  echo "no_float: FAIL (the control image, which uses float, shows no soft-float symbol: detector broken)"
  exit 1
fi
if ! grep -aq "int8" "$bin/int8_only"; then
  echo "no_float: FAIL (the probe image has no int8 symbol: the probe did not link the kernel)"
  exit 1
fi
if [ -n "$found" ]; then
  echo "no_float: FAIL (int8 entry points reference soft-float routines: $found)"
  exit 1
fi
echo "no_float: PASS (int8_sdpa, int8_mha, int8_dense, int8_luong_attention, int8_additive_attention, int8_linear_attention, requantize, int8_layer_norm, int8_add, int8_ffn, int8_encoder_layer, int8_decoder_layer, int8_patch_embed, int8_gat for $target, $size-byte image: no soft-float symbol; control image has: $control)"
