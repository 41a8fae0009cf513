//! Runs the conformance cases embedded by `build.rs` with the library on target and prints
//! one line per case and type:
//!
//! ```text
//! case NAME type f32 rel_l2 1.2e-7 tol 1e-5
//! case NAME type f16 error REASON
//! case NAME type i8 rel_l2 3.1e-3 tol 3e-2 hash 0x1234abcd
//! skip NAME REASON
//! ```
//!
//! The host (`scripts/qemu-test`) decides pass/fail from these lines; the firmware only
//! measures. An i8 line also carries the FNV-1a hash of the int8 output, which must equal
//! the host's for the same case (`examples/int8_hashes.rs`): the integer path is
//! bit-identical on every target and backend. `rel_l2 = |y - y_ref| / max(|y_ref|, 1e-12)` in f64, printed as `nan` when an
//! output is not finite.

use core::mem::MaybeUninit;
use defmt::println;
use microattn::attention::int8::{
    int8_sdpa, int8_sdpa_packed_scratch_len, Int8Bias, Int8Scales, Int8SdpaParams,
};
use microattn::attention::{
    additive_attention, additive_attention_typed, linear_attention, linear_attention_typed,
    luong_attention, luong_attention_typed, sdpa, sdpa_typed, AdditiveParams, AdditiveShape,
    AttentionShape, Bias, LinearAttentionParams, LuongParams, LuongScore, LuongShape, Score,
    SdpaParams,
};
use microattn::graph::{gat, GatParams, GatShape, GatWeights};
use microattn::graph_int8::Int8GatQuant;
use microattn::layers::int8::{
    calibrate_patch_embed, int8_patch_embed_scratch_len, Int8LayerQuant,
};
use microattn::layers::{
    decoder_layer, encoder_layer, patch_embed, Activation, DecoderShape, DecoderWeights,
    EncoderShape, EncoderWeights, FfnWeights, LayerConfig, LayerNormWeights, PatchEmbedWeights,
    PatchShape,
};
use microattn::mask::{Mask, MaskTerm};
use microattn::mha::{mha, mha_typed, MhaShape, MhaWeights};
use microattn::position::{rope, sinusoidal_table, RopeLayout, RopeParams};
use microattn::quant::{quantize, FixedMultiplier, QParams};
use microattn::ssm::{selective_scan, ScanSequence, ScanShape, ScanWeights};
use microattn::{f16, Element, Error};

/// One SDPA conformance case: tensors row-major, `[heads, lq, d]` etc.
pub struct SdpaCase {
    /// Case name.
    pub name: &'static str,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Query rows.
    pub lq: usize,
    /// Keys.
    pub lk: usize,
    /// Query/key width.
    pub d: usize,
    /// Value width.
    pub dv: usize,
    /// Queries.
    pub q: &'static [f32],
    /// Keys.
    pub k: &'static [f32],
    /// Values.
    pub v: &'static [f32],
    /// Reference output.
    pub expected: &'static [f32],
    /// Logit scale (`None`: `1/sqrt(d)`).
    pub scale: Option<f32>,
    /// Score function.
    pub score: Score,
    /// Mask terms.
    pub mask: &'static [MaskTerm<'static>],
    /// Position of query row 0; may be negative.
    pub q_pos_offset: i64,
    /// Additive bias.
    pub bias: Bias<'static>,
    /// f32 tolerance, when the case is run in f32.
    pub tol_f32: Option<f64>,
    /// f16 tolerance, when the case is run in f16.
    pub tol_f16: Option<f64>,
    /// i8 tolerance, when the case is run in i8 (`int8_sdpa`).
    pub tol_i8: Option<f64>,
}

/// An op other than SDPA and its parameters; the case's inputs are in the kernel's order.
pub enum Op {
    /// Linear attention (elu+1): inputs q, k, v.
    #[allow(missing_docs)]
    Linear {
        heads: usize,
        kv_heads: usize,
        lq: usize,
        lk: usize,
        d: usize,
        dv: usize,
        causal: bool,
        eps: f32,
    },
    /// Bahdanau: inputs query, keys, values, w_query, w_key, v; outputs context, weights.
    #[allow(missing_docs)]
    Additive {
        l: usize,
        dq: usize,
        dk: usize,
        dv: usize,
        a: usize,
        mask: &'static [MaskTerm<'static>],
        offset: i64,
    },
    /// Luong (`score` 0 dot, 1 general, 2 concat): inputs query, keys, values[, w[, v]].
    #[allow(missing_docs)]
    Luong {
        l: usize,
        d: usize,
        dv: usize,
        score: u8,
        mask: &'static [MaskTerm<'static>],
        offset: i64,
    },
    /// Multi-head attention with projections: inputs query, key, value, in_proj_weight,
    /// [in_proj_bias,] out_proj.weight[, out_proj.bias].
    #[allow(missing_docs)]
    Mha {
        lq: usize,
        lk: usize,
        embed: usize,
        heads: usize,
        mask: &'static [MaskTerm<'static>],
        offset: i64,
        in_bias: bool,
        out_bias: bool,
    },
    /// RoPE in place (`position::rope`): input x, output the rotated x.
    #[allow(missing_docs)]
    Rope {
        heads: usize,
        len: usize,
        dim: usize,
        layout: RopeLayout,
        base: f32,
        pos_offset: usize,
    },
    /// Sinusoidal table (`position::sinusoidal_table`): no inputs, output pe.
    #[allow(missing_docs)]
    Sinusoidal {
        len: usize,
        dim: usize,
        pos_offset: usize,
        base: f32,
    },
    /// Selective scan from a zero state: inputs u, delta, a, b, c, d, z, delta_bias (the
    /// last three empty when absent); output y.
    #[allow(missing_docs)]
    Scan {
        channels: usize,
        state: usize,
        delta_softplus: bool,
    },
    /// GAT (`graph::gat`): inputs x, lin_weight, att_src, att_dst, bias (empty when absent).
    #[allow(missing_docs)]
    Gat {
        nodes: usize,
        in_features: usize,
        out_features: usize,
        heads: usize,
        edges: &'static [i32],
        concat: bool,
        negative_slope: f32,
        add_self_loops: bool,
    },
    /// ViT patch embedding: inputs image, patch_weight, patch_bias, cls_token, pos_embed
    /// (the last three empty when absent); output tokens.
    #[allow(missing_docs)]
    Vit {
        channels: usize,
        height: usize,
        width: usize,
        patch: usize,
        embed: usize,
    },
    /// Encoder layer: inputs src, then the state dict (self_attn, FFN, two norms; absent
    /// biases empty); the output is followed by the layer's activation buffer.
    #[allow(missing_docs)]
    Encoder {
        len: usize,
        embed: usize,
        heads: usize,
        hidden: usize,
        activation: Activation,
        norm_first: bool,
        eps: f32,
        mask: &'static [MaskTerm<'static>],
    },
    /// Decoder layer: inputs tgt, memory, then the state dict (self_attn, multihead_attn,
    /// FFN, three norms; absent biases empty); the output is followed by the buffer.
    #[allow(missing_docs)]
    Decoder {
        tgt_len: usize,
        mem_len: usize,
        embed: usize,
        heads: usize,
        hidden: usize,
        activation: Activation,
        norm_first: bool,
        eps: f32,
        tgt_mask: &'static [MaskTerm<'static>],
        memory_mask: &'static [MaskTerm<'static>],
    },
}

/// A conformance case of an [`Op`].
pub struct OpCase {
    /// Case name.
    pub name: &'static str,
    /// The op and its parameters.
    pub op: Op,
    /// Input tensors in the kernel's order.
    pub inputs: &'static [&'static [f32]],
    /// Expected tensors (name, data), in the kernel's output order.
    pub expected: &'static [(&'static str, &'static [f32])],
    /// Storage elements the op needs after its output (a layer's activation buffer).
    pub work: usize,
    /// f32 tolerance, when the case is run in f32.
    pub tol_f32: Option<f64>,
    /// f16 tolerance, when the case is run in f16.
    pub tol_f16: Option<f64>,
    /// i8 tolerance, when the case is run in i8 (the layer ops: weights quantized and stage
    /// scales calibrated on target by the library's offline step).
    pub tol_i8: Option<f64>,
}

/// Inputs an op takes at most (the decoder layer: tgt, memory and its state dict; as
/// `MAX_TENSORS` in build.rs).
const MAX_TENSORS: usize = 24;

/// A generated case.
pub enum Case {
    /// A single- or multi-head SDPA case.
    Sdpa(SdpaCase),
    /// Another op.
    Op(OpCase),
    /// A case of a supported op the generator could not express: reported as failed.
    Unsupported {
        /// Case name.
        name: &'static str,
        /// Why.
        reason: &'static str,
    },
}

#[allow(missing_docs, dead_code)]
mod generated {
    use super::{Case, Op, OpCase, SdpaCase};
    use microattn::attention::{Bias, Score};
    use microattn::layers::Activation;
    use microattn::mask::MaskTerm;
    use microattn::position::RopeLayout;
    include!(concat!(env!("OUT_DIR"), "/cases.rs"));
}

pub use generated::{
    CASES, MAX_BIAS_I8, MAX_DV, MAX_INPUT, MAX_INPUT_I8, MAX_OUTPUT, MAX_OUTPUT_I8, MAX_PACKED_I8,
    MAX_SCRATCH, SKIPPED,
};
use generated::{
    MAX_LAYER_ACC, MAX_LAYER_INPUT, MAX_LAYER_INTS, MAX_LAYER_MULTS, MAX_LAYER_OUTPUT,
    MAX_LAYER_SCALES, MAX_LAYER_SCRATCH, MAX_LAYER_WEIGHTS,
};

/// T5 bucket thresholds of an i8 case (`Int8Bias::t5_threshold_count`: under half the buckets).
const MAX_THRESHOLDS: usize = 64;

/// Working memory for the typed runs, sized by the generator for this machine's cases.
pub struct Buffers {
    input_f16: [f16; MAX_INPUT],
    out_f32: [f32; MAX_OUTPUT],
    out_f16: [f16; MAX_OUTPUT],
    scratch: [f32; MAX_SCRATCH],
    input_i8: [i8; MAX_INPUT_I8],
    out_i8: [i8; MAX_OUTPUT_I8],
    scratch_i64: [i64; MAX_DV],
    /// Scratch with room for `int8_sdpa` to pack keys and values (the DSP cores).
    scratch_packed: [i64; MAX_PACKED_I8],
    bias_i32: [i32; MAX_BIAS_I8],
    thresholds: [u32; MAX_THRESHOLDS],
    layer: LayerBuffers,
}

/// Storage of the int8 layer cases: quantized weights and their scales, the prepared
/// tables, quantized inputs, output and scratch (sized by the generator; 1 element each
/// when no layer case runs in i8).
struct LayerBuffers {
    weights: [i8; MAX_LAYER_WEIGHTS],
    scales: [f32; MAX_LAYER_SCALES],
    ints: [i32; MAX_LAYER_INTS],
    /// Zeroed, not `FixedMultiplier::ONE`: one nonzero byte would move all of `Buffers` from
    /// `.bss` to `.data`, whose image takes flash (the microbit has none to spare).
    mults: MaybeUninit<[FixedMultiplier; MAX_LAYER_MULTS]>,
    input: [i8; MAX_LAYER_INPUT],
    output: [i8; MAX_LAYER_OUTPUT],
    scratch: [i8; MAX_LAYER_SCRATCH],
    acc: [i64; MAX_LAYER_ACC],
}

impl Buffers {
    /// Zeroed buffers (const, so they can live in a `static`).
    pub const fn new() -> Self {
        Buffers {
            input_f16: [f16::ZERO; MAX_INPUT],
            out_f32: [0.0; MAX_OUTPUT],
            out_f16: [f16::ZERO; MAX_OUTPUT],
            scratch: [0.0; MAX_SCRATCH],
            input_i8: [0; MAX_INPUT_I8],
            out_i8: [0; MAX_OUTPUT_I8],
            scratch_i64: [0; MAX_DV],
            scratch_packed: [0; MAX_PACKED_I8],
            bias_i32: [0; MAX_BIAS_I8],
            thresholds: [0; MAX_THRESHOLDS],
            layer: LayerBuffers {
                weights: [0; MAX_LAYER_WEIGHTS],
                scales: [0.0; MAX_LAYER_SCALES],
                ints: [0; MAX_LAYER_INTS],
                mults: MaybeUninit::zeroed(),
                input: [0; MAX_LAYER_INPUT],
                output: [0; MAX_LAYER_OUTPUT],
                scratch: [0; MAX_LAYER_SCRATCH],
                acc: [0; MAX_LAYER_ACC],
            },
        }
    }
}

impl Default for Buffers {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs every embedded case in every type it names; prints the plan, one line per result,
/// the skipped cases and a closing `done` line. Returns the number of result lines.
pub fn run_all(buffers: &mut Buffers) -> usize {
    let planned: usize = CASES
        .iter()
        .map(|c| match c {
            Case::Sdpa(s) => {
                s.tol_f32.is_some() as usize
                    + s.tol_f16.is_some() as usize
                    + s.tol_i8.is_some() as usize
            }
            Case::Op(o) => {
                o.tol_f32.is_some() as usize
                    + o.tol_f16.is_some() as usize
                    + o.tol_i8.is_some() as usize
            }
            Case::Unsupported { .. } => 1,
        })
        .sum();
    println!(
        "machine {=str} plan {=usize} skipped {=usize}",
        crate::MACHINE,
        planned,
        SKIPPED.len()
    );
    let mut lines = 0;
    for case in CASES {
        match case {
            Case::Sdpa(c) => {
                if let Some(tol) = c.tol_f32 {
                    let out = &mut buffers.out_f32[..c.expected.len()];
                    let result = run_sdpa(c, c.q, c.k, c.v, out, &mut buffers.scratch);
                    report(c.name, "f32", tol, result.map(|()| rel_l2(out, c.expected)));
                    lines += 1;
                }
                if let Some(tol) = c.tol_f16 {
                    let (nq, nk) = (c.q.len(), c.k.len());
                    let input = &mut buffers.input_f16[..nq + nk + c.v.len()];
                    let (q, rest) = input.split_at_mut(nq);
                    let (k, v) = rest.split_at_mut(nk);
                    to_f16(c.q, q);
                    to_f16(c.k, k);
                    to_f16(c.v, v);
                    let out = &mut buffers.out_f16[..c.expected.len()];
                    let result = run_sdpa(c, q, k, v, out, &mut buffers.scratch);
                    report(c.name, "f16", tol, result.map(|()| rel_l2(out, c.expected)));
                    lines += 1;
                }
                if let Some(tol) = c.tol_i8 {
                    report_i8(c.name, tol, run_sdpa_i8(c, buffers));
                    lines += 1;
                }
            }
            Case::Op(c) => {
                let n_out: usize = c.expected.iter().map(|(_, e)| e.len()).sum();
                if let Some(tol) = c.tol_f32 {
                    let out = &mut buffers.out_f32[..n_out + c.work];
                    let result = run_op(&c.op, c.inputs, out, &mut buffers.scratch);
                    report(
                        c.name,
                        "f32",
                        tol,
                        result.map(|()| worst_rel_l2(out, c.expected)),
                    );
                    lines += 1;
                }
                if let Some(tol) = c.tol_f16 {
                    // f16 copies of every input (weights too), then slices in the same order.
                    let mut lens = [0usize; MAX_TENSORS];
                    let mut at = 0;
                    for (len, src) in lens.iter_mut().zip(c.inputs) {
                        to_f16(src, &mut buffers.input_f16[at..at + src.len()]);
                        *len = src.len();
                        at += src.len();
                    }
                    let mut slices: [&[f16]; MAX_TENSORS] = [&[]; MAX_TENSORS];
                    let mut rest = &buffers.input_f16[..at];
                    for (slice, &len) in slices.iter_mut().zip(&lens) {
                        let (head, tail) = rest.split_at(len);
                        *slice = head;
                        rest = tail;
                    }
                    let out = &mut buffers.out_f16[..n_out + c.work];
                    let inputs = &slices[..c.inputs.len().min(MAX_TENSORS)];
                    let result = run_op(&c.op, inputs, out, &mut buffers.scratch);
                    report(
                        c.name,
                        "f16",
                        tol,
                        result.map(|()| worst_rel_l2(out, c.expected)),
                    );
                    lines += 1;
                }
                if let Some(tol) = c.tol_i8 {
                    report_i8(c.name, tol, run_layer_i8(c, &mut buffers.layer));
                    lines += 1;
                }
            }
            Case::Unsupported { name, reason } => {
                println!("case {=str} type f32 error {=str}", name, reason);
                lines += 1;
            }
        }
    }
    for (name, reason) in SKIPPED {
        println!("skip {=str} {=str}", name, reason);
    }
    println!(
        "stack high_water {=usize} of {=usize} bytes",
        crate::bench::stack_used_since_reset(),
        stack_size()
    );
    println!("done {=usize}", lines);
    lines
}

/// Symmetric per-tensor int8 quantization with the max-abs scale (as the host's i8 adapter).
fn quantize_max_abs(x: &[f32], out: &mut [i8]) -> Result<QParams, Error> {
    let max_abs = x.iter().fold(0.0f32, |m, v| m.max(libm::fabsf(*v)));
    let params = QParams::from_max_abs(max_abs)?;
    quantize(x, params, out)?;
    Ok(params)
}

/// FNV-1a (32-bit) of int8 bytes: the fingerprint the host compares (`scripts/qemu-test`).
pub fn fnv1a(bytes: &[i8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ b as u8 as u32).wrapping_mul(0x0100_0193)
    })
}

/// Runs an SDPA case in i8 exactly as the host's i8 adapter does (per-tensor max-abs
/// quantization; output scale calibrated by a first run with the value scale) and returns
/// the rel-L2 error of the dequantized output and the FNV-1a hash of the int8 output.
fn run_sdpa_i8(c: &SdpaCase, b: &mut Buffers) -> Result<(f64, u32), Error> {
    let shape = AttentionShape::multi_head(c.heads, c.kv_heads, c.lq, c.lk, c.d, c.dv);
    let (nq, nk, nv) = (c.q.len(), c.k.len(), c.v.len());
    let input = b
        .input_i8
        .get_mut(..nq + nk + nv)
        .ok_or(Error::InvalidParameter)?;
    let (q, rest) = input.split_at_mut(nq);
    let (k, v) = rest.split_at_mut(nk);
    let qp = quantize_max_abs(c.q, q)?;
    let kp = quantize_max_abs(c.k, k)?;
    let vp = quantize_max_abs(c.v, v)?;
    let bias = Int8Bias::from_bias(&c.bias, c.heads, &mut b.bias_i32, &mut b.thresholds)?;
    let mask = Mask::new(c.mask).with_signed_offset(c.q_pos_offset);
    let out = b
        .out_i8
        .get_mut(..c.expected.len())
        .ok_or(Error::InvalidParameter)?;
    let (compact, packed) = (&mut b.scratch_i64[..], &mut b.scratch_packed[..]);
    let run = |out_scale: f32, out: &mut [i8], scratch: &mut [i64]| {
        let scales = Int8Scales {
            q: qp.scale(),
            k: kp.scale(),
            v: vp.scale(),
            out: out_scale,
        };
        let params = Int8SdpaParams::new(scales, c.d, c.score, c.scale, mask, bias)?;
        int8_sdpa(q, k, v, out, shape, &params, scratch)
    };
    let mut out_scale = vp.scale();
    run(out_scale, out, compact)?;
    let steps = out.iter().map(|&x| (x as i32).abs()).max().unwrap_or(0);
    if steps > 0 && steps < 127 {
        out_scale = vp.scale() * (steps as f32 + 0.5) / 127.0;
        run(out_scale, out, compact)?;
    }
    // On the DSP cores, again with the scratch that lets the kernel pack keys and values:
    // the int8 bytes must not change.
    if packed.len() >= int8_sdpa_packed_scratch_len(shape) {
        let compact_hash = fnv1a(out);
        run(out_scale, out, packed)?;
        if fnv1a(out) != compact_hash {
            println!("packed scratch changed the int8 output of {=str}", c.name);
            return Err(Error::InvalidParameter);
        }
    }
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (&y, &r) in out.iter().zip(c.expected) {
        let e = (y as f32 * out_scale) as f64 - r as f64;
        diff += e * e;
        norm += r as f64 * r as f64;
    }
    let err = libm::sqrt(diff) / libm::sqrt(norm).max(1e-12);
    Ok((err, fnv1a(out)))
}

/// Prints an i8 result line: the error and the FNV-1a hash of the int8 output.
fn report_i8(name: &str, tol: f64, result: Result<(f64, u32), Error>) {
    match result {
        Ok((err, hash)) if err.is_finite() => println!(
            "case {=str} type i8 rel_l2 {=f64} tol {=f64} hash {=u32:#010x}",
            name, err, tol, hash
        ),
        Ok(_) => println!("case {=str} type i8 rel_l2 nan tol {=f64}", name, tol),
        Err(e) => println!("case {=str} type i8 error {}", name, e),
    }
}

/// rel-L2 of the int8 `out` at `scale` against `expected`, and the FNV-1a hash of `out`.
fn i8_result(out: &[i8], scale: f32, expected: &[(&str, &[f32])]) -> Result<(f64, u32), Error> {
    let &[(_, expected)] = expected else {
        return Err(Error::InvalidParameter);
    };
    if out.len() != expected.len() {
        return Err(Error::InvalidParameter);
    }
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (&y, &r) in out.iter().zip(expected) {
        let e = (y as f32 * scale) as f64 - r as f64;
        diff += e * e;
        norm += r as f64 * r as f64;
    }
    let err = libm::sqrt(diff) / libm::sqrt(norm).max(1e-12);
    Ok((err, fnv1a(out)))
}

/// Calibration runs before the final one, as the host's i8 adapters
/// (`tests/conformance/ops/int8/layer_run.rs`): encoder and decoder layers, GAT, ViT.
const LAYER_ROUNDS: usize = 4;
const GAT_ROUNDS: usize = 3;
const VIT_ROUNDS: usize = 2;

/// The first `n` elements of a buffer, or an error.
fn first<T>(buf: &mut [T], n: usize) -> Result<&mut [T], Error> {
    buf.get_mut(..n).ok_or(Error::InvalidParameter)
}

/// Runs a layer case in i8 exactly as the host's i8 adapter does: inputs quantized per
/// tensor (max-abs), the f32 weights quantized and the stage scales calibrated on the
/// case's input by the library's offline step, the integer layer run. Returns the rel-L2
/// error of the dequantized output and the FNV-1a hash of the int8 output.
fn run_layer_i8(c: &OpCase, b: &mut LayerBuffers) -> Result<(f64, u32), Error> {
    let inputs = c.inputs;
    let n_out: usize = c.expected.iter().map(|(_, e)| e.len()).sum();
    let out = first(&mut b.output, n_out)?;
    let mults = b.mults.write([FixedMultiplier::ONE; MAX_LAYER_MULTS]);
    match c.op {
        Op::Encoder {
            len,
            embed,
            heads,
            hidden,
            activation,
            norm_first,
            eps,
            mask,
        } if generated::HAS_I8_ENCODER_LAYER => {
            let weights = EncoderWeights {
                self_attn: mha_weights(inputs, 1)?,
                ffn: ffn_weights(inputs, 5)?,
                norm1: norm_weights(inputs, 9)?,
                norm2: norm_weights(inputs, 11)?,
            };
            let config = LayerConfig {
                activation,
                norm_first,
                eps,
                self_attention: SdpaParams {
                    mask: Mask::new(mask),
                    ..SdpaParams::default()
                },
                ..LayerConfig::default()
            };
            let shape = EncoderShape::new(len, embed, heads, hidden);
            let x = required(inputs, 0)?;
            let src = first(&mut b.input, x.len())?;
            let input = quantize_max_abs(x, src)?.scale();
            let layer =
                Int8LayerQuant::encoder(&weights, shape, &config, &mut b.weights, &mut b.scales)?;
            let scales = layer.calibrate(
                src,
                input,
                None,
                LAYER_ROUNDS,
                out,
                &mut b.scratch,
                &mut b.acc,
                &mut b.ints,
                mults,
            )?;
            i8_result(out, layer.output_scale(&scales, input), c.expected)
        }
        Op::Decoder {
            tgt_len,
            mem_len,
            embed,
            heads,
            hidden,
            activation,
            norm_first,
            eps,
            tgt_mask,
            memory_mask,
        } if generated::HAS_I8_DECODER_LAYER => {
            let weights = DecoderWeights {
                self_attn: mha_weights(inputs, 2)?,
                cross_attn: mha_weights(inputs, 6)?,
                ffn: ffn_weights(inputs, 10)?,
                norm1: norm_weights(inputs, 14)?,
                norm2: norm_weights(inputs, 16)?,
                norm3: norm_weights(inputs, 18)?,
            };
            let config = LayerConfig {
                activation,
                norm_first,
                eps,
                self_attention: SdpaParams {
                    mask: Mask::new(tgt_mask),
                    ..SdpaParams::default()
                },
                cross_attention: SdpaParams {
                    mask: Mask::new(memory_mask),
                    ..SdpaParams::default()
                },
            };
            let shape = DecoderShape::new(tgt_len, mem_len, embed, heads, hidden);
            let (t, m) = (required(inputs, 0)?, required(inputs, 1)?);
            let (tgt, rest) = b
                .input
                .split_at_mut_checked(t.len())
                .ok_or(Error::InvalidParameter)?;
            let memory = first(rest, m.len())?;
            let input = quantize_max_abs(t, tgt)?.scale();
            let memory_scale = quantize_max_abs(m, memory)?.scale();
            let layer =
                Int8LayerQuant::decoder(&weights, shape, &config, &mut b.weights, &mut b.scales)?;
            let scales = layer.calibrate(
                tgt,
                input,
                Some((memory, memory_scale)),
                LAYER_ROUNDS,
                out,
                &mut b.scratch,
                &mut b.acc,
                &mut b.ints,
                mults,
            )?;
            i8_result(out, layer.output_scale(&scales, input), c.expected)
        }
        Op::Gat {
            nodes,
            in_features,
            out_features,
            heads,
            edges,
            concat,
            negative_slope,
            add_self_loops,
        } if generated::HAS_I8_GAT => {
            let weights = GatWeights {
                lin_weight: required(inputs, 1)?,
                att_src: required(inputs, 2)?,
                att_dst: required(inputs, 3)?,
                bias: optional(inputs, 4),
            };
            let params = GatParams {
                concat,
                negative_slope,
                add_self_loops,
            };
            let shape = GatShape::new(nodes, in_features, out_features, heads);
            let x_f32 = required(inputs, 0)?;
            let x = first(&mut b.input, x_f32.len())?;
            let x_scale = quantize_max_abs(x_f32, x)?.scale();
            let layer = Int8GatQuant::new(&weights, shape, &params, &mut b.weights, &mut b.scales)?;
            let scales = layer.calibrate(
                x,
                x_scale,
                edges,
                GAT_ROUNDS,
                out,
                &mut b.scratch,
                &mut b.acc,
                &mut b.ints,
                mults,
            )?;
            i8_result(out, scales.out, c.expected)
        }
        Op::Vit {
            channels,
            height,
            width,
            patch,
            embed,
        } if generated::HAS_I8_VIT_EMBED => {
            let weights = PatchEmbedWeights {
                patch_weight: required(inputs, 1)?,
                patch_bias: optional(inputs, 2),
                cls_token: optional(inputs, 3),
                pos_embed: optional(inputs, 4),
            };
            let shape = PatchShape::new(channels, height, width, patch, embed);
            let x = required(inputs, 0)?;
            let image = first(&mut b.input, x.len())?;
            let image_scale = quantize_max_abs(x, image)?.scale();
            let (scratch, cls) = b
                .scratch
                .split_at_mut_checked(int8_patch_embed_scratch_len(shape))
                .ok_or(Error::InvalidParameter)?;
            let scale = calibrate_patch_embed(
                image,
                image_scale,
                &weights,
                shape,
                first(&mut b.weights, weights.patch_weight.len())?,
                first(&mut b.scales, embed)?,
                VIT_ROUNDS,
                out,
                scratch,
                &mut b.ints,
                first(mults, embed)?,
                cls,
            )?;
            i8_result(out, scale, c.expected)
        }
        _ => Err(Error::InvalidParameter),
    }
}

/// Bytes between the end of the statics and the top of RAM (cortex-m-rt's linker symbols).
fn stack_size() -> usize {
    extern "C" {
        static _stack_start: u32;
        static _stack_end: u32;
    }
    let top = core::ptr::addr_of!(_stack_start) as usize;
    top.saturating_sub(core::ptr::addr_of!(_stack_end) as usize)
}

fn to_f16(src: &[f32], dst: &mut [f16]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = f16::from_f32(s);
    }
}

fn report(name: &str, ty: &str, tol: f64, result: Result<f64, Error>) {
    match result {
        Ok(err) if err.is_finite() => {
            println!(
                "case {=str} type {=str} rel_l2 {=f64} tol {=f64}",
                name, ty, err, tol
            )
        }
        Ok(_) => println!(
            "case {=str} type {=str} rel_l2 nan tol {=f64}",
            name, ty, tol
        ),
        Err(e) => println!("case {=str} type {=str} error {}", name, ty, e),
    }
}

/// `|y - y_ref|_2 / max(|y_ref|_2, 1e-12)` in f64; NaN when any output is not finite.
fn rel_l2<E: Element>(out: &[E], expected: &[f32]) -> f64 {
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (&y, &r) in out.iter().zip(expected) {
        let y = y.to_f32();
        if !y.is_finite() {
            return f64::NAN;
        }
        let e = y as f64 - r as f64;
        diff += e * e;
        norm += r as f64 * r as f64;
    }
    let norm = libm::sqrt(norm).max(1e-12);
    libm::sqrt(diff) / norm
}

/// The largest rel-L2 over the expected tensors, laid out one after the other in `out`.
fn worst_rel_l2<E: Element>(out: &[E], expected: &[(&str, &[f32])]) -> f64 {
    let mut worst = 0.0f64;
    let mut at = 0;
    for (_, e) in expected {
        let err = rel_l2(&out[at..at + e.len()], e);
        if err.is_nan() {
            return err;
        }
        worst = worst.max(err);
        at += e.len();
    }
    worst
}

/// The library call for one element type: `sdpa` for f32, `sdpa_typed` for the others.
trait Kernel: Element {
    #[allow(clippy::too_many_arguments)]
    fn attend(
        q: &[Self],
        k: &[Self],
        v: &[Self],
        out: &mut [Self],
        shape: AttentionShape,
        params: &SdpaParams<'_>,
        scratch: &mut [f32],
    ) -> Result<(), Error>;

    /// Runs a non-SDPA op: the f32 entry points for f32, the `_typed` ones otherwise.
    fn run(op: &Op, inputs: &[&[Self]], out: &mut [Self], scratch: &mut [f32])
        -> Result<(), Error>;
}

/// `run` for one element type, given the names of that type's entry points.
macro_rules! run_ops {
    ($linear:ident, $additive:ident, $luong:ident, $mha:ident) => {
        fn run(
            op: &Op,
            inputs: &[&[Self]],
            out: &mut [Self],
            scratch: &mut [f32],
        ) -> Result<(), Error> {
            let input = |i: usize| inputs.get(i).copied().ok_or(Error::InvalidParameter);
            match *op {
                Op::Linear {
                    heads,
                    kv_heads,
                    lq,
                    lk,
                    d,
                    dv,
                    causal,
                    eps,
                } => {
                    let shape = AttentionShape::multi_head(heads, kv_heads, lq, lk, d, dv);
                    let params = LinearAttentionParams { causal, eps };
                    $linear(
                        input(0)?,
                        input(1)?,
                        input(2)?,
                        out,
                        shape,
                        &params,
                        scratch,
                    )
                }
                Op::Additive {
                    l,
                    dq,
                    dk,
                    dv,
                    a,
                    mask,
                    offset,
                } => {
                    let params = AdditiveParams {
                        w_query: input(3)?,
                        w_key: input(4)?,
                        v: input(5)?,
                        mask: Mask::new(mask).with_signed_offset(offset),
                    };
                    let shape = AdditiveShape { l, dq, dk, dv, a };
                    let (context, weights) = out.split_at_mut(dv.min(out.len()));
                    $additive(
                        input(0)?,
                        input(1)?,
                        input(2)?,
                        shape,
                        &params,
                        context,
                        weights,
                        scratch,
                    )
                }
                Op::Luong {
                    l,
                    d,
                    dv,
                    score,
                    mask,
                    offset,
                } => {
                    let score = match score {
                        0 => LuongScore::Dot,
                        1 => LuongScore::General { w: input(3)? },
                        _ => LuongScore::Concat {
                            w: input(3)?,
                            v: input(4)?,
                        },
                    };
                    let params = LuongParams {
                        score,
                        mask: Mask::new(mask).with_signed_offset(offset),
                    };
                    let (context, weights) = out.split_at_mut(dv.min(out.len()));
                    $luong(
                        input(0)?,
                        input(1)?,
                        input(2)?,
                        LuongShape { l, d, dv },
                        &params,
                        context,
                        weights,
                        scratch,
                    )
                }
                Op::Mha {
                    lq,
                    lk,
                    embed,
                    heads,
                    mask,
                    offset,
                    in_bias,
                    out_bias,
                } => {
                    let mut next = 4;
                    let mut take = |present: bool| -> Result<Option<&[Self]>, Error> {
                        if !present {
                            return Ok(None);
                        }
                        next += 1;
                        input(next - 1).map(Some)
                    };
                    let in_proj_bias = take(in_bias)?;
                    let out_proj_weight = take(true)?.ok_or(Error::InvalidParameter)?;
                    let out_proj_bias = take(out_bias)?;
                    let weights = MhaWeights {
                        in_proj_weight: input(3)?,
                        in_proj_bias,
                        out_proj_weight,
                        out_proj_bias,
                    };
                    let params = SdpaParams {
                        mask: Mask::new(mask).with_signed_offset(offset),
                        ..Default::default()
                    };
                    let shape = MhaShape::new(lq, lk, embed, heads);
                    $mha(
                        input(0)?,
                        input(1)?,
                        input(2)?,
                        &weights,
                        out,
                        shape,
                        &params,
                        scratch,
                    )
                }
                _ => run_generic(op, inputs, out, scratch),
            }
        }
    };
}

impl Kernel for f32 {
    fn attend(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        out: &mut [f32],
        shape: AttentionShape,
        params: &SdpaParams<'_>,
        _scratch: &mut [f32],
    ) -> Result<(), Error> {
        sdpa(q, k, v, out, shape, params)
    }

    run_ops!(linear_attention, additive_attention, luong_attention, mha);
}

impl Kernel for f16 {
    fn attend(
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

    run_ops!(
        linear_attention_typed,
        additive_attention_typed,
        luong_attention_typed,
        mha_typed
    );
}

fn run_op<E: Kernel>(
    op: &Op,
    inputs: &[&[E]],
    out: &mut [E],
    scratch: &mut [f32],
) -> Result<(), Error> {
    E::run(op, inputs, out, scratch)
}

fn run_sdpa<E: Kernel>(
    c: &SdpaCase,
    q: &[E],
    k: &[E],
    v: &[E],
    out: &mut [E],
    scratch: &mut [f32],
) -> Result<(), Error> {
    let shape = AttentionShape::multi_head(c.heads, c.kv_heads, c.lq, c.lk, c.d, c.dv);
    let params = SdpaParams {
        scale: c.scale,
        score: c.score,
        mask: Mask::new(c.mask).with_signed_offset(c.q_pos_offset),
        bias: c.bias,
    };
    E::attend(q, k, v, out, shape, &params, scratch)
}

/// Input `i`, required.
fn required<'a, E>(inputs: &[&'a [E]], i: usize) -> Result<&'a [E], Error> {
    inputs.get(i).copied().ok_or(Error::InvalidParameter)
}

/// Input `i` if present: the generator passes an absent optional input as an empty slice.
fn optional<'a, E>(inputs: &[&'a [E]], i: usize) -> Option<&'a [E]> {
    inputs.get(i).copied().filter(|x| !x.is_empty())
}

/// `nn.MultiheadAttention` weights at inputs `at..at + 4` (in_proj weight and bias, out_proj
/// weight and bias).
fn mha_weights<'a, E>(inputs: &[&'a [E]], at: usize) -> Result<MhaWeights<'a, E>, Error> {
    Ok(MhaWeights {
        in_proj_weight: required(inputs, at)?,
        in_proj_bias: optional(inputs, at + 1),
        out_proj_weight: required(inputs, at + 2)?,
        out_proj_bias: optional(inputs, at + 3),
    })
}

/// FFN weights at inputs `at..at + 4` (linear1 weight and bias, linear2 weight and bias).
fn ffn_weights<'a, E>(inputs: &[&'a [E]], at: usize) -> Result<FfnWeights<'a, E>, Error> {
    Ok(FfnWeights {
        w1: required(inputs, at)?,
        b1: optional(inputs, at + 1),
        w2: required(inputs, at + 2)?,
        b2: optional(inputs, at + 3),
    })
}

/// LayerNorm weights at inputs `at` and `at + 1`.
fn norm_weights<'a, E>(inputs: &[&'a [E]], at: usize) -> Result<LayerNormWeights<'a, E>, Error> {
    Ok(LayerNormWeights {
        weight: required(inputs, at)?,
        bias: optional(inputs, at + 1),
    })
}

/// The ops whose library entry point is generic over the element type (positions, scan,
/// graph, layers): the same call for f32 and f16. `out` holds the output followed by the
/// op's work storage (`OpCase::work`).
fn run_generic<E: Element>(
    op: &Op,
    inputs: &[&[E]],
    out: &mut [E],
    scratch: &mut [f32],
) -> Result<(), Error> {
    match *op {
        Op::Rope {
            heads,
            len,
            dim,
            layout,
            base,
            pos_offset,
        } if generated::HAS_ROPE => {
            let x = required(inputs, 0)?;
            let y = out.get_mut(..x.len()).ok_or(Error::InvalidParameter)?;
            y.copy_from_slice(x);
            let params = RopeParams {
                layout,
                base,
                pos_offset,
            };
            rope(y, heads, len, dim, &params)
        }
        Op::Sinusoidal {
            len,
            dim,
            pos_offset,
            base,
        } if generated::HAS_SINUSOIDAL_PE => sinusoidal_table(out, len, dim, pos_offset, base),
        Op::Scan {
            channels,
            state,
            delta_softplus,
        } if generated::HAS_SELECTIVE_SCAN => {
            let shape = ScanShape::new(channels, state);
            let weights = ScanWeights {
                a: required(inputs, 2)?,
                d: optional(inputs, 5),
                delta_bias: optional(inputs, 7),
                delta_softplus,
            };
            let seq = ScanSequence {
                u: required(inputs, 0)?,
                delta: required(inputs, 1)?,
                b: required(inputs, 3)?,
                c: required(inputs, 4)?,
                z: optional(inputs, 6),
            };
            // The scan starts from a zero state.
            let n = channels.checked_mul(state).ok_or(Error::InvalidParameter)?;
            let state = scratch.get_mut(..n).ok_or(Error::InvalidParameter)?;
            state.fill(0.0);
            selective_scan(state, &weights, &seq, out, shape)
        }
        Op::Gat {
            nodes,
            in_features,
            out_features,
            heads,
            edges,
            concat,
            negative_slope,
            add_self_loops,
        } if generated::HAS_GAT => {
            let weights = GatWeights {
                lin_weight: required(inputs, 1)?,
                att_src: required(inputs, 2)?,
                att_dst: required(inputs, 3)?,
                bias: optional(inputs, 4),
            };
            let params = GatParams {
                concat,
                negative_slope,
                add_self_loops,
            };
            let shape = GatShape::new(nodes, in_features, out_features, heads);
            gat(
                required(inputs, 0)?,
                edges,
                &weights,
                out,
                shape,
                &params,
                scratch,
            )
        }
        Op::Vit {
            channels,
            height,
            width,
            patch,
            embed,
        } if generated::HAS_VIT_EMBED => {
            let weights = PatchEmbedWeights {
                patch_weight: required(inputs, 1)?,
                patch_bias: optional(inputs, 2),
                cls_token: optional(inputs, 3),
                pos_embed: optional(inputs, 4),
            };
            let shape = PatchShape::new(channels, height, width, patch, embed);
            patch_embed(required(inputs, 0)?, &weights, out, shape, scratch)
        }
        Op::Encoder {
            len,
            embed,
            heads,
            hidden,
            activation,
            norm_first,
            eps,
            mask,
        } if generated::HAS_ENCODER_LAYER => {
            let weights = EncoderWeights {
                self_attn: mha_weights(inputs, 1)?,
                ffn: ffn_weights(inputs, 5)?,
                norm1: norm_weights(inputs, 9)?,
                norm2: norm_weights(inputs, 11)?,
            };
            let config = LayerConfig {
                activation,
                norm_first,
                eps,
                self_attention: SdpaParams {
                    mask: Mask::new(mask),
                    ..SdpaParams::default()
                },
                ..LayerConfig::default()
            };
            let n = len.checked_mul(embed).ok_or(Error::InvalidParameter)?;
            let (y, buffer) = out.split_at_mut(n.min(out.len()));
            let shape = EncoderShape::new(len, embed, heads, hidden);
            encoder_layer(
                required(inputs, 0)?,
                &weights,
                y,
                shape,
                &config,
                buffer,
                scratch,
            )
        }
        Op::Decoder {
            tgt_len,
            mem_len,
            embed,
            heads,
            hidden,
            activation,
            norm_first,
            eps,
            tgt_mask,
            memory_mask,
        } if generated::HAS_DECODER_LAYER => {
            let weights = DecoderWeights {
                self_attn: mha_weights(inputs, 2)?,
                cross_attn: mha_weights(inputs, 6)?,
                ffn: ffn_weights(inputs, 10)?,
                norm1: norm_weights(inputs, 14)?,
                norm2: norm_weights(inputs, 16)?,
                norm3: norm_weights(inputs, 18)?,
            };
            let config = LayerConfig {
                activation,
                norm_first,
                eps,
                self_attention: SdpaParams {
                    mask: Mask::new(tgt_mask),
                    ..SdpaParams::default()
                },
                cross_attention: SdpaParams {
                    mask: Mask::new(memory_mask),
                    ..SdpaParams::default()
                },
            };
            let n = tgt_len.checked_mul(embed).ok_or(Error::InvalidParameter)?;
            let (y, buffer) = out.split_at_mut(n.min(out.len()));
            let shape = DecoderShape::new(tgt_len, mem_len, embed, heads, hidden);
            decoder_layer(
                required(inputs, 0)?,
                required(inputs, 1)?,
                &weights,
                y,
                shape,
                &config,
                buffer,
                scratch,
            )
        }
        // The attention ops have their own (per-type) entry points in `run_ops!`; an op
        // without embedded cases has no code here (the `HAS_*` guards are constants, so the
        // calls are left out of the firmware: the microbit's flash is small).
        _ => Err(Error::InvalidParameter),
    }
}
