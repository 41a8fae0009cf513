//! Int8 transformer blocks: LayerNorm, residual adds, activations, FFN, encoder and decoder
//! layers, ViT patch embedding. Graph attention is in [`crate::graph_int8`].
//!
//! Same two steps as [`crate::attention::int8`]: a **prepare** step (float, once) turns the
//! f32 parameters and the quantization scales of every stage into integers, and the
//! **run** step is integer only (no float at all, so it runs on an FPU-less core). Every
//! tensor between two blocks is int8, symmetric, with one scale per tensor chosen by the
//! caller (static quantization); the kernels report each stage's peak before saturation
//! so the scales can be calibrated by running them ([`Int8LayerStats`]).
//!
//! | block | arithmetic |
//! |---|---|
//! | projections, FFN linears, patch projection | int8 × int8 → exact `i32`, `i32` bias, per-channel fixed-point requantization ([`Int8Dense`](crate::attention::int8::Int8Dense)) |
//! | attention | [`int8_mha`](crate::attention::int8::int8_mha): integer scores, integer streaming softmax, integer `P·V` |
//! | LayerNorm (with the post-norm residual add fused) | exact integer mean and variance in a common unit of both inputs, integer square root (8 fractional bits), Q16 normalized values, Q16 `gamma`/`beta` in output steps: [`int8_layer_norm`] |
//! | pre-norm residual add | two fixed-point multipliers, one rounding: [`int8_add`] |
//! | ReLU, GELU, SiLU | a 256-entry table per (activation, input scale, output scale): [`Int8Lut`] |
//! | ViT class token, position embedding | folded into `i32` accumulator offsets and one int8 row at prepare time |
//!
//! Nothing in the run step is float; the only float is the prepare step (scales to
//! multipliers, LayerNorm weights to Q16, the activation tables).
//!
//! The offline step from f32 weights is in the library too, heap-free so it also runs on
//! target: [`Int8LayerQuant`] (encoder and decoder layers: weights quantized per output
//! channel into storage sized by [`int8_encoder_storage_len`] / [`int8_decoder_storage_len`],
//! worst-case stage scales, [`Int8LayerQuant::calibrate`] refining them by running the integer
//! layer on a sample input), [`calibrate_patch_embed`], and
//! [`Int8GatQuant`](crate::graph_int8::Int8GatQuant) for GAT.

mod calibrate;
mod ffn;
mod norm;
mod transformer;
mod vit;

pub use calibrate::{
    int8_decoder_storage_len, int8_encoder_storage_len, quantize_per_row, refine_scale,
    Int8LayerQuant, Int8LayerScales, Int8LayerStorage, Int8MhaScales,
};
pub use ffn::{int8_ffn, int8_ffn_scratch_len, Int8FfnParams, Int8FfnStats};
pub use norm::{
    int8_add, int8_layer_norm, Int8Add, Int8LayerNorm, Int8Lut, MAX_NORM_DIM, NORM_FRAC_BITS,
};
pub use transformer::{
    int8_decoder_layer, int8_decoder_scratch_len, int8_encoder_layer, int8_encoder_scratch_len,
    int8_layer_acc_len, Int8DecoderParams, Int8EncoderParams, Int8LayerStats,
};
pub use vit::{
    calibrate_patch_embed, int8_patch_embed, int8_patch_embed_scratch_len, int8_patch_offsets_len,
    Int8PatchEmbed,
};
