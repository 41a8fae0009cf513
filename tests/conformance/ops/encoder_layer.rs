//! `encoder_layer`: `microattn::layers::encoder_layer` (`torch.nn.TransformerEncoderLayer`)
//! in f32, f16 and bf16 storage.
//!
//! Inputs `src` [L,E] and the state dict (`self_attn.*`, `linear1.*`, `linear2.*`,
//! `norm1.*`, `norm2.*`; biases optional); params `num_heads`, `activation` (`relu`, `gelu`,
//! `gelu_tanh`), `norm_first`, `eps` (default 1e-5), `mask`. Output `out` [L,E].
//! The helpers here are shared with the `decoder_layer` adapter.

use super::{kernel_error, Outputs};
use crate::case::{Case, ElemType};
use crate::params::{opt_bool, opt_f64, opt_str, req_usize, MaskList};
use microattn::attention::SdpaParams;
use microattn::layers::{
    encoder_buffer_len, encoder_layer, encoder_scratch_len, Activation, EncoderShape,
    EncoderWeights, FfnWeights, LayerConfig, LayerNormWeights,
};
use microattn::mask::Mask;
use microattn::mha::MhaWeights;
use microattn::{bf16, f16, Element};
use std::collections::HashMap;

/// Every f32 input of a case, stored as `T`.
pub struct Tensors<T>(HashMap<String, Vec<T>>);

impl<T: Element> Tensors<T> {
    /// Converts every float input of `case` (integer inputs are skipped).
    pub fn load(case: &Case) -> Self {
        let map = case
            .inputs
            .iter()
            .filter_map(|(name, t)| {
                let values = t.f32s().ok()?;
                Some((
                    name.clone(),
                    values.iter().map(|&x| T::from_f32(x)).collect(),
                ))
            })
            .collect();
        Tensors(map)
    }

    /// Input `name`, required.
    pub fn get(&self, name: &str) -> Result<&[T], String> {
        self.0
            .get(name)
            .map(Vec::as_slice)
            .ok_or_else(|| format!("missing f32 input `{name}`"))
    }

    /// Input `name` if present (biases of `bias=False` modules are absent).
    pub fn opt(&self, name: &str) -> Option<&[T]> {
        self.0.get(name).map(Vec::as_slice)
    }

    /// The `nn.MultiheadAttention` weights under `prefix` (`self_attn`, `multihead_attn`).
    pub fn mha(&self, prefix: &str) -> Result<MhaWeights<'_, T>, String> {
        Ok(MhaWeights {
            in_proj_weight: self.get(&format!("{prefix}.in_proj_weight"))?,
            in_proj_bias: self.opt(&format!("{prefix}.in_proj_bias")),
            out_proj_weight: self.get(&format!("{prefix}.out_proj.weight"))?,
            out_proj_bias: self.opt(&format!("{prefix}.out_proj.bias")),
        })
    }

    /// `linear1.*` and `linear2.*`.
    pub fn ffn(&self) -> Result<FfnWeights<'_, T>, String> {
        Ok(FfnWeights {
            w1: self.get("linear1.weight")?,
            b1: self.opt("linear1.bias"),
            w2: self.get("linear2.weight")?,
            b2: self.opt("linear2.bias"),
        })
    }

    /// `<name>.weight` and `<name>.bias`.
    pub fn norm(&self, name: &str) -> Result<LayerNormWeights<'_, T>, String> {
        Ok(LayerNormWeights {
            weight: self.get(&format!("{name}.weight"))?,
            bias: self.opt(&format!("{name}.bias")),
        })
    }
}

/// `(rows, cols)` of a 2-D input.
pub fn rows_cols(case: &Case, name: &str) -> Result<(usize, usize), String> {
    match case.input(name)?.shape[..] {
        [rows, cols] => Ok((rows, cols)),
        ref other => Err(format!(
            "input `{name}` has shape {other:?}, [L, E] expected"
        )),
    }
}

/// Rows of `linear1.weight`: the FFN hidden width.
pub fn hidden(case: &Case) -> Result<usize, String> {
    Ok(rows_cols(case, "linear1.weight")?.0)
}

/// `activation`, `norm_first` and `eps`; the attention params are filled in by the caller.
pub fn base_config(case: &Case) -> Result<LayerConfig<'static>, String> {
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

/// Runs the case in `ty` (f32, f16 or bf16).
pub fn run(case: &Case, ty: ElemType) -> Result<Outputs, String> {
    let out = match ty {
        ElemType::F32 => run_typed::<f32>(case)?,
        ElemType::F16 => run_typed::<f16>(case)?,
        ElemType::Bf16 => run_typed::<bf16>(case)?,
        ElemType::I8 => return Err("encoder_layer adapter runs f32, f16 and bf16 only".into()),
    };
    Ok(vec![("out".to_string(), out)])
}

fn run_typed<T: Element>(case: &Case) -> Result<Vec<f32>, String> {
    let (len, embed) = rows_cols(case, "src")?;
    let shape = EncoderShape::new(
        len,
        embed,
        req_usize(&case.params, "num_heads")?,
        hidden(case)?,
    );
    let masks = MaskList::parse(&case.params, "mask")?;
    let terms = masks.terms();
    let config = LayerConfig {
        self_attention: SdpaParams {
            mask: Mask::new(&terms),
            ..SdpaParams::default()
        },
        ..base_config(case)?
    };
    let t = Tensors::<T>::load(case);
    let weights = EncoderWeights {
        self_attn: t.mha("self_attn")?,
        ffn: t.ffn()?,
        norm1: t.norm("norm1")?,
        norm2: t.norm("norm2")?,
    };
    let n = len.checked_mul(embed).ok_or("output size overflows")?;
    let mut out = vec![T::default(); n];
    let mut buffer = vec![T::default(); encoder_buffer_len(shape, config.norm_first)];
    let mut scratch = vec![0.0f32; encoder_scratch_len(shape)];
    encoder_layer(
        t.get("src")?,
        &weights,
        &mut out,
        shape,
        &config,
        &mut buffer,
        &mut scratch,
    )
    .map_err(|e| kernel_error("encoder_layer", e))?;
    Ok(out.iter().map(|v| v.to_f32()).collect())
}
