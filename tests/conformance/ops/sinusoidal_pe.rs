//! `sinusoidal_pe`: `microattn::position::sinusoidal_table` in f32, f16 and bf16 storage.
//!
//! No inputs; params `length`, `dim`, `pos_offset` (default 0), `base` (default 10000).
//! Output `pe` [length, dim].

use super::{kernel_error, widen, Outputs};
use crate::case::{Case, ElemType};
use crate::params::{opt_f64, opt_usize, req_usize};
use microattn::position::sinusoidal_table;
use microattn::{bf16, f16, Element};

/// Runs the case in `ty` (f32, f16 or bf16).
pub fn run(case: &Case, ty: ElemType) -> Result<Outputs, String> {
    let p = &case.params;
    let len = req_usize(p, "length")?;
    let dim = req_usize(p, "dim")?;
    let pos_offset = opt_usize(p, "pos_offset")?.unwrap_or(0);
    let base = opt_f64(p, "base")?.unwrap_or(10000.0) as f32;
    let n = len.checked_mul(dim).ok_or("table size overflows")?;
    let pe = match ty {
        ElemType::F32 => {
            let mut pe = vec![0.0f32; n];
            sinusoidal_table(&mut pe, len, dim, pos_offset, base)
                .map_err(|e| kernel_error("sinusoidal_table", e))?;
            pe
        }
        ElemType::F16 => run_typed::<f16>(ty, [len, dim, pos_offset], base)?,
        ElemType::Bf16 => run_typed::<bf16>(ty, [len, dim, pos_offset], base)?,
        ElemType::I8 => return Err("sinusoidal_pe adapter runs f32, f16 and bf16 only".into()),
    };
    Ok(vec![("pe".to_string(), pe)])
}

/// `sinusoidal_table` written as `E` (the storage of `ty`).
fn run_typed<E: Element>(
    ty: ElemType,
    [len, dim, pos_offset]: [usize; 3],
    base: f32,
) -> Result<Vec<f32>, String> {
    let n = len.checked_mul(dim).ok_or("table size overflows")?;
    let mut pe = vec![E::default(); n];
    sinusoidal_table(&mut pe, len, dim, pos_offset, base)
        .map_err(|e| kernel_error(&format!("sinusoidal_table::<{ty}>"), e))?;
    Ok(widen(&pe))
}
