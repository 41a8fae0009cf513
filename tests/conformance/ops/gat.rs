//! `gat`: `microattn::graph::gat` (torch_geometric `GATConv`) in f32, f16 and bf16 storage.
//!
//! Inputs `x` [N,Fin], `edge_index` [2,E] i32, `lin_weight` [H*Fo,Fin], `att_src` and
//! `att_dst` [H,Fo] (or PyTorch's [1,H,Fo]), `bias` (optional); params `heads`, `concat`
//! (default true), `negative_slope` (default 0.2), `add_self_loops` (default true).
//! Output `out` [N,H*Fo] or [N,Fo].

use super::{kernel_error, narrow, widen, Outputs};
use crate::case::{Case, ElemType};
use crate::params::{opt_bool, opt_f64, req_usize};
use microattn::graph::{gat, gat_scratch_len, GatParams, GatShape, GatWeights};
use microattn::{bf16, f16, Element};

/// Runs the case in `ty` (f32, f16 or bf16).
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
    let weights = GatWeights {
        lin_weight: lin,
        att_src,
        att_dst,
        bias,
    };
    let out = match ty {
        ElemType::F32 => {
            let mut out = vec![0.0f32; out_len];
            let mut scratch = vec![0.0f32; gat_scratch_len(shape)];
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
        ElemType::F16 => run_typed::<f16>(ty, x, edge_index, &weights, out_len, shape, &params)?,
        ElemType::Bf16 => run_typed::<bf16>(ty, x, edge_index, &weights, out_len, shape, &params)?,
        ElemType::I8 => return Err("gat adapter runs f32, f16 and bf16 only".into()),
    };
    Ok(vec![("out".to_string(), out)])
}

/// `gat` with `x`, the weights (given in f32) and the output stored as `E` (the storage of
/// `ty`).
fn run_typed<E: Element>(
    ty: ElemType,
    x: &[f32],
    edge_index: &[i32],
    w: &GatWeights<'_, f32>,
    out_len: usize,
    shape: GatShape,
    params: &GatParams,
) -> Result<Vec<f32>, String> {
    let (lin, att_src, att_dst) = (
        narrow::<E>(w.lin_weight),
        narrow::<E>(w.att_src),
        narrow::<E>(w.att_dst),
    );
    let bias = w.bias.map(narrow::<E>);
    let weights = GatWeights {
        lin_weight: &lin,
        att_src: &att_src,
        att_dst: &att_dst,
        bias: bias.as_deref(),
    };
    let mut out = vec![E::default(); out_len];
    let mut scratch = vec![0.0f32; gat_scratch_len(shape)];
    gat(
        &narrow::<E>(x),
        edge_index,
        &weights,
        &mut out,
        shape,
        params,
        &mut scratch,
    )
    .map_err(|e| kernel_error(&format!("gat::<{ty}>"), e))?;
    Ok(widen(&out))
}
