//! `decoder_layer`: `microattn::layers::decoder_layer` (`torch.nn.TransformerDecoderLayer`)
//! in f32, f16 and bf16 storage.
//!
//! Inputs `tgt` [Lt,E], `memory` [Ls,E] and the state dict (`self_attn.*`,
//! `multihead_attn.*`, `linear1.*`, `linear2.*`, `norm1..3.*`; biases optional); params
//! `num_heads`, `activation`, `norm_first`, `eps`, `tgt_mask`, `memory_mask`.
//! Output `out` [Lt,E].

use super::encoder_layer::{base_config, hidden, rows_cols, Tensors};
use super::{kernel_error, Outputs};
use crate::case::{Case, ElemType};
use crate::params::{req_usize, MaskList};
use microattn::attention::SdpaParams;
use microattn::layers::{
    decoder_buffer_len, decoder_layer, decoder_scratch_len, DecoderShape, DecoderWeights,
    LayerConfig,
};
use microattn::mask::Mask;
use microattn::{bf16, f16, Element};

/// Runs the case in `ty` (f32, f16 or bf16).
pub fn run(case: &Case, ty: ElemType) -> Result<Outputs, String> {
    let out = match ty {
        ElemType::F32 => run_typed::<f32>(case)?,
        ElemType::F16 => run_typed::<f16>(case)?,
        ElemType::Bf16 => run_typed::<bf16>(case)?,
        ElemType::I8 => return Err("decoder_layer adapter runs f32, f16 and bf16 only".into()),
    };
    Ok(vec![("out".to_string(), out)])
}

fn run_typed<T: Element>(case: &Case) -> Result<Vec<f32>, String> {
    let (lt, embed) = rows_cols(case, "tgt")?;
    let (ls, mem_embed) = rows_cols(case, "memory")?;
    if mem_embed != embed {
        return Err(format!(
            "memory width {mem_embed} differs from tgt width {embed}"
        ));
    }
    let heads = req_usize(&case.params, "num_heads")?;
    let shape = DecoderShape::new(lt, ls, embed, heads, hidden(case)?);
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
        ..base_config(case)?
    };
    let t = Tensors::<T>::load(case);
    let weights = DecoderWeights {
        self_attn: t.mha("self_attn")?,
        cross_attn: t.mha("multihead_attn")?,
        ffn: t.ffn()?,
        norm1: t.norm("norm1")?,
        norm2: t.norm("norm2")?,
        norm3: t.norm("norm3")?,
    };
    let n = lt.checked_mul(embed).ok_or("output size overflows")?;
    let mut out = vec![T::default(); n];
    let mut buffer = vec![T::default(); decoder_buffer_len(shape, config.norm_first)];
    let mut scratch = vec![0.0f32; decoder_scratch_len(shape)];
    decoder_layer(
        t.get("tgt")?,
        t.get("memory")?,
        &weights,
        &mut out,
        shape,
        &config,
        &mut buffer,
        &mut scratch,
    )
    .map_err(|e| kernel_error("decoder_layer", e))?;
    Ok(out.iter().map(|v| v.to_f32()).collect())
}
