//! Dispatch from `(op, element type)` to the adapter that runs the library's kernel.
//!
//! Adding an op: create `ops/<op>.rs` with a `run(case, ty)` for f32/f16, add its `mod` line
//! and one match arm below. The i8 adapters live in `ops/int8/` (one file per op, behind
//! `mod int8;`) and get their own `(op, ElemType::I8)` arms. An `(op, type)` pair without an
//! arm fails with "not supported", as `FORMAT.md` requires.

use crate::case::{Case, ElemType};
use microattn::f16;

mod additive_attention;
/// i8 adapters: `ops/int8/mod.rs` + `ops/int8/<op>.rs`.
mod decoder_layer;
mod encoder_layer;
mod gat;
mod int8;
mod linear_attention;
mod luong_attention;
mod mha;
mod rope;
mod sdpa;
mod selective_scan;
mod sinusoidal_pe;
mod vit_embed;

/// An op's outputs, each named like the expected tensor it is compared with.
pub type Outputs = Vec<(String, Vec<f32>)>;

/// Runs `case` in element type `ty` through the library.
pub fn run(case: &Case, ty: ElemType) -> Result<Outputs, String> {
    match (case.op.as_str(), ty) {
        ("sdpa", ElemType::F32 | ElemType::F16) => sdpa::run(case, ty),
        ("mha", ElemType::F32 | ElemType::F16) => mha::run(case, ty),
        ("linear_attention", ElemType::F32 | ElemType::F16) => linear_attention::run(case, ty),
        ("additive_attention", ElemType::F32 | ElemType::F16) => additive_attention::run(case, ty),
        ("luong_attention", ElemType::F32 | ElemType::F16) => luong_attention::run(case, ty),
        ("rope", ElemType::F32 | ElemType::F16) => rope::run(case, ty),
        ("sinusoidal_pe", ElemType::F32 | ElemType::F16) => sinusoidal_pe::run(case, ty),
        ("gat", ElemType::F32 | ElemType::F16) => gat::run(case, ty),
        ("vit_embed", ElemType::F32 | ElemType::F16) => vit_embed::run(case, ty),
        ("selective_scan", ElemType::F32 | ElemType::F16) => selective_scan::run(case, ty),
        ("encoder_layer", ElemType::F32 | ElemType::F16) => encoder_layer::run(case, ty),
        ("decoder_layer", ElemType::F32 | ElemType::F16) => decoder_layer::run(case, ty),
        //
        // i8 arms, one per op:
        ("sdpa", ElemType::I8) => int8::sdpa::run(case),
        ("mha", ElemType::I8) => int8::mha::run(case),
        ("linear_attention", ElemType::I8) => int8::linear_attention::run(case),
        ("luong_attention", ElemType::I8) => int8::luong_attention::run(case),
        ("additive_attention", ElemType::I8) => int8::additive_attention::run(case),
        ("encoder_layer", ElemType::I8) => int8::encoder_layer::run(case),
        ("decoder_layer", ElemType::I8) => int8::decoder_layer::run(case),
        ("gat", ElemType::I8) => int8::gat::run(case),
        ("vit_embed", ElemType::I8) => int8::vit_embed::run(case),
        (op, ty) => Err(format!("op {op} not supported for type {ty}")),
    }
}

/// Rounds f32 values to f16 storage (round to nearest even), as the f16 runs store inputs.
pub fn to_f16(values: &[f32]) -> Vec<f16> {
    values.iter().map(|&x| f16::from_f32(x)).collect()
}

/// Widens f16 outputs to f32 for the comparison (exact).
pub fn widen_f16(values: &[f16]) -> Vec<f32> {
    values.iter().map(|x| x.to_f32()).collect()
}

/// Formats a library error with the call it came from.
pub fn kernel_error(call: &str, e: microattn::Error) -> String {
    format!("{call} returned Err({e:?}): {e}")
}
