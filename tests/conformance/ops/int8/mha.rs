//! `mha` in i8: `microattn::attention::int8::int8_mha` with int8 weights.
//!
//! Inputs are quantized per tensor (max-abs), `in_proj_weight` and `out_proj.weight` per row
//! (output channel); biases go into the accumulators as `i32`. The scales of the stages
//! (projected `Q`, `K`, `V`, attention output, output) are calibrated by running the int8
//! kernel: a first run with scales that cannot saturate (each projection's worst case),
//! then a few runs that set every stage's scale from the peak the kernel reports
//! ([`Int8MhaStats`]), as on-device calibration would.

use super::{quantize_max_abs, quantize_rows};
use crate::case::Case;
use crate::ops::{kernel_error, Outputs};
use crate::params::{opt_f64, q_pos_offset, req_usize, score, BiasSpec, MaskList};
use microattn::attention::int8::{
    int8_mha, int8_mha_acc_len, int8_mha_scratch_len, Int8Bias, Int8Dense, Int8MhaParams,
    Int8MhaStats, Int8Scales, Int8SdpaParams,
};
use microattn::mask::Mask;
use microattn::mha::MhaShape;
use microattn::quant::FixedMultiplier;

/// Output scales of the five stages.
#[derive(Clone, Copy, Debug)]
struct Stages {
    q: f32,
    k: f32,
    v: f32,
    attn: f32,
    out: f32,
}

/// Runs the case in i8.
pub fn run(case: &Case) -> Result<Outputs, String> {
    let dims = |name: &str| match case.input(name).map(|t| &t.shape[..]) {
        Ok(&[rows, cols]) => Ok((rows, cols)),
        Ok(other) => Err(format!(
            "input `{name}` has shape {other:?}, [L, E] expected"
        )),
        Err(e) => Err(e),
    };
    let ((lq, e), (lk, ek), (lv, ev)) = (dims("query")?, dims("key")?, dims("value")?);
    if ek != e || ev != e || lv != lk {
        return Err("key and value must have the query's width and equal length".into());
    }
    let heads = req_usize(&case.params, "num_heads")?;
    let shape = MhaShape::new(lq, lk, e, heads);
    let hd = shape
        .head_dim()
        .map_err(|err| kernel_error("MhaShape", err))?;

    let (query, query_p) = quantize_max_abs(case.input_f32("query")?)?;
    let (key, key_p) = quantize_max_abs(case.input_f32("key")?)?;
    let (value, value_p) = quantize_max_abs(case.input_f32("value")?)?;
    let in_w_f32 = if case.optional_input("in_proj_weight").is_some() {
        case.input_f32("in_proj_weight")?.to_vec()
    } else {
        let mut stacked = Vec::new();
        for name in ["q_proj_weight", "k_proj_weight", "v_proj_weight"] {
            stacked.extend_from_slice(case.input_f32(name)?);
        }
        stacked
    };
    let out_w_f32 = case.input_f32("out_proj.weight")?;
    let (in_w, in_scales) = quantize_rows(&in_w_f32, 3 * e)?;
    let (out_w, out_scales) = quantize_rows(out_w_f32, e)?;
    let in_b = match case.optional_input("in_proj_bias") {
        Some(t) => Some(t.f32s()?.to_vec()),
        None => None,
    };
    let out_b = match case.optional_input("out_proj.bias") {
        Some(t) => Some(t.f32s()?.to_vec()),
        None => None,
    };

    let p = &case.params;
    let masks = MaskList::parse(p, "mask")?;
    let terms = masks.terms();
    let mask = Mask::new(&terms).with_signed_offset(q_pos_offset(p)?);
    let score = score(p, "score")?;
    let logit_scale = opt_f64(p, "scale")?.map(|s| s as f32);
    let bias_spec = BiasSpec::parse(p, "bias")?;
    let f32_bias = bias_spec.bias();
    let mut bias_storage = vec![0i32; Int8Bias::storage_len(&f32_bias)];
    let mut thresholds = vec![0u32; Int8Bias::t5_threshold_count(&f32_bias)];
    let attn_bias = Int8Bias::from_bias(&f32_bias, heads, &mut bias_storage, &mut thresholds)
        .map_err(|err| kernel_error("Int8Bias::from_bias", err))?;

    // Worst-case magnitude of each projection: Σ|w| · max|x| + |b| per output channel.
    let worst = |w: &[f32], b: Option<&[f32]>, x_max: f32, row0: usize| -> f32 {
        (0..e)
            .map(|c| {
                let row = &w[(row0 + c) * e..][..e];
                let bias = b.map_or(0.0, |b| b[row0 + c].abs());
                row.iter().map(|x| x.abs()).sum::<f32>() * x_max + bias
            })
            .fold(0.0, f32::max)
            .max(f32::MIN_POSITIVE)
            / 127.0
    };
    let max_of = |p: microattn::quant::QParams| p.scale() * 127.0;
    let mut stages = Stages {
        q: worst(&in_w_f32, in_b.as_deref(), max_of(query_p), 0),
        k: worst(&in_w_f32, in_b.as_deref(), max_of(key_p), e),
        v: worst(&in_w_f32, in_b.as_deref(), max_of(value_p), 2 * e),
        attn: 0.0,
        out: 0.0,
    };
    stages.attn = stages.v;
    stages.out = worst(out_w_f32, out_b.as_deref(), stages.attn * 127.0, 0);

    let mut scratch = vec![0i8; int8_mha_scratch_len(lq, lk, e)];
    let mut acc = vec![0i64; int8_mha_acc_len(e, heads)];
    let mut out = vec![0i8; lq * e];
    let mut run_once = |s: Stages, out: &mut [i8]| -> Result<Int8MhaStats, String> {
        let mut biases = vec![0i32; 4 * e];
        let mut mults = vec![FixedMultiplier::ONE; 4 * e];
        let (b_q, rest) = biases.split_at_mut(e);
        let (b_k, rest) = rest.split_at_mut(e);
        let (b_v, b_o) = rest.split_at_mut(e);
        let (m_q, rest) = mults.split_at_mut(e);
        let (m_k, rest) = rest.split_at_mut(e);
        let (m_v, m_o) = rest.split_at_mut(e);
        let part = |i: usize| in_b.as_deref().map(|b| &b[i * e..][..e]);
        let weights = |i: usize| &in_w[i * e * e..][..e * e];
        let scales = |i: usize| &in_scales[i * e..][..e];
        let err = |err| kernel_error("Int8Dense::prepare", err);
        let q_proj = Int8Dense::prepare(
            weights(0),
            e,
            scales(0),
            query_p.scale(),
            s.q,
            part(0),
            b_q,
            m_q,
        )
        .map_err(err)?;
        let k_proj = Int8Dense::prepare(
            weights(1),
            e,
            scales(1),
            key_p.scale(),
            s.k,
            part(1),
            b_k,
            m_k,
        )
        .map_err(err)?;
        let v_proj = Int8Dense::prepare(
            weights(2),
            e,
            scales(2),
            value_p.scale(),
            s.v,
            part(2),
            b_v,
            m_v,
        )
        .map_err(err)?;
        let out_proj = Int8Dense::prepare(
            &out_w,
            e,
            &out_scales,
            s.attn,
            s.out,
            out_b.as_deref(),
            b_o,
            m_o,
        )
        .map_err(err)?;
        let scales = Int8Scales {
            q: s.q,
            k: s.k,
            v: s.v,
            out: s.attn,
        };
        let attention = Int8SdpaParams::new(scales, hd, score, logit_scale, mask, attn_bias)
            .map_err(|err| kernel_error("Int8SdpaParams::new", err))?;
        let params = Int8MhaParams {
            q_proj,
            k_proj,
            v_proj,
            out_proj,
            attention,
        };
        let mut stats = Int8MhaStats::default();
        int8_mha(
            &query,
            &key,
            &value,
            &params,
            out,
            shape,
            &mut scratch,
            &mut acc,
            Some(&mut stats),
        )
        .map_err(|err| kernel_error("int8_mha", err))?;
        Ok(stats)
    };

    // Each run's peaks set the next run's scales (peak + 1 steps mapped to 127).
    let refine = |scale: f32, peak: i64| {
        if peak > 0 {
            scale * (peak as f32 + 1.0) / 127.0
        } else {
            scale
        }
    };
    for _ in 0..3 {
        let st = run_once(stages, &mut out)?;
        stages = Stages {
            q: refine(stages.q, st.q),
            k: refine(stages.k, st.k),
            v: refine(stages.v, st.v),
            attn: refine(stages.attn, st.attention),
            out: refine(stages.out, st.out),
        };
    }
    run_once(stages, &mut out)?;
    let out = out.iter().map(|&x| x as f32 * stages.out).collect();
    Ok(vec![("out".to_string(), out)])
}
