//! Int8 path: quantization and requantization (boundary cases against exact rational
//! arithmetic), calibration, and the int8 SDPA kernel against an f64 reference computed from
//! the dequantized inputs, written from the definitions in `FORMAT.md`.

use microattn::attention::int8::{
    int8_sdpa, int8_sdpa_fixed, int8_sdpa_heads_fixed, int8_sdpa_scratch_len, Int8Bias, Int8Logits,
    Int8Scales, Int8SdpaParams, MAX_D, MAX_LK,
};
use microattn::attention::{t5_bucket, AttentionShape, Bias, Score};
use microattn::mask::{Mask, MaskTerm};
use microattn::quant::{
    dequantize, dequantize_per_channel, quantize, quantize_per_channel, requantize,
    FixedMultiplier, QParams,
};
use microattn::Error;

// ---------------------------------------------------------------------------------------
// Deterministic random numbers (SplitMix64) and helpers.

struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
    fn normals(&mut self, n: usize, sigma: f64) -> Vec<f32> {
        (0..n).map(|_| (self.normal() * sigma) as f32).collect()
    }
    fn i32_in(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as i64
    }
}

fn rel_l2(got: &[f64], want: &[f64]) -> f64 {
    let num: f64 = got.iter().zip(want).map(|(a, b)| (a - b) * (a - b)).sum();
    let den: f64 = want.iter().map(|b| b * b).sum();
    num.sqrt() / den.sqrt().max(1e-12)
}

// ---------------------------------------------------------------------------------------
// Requantization.

/// `x · m / 2^n` rounded half away from zero, by floor division and an explicit remainder
/// comparison (a different formulation from the library's magnitude-and-add-half).
fn exact_round(x: i128, m: i128, n: u32) -> i128 {
    let num = x * m;
    let den = 1i128 << n;
    let q = num.div_euclid(den);
    let r = num.rem_euclid(den);
    match (2 * r).cmp(&den) {
        std::cmp::Ordering::Greater => q + 1,
        std::cmp::Ordering::Less => q,
        // A tie: floor is already away from zero for negative numbers.
        std::cmp::Ordering::Equal => {
            if num > 0 {
                q + 1
            } else {
                q
            }
        }
    }
}

fn reference_mul(x: i32, m: FixedMultiplier) -> i128 {
    exact_round(x as i128, m.multiplier() as i128, (31 - m.shift()) as u32)
}

#[test]
fn from_real_is_normalized_and_close() {
    assert_eq!(
        FixedMultiplier::from_real(0.5).unwrap(),
        FixedMultiplier::from_raw(1 << 30, 0).unwrap()
    );
    assert_eq!(
        FixedMultiplier::from_real(1.0).unwrap(),
        FixedMultiplier::from_raw(1 << 30, 1).unwrap()
    );
    assert_eq!(
        FixedMultiplier::from_real(0.75 * 8.0).unwrap(),
        FixedMultiplier::from_raw(3 << 29, 3).unwrap()
    );
    let mut rng = Rng(7);
    for _ in 0..10_000 {
        let real = (rng.uniform() * 53.0 - 33.0).exp2();
        let m = FixedMultiplier::from_real(real).unwrap();
        assert!((m.to_f64() - real).abs() <= real * 2f64.powi(-31), "{real}");
        assert!(m.multiplier() >= 1 << 30);
    }
    // Just below 2^31 rounds up to 2^31, which is out of range.
    assert!(FixedMultiplier::from_real(2f64.powi(31) * (1.0 - 1e-12)).is_err());
    assert!(FixedMultiplier::from_real(2f64.powi(31) * (1.0 - 1e-6)).is_ok());
    // Below 2^-33 the multiplier loses significant bits but stays within 2^-64 absolute.
    let tiny = 3.0 * 2f64.powi(-40);
    let m = FixedMultiplier::from_real(tiny).unwrap();
    assert_eq!((m.multiplier(), m.shift()), (3 << 23, -32));
    assert_eq!(
        FixedMultiplier::from_real(2f64.powi(-66)),
        Err(Error::InvalidScale)
    );
}

#[test]
fn bad_multipliers_are_rejected() {
    for real in [
        0.0,
        -0.0,
        -1.0,
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        2f64.powi(31),
    ] {
        assert_eq!(
            FixedMultiplier::from_real(real),
            Err(Error::InvalidScale),
            "{real}"
        );
    }
    for (m, s) in [
        (0, 0),
        (-5, 0),
        (1 << 30, 32),
        (1 << 30, -33),
        (i32::MIN, 0),
    ] {
        assert_eq!(FixedMultiplier::from_raw(m, s), Err(Error::InvalidScale));
    }
    assert!(FixedMultiplier::from_raw(1, -32).is_ok());
    assert!(FixedMultiplier::from_raw(i32::MAX, 31).is_ok());
}

#[test]
fn requantize_rounds_half_away_from_zero() {
    let half = FixedMultiplier::from_real(0.5).unwrap();
    let quarter = FixedMultiplier::from_real(0.25).unwrap();
    for (x, want) in [
        (1, 1),
        (-1, -1),
        (3, 2),
        (-3, -2),
        (2, 1),
        (0, 0),
        (5, 3),
        (-5, -3),
    ] {
        assert_eq!(requantize(x, half), want, "{x} * 0.5");
    }
    for (x, want) in [
        (5, 1),
        (-5, -1),
        (6, 2),
        (-6, -2),
        (7, 2),
        (-7, -2),
        (2, 1),
        (-2, -1),
    ] {
        assert_eq!(requantize(x, quarter), want, "{x} * 0.25");
    }
    // One above and below a tie.
    let m = FixedMultiplier::from_raw(3 << 28, -4).unwrap(); // 0.375 / 16 = 3/128
    assert_eq!(m.mul_round(64), 2); // 1.5
    assert_eq!(m.mul_round(63), 1); // 1.4765625
    assert_eq!(m.mul_round(65), 2);
    assert_eq!(m.mul_round(-64), -2);
}

#[test]
fn requantize_saturates_symmetrically() {
    let one = FixedMultiplier::from_real(1.0).unwrap();
    let half = FixedMultiplier::from_real(0.5).unwrap();
    assert_eq!(requantize(127, one), 127);
    assert_eq!(requantize(128, one), 127);
    assert_eq!(requantize(-127, one), -127);
    assert_eq!(requantize(-128, one), -127);
    assert_eq!(requantize(i32::MAX, one), 127);
    assert_eq!(requantize(i32::MIN, one), -127);
    assert_eq!(requantize(253, half), 127); // 126.5 → 127
    assert_eq!(requantize(255, half), 127); // 127.5 → 128 → 127
    assert_eq!(requantize(-255, half), -127);
    let big = FixedMultiplier::from_raw(i32::MAX, 31).unwrap();
    assert_eq!(requantize(1, big), 127);
    assert_eq!(requantize(-1, big), -127);
    assert_eq!(big.mul_round(i32::MIN), i32::MIN as i64 * i32::MAX as i64);
}

#[test]
fn mul_round_matches_exact_rational_rounding() {
    let mut rng = Rng(11);
    let special_x = [
        0,
        1,
        -1,
        i32::MAX,
        i32::MIN,
        i32::MIN + 1,
        1 << 30,
        -(1 << 30),
    ];
    let special_m = [1, 2, 3, 1 << 30, (1 << 30) + 1, i32::MAX];
    for shift in -32..=31 {
        for &x in &special_x {
            for &mult in &special_m {
                let m = FixedMultiplier::from_raw(mult, shift).unwrap();
                assert_eq!(
                    m.mul_round(x) as i128,
                    reference_mul(x, m),
                    "{x} {mult} {shift}"
                );
            }
        }
        for _ in 0..2000 {
            let x = rng.next_u64() as i32 >> rng.i32_in(0, 31);
            let mult = (rng.next_u64() as u32 >> 1).max(1) as i32;
            let m = FixedMultiplier::from_raw(mult, shift).unwrap();
            assert_eq!(
                m.mul_round(x) as i128,
                reference_mul(x, m),
                "{x} {mult} {shift}"
            );
        }
    }
    // Exact ties, both signs: with value 2^(shift-1) and x = (2t+1)·2^(-shift), the product
    // is (2t+1)/2, which rounds to t+1 in magnitude.
    for shift in -30..=0 {
        let m = FixedMultiplier::from_raw(1 << 30, shift).unwrap();
        for t in [0i64, 1, 2, 7] {
            let x = (2 * t + 1) << (-shift);
            if let Ok(x) = i32::try_from(x) {
                assert_eq!(m.mul_round(x), t + 1, "tie {x} at shift {shift}");
                assert_eq!(m.mul_round(-x), -(t + 1), "tie -{x} at shift {shift}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Quantization and calibration.

#[test]
fn qparams_reject_bad_scales_and_zero_points() {
    for s in [0.0, -0.0, -1.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        assert_eq!(QParams::new(s), Err(Error::InvalidScale), "{s}");
    }
    for m in [-1.0, f32::NAN, f32::INFINITY] {
        assert_eq!(QParams::from_max_abs(m), Err(Error::InvalidScale), "{m}");
    }
    assert_eq!(QParams::from_max_abs(0.0).unwrap().scale(), 1.0);
    assert_eq!(QParams::from_max_abs(1e-45), Err(Error::InvalidScale));
    assert_eq!(
        QParams::from_scale_zero_point(0.1, 3),
        Err(Error::InvalidParameter)
    );
    assert_eq!(
        QParams::from_scale_zero_point(0.1, 0).unwrap(),
        QParams::new(0.1).unwrap()
    );
    assert_eq!(
        QParams::from_scale_zero_point(0.0, 0),
        Err(Error::InvalidScale)
    );
}

#[test]
fn quantize_rounds_and_saturates() {
    let p = QParams::new(0.5).unwrap();
    for (x, want) in [
        (0.25f32, 1i8),
        (-0.25, -1),
        (0.24, 0),
        (0.75, 2),
        (-0.75, -2),
        (63.5, 127),
        (63.75, 127),
        (1e9, 127),
        (-1e9, -127),
        (f32::INFINITY, 127),
        (f32::NEG_INFINITY, -127),
        (f32::NAN, 0),
    ] {
        assert_eq!(p.quantize(x), want, "{x}");
    }
    assert_eq!(p.dequantize(-128), -64.0);
    let p = QParams::from_max_abs(2.54).unwrap();
    assert_eq!(p.quantize(2.54), 127);
    assert_eq!(p.quantize(-2.54), -127);

    let x = [0.1f32, -0.26, 3.0, -100.0];
    let mut q = [0i8; 4];
    quantize(&x, QParams::new(0.1).unwrap(), &mut q).unwrap();
    assert_eq!(q, [1, -3, 30, -127]);
    let mut back = [0.0f32; 4];
    dequantize(&q, QParams::new(0.1).unwrap(), &mut back).unwrap();
    assert!((back[2] - 3.0).abs() < 1e-6);
    assert!(matches!(
        quantize(&x, QParams::new(0.1).unwrap(), &mut [0i8; 3]),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(dequantize(&q, QParams::new(0.1).unwrap(), &mut [0.0; 5]).is_err());
}

#[test]
fn per_channel_quantization_round_trips() {
    let mut rng = Rng(3);
    let (rows, cols) = (6, 10);
    let mut w = rng.normals(rows * cols, 1.0);
    for (r, row) in w.chunks_mut(cols).enumerate() {
        for x in row {
            *x *= (r + 1) as f32 * 3.0; // very different channel ranges
        }
    }
    let scales: Vec<f32> = w
        .chunks(cols)
        .map(|row| row.iter().fold(0.0f32, |m, x| m.max(x.abs())) / 127.0)
        .collect();
    let mut q = vec![0i8; rows * cols];
    quantize_per_channel(&w, &scales, &mut q).unwrap();
    let mut back = vec![0.0f32; rows * cols];
    dequantize_per_channel(&q, &scales, &mut back).unwrap();
    for (r, (orig, deq)) in w.chunks(cols).zip(back.chunks(cols)).enumerate() {
        assert!(q[r * cols..][..cols].iter().any(|&x| x.abs() == 127));
        for (a, b) in orig.iter().zip(deq) {
            assert!((a - b).abs() <= scales[r] * 0.5001, "row {r}: {a} vs {b}");
        }
    }
    let mut bad = scales.clone();
    bad[2] = 0.0;
    assert_eq!(
        quantize_per_channel(&w, &bad, &mut q),
        Err(Error::InvalidScale)
    );
    bad[2] = f32::NAN;
    assert_eq!(
        dequantize_per_channel(&q, &bad, &mut back),
        Err(Error::InvalidScale)
    );
    assert!(quantize_per_channel(&w[1..], &scales, &mut q[1..]).is_err());
    assert_eq!(
        quantize_per_channel(&w, &[], &mut q),
        Err(Error::ZeroDimension)
    );
}

#[cfg(feature = "std")]
#[test]
fn calibration_helpers() {
    use microattn::quant::calibrate::{
        max_abs, per_channel_scales, percentile_abs, qparams_max_abs, qparams_percentile,
    };
    let x: Vec<f32> = (1..=100)
        .map(|i| if i % 2 == 0 { i as f32 } else { -(i as f32) })
        .collect();
    assert_eq!(max_abs(&x).unwrap(), 100.0);
    assert_eq!(percentile_abs(&x, 100.0).unwrap(), 100.0);
    assert_eq!(percentile_abs(&x, 99.0).unwrap(), 99.0);
    assert_eq!(percentile_abs(&x, 50.0).unwrap(), 50.0);
    assert_eq!(percentile_abs(&x, 0.5).unwrap(), 1.0);
    assert_eq!(qparams_max_abs(&x).unwrap().scale(), 100.0 / 127.0);
    assert_eq!(qparams_percentile(&x, 90.0).unwrap().scale(), 90.0 / 127.0);
    assert_eq!(max_abs(&[]), Err(Error::ZeroDimension));
    assert_eq!(max_abs(&[1.0, f32::NAN]), Err(Error::InvalidParameter));
    assert_eq!(percentile_abs(&x, 0.0), Err(Error::InvalidParameter));
    assert_eq!(percentile_abs(&x, 100.5), Err(Error::InvalidParameter));
    assert_eq!(qparams_max_abs(&[0.0; 4]).unwrap().scale(), 1.0);
    let w = [1.0f32, -2.0, 0.5, 0.25];
    let mut scales = [0.0f32; 2];
    per_channel_scales(&w, &mut scales).unwrap();
    assert_eq!(scales, [2.0 / 127.0, 0.5 / 127.0]);
    assert!(per_channel_scales(&w, &mut [0.0; 3]).is_err());
}

// ---------------------------------------------------------------------------------------
// Int8 SDPA against an f64 reference.

/// f64 attention from the definitions: every allowed key scored, softmax, weighted sum.
#[allow(clippy::too_many_arguments)]
fn reference_sdpa(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    shape: AttentionShape,
    score: Score,
    scale: f64,
    mask: &Mask<'_>,
    bias: &Bias<'_>,
) -> Vec<f64> {
    let AttentionShape {
        heads,
        kv_heads,
        lq,
        lk,
        d,
        dv,
    } = shape;
    let mut out = vec![0.0; heads * lq * dv];
    for h in 0..heads {
        let kvh = h / (heads / kv_heads);
        for i in 0..lq {
            let qi = &q[(h * lq + i) * d..][..d];
            let p = i as i64 + mask.q_pos_offset;
            let mut logits = Vec::new();
            for j in 0..lk {
                if !mask.allows(i, j) {
                    continue;
                }
                let kj = &k[(kvh * lk + j) * d..][..d];
                let dot: f64 = qi.iter().zip(kj).map(|(a, b)| a * b).sum();
                let s = match score {
                    Score::Dot => scale * dot,
                    Score::Cosine => {
                        let nq = qi.iter().map(|a| a * a).sum::<f64>().sqrt().max(1e-8);
                        let nk = kj.iter().map(|a| a * a).sum::<f64>().sqrt().max(1e-8);
                        scale * dot / (nq * nk)
                    }
                    Score::NegSqL2 => {
                        -scale
                            * qi.iter()
                                .zip(kj)
                                .map(|(a, b)| (a - b) * (a - b))
                                .sum::<f64>()
                    }
                    Score::NegL1 => {
                        -scale * qi.iter().zip(kj).map(|(a, b)| (a - b).abs()).sum::<f64>()
                    }
                };
                let b = match *bias {
                    Bias::None => 0.0,
                    Bias::Alibi { slopes } => -(slopes[h] as f64) * (p as f64 - j as f64).abs(),
                    Bias::T5 {
                        bidirectional,
                        num_buckets,
                        max_distance,
                        table,
                    } => {
                        let bucket =
                            t5_bucket(j as i64 - p, bidirectional, num_buckets, max_distance);
                        table[h * num_buckets + bucket] as f64
                    }
                };
                logits.push((j, s + b));
            }
            if logits.is_empty() {
                continue;
            }
            let m = logits
                .iter()
                .map(|&(_, s)| s)
                .fold(f64::NEG_INFINITY, f64::max);
            let total: f64 = logits.iter().map(|&(_, s)| (s - m).exp()).sum();
            let o = &mut out[(h * lq + i) * dv..][..dv];
            for &(j, s) in &logits {
                let w = (s - m).exp() / total;
                for (oc, vc) in o.iter_mut().zip(&v[(kvh * lk + j) * dv..][..dv]) {
                    *oc += w * vc;
                }
            }
        }
    }
    out
}

fn quantize_tensor(x: &[f32]) -> (Vec<i8>, QParams) {
    let p = QParams::from_max_abs(x.iter().fold(0.0f32, |m, v| m.max(v.abs()))).unwrap();
    let mut q = vec![0i8; x.len()];
    quantize(x, p, &mut q).unwrap();
    (q, p)
}

fn dequantize_f64(q: &[i8], p: QParams) -> Vec<f64> {
    q.iter().map(|&x| p.scale() as f64 * x as f64).collect()
}

/// What one comparison measured.
#[derive(Debug)]
struct Measured {
    /// Relative L2 error of the dequantized int8 output against the f64 reference on the
    /// dequantized inputs.
    rel_l2: f64,
    /// Largest difference, in output steps, from the reference rounded to the output grid.
    max_steps: i64,
    /// Fraction of outputs equal to the rounded reference.
    exact: f64,
}

struct Setup<'a> {
    shape: AttentionShape,
    score: Score,
    scale: Option<f32>,
    mask: Mask<'a>,
    bias: Bias<'a>,
    seed: u64,
    sigma: f64,
}

impl Setup<'_> {
    fn new(shape: AttentionShape) -> Self {
        Setup {
            shape,
            score: Score::Dot,
            scale: None,
            mask: Mask::NONE,
            bias: Bias::None,
            seed: 1,
            sigma: 1.0,
        }
    }

    fn inputs(&self) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let (ql, kl, vl, _) = self.shape.lengths().unwrap();
        let mut rng = Rng(self.seed);
        (
            rng.normals(ql, self.sigma),
            rng.normals(kl, self.sigma),
            rng.normals(vl, 1.0),
        )
    }

    /// Quantizes fresh random inputs, runs the int8 kernel with the output scale set to the
    /// reference's max-abs, and compares.
    fn measure(&self) -> Measured {
        let (q, k, v) = self.inputs();
        let ((qi, qp), (ki, kp), (vi, vp)) = (
            quantize_tensor(&q),
            quantize_tensor(&k),
            quantize_tensor(&v),
        );
        let d = self.shape.d;
        let scale = self.scale.map_or(1.0 / (d as f64).sqrt(), |s| s as f64);
        let reference = reference_sdpa(
            &dequantize_f64(&qi, qp),
            &dequantize_f64(&ki, kp),
            &dequantize_f64(&vi, vp),
            self.shape,
            self.score,
            scale,
            &self.mask,
            &self.bias,
        );
        let ref_max = reference.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        let out_scale = if ref_max > 0.0 { ref_max / 127.0 } else { 1.0 } as f32;
        let out = self.run_int8(
            &qi,
            &ki,
            &vi,
            [qp.scale(), kp.scale(), vp.scale(), out_scale],
        );
        let got: Vec<f64> = out.iter().map(|&x| x as f64 * out_scale as f64).collect();
        let mut max_steps = 0;
        let mut exact = 0;
        for (&o, &r) in out.iter().zip(&reference) {
            let steps = (o as i64 - (r / out_scale as f64).round() as i64).abs();
            max_steps = max_steps.max(steps);
            exact += (steps == 0) as usize;
        }
        Measured {
            rel_l2: rel_l2(&got, &reference),
            max_steps,
            exact: exact as f64 / out.len() as f64,
        }
    }

    fn run_int8(&self, q: &[i8], k: &[i8], v: &[i8], scales: [f32; 4]) -> Vec<i8> {
        let heads = self.shape.heads;
        let mut storage = vec![0i32; Int8Bias::storage_len(&self.bias)];
        let mut thresholds = vec![0u32; Int8Bias::t5_threshold_count(&self.bias)];
        let bias = Int8Bias::from_bias(&self.bias, heads, &mut storage, &mut thresholds).unwrap();
        let [qs, ks, vs, os] = scales;
        let scales = Int8Scales {
            q: qs,
            k: ks,
            v: vs,
            out: os,
        };
        let params = Int8SdpaParams::new(
            scales,
            self.shape.d,
            self.score,
            self.scale,
            self.mask,
            bias,
        )
        .unwrap();
        let mut out = vec![0i8; heads * self.shape.lq * self.shape.dv];
        let mut scratch = vec![0i64; int8_sdpa_scratch_len(self.shape)];
        int8_sdpa(q, k, v, &mut out, self.shape, &params, &mut scratch).unwrap();
        out
    }
}

fn check(name: &str, setup: &Setup<'_>, bound: f64) -> Measured {
    let m = setup.measure();
    println!(
        "{name:<28} rel_l2 {:.5}  max_steps {}  exact {:.3}",
        m.rel_l2, m.max_steps, m.exact
    );
    assert!(m.rel_l2 < bound, "{name}: {m:?}");
    // The integer softmax is far more precise than the int8 output grid: only outputs within
    // a hair of a rounding boundary may land on the neighbouring step.
    assert!(m.max_steps <= 1, "{name}: {m:?}");
    assert!(m.exact > 0.99, "{name}: {m:?}");
    m
}

const SQUARE: AttentionShape = AttentionShape::single(64, 64, 32, 32);

#[test]
fn dense_64x64x32_is_close_to_f64() {
    for seed in 1..=4 {
        let setup = Setup {
            seed,
            ..Setup::new(SQUARE)
        };
        check(&format!("dense seed {seed}"), &setup, 1.5e-2);
    }
}

#[test]
fn masks_are_close_to_f64() {
    let globals = [0usize, 17, 40];
    let random = [(3usize, 6usize), (5, 1), (10, 2)];
    let masks: [(&str, &[MaskTerm<'_>], usize); 7] = [
        ("causal", &[MaskTerm::Causal], 0),
        ("sliding", &[MaskTerm::Sliding { left: 8, right: 8 }], 0),
        (
            "causal window",
            &[MaskTerm::Causal, MaskTerm::Sliding { left: 6, right: 0 }],
            0,
        ),
        ("padding", &[MaskTerm::KeyPadding { valid: 40 }], 0),
        (
            "dilated",
            &[MaskTerm::Dilated {
                left: 4,
                right: 4,
                dilation: 3,
            }],
            0,
        ),
        (
            "global sliding",
            &[MaskTerm::GlobalSliding {
                left: 2,
                right: 2,
                global: &globals,
            }],
            0,
        ),
        (
            "block sparse",
            &[MaskTerm::BlockSparse {
                block: 4,
                window: 1,
                global: &[0],
                random: &random,
            }],
            0,
        ),
    ];
    for (name, terms, offset) in masks {
        let setup = Setup {
            mask: Mask::new(terms).with_offset(offset),
            ..Setup::new(SQUARE)
        };
        check(name, &setup, 1.5e-2);
    }
    // Decode steps against a cache: 4 queries at the end of 64 keys.
    let causal = [MaskTerm::Causal];
    let setup = Setup {
        mask: Mask::new(&causal).with_offset(60),
        ..Setup::new(AttentionShape::single(4, 64, 32, 32))
    };
    check("decode offset", &setup, 1.5e-2);
}

#[test]
fn heads_gqa_mqa_cross_are_close_to_f64() {
    let causal = [MaskTerm::Causal];
    for (name, shape) in [
        ("mha h4", AttentionShape::multi_head(4, 4, 32, 32, 16, 16)),
        (
            "gqa h4 kv2",
            AttentionShape::multi_head(4, 2, 32, 32, 16, 16),
        ),
        (
            "mqa h4 kv1",
            AttentionShape::multi_head(4, 1, 32, 48, 16, 8),
        ),
        ("cross 20x70 dv24", AttentionShape::single(20, 70, 16, 24)),
    ] {
        let setup = Setup {
            mask: Mask::new(&causal),
            ..Setup::new(shape)
        };
        check(name, &setup, 1.5e-2);
    }
}

#[test]
fn scores_and_biases_are_close_to_f64() {
    let shape = AttentionShape::multi_head(2, 2, 24, 40, 16, 16);
    for (name, score, scale) in [
        ("cosine", Score::Cosine, Some(5.0)),
        ("neg_sq_l2", Score::NegSqL2, Some(0.1)),
        ("neg_l1", Score::NegL1, Some(0.25)),
        ("dot scale 0.5", Score::Dot, Some(0.5)),
    ] {
        let setup = Setup {
            score,
            scale,
            ..Setup::new(shape)
        };
        check(name, &setup, 1.5e-2);
    }
    let slopes = [0.5f32, 0.0625];
    let causal = [MaskTerm::Causal];
    let setup = Setup {
        bias: Bias::Alibi { slopes: &slopes },
        mask: Mask::new(&causal),
        ..Setup::new(shape)
    };
    check("alibi", &setup, 1.5e-2);
    let mut rng = Rng(5);
    let table: Vec<f32> = rng.normals(2 * 16, 1.0);
    for bidirectional in [true, false] {
        let setup = Setup {
            bias: Bias::T5 {
                bidirectional,
                num_buckets: 16,
                max_distance: 32,
                table: &table,
            },
            ..Setup::new(shape)
        };
        check(&format!("t5 bidirectional {bidirectional}"), &setup, 1.5e-2);
    }
}

#[test]
fn sharp_and_flat_softmax_are_close_to_f64() {
    // Large logits (near one-hot rows) and tiny ones (near-uniform rows).
    for (name, sigma) in [("sharp", 6.0), ("flat", 0.05)] {
        let setup = Setup {
            sigma,
            ..Setup::new(SQUARE)
        };
        check(name, &setup, 1.5e-2);
    }
}

// ---------------------------------------------------------------------------------------
// Exact properties.

fn simple_params(d: usize) -> Int8SdpaParams<'static> {
    let scales = Int8Scales {
        q: 0.02,
        k: 0.02,
        v: 0.02,
        out: 0.01,
    };
    Int8SdpaParams::new(scales, d, Score::Dot, None, Mask::NONE, Int8Bias::None).unwrap()
}

fn random_i8(rng: &mut Rng, n: usize) -> Vec<i8> {
    (0..n).map(|_| rng.next_u64() as i8).collect()
}

#[test]
fn deterministic_and_tiers_agree() {
    let mut rng = Rng(9);
    let (q, k, v) = (
        random_i8(&mut rng, 4 * 8 * 8),
        random_i8(&mut rng, 2 * 40 * 8),
        random_i8(&mut rng, 2 * 40 * 4),
    );
    let shape = AttentionShape::multi_head(4, 2, 8, 40, 8, 4);
    let params = simple_params(8);
    let mut a = vec![0i8; 4 * 8 * 4];
    let mut b = vec![0i8; 4 * 8 * 4];
    let mut scratch = [0i64; 4];
    int8_sdpa(&q, &k, &v, &mut a, shape, &params, &mut scratch).unwrap();
    // Dirty scratch and output must not matter.
    scratch = [i64::MAX; 4];
    b.fill(99);
    int8_sdpa(&q, &k, &v, &mut b, shape, &params, &mut scratch).unwrap();
    assert_eq!(a, b);

    // Fixed tiers give the same bytes.
    let qf: [[[i8; 8]; 8]; 4] = core::array::from_fn(|h| {
        core::array::from_fn(|i| core::array::from_fn(|c| q[(h * 8 + i) * 8 + c]))
    });
    let kf: [[[i8; 8]; 40]; 2] = core::array::from_fn(|h| {
        core::array::from_fn(|j| core::array::from_fn(|c| k[(h * 40 + j) * 8 + c]))
    });
    let vf: [[[i8; 4]; 40]; 2] = core::array::from_fn(|h| {
        core::array::from_fn(|j| core::array::from_fn(|c| v[(h * 40 + j) * 4 + c]))
    });
    let mut of = [[[0i8; 4]; 8]; 4];
    int8_sdpa_heads_fixed(&qf, &kf, &vf, &mut of, &params).unwrap();
    assert_eq!(of.as_flattened().as_flattened(), &a[..]);

    // Each GQA head equals a single-head call on its KV head.
    for h in 0..4 {
        let kvh = h / 2;
        let mut single = [[0i8; 4]; 8];
        int8_sdpa_fixed(&qf[h], &kf[kvh], &vf[kvh], &mut single, &params).unwrap();
        assert_eq!(single.as_flattened(), &a[h * 32..][..32], "head {h}");
    }
}

#[test]
fn output_is_a_known_byte_sequence_of_the_math() {
    // Two keys with logits 0 and ln 3 (q·k·scale): weights 1/4 and 3/4, so the output is
    // v0/4 + 3 v1/4 exactly, requantized. Chosen so no rounding tie is involved.
    let ln3 = 3f64.ln();
    // q = [1], k = [0, 1], scale = ln3 with q_scale = k_scale = 1: logits 0 and ln 3.
    let scales = Int8Scales {
        q: 1.0,
        k: 1.0,
        v: 1.0,
        out: 1.0,
    };
    let params = Int8SdpaParams::new(
        scales,
        1,
        Score::Dot,
        Some(ln3 as f32),
        Mask::NONE,
        Int8Bias::None,
    )
    .unwrap();
    let v = [[100i8, -40, 8], [20, 120, -9]];
    let mut out = [[0i8; 3]];
    int8_sdpa_fixed(&[[1]], &[[0], [1]], &v, &mut out, &params).unwrap();
    // 100/4 + 60/4 = 40; -10 + 90 = 80; 2 - 6.75 = -4.75 → -5.
    assert_eq!(out, [[40, 80, -5]]);
}

#[test]
fn fully_masked_rows_are_zero() {
    let mut rng = Rng(4);
    let (q, k, v) = (
        random_i8(&mut rng, 6 * 8),
        random_i8(&mut rng, 8 * 8),
        random_i8(&mut rng, 8 * 8),
    );
    // Causal with padding to 3 keys and rows at positions 0..6: all rows see keys; use a
    // window that leaves rows 4 and 5 with none.
    let terms = [
        MaskTerm::KeyPadding { valid: 3 },
        MaskTerm::Sliding { left: 0, right: 0 },
    ];
    let params = Int8SdpaParams {
        mask: Mask::new(&terms),
        ..simple_params(8)
    };
    let mut out = vec![7i8; 6 * 8];
    let mut scratch = [0i64; 8];
    int8_sdpa(
        &q,
        &k,
        &v,
        &mut out,
        AttentionShape::single(6, 8, 8, 8),
        &params,
        &mut scratch,
    )
    .unwrap();
    for i in 3..6 {
        assert_eq!(&out[i * 8..][..8], &[0; 8], "row {i}");
    }
    // Row i sees only key i: output = v_i · v_scale / out_scale = 2 v_i (saturated).
    for i in 0..3 {
        for c in 0..8 {
            let want = (2 * v[i * 8 + c] as i32).clamp(-127, 127) as i8;
            assert_eq!(out[i * 8 + c], want);
        }
    }
}

#[test]
fn extreme_inputs_do_not_overflow() {
    // Largest d, all -128: q·k = 2^14 · d = 2^30.
    let d = MAX_D;
    let q = vec![-128i8; d];
    let k = vec![-128i8; 2 * d];
    let v = [-128i8, 127];
    let scales = Int8Scales {
        q: 1e-3,
        k: 1e-3,
        v: 1.0,
        out: 1.0,
    };
    let params =
        Int8SdpaParams::new(scales, d, Score::Dot, Some(1.0), Mask::NONE, Int8Bias::None).unwrap();
    let mut out = [0i8; 1];
    let mut scratch = [0i64; 1];
    let shape = AttentionShape::single(1, 2, d, 1);
    int8_sdpa(&q, &k, &v, &mut out, shape, &params, &mut scratch).unwrap();
    // Two equal keys: the mean of -128 and 127 = -0.5 → -1 (away from zero).
    assert_eq!(out, [-1]);

    // Huge logit differences: the second key wins outright.
    let mut k2 = k.clone();
    for x in &mut k2[..d] {
        *x = 127;
    }
    int8_sdpa(&q, &k2, &v, &mut out, shape, &params, &mut scratch).unwrap();
    assert_eq!(out, [127]);

    // A tiny output scale saturates instead of wrapping.
    let tiny_out = Int8SdpaParams::new(
        Int8Scales {
            out: 1e-6,
            ..scales
        },
        d,
        Score::Dot,
        Some(1.0),
        Mask::NONE,
        Int8Bias::None,
    )
    .unwrap();
    int8_sdpa(&q, &k, &v, &mut out, shape, &tiny_out, &mut scratch).unwrap();
    assert_eq!(out, [-127]);

    // Every score at the extremes, with biases, does not panic and stays in range.
    let slopes = [1000.0f32];
    let mut storage = [0i32; 1];
    let alibi =
        Int8Bias::from_bias(&Bias::Alibi { slopes: &slopes }, 1, &mut storage, &mut []).unwrap();
    for score in [Score::Dot, Score::Cosine, Score::NegSqL2, Score::NegL1] {
        let small = Int8Scales {
            q: 1e-4,
            k: 3e-4,
            v: 1.0,
            out: 1.0,
        };
        let params = Int8SdpaParams::new(small, 256, score, Some(1.0), Mask::NONE, alibi).unwrap();
        let q = vec![-128i8; 256];
        let k: Vec<i8> = (0..256 * 3)
            .map(|i| if i % 3 == 0 { 127 } else { -128 })
            .collect();
        let v = [5i8, -128, 127];
        let mut out = [0i8; 1];
        int8_sdpa(
            &q,
            &k,
            &v,
            &mut out,
            AttentionShape::single(1, 3, 256, 1),
            &params,
            &mut [0i64; 1],
        )
        .unwrap();
        // Key 0 (distance 0) dominates through the ALiBi slope of 1000.
        assert_eq!(out, [5], "{score:?}");
    }
}

#[test]
fn bad_calls_are_rejected() {
    let params = simple_params(4);
    let shape = AttentionShape::single(2, 3, 4, 5);
    let (q, k, v) = (vec![1i8; 8], vec![1i8; 12], vec![1i8; 15]);
    let mut out = vec![0i8; 10];
    let mut scratch = vec![0i64; 5];
    let call =
        |q: &[i8],
         k: &[i8],
         v: &[i8],
         out: &mut [i8],
         shape,
         params: &Int8SdpaParams<'_>,
         scratch: &mut [i64]| { int8_sdpa(q, k, v, out, shape, params, scratch) };
    assert!(call(&q, &k, &v, &mut out, shape, &params, &mut scratch).is_ok());
    assert!(matches!(
        call(&q[1..], &k, &v, &mut out, shape, &params, &mut scratch),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(
        call(&q, &k, &v[1..], &mut out, shape, &params, &mut scratch),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(
        call(&q, &k, &v, &mut out[1..], shape, &params, &mut scratch),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(
        call(&q, &k, &v, &mut out, shape, &params, &mut scratch[1..]),
        Err(Error::ScratchTooSmall {
            needed: 5,
            found: 4
        })
    ));
    assert_eq!(
        call(
            &[],
            &k,
            &v,
            &mut [],
            AttentionShape::single(0, 3, 4, 5),
            &params,
            &mut scratch
        ),
        Err(Error::ZeroDimension)
    );
    assert_eq!(
        call(
            &[1; 24],
            &k,
            &v,
            &mut [0; 30],
            AttentionShape::multi_head(3, 2, 2, 3, 4, 5),
            &params,
            &mut scratch
        ),
        Err(Error::HeadsMismatch)
    );
    let zero_dilation = [MaskTerm::Dilated {
        left: 1,
        right: 1,
        dilation: 0,
    }];
    let bad_mask = Int8SdpaParams {
        mask: Mask::new(&zero_dilation),
        ..params
    };
    assert_eq!(
        call(&q, &k, &v, &mut out, shape, &bad_mask, &mut scratch),
        Err(Error::InvalidMask)
    );
    let bad_bias = Int8SdpaParams {
        bias: Int8Bias::Alibi { slopes: &[1, 2] },
        ..params
    };
    assert_eq!(
        call(&q, &k, &v, &mut out, shape, &bad_bias, &mut scratch),
        Err(Error::InvalidBias)
    );
    let bad_t5 = Int8SdpaParams {
        bias: Int8Bias::T5 {
            bidirectional: true,
            num_buckets: 8,
            table: &[0; 8],
            thresholds: &[5, 3],
        },
        ..params
    };
    assert_eq!(
        call(&q, &k, &v, &mut out, shape, &bad_t5, &mut scratch),
        Err(Error::InvalidBias)
    );

    // Overflow limits.
    let big_d = AttentionShape::single(1, 1, MAX_D + 1, 1);
    let q_big = vec![0i8; MAX_D + 1];
    assert_eq!(
        call(
            &q_big,
            &q_big,
            &[0],
            &mut [0],
            big_d,
            &simple_params(4),
            &mut scratch
        ),
        Err(Error::InvalidParameter)
    );
    let big_lk = AttentionShape::single(1, MAX_LK + 1, 1, 1);
    let kv = vec![0i8; MAX_LK + 1];
    assert_eq!(
        call(
            &[0],
            &kv,
            &kv,
            &mut [0],
            big_lk,
            &simple_params(1),
            &mut scratch
        ),
        Err(Error::InvalidParameter)
    );
    // A logit multiplier that could overflow for this d.
    let huge = Int8SdpaParams {
        logits: Int8Logits::Dot {
            logit: FixedMultiplier::from_raw(i32::MAX, 31).unwrap(),
        },
        ..params
    };
    let full_d = AttentionShape::single(1, 1, MAX_D, 1);
    let q_full = vec![0i8; MAX_D];
    assert_eq!(
        call(
            &q_full,
            &q_full,
            &[0],
            &mut [0],
            full_d,
            &huge,
            &mut scratch
        ),
        Err(Error::InvalidScale)
    );
    // The same multiplier is fine where it cannot overflow.
    assert!(call(&q, &k, &v, &mut out, shape, &huge, &mut scratch).is_ok());
    let bad_l1 = Int8SdpaParams {
        logits: Int8Logits::NegL1 {
            q_weight: -1,
            k_weight: 5,
            logit: FixedMultiplier::from_raw(1 << 30, 0).unwrap(),
        },
        ..params
    };
    assert_eq!(
        call(&q, &k, &v, &mut out, shape, &bad_l1, &mut scratch),
        Err(Error::InvalidScale)
    );

    // Scales: zero, negative, non-finite.
    let good = Int8Scales {
        q: 0.1,
        k: 0.1,
        v: 0.1,
        out: 0.1,
    };
    for bad in [0.0f32, -0.1, f32::NAN, f32::INFINITY] {
        for which in 0..4 {
            let mut s = good;
            match which {
                0 => s.q = bad,
                1 => s.k = bad,
                2 => s.v = bad,
                _ => s.out = bad,
            }
            assert_eq!(
                Int8SdpaParams::new(s, 4, Score::Dot, None, Mask::NONE, Int8Bias::None),
                Err(Error::InvalidScale),
                "{which} = {bad}"
            );
        }
        assert_eq!(
            Int8SdpaParams::new(good, 4, Score::Dot, Some(bad), Mask::NONE, Int8Bias::None),
            Err(Error::InvalidScale)
        );
    }
}

#[test]
fn end_to_end_128x128x64_against_unquantized_inputs() {
    // What a user sees: float inputs quantized per tensor (max-abs), the int8 kernel with an
    // output scale calibrated by a first int8 run, dequantized, against f64 attention on the
    // original float inputs. CMSIS-NN's 8-bit probabilities give 4-13 % here.
    let shape = AttentionShape::single(128, 128, 64, 64);
    let causal = [MaskTerm::Causal];
    // Almost all of the error is the int8 rounding of q and k (logit errors grow with the
    // logit spread, sigma^2 here) and of the output; the kernel itself matches the rounded
    // f64 result on the dequantized inputs (tests above).
    for (name, sigma, terms, bound) in [
        ("sigma 0.5", 0.5, &[][..], 2e-2),
        ("sigma 1", 1.0, &[][..], 3e-2),
        ("sigma 1 causal", 1.0, &causal[..], 3e-2),
        ("sigma 1.5", 1.5, &[][..], 4e-2),
    ] {
        let setup = Setup {
            sigma,
            mask: Mask::new(terms),
            ..Setup::new(shape)
        };
        let (q, k, v) = setup.inputs();
        let ((qi, qp), (ki, kp), (vi, vp)) = (
            quantize_tensor(&q),
            quantize_tensor(&k),
            quantize_tensor(&v),
        );
        let widen = |x: &[f32]| x.iter().map(|&v| v as f64).collect::<Vec<_>>();
        let reference = reference_sdpa(
            &widen(&q),
            &widen(&k),
            &widen(&v),
            shape,
            Score::Dot,
            1.0 / 8.0,
            &setup.mask,
            &Bias::None,
        );
        let first = setup.run_int8(
            &qi,
            &ki,
            &vi,
            [qp.scale(), kp.scale(), vp.scale(), vp.scale()],
        );
        let steps = first.iter().map(|&x| (x as i32).abs()).max().unwrap();
        let out_scale = vp.scale() * (steps as f32 + 0.5) / 127.0;
        let out = setup.run_int8(
            &qi,
            &ki,
            &vi,
            [qp.scale(), kp.scale(), vp.scale(), out_scale],
        );
        let got: Vec<f64> = out.iter().map(|&x| x as f64 * out_scale as f64).collect();
        let err = rel_l2(&got, &reference);
        println!("end to end 128x128x64 {name:<16} rel_l2 {err:.5}");
        assert!(err < bound, "{name}: {err}");
    }
}

// ---------------------------------------------------------------------------------------
// Single-query forms: Luong and Bahdanau.

use microattn::attention::int8::{
    int8_additive_attention, int8_additive_scratch_len, int8_luong_attention,
    int8_luong_scratch_len, Int8AdditiveParams, Int8AdditiveScales, Int8LuongParams,
    Int8LuongScore,
};
use microattn::attention::{AdditiveShape, LuongShape};

/// Per-row max-abs quantization of a `[rows, cols]` matrix.
fn quantize_rows(w: &[f32], rows: usize) -> (Vec<i8>, Vec<f32>) {
    let cols = w.len() / rows;
    let scales: Vec<f32> = w
        .chunks(cols)
        .map(|r| r.iter().fold(0.0f32, |m, x| m.max(x.abs())) / 127.0)
        .collect();
    let mut q = vec![0i8; w.len()];
    quantize_per_channel(w, &scales, &mut q).unwrap();
    (q, scales)
}

fn dequantize_rows(q: &[i8], scales: &[f32]) -> Vec<f64> {
    let cols = q.len() / scales.len();
    q.iter()
        .enumerate()
        .map(|(i, &x)| scales[i / cols] as f64 * x as f64)
        .collect()
}

/// Softmax over the allowed scores and the weighted sum of `values` (`[l, dv]`), in f64.
fn reference_context(scores: &[Option<f64>], values: &[f64], dv: usize) -> (Vec<f64>, Vec<f64>) {
    let m = scores
        .iter()
        .flatten()
        .fold(f64::NEG_INFINITY, |a, &b| a.max(b));
    let e: Vec<f64> = scores
        .iter()
        .map(|s| s.map_or(0.0, |s| (s - m).exp()))
        .collect();
    let total: f64 = e.iter().sum();
    let weights: Vec<f64> = e
        .iter()
        .map(|x| if total > 0.0 { x / total } else { 0.0 })
        .collect();
    let mut context = vec![0.0; dv];
    for (j, w) in weights.iter().enumerate() {
        for (c, o) in context.iter_mut().enumerate() {
            *o += w * values[j * dv + c];
        }
    }
    (context, weights)
}

/// Compares an int8 context (at `scale`) and Q15 weights with the f64 results.
fn check_single(
    name: &str,
    context: &[i8],
    scale: f32,
    weights: &[i16],
    want: &(Vec<f64>, Vec<f64>),
) {
    let got: Vec<f64> = context.iter().map(|&x| x as f64 * scale as f64).collect();
    let err = rel_l2(&got, &want.0);
    let steps = context
        .iter()
        .zip(&want.0)
        .map(|(&o, &r)| (o as i64 - (r / scale as f64).round() as i64).abs())
        .max()
        .unwrap();
    let weight_err = weights
        .iter()
        .zip(&want.1)
        .map(|(&w, &r)| (w as f64 / 32768.0 - r).abs())
        .fold(0.0, f64::max);
    println!("{name:<28} context rel_l2 {err:.5}  max_steps {steps}  weights max abs err {weight_err:.2e}");
    assert!(steps <= 1, "{name}");
    assert!(weight_err < 2.0 / 32768.0, "{name}: {weight_err}");
    assert!(err < 1.5e-2, "{name}: {err}");
}

#[test]
fn luong_is_close_to_f64() {
    let (l, d, dv, a) = (20, 16, 12, 10);
    let mut rng = Rng(21);
    let (q, qp) = quantize_tensor(&rng.normals(d, 0.5));
    let (k, kp) = quantize_tensor(&rng.normals(l * d, 0.5));
    let (v, vp) = quantize_tensor(&rng.normals(l * dv, 1.0));
    let (wg, wgp) = quantize_tensor(&rng.normals(d * d, 0.3));
    let (wc, wc_scales) = quantize_rows(&rng.normals(a * 2 * d, 0.4), a);
    let (vv, vvp) = quantize_tensor(&rng.normals(a, 1.0));
    let (qf, kf, vf) = (
        dequantize_f64(&q, qp),
        dequantize_f64(&k, kp),
        dequantize_f64(&v, vp),
    );
    let (wgf, wcf, vvf) = (
        dequantize_f64(&wg, wgp),
        dequantize_rows(&wc, &wc_scales),
        dequantize_f64(&vv, vvp),
    );
    let padding = [MaskTerm::KeyPadding { valid: 15 }];
    let mut storage = vec![FixedMultiplier::ONE; 2 * a];
    for kind in ["dot", "general", "concat"] {
        let score = match kind {
            "dot" => Int8LuongScore::dot(qp.scale(), kp.scale()),
            "general" => Int8LuongScore::general(&wg, qp.scale(), wgp.scale(), kp.scale()),
            _ => Int8LuongScore::concat(
                &wc,
                &vv,
                qp.scale(),
                kp.scale(),
                &wc_scales,
                vvp.scale(),
                &mut storage,
            ),
        }
        .unwrap();
        for (mask_name, mask) in [("", Mask::NONE), (" padded", Mask::new(&padding))] {
            let scores: Vec<Option<f64>> = (0..l)
                .map(|j| {
                    let kj = &kf[j * d..][..d];
                    mask.allows(0, j).then(|| match kind {
                        "dot" => qf.iter().zip(kj).map(|(x, y)| x * y).sum(),
                        "general" => (0..d)
                            .map(|r| (0..d).map(|c| qf[r] * wgf[r * d + c] * kj[c]).sum::<f64>())
                            .sum(),
                        _ => (0..a)
                            .map(|h| {
                                let row = &wcf[h * 2 * d..][..2 * d];
                                let x: f64 =
                                    row[..d].iter().zip(&qf).map(|(w, x)| w * x).sum::<f64>()
                                        + row[d..].iter().zip(kj).map(|(w, x)| w * x).sum::<f64>();
                                vvf[h] * x.tanh()
                            })
                            .sum(),
                    })
                })
                .collect();
            let want = reference_context(&scores, &vf, dv);
            let scale = (want.0.iter().fold(0.0f64, |m, x| m.max(x.abs())) / 127.0) as f32;
            let params = Int8LuongParams {
                score,
                out: FixedMultiplier::from_real(vp.scale() as f64 / scale as f64).unwrap(),
                mask,
            };
            let shape = LuongShape { l, d, dv };
            let (mut context, mut weights) = (vec![0i8; dv], vec![0i16; l]);
            let mut scratch = vec![0i64; int8_luong_scratch_len(shape, &score)];
            int8_luong_attention(
                &q,
                &k,
                &v,
                shape,
                &params,
                &mut context,
                &mut weights,
                &mut scratch,
            )
            .unwrap();
            check_single(
                &format!("luong {kind}{mask_name}"),
                &context,
                scale,
                &weights,
                &want,
            );
            if !mask_name.is_empty() {
                assert!(weights[15..].iter().all(|&w| w == 0));
            }
        }
    }
}

#[test]
fn additive_is_close_to_f64() {
    let (l, dq, dk, dv, a) = (18, 12, 10, 9, 16);
    let mut rng = Rng(22);
    let (q, qp) = quantize_tensor(&rng.normals(dq, 1.0));
    let (k, kp) = quantize_tensor(&rng.normals(l * dk, 1.0));
    let (v, vp) = quantize_tensor(&rng.normals(l * dv, 1.0));
    let (wq, wq_scales) = quantize_rows(&rng.normals(a * dq, 0.3), a);
    let (wk, wk_scales) = quantize_rows(&rng.normals(a * dk, 0.3), a);
    let (vv, vvp) = quantize_tensor(&rng.normals(a, 1.0));
    let (qf, kf, vf) = (
        dequantize_f64(&q, qp),
        dequantize_f64(&k, kp),
        dequantize_f64(&v, vp),
    );
    let (wqf, wkf, vvf) = (
        dequantize_rows(&wq, &wq_scales),
        dequantize_rows(&wk, &wk_scales),
        dequantize_f64(&vv, vvp),
    );
    let causal = [MaskTerm::Causal];
    for (name, mask) in [
        ("additive", Mask::NONE),
        ("additive causal at 6", Mask::new(&causal).with_offset(6)),
    ] {
        let scores: Vec<Option<f64>> = (0..l)
            .map(|j| {
                mask.allows(0, j).then(|| {
                    (0..a)
                        .map(|h| {
                            let x: f64 = (0..dq).map(|c| wqf[h * dq + c] * qf[c]).sum::<f64>()
                                + (0..dk)
                                    .map(|c| wkf[h * dk + c] * kf[j * dk + c])
                                    .sum::<f64>();
                            vvf[h] * x.tanh()
                        })
                        .sum()
                })
            })
            .collect();
        let want = reference_context(&scores, &vf, dv);
        let scale = (want.0.iter().fold(0.0f64, |m, x| m.max(x.abs())) / 127.0) as f32;
        let scales = Int8AdditiveScales {
            query: qp.scale(),
            keys: kp.scale(),
            values: vp.scale(),
            w_query: &wq_scales,
            w_key: &wk_scales,
            v: vvp.scale(),
            context: scale,
        };
        let mut storage = vec![FixedMultiplier::ONE; 2 * a];
        let params = Int8AdditiveParams::new(&wq, &wk, &vv, scales, mask, &mut storage).unwrap();
        let shape = AdditiveShape { l, dq, dk, dv, a };
        let (mut context, mut weights) = (vec![0i8; dv], vec![0i16; l]);
        let mut scratch = vec![0i64; int8_additive_scratch_len(shape)];
        int8_additive_attention(
            &q,
            &k,
            &v,
            shape,
            &params,
            &mut context,
            &mut weights,
            &mut scratch,
        )
        .unwrap();
        check_single(name, &context, scale, &weights, &want);

        // Errors: lengths, per-unit multiplier counts, scratch, scales.
        let bad_len = int8_additive_attention(
            &q[1..],
            &k,
            &v,
            shape,
            &params,
            &mut context,
            &mut weights,
            &mut scratch,
        );
        assert!(matches!(bad_len, Err(Error::LengthMismatch { .. })));
        let short = int8_additive_attention(
            &q,
            &k,
            &v,
            shape,
            &params,
            &mut context,
            &mut weights,
            &mut scratch[1..],
        );
        assert!(matches!(short, Err(Error::ScratchTooSmall { .. })));
        let mut three = params;
        three.tanh.key = &params.tanh.key[..3];
        let wrong_units = int8_additive_attention(
            &q,
            &k,
            &v,
            shape,
            &three,
            &mut context,
            &mut weights,
            &mut scratch,
        );
        assert!(matches!(wrong_units, Err(Error::LengthMismatch { .. })));
        let mut bad = scales;
        bad.w_key = &[0.1, f32::NAN];
        assert_eq!(
            Int8AdditiveParams::new(&wq, &wk, &vv, bad, mask, &mut storage).map(|_| ()),
            Err(Error::InvalidScale)
        );
    }
    // A query with no allowed key: zero context and weights.
    let none = [MaskTerm::KeyPadding { valid: 0 }];
    let scales = Int8AdditiveScales {
        query: qp.scale(),
        keys: kp.scale(),
        values: vp.scale(),
        w_query: &wq_scales,
        w_key: &wk_scales,
        v: vvp.scale(),
        context: 0.01,
    };
    let mut storage = vec![FixedMultiplier::ONE; 2 * a];
    let params =
        Int8AdditiveParams::new(&wq, &wk, &vv, scales, Mask::new(&none), &mut storage).unwrap();
    let shape = AdditiveShape { l, dq, dk, dv, a };
    let (mut context, mut weights) = (vec![5i8; dv], vec![5i16; l]);
    let mut scratch = vec![0i64; int8_additive_scratch_len(shape)];
    int8_additive_attention(
        &q,
        &k,
        &v,
        shape,
        &params,
        &mut context,
        &mut weights,
        &mut scratch,
    )
    .unwrap();
    assert!(context.iter().all(|&x| x == 0) && weights.iter().all(|&w| w == 0));
}

// ---------------------------------------------------------------------------------------
// Dense layer and multi-head attention with int8 weights.

use microattn::attention::int8::{
    int8_dense, int8_mha, int8_mha_acc_len, int8_mha_scratch_len, Int8Dense, Int8MhaParams,
    Int8MhaStats,
};
use microattn::mha::MhaShape;
use microattn::projection::LinearShape;

/// f64 `x Wᵀ + b`.
fn reference_dense(
    x: &[f64],
    w: &[f64],
    b: Option<&[f64]>,
    inputs: usize,
    outputs: usize,
) -> Vec<f64> {
    x.chunks(inputs)
        .flat_map(|row| {
            (0..outputs).map(move |c| {
                let dot: f64 = row
                    .iter()
                    .zip(&w[c * inputs..][..inputs])
                    .map(|(a, b)| a * b)
                    .sum();
                dot + b.map_or(0.0, |b| b[c])
            })
        })
        .collect()
}

#[test]
fn dense_matches_rounded_f64() {
    let (rows, inputs, outputs) = (7, 24, 10);
    let mut rng = Rng(31);
    let (x, xp) = quantize_tensor(&rng.normals(rows * inputs, 1.0));
    let mut w_f = rng.normals(outputs * inputs, 0.2);
    for (c, row) in w_f.chunks_mut(inputs).enumerate() {
        for v in row {
            *v *= 1.0 + c as f32; // channels of very different ranges
        }
    }
    let (w, w_scales) = quantize_rows(&w_f, outputs);
    let b: Vec<f32> = rng.normals(outputs, 0.5);
    let (xf, wf) = (dequantize_f64(&x, xp), dequantize_rows(&w, &w_scales));
    // The bias is rounded to accumulator units, as the kernel stores it.
    let b_rounded: Vec<f64> = b
        .iter()
        .zip(&w_scales)
        .map(|(&v, &s)| {
            let unit = xp.scale() as f64 * s as f64;
            (v as f64 / unit).round() * unit
        })
        .collect();
    let want = reference_dense(&xf, &wf, Some(&b_rounded), inputs, outputs);
    let y_scale = (want.iter().fold(0.0f64, |m, v| m.max(v.abs())) / 100.0) as f32;
    let (mut bias, mut mults) = (vec![0i32; outputs], vec![FixedMultiplier::ONE; outputs]);
    let layer = Int8Dense::prepare(
        &w,
        outputs,
        &w_scales,
        xp.scale(),
        y_scale,
        Some(&b),
        &mut bias,
        &mut mults,
    )
    .unwrap();
    let mut y = vec![0i8; rows * outputs];
    let shape = LinearShape::new(rows, inputs, outputs);
    let peak = int8_dense(&x, &layer, &mut y, shape).unwrap();
    let mut max_steps = 0;
    let mut want_peak = 0i64;
    for (&o, &r) in y.iter().zip(&want) {
        let exact = (r / y_scale as f64).round() as i64;
        want_peak = want_peak.max(exact.abs());
        max_steps = max_steps.max((o as i64 - exact).abs());
    }
    assert!(max_steps <= 1, "{max_steps}");
    assert!(
        (peak - want_peak).abs() <= 1 && (99..=101).contains(&peak),
        "{peak}"
    );

    // A smaller output scale saturates and reports the true peak.
    let (mut bias2, mut mults2) = (vec![0i32; outputs], vec![FixedMultiplier::ONE; outputs]);
    let tight = Int8Dense::prepare(
        &w,
        outputs,
        &w_scales,
        xp.scale(),
        y_scale / 4.0,
        Some(&b),
        &mut bias2,
        &mut mults2,
    )
    .unwrap();
    let peak4 = int8_dense(&x, &tight, &mut y, shape).unwrap();
    assert!((peak4 - 4 * peak).abs() <= 4, "{peak4} vs {peak}");
    assert!(y.iter().any(|&v| v == 127 || v == -127));

    // Errors.
    assert!(matches!(
        int8_dense(&x[1..], &layer, &mut y, shape),
        Err(Error::LengthMismatch { .. })
    ));
    let three = Int8Dense {
        multipliers: &layer.multipliers[..3],
        ..layer
    };
    assert!(matches!(
        int8_dense(&x, &three, &mut y, shape),
        Err(Error::LengthMismatch { .. })
    ));
    let mut s = w_scales.clone();
    s[1] = -1.0;
    assert_eq!(
        Int8Dense::prepare(
            &w,
            outputs,
            &s,
            xp.scale(),
            y_scale,
            None,
            &mut bias2,
            &mut mults2
        )
        .map(|_| ()),
        Err(Error::InvalidScale)
    );
    assert_eq!(
        Int8Dense::prepare(
            &w,
            outputs,
            &w_scales,
            1e-9,
            1e-12,
            Some(&b),
            &mut bias2,
            &mut mults2
        )
        .map(|_| ()),
        Err(Error::InvalidBias)
    );
}

/// f64 multi-head attention (PyTorch layout) on dequantized tensors.
#[allow(clippy::too_many_arguments)]
fn reference_mha(
    query: &[f64],
    kv: &[f64],
    in_w: &[f64],
    in_b: &[f64],
    out_w: &[f64],
    out_b: &[f64],
    shape: MhaShape,
    mask: &Mask<'_>,
) -> Vec<f64> {
    let (e, h) = (shape.embed, shape.heads);
    let hd = e / h;
    let q = reference_dense(query, &in_w[..e * e], Some(&in_b[..e]), e, e);
    let k = reference_dense(kv, &in_w[e * e..2 * e * e], Some(&in_b[e..2 * e]), e, e);
    let v = reference_dense(kv, &in_w[2 * e * e..], Some(&in_b[2 * e..]), e, e);
    // Head-major copies for reference_sdpa.
    let heads = |x: &[f64], rows: usize| -> Vec<f64> {
        (0..h)
            .flat_map(|hh| (0..rows).flat_map(move |r| (0..hd).map(move |c| (hh, r, c))))
            .map(|(hh, r, c)| x[r * e + hh * hd + c])
            .collect()
    };
    let att_shape = AttentionShape::multi_head(h, h, shape.lq, shape.lk, hd, hd);
    let att = reference_sdpa(
        &heads(&q, shape.lq),
        &heads(&k, shape.lk),
        &heads(&v, shape.lk),
        att_shape,
        Score::Dot,
        1.0 / (hd as f64).sqrt(),
        mask,
        &Bias::None,
    );
    let mut concat = vec![0.0; shape.lq * e];
    for hh in 0..h {
        for r in 0..shape.lq {
            for c in 0..hd {
                concat[r * e + hh * hd + c] = att[(hh * shape.lq + r) * hd + c];
            }
        }
    }
    reference_dense(&concat, out_w, Some(out_b), e, e)
}

#[test]
fn mha_is_close_to_f64_and_equals_its_stages() {
    let shape = MhaShape::new(12, 12, 32, 4);
    let (e, hd) = (32, 8);
    let mut rng = Rng(41);
    let (x, xp) = quantize_tensor(&rng.normals(12 * e, 1.0));
    let (in_w, in_s) = quantize_rows(&rng.normals(3 * e * e, 0.2), 3 * e);
    let (out_w, out_s) = quantize_rows(&rng.normals(e * e, 0.2), e);
    let (in_b, out_b) = (rng.normals(3 * e, 0.1), rng.normals(e, 0.1));
    let causal = [MaskTerm::Causal];
    let mask = Mask::new(&causal);
    let widen = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
    let want = reference_mha(
        &dequantize_f64(&x, xp),
        &dequantize_f64(&x, xp),
        &dequantize_rows(&in_w, &in_s),
        &widen(&in_b),
        &dequantize_rows(&out_w, &out_s),
        &widen(&out_b),
        shape,
        &mask,
    );
    // Stage scales from generous bounds, refined with the kernel's own peaks.
    let mut s = [0.05f32, 0.05, 0.05, 0.05, 0.05];
    let mut out = vec![0i8; 12 * e];
    let mut stats = Int8MhaStats::default();
    let mut out_scale = 0.0f32;
    let mut storage_b = vec![0i32; 4 * e];
    let mut storage_m = vec![FixedMultiplier::ONE; 4 * e];
    for pass in 0..4 {
        let (bq, rest) = storage_b.split_at_mut(e);
        let (bk, rest) = rest.split_at_mut(e);
        let (bv, bo) = rest.split_at_mut(e);
        let (mq, rest) = storage_m.split_at_mut(e);
        let (mk, rest) = rest.split_at_mut(e);
        let (mv, mo) = rest.split_at_mut(e);
        let q_proj = Int8Dense::prepare(
            &in_w[..e * e],
            e,
            &in_s[..e],
            xp.scale(),
            s[0],
            Some(&in_b[..e]),
            bq,
            mq,
        )
        .unwrap();
        let k_proj = Int8Dense::prepare(
            &in_w[e * e..2 * e * e],
            e,
            &in_s[e..2 * e],
            xp.scale(),
            s[1],
            Some(&in_b[e..2 * e]),
            bk,
            mk,
        )
        .unwrap();
        let v_proj = Int8Dense::prepare(
            &in_w[2 * e * e..],
            e,
            &in_s[2 * e..],
            xp.scale(),
            s[2],
            Some(&in_b[2 * e..]),
            bv,
            mv,
        )
        .unwrap();
        let out_proj =
            Int8Dense::prepare(&out_w, e, &out_s, s[3], s[4], Some(&out_b), bo, mo).unwrap();
        let scales = Int8Scales {
            q: s[0],
            k: s[1],
            v: s[2],
            out: s[3],
        };
        let attention =
            Int8SdpaParams::new(scales, hd, Score::Dot, None, mask, Int8Bias::None).unwrap();
        let params = Int8MhaParams {
            q_proj,
            k_proj,
            v_proj,
            out_proj,
            attention,
        };
        let mut scratch = vec![0i8; int8_mha_scratch_len(12, 12, e)];
        let mut acc = vec![0i64; int8_mha_acc_len(e, 4)];
        int8_mha(
            &x,
            &x,
            &x,
            &params,
            &mut out,
            shape,
            &mut scratch,
            &mut acc,
            Some(&mut stats),
        )
        .unwrap();

        if pass == 3 {
            // The same bytes from the stages run one by one.
            let heads = |layer: &Int8Dense<'_>, rows: usize| -> Vec<i8> {
                let mut y = vec![0i8; rows * e];
                int8_dense(&x, layer, &mut y, LinearShape::new(rows, e, e)).unwrap();
                (0..4)
                    .flat_map(|h| (0..rows).flat_map(move |r| (0..hd).map(move |c| (h, r, c))))
                    .map(|(h, r, c)| y[r * e + h * hd + c])
                    .collect()
            };
            let (q, k, v) = (heads(&q_proj, 12), heads(&k_proj, 12), heads(&v_proj, 12));
            let mut att = vec![0i8; 4 * 12 * hd];
            let att_shape = AttentionShape::multi_head(4, 4, 12, 12, hd, hd);
            int8_sdpa(&q, &k, &v, &mut att, att_shape, &attention, &mut [0i64; 8]).unwrap();
            let mut concat = vec![0i8; 12 * e];
            for h in 0..4 {
                for r in 0..12 {
                    concat[r * e + h * hd..][..hd].copy_from_slice(&att[(h * 12 + r) * hd..][..hd]);
                }
            }
            let mut staged = vec![0i8; 12 * e];
            int8_dense(&concat, &out_proj, &mut staged, LinearShape::new(12, e, e)).unwrap();
            assert_eq!(staged, out);
        }
        out_scale = s[4];
        let peaks = [stats.q, stats.k, stats.v, stats.attention, stats.out];
        for (scale, peak) in s.iter_mut().zip(peaks) {
            *scale *= (peak as f32 + 1.0) / 127.0;
        }
    }
    let got: Vec<f64> = out.iter().map(|&v| v as f64 * out_scale as f64).collect();
    let err = rel_l2(&got, &want);
    println!("mha e32 h4 causal           rel_l2 {err:.5}  peaks {stats:?}");
    assert!(err < 3e-2, "{err}");
    assert!(stats.out <= 127 && stats.out >= 100, "{stats:?}");
}

// ---------------------------------------------------------------------------------------
// Linear attention.

use microattn::attention::int8::{
    int8_linear_attention, int8_linear_attention_scratch_len, Int8EluFeature,
    Int8LinearAttentionParams,
};

fn elu1(x: f64) -> f64 {
    if x > 0.0 {
        x + 1.0
    } else {
        x.exp()
    }
}

/// f64 linear attention from the definition (FORMAT.md).
fn reference_linear(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    shape: AttentionShape,
    causal: bool,
    eps: f64,
) -> Vec<f64> {
    let AttentionShape {
        heads,
        kv_heads,
        lq,
        lk,
        d,
        dv,
    } = shape;
    let mut out = vec![0.0; heads * lq * dv];
    for h in 0..heads {
        let kvh = h / (heads / kv_heads);
        for i in 0..lq {
            let pq: Vec<f64> = q[(h * lq + i) * d..][..d]
                .iter()
                .map(|&x| elu1(x))
                .collect();
            let mut num = vec![0.0; dv];
            let mut den = eps;
            for j in 0..if causal { i + 1 } else { lk } {
                let pk: Vec<f64> = k[(kvh * lk + j) * d..][..d]
                    .iter()
                    .map(|&x| elu1(x))
                    .collect();
                let w: f64 = pq.iter().zip(&pk).map(|(a, b)| a * b).sum();
                den += w;
                for (n, &x) in num.iter_mut().zip(&v[(kvh * lk + j) * dv..][..dv]) {
                    *n += w * x;
                }
            }
            for (o, n) in out[(h * lq + i) * dv..][..dv].iter_mut().zip(num) {
                *o = n / den;
            }
        }
    }
    out
}

#[test]
fn linear_attention_is_close_to_f64() {
    for (name, shape, causal, sigma) in [
        (
            "linear 48x48 d16",
            AttentionShape::single(48, 48, 16, 12),
            false,
            1.0,
        ),
        (
            "linear causal 48",
            AttentionShape::single(48, 48, 16, 12),
            true,
            1.0,
        ),
        (
            "linear gqa causal",
            AttentionShape::multi_head(4, 2, 20, 20, 8, 8),
            true,
            2.0,
        ),
        (
            "linear cross 10x30",
            AttentionShape::single(10, 30, 8, 4),
            false,
            0.3,
        ),
    ] {
        let (ql, kl, vl, _) = shape.lengths().unwrap();
        let mut rng = Rng(51);
        let (q, qp) = quantize_tensor(&rng.normals(ql, sigma));
        let (k, kp) = quantize_tensor(&rng.normals(kl, sigma));
        let (v, vp) = quantize_tensor(&rng.normals(vl, 1.0));
        let want = reference_linear(
            &dequantize_f64(&q, qp),
            &dequantize_f64(&k, kp),
            &dequantize_f64(&v, vp),
            shape,
            causal,
            1e-6,
        );
        let scale = (want.iter().fold(0.0f64, |m, x| m.max(x.abs())) / 127.0) as f32;
        let params =
            Int8LinearAttentionParams::new(qp.scale(), kp.scale(), vp.scale(), scale, causal, 1e-6)
                .unwrap();
        let mut out = vec![0i8; want.len()];
        let mut scratch = vec![0i64; int8_linear_attention_scratch_len(shape)];
        int8_linear_attention(&q, &k, &v, &mut out, shape, &params, &mut scratch).unwrap();
        let got: Vec<f64> = out.iter().map(|&x| x as f64 * scale as f64).collect();
        let steps = out
            .iter()
            .zip(&want)
            .map(|(&o, &r)| (o as i64 - (r / scale as f64).round() as i64).abs())
            .max()
            .unwrap();
        let err = rel_l2(&got, &want);
        println!("{name:<28} rel_l2 {err:.5}  max_steps {steps}");
        assert!(steps <= 1 && err < 1.5e-2, "{name}: {err} {steps}");
    }
}

#[test]
fn elu_feature_and_linear_errors() {
    let f = Int8EluFeature::new(0.05).unwrap();
    for x in [-128i8, -20, -1, 0, 1, 50, 127] {
        let exact = elu1(x as f64 * 0.05) * 65536.0;
        assert!(
            (f.phi(x) as f64 - exact).abs() <= 0.55,
            "{x}: {} vs {exact}",
            f.phi(x)
        );
    }
    assert_eq!(f.phi(0), 65536);
    for bad in [0.0f32, -1.0, f32::NAN, 1e6] {
        assert_eq!(Int8EluFeature::new(bad), Err(Error::InvalidScale), "{bad}");
    }
    assert_eq!(
        Int8LinearAttentionParams::new(0.1, 0.1, 0.1, 0.1, false, -1.0),
        Err(Error::InvalidScale)
    );
    let params = Int8LinearAttentionParams::new(0.1, 0.1, 0.1, 0.1, true, 0.0).unwrap();
    let shape = AttentionShape::single(2, 3, 2, 2);
    let mut scratch = vec![0i64; int8_linear_attention_scratch_len(shape)];
    assert_eq!(
        int8_linear_attention(
            &[0; 4],
            &[0; 6],
            &[0; 6],
            &mut [0; 4],
            shape,
            &params,
            &mut scratch
        ),
        Err(Error::InvalidParameter) // causal needs lq == lk
    );
    let square = AttentionShape::single(3, 3, 2, 2);
    assert!(matches!(
        int8_linear_attention(
            &[0; 6],
            &[0; 6],
            &[0; 6],
            &mut [0; 6],
            square,
            &params,
            &mut scratch[..3]
        ),
        Err(Error::ScratchTooSmall { .. })
    ));
    // Equal features: the causal mean of the values; zero inputs give φ = 1 exactly.
    let mut out = [0i8; 6];
    let mut scratch = vec![0i64; int8_linear_attention_scratch_len(square)];
    int8_linear_attention(
        &[0; 6],
        &[0; 6],
        &[10, -10, 20, 0, 60, 1],
        &mut out,
        square,
        &params,
        &mut scratch,
    )
    .unwrap();
    assert_eq!(out, [10, -10, 15, -5, 30, -3]); // row 2: (10 + 20 + 60) / 3, (-10 + 0 + 1) / 3
}

#[test]
fn fixed_tiers_equal_slice_tiers() {
    use microattn::attention::int8::{
        int8_additive_attention_fixed, int8_dense_fixed, int8_linear_attention_fixed,
        int8_luong_concat_fixed, int8_luong_fixed,
    };
    let mut rng = Rng(61);
    let mut arr = |n: usize| random_i8(&mut rng, n);
    let (q, k, v, w, wc, vv) = (arr(6), arr(5 * 6), arr(5 * 3), arr(36), arr(4 * 12), arr(4));
    let qf: [i8; 6] = q.clone().try_into().unwrap();
    let kf: [[i8; 6]; 5] = core::array::from_fn(|j| k[j * 6..][..6].try_into().unwrap());
    let vf: [[i8; 3]; 5] = core::array::from_fn(|j| v[j * 3..][..3].try_into().unwrap());
    let out = FixedMultiplier::from_real(0.7).unwrap();
    let padding = [MaskTerm::KeyPadding { valid: 4 }];
    let mask = Mask::new(&padding);
    let mut storage = [FixedMultiplier::ONE; 8];
    let scores = [
        Int8LuongScore::dot(0.01, 0.02).unwrap(),
        Int8LuongScore::general(&w, 0.01, 0.005, 0.02).unwrap(),
        Int8LuongScore::concat(
            &wc,
            &vv,
            0.01,
            0.02,
            &[0.01, 0.02, 0.03, 0.04],
            0.05,
            &mut storage,
        )
        .unwrap(),
    ];
    let shape = LuongShape { l: 5, d: 6, dv: 3 };
    for (i, score) in scores.into_iter().enumerate() {
        let params = Int8LuongParams { score, out, mask };
        let (mut c1, mut w1) = (vec![0i8; 3], vec![0i16; 5]);
        let mut scratch = vec![0i64; int8_luong_scratch_len(shape, &score)];
        int8_luong_attention(&q, &k, &v, shape, &params, &mut c1, &mut w1, &mut scratch).unwrap();
        let (mut c2, mut w2) = ([0i8; 3], [0i16; 5]);
        if i == 2 {
            int8_luong_concat_fixed::<5, 6, 3, 4>(&qf, &kf, &vf, &params, &mut c2, &mut w2)
                .unwrap();
            assert_eq!(
                int8_luong_fixed(&qf, &kf, &vf, &params, &mut c2, &mut w2),
                Err(Error::InvalidParameter)
            );
        } else {
            int8_luong_fixed(&qf, &kf, &vf, &params, &mut c2, &mut w2).unwrap();
        }
        assert_eq!((&c1[..], &w1[..]), (&c2[..], &w2[..]), "score {i}");
        assert_eq!(w1[4], 0);
    }

    // Bahdanau with A = 4 hidden units over dq = dk = 6.
    let (wq, wk) = (arr(24), arr(24));
    let scales = Int8AdditiveScales {
        query: 0.01,
        keys: 0.02,
        values: 0.03,
        w_query: &[0.02],
        w_key: &[0.01, 0.02, 0.03, 0.02],
        v: 0.05,
        context: 0.02,
    };
    let mut storage = [FixedMultiplier::ONE; 5];
    let params = Int8AdditiveParams::new(&wq, &wk, &vv, scales, mask, &mut storage).unwrap();
    let shape = AdditiveShape {
        l: 5,
        dq: 6,
        dk: 6,
        dv: 3,
        a: 4,
    };
    let (mut c1, mut w1) = (vec![0i8; 3], vec![0i16; 5]);
    let mut scratch = vec![0i64; int8_additive_scratch_len(shape)];
    int8_additive_attention(&q, &k, &v, shape, &params, &mut c1, &mut w1, &mut scratch).unwrap();
    let (mut c2, mut w2) = ([0i8; 3], [0i16; 5]);
    int8_additive_attention_fixed::<5, 6, 6, 3, 4>(&qf, &kf, &vf, &params, &mut c2, &mut w2)
        .unwrap();
    assert_eq!((&c1[..], &w1[..]), (&c2[..], &w2[..]));

    // Linear attention (causal) and a dense layer.
    let params = Int8LinearAttentionParams::new(0.02, 0.02, 0.03, 0.02, true, 1e-6).unwrap();
    let shape = AttentionShape::single(5, 5, 6, 3);
    let mut o1 = vec![0i8; 15];
    let mut scratch = vec![0i64; int8_linear_attention_scratch_len(shape)];
    int8_linear_attention(&k, &k, &v, &mut o1, shape, &params, &mut scratch).unwrap();
    let mut o2 = [[0i8; 3]; 5];
    int8_linear_attention_fixed(&kf, &kf, &vf, &mut o2, &params).unwrap();
    assert_eq!(o2.as_flattened(), &o1[..]);

    let mults = [FixedMultiplier::from_real(0.01).unwrap()];
    let layer = Int8Dense {
        weight: &w[..18],
        bias: None,
        multipliers: &mults,
    };
    let mut y1 = vec![0i8; 15];
    let p1 = int8_dense(&k, &layer, &mut y1, LinearShape::new(5, 6, 3)).unwrap();
    let mut y2 = [[0i8; 3]; 5];
    let p2 = int8_dense_fixed(&kf, &layer, &mut y2).unwrap();
    assert_eq!((y2.as_flattened(), p2), (&y1[..], p1));
}

/// Random shapes, data and raw integer parameters (any valid `FixedMultiplier`, any slopes,
/// T5 tables and thresholds) through every int8 kernel: `Ok` or `Err`, never a panic (in a
/// debug build this includes every arithmetic overflow check).
#[test]
fn random_raw_parameters_never_panic() {
    use microattn::attention::int8::Int8TanhMultipliers;
    let mut rng = Rng(71);
    let m = |rng: &mut Rng| {
        let mult = (rng.next_u64() as u32 >> rng.i32_in(1, 31)).max(1) as i32;
        FixedMultiplier::from_raw(mult, rng.i32_in(-32, 31) as i32).unwrap()
    };
    let extreme = |rng: &mut Rng, n: usize| -> Vec<i8> {
        (0..n)
            .map(|_| match rng.next_u64() % 4 {
                0 => -128,
                1 => 127,
                _ => rng.next_u64() as i8,
            })
            .collect()
    };
    let mut ok = [0usize; 5];
    for iteration in 0..400 {
        let dim = |rng: &mut Rng| rng.i32_in(1, 9) as usize;
        let (heads, lq, lk, d, dv) = (
            dim(&mut rng),
            dim(&mut rng),
            dim(&mut rng),
            dim(&mut rng),
            dim(&mut rng),
        );
        let kv_heads = if rng.next_u64() % 2 == 0 { heads } else { 1 };
        let shape = AttentionShape::multi_head(heads, kv_heads, lq, lk, d, dv);
        let q = extreme(&mut rng, heads * lq * d);
        let k = extreme(&mut rng, kv_heads * lk * d);
        let v = extreme(&mut rng, kv_heads * lk * dv);
        let slopes: Vec<i32> = (0..heads).map(|_| rng.next_u64() as i32).collect();
        let table: Vec<i32> = (0..heads * 8).map(|_| rng.next_u64() as i32).collect();
        let thresholds = [rng.i32_in(0, 5) as u32, u32::MAX];
        let bias = match iteration % 3 {
            0 => Int8Bias::None,
            1 => Int8Bias::Alibi { slopes: &slopes },
            _ => Int8Bias::T5 {
                bidirectional: false,
                num_buckets: 8,
                table: &table,
                thresholds: &thresholds[..],
            },
        };
        let logits = match iteration % 4 {
            0 => Int8Logits::Dot { logit: m(&mut rng) },
            1 => Int8Logits::Cosine { logit: m(&mut rng) },
            2 => Int8Logits::NegSqL2 {
                cross: m(&mut rng),
                key: m(&mut rng),
            },
            _ => Int8Logits::NegL1 {
                q_weight: rng.i32_in(0, 1 << 15) as i32,
                k_weight: rng.i32_in(0, 1 << 15) as i32,
                logit: m(&mut rng),
            },
        };
        let terms = [MaskTerm::Sliding {
            left: rng.i32_in(0, 4) as usize,
            right: rng.i32_in(0, 4) as usize,
        }];
        let offset = rng.i32_in(-20, 20);
        let mask = if iteration % 2 == 0 {
            Mask::NONE
        } else {
            Mask::new(&terms).with_signed_offset(offset)
        };
        let params = Int8SdpaParams::from_raw(logits, m(&mut rng), mask, bias);
        let mut out = vec![0i8; heads * lq * dv];
        ok[0] +=
            int8_sdpa(&q, &k, &v, &mut out, shape, &params, &mut vec![0i64; dv]).is_ok() as usize;

        let lin = Int8LinearAttentionParams {
            causal: lq == lk && iteration % 2 == 0,
            query: Int8EluFeature {
                positive: m(&mut rng),
                negative: m(&mut rng),
            },
            key: Int8EluFeature {
                positive: m(&mut rng),
                negative: m(&mut rng),
            },
            eps_q32: rng.i32_in(0, 1 << 40),
            out: m(&mut rng),
        };
        ok[1] += int8_linear_attention(
            &q,
            &k,
            &v,
            &mut out,
            shape,
            &lin,
            &mut vec![0i64; int8_linear_attention_scratch_len(shape)],
        )
        .is_ok() as usize;

        let ms: Vec<FixedMultiplier> = (0..dv).map(|_| m(&mut rng)).collect();
        let bias_i32: Vec<i32> = (0..dv).map(|_| rng.next_u64() as i32).collect();
        let layer = Int8Dense {
            weight: &v[..dv * d.min(lk)],
            bias: Some(&bias_i32),
            multipliers: &ms,
        };
        ok[2] += int8_dense(
            &q[..d.min(lk)],
            &layer,
            &mut out[..dv],
            LinearShape::new(1, d.min(lk), dv),
        )
        .is_ok() as usize;

        let tanh_ms: Vec<FixedMultiplier> = (0..2).map(|_| m(&mut rng)).collect();
        let luong_score = match iteration % 3 {
            0 => Int8LuongScore::Dot { logit: m(&mut rng) },
            1 => Int8LuongScore::General {
                w: &q[..(d * d).min(q.len())],
                logit: m(&mut rng),
            },
            _ => Int8LuongScore::Concat {
                w: &k[..(2 * d).min(k.len())],
                v: &v[..1],
                tanh: Int8TanhMultipliers {
                    query: &tanh_ms[..1],
                    key: &tanh_ms[1..],
                },
                logit: m(&mut rng),
            },
        };
        let lp = Int8LuongParams {
            score: luong_score,
            out: m(&mut rng),
            mask,
        };
        let luong_shape = LuongShape { l: lk, d, dv };
        let mut weights = vec![0i16; lk];
        let mut scratch = vec![0i64; int8_luong_scratch_len(luong_shape, &luong_score)];
        ok[3] += int8_luong_attention(
            &q[..d],
            &k[..lk * d],
            &v[..lk * dv],
            luong_shape,
            &lp,
            &mut out[..dv],
            &mut weights,
            &mut scratch,
        )
        .is_ok() as usize;

        let ap = Int8AdditiveParams {
            w_query: &q[..d],
            w_key: &k[..d],
            v: &v[..1],
            tanh: Int8TanhMultipliers {
                query: &tanh_ms[..1],
                key: &tanh_ms[1..],
            },
            logit: m(&mut rng),
            out: m(&mut rng),
            mask,
        };
        let add_shape = AdditiveShape {
            l: lk,
            dq: d,
            dk: d,
            dv,
            a: 1,
        };
        let mut scratch = vec![0i64; int8_additive_scratch_len(add_shape)];
        ok[4] += int8_additive_attention(
            &q[..d],
            &k[..lk * d],
            &v[..lk * dv],
            add_shape,
            &ap,
            &mut out[..dv],
            &mut weights,
            &mut scratch,
        )
        .is_ok() as usize;
    }
    println!("calls that ran (of 400): {ok:?}");
    assert!(ok.iter().all(|&n| n >= 40), "{ok:?}");
}
