//! `encoder_layer` in i8, through [`layer_run::encoder`](super::layer_run::encoder): inputs quantized per
//! tensor (max-abs), weights quantized and stage scales calibrated on the case's input by
//! the library's offline step (`microattn::layers::int8::Int8LayerQuant`), never from the expected
//! output; the integer kernels run, the output is dequantized for the comparison. The QEMU
//! firmware runs the same steps, and its int8 bytes must equal these.

use super::layer_run;
use crate::case::Case;
use crate::ops::Outputs;

/// Runs the case in i8.
pub fn run(case: &Case) -> Result<Outputs, String> {
    let out = layer_run::encoder(case)?;
    Ok(vec![(out.name.to_string(), out.dequantized())])
}
