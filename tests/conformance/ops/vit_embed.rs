//! `vit_embed`: `microattn::layers::patch_embed` in f32 and f16 storage.
//!
//! Inputs `image` [C,H,W], `patch_weight` [E,C,P,P], `patch_bias` [E], `cls_token` [E] (or
//! [1,1,E]), `pos_embed` [1+NP,E] (or [1,1+NP,E]); param `patch` P. Output `tokens`
//! [1+NP,E].

use super::{kernel_error, to_f16, widen_f16, Outputs};
use crate::case::{Case, ElemType};
use crate::params::req_usize;
use microattn::f16;
use microattn::layers::{patch_embed, patch_embed_scratch_len, PatchEmbedWeights, PatchShape};

/// Runs the case in `ty` (f32 or f16).
pub fn run(case: &Case, ty: ElemType) -> Result<Outputs, String> {
    let image = case.input("image")?;
    let [c, h, w] = image.shape[..] else {
        return Err(format!(
            "image has shape {:?}: [C,H,W] expected",
            image.shape
        ));
    };
    let pw = case.input("patch_weight")?;
    let embed = *pw.shape.first().ok_or("patch_weight has no dimensions")?;
    let shape = PatchShape::new(c, h, w, req_usize(&case.params, "patch")?, embed);
    let image = case.input_f32("image")?;
    let pw = case.input_f32("patch_weight")?;
    let optional = |name: &str| -> Result<Option<&[f32]>, String> {
        match case.optional_input(name) {
            Some(t) => t.f32s().map(Some).map_err(|e| format!("{name}: {e}")),
            None => Ok(None),
        }
    };
    let (bias, cls, pos) = (
        optional("patch_bias")?,
        optional("cls_token")?,
        optional("pos_embed")?,
    );
    let out_len = shape
        .tokens()
        .checked_mul(embed)
        .ok_or("output size overflows")?;
    let out_len = if cls.is_some() {
        out_len
    } else {
        out_len - embed
    };
    let mut scratch = vec![0.0f32; patch_embed_scratch_len(shape)];
    let tokens = match ty {
        ElemType::F32 => {
            let weights = PatchEmbedWeights {
                patch_weight: pw,
                patch_bias: bias,
                cls_token: cls,
                pos_embed: pos,
            };
            let mut out = vec![0.0f32; out_len];
            patch_embed(image, &weights, &mut out, shape, &mut scratch)
                .map_err(|e| kernel_error("patch_embed", e))?;
            out
        }
        ElemType::F16 => {
            let pw = to_f16(pw);
            let (bias, cls, pos) = (bias.map(to_f16), cls.map(to_f16), pos.map(to_f16));
            let weights = PatchEmbedWeights {
                patch_weight: &pw,
                patch_bias: bias.as_deref(),
                cls_token: cls.as_deref(),
                pos_embed: pos.as_deref(),
            };
            let mut out = vec![f16::ZERO; out_len];
            patch_embed(&to_f16(image), &weights, &mut out, shape, &mut scratch)
                .map_err(|e| kernel_error("patch_embed::<f16>", e))?;
            widen_f16(&out)
        }
        ElemType::I8 => return Err("vit_embed adapter runs f32 and f16 only".into()),
    };
    Ok(vec![("tokens".to_string(), tokens)])
}
