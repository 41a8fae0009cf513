//! `sdpa`: `microattn::attention::sdpa` (f32) and `sdpa_typed::<E>` (f16 and bf16).
//!
//! Inputs `q` [Lq,D], `k` [Lk,D], `v` [Lk,Dv] (one head) or `q` [H,Lq,D], `k` [Hkv,Lk,D],
//! `v` [Hkv,Lk,Dv]; params `scale`, `score`, `mask`, `bias`, `q_pos_offset`; output `out`.

use super::{kernel_error, narrow, widen, Outputs};
use crate::case::{Case, ElemType};
use crate::params::{opt_f64, q_pos_offset, score, BiasSpec, MaskList};
use microattn::attention::{sdpa, sdpa_scratch_len, sdpa_typed, AttentionShape, SdpaParams};
use microattn::mask::Mask;
use microattn::{bf16, f16, Element};

/// Runs the case in `ty` (f32, f16 or bf16).
pub fn run(case: &Case, ty: ElemType) -> Result<Outputs, String> {
    let q = case.input("q")?;
    let k = case.input("k")?;
    let v = case.input("v")?;
    let shape = shape_of(&q.shape, &k.shape, &v.shape)?;
    let (q, k, v) = (
        case.input_f32("q")?,
        case.input_f32("k")?,
        case.input_f32("v")?,
    );

    let p = &case.params;
    let masks = MaskList::parse(p, "mask")?;
    let terms = masks.terms();
    let offset = q_pos_offset(p)?;
    let bias = BiasSpec::parse(p, "bias")?;
    let params = SdpaParams {
        scale: opt_f64(p, "scale")?.map(|s| s as f32),
        score: score(p, "score")?,
        mask: Mask::new(&terms).with_signed_offset(offset),
        bias: bias.bias(),
    };

    let out = match ty {
        ElemType::F32 => {
            let mut out = vec![0.0f32; out_len(shape)?];
            sdpa(q, k, v, &mut out, shape, &params).map_err(|e| kernel_error("sdpa", e))?;
            out
        }
        ElemType::F16 => run_typed::<f16>(ty, [q, k, v], shape, &params)?,
        ElemType::Bf16 => run_typed::<bf16>(ty, [q, k, v], shape, &params)?,
        ElemType::I8 => return Err("sdpa adapter runs f32, f16 and bf16 only".into()),
    };
    Ok(vec![("out".to_string(), out)])
}

/// `sdpa_typed` with `q`, `k`, `v` and the output stored as `E` (the storage of `ty`).
fn run_typed<E: Element>(
    ty: ElemType,
    [q, k, v]: [&[f32]; 3],
    shape: AttentionShape,
    params: &SdpaParams<'_>,
) -> Result<Vec<f32>, String> {
    let (q, k, v) = (narrow::<E>(q), narrow::<E>(k), narrow::<E>(v));
    let mut out = vec![E::default(); out_len(shape)?];
    let mut scratch = vec![0.0f32; sdpa_scratch_len(shape)];
    sdpa_typed(&q, &k, &v, &mut out, shape, params, &mut scratch)
        .map_err(|e| kernel_error(&format!("sdpa_typed::<{ty}>"), e))?;
    Ok(widen(&out))
}

/// The attention shape of 2-D (one head) or 3-D (heads) `q`, `k`, `v`.
fn shape_of(q: &[usize], k: &[usize], v: &[usize]) -> Result<AttentionShape, String> {
    let shape = match (q, k, v) {
        (&[lq, d], &[lk, dk], &[lkv, dv]) => {
            check(d == dk && lk == lkv, q, k, v)?;
            AttentionShape::single(lq, lk, d, dv)
        }
        (&[h, lq, d], &[hkv, lk, dk], &[hv, lkv, dv]) => {
            check(d == dk && lk == lkv && hkv == hv, q, k, v)?;
            AttentionShape::multi_head(h, hkv, lq, lk, d, dv)
        }
        _ => return Err(format!("q {q:?}, k {k:?}, v {v:?}: not all 2-D or all 3-D")),
    };
    Ok(shape)
}

fn check(ok: bool, q: &[usize], k: &[usize], v: &[usize]) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!("inconsistent shapes q {q:?}, k {k:?}, v {v:?}"))
    }
}

/// Output elements `[heads, lq, dv]`, checked so a huge shape fails instead of panicking.
fn out_len(shape: AttentionShape) -> Result<usize, String> {
    [shape.heads, shape.lq, shape.dv]
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| "output size overflows".to_string())
}
