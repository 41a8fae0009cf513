//! The single-query int8 kernels: `int8_luong_attention` (dot, general, concat) and
//! `int8_additive_attention` (Bahdanau), with their prepare steps (`Int8LuongScore::dot` /
//! `general` / `concat`, `Int8AdditiveParams::new`) or raw multipliers of any value: shapes,
//! lengths, scales, masks, scratch and every int8 value including -128.
//!
//! Checks: no panic; `Err` exactly when a documented precondition fails (output untouched);
//! masked keys weigh 0, a fully masked query gives zeros; and with ordinary scales, the Q15
//! weights and the int8 context against an f64 softmax of the dequantized inputs, within a
//! bound derived from the documented fixed-point steps (Q20 logits, 31-bit multipliers,
//! the `tanh` error, Q16 weights) and the scales.
#![no_main]

use libfuzzer_sys::fuzz_target;
use microattn::attention::int8::{
    int8_additive_attention, int8_additive_scratch_len, int8_luong_attention,
    int8_luong_scratch_len, Int8AdditiveParams, Int8AdditiveScales, Int8LuongParams,
    Int8LuongScore, Int8TanhMultipliers, MAX_SINGLE_QUERY_D,
};
use microattn::attention::{AdditiveShape, LuongShape};
use microattn::mask::Mask;
use microattn::quant::{FixedMultiplier, MAX_SHIFT, MIN_SHIFT};
use microattn::Error;
use microattn_fuzz::*;

fuzz_target!(|data: &[u8]| run(data));

/// The scores the target builds.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Dot,
    General,
    Concat,
    Additive,
}

fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let kind = [Kind::Dot, Kind::General, Kind::Concat, Kind::Additive][input.below(4)];
    let (l, dv, a) = (input.dim(36), input.dim(3), input.dim(4));
    let (dq, dk) = if input.byte() == 0 {
        (MAX_SINGLE_QUERY_D + 1, 1) // past the limit
    } else {
        let dq = input.dim(5);
        let dk = if kind == Kind::Additive {
            input.dim(5)
        } else {
            dq
        };
        (dq, dk)
    };
    // Raw multipliers (any representable value) instead of prepared ones.
    let raw = input.wild() && input.bool();
    let per_row = input.bool();
    let n_w_scales = if per_row && a <= 64 { a } else { 1 };

    let w_len = match kind {
        Kind::Dot => Some(0),
        Kind::General => product(&[dq, dq]),
        Kind::Concat => product(&[a, 2, dq]),
        Kind::Additive => product(&[a, dq]),
    };
    let expected = [
        Some(dq),
        product(&[l, dk]),
        product(&[l, dv]),
        w_len,
        product(&[a, dk]), // Bahdanau's w_key
        Some(a),           // v (concat, Bahdanau)
        Some(dv),
        Some(l),
    ];
    let lens = expected.map(|n| input.len(n));
    let int8s = |input: &mut Input<'_>, n: usize| -> Vec<i8> {
        (0..n).map(|_| input.byte() as i8).collect()
    };
    let query = int8s(&mut input, lens[0]);
    let keys = int8s(&mut input, lens[1]);
    let values = int8s(&mut input, lens[2]);
    let w = int8s(&mut input, lens[3]);
    let w_key = if kind == Kind::Additive {
        int8s(&mut input, lens[4])
    } else {
        Vec::new()
    };
    let v = if matches!(kind, Kind::Concat | Kind::Additive) {
        int8s(&mut input, lens[5])
    } else {
        Vec::new()
    };
    let (context_len, weights_len) = (lens[6], lens[7]);
    let mask_spec = MaskSpec::generate(&mut input);
    let terms = mask_spec.terms();
    let mask = Mask::new(&terms).with_signed_offset(mask_spec.offset);

    // Scales: ordinary ones keep the reference comparison meaningful; wild ones may be
    // anything.
    let scale = |input: &mut Input<'_>| -> f32 {
        if input.wild() && input.byte() < 64 {
            input.value()
        } else {
            (input.byte() as f32 + 1.0) / 1024.0
        }
    };
    let (qs, ks, vs, ws, v_scale, cs) = (
        scale(&mut input),
        scale(&mut input),
        scale(&mut input),
        scale(&mut input),
        scale(&mut input),
        scale(&mut input),
    );
    let w_scales: Vec<f32> = (0..n_w_scales)
        .map(|i| if i == 0 { ws } else { scale(&mut input) })
        .collect();
    let w_key_scales: Vec<f32> = (0..n_w_scales).map(|_| scale(&mut input)).collect();
    let raw_multiplier = |input: &mut Input<'_>| -> FixedMultiplier {
        let m = i32::from_le_bytes([input.byte(), input.byte(), input.byte(), input.byte()]);
        let m = if m == i32::MIN { 1 } else { m.abs().max(1) };
        let shift = MIN_SHIFT + input.below((MAX_SHIFT - MIN_SHIFT + 1) as usize) as i32;
        FixedMultiplier::from_raw(m, shift).expect("valid raw multiplier")
    };
    let scratch_extra = input.len(Some(0)); // 0 most of the time, sometimes short by one
    let short_scratch = input.byte() < 8;

    let positive = |s: f32| s.is_finite() && s > 0.0;
    let mut storage = vec![FixedMultiplier::ONE; 2 * n_w_scales.max(1)];
    let raw_tanh: Vec<FixedMultiplier> = (0..2 * n_w_scales)
        .map(|_| raw_multiplier(&mut input))
        .collect();
    let raw_logit = raw_multiplier(&mut input);
    let raw_out = raw_multiplier(&mut input);

    // Prepare: the scales each prepare step reads (Luong's output multiplier is separate).
    let mut exp = Expected::default();
    if !raw {
        let mut scales = vec![qs, ks];
        match kind {
            Kind::Dot => {}
            Kind::General => scales.push(ws),
            Kind::Concat => {
                scales.push(v_scale);
                scales.extend(&w_scales);
            }
            Kind::Additive => {
                scales.extend([vs, cs, v_scale]);
                scales.extend(&w_scales);
                scales.extend(&w_key_scales);
            }
        }
        exp.check(!scales.into_iter().all(positive), Error::InvalidScale);
        exp.check(
            n_w_scales == 0 && matches!(kind, Kind::Concat | Kind::Additive),
            Error::ZeroDimension,
        );
        if input.wild() {
            // Finite positive scales whose products or ratios leave the multiplier range.
            exp.allow(Error::InvalidScale);
        }
    }
    let out_multiplier = if raw {
        Ok(raw_out)
    } else if positive(vs) && positive(cs) {
        FixedMultiplier::from_real(vs as f64 / cs as f64)
    } else {
        Err(Error::InvalidScale)
    };
    let luong_score = match kind {
        _ if raw => match kind {
            Kind::Dot => Ok(Int8LuongScore::Dot { logit: raw_logit }),
            Kind::General => Ok(Int8LuongScore::General {
                w: &w,
                logit: raw_logit,
            }),
            _ => Ok(Int8LuongScore::Concat {
                w: &w,
                v: &v,
                tanh: Int8TanhMultipliers {
                    query: &raw_tanh[..n_w_scales],
                    key: &raw_tanh[n_w_scales..],
                },
                logit: raw_logit,
            }),
        },
        Kind::Dot => Int8LuongScore::dot(qs, ks),
        Kind::General => Int8LuongScore::general(&w, qs, ws, ks),
        Kind::Concat => Int8LuongScore::concat(&w, &v, qs, ks, &w_scales, v_scale, &mut storage),
        Kind::Additive => Err(Error::InvalidParameter), // unused
    };

    let mut context = vec![99i8; context_len];
    let mut weights = vec![-1i16; weights_len];
    let result;
    let mut run_exp = Expected::default();
    if kind == Kind::Additive {
        let params = if raw {
            Ok(Int8AdditiveParams {
                w_query: &w,
                w_key: &w_key,
                v: &v,
                tanh: Int8TanhMultipliers {
                    query: &raw_tanh[..n_w_scales],
                    key: &raw_tanh[n_w_scales..],
                },
                logit: raw_logit,
                out: raw_out,
                mask,
            })
        } else {
            let scales = Int8AdditiveScales {
                query: qs,
                keys: ks,
                values: vs,
                w_query: &w_scales,
                w_key: &w_key_scales,
                v: v_scale,
                context: cs,
            };
            Int8AdditiveParams::new(&w, &w_key, &v, scales, mask, &mut storage)
        };
        exp.assert(&params, "Int8AdditiveParams::new");
        let Ok(params) = params else { return };
        let shape = AdditiveShape { l, dq, dk, dv, a };
        let needed = int8_additive_scratch_len(shape);
        let mut scratch = vec![0i64; scratch_len(needed, scratch_extra, short_scratch)];
        expect_shape(&mut run_exp, [l, dq, dv], &lens, &expected, kind);
        run_exp.check(a == 0 || dk == 0, Error::ZeroDimension);
        run_exp.check(
            dq.max(dk).max(a) > MAX_SINGLE_QUERY_D,
            Error::InvalidParameter,
        );
        run_exp.check(
            scratch.len() < needed,
            Error::ScratchTooSmall {
                needed: 0,
                found: 0,
            },
        );
        run_exp.check(!mask_spec.is_valid(), Error::InvalidMask);
        if raw || input.wild() {
            run_exp.allow(Error::InvalidScale); // multipliers that could overflow
        }
        result = int8_additive_attention(
            &query,
            &keys,
            &values,
            shape,
            &params,
            &mut context,
            &mut weights,
            &mut scratch,
        );
    } else {
        let score = luong_score;
        let out = out_multiplier;
        exp.assert(&score, "Int8LuongScore");
        let (Ok(score), Ok(out)) = (score, out) else {
            return;
        };
        let params = Int8LuongParams { score, out, mask };
        let shape = LuongShape { l, d: dq, dv };
        let needed = int8_luong_scratch_len(shape, &params.score);
        let mut scratch = vec![0i64; scratch_len(needed, scratch_extra, short_scratch)];
        let mut expected = expected;
        if kind == Kind::Concat {
            // The hidden size is `v.len()`: `w` must be `[v.len(), 2d]`, the tanh
            // multipliers one or `v.len()` long.
            expected[3] = product(&[v.len(), 2, dq]);
            run_exp.check(
                n_w_scales != 1 && n_w_scales != v.len(),
                Error::LengthMismatch {
                    expected: 0,
                    found: 0,
                },
            );
        }
        expect_shape(&mut run_exp, [l, dq, dv], &lens, &expected, kind);
        run_exp.check(kind == Kind::Concat && v.is_empty(), Error::ZeroDimension);
        run_exp.check(
            dq > MAX_SINGLE_QUERY_D || (kind == Kind::Concat && v.len() > MAX_SINGLE_QUERY_D),
            Error::InvalidParameter,
        );
        run_exp.check(
            scratch.len() < needed,
            Error::ScratchTooSmall {
                needed: 0,
                found: 0,
            },
        );
        run_exp.check(!mask_spec.is_valid(), Error::InvalidMask);
        if raw || input.wild() {
            run_exp.allow(Error::InvalidScale);
        }
        result = int8_luong_attention(
            &query,
            &keys,
            &values,
            shape,
            &params,
            &mut context,
            &mut weights,
            &mut scratch,
        );
    }
    if !run_exp.assert(&result, &format!("{kind:?}")) {
        assert!(
            context.iter().all(|&x| x == 99) && weights.iter().all(|&x| x == -1),
            "{kind:?} wrote output on Err"
        );
        return;
    }
    assert!(
        context.iter().all(|&x| x != -128),
        "{kind:?}: context outside [-127, 127]"
    );
    assert!(
        weights.iter().all(|&x| x >= 0),
        "{kind:?}: negative weight {weights:?}"
    );

    // Masked keys weigh 0; fully masked queries give zeros.
    let allowed: Vec<bool> = (0..l).map(|j| mask_spec.allows(0, j)).collect();
    for (j, &ok) in allowed.iter().enumerate() {
        if !ok {
            assert_eq!(weights[j], 0, "{kind:?}: masked key {j} has weight");
        }
    }
    if !allowed.contains(&true) {
        assert!(
            context.iter().all(|&x| x == 0),
            "{kind:?}: fully masked context {context:?}"
        );
        return;
    }
    if raw || input.wild() || mask_spec.offset.unsigned_abs() >= 1 << 20 {
        return;
    }

    // The f64 reference on the dequantized inputs.
    let deq = |x: &[i8], s: f32| x.iter().map(|&a| a as f64 * s as f64).collect::<Vec<f64>>();
    let (q, kf, vf) = (deq(&query, qs), deq(&keys, ks), deq(&values, vs));
    let logit_of = |j: usize| -> (f64, f64) {
        let k = &kf[j * dk..][..dk];
        match kind {
            Kind::Dot => {
                let s: f64 = q.iter().zip(k).map(|(a, b)| a * b).sum();
                (s, 2f64.powi(-19) + 2f64.powi(-29) * s.abs())
            }
            Kind::General => {
                let mut s = 0.0;
                for i in 0..dq {
                    for (jj, kk) in k.iter().enumerate() {
                        s += q[i] * w[i * dq + jj] as f64 * ws as f64 * kk;
                    }
                }
                (s, 2f64.powi(-19) + 2f64.powi(-29) * s.abs())
            }
            Kind::Concat | Kind::Additive => {
                let (mut s, mut vsum) = (0.0, 0.0);
                for (u, &va) in v.iter().enumerate() {
                    let (qw, kw): (Vec<f64>, Vec<f64>) = if kind == Kind::Concat {
                        let row = &w[u * 2 * dq..][..2 * dq];
                        (
                            row[..dq].iter().map(|&x| x as f64).collect(),
                            row[dq..].iter().map(|&x| x as f64).collect(),
                        )
                    } else {
                        (
                            w[u * dq..][..dq].iter().map(|&x| x as f64).collect(),
                            w_key[u * dk..][..dk].iter().map(|&x| x as f64).collect(),
                        )
                    };
                    let (sq, sk) = if kind == Kind::Concat {
                        let s = *w_scales.get(u).unwrap_or(&w_scales[0]) as f64;
                        (s, s)
                    } else {
                        (
                            *w_scales.get(u).unwrap_or(&w_scales[0]) as f64,
                            *w_key_scales.get(u).unwrap_or(&w_key_scales[0]) as f64,
                        )
                    };
                    let x: f64 = sq * qw.iter().zip(&q).map(|(a, b)| a * b).sum::<f64>()
                        + sk * kw.iter().zip(k).map(|(a, b)| a * b).sum::<f64>();
                    s += va as f64 * v_scale as f64 * x.tanh();
                    vsum += (va as f64 * v_scale as f64).abs();
                }
                // Q20 halves (tanh' <= 1), tanh within 5e-7 and its Q30 rounding, the
                // Q20 logit and the 31-bit multipliers.
                (s, vsum * 2e-6 + 2f64.powi(-19) + 2f64.powi(-29) * s.abs())
            }
        }
    };
    let keyed: Vec<(usize, f64, f64)> = (0..l)
        .filter(|&j| allowed[j])
        .map(|j| {
            let (s, e) = logit_of(j);
            (j, s, e)
        })
        .collect();
    let rows: Vec<(f64, f64, &[f64])> = keyed
        .iter()
        .map(|&(j, s, e)| (s, e, &vf[j * dv..][..dv]))
        .collect();
    let r = attend_f64(&rows, dv);
    let vmax = vf.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    for (c, &got) in context.iter().enumerate() {
        let want = (r.out[c] / cs as f64).clamp(-127.0, 127.0);
        // Half an output step, the logit errors (r.tol) and Q16 weights (2^-16 per key).
        let tol = 1.0 + (r.tol + (l as f64 + 4.0) * vmax / 16384.0) / cs as f64;
        assert!(
            (got as f64 - want).abs() <= tol,
            "{kind:?} context[{c}]: got {got}, reference {want:.3}, tolerance {tol:.3}"
        );
    }
    let max = keyed.iter().map(|k| k.1).fold(f64::NEG_INFINITY, f64::max);
    let total: f64 = keyed.iter().map(|k| (k.1 - max).exp()).sum();
    let delta = keyed.iter().map(|k| k.2).fold(0.0, f64::max);
    for &(j, s, _) in &keyed {
        let want = (s - max).exp() / total;
        let growth = ((s - max + 2.0 * delta).exp() / total - want).max(0.0);
        let tol = growth + (l as f64 + 8.0) / 32768.0;
        let got = weights[j] as f64 / 32768.0;
        assert!(
            (got - want).abs() <= tol,
            "{kind:?} weight {j}: got {got}, reference {want}, tolerance {tol}"
        );
    }
}

/// Scratch of `needed` elements (plus a few, or one short).
fn scratch_len(needed: usize, extra: usize, short: bool) -> usize {
    if needed > 1 << 20 {
        return extra; // overflowing requests: whatever the fuzzer gave
    }
    if short {
        needed.saturating_sub(1)
    } else {
        needed + extra
    }
}

/// Shape and length preconditions shared by both kernels.
fn expect_shape(
    exp: &mut Expected,
    dims: [usize; 3],
    lens: &[usize; 8],
    expected: &[Option<usize>; 8],
    kind: Kind,
) {
    exp.check(dims.contains(&0), Error::ZeroDimension);
    for (i, (&found, &want)) in lens.iter().zip(expected).enumerate() {
        let used = match i {
            3 => kind != Kind::Dot,
            4 => kind == Kind::Additive,
            5 => kind == Kind::Additive, // Luong concat: v.len() is the hidden size
            _ => true,
        };
        if used {
            check_len(exp, found, want);
        }
    }
}
