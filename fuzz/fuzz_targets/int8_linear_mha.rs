//! `int8_linear_attention` (with `Int8LinearAttentionParams::new` or raw multipliers) and
//! `int8_mha`: shapes, GQA heads, causal with mismatched lengths, scales, eps, scratch and
//! every int8 value including -128.
//!
//! Checks: no panic; `Err` exactly when a documented precondition fails (output untouched).
//! Linear attention with ordinary scales: the int8 output against the f64 formula
//! `φ(q)ᵀ S / (φ(q)·z + eps)` on the dequantized inputs, within a bound derived from the
//! documented Q16 feature map, the 2^-20 contraction and the scales. `int8_mha` documents
//! its stages (int8 projections, `int8_sdpa` over the heads, output projection): its bytes
//! and stage peaks must equal that composition of the public kernels exactly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use microattn::attention::int8::{
    int8_dense, int8_linear_attention, int8_linear_attention_scratch_len, int8_mha,
    int8_mha_acc_len, int8_mha_scratch_len, int8_sdpa, Int8Bias, Int8Dense, Int8EluFeature,
    Int8LinearAttentionParams, Int8MhaParams, Int8MhaStats, Int8Scales, Int8SdpaParams,
    MAX_LINEAR_D,
};
use microattn::attention::{AttentionShape, Bias, Score};
use microattn::mask::Mask;
use microattn::mha::MhaShape;
use microattn::projection::LinearShape;
use microattn::quant::{FixedMultiplier, MAX_SHIFT, MIN_SHIFT};
use microattn::Error;
use microattn_fuzz::*;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    if input.bool() {
        linear(input);
    } else {
        mha(input);
    }
});

fn int8s(input: &mut Input<'_>, n: usize) -> Vec<i8> {
    (0..n).map(|_| input.byte() as i8).collect()
}

fn raw_multiplier(input: &mut Input<'_>) -> FixedMultiplier {
    let m = i32::from_le_bytes([input.byte(), input.byte(), input.byte(), input.byte()]);
    let m = if m == i32::MIN { 1 } else { m.abs().max(1) };
    let shift = MIN_SHIFT + input.below((MAX_SHIFT - MIN_SHIFT + 1) as usize) as i32;
    FixedMultiplier::from_raw(m, shift).expect("valid raw multiplier")
}

/// A quantization scale: ordinary (up to 1/16, so features stay in a range where the
/// reference comparison is tight), or (wild) anything.
fn scale(input: &mut Input<'_>) -> f32 {
    if input.wild() && input.byte() < 64 {
        input.value()
    } else {
        (input.byte() as f32 + 1.0) / 4096.0
    }
}

fn linear(mut input: Input<'_>) {
    let mut dims = Dims::generate(&mut input);
    if input.byte() == 0 {
        dims.d = MAX_LINEAR_D + 1; // past the limit
    }
    let causal = input.bool();
    let lens = dims.lengths().map(|n| input.len(n));
    let (q, k, v) = (
        int8s(&mut input, lens[0]),
        int8s(&mut input, lens[1]),
        int8s(&mut input, lens[2]),
    );
    let (qs, ks, vs, os) = (
        scale(&mut input),
        scale(&mut input),
        scale(&mut input),
        scale(&mut input),
    );
    let eps = if input.wild() && input.bool() {
        input.value()
    } else {
        input.byte() as f32 / 256.0
    };
    let raw = input.wild() && input.bool();
    let needed = int8_linear_attention_scratch_len(dims.shape());
    let scratch_len = if needed > 1 << 16 {
        input.byte() as usize
    } else if input.byte() < 8 {
        needed.saturating_sub(1)
    } else {
        needed
    };

    // Prepare.
    let params = if raw {
        Ok(Int8LinearAttentionParams {
            causal,
            query: Int8EluFeature {
                positive: raw_multiplier(&mut input),
                negative: raw_multiplier(&mut input),
            },
            key: Int8EluFeature {
                positive: raw_multiplier(&mut input),
                negative: raw_multiplier(&mut input),
            },
            eps_q32: i64::from_le_bytes([0, 0, input.byte(), input.byte(), 0, 0, 0, 0]),
            out: raw_multiplier(&mut input),
        })
    } else {
        let mut exp = Expected::default();
        let positive = |s: f32| s.is_finite() && s > 0.0;
        exp.check(
            ![qs, ks, vs, os].into_iter().all(positive),
            Error::InvalidScale,
        );
        exp.check(
            !(eps.is_finite() && (0.0..=(1u64 << 30) as f32).contains(&eps)),
            Error::InvalidScale,
        );
        exp.check(
            [qs, ks].iter().any(|&s| 1.0 + 128.0 * s as f64 > 65536.0),
            Error::InvalidScale,
        );
        if input.wild() {
            exp.allow(Error::InvalidScale); // ratios out of the multiplier range
        }
        let p = Int8LinearAttentionParams::new(qs, ks, vs, os, causal, eps);
        exp.assert(&p, "Int8LinearAttentionParams::new");
        p
    };
    let Ok(params) = params else { return };

    // Run.
    let mut exp = Expected::default();
    dims.expect(&mut exp, lens);
    exp.check(causal && dims.lq != dims.lk, Error::InvalidParameter);
    exp.check(dims.d > MAX_LINEAR_D, Error::InvalidParameter);
    exp.check(
        scratch_len < needed,
        Error::ScratchTooSmall {
            needed: 0,
            found: 0,
        },
    );
    if raw {
        exp.allow(Error::InvalidScale); // multipliers that could overflow
    }
    let mut out = vec![99i8; lens[3]];
    let mut scratch = vec![0i64; scratch_len];
    let result = int8_linear_attention(&q, &k, &v, &mut out, dims.shape(), &params, &mut scratch);
    if !exp.assert(&result, "int8_linear_attention") {
        assert!(
            out.iter().all(|&x| x == 99),
            "int8_linear_attention wrote output on Err"
        );
        return;
    }
    assert!(
        out.iter().all(|&x| x != -128),
        "int8_linear_attention: output outside [-127, 127]"
    );
    if raw || input.wild() {
        return;
    }

    // f64 reference on the dequantized inputs.
    let Dims {
        heads,
        kv_heads,
        lq,
        lk,
        d,
        dv,
    } = dims;
    let phi = |x: i8, s: f32| {
        let x = x as f64 * s as f64;
        if x > 0.0 {
            1.0 + x
        } else {
            x.exp()
        }
    };
    let group = heads / kv_heads;
    for h in 0..heads {
        let kvh = h / group;
        for i in 0..lq {
            let pq: Vec<f64> = q[(h * lq + i) * d..][..d]
                .iter()
                .map(|&x| phi(x, qs))
                .collect();
            let last = if causal { i + 1 } else { lk };
            let (mut num, mut den) = (vec![0.0f64; dv], 0.0f64);
            let (mut err, mut vmax) = (0.0f64, 0.0f64);
            for j in 0..last {
                let pk: Vec<f64> = k[(kvh * lk + j) * d..][..d]
                    .iter()
                    .map(|&x| phi(x, ks))
                    .collect();
                let a: f64 = pq.iter().zip(&pk).map(|(x, y)| x * y).sum();
                // Q16 features (2^-15 each, generously), the 24- and 20-bit contraction.
                let da: f64 = pq
                    .iter()
                    .zip(&pk)
                    .map(|(x, y)| (x + y + 1.0) * 2f64.powi(-15))
                    .sum::<f64>()
                    + a * 2f64.powi(-18);
                err += da;
                den += a;
                for c in 0..dv {
                    let vc = v[(kvh * lk + j) * dv + c] as f64 * vs as f64;
                    num[c] += a * vc;
                    vmax = vmax.max(vc.abs());
                }
            }
            let den = den + eps as f64;
            for c in 0..dv {
                let got = out[(h * lq + i) * dv + c] as f64;
                let want = (num[c] / den / os as f64).clamp(-127.0, 127.0);
                let tol = if den > 0.0 {
                    1.0 + 3.0 * vmax * err / den / os as f64
                } else {
                    f64::INFINITY
                };
                assert!(
                    (got - want).abs() <= tol,
                    "int8_linear_attention [{h}, {i}, {c}]: got {got}, reference {want:.3}, tolerance {tol:.3}"
                );
            }
        }
    }
}

fn mha(mut input: Input<'_>) {
    let (lq, lk, heads) = (input.dim(4), input.dim(6), input.dim(3));
    let embed = if input.bool() {
        heads.saturating_mul(input.dim(3)) // usually divisible
    } else {
        input.dim(8)
    };
    let shape = MhaShape::new(lq, lk, embed, heads);
    let e = embed;
    let lens = [
        product(&[lq, e]),
        product(&[lk, e]),
        product(&[lk, e]),
        product(&[lq, e]),
    ]
    .map(|n| input.len(n));
    let (query, key, value) = (
        int8s(&mut input, lens[0]),
        int8s(&mut input, lens[1]),
        int8s(&mut input, lens[2]),
    );
    // Four projections: weights [E, E], optional i32 bias, per-channel or one multiplier.
    let mut layers = Vec::new();
    for _ in 0..4 {
        let n = input.len(product(&[e, e]));
        let w = int8s(&mut input, n);
        let bias: Option<Vec<i32>> = input.bool().then(|| {
            let n = input.len(Some(e));
            (0..n)
                .map(|_| i16::from_le_bytes([input.byte(), input.byte()]) as i32)
                .collect()
        });
        let n_mult = if input.bool() { input.len(Some(e)) } else { 1 };
        let mults: Vec<FixedMultiplier> = (0..n_mult)
            .map(|_| {
                if input.wild() {
                    raw_multiplier(&mut input)
                } else {
                    FixedMultiplier::from_real((input.byte() as f64 + 1.0) / 2048.0)
                        .expect("ordinary multiplier")
                }
            })
            .collect();
        layers.push((w, bias, mults));
    }
    let dense = |i: usize| {
        let (w, b, m): &(Vec<i8>, Option<Vec<i32>>, Vec<FixedMultiplier>) = &layers[i];
        Int8Dense {
            weight: w,
            bias: b.as_deref(),
            multipliers: m,
        }
    };
    let score = [Score::Dot, Score::Cosine, Score::NegSqL2, Score::NegL1][input.below(4)];
    let mask_spec = MaskSpec::generate(&mut input);
    let terms = mask_spec.terms();
    let mask = Mask::new(&terms).with_signed_offset(mask_spec.offset);
    let s = |input: &mut Input<'_>| (input.byte() as f32 + 1.0) / 256.0;
    let scales = Int8Scales {
        q: s(&mut input),
        k: s(&mut input),
        v: s(&mut input),
        out: s(&mut input),
    };
    let hd = embed.checked_div(heads).unwrap_or(0);
    let Ok(bias) = Int8Bias::from_bias(&Bias::None, heads, &mut [], &mut []) else {
        panic!("Int8Bias::from_bias(None) failed");
    };
    let Ok(attention) = Int8SdpaParams::new(scales, hd.max(1), score, None, mask, bias) else {
        return; // (Int8SdpaParams::new is fuzzed by int8_sdpa)
    };
    let params = Int8MhaParams {
        q_proj: dense(0),
        k_proj: dense(1),
        v_proj: dense(2),
        out_proj: dense(3),
        attention,
    };
    let scratch_needed = int8_mha_scratch_len(lq, lk, e);
    let acc_needed = int8_mha_acc_len(e, heads);
    let short = input.byte();
    let scratch_len = match short {
        _ if scratch_needed > 1 << 16 => 8,
        0..=3 if scratch_needed > 0 => scratch_needed - 1,
        _ => scratch_needed,
    };
    let acc_len = match short {
        _ if acc_needed > 1 << 16 => 8,
        4..=7 if acc_needed > 0 => acc_needed - 1,
        _ => acc_needed,
    };

    let mut exp = Expected::default();
    exp.check([lq, lk, embed, heads].contains(&0), Error::ZeroDimension);
    exp.check(
        heads != 0 && embed != 0 && embed % heads != 0,
        Error::HeadsMismatch,
    );
    for (found, want) in lens.iter().zip([
        product(&[lq, e]),
        product(&[lk, e]),
        product(&[lk, e]),
        product(&[lq, e]),
    ]) {
        check_len(&mut exp, *found, want);
    }
    for i in 0..4 {
        let layer = dense(i);
        check_len(&mut exp, layer.weight.len(), product(&[e, e]));
        if let Some(b) = layer.bias {
            check_len(&mut exp, b.len(), Some(e));
        }
        exp.check(
            layer.multipliers.len() != e && layer.multipliers.len() != 1,
            Error::LengthMismatch {
                expected: 0,
                found: 0,
            },
        );
    }
    exp.check(e > 1 << 16, Error::InvalidParameter);
    exp.check(
        scratch_len < scratch_needed || acc_len < acc_needed,
        Error::ScratchTooSmall {
            needed: 0,
            found: 0,
        },
    );
    exp.check(!mask_spec.is_valid(), Error::InvalidMask);
    exp.allow(Error::InvalidScale); // attention multipliers that could overflow for this d
    let mut out = vec![99i8; lens[3]];
    let mut scratch = vec![0i8; scratch_len];
    let mut acc = vec![0i64; acc_len];
    let mut stats = Int8MhaStats::default();
    let result = int8_mha(
        &query,
        &key,
        &value,
        &params,
        &mut out,
        shape,
        &mut scratch,
        &mut acc,
        Some(&mut stats),
    );
    if !exp.assert(&result, "int8_mha") {
        assert!(out.iter().all(|&x| x == 99), "int8_mha wrote output on Err");
        return;
    }

    // The documented composition: project (int8_dense), split heads, int8_sdpa, concat,
    // project.
    let project = |x: &[i8], rows: usize, layer: &Int8Dense<'_>| -> (Vec<i8>, i64) {
        let mut y = vec![0i8; rows * e];
        let peak = int8_dense(x, layer, &mut y, LinearShape::new(rows, e, e)).expect("dense");
        (y, peak)
    };
    let head_major = |x: &[i8], rows: usize| -> Vec<i8> {
        let mut y = Vec::with_capacity(rows * e);
        for h in 0..heads {
            for r in 0..rows {
                y.extend_from_slice(&x[r * e + h * hd..][..hd]);
            }
        }
        y
    };
    let (pq, peak_q) = project(&query, lq, &params.q_proj);
    let (pk, peak_k) = project(&key, lk, &params.k_proj);
    let (pv, peak_v) = project(&value, lk, &params.v_proj);
    let mut attn = vec![0i8; lq * e];
    let mut acc2 = vec![0i64; hd];
    int8_sdpa(
        &head_major(&pq, lq),
        &head_major(&pk, lk),
        &head_major(&pv, lk),
        &mut attn,
        AttentionShape::multi_head(heads, heads, lq, lk, hd, hd),
        &params.attention,
        &mut acc2,
    )
    .expect("int8_sdpa on the projected heads");
    let peak_attn = attn.iter().map(|&x| (x as i64).abs()).max().unwrap_or(0);
    let mut concat = vec![0i8; lq * e];
    for h in 0..heads {
        for r in 0..lq {
            concat[r * e + h * hd..][..hd].copy_from_slice(&attn[(h * lq + r) * hd..][..hd]);
        }
    }
    let (want, peak_out) = project(&concat, lq, &params.out_proj);
    assert_eq!(out, want, "int8_mha output differs from its stages");
    assert_eq!(
        stats,
        Int8MhaStats {
            q: peak_q,
            k: peak_k,
            v: peak_v,
            attention: peak_attn,
            out: peak_out,
        },
        "int8_mha stage peaks"
    );
}
