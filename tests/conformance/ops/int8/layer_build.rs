//! Test-side wrapper of the library's offline step for the int8 transformer layers
//! (`microattn::layers::int8::Int8LayerQuant`): keeps an f32 state dict, quantizes it per
//! output channel and prepares `Int8EncoderParams` / `Int8DecoderParams` for a set of stage
//! scales, or calibrates those scales by running the int8 layer itself (worst-case scales
//! first, then each run's stage peaks set the next run's scales). Nothing here looks at an
//! expected output.
//!
//! Used by `tests/int8_layers.rs` (included with `#[path]`), so it uses only `microattn`
//! and `std`. The conformance adapters go through `layer_run.rs`.

use microattn::attention::SdpaParams;
use microattn::layers::int8::{
    int8_decoder_scratch_len, int8_decoder_storage_len, int8_encoder_scratch_len,
    int8_encoder_storage_len, int8_layer_acc_len, Int8DecoderParams, Int8EncoderParams,
    Int8LayerQuant, Int8LayerScales, Int8LayerStats,
};
use microattn::layers::{
    Activation, DecoderShape, DecoderWeights, EncoderShape, EncoderWeights, FfnWeights,
    LayerConfig, LayerNormWeights,
};
use microattn::mask::Mask;
use microattn::mha::MhaWeights;
use microattn::quant::{quantize, FixedMultiplier, QParams};
use std::collections::HashMap;

/// Output scales of every stage of a layer (the library's type).
pub type LayerScales = Int8LayerScales;

/// Symmetric max-abs int8 quantization of a tensor (per tensor).
pub fn quantize_tensor(x: &[f32]) -> Result<(Vec<i8>, f32), String> {
    let m = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let p = QParams::from_max_abs(m).map_err(|e| format!("quantizing: {e}"))?;
    let mut q = vec![0i8; x.len()];
    quantize(x, p, &mut q).map_err(|e| format!("quantizing: {e}"))?;
    Ok((q, p.scale()))
}

/// Per-row (output channel) max-abs int8 quantization of a `[rows, cols]` weight.
pub fn quantize_per_row(w: &[f32], rows: usize) -> Result<(Vec<i8>, Vec<f32>), String> {
    if rows == 0 || w.len() % rows != 0 {
        return Err(format!("cannot split {} weights into {rows} rows", w.len()));
    }
    let mut scales = vec![0f32; rows];
    let mut q = vec![0i8; w.len()];
    microattn::layers::int8::quantize_per_row(w, &mut scales, &mut q)
        .map_err(|e| format!("quantizing: {e}"))?;
    Ok((q, scales))
}

/// An encoder or decoder layer's f32 state dict and configuration.
pub struct QLayer {
    tensors: HashMap<String, Vec<f32>>,
    /// `multihead_attn` and `norm3` present.
    pub decoder: bool,
    /// FFN activation.
    pub activation: Activation,
    /// Pre-norm.
    pub norm_first: bool,
    /// LayerNorm epsilon.
    pub eps: f32,
    /// Heads.
    pub heads: usize,
    /// Width `E`.
    pub embed: usize,
    hidden: usize,
}

const MHA_PARTS: [&str; 4] = [
    "in_proj_weight",
    "in_proj_bias",
    "out_proj.weight",
    "out_proj.bias",
];

impl QLayer {
    /// From a state dict accessor (`get(name)`: the f32 tensor, if present), as PyTorch
    /// names the tensors; `decoder` adds `multihead_attn.*` and `norm3.*`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        get: &dyn Fn(&str) -> Option<Vec<f32>>,
        embed: usize,
        heads: usize,
        decoder: bool,
        activation: Activation,
        norm_first: bool,
        eps: f32,
    ) -> Result<Self, String> {
        let mut names: Vec<String> = Vec::new();
        let prefixes: &[&str] = if decoder {
            &["self_attn", "multihead_attn"]
        } else {
            &["self_attn"]
        };
        for p in prefixes {
            names.extend(MHA_PARTS.iter().map(|n| format!("{p}.{n}")));
        }
        for l in ["linear1", "linear2"] {
            names.push(format!("{l}.weight"));
            names.push(format!("{l}.bias"));
        }
        for i in 1..=if decoder { 3 } else { 2 } {
            names.push(format!("norm{i}.weight"));
            names.push(format!("norm{i}.bias"));
        }
        let mut tensors = HashMap::new();
        for n in names {
            match get(&n) {
                Some(t) => {
                    tensors.insert(n, t);
                }
                None if n.ends_with("weight") => return Err(format!("missing input `{n}`")),
                None => {}
            }
        }
        let hidden = tensors["linear1.weight"].len() / embed.max(1);
        Ok(QLayer {
            tensors,
            decoder,
            activation,
            norm_first,
            eps,
            heads,
            embed,
            hidden,
        })
    }

    /// FFN hidden width.
    pub fn hidden(&self) -> usize {
        self.hidden
    }

    fn get(&self, n: &str) -> &[f32] {
        self.tensors.get(n).map_or(&[], Vec::as_slice)
    }

    fn opt(&self, n: &str) -> Option<&[f32]> {
        self.tensors.get(n).map(Vec::as_slice)
    }

    fn mha(&self, p: &str) -> MhaWeights<'_, f32> {
        MhaWeights {
            in_proj_weight: self.get(&format!("{p}.in_proj_weight")),
            in_proj_bias: self.opt(&format!("{p}.in_proj_bias")),
            out_proj_weight: self.get(&format!("{p}.out_proj.weight")),
            out_proj_bias: self.opt(&format!("{p}.out_proj.bias")),
        }
    }

    fn norm(&self, n: &str) -> LayerNormWeights<'_, f32> {
        LayerNormWeights {
            weight: self.get(&format!("{n}.weight")),
            bias: self.opt(&format!("{n}.bias")),
        }
    }

    /// The library's quantized layer (with these masks, `len` / `mem_len` rows) handed to
    /// `f` with storage for one set of prepared params.
    fn with_quant<R>(
        &self,
        len: usize,
        mem_len: usize,
        self_mask: Mask<'_>,
        cross_mask: Mask<'_>,
        f: impl FnOnce(&Int8LayerQuant<'_>, &mut [i32], &mut [FixedMultiplier]) -> Result<R, String>,
    ) -> Result<R, String> {
        let config = LayerConfig {
            activation: self.activation,
            norm_first: self.norm_first,
            eps: self.eps,
            self_attention: SdpaParams {
                mask: self_mask,
                ..SdpaParams::default()
            },
            cross_attention: SdpaParams {
                mask: cross_mask,
                ..SdpaParams::default()
            },
        };
        let ffn = FfnWeights {
            w1: self.get("linear1.weight"),
            b1: self.opt("linear1.bias"),
            w2: self.get("linear2.weight"),
            b2: self.opt("linear2.bias"),
        };
        let err = |e: microattn::Error| format!("Int8LayerQuant: {e}");
        if self.decoder {
            let shape = DecoderShape::new(len, mem_len, self.embed, self.heads, self.hidden);
            let st = int8_decoder_storage_len(shape);
            let (mut q, mut s) = (vec![0i8; st.weights], vec![0f32; st.weight_scales]);
            let (mut ints, mut mults) =
                (vec![0; st.ints], vec![FixedMultiplier::ONE; st.multipliers]);
            let weights = DecoderWeights {
                self_attn: self.mha("self_attn"),
                cross_attn: self.mha("multihead_attn"),
                ffn,
                norm1: self.norm("norm1"),
                norm2: self.norm("norm2"),
                norm3: self.norm("norm3"),
            };
            let layer =
                Int8LayerQuant::decoder(&weights, shape, &config, &mut q, &mut s).map_err(err)?;
            f(&layer, &mut ints, &mut mults)
        } else {
            let shape = EncoderShape::new(len, self.embed, self.heads, self.hidden);
            let st = int8_encoder_storage_len(shape);
            let (mut q, mut s) = (vec![0i8; st.weights], vec![0f32; st.weight_scales]);
            let (mut ints, mut mults) =
                (vec![0; st.ints], vec![FixedMultiplier::ONE; st.multipliers]);
            let weights = EncoderWeights {
                self_attn: self.mha("self_attn"),
                ffn,
                norm1: self.norm("norm1"),
                norm2: self.norm("norm2"),
            };
            let layer =
                Int8LayerQuant::encoder(&weights, shape, &config, &mut q, &mut s).map_err(err)?;
            f(&layer, &mut ints, &mut mults)
        }
    }

    /// Scratch lengths (`i8`, `i64`) for `len` rows and a memory of `mem_len` rows.
    fn scratch(&self, len: usize, mem_len: usize) -> (Vec<i8>, Vec<i64>) {
        let n = if self.decoder {
            int8_decoder_scratch_len(DecoderShape::new(
                len,
                mem_len,
                self.embed,
                self.heads,
                self.hidden,
            ))
        } else {
            int8_encoder_scratch_len(EncoderShape::new(len, self.embed, self.heads, self.hidden))
        };
        (
            vec![0; n],
            vec![0; int8_layer_acc_len(self.embed, self.heads)],
        )
    }
}

/// The scale of the final output for these stage scales.
pub fn output_scale(layer: &QLayer, s: &LayerScales, input: f32) -> f32 {
    layer
        .with_quant(1, 1, Mask::NONE, Mask::NONE, |q, _, _| {
            Ok(q.output_scale(s, input))
        })
        .unwrap_or(f32::NAN)
}

/// Prepares the encoder params for scales `s` (input at scale `input`) and calls `f`.
pub fn with_encoder_params<R>(
    layer: &QLayer,
    s: &LayerScales,
    input: f32,
    mask: Mask<'_>,
    f: impl FnOnce(&Int8EncoderParams<'_>) -> R,
) -> Result<R, String> {
    layer.with_quant(1, 1, mask, Mask::NONE, |q, ints, mults| {
        let p = q
            .prepare_encoder(s, input, ints, mults)
            .map_err(|e| format!("prepare_encoder: {e}"))?;
        Ok(f(&p))
    })
}

/// Prepares the decoder params for scales `s` (target at `input`, memory at `memory`) and
/// calls `f`.
pub fn with_decoder_params<R>(
    layer: &QLayer,
    s: &LayerScales,
    input: f32,
    memory: f32,
    self_mask: Mask<'_>,
    cross_mask: Mask<'_>,
    f: impl FnOnce(&Int8DecoderParams<'_>) -> R,
) -> Result<R, String> {
    if !layer.decoder {
        return Err("not a decoder layer".into());
    }
    layer.with_quant(1, 1, self_mask, cross_mask, |q, ints, mults| {
        let p = q
            .prepare_decoder(s, input, memory, ints, mults)
            .map_err(|e| format!("prepare_decoder: {e}"))?;
        Ok(f(&p))
    })
}

/// Runs the layer once in int8 with scales `s`: `src` at scale `input`, `memory` (decoder) at
/// its scale. Writes the int8 output and returns the stage peaks.
#[allow(clippy::too_many_arguments)]
pub fn run_layer(
    layer: &QLayer,
    s: &LayerScales,
    src: &[i8],
    input: f32,
    memory: Option<(&[i8], f32)>,
    self_mask: Mask<'_>,
    cross_mask: Mask<'_>,
    out: &mut [i8],
) -> Result<Int8LayerStats, String> {
    let e = layer.embed.max(1);
    let (len, mem_len) = (src.len() / e, memory.map_or(0, |m| m.0.len() / e));
    let (mut scratch, mut acc) = layer.scratch(len, mem_len);
    layer.with_quant(len, mem_len, self_mask, cross_mask, |q, ints, mults| {
        q.run(
            s,
            src,
            input,
            memory,
            out,
            &mut scratch,
            &mut acc,
            ints,
            mults,
        )
        .map_err(|e| format!("int8 layer: {e}"))
    })
}

/// Scales no stage can saturate at (worst-case bounds from the weights and input ranges).
pub fn worst_case_scales(layer: &QLayer, input: f32, memory: f32) -> LayerScales {
    layer
        .with_quant(1, 1, Mask::NONE, Mask::NONE, |q, _, _| {
            Ok(q.worst_case_scales(input, memory))
        })
        .unwrap_or_default()
}

/// The next scales from a run's stage peaks.
pub fn refine_scales(s: &LayerScales, st: &Int8LayerStats) -> LayerScales {
    s.refined(st)
}

/// Calibrates the stage scales on this input (worst-case scales, then `rounds` runs that
/// refine them from the peaks), runs once more and returns the dequantized output.
#[allow(clippy::too_many_arguments)]
pub fn calibrated_run(
    layer: &QLayer,
    src: &[i8],
    input: f32,
    memory: Option<(&[i8], f32)>,
    self_mask: Mask<'_>,
    cross_mask: Mask<'_>,
    rounds: usize,
) -> Result<Vec<f32>, String> {
    let e = layer.embed.max(1);
    let (len, mem_len) = (src.len() / e, memory.map_or(0, |m| m.0.len() / e));
    let (mut scratch, mut acc) = layer.scratch(len, mem_len);
    let mut out = vec![0i8; src.len()];
    let scale = layer.with_quant(len, mem_len, self_mask, cross_mask, |q, ints, mults| {
        let s = q
            .calibrate(
                src,
                input,
                memory,
                rounds,
                &mut out,
                &mut scratch,
                &mut acc,
                ints,
                mults,
            )
            .map_err(|e| format!("calibrate: {e}"))?;
        Ok(q.output_scale(&s, input))
    })?;
    Ok(out.iter().map(|&v| v as f32 * scale).collect())
}
