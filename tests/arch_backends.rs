//! Every backend this machine runs against the scalar reference (and an f64 evaluation of the
//! same formula), on lengths that are and are not multiples of every vector width.
//!
//! Sums are compared with the standard forward-error bound of a sum split over independent
//! accumulators: `|computed - exact| <= (chain + 1) · u · Σ|term|`, `u = 2^-24`, where `chain`
//! is the longest run of additions into one accumulator (at most `n/8 + 16` for every backend:
//! the scalar one uses 8 accumulators, the SIMD ones `4 × lanes` plus a scalar tail and a
//! lane reduction). Element-wise results get a few-ulp bound; `max`, `scale` and the widening
//! conversions must match exactly.
//!
//! Without the `std` feature only the backends enabled at compile time are listed (usually
//! just `scalar`); `cargo test --features std` checks every backend the CPU supports.

use microattn::arch::{self, Backend, BLOCK_COLUMN_ALIGN, BLOCK_ROWS};
use microattn::{bf16, f16};

const LENGTHS: &[usize] = &[0, 1, 7, 15, 17, 63, 65, 1000];
const U: f64 = 1.0 / (1u64 << 24) as f64;

/// SplitMix64.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-a, a).
    fn vec(&mut self, n: usize, a: f32) -> Vec<f32> {
        (0..n)
            .map(|_| ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * a)
            .collect()
    }
}

fn simd_backends() -> Vec<Backend> {
    let all: Vec<Backend> = arch::backends().collect();
    eprintln!("backends: {:?}", all);
    all
}

fn scalar() -> Backend {
    arch::backends()
        .find(|b| b.name() == "scalar")
        .expect("scalar is always available")
}

/// The forward-error bound of an `n`-term sum whose terms have absolute sum `abs_sum`, plus
/// one rounding per term for its product.
fn sum_bound(n: usize, abs_sum: f64) -> f64 {
    ((n / 8 + 16 + 2) as f64) * U * abs_sum + 1e-30
}

#[track_caller]
fn assert_within(got: f32, exact: f64, bound: f64, what: &str) {
    assert!(
        (got as f64 - exact).abs() <= bound,
        "{what}: {got} vs exact {exact} (|diff| {} > bound {bound})",
        (got as f64 - exact).abs()
    );
}

/// The value of one unit in the last place of the f32 nearest `x`.
fn ulp(x: f64) -> f64 {
    let b = (x.abs() as f32).to_bits();
    (f32::from_bits(b + 1) - f32::from_bits(b)) as f64
}

#[test]
fn the_selected_backend_is_listed() {
    let selected = arch::backend();
    assert!(simd_backends().iter().any(|b| b.name() == selected.name()));
    for b in simd_backends() {
        assert!(BLOCK_ROWS % b.lanes() == 0 && BLOCK_COLUMN_ALIGN % b.lanes() == 0);
        let (flops, sink) = b.fma_peak(10);
        assert!(flops >= 10 * 2 && sink.is_finite(), "{b:?}");
    }
}

#[test]
fn reductions_match_the_reference() {
    let mut rng = Rng(1);
    for &n in LENGTHS {
        let (a, b) = (rng.vec(n, 2.0), rng.vec(n, 2.0));
        let exact_dot: f64 = a.iter().zip(&b).map(|(&x, &y)| x as f64 * y as f64).sum();
        let abs_dot: f64 = a
            .iter()
            .zip(&b)
            .map(|(&x, &y)| (x as f64 * y as f64).abs())
            .sum();
        let exact_l2: f64 = a
            .iter()
            .zip(&b)
            .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
            .sum();
        let exact_l1: f64 = a
            .iter()
            .zip(&b)
            .map(|(&x, &y)| (x as f64 - y as f64).abs())
            .sum();
        // |x - y| is one more rounding per term: 3 in the bound instead of 2.
        let l2_bound = sum_bound(n, exact_l2) + 2.0 * n as f64 * U * exact_l2;
        let l1_bound = sum_bound(n, exact_l1);
        let reference = scalar();
        for be in simd_backends() {
            let what = format!("{be:?} n={n}");
            let dot = be.dot(&a, &b);
            assert_within(
                dot,
                exact_dot,
                sum_bound(n, abs_dot),
                &format!("dot {what}"),
            );
            assert_within(
                dot,
                reference.dot(&a, &b) as f64,
                2.0 * sum_bound(n, abs_dot),
                &format!("dot vs scalar {what}"),
            );
            assert_within(
                be.sq_l2_distance(&a, &b),
                exact_l2,
                l2_bound,
                &format!("l2 {what}"),
            );
            assert_within(
                be.l1_distance(&a, &b),
                exact_l1,
                l1_bound,
                &format!("l1 {what}"),
            );
            // Uneven lengths: the common length counts.
            let short = &b[..n / 2];
            assert_eq!(be.dot(&a, short), be.dot(&a[..n / 2], short), "{what}");
            // Max ignores NaN and is exact.
            let mut with_nan = a.clone();
            if n > 3 {
                with_nan[3] = f32::NAN;
            }
            assert_eq!(
                be.max(&with_nan).to_bits(),
                reference.max(&with_nan).to_bits(),
                "max {what}"
            );
        }
    }
}

#[test]
fn half_precision_paths_match_the_reference() {
    let mut rng = Rng(2);
    for &n in LENGTHS {
        let (a, b) = (rng.vec(n, 4.0), rng.vec(n, 4.0));
        let (ah, bh): (Vec<f16>, Vec<f16>) = (
            a.iter().map(|&x| f16::from_f32(x)).collect(),
            b.iter().map(|&x| f16::from_f32(x)).collect(),
        );
        let (ab, bb): (Vec<bf16>, Vec<bf16>) = (
            a.iter().map(|&x| bf16::from_f32(x)).collect(),
            b.iter().map(|&x| bf16::from_f32(x)).collect(),
        );
        let reference = scalar();
        for be in simd_backends() {
            let what = format!("{be:?} n={n}");
            // Widening is exact: bit-identical to the scalar conversion.
            let (mut wide, mut want) = (vec![0.0f32; n], vec![0.0f32; n]);
            be.widen_f16(&ah, &mut wide);
            reference.widen_f16(&ah, &mut want);
            assert_eq!(bits(&wide), bits(&want), "widen f16 {what}");
            be.widen_bf16(&ab, &mut wide);
            reference.widen_bf16(&ab, &mut want);
            assert_eq!(bits(&wide), bits(&want), "widen bf16 {what}");
            // Dot and axpy against f64 on the widened values.
            let af: Vec<f32> = ah.iter().map(|x| x.to_f32()).collect();
            let bf: Vec<f32> = bh.iter().map(|x| x.to_f32()).collect();
            let exact: f64 = af.iter().zip(&bf).map(|(&x, &y)| x as f64 * y as f64).sum();
            let abs: f64 = af
                .iter()
                .zip(&bf)
                .map(|(&x, &y)| (x as f64 * y as f64).abs())
                .sum();
            assert_within(
                be.dot_f16(&ah, &bh),
                exact,
                sum_bound(n, abs),
                &format!("dot f16 {what}"),
            );
            let af: Vec<f32> = ab.iter().map(|x| x.to_f32()).collect();
            let bf: Vec<f32> = bb.iter().map(|x| x.to_f32()).collect();
            let exact: f64 = af.iter().zip(&bf).map(|(&x, &y)| x as f64 * y as f64).sum();
            let abs: f64 = af
                .iter()
                .zip(&bf)
                .map(|(&x, &y)| (x as f64 * y as f64).abs())
                .sum();
            assert_within(
                be.dot_bf16(&ab, &bb),
                exact,
                sum_bound(n, abs),
                &format!("dot bf16 {what}"),
            );
            let y0 = rng.vec(n, 1.0);
            let (mut y, mut y_ref) = (y0.clone(), y0.clone());
            be.axpy_f16(-0.75, &ah, &mut y);
            reference.axpy_f16(-0.75, &ah, &mut y_ref);
            for i in 0..n {
                let bound = 2.0 * U * (y0[i].abs() + 0.75 * ah[i].to_f32().abs()) as f64;
                assert_within(y[i], y_ref[i] as f64, bound, &format!("axpy f16 {what}"));
            }
            let (mut y, mut y_ref) = (y0.clone(), y0.clone());
            be.axpy_bf16(1.5, &ab, &mut y);
            reference.axpy_bf16(1.5, &ab, &mut y_ref);
            for i in 0..n {
                let bound = 2.0 * U * (y0[i].abs() + 1.5 * ab[i].to_f32().abs()) as f64;
                assert_within(y[i], y_ref[i] as f64, bound, &format!("axpy bf16 {what}"));
            }
        }
    }
}

/// f32 → f16 rounding is the `half` crate's, bit for bit: random values over the whole f16
/// range, exact halfway cases (ties to even), subnormals, overflow to infinity; NaN stays NaN.
#[test]
fn narrowing_to_f16_rounds_as_half() {
    let mut rng = Rng(9);
    let mut values: Vec<f32> = Vec::new();
    for e in -26..17 {
        values.extend(rng.vec(40, 1.0).iter().map(|x| x * 2f32.powi(e)));
    }
    // Halfway between neighbouring f16 values (normal and subnormal), and around the limits.
    for bits in (0u16..0x7C00).step_by(97) {
        let (a, b) = (
            f16::from_bits(bits).to_f32(),
            f16::from_bits(bits + 1).to_f32(),
        );
        values.extend([(a + b) / 2.0, -(a + b) / 2.0]);
    }
    values.extend([
        65504.0,
        65519.0,
        65520.0,
        1e9,
        -1e9,
        f32::INFINITY,
        f32::NEG_INFINITY,
        0.0,
        -0.0,
        1e-10,
    ]);
    for &n in LENGTHS {
        for be in simd_backends() {
            for chunk in values.chunks(n.max(1)).take(4) {
                let src = &chunk[..n.min(chunk.len())];
                let mut got = vec![f16::ZERO; src.len()];
                be.narrow_f16(src, &mut got);
                for (x, g) in src.iter().zip(&got) {
                    assert_eq!(g.to_bits(), f16::from_f32(*x).to_bits(), "{be:?}: {x:e}");
                }
            }
            let mut whole = vec![f16::ZERO; values.len()];
            be.narrow_f16(&values, &mut whole);
            for (x, g) in values.iter().zip(&whole) {
                assert_eq!(g.to_bits(), f16::from_f32(*x).to_bits(), "{be:?}: {x:e}");
            }
            let mut nan = [f16::ZERO; 17];
            be.narrow_f16(&[f32::NAN; 17], &mut nan);
            assert!(nan.iter().all(|h| h.is_nan()), "{be:?}");
        }
    }
}

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn axpy_and_scale_match_the_reference() {
    let mut rng = Rng(3);
    for &n in LENGTHS {
        let (x, y0) = (rng.vec(n, 3.0), rng.vec(n, 3.0));
        let reference = scalar();
        for be in simd_backends() {
            let what = format!("{be:?} n={n}");
            let (mut y, mut y_ref) = (y0.clone(), y0.clone());
            be.axpy(0.3, &x, &mut y);
            reference.axpy(0.3, &x, &mut y_ref);
            for i in 0..n {
                // Fused or not: at most the product's and the sum's roundings apart.
                let bound = 2.0 * U * (y0[i].abs() + 0.3 * x[i].abs()) as f64;
                assert_within(y[i], y_ref[i] as f64, bound, &format!("axpy {what}"));
            }
            let (mut s, mut s_ref) = (y0.clone(), y0.clone());
            be.scale(&mut s, -1.7);
            reference.scale(&mut s_ref, -1.7);
            assert_eq!(bits(&s), bits(&s_ref), "scale {what}");
        }
    }
}

#[test]
fn exp_sum_matches_the_reference() {
    let mut rng = Rng(4);
    for &n in LENGTHS {
        let x0: Vec<f32> = rng.vec(n, 40.0);
        let shift = 5.0f32;
        let reference = scalar();
        for be in simd_backends() {
            let what = format!("{be:?} n={n}");
            let (mut x, mut x_ref) = (x0.clone(), x0.clone());
            let sum = be.exp_sum(&mut x, shift);
            let sum_ref = reference.exp_sum(&mut x_ref, shift);
            let mut exact_sum = 0.0f64;
            for i in 0..n {
                let exact = ((x0[i] - shift) as f64).exp();
                exact_sum += exact;
                // The SIMD exp is within 2 ulp, libm within 1: 3 ulp of the exact value apart.
                assert_within(
                    x[i],
                    x_ref[i] as f64,
                    3.0 * ulp(exact),
                    &format!("exp {what}"),
                );
            }
            let bound = sum_bound(n, exact_sum) + 2.0 * ulp(exact_sum) * n as f64;
            assert_within(sum, sum_ref as f64, bound, &format!("exp sum {what}"));
        }
    }
}

/// The polynomial exp of the SIMD backends against f64 `exp` over its whole range: every
/// 1009th f32 from `ln(2^-126)` to 88.37, plus the edges. Prints the largest error in ulp.
#[test]
fn simd_exp_is_within_two_ulp() {
    const LO: f32 = -87.336_55;
    const HI: f32 = 88.376_26;
    let mut xs = Vec::new();
    // Negative arguments by decreasing magnitude bits, then positive ones.
    let mut b = LO.to_bits();
    while b > 0x8000_0000 {
        xs.push(f32::from_bits(b));
        b = b.saturating_sub(1009).max(0x8000_0000);
    }
    let mut b = 0u32;
    while b <= HI.to_bits() {
        xs.push(f32::from_bits(b));
        b += 1009;
    }
    xs.extend([
        LO,
        HI,
        0.0,
        -0.0,
        1.0,
        -1.0,
        core::f32::consts::LN_2,
        -1e-30,
        1e-30,
    ]);
    for be in simd_backends().into_iter().filter(|b| b.name() != "scalar") {
        let mut y = xs.clone();
        be.exp_sum(&mut y, 0.0);
        let mut worst = (0.0f64, 0.0f32);
        for (&x, &got) in xs.iter().zip(&y) {
            let exact = (x as f64).exp();
            let err = (got as f64 - exact).abs() / ulp(exact);
            if err > worst.0 {
                worst = (err, x);
            }
        }
        eprintln!(
            "{be:?}: exp max error {:.3} ulp (at x = {}) over {} arguments",
            worst.0,
            worst.1,
            xs.len()
        );
        assert!(worst.0 <= 2.0, "{be:?}: {} ulp at {}", worst.0, worst.1);
        // Exact and special values.
        let mut special = [0.0f32, f32::NEG_INFINITY, -88.0, -1e30, f32::NAN, -87.4];
        be.exp_sum(&mut special, 0.0);
        assert_eq!(special, [1.0, 0.0, 0.0, 0.0, 0.0, 0.0], "{be:?}");
    }
}

#[test]
fn row_tiles_match_the_reference() {
    let mut rng = Rng(5);
    for &d in LENGTHS {
        for &n in &[0usize, 1, 7, 8, 9, 17, 32] {
            let stride = d + 3;
            let q = rng.vec(d, 1.0);
            let keys = rng.vec(n * stride, 1.0);
            let p = rng.vec(n, 1.0);
            let acc0 = rng.vec(d, 1.0);
            for be in simd_backends() {
                let what = format!("{be:?} d={d} n={n}");
                let mut s = vec![0.0f32; n];
                be.dot_keys(&q, &keys, stride, 0.5, &mut s).unwrap();
                for (j, &sj) in s.iter().enumerate() {
                    let key = &keys[j * stride..][..d];
                    let exact: f64 = q.iter().zip(key).map(|(&a, &b)| a as f64 * b as f64).sum();
                    let abs: f64 = q
                        .iter()
                        .zip(key)
                        .map(|(&a, &b)| (a as f64 * b as f64).abs())
                        .sum();
                    assert_within(
                        sj,
                        0.5 * exact,
                        0.5 * sum_bound(d, abs) + U,
                        &format!("dot_keys {what}"),
                    );
                }
                let mut acc = acc0.clone();
                be.pv_row(&p, &keys, stride, &mut acc).unwrap();
                for c in 0..d {
                    let terms = (0..n).map(|j| p[j] as f64 * keys[j * stride + c] as f64);
                    let exact = acc0[c] as f64 + terms.clone().sum::<f64>();
                    let abs = acc0[c].abs() as f64 + terms.map(f64::abs).sum::<f64>();
                    // The keys are added one after another into each column.
                    let bound = ((n + 2) as f64) * U * abs + 1e-30;
                    assert_within(acc[c], exact, bound, &format!("pv_row {what}"));
                }
                // The same with f16 and bf16 storage, against f64 on the widened values.
                let (qh, kh): (Vec<f16>, Vec<f16>) = (
                    q.iter().map(|&x| f16::from_f32(x)).collect(),
                    keys.iter().map(|&x| f16::from_f32(x)).collect(),
                );
                let (qb, kb): (Vec<bf16>, Vec<bf16>) = (
                    q.iter().map(|&x| bf16::from_f32(x)).collect(),
                    keys.iter().map(|&x| bf16::from_f32(x)).collect(),
                );
                let wide_h = |x: &[f16]| x.iter().map(|v| v.to_f32()).collect::<Vec<f32>>();
                let wide_b = |x: &[bf16]| x.iter().map(|v| v.to_f32()).collect::<Vec<f32>>();
                let mut sh = vec![0.0f32; n];
                be.dot_keys_f16(&qh, &kh, stride, 0.5, &mut sh).unwrap();
                let mut sb = vec![0.0f32; n];
                be.dot_keys_bf16(&qb, &kb, stride, 0.5, &mut sb).unwrap();
                let mut acc_h = acc0.clone();
                be.pv_row_f16(&p, &kh, stride, &mut acc_h).unwrap();
                let mut acc_b = acc0.clone();
                be.pv_row_bf16(&p, &kb, stride, &mut acc_b).unwrap();
                for (got_s, got_acc, (qw, kw), ty) in [
                    (&sh, &acc_h, (wide_h(&qh), wide_h(&kh)), "f16"),
                    (&sb, &acc_b, (wide_b(&qb), wide_b(&kb)), "bf16"),
                ] {
                    for (j, &sj) in got_s.iter().enumerate() {
                        let key = &kw[j * stride..][..d];
                        let exact: f64 =
                            qw.iter().zip(key).map(|(&a, &b)| a as f64 * b as f64).sum();
                        let abs: f64 = qw
                            .iter()
                            .zip(key)
                            .map(|(&a, &b)| (a as f64 * b as f64).abs())
                            .sum();
                        let bound = 0.5 * sum_bound(d, abs) + U;
                        assert_within(sj, 0.5 * exact, bound, &format!("dot_keys {ty} {what}"));
                    }
                    for c in 0..d {
                        let terms = (0..n).map(|j| p[j] as f64 * kw[j * stride + c] as f64);
                        let exact = acc0[c] as f64 + terms.clone().sum::<f64>();
                        let abs = acc0[c].abs() as f64 + terms.map(f64::abs).sum::<f64>();
                        let bound = ((n + 2) as f64) * U * abs + 1e-30;
                        assert_within(got_acc[c], exact, bound, &format!("pv_row {ty} {what}"));
                    }
                }
                // A slice one element short is an error, not a read past the end.
                if n > 0 {
                    let short = &keys[..(n - 1) * stride + d - 1.min(d)];
                    if d > 0 {
                        assert!(be.dot_keys(&q, short, stride, 1.0, &mut s).is_err());
                        assert!(be.pv_row(&p, short, stride, &mut acc).is_err());
                    }
                }
            }
        }
    }
}

#[test]
fn block_kernels_match_the_reference() {
    const R: usize = BLOCK_ROWS;
    let mut rng = Rng(6);
    for &d in LENGTHS {
        for &n in &[0usize, 1, 7, 15, 17, 63, 65] {
            let stride = d + 1;
            let qt = rng.vec(d * R, 1.0);
            let keys = rng.vec(n * stride, 1.0);
            for be in simd_backends() {
                let what = format!("{be:?} d={d} keys={n}");
                let mut s = vec![0.0f32; n * R];
                let finite = be.qk_block(&qt, d, &keys, stride, 0.25, &mut s).unwrap();
                assert!(finite, "{what}");
                for j in 0..n {
                    for r in 0..R {
                        let terms =
                            (0..d).map(|c| qt[c * R + r] as f64 * keys[j * stride + c] as f64);
                        let exact = 0.25 * terms.clone().sum::<f64>();
                        let bound =
                            0.25 * ((d + 2) as f64) * U * terms.map(f64::abs).sum::<f64>() + 1e-30;
                        assert_within(s[j * R + r], exact, bound, &format!("qk_block {what}"));
                    }
                }
                if n > 0 && d > 0 {
                    let mut huge = qt.clone();
                    huge[0] = f32::MAX;
                    let keys_inf = vec![f32::MAX; n * stride];
                    assert!(!be
                        .qk_block(&huge, d, &keys_inf, stride, 1.0, &mut s)
                        .unwrap());
                }
            }
        }
    }
    // Errors instead of out-of-bounds access.
    for be in simd_backends() {
        let mut s = vec![0.0f32; 3 * R];
        assert!(be
            .qk_block(&[0.0; 4 * R], 4, &[0.0; 11], 4, 1.0, &mut s)
            .is_err());
        assert!(be
            .qk_block(&[0.0; 4 * R - 1], 4, &[0.0; 12], 4, 1.0, &mut s)
            .is_err());
        assert!(be
            .qk_block(&[0.0; 4 * R], 4, &[0.0; 12], 4, 1.0, &mut s[..R + 1])
            .is_err());
    }
}

#[test]
fn block_softmax_matches_the_reference() {
    const R: usize = BLOCK_ROWS;
    let mut rng = Rng(7);
    let reference = scalar();
    for &n in &[0usize, 1, 7, 15, 17, 63, 65] {
        let mut s0 = rng.vec(n * R, 30.0);
        // Some rows masked in part, row 5 entirely, row 6 only in this tile.
        for j in 0..n {
            s0[j * R + 5] = f32::NEG_INFINITY;
            if j % 3 == 0 {
                s0[j * R + 2] = f32::NEG_INFINITY;
            }
        }
        let mut m0 = [0.0f32; R];
        let l0: Vec<f32> = rng.vec(R, 1.0).iter().map(|x| x.abs() + 0.5).collect();
        for (r, m) in m0.iter_mut().enumerate() {
            *m = if r == 5 || r == 6 {
                f32::NEG_INFINITY
            } else {
                (r as f32) - 10.0
            };
        }
        let l0: [f32; R] = core::array::from_fn(|r| if r == 5 || r == 6 { 0.0 } else { l0[r] });
        for be in simd_backends() {
            let what = format!("{be:?} keys={n}");
            let (mut s, mut m, mut l, mut alpha) = (s0.clone(), m0, l0, [0.0f32; R]);
            be.softmax_block(&mut s, &mut m, &mut l, &mut alpha)
                .unwrap();
            let (mut s_ref, mut m_ref, mut l_ref, mut alpha_ref) =
                (s0.clone(), m0, l0, [0.0f32; R]);
            reference
                .softmax_block(&mut s_ref, &mut m_ref, &mut l_ref, &mut alpha_ref)
                .unwrap();
            assert_eq!(bits(&m), bits(&m_ref), "max {what}");
            for r in 0..R {
                let shift = if m[r] == f32::NEG_INFINITY {
                    0.0
                } else {
                    m[r] as f64
                };
                let exact_alpha = (m0[r] as f64 - shift).exp();
                assert_within(
                    alpha[r],
                    alpha_ref[r] as f64,
                    3.0 * ulp(exact_alpha) + 1e-37,
                    &format!("alpha {what}"),
                );
                let mut exact_sum = 0.0;
                for j in 0..n {
                    let exact = (s0[j * R + r] as f64 - shift).exp();
                    exact_sum += exact;
                    let got = s[j * R + r];
                    assert_within(
                        got,
                        s_ref[j * R + r] as f64,
                        3.0 * ulp(exact) + 1e-37,
                        &format!("weight {what}"),
                    );
                    if s0[j * R + r] == f32::NEG_INFINITY {
                        assert_eq!(got, 0.0, "{what}");
                    }
                }
                let exact_l = l0[r] as f64 * exact_alpha + exact_sum;
                let bound = sum_bound(n, exact_l) + 4.0 * n as f64 * U * exact_l + 1e-37;
                assert_within(l[r], exact_l, bound, &format!("sum {what}"));
            }
            assert_eq!(
                l[5], 0.0,
                "a row with no finite logit keeps a zero sum: {what}"
            );
        }
    }
}

#[test]
fn block_pv_matches_the_reference() {
    const R: usize = BLOCK_ROWS;
    let mut rng = Rng(8);
    for &dvp in &[16usize, 32, 48, 64, 80, 1008] {
        for &n in &[0usize, 1, 7, 15, 17, 63, 65] {
            let stride = dvp + 5;
            let p = rng.vec(n * R, 1.0);
            let v = rng.vec(n * stride, 1.0);
            let acc0 = rng.vec(R * dvp, 1.0);
            let alpha: [f32; R] = core::array::from_fn(|r| {
                if r % 4 == 0 {
                    0.0
                } else {
                    0.5 + r as f32 / 64.0
                }
            });
            for be in simd_backends() {
                let what = format!("{be:?} dvp={dvp} keys={n}");
                let mut acc = acc0.clone();
                be.pv_block(&p, &v, stride, dvp, &alpha, &mut acc).unwrap();
                for r in 0..R {
                    for c in 0..dvp {
                        let terms = (0..n).map(|j| p[j * R + r] as f64 * v[j * stride + c] as f64);
                        let start = acc0[r * dvp + c] as f64 * alpha[r] as f64;
                        let exact = start + terms.clone().sum::<f64>();
                        let abs = start.abs() + terms.map(f64::abs).sum::<f64>();
                        let bound = ((n + 3) as f64) * U * abs + 1e-30;
                        assert_within(acc[r * dvp + c], exact, bound, &format!("pv_block {what}"));
                    }
                }
            }
        }
    }
    for be in simd_backends() {
        let alpha = [1.0f32; R];
        let mut acc = vec![0.0f32; R * 16];
        // dvp not a multiple of the column alignment, short values, short accumulators.
        assert!(be
            .pv_block(&[0.0; R], &[0.0; 8], 8, 8, &alpha, &mut acc)
            .is_err());
        assert!(be
            .pv_block(&[0.0; 2 * R], &[0.0; 31], 16, 16, &alpha, &mut acc)
            .is_err());
        assert!(be
            .pv_block(
                &[0.0; R],
                &[0.0; 16],
                16,
                16,
                &alpha,
                &mut acc[..16 * R - 1]
            )
            .is_err());
    }
}
