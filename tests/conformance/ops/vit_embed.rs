//! `vit_embed`: `microattn::layers::patch_embed` in f32, f16 and bf16 storage.
//!
//! Inputs `image` [C,H,W], `patch_weight` [E,C,P,P], `patch_bias` [E], `cls_token` [E] (or
//! [1,1,E]), `pos_embed` [1+NP,E] (or [1,1+NP,E]); param `patch` P. Output `tokens`
//! [1+NP,E].

use super::{kernel_error, narrow, widen, Outputs};
use crate::case::{Case, ElemType};
use crate::params::req_usize;
use microattn::layers::{patch_embed, patch_embed_scratch_len, PatchEmbedWeights, PatchShape};
use microattn::{bf16, f16, Element};

/// Runs the case in `ty` (f32, f16 or bf16).
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
    let weights = PatchEmbedWeights {
        patch_weight: pw,
        patch_bias: bias,
        cls_token: cls,
        pos_embed: pos,
    };
    let tokens = match ty {
        ElemType::F32 => {
            let mut out = vec![0.0f32; out_len];
            let mut scratch = vec![0.0f32; patch_embed_scratch_len(shape)];
            patch_embed(image, &weights, &mut out, shape, &mut scratch)
                .map_err(|e| kernel_error("patch_embed", e))?;
            out
        }
        ElemType::F16 => run_typed::<f16>(ty, image, &weights, out_len, shape)?,
        ElemType::Bf16 => run_typed::<bf16>(ty, image, &weights, out_len, shape)?,
        ElemType::I8 => return Err("vit_embed adapter runs f32, f16 and bf16 only".into()),
    };
    Ok(vec![("tokens".to_string(), tokens)])
}

/// `patch_embed` with the image, the weights (given in f32) and the tokens stored as `E`
/// (the storage of `ty`).
fn run_typed<E: Element>(
    ty: ElemType,
    image: &[f32],
    w: &PatchEmbedWeights<'_, f32>,
    out_len: usize,
    shape: PatchShape,
) -> Result<Vec<f32>, String> {
    let pw = narrow::<E>(w.patch_weight);
    let (bias, cls, pos) = (
        w.patch_bias.map(narrow::<E>),
        w.cls_token.map(narrow::<E>),
        w.pos_embed.map(narrow::<E>),
    );
    let weights = PatchEmbedWeights {
        patch_weight: &pw,
        patch_bias: bias.as_deref(),
        cls_token: cls.as_deref(),
        pos_embed: pos.as_deref(),
    };
    let mut out = vec![E::default(); out_len];
    let mut scratch = vec![0.0f32; patch_embed_scratch_len(shape)];
    patch_embed(&narrow::<E>(image), &weights, &mut out, shape, &mut scratch)
        .map_err(|e| kernel_error(&format!("patch_embed::<{ty}>"), e))?;
    Ok(widen(&out))
}
