//! i8 adapters: inputs quantized per tensor (symmetric, max-abs) by the runner, the library's
//! integer kernels run, outputs dequantized for the comparison. No f32 attention math stands
//! in for a kernel: scores, softmax and weighted sums run on the integer path.

pub mod additive_attention;
pub mod decoder_layer;
pub mod encoder_layer;
pub mod gat;
pub mod layer_run;
pub mod linear_attention;
pub mod luong_attention;
pub mod mha;
pub mod sdpa;
pub mod vit_embed;

use microattn::quant::{quantize, quantize_per_channel, QParams};

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

/// Runs `kernel(out_scale, out)` twice: first with `out_scale = values_scale` (never
/// saturates: outputs are convex combinations of value rows), then with the scale that maps
/// the observed max-abs (in value steps, plus half a step) to 127. Returns the dequantized
/// output of `len` elements.
pub fn calibrated_context(
    values_scale: f32,
    len: usize,
    mut kernel: impl FnMut(f32, &mut [i8]) -> Result<(), String>,
) -> Result<Vec<f32>, String> {
    let mut out = vec![0i8; len];
    let mut out_scale = values_scale;
    kernel(out_scale, &mut out)?;
    let steps = max_abs_i8(&out);
    if steps > 0 && steps < 127 {
        out_scale = values_scale * (steps as f32 + 0.5) / 127.0;
        kernel(out_scale, &mut out)?;
    }
    Ok(out.iter().map(|&x| x as f32 * out_scale).collect())
}

/// Q15 weights as f32.
pub fn dequantize_q15(w: &[i16]) -> Vec<f32> {
    w.iter().map(|&x| x as f32 / 32768.0).collect()
}

/// Symmetric int8 quantization of the row-major `[rows, cols]` weight `w` with one max-abs
/// scale per row (per output channel).
pub fn quantize_rows(w: &[f32], rows: usize) -> Result<(Vec<i8>, Vec<f32>), String> {
    if rows == 0 || w.len() % rows != 0 {
        return Err(format!("cannot split {} weights into {rows} rows", w.len()));
    }
    let scales = w
        .chunks_exact(w.len() / rows)
        .map(|row| {
            let m = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            QParams::from_max_abs(m).map(|p| p.scale())
        })
        .collect::<Result<Vec<f32>, _>>()
        .map_err(|e| format!("quantizing: {e}"))?;
    let mut q = vec![0i8; w.len()];
    quantize_per_channel(w, &scales, &mut q).map_err(|e| format!("quantizing: {e}"))?;
    Ok((q, scales))
}
