//! `gat` in i8: `microattn::graph_int8::int8_gat`.
//!
//! `x` is quantized per tensor (max-abs), `lin_weight` per row, `att_src` / `att_dst` per
//! tensor; the bias is added in Q16 output steps. The scales of `x'` and of the output are
//! calibrated by running the int8 layer (worst-case `x'` scale and the largest output the
//! projected features and bias allow, then the reported peaks), never from the expected
//! output.

use super::layer_build::{quantize_per_row, quantize_tensor};
use crate::case::Case;
use crate::ops::Outputs;
use crate::params::{opt_bool, opt_f64, req_usize};
use microattn::attention::int8::Int8Dense;
use microattn::graph::{GatParams, GatShape};
use microattn::graph_int8::{
    int8_gat, int8_gat_acc_len, int8_gat_scratch_len, Int8GatParams, Int8GatScales, Int8GatStats,
};
use microattn::quant::FixedMultiplier;

/// Runs the case in i8.
pub fn run(case: &Case) -> Result<Outputs, String> {
    let x_t = case.input("x")?;
    let [nodes, in_features] = x_t.shape[..] else {
        return Err(format!("x has shape {:?}: [N,Fin] expected", x_t.shape));
    };
    let edges = case.input("edge_index")?;
    if edges.shape.len() != 2 || edges.shape[0] != 2 {
        return Err(format!(
            "edge_index has shape {:?}: [2,E] expected",
            edges.shape
        ));
    }
    let edge_index = edges.i32s().map_err(|e| format!("edge_index: {e}"))?;
    let p = &case.params;
    let heads = req_usize(p, "heads")?;
    let params = GatParams {
        concat: opt_bool(p, "concat")?.unwrap_or(true),
        negative_slope: opt_f64(p, "negative_slope")?.unwrap_or(0.2) as f32,
        add_self_loops: opt_bool(p, "add_self_loops")?.unwrap_or(true),
    };
    let lin_f32 = case.input_f32("lin_weight")?;
    let hf = lin_f32
        .len()
        .checked_div(in_features)
        .ok_or("x has no features")?;
    let out_features = hf.checked_div(heads).ok_or("heads is 0")?;
    let shape = GatShape::new(nodes, in_features, out_features, heads);
    let bias = match case.optional_input("bias") {
        Some(b) => Some(b.f32s().map_err(|e| format!("bias: {e}"))?),
        None => None,
    };
    let (x, x_scale) = quantize_tensor(case.input_f32("x")?)?;
    let (lin, lin_scales) = quantize_per_row(lin_f32, hf)?;
    let (att_src, att_src_scale) = quantize_tensor(case.input_f32("att_src")?)?;
    let (att_dst, att_dst_scale) = quantize_tensor(case.input_f32("att_dst")?)?;
    let out_len = nodes * shape.output_features(params.concat);

    let mut scratch = vec![0i8; int8_gat_scratch_len(shape)];
    let mut acc = vec![0i64; int8_gat_acc_len(shape)];
    let mut out = vec![0i8; out_len];
    let mut run_once = |xp: f32, out_scale: f32, out: &mut [i8]| -> Result<Int8GatStats, String> {
        let mut mults = vec![FixedMultiplier::ONE; hf];
        let mut no_bias = [0i32; 0];
        let lin = Int8Dense::prepare(
            &lin,
            hf,
            &lin_scales,
            x_scale,
            xp,
            None,
            &mut no_bias,
            &mut mults,
        )
        .map_err(|e| format!("Int8Dense::prepare: {e}"))?;
        let mut bias_q = vec![0i32; bias.map_or(0, <[f32]>::len)];
        let scales = Int8GatScales {
            projected: xp,
            att_src: att_src_scale,
            att_dst: att_dst_scale,
            out: out_scale,
        };
        let gp =
            Int8GatParams::prepare(lin, &att_src, &att_dst, scales, bias, &params, &mut bias_q)
                .map_err(|e| format!("Int8GatParams::prepare: {e}"))?;
        let mut stats = Int8GatStats::default();
        int8_gat(
            &x,
            edge_index,
            &gp,
            out,
            shape,
            &mut scratch,
            &mut acc,
            Some(&mut stats),
        )
        .map_err(|e| format!("int8_gat: {e}"))?;
        Ok(stats)
    };

    // Worst case of x' = x Wᵀ: Σ|w| · max|x| per channel; outputs are convex combinations of
    // x' rows plus the bias.
    let x_max = x_scale * 127.0;
    let xp_max = lin_f32
        .chunks_exact(in_features)
        .map(|r| r.iter().map(|v| v.abs()).sum::<f32>() * x_max)
        .fold(f32::MIN_POSITIVE, f32::max);
    let b_max = bias.map_or(0.0, |b| b.iter().fold(0.0f32, |m, v| m.max(v.abs())));
    let (mut xp, mut out_scale) = (xp_max / 127.0, (xp_max + b_max) / 127.0);
    let refine = |s: f32, peak: i64| {
        if peak > 0 {
            s * (peak as f32 + 1.0) / 127.0
        } else {
            s
        }
    };
    for _ in 0..3 {
        let st = run_once(xp, out_scale, &mut out)?;
        xp = refine(xp, st.projected);
        out_scale = refine(out_scale, st.out);
    }
    run_once(xp, out_scale, &mut out)?;
    let out = out.iter().map(|&v| v as f32 * out_scale).collect();
    Ok(vec![("out".to_string(), out)])
}
