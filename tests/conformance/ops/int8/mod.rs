//! i8 adapters: inputs quantized per tensor (symmetric, max-abs) by the runner, the library's
//! integer kernels run, outputs dequantized for the comparison. No f32 attention math stands
//! in for a kernel: scores, softmax and weighted sums run on the integer path.

pub mod sdpa;

use microattn::quant::{quantize, QParams};

/// Symmetric per-tensor int8 quantization of `x` with the max-abs scale.
pub fn quantize_max_abs(x: &[f32]) -> Result<(Vec<i8>, QParams), String> {
    let max_abs = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let params = QParams::from_max_abs(max_abs).map_err(|e| format!("quantizing: {e}"))?;
    let mut q = vec![0i8; x.len()];
    quantize(x, params, &mut q).map_err(|e| format!("quantizing: {e}"))?;
    Ok((q, params))
}

/// Largest `|x|` of int8 values (as i32, so -128 is 128).
pub fn max_abs_i8(x: &[i8]) -> i32 {
    x.iter().map(|&v| (v as i32).abs()).max().unwrap_or(0)
}
