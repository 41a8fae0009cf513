//! `rope`: `microattn::position::rope` on `x` [L,D] or [H,L,D], in f32, f16 and bf16 storage.
//!
//! Params `base` (default 10000), `pos_offset` (default 0), `layout` (`interleaved` or
//! `half`). Output `out`, same shape as `x`.

use super::{kernel_error, narrow, widen, Outputs};
use crate::case::{Case, ElemType};
use crate::params::{opt_f64, opt_str, opt_usize};
use microattn::position::{rope, RopeLayout, RopeParams};
use microattn::{bf16, f16, Element};

/// Runs the case in `ty` (f32, f16 or bf16).
pub fn run(case: &Case, ty: ElemType) -> Result<Outputs, String> {
    let x = case.input("x")?;
    let (heads, len, dim) = match x.shape[..] {
        [l, d] => (1, l, d),
        [h, l, d] => (h, l, d),
        ref s => return Err(format!("x has shape {s:?}: [L,D] or [H,L,D] expected")),
    };
    let p = &case.params;
    let layout = match opt_str(p, "layout")? {
        Some("interleaved") => RopeLayout::Interleaved,
        Some("half") => RopeLayout::Half,
        other => {
            return Err(format!(
                "param `layout`: {other:?} is not interleaved or half"
            ))
        }
    };
    let params = RopeParams {
        layout,
        base: opt_f64(p, "base")?.unwrap_or(10000.0) as f32,
        pos_offset: opt_usize(p, "pos_offset")?.unwrap_or(0),
    };
    let x = case.input_f32("x")?;
    let out = match ty {
        ElemType::F32 => {
            let mut y = x.to_vec();
            rope(&mut y, heads, len, dim, &params).map_err(|e| kernel_error("rope", e))?;
            y
        }
        ElemType::F16 => run_typed::<f16>(ty, x, [heads, len, dim], &params)?,
        ElemType::Bf16 => run_typed::<bf16>(ty, x, [heads, len, dim], &params)?,
        ElemType::I8 => return Err("rope adapter runs f32, f16 and bf16 only".into()),
    };
    Ok(vec![("out".to_string(), out)])
}

/// `rope` on `x` stored as `E` (the storage of `ty`).
fn run_typed<E: Element>(
    ty: ElemType,
    x: &[f32],
    [heads, len, dim]: [usize; 3],
    params: &RopeParams,
) -> Result<Vec<f32>, String> {
    let mut y = narrow::<E>(x);
    rope(&mut y, heads, len, dim, params).map_err(|e| kernel_error(&format!("rope::<{ty}>"), e))?;
    Ok(widen(&y))
}
