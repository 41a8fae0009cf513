//! `linear_attention`: `microattn::attention::linear_attention` (f32) and
//! `linear_attention_typed::<E>` (f16 and bf16).
//!
//! Inputs `q` [L,D], `k` [L,D], `v` [L,Dv] (one head; [H,L,D] / [Hkv,L,D] / [Hkv,L,Dv] with
//! heads are accepted too); params `feature_map` (`elu_plus_one`, the default and the only
//! one), `causal` (default false), `eps` (default 1e-6); output `out`.

use super::{kernel_error, narrow, widen, Outputs};
use crate::case::{Case, ElemType};
use crate::params::{opt_bool, opt_f64, opt_str};
use microattn::attention::{
    linear_attention, linear_attention_scratch_len, linear_attention_typed, AttentionShape,
    LinearAttentionParams,
};
use microattn::{bf16, f16, Element};

/// Runs the case in `ty` (f32, f16 or bf16).
pub fn run(case: &Case, ty: ElemType) -> Result<Outputs, String> {
    let p = &case.params;
    match opt_str(p, "feature_map")? {
        None | Some("elu_plus_one") => {}
        Some(other) => return Err(format!("feature_map {other:?}: only elu_plus_one exists")),
    }
    let params = LinearAttentionParams {
        causal: opt_bool(p, "causal")?.unwrap_or(false),
        eps: opt_f64(p, "eps")?.map_or(LinearAttentionParams::default().eps, |e| e as f32),
    };
    let shape = shape_of(
        &case.input("q")?.shape,
        &case.input("k")?.shape,
        &case.input("v")?.shape,
    )?;
    let (q, k, v) = (
        case.input_f32("q")?,
        case.input_f32("k")?,
        case.input_f32("v")?,
    );
    let out_len = [shape.heads, shape.lq, shape.dv]
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or("output size overflows")?;
    let mut scratch = vec![0.0f32; linear_attention_scratch_len(shape)];
    let out = match ty {
        ElemType::F32 => {
            let mut out = vec![0.0f32; out_len];
            linear_attention(q, k, v, &mut out, shape, &params, &mut scratch)
                .map_err(|e| kernel_error("linear_attention", e))?;
            out
        }
        ElemType::F16 => run_typed::<f16>(ty, [q, k, v], out_len, shape, &params, &mut scratch)?,
        ElemType::Bf16 => run_typed::<bf16>(ty, [q, k, v], out_len, shape, &params, &mut scratch)?,
        ElemType::I8 => return Err("linear_attention adapter runs f32, f16 and bf16 only".into()),
    };
    Ok(vec![("out".to_string(), out)])
}

/// `linear_attention_typed` with `q`, `k`, `v` and the output stored as `E` (the storage of
/// `ty`).
fn run_typed<E: Element>(
    ty: ElemType,
    [q, k, v]: [&[f32]; 3],
    out_len: usize,
    shape: AttentionShape,
    params: &LinearAttentionParams,
    scratch: &mut [f32],
) -> Result<Vec<f32>, String> {
    let (q, k, v) = (narrow::<E>(q), narrow::<E>(k), narrow::<E>(v));
    let mut out = vec![E::default(); out_len];
    linear_attention_typed(&q, &k, &v, &mut out, shape, params, scratch)
        .map_err(|e| kernel_error(&format!("linear_attention_typed::<{ty}>"), e))?;
    Ok(widen(&out))
}

/// The attention shape of 2-D (one head) or 3-D (heads) `q`, `k`, `v`.
fn shape_of(q: &[usize], k: &[usize], v: &[usize]) -> Result<AttentionShape, String> {
    let bad = || format!("inconsistent shapes q {q:?}, k {k:?}, v {v:?}");
    match (q, k, v) {
        (&[lq, d], &[lk, dk], &[lkv, dv]) if d == dk && lk == lkv => {
            Ok(AttentionShape::single(lq, lk, d, dv))
        }
        (&[h, lq, d], &[hkv, lk, dk], &[hv, lkv, dv]) if d == dk && lk == lkv && hkv == hv => {
            Ok(AttentionShape::multi_head(h, hkv, lq, lk, d, dv))
        }
        _ => Err(bad()),
    }
}
