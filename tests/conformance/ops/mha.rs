//! `mha`: `microattn::mha::mha` (f32) and `mha_typed::<E>` (f16 and bf16).
//!
//! Inputs `query` [Lq,E], `key`/`value` [Lk,E] and the `torch.nn.MultiheadAttention` state
//! dict: `in_proj_weight` [3E,E] (or `q_proj_weight`/`k_proj_weight`/`v_proj_weight`
//! [E,E] each, as PyTorch names them when they are separate), `in_proj_bias` [3E],
//! `out_proj.weight` [E,E], `out_proj.bias` [E] (biases optional: `bias=False`).
//! Params `num_heads`, `mask`, and as for `sdpa` `scale`, `score`, `bias`, `q_pos_offset`.
//! Output `out` [Lq,E].

use super::{kernel_error, narrow, widen, Outputs};
use crate::case::{Case, ElemType};
use crate::params::{opt_f64, q_pos_offset, req_usize, score, BiasSpec, MaskList};
use microattn::attention::SdpaParams;
use microattn::mask::Mask;
use microattn::mha::{mha, mha_scratch_len, mha_typed, MhaShape, MhaWeights};
use microattn::{bf16, f16, Element};

/// Runs the case in `ty` (f32, f16 or bf16).
pub fn run(case: &Case, ty: ElemType) -> Result<Outputs, String> {
    let (lq, e) = rows_cols(case, "query")?;
    let (lk, ek) = rows_cols(case, "key")?;
    let (lv, ev) = rows_cols(case, "value")?;
    if ek != e || ev != e || lv != lk {
        return Err(format!(
            "query [{lq},{e}], key [{lk},{ek}], value [{lv},{ev}]: the library's mha needs \
             key and value of the query's width and equal length"
        ));
    }
    let shape = MhaShape::new(lq, lk, e, req_usize(&case.params, "num_heads")?);

    let in_w = in_proj_weight(case)?;
    let in_b = optional(case, "in_proj_bias")?;
    let out_w = case.input_f32("out_proj.weight")?.to_vec();
    let out_b = optional(case, "out_proj.bias")?;

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

    let (query, key, value) = (
        case.input_f32("query")?,
        case.input_f32("key")?,
        case.input_f32("value")?,
    );
    let out_len = lq.checked_mul(e).ok_or("output size overflows")?;
    let mut scratch = vec![0.0f32; mha_scratch_len(lq, lk, e)];
    let weights = MhaWeights {
        in_proj_weight: &in_w,
        in_proj_bias: in_b.as_deref(),
        out_proj_weight: &out_w,
        out_proj_bias: out_b.as_deref(),
    };
    let inputs = [query, key, value];
    let out = match ty {
        ElemType::F32 => {
            let mut out = vec![0.0f32; out_len];
            mha(
                query,
                key,
                value,
                &weights,
                &mut out,
                shape,
                &params,
                &mut scratch,
            )
            .map_err(|e| kernel_error("mha", e))?;
            out
        }
        ElemType::F16 => {
            run_typed::<f16>(ty, inputs, &weights, out_len, shape, &params, &mut scratch)?
        }
        ElemType::Bf16 => {
            run_typed::<bf16>(ty, inputs, &weights, out_len, shape, &params, &mut scratch)?
        }
        ElemType::I8 => return Err("mha adapter runs f32, f16 and bf16 only".into()),
    };
    Ok(vec![("out".to_string(), out)])
}

/// `mha_typed` with the inputs, the weights (given in f32) and the output stored as `E`
/// (the storage of `ty`).
fn run_typed<E: Element>(
    ty: ElemType,
    [query, key, value]: [&[f32]; 3],
    w: &MhaWeights<'_, f32>,
    out_len: usize,
    shape: MhaShape,
    params: &SdpaParams<'_>,
    scratch: &mut [f32],
) -> Result<Vec<f32>, String> {
    let (query, key, value) = (narrow::<E>(query), narrow::<E>(key), narrow::<E>(value));
    let (in_w, out_w) = (
        narrow::<E>(w.in_proj_weight),
        narrow::<E>(w.out_proj_weight),
    );
    let (in_b, out_b) = (
        w.in_proj_bias.map(narrow::<E>),
        w.out_proj_bias.map(narrow::<E>),
    );
    let weights = MhaWeights {
        in_proj_weight: &in_w,
        in_proj_bias: in_b.as_deref(),
        out_proj_weight: &out_w,
        out_proj_bias: out_b.as_deref(),
    };
    let mut out = vec![E::default(); out_len];
    mha_typed(
        &query, &key, &value, &weights, &mut out, shape, params, scratch,
    )
    .map_err(|e| kernel_error(&format!("mha_typed::<{ty}>"), e))?;
    Ok(widen(&out))
}

/// `(rows, cols)` of a 2-D input.
fn rows_cols(case: &Case, name: &str) -> Result<(usize, usize), String> {
    match case.input(name)?.shape[..] {
        [rows, cols] => Ok((rows, cols)),
        ref other => Err(format!(
            "input `{name}` has shape {other:?}, [L, E] expected"
        )),
    }
}

/// An optional f32 input (a bias of a module built with `bias=False` is absent).
fn optional(case: &Case, name: &str) -> Result<Option<Vec<f32>>, String> {
    match case.optional_input(name) {
        Some(t) => t
            .f32s()
            .map(|v| Some(v.to_vec()))
            .map_err(|e| format!("input `{name}`: {e}")),
        None => Ok(None),
    }
}

/// `in_proj_weight`, or the separate `q/k/v_proj_weight` stacked into it.
fn in_proj_weight(case: &Case) -> Result<Vec<f32>, String> {
    if case.optional_input("in_proj_weight").is_some() {
        return Ok(case.input_f32("in_proj_weight")?.to_vec());
    }
    let mut stacked = Vec::new();
    for name in ["q_proj_weight", "k_proj_weight", "v_proj_weight"] {
        stacked.extend_from_slice(case.input_f32(name)?);
    }
    Ok(stacked)
}
