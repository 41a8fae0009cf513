//! The int8 layer ops of the conformance cases (`encoder_layer`, `decoder_layer`, `gat`,
//! `vit_embed`) run through the library's offline step and integer kernels, exactly as the
//! QEMU conformance firmware runs them (targets/firmware/src/conformance.rs):
//!
//! - every input tensor quantized per tensor, symmetric, max-abs;
//! - the f32 weights quantized by the library (`Int8LayerQuant`, `Int8GatQuant`,
//!   `calibrate_patch_embed`: per output channel);
//! - the stage scales calibrated by the library on the case's input (worst case from the
//!   weights, then [`LAYER_ROUNDS`] / [`GAT_ROUNDS`] / [`VIT_ROUNDS`] runs refining them
//!   from the stage peaks), never from the expected output.
//!
//! Shared by the i8 adapters (`ops/int8/{encoder_layer,decoder_layer,gat,vit_embed}.rs`)
//! and `examples/int8_layer_hashes.rs` (the host hashes the firmware's int8 bytes must
//! equal), so it needs only `crate::case`, `crate::params` and `microattn`.

// Each includer uses a part: the adapters the per-op functions, the example `run`.
#![allow(dead_code)]

use crate::case::Case;
use crate::params::{opt_bool, opt_f64, opt_str, req_usize, MaskList};
use microattn::attention::SdpaParams;
use microattn::graph::{GatParams, GatShape, GatWeights};
use microattn::graph_int8::{
    int8_gat_acc_len, int8_gat_scratch_len, int8_gat_storage_len, Int8GatQuant,
};
use microattn::layers::int8::{
    calibrate_patch_embed, int8_decoder_scratch_len, int8_decoder_storage_len,
    int8_encoder_scratch_len, int8_encoder_storage_len, int8_layer_acc_len,
    int8_patch_embed_scratch_len, int8_patch_offsets_len, Int8LayerQuant, Int8LayerStorage,
};
use microattn::layers::{
    Activation, DecoderShape, DecoderWeights, EncoderShape, EncoderWeights, FfnWeights,
    LayerConfig, LayerNormWeights, PatchEmbedWeights, PatchShape,
};
use microattn::mask::Mask;
use microattn::mha::MhaWeights;
use microattn::quant::{quantize, FixedMultiplier, QParams};

/// Calibration runs of the encoder and decoder layers before the final one.
pub const LAYER_ROUNDS: usize = 4;
/// Calibration runs of the GAT layer.
pub const GAT_ROUNDS: usize = 3;
/// Calibration runs of the patch embedding.
pub const VIT_ROUNDS: usize = 2;

/// An op's int8 output, its scale and the name of the expected tensor it approximates.
pub struct Int8Output {
    /// Expected tensor name (`out`, `tokens`).
    pub name: &'static str,
    /// The int8 values.
    pub data: Vec<i8>,
    /// Their scale.
    pub scale: f32,
}

impl Int8Output {
    /// The output dequantized.
    pub fn dequantized(&self) -> Vec<f32> {
        self.data.iter().map(|&v| v as f32 * self.scale).collect()
    }
}

/// Runs a layer op's case in int8; `None` for another op.
pub fn run(case: &Case) -> Option<Result<Int8Output, String>> {
    Some(match case.op.as_str() {
        "encoder_layer" => encoder(case),
        "decoder_layer" => decoder(case),
        "gat" => gat(case),
        "vit_embed" => vit(case),
        _ => return None,
    })
}

/// Per-tensor max-abs int8 quantization (as the firmware: `|x|` folded with `max`).
pub fn quantize_input(x: &[f32]) -> Result<(Vec<i8>, f32), String> {
    let m = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let p = QParams::from_max_abs(m).map_err(|e| format!("quantizing: {e}"))?;
    let mut q = vec![0i8; x.len()];
    quantize(x, p, &mut q).map_err(|e| format!("quantizing: {e}"))?;
    Ok((q, p.scale()))
}

fn lib(what: &str) -> impl Fn(microattn::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

fn rows_cols(case: &Case, name: &str) -> Result<(usize, usize), String> {
    match case.input(name)?.shape[..] {
        [rows, cols] => Ok((rows, cols)),
        ref other => Err(format!(
            "input `{name}` has shape {other:?}, [L, E] expected"
        )),
    }
}

fn opt<'c>(case: &'c Case, name: &str) -> Result<Option<&'c [f32]>, String> {
    match case.optional_input(name) {
        Some(t) => t.f32s().map(Some).map_err(|e| format!("{name}: {e}")),
        None => Ok(None),
    }
}

fn mha<'c>(case: &'c Case, p: &str) -> Result<MhaWeights<'c, f32>, String> {
    Ok(MhaWeights {
        in_proj_weight: case.input_f32(&format!("{p}.in_proj_weight"))?,
        in_proj_bias: opt(case, &format!("{p}.in_proj_bias"))?,
        out_proj_weight: case.input_f32(&format!("{p}.out_proj.weight"))?,
        out_proj_bias: opt(case, &format!("{p}.out_proj.bias"))?,
    })
}

fn ffn(case: &Case) -> Result<FfnWeights<'_, f32>, String> {
    Ok(FfnWeights {
        w1: case.input_f32("linear1.weight")?,
        b1: opt(case, "linear1.bias")?,
        w2: case.input_f32("linear2.weight")?,
        b2: opt(case, "linear2.bias")?,
    })
}

fn norm<'c>(case: &'c Case, n: &str) -> Result<LayerNormWeights<'c, f32>, String> {
    Ok(LayerNormWeights {
        weight: case.input_f32(&format!("{n}.weight"))?,
        bias: opt(case, &format!("{n}.bias"))?,
    })
}

/// `activation`, `norm_first`, `eps` (as the f32 adapter's `base_config`).
fn config(case: &Case) -> Result<LayerConfig<'static>, String> {
    let p = &case.params;
    let activation = match opt_str(p, "activation")? {
        None | Some("relu") => Activation::Relu,
        Some("gelu") => Activation::Gelu,
        Some("gelu_tanh") => Activation::GeluTanh,
        Some(other) => return Err(format!("param `activation`: unknown {other:?}")),
    };
    Ok(LayerConfig {
        activation,
        norm_first: opt_bool(p, "norm_first")?.unwrap_or(false),
        eps: opt_f64(p, "eps")?.unwrap_or(1e-5) as f32,
        ..LayerConfig::default()
    })
}

/// Storage of the quantized layer and of one set of prepared params.
struct Storage {
    q: Vec<i8>,
    scales: Vec<f32>,
    ints: Vec<i32>,
    mults: Vec<FixedMultiplier>,
}

impl Storage {
    fn new(s: Int8LayerStorage) -> Self {
        Storage {
            q: vec![0; s.weights],
            scales: vec![0.0; s.weight_scales],
            ints: vec![0; s.ints],
            mults: vec![FixedMultiplier::ONE; s.multipliers],
        }
    }
}

/// `encoder_layer` in int8.
pub fn encoder(case: &Case) -> Result<Int8Output, String> {
    let (len, embed) = rows_cols(case, "src")?;
    let hidden = rows_cols(case, "linear1.weight")?.0;
    let shape = EncoderShape::new(len, embed, req_usize(&case.params, "num_heads")?, hidden);
    let masks = MaskList::parse(&case.params, "mask")?;
    let terms = masks.terms();
    let config = LayerConfig {
        self_attention: SdpaParams {
            mask: Mask::new(&terms),
            ..SdpaParams::default()
        },
        ..config(case)?
    };
    let weights = EncoderWeights {
        self_attn: mha(case, "self_attn")?,
        ffn: ffn(case)?,
        norm1: norm(case, "norm1")?,
        norm2: norm(case, "norm2")?,
    };
    let (src, src_scale) = quantize_input(case.input_f32("src")?)?;
    let mut st = Storage::new(int8_encoder_storage_len(shape));
    let layer = Int8LayerQuant::encoder(&weights, shape, &config, &mut st.q, &mut st.scales)
        .map_err(lib("Int8LayerQuant::encoder"))?;
    let mut out = vec![0i8; src.len()];
    let mut scratch = vec![0i8; int8_encoder_scratch_len(shape)];
    let mut acc = vec![0i64; int8_layer_acc_len(shape.embed, shape.heads)];
    let scales = layer
        .calibrate(
            &src,
            src_scale,
            None,
            LAYER_ROUNDS,
            &mut out,
            &mut scratch,
            &mut acc,
            &mut st.ints,
            &mut st.mults,
        )
        .map_err(lib("Int8LayerQuant::calibrate"))?;
    Ok(Int8Output {
        name: "out",
        data: out,
        scale: layer.output_scale(&scales, src_scale),
    })
}

/// `decoder_layer` in int8.
pub fn decoder(case: &Case) -> Result<Int8Output, String> {
    let (lt, embed) = rows_cols(case, "tgt")?;
    let (ls, mem_embed) = rows_cols(case, "memory")?;
    if mem_embed != embed {
        return Err(format!(
            "memory width {mem_embed} differs from tgt width {embed}"
        ));
    }
    let hidden = rows_cols(case, "linear1.weight")?.0;
    let heads = req_usize(&case.params, "num_heads")?;
    let shape = DecoderShape::new(lt, ls, embed, heads, hidden);
    let tgt_masks = MaskList::parse(&case.params, "tgt_mask")?;
    let memory_masks = MaskList::parse(&case.params, "memory_mask")?;
    let (tgt_terms, memory_terms) = (tgt_masks.terms(), memory_masks.terms());
    let config = LayerConfig {
        self_attention: SdpaParams {
            mask: Mask::new(&tgt_terms),
            ..SdpaParams::default()
        },
        cross_attention: SdpaParams {
            mask: Mask::new(&memory_terms),
            ..SdpaParams::default()
        },
        ..config(case)?
    };
    let weights = DecoderWeights {
        self_attn: mha(case, "self_attn")?,
        cross_attn: mha(case, "multihead_attn")?,
        ffn: ffn(case)?,
        norm1: norm(case, "norm1")?,
        norm2: norm(case, "norm2")?,
        norm3: norm(case, "norm3")?,
    };
    let (tgt, tgt_scale) = quantize_input(case.input_f32("tgt")?)?;
    let (memory, memory_scale) = quantize_input(case.input_f32("memory")?)?;
    let mut st = Storage::new(int8_decoder_storage_len(shape));
    let layer = Int8LayerQuant::decoder(&weights, shape, &config, &mut st.q, &mut st.scales)
        .map_err(lib("Int8LayerQuant::decoder"))?;
    let mut out = vec![0i8; tgt.len()];
    let mut scratch = vec![0i8; int8_decoder_scratch_len(shape)];
    let mut acc = vec![0i64; int8_layer_acc_len(embed, heads)];
    let scales = layer
        .calibrate(
            &tgt,
            tgt_scale,
            Some((&memory, memory_scale)),
            LAYER_ROUNDS,
            &mut out,
            &mut scratch,
            &mut acc,
            &mut st.ints,
            &mut st.mults,
        )
        .map_err(lib("Int8LayerQuant::calibrate"))?;
    Ok(Int8Output {
        name: "out",
        data: out,
        scale: layer.output_scale(&scales, tgt_scale),
    })
}

/// `gat` in int8 (COO `edge_index`).
pub fn gat(case: &Case) -> Result<Int8Output, String> {
    let (nodes, in_features) = rows_cols(case, "x")?;
    let edges = case.input("edge_index")?;
    if edges.shape.len() != 2 || edges.shape[0] != 2 {
        return Err(format!(
            "edge_index has shape {:?}: [2,E] expected",
            edges.shape
        ));
    }
    let edge_index = edges.i32s().map_err(|e| format!("edge_index: {e}"))?;
    let p = &case.params;
    let heads = req_usize(p, "heads")?;
    let params = GatParams {
        concat: opt_bool(p, "concat")?.unwrap_or(true),
        negative_slope: opt_f64(p, "negative_slope")?.unwrap_or(0.2) as f32,
        add_self_loops: opt_bool(p, "add_self_loops")?.unwrap_or(true),
    };
    let lin_weight = case.input_f32("lin_weight")?;
    let hf = lin_weight
        .len()
        .checked_div(in_features)
        .ok_or("x has no features")?;
    let out_features = hf.checked_div(heads).ok_or("heads is 0")?;
    let shape = GatShape::new(nodes, in_features, out_features, heads);
    let weights = GatWeights {
        lin_weight,
        att_src: case.input_f32("att_src")?,
        att_dst: case.input_f32("att_dst")?,
        bias: opt(case, "bias")?,
    };
    let (x, x_scale) = quantize_input(case.input_f32("x")?)?;
    let mut st = Storage::new(int8_gat_storage_len(shape));
    let layer = Int8GatQuant::new(&weights, shape, &params, &mut st.q, &mut st.scales)
        .map_err(lib("Int8GatQuant::new"))?;
    let mut out = vec![0i8; nodes * shape.output_features(params.concat)];
    let mut scratch = vec![0i8; int8_gat_scratch_len(shape)];
    let mut acc = vec![0i64; int8_gat_acc_len(shape)];
    let scales = layer
        .calibrate(
            &x,
            x_scale,
            edge_index,
            GAT_ROUNDS,
            &mut out,
            &mut scratch,
            &mut acc,
            &mut st.ints,
            &mut st.mults,
        )
        .map_err(lib("Int8GatQuant::calibrate"))?;
    Ok(Int8Output {
        name: "out",
        data: out,
        scale: scales.out,
    })
}

/// `vit_embed` in int8.
pub fn vit(case: &Case) -> Result<Int8Output, String> {
    let image_t = case.input("image")?;
    let [c, h, w] = image_t.shape[..] else {
        return Err(format!(
            "image has shape {:?}: [C,H,W] expected",
            image_t.shape
        ));
    };
    let embed = *case
        .input("patch_weight")?
        .shape
        .first()
        .ok_or("patch_weight has no dimensions")?;
    let shape = PatchShape::new(c, h, w, req_usize(&case.params, "patch")?, embed);
    let weights = PatchEmbedWeights {
        patch_weight: case.input_f32("patch_weight")?,
        patch_bias: opt(case, "patch_bias")?,
        cls_token: opt(case, "cls_token")?,
        pos_embed: opt(case, "pos_embed")?,
    };
    let (image, image_scale) = quantize_input(case.input_f32("image")?)?;
    let rows = shape.patches() + usize::from(weights.cls_token.is_some());
    let mut tokens = vec![0i8; rows * embed];
    let mut weight_q = vec![0i8; weights.patch_weight.len()];
    let mut weight_scales = vec![0f32; embed];
    let mut scratch = vec![0i8; int8_patch_embed_scratch_len(shape)];
    let mut offsets = vec![0i32; int8_patch_offsets_len(shape)];
    let mut mults = vec![FixedMultiplier::ONE; embed];
    let mut cls = vec![0i8; embed];
    let scale = calibrate_patch_embed(
        &image,
        image_scale,
        &weights,
        shape,
        &mut weight_q,
        &mut weight_scales,
        VIT_ROUNDS,
        &mut tokens,
        &mut scratch,
        &mut offsets,
        &mut mults,
        &mut cls,
    )
    .map_err(lib("calibrate_patch_embed"))?;
    Ok(Int8Output {
        name: "tokens",
        data: tokens,
        scale,
    })
}
