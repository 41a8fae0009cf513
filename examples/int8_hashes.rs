//! Host side of the on-target int8 check: runs every `sdpa` conformance case that has an
//! `i8` tolerance through `int8_sdpa` exactly as the QEMU conformance firmware does
//! (per-tensor max-abs quantization, output scale calibrated by a first run with the value
//! scale) and prints the FNV-1a hash of each int8 output:
//!
//! ```text
//! hash CASE 0x1234abcd
//! ```
//!
//! `scripts/qemu-test` compares these with the hashes the firmware prints on every emulated
//! core: the integer path must give the same bytes on every target and backend.
//!
//! ```text
//! cargo run --release --example int8_hashes [CASES_DIR]   # default tests/conformance/cases
//! ```

#[path = "../tests/conformance/case.rs"]
mod case;
mod common;
#[path = "../tests/conformance/params.rs"]
mod params;

use case::Case;
use microattn::attention::int8::{
    int8_sdpa, int8_sdpa_scratch_len, Int8Bias, Int8Scales, Int8SdpaParams,
};
use microattn::attention::AttentionShape;
use microattn::mask::Mask;
use microattn::quant::{quantize, QParams};
use params::{opt_f64, q_pos_offset, score, BiasSpec, MaskList};
use std::process::ExitCode;

fn main() -> ExitCode {
    common::hash_cases("int8_hashes", |case| {
        (case.op == "sdpa" && common::has_i8(case)).then(|| run(case))
    })
}

/// Per-tensor max-abs quantization (the firmware's `quantize_max_abs`).
fn quantize_max_abs(x: &[f32]) -> Result<(Vec<i8>, QParams), String> {
    let max_abs = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let params = QParams::from_max_abs(max_abs).map_err(|e| e.to_string())?;
    let mut q = vec![0i8; x.len()];
    quantize(x, params, &mut q).map_err(|e| e.to_string())?;
    Ok((q, params))
}

/// The int8 output of one case, computed as the firmware does.
fn run(case: &Case) -> Result<Vec<i8>, String> {
    let (qs, ks, vs) = (
        &case.input("q")?.shape,
        &case.input("k")?.shape,
        &case.input("v")?.shape,
    );
    let shape = match (qs.as_slice(), ks.as_slice(), vs.as_slice()) {
        (&[lq, d], &[lk, _], &[_, dv]) => AttentionShape::single(lq, lk, d, dv),
        (&[h, lq, d], &[hkv, lk, _], &[_, _, dv]) => {
            AttentionShape::multi_head(h, hkv, lq, lk, d, dv)
        }
        _ => return Err("q/k/v shapes not [L,D] or [H,L,D]".into()),
    };
    let (q, qp) = quantize_max_abs(case.input_f32("q")?)?;
    let (k, kp) = quantize_max_abs(case.input_f32("k")?)?;
    let (v, vp) = quantize_max_abs(case.input_f32("v")?)?;
    let p = &case.params;
    let masks = MaskList::parse(p, "mask")?;
    let terms = masks.terms();
    let mask = Mask::new(&terms).with_signed_offset(q_pos_offset(p)?);
    let score = score(p, "score")?;
    let scale = opt_f64(p, "scale")?.map(|s| s as f32);
    let bias_spec = BiasSpec::parse(p, "bias")?;
    let bias = bias_spec.bias();
    let mut storage = vec![0i32; Int8Bias::storage_len(&bias)];
    let mut thresholds = vec![0u32; Int8Bias::t5_threshold_count(&bias)];
    let bias = Int8Bias::from_bias(&bias, shape.heads, &mut storage, &mut thresholds)
        .map_err(|e| e.to_string())?;
    let mut out = vec![0i8; shape.heads * shape.lq * shape.dv];
    let mut scratch = vec![0i64; int8_sdpa_scratch_len(shape)];
    let mut run_with = |out_scale: f32, out: &mut [i8]| {
        let scales = Int8Scales {
            q: qp.scale(),
            k: kp.scale(),
            v: vp.scale(),
            out: out_scale,
        };
        let params = Int8SdpaParams::new(scales, shape.d, score, scale, mask, bias)
            .map_err(|e| e.to_string())?;
        int8_sdpa(&q, &k, &v, out, shape, &params, &mut scratch).map_err(|e| e.to_string())
    };
    run_with(vp.scale(), &mut out)?;
    let steps = out.iter().map(|&x| (x as i32).abs()).max().unwrap_or(0);
    if steps > 0 && steps < 127 {
        run_with(vp.scale() * (steps as f32 + 0.5) / 127.0, &mut out)?;
    }
    Ok(out)
}
