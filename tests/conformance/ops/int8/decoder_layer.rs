//! `decoder_layer` in i8: `microattn::layers::int8::int8_decoder_layer`, quantized and
//! calibrated as the `encoder_layer` adapter does (`tgt` and `memory` per tensor).

use super::encoder_layer::ROUNDS;
use super::layer_build::{calibrated_run, quantize_tensor, QLayer};
use crate::case::Case;
use crate::ops::encoder_layer::{base_config, rows_cols};
use crate::ops::Outputs;
use crate::params::{req_usize, MaskList};
use microattn::mask::Mask;

/// Runs the case in i8.
pub fn run(case: &Case) -> Result<Outputs, String> {
    let (_, embed) = rows_cols(case, "tgt")?;
    let (_, mem_embed) = rows_cols(case, "memory")?;
    if mem_embed != embed {
        return Err(format!(
            "memory width {mem_embed} differs from tgt width {embed}"
        ));
    }
    let config = base_config(case)?;
    let heads = req_usize(&case.params, "num_heads")?;
    let get = |name: &str| Some(case.optional_input(name)?.f32s().ok()?.to_vec());
    let layer = QLayer::new(
        &get,
        embed,
        heads,
        true,
        config.activation,
        config.norm_first,
        config.eps,
    )?;
    let (tgt, tgt_scale) = quantize_tensor(case.input_f32("tgt")?)?;
    let (memory, memory_scale) = quantize_tensor(case.input_f32("memory")?)?;
    let tgt_masks = MaskList::parse(&case.params, "tgt_mask")?;
    let memory_masks = MaskList::parse(&case.params, "memory_mask")?;
    let (tgt_terms, memory_terms) = (tgt_masks.terms(), memory_masks.terms());
    let out = calibrated_run(
        &layer,
        &tgt,
        tgt_scale,
        Some((&memory, memory_scale)),
        Mask::new(&tgt_terms),
        Mask::new(&memory_terms),
        ROUNDS,
    )?;
    Ok(vec![("out".to_string(), out)])
}
