//! `vit_embed` in i8: `microattn::layers::int8::int8_patch_embed`.
//!
//! `image` is quantized per tensor (max-abs), `patch_weight` per output channel; the bias
//! and the position embedding become `i32` accumulator offsets, the class token row an int8
//! row. The token scale is calibrated by running the int8 kernel (worst case first, then
//! the reported peak), never from the expected output.

use super::layer_build::{quantize_per_row, quantize_tensor};
use crate::case::Case;
use crate::ops::Outputs;
use crate::params::req_usize;
use microattn::layers::int8::{
    int8_patch_embed, int8_patch_embed_scratch_len, int8_patch_offsets_len, Int8PatchEmbed,
};
use microattn::layers::PatchShape;
use microattn::quant::FixedMultiplier;

/// Runs the case in i8.
pub fn run(case: &Case) -> Result<Outputs, String> {
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
    let (image, image_scale) = quantize_tensor(case.input_f32("image")?)?;
    let pw_f32 = case.input_f32("patch_weight")?;
    let (pw, pw_scales) = quantize_per_row(pw_f32, embed)?;
    let rows = shape.patches() + usize::from(cls.is_some());
    let mut tokens = vec![0i8; rows * embed];
    let mut scratch = vec![0i8; int8_patch_embed_scratch_len(shape)];
    let mut run_once = |out_scale: f32, tokens: &mut [i8]| -> Result<i64, String> {
        let mut offsets = vec![0i32; int8_patch_offsets_len(shape)];
        let mut mults = vec![FixedMultiplier::ONE; embed];
        let mut cls_row = vec![0i8; embed];
        let params = Int8PatchEmbed::prepare(
            &pw,
            &pw_scales,
            bias,
            cls,
            pos,
            image_scale,
            out_scale,
            shape,
            &mut offsets,
            &mut mults,
            &mut cls_row,
        )
        .map_err(|e| format!("Int8PatchEmbed::prepare: {e}"))?;
        int8_patch_embed(&image, &params, tokens, shape, &mut scratch)
            .map_err(|e| format!("int8_patch_embed: {e}"))
    };
    // Worst case: Σ|w| · max|x| + |b| + max|pos| per channel, and the class token row.
    let abs_max =
        |v: Option<&[f32]>| v.map_or(0.0, |v| v.iter().fold(0.0f32, |m, x| m.max(x.abs())));
    let worst = pw_f32
        .chunks_exact(pw_f32.len() / embed)
        .map(|r| r.iter().map(|v| v.abs()).sum::<f32>() * image_scale * 127.0)
        .fold(0.0f32, f32::max)
        .max(abs_max(cls))
        + abs_max(bias)
        + abs_max(pos);
    let mut out_scale = worst.max(f32::MIN_POSITIVE) / 127.0;
    for _ in 0..2 {
        let peak = run_once(out_scale, &mut tokens)?;
        if peak > 0 {
            out_scale *= (peak as f32 + 1.0) / 127.0;
        }
    }
    run_once(out_scale, &mut tokens)?;
    let tokens = tokens.iter().map(|&v| v as f32 * out_scale).collect();
    Ok(vec![("tokens".to_string(), tokens)])
}
