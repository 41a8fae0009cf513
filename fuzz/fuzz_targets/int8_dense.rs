//! `int8_dense` and its prepare step `Int8Dense::prepare`: shapes (zero, overflowing, past
//! `MAX_DENSE_IN`), per-channel or per-tensor multipliers of any representable value, `i32`
//! biases up to the extremes, every int8 value including -128.
//!
//! The kernel documents its integer arithmetic exactly (`y = saturate(round(sat_i32(x·w + b)
//! · m))`, one rounding half away from zero), so the reference here is that formula in
//! `i128`, written from the docs: outputs and the returned peak must agree exactly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use microattn::attention::int8::{int8_dense, Int8Dense, MAX_DENSE_IN};
use microattn::projection::LinearShape;
use microattn::quant::{FixedMultiplier, MAX_SHIFT, MIN_SHIFT};
use microattn::Error;
use microattn_fuzz::*;

fuzz_target!(|data: &[u8]| run(data));

/// `x · m` rounded half away from zero, for `m = multiplier · 2^(shift - 31)`.
fn mul_round_ref(x: i64, m: FixedMultiplier) -> i64 {
    let p = x as i128 * m.multiplier() as i128;
    let s = (31 - m.shift()) as u32;
    let r = if s == 0 {
        p.abs()
    } else {
        (p.abs() + (1i128 << (s - 1))) >> s
    };
    (if p < 0 { -r } else { r }) as i64
}

fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let wide = input.byte() == 0;
    let (rows, inputs, outputs) = if wide {
        // Past the documented limit (and just at it) without allocating that much.
        (1, MAX_DENSE_IN + input.below(2), 1)
    } else {
        (input.dim(4), input.dim(40), input.dim(6))
    };
    let shape = LinearShape::new(rows, inputs, outputs);
    let x_len = input.len(product(&[rows, inputs]));
    let w_len = input.len(product(&[outputs, inputs]));
    let y_len = input.len(product(&[rows, outputs]));
    let mut int8s = |n: usize| -> Vec<i8> { (0..n).map(|_| input.byte() as i8).collect() };
    let (x, w) = (int8s(x_len), int8s(w_len));
    let per_channel = input.bool();
    let n_mult = if per_channel {
        input.len(Some(outputs))
    } else {
        1
    };

    let layer_storage;
    let layer = if input.bool() {
        // Prepared from float scales.
        let w_scales: Vec<f32> = (0..n_mult).map(|_| scale(&mut input)).collect();
        let (x_scale, y_scale) = (scale(&mut input), scale(&mut input));
        let bias = if input.bool() {
            Some(input.values_for(Some(outputs)))
        } else {
            None
        };
        let bias_storage_len = input.len(Some(outputs));
        let mult_storage_len = input.len(Some(n_mult));
        let mut bias_storage = vec![0i32; bias_storage_len];
        let mut mult_storage = vec![FixedMultiplier::ONE; mult_storage_len];
        let mut exp = Expected::default();
        exp.check(
            n_mult != outputs && n_mult != 1,
            Error::LengthMismatch {
                expected: outputs,
                found: n_mult,
            },
        );
        let positive = |s: f32| s.is_finite() && s > 0.0;
        let scales_ok =
            positive(x_scale) && positive(y_scale) && w_scales.iter().all(|&s| positive(s));
        exp.check(!scales_ok, Error::InvalidScale);
        // Documented: finite positive scales whose ratio `x · w / y` is out of the
        // multiplier range (about 2^-64 to 2^31).
        let out_of_range = w_scales.iter().any(|&ws| {
            let r = x_scale as f64 * ws as f64 / y_scale as f64;
            !(r > 2f64.powi(-62) && r < 2f64.powi(30))
        });
        if out_of_range {
            exp.allow(Error::InvalidScale);
        }
        exp.check(
            mult_storage_len < n_mult,
            Error::ScratchTooSmall {
                needed: 0,
                found: 0,
            },
        );
        if let Some(b) = &bias {
            check_len(&mut exp, b.len(), Some(outputs));
            exp.check(
                bias_storage_len < outputs,
                Error::ScratchTooSmall {
                    needed: 0,
                    found: 0,
                },
            );
            // A bias whose integer form does not fit an i32, or a non-finite one.
            let too_big = b.iter().enumerate().any(|(c, &v)| {
                let ws = w_scales.get(c).or(w_scales.first()).copied().unwrap_or(1.0);
                let q = (v as f64 / (x_scale as f64 * ws as f64)).round();
                !(q.is_finite() && q.abs() <= i32::MAX as f64)
            });
            exp.check(too_big, Error::InvalidBias);
        }
        let prepared = Int8Dense::prepare(
            &w,
            outputs,
            &w_scales,
            x_scale,
            y_scale,
            bias.as_deref(),
            &mut bias_storage,
            &mut mult_storage,
        );
        exp.assert(&prepared, "Int8Dense::prepare");
        let Ok(layer) = prepared else { return };
        // Compare against the prepared integers, copied out of the borrowed storage.
        layer_storage = (layer.bias.map(<[i32]>::to_vec), layer.multipliers.to_vec());
        Int8Dense {
            weight: &w,
            bias: layer_storage.0.as_deref(),
            multipliers: &layer_storage.1,
        }
    } else {
        // Raw integers: every representable multiplier, biases up to the i32 extremes.
        let multipliers: Vec<FixedMultiplier> = (0..n_mult)
            .map(|_| {
                let m =
                    i32::from_le_bytes([input.byte(), input.byte(), input.byte(), input.byte()]);
                let m = if m == i32::MIN { 1 } else { m.abs().max(1) };
                let shift = MIN_SHIFT + input.below((MAX_SHIFT - MIN_SHIFT + 1) as usize) as i32;
                FixedMultiplier::from_raw(m, shift).expect("valid raw multiplier")
            })
            .collect();
        let bias = if input.bool() {
            let n = input.len(Some(outputs));
            Some(
                (0..n)
                    .map(|_| match input.byte() % 4 {
                        0 => i32::MAX - input.byte() as i32,
                        1 => i32::MIN + input.byte() as i32,
                        _ => i16::from_le_bytes([input.byte(), input.byte()]) as i32,
                    })
                    .collect::<Vec<i32>>(),
            )
        } else {
            None
        };
        layer_storage = (bias, multipliers);
        Int8Dense {
            weight: &w,
            bias: layer_storage.0.as_deref(),
            multipliers: &layer_storage.1,
        }
    };

    // Run.
    let mut exp = Expected::default();
    exp.check([rows, inputs, outputs].contains(&0), Error::ZeroDimension);
    exp.check(inputs > MAX_DENSE_IN, Error::InvalidParameter);
    check_len(&mut exp, x.len(), product(&[rows, inputs]));
    check_len(&mut exp, y_len, product(&[rows, outputs]));
    check_len(&mut exp, layer.weight.len(), product(&[outputs, inputs]));
    if let Some(b) = layer.bias {
        check_len(&mut exp, b.len(), Some(outputs));
    }
    exp.check(
        layer.multipliers.len() != outputs && layer.multipliers.len() != 1,
        Error::LengthMismatch {
            expected: outputs,
            found: layer.multipliers.len(),
        },
    );
    let mut y = vec![99i8; y_len];
    let result = int8_dense(&x, &layer, &mut y, shape);
    if !exp.assert(&result, "int8_dense") {
        assert!(y.iter().all(|&v| v == 99), "int8_dense wrote output on Err");
        return;
    }
    let peak = result.unwrap_or(0);

    // The documented integer arithmetic, in i128.
    let mut want_peak = 0i64;
    for r in 0..rows {
        for c in 0..outputs {
            let dot: i64 = (0..inputs)
                .map(|i| x[r * inputs + i] as i64 * w[c * inputs + i] as i64)
                .sum();
            let b = layer.bias.map_or(0, |b| b[c]) as i64;
            let acc = (dot + b).clamp(i32::MIN as i64, i32::MAX as i64);
            let m = layer.multipliers.get(c).unwrap_or(&layer.multipliers[0]);
            let v = mul_round_ref(acc, *m);
            want_peak = want_peak.max(v.abs());
            let want = v.clamp(-127, 127) as i8;
            assert_eq!(
                y[r * outputs + c],
                want,
                "int8_dense y[{r}, {c}]: acc {acc}, multiplier {m:?}"
            );
        }
    }
    assert_eq!(peak, want_peak, "int8_dense peak");
}

/// A quantization scale: ordinary, or (wild) anything.
fn scale(input: &mut Input<'_>) -> f32 {
    if input.wild() && input.byte() < 64 {
        input.value()
    } else {
        (input.byte() as f32 + 1.0) / 512.0
    }
}
