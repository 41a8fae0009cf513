//! `encoder_layer` in i8: `microattn::layers::int8::int8_encoder_layer`.
//!
//! `src` is quantized per tensor (max-abs), every weight matrix per row; LayerNorm weights
//! and biases become Q16 integers. The scales of the intermediate tensors are calibrated by
//! running the int8 layer on the case's input (worst-case scales, then stage peaks), never
//! from the expected output ([`layer_build`](super::layer_build)).

use super::layer_build::{calibrated_run, quantize_tensor, QLayer};
use crate::case::Case;
use crate::ops::encoder_layer::{base_config, rows_cols};
use crate::ops::Outputs;
use crate::params::{req_usize, MaskList};
use microattn::mask::Mask;

/// Calibration runs before the final one.
pub const ROUNDS: usize = 4;

/// Runs the case in i8.
pub fn run(case: &Case) -> Result<Outputs, String> {
    let (_, embed) = rows_cols(case, "src")?;
    let config = base_config(case)?;
    let heads = req_usize(&case.params, "num_heads")?;
    let get = |name: &str| Some(case.optional_input(name)?.f32s().ok()?.to_vec());
    let layer = QLayer::new(
        &get,
        embed,
        heads,
        false,
        config.activation,
        config.norm_first,
        config.eps,
    )?;
    let (src, src_scale) = quantize_tensor(case.input_f32("src")?)?;
    let masks = MaskList::parse(&case.params, "mask")?;
    let terms = masks.terms();
    let mask = Mask::new(&terms);
    let out = calibrated_run(&layer, &src, src_scale, None, mask, Mask::NONE, ROUNDS)?;
    Ok(vec![("out".to_string(), out)])
}
