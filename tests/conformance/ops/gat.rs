//! `gat`: `microattn::graph::gat` (torch_geometric `GATConv`) in f32 and f16 storage.
//!
//! Inputs `x` [N,Fin], `edge_index` [2,E] i32, `lin_weight` [H*Fo,Fin], `att_src` and
//! `att_dst` [H,Fo] (or PyTorch's [1,H,Fo]), `bias` (optional); params `heads`, `concat`
//! (default true), `negative_slope` (default 0.2), `add_self_loops` (default true).
//! Output `out` [N,H*Fo] or [N,Fo].

use super::{kernel_error, to_f16, widen_f16, Outputs};
use crate::case::{Case, ElemType};
use crate::params::{opt_bool, opt_f64, req_usize};
use microattn::f16;
use microattn::graph::{gat, gat_scratch_len, GatParams, GatShape, GatWeights};

/// Runs the case in `ty` (f32 or f16).
pub fn run(case: &Case, ty: ElemType) -> Result<Outputs, String> {
    let x = case.input("x")?;
    let [nodes, in_features] = x.shape[..] else {
        return Err(format!("x has shape {:?}: [N,Fin] expected", x.shape));
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
    let lin = case.input_f32("lin_weight")?;
    let hf = lin
        .len()
        .checked_div(in_features)
        .ok_or("x has no features")?;
    let out_features = hf.checked_div(heads).ok_or("heads is 0")?;
    let shape = GatShape::new(nodes, in_features, out_features, heads);
    let (att_src, att_dst) = (case.input_f32("att_src")?, case.input_f32("att_dst")?);
    let bias = match case.optional_input("bias") {
        Some(b) => Some(b.f32s().map_err(|e| format!("bias: {e}"))?),
        None => None,
    };
    let x = case.input_f32("x")?;
    let out_len = nodes
        .checked_mul(shape.output_features(params.concat))
        .ok_or("output size overflows")?;
    let mut scratch = vec![0.0f32; gat_scratch_len(shape)];
    let out = match ty {
        ElemType::F32 => {
            let weights = GatWeights {
                lin_weight: lin,
                att_src,
                att_dst,
                bias,
            };
            let mut out = vec![0.0f32; out_len];
            gat(
                x,
                edge_index,
                &weights,
                &mut out,
                shape,
                &params,
                &mut scratch,
            )
            .map_err(|e| kernel_error("gat", e))?;
            out
        }
        ElemType::F16 => {
            let (lin, att_src, att_dst) = (to_f16(lin), to_f16(att_src), to_f16(att_dst));
            let bias = bias.map(to_f16);
            let weights = GatWeights {
                lin_weight: &lin,
                att_src: &att_src,
                att_dst: &att_dst,
                bias: bias.as_deref(),
            };
            let mut out = vec![f16::ZERO; out_len];
            gat(
                &to_f16(x),
                edge_index,
                &weights,
                &mut out,
                shape,
                &params,
                &mut scratch,
            )
            .map_err(|e| kernel_error("gat::<f16>", e))?;
            widen_f16(&out)
        }
        ElemType::I8 => return Err("gat adapter runs f32 and f16 only".into()),
    };
    Ok(vec![("out".to_string(), out)])
}
