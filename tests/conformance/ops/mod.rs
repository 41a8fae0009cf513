//! Dispatch from `(op, element type)` to the adapter that runs the library's kernel.
//!
//! Adding an op: create `ops/<op>.rs` with a `run(case, ty)` for f32/f16/bf16 (one generic
//! function over `microattn::Element` serves f16 and bf16), add its `mod` line and one match
//! arm below. The i8 adapters live in `ops/int8/` (one file per op, behind
//! `mod int8;`) and get their own `(op, ElemType::I8)` arms. An `(op, type)` pair without an
//! arm fails with "not supported", as `FORMAT.md` requires.

use crate::case::{Case, ElemType};
use microattn::Element;

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
        // f32, f16 and bf16 (`ty.is_float()`), one per op:
        ("sdpa", _) if ty.is_float() => sdpa::run(case, ty),
        ("mha", _) if ty.is_float() => mha::run(case, ty),
        ("linear_attention", _) if ty.is_float() => linear_attention::run(case, ty),
        ("additive_attention", _) if ty.is_float() => additive_attention::run(case, ty),
        ("luong_attention", _) if ty.is_float() => luong_attention::run(case, ty),
        ("rope", _) if ty.is_float() => rope::run(case, ty),
        ("sinusoidal_pe", _) if ty.is_float() => sinusoidal_pe::run(case, ty),
        ("gat", _) if ty.is_float() => gat::run(case, ty),
        ("vit_embed", _) if ty.is_float() => vit_embed::run(case, ty),
        ("selective_scan", _) if ty.is_float() => selective_scan::run(case, ty),
        ("encoder_layer", _) if ty.is_float() => encoder_layer::run(case, ty),
        ("decoder_layer", _) if ty.is_float() => decoder_layer::run(case, ty),
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

/// Rounds f32 values to storage type `E` (round to nearest even), as the f16 and bf16 runs
/// store inputs and weights.
pub fn narrow<E: Element>(values: &[f32]) -> Vec<E> {
    values.iter().map(|&x| E::from_f32(x)).collect()
}

/// Widens outputs stored as `E` to f32 for the comparison (exact).
pub fn widen<E: Element>(values: &[E]) -> Vec<f32> {
    values.iter().map(|&x| x.to_f32()).collect()
}

/// Formats a library error with the call it came from.
pub fn kernel_error(call: &str, e: microattn::Error) -> String {
    format!("{call} returned Err({e:?}): {e}")
}
