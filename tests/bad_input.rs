//! Bad input for every public kernel family: each `Error` variant a kernel can return,
//! degenerate shapes (fully masked rows, empty windows, one key, one feature) and extreme
//! values (huge and all-equal logits, zero, denormal and negative scales, NaN, infinities,
//! values near `f32::MAX`). The catalogue in docs/ERRORS.md points at these tests by name.
//!
//! Expected values come from the definitions (a softmax of equal logits is uniform, a
//! single key gets weight 1, a dominant logit takes all the weight), never from running the
//! kernels. Tests of known open bugs are `#[ignore]`d with the reason; run them with
//! `cargo test --test bad_input -- --ignored`.

use microattn::attention::int8::{int8_sdpa, Int8Bias, Int8Scales, Int8SdpaParams, MAX_D};
use microattn::attention::*;
use microattn::layers::layer_norm;
use microattn::mask::{Mask, MaskTerm};
use microattn::mha::{mha, mha_scratch_len, mha_typed, MhaShape, MhaWeights};
use microattn::projection::{linear, linear_typed, LinearShape};
use microattn::{f16, Error};

// ---------------------------------------------------------------------------------------
// Helpers

/// Deterministic values in `[-1, 1)` (a Weyl sequence: no dependency, no state).
fn vals(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let x = (i as f64 + 1.0) * 0.618_033_988_749_895 + seed as f64 * 0.414_213_562;
            (x.fract() * 2.0 - 1.0) as f32
        })
        .collect()
}

fn all_finite(x: &[f32]) -> bool {
    x.iter().all(|v| v.is_finite())
}

fn assert_near(got: &[f32], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g as f64 - w).abs() <= tol * (1.0 + w.abs()),
            "{what}[{i}]: got {g}, want {w}\n got {got:?}\nwant {want:?}"
        );
    }
}

/// Mean over the key rows of `v` (`[lk, dv]`): the output of a uniform softmax.
fn mean_rows(v: &[f32], dv: usize) -> Vec<f64> {
    let lk = v.len() / dv;
    (0..dv)
        .map(|c| (0..lk).map(|j| v[j * dv + c] as f64).sum::<f64>() / lk as f64)
        .collect()
}

/// One-head sdpa call on fresh buffers; returns the output or the error.
fn sdpa1(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    shape: AttentionShape,
    params: &SdpaParams<'_>,
) -> Result<Vec<f32>, Error> {
    let mut out = vec![0.0f32; sdpa_output_len(shape)];
    sdpa(q, k, v, &mut out, shape, params).map(|()| out)
}

/// Inputs of the right lengths for `shape`.
fn inputs(shape: AttentionShape) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (q, k, v, _) = shape.lengths().unwrap();
    (vals(q, 1), vals(k, 2), vals(v, 3))
}

const SHAPE: AttentionShape = AttentionShape::multi_head(4, 2, 3, 5, 4, 2);

// ---------------------------------------------------------------------------------------
// SDPA (sdpa, sdpa_typed, sdpa_fixed, sdpa_heads_fixed): every error variant

#[test]
fn sdpa_zero_dimension() {
    let (q, k, v) = inputs(SHAPE);
    let mut out = vec![0.0f32; 24];
    let p = SdpaParams::default();
    for i in 0..6 {
        let mut dims = [4, 2, 3, 5, 4, 2];
        dims[i] = 0;
        let shape =
            AttentionShape::multi_head(dims[0], dims[1], dims[2], dims[3], dims[4], dims[5]);
        assert_eq!(
            sdpa(&q, &k, &v, &mut out, shape, &p),
            Err(Error::ZeroDimension),
            "dim {i}"
        );
        let mut scratch = [0.0f32; 8];
        assert_eq!(
            sdpa_typed(&q, &k, &v, &mut out, shape, &p, &mut scratch),
            Err(Error::ZeroDimension)
        );
    }
    // Zero-sized fixed-tier arrays are rejected at run time too.
    let mut empty_out: [[f32; 2]; 0] = [];
    assert_eq!(
        sdpa_fixed::<0, 1, 2, 2>(&[], &[[0.0; 2]], &[[0.0; 2]], &mut empty_out, &p),
        Err(Error::ZeroDimension)
    );
}

#[test]
fn sdpa_length_mismatch() {
    let (q, k, v) = inputs(SHAPE);
    let p = SdpaParams::default();
    let mut out = vec![0.0f32; 24];
    let short = |x: &[f32]| x[..x.len() - 1].to_vec();
    assert_eq!(
        sdpa(&short(&q), &k, &v, &mut out, SHAPE, &p),
        Err(Error::LengthMismatch {
            expected: 48,
            found: 47
        })
    );
    assert_eq!(
        sdpa(&q, &short(&k), &v, &mut out, SHAPE, &p),
        Err(Error::LengthMismatch {
            expected: 40,
            found: 39
        })
    );
    assert_eq!(
        sdpa(&q, &k, &short(&v), &mut out, SHAPE, &p),
        Err(Error::LengthMismatch {
            expected: 20,
            found: 19
        })
    );
    let mut long_out = vec![0.0f32; 25];
    assert_eq!(
        sdpa(&q, &k, &v, &mut long_out, SHAPE, &p),
        Err(Error::LengthMismatch {
            expected: 24,
            found: 25
        })
    );
    assert!(long_out.iter().all(|&x| x == 0.0), "Err must not write");
    let h: Vec<f16> = q.iter().map(|&x| f16::from_f32(x)).collect();
    let hk: Vec<f16> = k.iter().map(|&x| f16::from_f32(x)).collect();
    let hv: Vec<f16> = v.iter().map(|&x| f16::from_f32(x)).collect();
    let mut hout = vec![f16::ZERO; 23];
    assert_eq!(
        sdpa_typed(&h, &hk, &hv, &mut hout, SHAPE, &p, &mut [0.0; 2]),
        Err(Error::LengthMismatch {
            expected: 24,
            found: 23
        })
    );
}

#[test]
fn sdpa_heads_mismatch() {
    let shape = AttentionShape::multi_head(3, 2, 1, 1, 1, 1);
    let (q, k, v) = (vec![0.0; 3], vec![0.0; 2], vec![0.0; 2]);
    let mut out = [0.0f32; 3];
    assert_eq!(
        sdpa(&q, &k, &v, &mut out, shape, &SdpaParams::default()),
        Err(Error::HeadsMismatch)
    );
    // More KV heads than query heads does not divide either.
    let shape = AttentionShape::multi_head(1, 2, 1, 1, 1, 1);
    assert_eq!(
        sdpa(
            &[0.0],
            &[0.0; 2],
            &[0.0; 2],
            &mut [0.0],
            shape,
            &SdpaParams::default()
        ),
        Err(Error::HeadsMismatch)
    );
}

#[test]
fn sdpa_invalid_scale() {
    let (q, k, v) = inputs(SHAPE);
    let mut out = vec![0.0f32; 24];
    for scale in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let p = SdpaParams {
            scale: Some(scale),
            ..Default::default()
        };
        assert_eq!(
            sdpa(&q, &k, &v, &mut out, SHAPE, &p),
            Err(Error::InvalidScale),
            "{scale}"
        );
        let mut scratch = [0.0f32; 2];
        assert_eq!(
            sdpa_typed(&q, &k, &v, &mut out, SHAPE, &p, &mut scratch),
            Err(Error::InvalidScale)
        );
    }
}

#[test]
fn sdpa_invalid_mask() {
    let (q, k, v) = inputs(SHAPE);
    let mut out = vec![0.0f32; 24];
    let bad = [
        MaskTerm::Dilated {
            left: 1,
            right: 1,
            dilation: 0,
        },
        MaskTerm::BlockSparse {
            block: 0,
            window: 1,
            global: &[],
            random: &[],
        },
    ];
    for term in bad {
        let terms = [MaskTerm::Causal, term];
        let p = SdpaParams {
            mask: Mask::new(&terms),
            ..Default::default()
        };
        assert_eq!(
            sdpa(&q, &k, &v, &mut out, SHAPE, &p),
            Err(Error::InvalidMask)
        );
        assert_eq!(Mask::new(&terms).validate(), Err(Error::InvalidMask));
    }
}

#[test]
fn sdpa_invalid_bias() {
    let (q, k, v) = inputs(SHAPE);
    let mut out = vec![0.0f32; 24];
    let table = [0.0f32; 4 * 8];
    let biases = [
        // One slope per query head (4), not per KV head.
        Bias::Alibi { slopes: &[0.5; 2] },
        Bias::Alibi {
            slopes: &[0.5, f32::NAN, 0.1, 0.2],
        },
        Bias::Alibi {
            slopes: &[0.5, f32::INFINITY, 0.1, 0.2],
        },
        // Table shorter than heads × buckets.
        Bias::T5 {
            bidirectional: true,
            num_buckets: 8,
            max_distance: 16,
            table: &table[..31],
        },
        // Too few buckets for an exact range (bidirectional needs 4).
        Bias::T5 {
            bidirectional: true,
            num_buckets: 3,
            max_distance: 16,
            table: &table[..12],
        },
        // max_distance not above the exact range (8 buckets one-way: exact = 4).
        Bias::T5 {
            bidirectional: false,
            num_buckets: 8,
            max_distance: 4,
            table: &table,
        },
    ];
    for bias in biases {
        let p = SdpaParams {
            bias,
            ..Default::default()
        };
        assert_eq!(
            sdpa(&q, &k, &v, &mut out, SHAPE, &p),
            Err(Error::InvalidBias),
            "{bias:?}"
        );
    }
    // A T5 table size that overflows usize.
    assert_eq!(
        Bias::T5 {
            bidirectional: false,
            num_buckets: usize::MAX,
            max_distance: usize::MAX,
            table: &[],
        }
        .validate(2),
        Err(Error::ShapeOverflow)
    );
}

#[test]
fn sdpa_scratch_too_small() {
    let (q, k, v) = inputs(SHAPE);
    let mut out = vec![0.0f32; 24];
    let mut scratch = [0.0f32; 1];
    assert_eq!(
        sdpa_typed(
            &q,
            &k,
            &v,
            &mut out,
            SHAPE,
            &SdpaParams::default(),
            &mut scratch
        ),
        Err(Error::ScratchTooSmall {
            needed: 2,
            found: 1
        })
    );
}

#[test]
fn sdpa_shape_overflow() {
    // Element counts past usize: rejected before any slice is looked at.
    let huge = AttentionShape::multi_head(1, 1, usize::MAX / 2, 1, 4, 1);
    assert_eq!(
        sdpa(&[], &[], &[], &mut [], huge, &SdpaParams::default()),
        Err(Error::ShapeOverflow)
    );
    let huge = AttentionShape::single(1, usize::MAX, 1, 2);
    assert_eq!(huge.lengths(), Err(Error::ShapeOverflow));
    assert_eq!(
        visited_keys(AttentionShape::single(2, 2, usize::MAX, 2), &Mask::NONE),
        Err(Error::ShapeOverflow)
    );
}

// ---------------------------------------------------------------------------------------
// SDPA: degenerate shapes and extreme values

#[test]
fn sdpa_fully_masked_rows_are_zero() {
    let shape = AttentionShape::single(4, 6, 3, 2);
    let (q, k, v) = inputs(shape);
    let padding = [MaskTerm::KeyPadding { valid: 0 }];
    let causal = [MaskTerm::Causal];
    let outside = [MaskTerm::Sliding { left: 0, right: 0 }];
    let cases = [
        // No valid key at all.
        Mask::new(&padding),
        // Queries before every key.
        Mask::new(&causal).with_signed_offset(-10),
        // A width-one window placed past the last key.
        Mask::new(&outside).with_offset(100),
    ];
    for mask in cases {
        for score in [Score::Dot, Score::Cosine, Score::NegSqL2, Score::NegL1] {
            let p = SdpaParams {
                mask,
                score,
                ..Default::default()
            };
            let out = sdpa1(&q, &k, &v, shape, &p).unwrap();
            assert_eq!(out, vec![0.0; 8], "{mask:?} {score:?}");
            let mut typed = [f16::ONE; 8];
            let (hq, hk, hv) = (
                q.iter().map(|&x| f16::from_f32(x)).collect::<Vec<_>>(),
                k.iter().map(|&x| f16::from_f32(x)).collect::<Vec<_>>(),
                v.iter().map(|&x| f16::from_f32(x)).collect::<Vec<_>>(),
            );
            sdpa_typed(&hq, &hk, &hv, &mut typed, shape, &p, &mut [0.0; 2]).unwrap();
            assert_eq!(typed, [f16::ZERO; 8]);
        }
    }
    // Partly masked: rows 0 and 1 sit before key 0 (offset -2), rows 2 and 3 see keys 0..=0
    // and 0..=1.
    let p = SdpaParams {
        mask: Mask::new(&causal).with_signed_offset(-2),
        ..Default::default()
    };
    let out = sdpa1(&q, &k, &v, shape, &p).unwrap();
    assert_eq!(out[..4], [0.0; 4]);
    assert_near(&out[4..6], &[v[0] as f64, v[1] as f64], 1e-6, "row 2");
}

#[test]
fn sdpa_empty_windows() {
    // Sliding, dilated, global and block-sparse terms whose windows miss every key of some
    // rows; those rows are zero, the others are not.
    let shape = AttentionShape::single(6, 4, 2, 1);
    let (q, k, _) = inputs(shape);
    let v = [1.0f32, 2.0, 3.0, 4.0];
    let terms = [
        [MaskTerm::Sliding { left: 1, right: 0 }],
        [MaskTerm::Dilated {
            left: 0,
            right: 0,
            dilation: 2,
        }],
        [MaskTerm::GlobalSliding {
            left: 0,
            right: 0,
            global: &[],
        }],
        [MaskTerm::BlockSparse {
            block: 2,
            window: 0,
            global: &[],
            random: &[],
        }],
    ];
    for t in &terms {
        let p = SdpaParams {
            mask: Mask::new(t),
            ..Default::default()
        };
        let out = sdpa1(&q, &k, &v, shape, &p).unwrap();
        for (i, &o) in out.iter().enumerate() {
            let any = (0..4).any(|j| Mask::new(t).allows(i, j));
            if any {
                assert!((1.0..=4.0).contains(&o), "{t:?} row {i}: {o}");
            } else {
                assert_eq!(o, 0.0, "{t:?} row {i}");
            }
        }
        // Rows 5 (and 4 for the width-one windows) see no key: lk = 4.
        assert_eq!(out[5], 0.0, "{t:?}");
    }
}

#[test]
fn sdpa_one_key_gives_its_value() {
    // Lk = 1: the only key gets weight 1 whatever its logit, even an extreme one.
    let v = [0.25f32, -7.0, 3.5];
    for q in [[1.0f32, -2.0], [1e30, 1e30], [0.0, 0.0], [-3e38, 3e38]] {
        for score in [Score::Dot, Score::Cosine, Score::NegSqL2, Score::NegL1] {
            let p = SdpaParams {
                score,
                ..Default::default()
            };
            let out = sdpa1(&q, &[0.5, 0.5], &v, AttentionShape::single(1, 1, 2, 3), &p).unwrap();
            assert_eq!(out, v, "{q:?} {score:?}");
        }
    }
}

#[test]
fn sdpa_one_feature() {
    // D = 1, Dv = 1 against the softmax written out: logits q·k_j / sqrt(1).
    let (q, k, v) = ([0.5f32, -1.0], [1.0f32, 2.0, -1.0], [10.0f32, 20.0, 30.0]);
    let out = sdpa1(
        &q,
        &k,
        &v,
        AttentionShape::single(2, 3, 1, 1),
        &SdpaParams::default(),
    )
    .unwrap();
    let want: Vec<f64> = q
        .iter()
        .map(|&qi| {
            let w: Vec<f64> = k.iter().map(|&kj| (qi as f64 * kj as f64).exp()).collect();
            let s: f64 = w.iter().sum();
            w.iter().zip(v).map(|(w, vj)| w / s * vj as f64).sum()
        })
        .collect();
    assert_near(&out, &want, 1e-6, "d=1");
}

#[test]
fn sdpa_huge_logits_pick_the_largest() {
    // A 1e30 scale makes every logit gap enormous: the softmax becomes an argmax, with no
    // overflow to inf or NaN.
    let q = [1.0f32, 0.5];
    let k = [0.1f32, 0.1, 0.9, 0.2, -1.0, 0.3];
    let v = [1.0f32, 2.0, 3.0];
    for scale in [1e30f32, f32::MAX] {
        let p = SdpaParams {
            scale: Some(scale),
            ..Default::default()
        };
        let out = sdpa1(&q, &k, &v, AttentionShape::single(1, 3, 2, 1), &p).unwrap();
        assert_eq!(out, [2.0], "scale {scale}"); // key 1 has the largest q·k
    }
    // Huge inputs with the default scale: logits far past f32::MAX saturate.
    let k = [1e30f32, 1e30, -1e30, -1e30, 1e20, 1e20];
    let out = sdpa1(
        &[1e30, 1e30],
        &k,
        &v,
        AttentionShape::single(1, 3, 2, 1),
        &SdpaParams::default(),
    )
    .unwrap();
    assert!(all_finite(&out), "{out:?}");
    assert!((1.0..=3.0).contains(&out[0]));
}

#[test]
#[cfg_attr(miri, ignore = "over 20 s under Miri")]
fn sdpa_all_equal_logits_give_the_mean() {
    // Zero query: every dot logit is 0; identical keys: every logit equal, whatever the score.
    let shape = AttentionShape::single(2, 40, 3, 2); // more keys than one tile
    let v = vals(80, 9);
    let want = mean_rows(&v, 2);
    let k_same: Vec<f32> = [0.3f32, -0.2, 0.9].repeat(40);
    for score in [Score::Dot, Score::Cosine, Score::NegSqL2, Score::NegL1] {
        let p = SdpaParams {
            score,
            ..Default::default()
        };
        let out = sdpa1(&vals(6, 4), &k_same, &v, shape, &p).unwrap();
        assert_near(&out[..2], &want, 1e-5, "equal keys row 0");
        assert_near(&out[2..], &want, 1e-5, "equal keys row 1");
    }
    let out = sdpa1(&[0.0; 6], &vals(120, 5), &v, shape, &SdpaParams::default()).unwrap();
    assert_near(&out[2..], &want, 1e-5, "zero query");
}

#[test]
fn sdpa_zero_denormal_and_negative_scales() {
    let shape = AttentionShape::single(1, 3, 2, 1);
    let (q, k) = ([2.0f32, -1.0], [1.0f32, 0.0, 0.0, 1.0, -1.0, 0.0]);
    let v = [1.0f32, 2.0, 6.0];
    // Scale 0 and a denormal scale: every logit is (nearly) 0, so the mean of the values.
    for scale in [0.0f32, -0.0, 1e-40, f32::MIN_POSITIVE] {
        let p = SdpaParams {
            scale: Some(scale),
            ..Default::default()
        };
        let out = sdpa1(&q, &k, &v, shape, &p).unwrap();
        assert_near(&out, &[3.0], 1e-6, "tiny scale");
    }
    // A negative scale is allowed and reverses the preference: huge negative → argmin.
    let p = SdpaParams {
        scale: Some(-1e30),
        ..Default::default()
    };
    assert_eq!(sdpa1(&q, &k, &v, shape, &p).unwrap(), [6.0]);
}

#[test]
#[cfg_attr(miri, ignore = "over 20 s under Miri")]
fn sdpa_non_finite_inputs_do_not_panic() {
    let shape = AttentionShape::multi_head(2, 1, 3, 40, 2, 2);
    let (q, k, v) = inputs(shape);
    let alibi = [0.5f32, 0.25];
    let table = [f32::NAN; 2 * 8];
    let causal = [MaskTerm::Causal];
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        for (which, at) in [(0, 1), (1, 7), (2, 33)] {
            let (mut q, mut k, mut v) = (q.clone(), k.clone(), v.clone());
            [&mut q, &mut k, &mut v][which][at] = bad;
            for score in [Score::Dot, Score::Cosine, Score::NegSqL2, Score::NegL1] {
                for bias in [
                    Bias::None,
                    Bias::Alibi { slopes: &alibi },
                    Bias::T5 {
                        bidirectional: true,
                        num_buckets: 8,
                        max_distance: 16,
                        table: &table,
                    },
                ] {
                    let p = SdpaParams {
                        score,
                        bias,
                        mask: Mask::new(&causal),
                        ..Default::default()
                    };
                    // Only "no panic and Ok" is promised for non-finite inputs.
                    assert!(sdpa1(&q, &k, &v, shape, &p).is_ok());
                }
            }
        }
    }
}

#[test]
fn sdpa_overflowing_dot_products_stay_finite() {
    // q·k overflows f32 with both signs: the plain sum is inf - inf = NaN.
    let m = f32::MAX;
    let shape = AttentionShape::single(1, 2, 2, 1);
    let k = [m, -m, m, m];
    let v = [1.0f32, 2.0];
    for score in [Score::Dot, Score::Cosine, Score::NegSqL2, Score::NegL1] {
        let p = SdpaParams {
            score,
            scale: Some(1.0),
            ..Default::default()
        };
        let out = sdpa1(&[m, m], &k, &v, shape, &p).unwrap();
        assert!(all_finite(&out), "{score:?}: {out:?}");
        assert!((1.0..=2.0).contains(&out[0]), "{score:?}: {out:?}");
    }
    // Dot: q·k0 = 0 exactly and q·k1 = 2·MAX² saturates: key 1 takes all the weight.
    let out = sdpa1(&[m, m], &k, &v, shape, &SdpaParams::default()).unwrap();
    assert_eq!(out, [2.0]);
    // Distances: key 1 is q itself, key 0 = [MAX, -MAX] is 2·MAX away (its logit saturates).
    for score in [Score::NegSqL2, Score::NegL1] {
        let p = SdpaParams {
            score,
            scale: Some(1e-30),
            ..Default::default()
        };
        assert_eq!(
            sdpa1(&[m, m], &k, &v, shape, &p).unwrap(),
            [2.0],
            "{score:?}"
        );
    }
}

/// Regression (was an open bug): the unnormalized accumulator `Σ exp(s_j - max) v_j`
/// overflowed when values are near `f32::MAX / lk`, so finite inputs gave an infinite output
/// although the result is a convex combination of the values.
#[test]
fn sdpa_values_near_max_stay_finite() {
    let m = f32::MAX;
    let out = sdpa1(
        &[0.0],
        &[0.0, 0.0],
        &[m, m],
        AttentionShape::single(1, 2, 1, 1),
        &SdpaParams::default(),
    )
    .unwrap();
    assert_eq!(out, [m]);
    let out = sdpa1(
        &[0.0],
        &[0.0; 3],
        &[m / 2.0; 3],
        AttentionShape::single(1, 3, 1, 1),
        &SdpaParams::default(),
    )
    .unwrap();
    assert_near(&out, &[(m / 2.0) as f64], 1e-6, "mean of three MAX/2");
}

/// f64 reference of dot-score attention over heads (`[heads, lq, d]` against
/// `[kv_heads, lk, d]` / `[kv_heads, lk, dv]`) with an optional causal mask at query
/// position offset `causal` (query `i` sees keys `0..=i + offset`; rows that see no key are
/// zero). Exact enough: f64 holds f32 products and sums without overflow.
fn sdpa_f64(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    s: AttentionShape,
    scale: f64,
    causal: Option<i64>,
) -> Vec<f64> {
    let group = s.heads / s.kv_heads;
    let mut out = vec![0.0f64; s.heads * s.lq * s.dv];
    for h in 0..s.heads {
        let kvh = h / group;
        for i in 0..s.lq {
            let keys = match causal {
                Some(offset) => (i as i64 + offset + 1).clamp(0, s.lk as i64) as usize,
                None => s.lk,
            };
            if keys == 0 {
                continue;
            }
            let qi = &q[(h * s.lq + i) * s.d..][..s.d];
            let logits: Vec<f64> = (0..keys)
                .map(|j| {
                    let kj = &k[(kvh * s.lk + j) * s.d..][..s.d];
                    scale
                        * qi.iter()
                            .zip(kj)
                            .map(|(&a, &b)| a as f64 * b as f64)
                            .sum::<f64>()
                })
                .collect();
            let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let w: Vec<f64> = logits.iter().map(|&l| (l - max).exp()).collect();
            let sum: f64 = w.iter().sum();
            for c in 0..s.dv {
                out[(h * s.lq + i) * s.dv + c] = (0..keys)
                    .map(|j| w[j] / sum * v[(kvh * s.lk + j) * s.dv + c] as f64)
                    .sum::<f64>();
            }
        }
    }
    out
}

/// Value rows mixing magnitudes per column: near `f32::MAX` of one sign, `±f32::MAX`
/// alternating (the plain accumulator gives inf - inf = NaN), ordinary values, and tiny ones.
fn huge_values(rows: usize) -> Vec<f32> {
    let m = f32::MAX;
    (0..rows)
        .flat_map(|j| {
            let t = vals(1, j as u32)[0];
            [
                m * (0.75 + 0.25 * t.abs()),
                if j % 2 == 0 { m } else { -m },
                t,
                t * 1e-30,
            ]
        })
        .collect()
}

/// Compares an attention output with its f64 reference column by column, relative to the
/// largest value of the column (the output is a convex combination of the column).
fn assert_convex_near(got: &[f32], want: &[f64], v: &[f32], dv: usize, what: &str) {
    assert!(all_finite(got), "{what}: not finite: {got:?}");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let c = i % dv;
        let col_max = v
            .iter()
            .skip(c)
            .step_by(dv)
            .fold(0.0f64, |a, &x| a.max((x as f64).abs()));
        assert!(
            (g as f64 - w).abs() <= 1e-5 * col_max,
            "{what}[{i}]: got {g}, want {w} (column max {col_max})"
        );
    }
}

#[test]
#[cfg_attr(miri, ignore = "over 20 s under Miri")]
fn sdpa_values_near_max_are_accurate_on_every_path() {
    // lq = 2 takes the per-row path, lq = 40 the blocked one on hosts (d, dv <= 128); both
    // with MHA and GQA, with and without a causal mask, 1 to 70 keys (one and two tiles).
    for (lq, lk) in [(1, 1), (2, 3), (2, 70), (40, 40), (40, 70), (9, 130)] {
        for (heads, kv_heads) in [(1, 1), (4, 2)] {
            for causal in [false, true] {
                let shape = AttentionShape::multi_head(heads, kv_heads, lq, lk, 3, 4);
                let (q, k, _) = inputs(shape);
                let v = huge_values(kv_heads * lk);
                let terms = [MaskTerm::Causal];
                let p = SdpaParams {
                    mask: if causal {
                        Mask::new(&terms)
                    } else {
                        Mask::default()
                    },
                    ..Default::default()
                };
                let want = sdpa_f64(&q, &k, &v, shape, 1.0 / 3f64.sqrt(), causal.then_some(0));
                let what = format!("lq {lq} lk {lk} heads {heads}/{kv_heads} causal {causal}");
                let mut out = vec![0.0f32; sdpa_output_len(shape)];
                sdpa(&q, &k, &v, &mut out, shape, &p).unwrap();
                assert_convex_near(&out, &want, &v, 4, &format!("f32 {what}"));

                // bf16 storage has the f32 range: the same overflow, through the widening
                // paths. The reference takes the rounded inputs.
                // (Clamped: f32::MAX rounds to bf16 infinity.)
                let big = microattn::bf16::MAX.to_f32();
                let round = |x: &[f32]| -> Vec<microattn::bf16> {
                    x.iter()
                        .map(|&x| microattn::bf16::from_f32(x.clamp(-big, big)))
                        .collect()
                };
                let (qb, kb, vb) = (round(&q), round(&k), round(&v));
                let widen =
                    |x: &[microattn::bf16]| -> Vec<f32> { x.iter().map(|x| x.to_f32()).collect() };
                let (qw, kw, vw) = (widen(&qb), widen(&kb), widen(&vb));
                let want = sdpa_f64(&qw, &kw, &vw, shape, 1.0 / 3f64.sqrt(), causal.then_some(0));
                let mut outb = vec![microattn::bf16::ZERO; sdpa_output_len(shape)];
                let mut scratch = vec![0.0f32; sdpa_scratch_len(shape)];
                sdpa_typed(&qb, &kb, &vb, &mut outb, shape, &p, &mut scratch).unwrap();
                let got = widen(&outb);
                // bf16 output: 8 bits of mantissa.
                assert!(all_finite(&got), "bf16 {what}: {got:?}");
                for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g as f64 - w).abs() <= 1e-2 * w.abs() + 1e-5 * f32::MAX as f64,
                        "bf16 {what}[{i}]: got {g}, want {w}"
                    );
                }
            }
        }
    }
}

#[test]
fn sdpa_rows_without_overflow_are_untouched_by_the_rescue() {
    // Causal at offset -34: row i sees keys 0..=i - 34, so keys 4 and 5 are seen by rows 38
    // and 39 only. Row 39 has a zero query (weight 1 on every key) and sees both
    // huge keys: its accumulator overflows (2·MAX). Row 38 sees one huge key: no overflow.
    // The other rows must keep the bits of a call without huge values (the rescue redoes
    // only the overflowed row, not its block).
    let shape = AttentionShape::single(40, 6, 3, 2);
    let (mut q, k, _) = inputs(shape);
    q[39 * 3..].fill(0.0);
    let v = vals(12, 7);
    let mut huge = v.clone();
    huge[8..12].copy_from_slice(&[f32::MAX, -f32::MAX, f32::MAX, -f32::MAX]);
    let terms = [MaskTerm::Causal];
    let p = SdpaParams {
        mask: Mask::new(&terms).with_signed_offset(-34),
        ..Default::default()
    };
    let mut a = vec![0.0f32; 80];
    let mut b = vec![0.0f32; 80];
    sdpa(&q, &k, &v, &mut a, shape, &p).unwrap();
    sdpa(&q, &k, &huge, &mut b, shape, &p).unwrap();
    assert_eq!(a[..76], b[..76]);
    let want = sdpa_f64(&q, &k, &huge, shape, 1.0 / 3f64.sqrt(), Some(-34));
    assert_convex_near(&b[76..], &want[76..], &huge, 2, "rows 38 and 39");
    // Row 39: the mean of the six keys, two of them ±MAX.
    assert!(
        b[78] > f32::MAX / 3.0 * 0.99 && b[79] < -f32::MAX / 3.0 * 0.99,
        "{:?}",
        &b[78..]
    );
}

// ---------------------------------------------------------------------------------------
// Multi-head attention (mha, mha_typed)

struct MhaCase {
    shape: MhaShape,
    in_w: Vec<f32>,
    in_b: Vec<f32>,
    out_w: Vec<f32>,
    out_b: Vec<f32>,
    x: Vec<f32>,
    mem: Vec<f32>,
}

fn mha_case() -> MhaCase {
    let shape = MhaShape::new(3, 4, 4, 2);
    MhaCase {
        shape,
        in_w: vals(48, 11),
        in_b: vals(12, 12),
        out_w: vals(16, 13),
        out_b: vals(4, 14),
        x: vals(12, 15),
        mem: vals(16, 16),
    }
}

impl MhaCase {
    fn weights(&self) -> MhaWeights<'_, f32> {
        MhaWeights {
            in_proj_weight: &self.in_w,
            in_proj_bias: Some(&self.in_b),
            out_proj_weight: &self.out_w,
            out_proj_bias: Some(&self.out_b),
        }
    }

    fn run(&self, weights: &MhaWeights<'_, f32>, p: &SdpaParams<'_>) -> Result<Vec<f32>, Error> {
        let s = self.shape;
        let mut out = vec![0.0f32; s.lq * s.embed];
        let mut scratch = vec![0.0f32; mha_scratch_len(s.lq, s.lk, s.embed)];
        mha(
            &self.x,
            &self.mem,
            &self.mem,
            weights,
            &mut out,
            s,
            p,
            &mut scratch,
        )
        .map(|()| out)
    }
}

#[test]
fn mha_every_error() {
    let c = mha_case();
    let p = SdpaParams::default();
    let w = c.weights();
    assert!(c.run(&w, &p).is_ok());
    let mut out = vec![0.0f32; 12];
    let mut scratch = vec![0.0f32; 64];
    let run =
        |shape: MhaShape,
         w: &MhaWeights<'_, f32>,
         p: &SdpaParams<'_>,
         out: &mut [f32],
         scratch: &mut [f32]| { mha(&c.x, &c.mem, &c.mem, w, out, shape, p, scratch) };
    for shape in [
        MhaShape::new(0, 4, 4, 2),
        MhaShape::new(3, 0, 4, 2),
        MhaShape::new(3, 4, 0, 2),
        MhaShape::new(3, 4, 4, 0),
    ] {
        assert_eq!(
            run(shape, &w, &p, &mut out, &mut scratch),
            Err(Error::ZeroDimension)
        );
    }
    assert_eq!(
        run(MhaShape::new(3, 4, 4, 3), &w, &p, &mut out, &mut scratch),
        Err(Error::HeadsMismatch)
    );
    // Every tensor and weight, one element short.
    let short = |x: &[f32]| x[..x.len() - 1].to_vec();
    let in_w = short(&c.in_w);
    let in_b = short(&c.in_b);
    let out_w = short(&c.out_w);
    let out_b = short(&c.out_b);
    let bad_weights = [
        MhaWeights {
            in_proj_weight: &in_w,
            ..w
        },
        MhaWeights {
            in_proj_bias: Some(&in_b),
            ..w
        },
        MhaWeights {
            out_proj_weight: &out_w,
            ..w
        },
        MhaWeights {
            out_proj_bias: Some(&out_b),
            ..w
        },
    ];
    for bw in bad_weights {
        assert!(matches!(
            run(c.shape, &bw, &p, &mut out, &mut scratch),
            Err(Error::LengthMismatch { .. })
        ));
    }
    let x_short = short(&c.x);
    assert!(matches!(
        mha(
            &x_short,
            &c.mem,
            &c.mem,
            &w,
            &mut out,
            c.shape,
            &p,
            &mut scratch
        ),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(
        mha(
            &c.x,
            &c.mem,
            &c.mem[..15],
            &w,
            &mut out,
            c.shape,
            &p,
            &mut scratch
        ),
        Err(Error::LengthMismatch { .. })
    ));
    assert_eq!(
        run(c.shape, &w, &p, &mut out[..11], &mut scratch),
        Err(Error::LengthMismatch {
            expected: 12,
            found: 11
        })
    );
    assert_eq!(
        run(c.shape, &w, &p, &mut out, &mut scratch[..55]),
        Err(Error::ScratchTooSmall {
            needed: 56,
            found: 55
        })
    );
    let bad_scale = SdpaParams {
        scale: Some(f32::NAN),
        ..Default::default()
    };
    assert_eq!(
        run(c.shape, &w, &bad_scale, &mut out, &mut scratch),
        Err(Error::InvalidScale)
    );
    let zero_dilation = [MaskTerm::Dilated {
        left: 1,
        right: 1,
        dilation: 0,
    }];
    let bad_mask = SdpaParams {
        mask: Mask::new(&zero_dilation),
        ..Default::default()
    };
    assert_eq!(
        run(c.shape, &w, &bad_mask, &mut out, &mut scratch),
        Err(Error::InvalidMask)
    );
    let bad_bias = SdpaParams {
        bias: Bias::Alibi { slopes: &[1.0] }, // two heads
        ..Default::default()
    };
    assert_eq!(
        run(c.shape, &w, &bad_bias, &mut out, &mut scratch),
        Err(Error::InvalidBias)
    );
    // Nothing above wrote the output.
    assert!(out.iter().all(|&x| x == 0.0));
    // A shape whose scratch size saturates: too small, never a panic or an overflow.
    let huge = MhaShape::new(usize::MAX / 2, usize::MAX / 2, 2, 1);
    assert!(matches!(
        run(huge, &w, &p, &mut out, &mut scratch),
        Err(Error::ScratchTooSmall { .. })
    ));
    // Typed tier: same checks.
    let hw: Vec<f16> = c.in_w.iter().map(|&x| f16::from_f32(x)).collect();
    let ho: Vec<f16> = c.out_w.iter().map(|&x| f16::from_f32(x)).collect();
    let hx: Vec<f16> = c.x.iter().map(|&x| f16::from_f32(x)).collect();
    let hm: Vec<f16> = c.mem.iter().map(|&x| f16::from_f32(x)).collect();
    let typed = MhaWeights {
        in_proj_weight: &hw,
        in_proj_bias: None,
        out_proj_weight: &ho,
        out_proj_bias: None,
    };
    let mut hout = vec![f16::ZERO; 12];
    assert_eq!(
        mha_typed(
            &hx,
            &hm,
            &hm,
            &typed,
            &mut hout,
            c.shape,
            &p,
            &mut scratch[..3]
        ),
        Err(Error::ScratchTooSmall {
            needed: 56,
            found: 3
        })
    );
    assert_eq!(
        mha_typed(
            &hx,
            &hm,
            &hm,
            &typed,
            &mut hout,
            MhaShape::new(3, 4, 4, 3),
            &p,
            &mut scratch
        ),
        Err(Error::HeadsMismatch)
    );
}

#[test]
fn mha_fully_masked_rows_give_the_output_bias() {
    let c = mha_case();
    let padding = [MaskTerm::KeyPadding { valid: 0 }];
    let p = SdpaParams {
        mask: Mask::new(&padding),
        ..Default::default()
    };
    let out = c.run(&c.weights(), &p).unwrap();
    for row in out.chunks(4) {
        assert_eq!(row, &c.out_b[..]);
    }
}

#[test]
fn mha_extreme_inputs() {
    let c = mha_case();
    // Huge scale: finite. NaN input: no panic.
    let p = SdpaParams {
        scale: Some(1e30),
        ..Default::default()
    };
    assert!(all_finite(&c.run(&c.weights(), &p).unwrap()));
    let mut nan = mha_case();
    nan.x[3] = f32::NAN;
    nan.mem[0] = f32::INFINITY;
    assert!(nan.run(&nan.weights(), &SdpaParams::default()).is_ok());
}

// ---------------------------------------------------------------------------------------
// Dense layer (projection)

#[test]
fn linear_every_error_and_overflow() {
    let (x, w, b) = (vals(6, 1), vals(6, 2), vals(3, 3));
    let mut y = [0.0f32; 6];
    let shape = LinearShape::new(2, 3, 3);
    for bad in [
        LinearShape::new(0, 3, 2),
        LinearShape::new(2, 0, 2),
        LinearShape::new(2, 3, 0),
    ] {
        assert_eq!(linear(&x, &w, None, &mut y, bad), Err(Error::ZeroDimension));
    }
    assert_eq!(
        linear(&x, &w, Some(&b), &mut y, shape),
        Err(Error::LengthMismatch {
            expected: 9,
            found: 6
        })
    );
    let shape = LinearShape::new(2, 3, 2);
    assert_eq!(
        linear(&x, &w, Some(&b), &mut y[..4], shape),
        Err(Error::LengthMismatch {
            expected: 2,
            found: 3
        })
    );
    assert_eq!(
        linear(&x, &w, None, &mut y, shape),
        Err(Error::LengthMismatch {
            expected: 4,
            found: 6
        })
    );
    assert_eq!(
        linear(
            &x,
            &w,
            None,
            &mut y[..4],
            LinearShape::new(usize::MAX, 2, 2)
        ),
        Err(Error::ShapeOverflow)
    );
    // Overflowing sums stay finite: [MAX, MAX]·[1, -1] = 0 exactly, [MAX, MAX]·[1, 1]
    // saturates. The f16 output tier sees the same f32 values.
    let m = f32::MAX;
    let mut y = [0.0f32; 2];
    linear(
        &[m, m],
        &[1.0, -1.0, 1.0, 1.0],
        None,
        &mut y,
        LinearShape::new(1, 2, 2),
    )
    .unwrap();
    assert_eq!(y, [0.0, m]);
    let mut y16 = [f16::ZERO; 2];
    linear_typed(
        &[m, m],
        &[1.0f32, -1.0, -1.0, -1.0],
        None,
        &mut y16,
        LinearShape::new(1, 2, 2),
    )
    .unwrap();
    assert_eq!(y16[0], f16::ZERO);
}

// ---------------------------------------------------------------------------------------
// Linear attention

#[test]
fn linear_attention_every_error() {
    let shape = AttentionShape::multi_head(2, 1, 3, 3, 2, 2);
    let (q, k, v) = inputs(shape);
    let mut out = vec![0.0f32; 12];
    let needed = linear_attention_scratch_len(shape);
    let mut scratch = vec![0.0f32; needed];
    let p = LinearAttentionParams::default();
    assert!(linear_attention(&q, &k, &v, &mut out, shape, &p, &mut scratch).is_ok());
    let zero = AttentionShape::multi_head(2, 1, 3, 3, 0, 2);
    assert_eq!(
        linear_attention(&q, &k, &v, &mut out, zero, &p, &mut scratch),
        Err(Error::ZeroDimension)
    );
    assert!(matches!(
        linear_attention(&q, &k[1..], &v, &mut out, shape, &p, &mut scratch),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(
        linear_attention(&q, &k, &v, &mut out[1..], shape, &p, &mut scratch),
        Err(Error::LengthMismatch { .. })
    ));
    let odd = AttentionShape::multi_head(2, 3, 3, 1, 2, 2);
    assert_eq!(
        linear_attention(&q, &k, &v, &mut out, odd, &p, &mut scratch),
        Err(Error::HeadsMismatch)
    );
    for eps in [-1e-6f32, f32::NAN, f32::INFINITY] {
        let bad = LinearAttentionParams { causal: false, eps };
        assert_eq!(
            linear_attention(&q, &k, &v, &mut out, shape, &bad, &mut scratch),
            Err(Error::InvalidScale),
            "eps {eps}"
        );
    }
    // Causal needs lq == lk.
    let cross = AttentionShape::multi_head(2, 1, 3, 2, 2, 2);
    let causal = LinearAttentionParams {
        causal: true,
        eps: 0.0,
    };
    assert_eq!(
        linear_attention(&q, &k[..4], &v[..4], &mut out, cross, &causal, &mut scratch),
        Err(Error::InvalidParameter)
    );
    assert_eq!(
        linear_attention(&q, &k, &v, &mut out, shape, &p, &mut scratch[..needed - 1]),
        Err(Error::ScratchTooSmall {
            needed,
            found: needed - 1
        })
    );
    assert_eq!(
        linear_attention_fixed::<2, 3, 1, 1>(
            &[[0.0]; 2],
            &[[0.0]; 3],
            &[[0.0]; 3],
            &mut [[0.0]; 2],
            &causal
        ),
        Err(Error::InvalidParameter)
    );
    // The state: zero sizes, short buffer, bad eps, wrong token sizes, overflowing size.
    let mut buf = [0.0f32; 8];
    assert_eq!(
        LinearAttentionState::new(&mut buf, 0, 2, 0.0).err(),
        Some(Error::ZeroDimension)
    );
    assert_eq!(
        LinearAttentionState::new(&mut buf[..7], 2, 2, 0.0).err(),
        Some(Error::ScratchTooSmall {
            needed: 8,
            found: 7
        })
    );
    assert_eq!(
        LinearAttentionState::new(&mut buf, 2, 2, -1.0).err(),
        Some(Error::InvalidScale)
    );
    assert_eq!(
        LinearAttentionState::new(&mut buf, usize::MAX, 2, 0.0).err(),
        Some(Error::ShapeOverflow)
    );
    let mut state = LinearAttentionState::new(&mut buf, 2, 2, 0.0).unwrap();
    let mut o = [0.0f32; 2];
    assert!(matches!(
        state.step(&[0.0f32; 3], &[0.0; 2], &[0.0; 2], &mut o),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(
        state.push(&[0.0f32; 2], &[0.0; 1]),
        Err(Error::LengthMismatch { .. })
    ));
    assert_eq!(
        LinearAttentionStateFixed::<2, 0>::new(0.0).err(),
        Some(Error::ZeroDimension)
    );
}

#[test]
fn linear_attention_extremes_are_finite_or_zero() {
    let m = f32::MAX;
    let shape = AttentionShape::single(2, 2, 1, 1);
    let mut scratch = [0.0f32; 3];
    let mut out = [1.0f32; 2];
    let p = LinearAttentionParams::default();
    // phi(k) = 1 for k = 0: both keys weigh the same, S = MAX + MAX overflows. The kernel
    // documents zeros for such rows; never inf or NaN.
    linear_attention(
        &[0.0, 0.0],
        &[0.0, 0.0],
        &[m, m],
        &mut out,
        shape,
        &p,
        &mut scratch,
    )
    .unwrap();
    assert!(all_finite(&out), "{out:?}");
    assert!(out.iter().all(|&o| o == 0.0 || o == m), "{out:?}");
    // S = MAX - MAX = 0 is fine.
    linear_attention(
        &[0.0, 0.0],
        &[0.0, 0.0],
        &[m, -m],
        &mut out,
        shape,
        &p,
        &mut scratch,
    )
    .unwrap();
    assert_eq!(out, [0.0, 0.0]);
    // Huge keys: phi(k) = k + 1 overflows z; eps = 0 with tiny features underflows the
    // denominator: zeros, not NaN.
    for (q, k, eps) in [
        ([m, m], [m, m], 1e-6f32),
        ([-200.0, -200.0], [-200.0, -200.0], 0.0),
    ] {
        let p = LinearAttentionParams { causal: true, eps };
        linear_attention(&q, &k, &[1.0, 2.0], &mut out, shape, &p, &mut scratch).unwrap();
        assert!(all_finite(&out), "{q:?} {out:?}");
    }
    // NaN: no panic.
    let p = LinearAttentionParams::default();
    linear_attention(
        &[f32::NAN, 0.0],
        &[0.0, f32::INFINITY],
        &[1.0, 2.0],
        &mut out,
        shape,
        &p,
        &mut scratch,
    )
    .unwrap();
}

// ---------------------------------------------------------------------------------------
// Bahdanau (additive) and Luong attention

const ADD: AdditiveShape = AdditiveShape {
    l: 4,
    dq: 3,
    dk: 2,
    dv: 2,
    a: 3,
};

#[test]
fn additive_every_error() {
    let (q, keys, values) = (vals(3, 1), vals(8, 2), vals(8, 3));
    let (wq, wk, v) = (vals(9, 4), vals(6, 5), vals(3, 6));
    let params = AdditiveParams {
        w_query: &wq,
        w_key: &wk,
        v: &v,
        mask: Mask::NONE,
    };
    let mut context = [0.0f32; 2];
    let mut weights = [0.0f32; 4];
    let mut scratch = [0.0f32; 3];
    assert!(additive_attention(
        &q,
        &keys,
        &values,
        ADD,
        &params,
        &mut context,
        &mut weights,
        &mut scratch
    )
    .is_ok());
    for i in 0..5 {
        let mut dims = [4, 3, 2, 2, 3];
        dims[i] = 0;
        let shape = AdditiveShape {
            l: dims[0],
            dq: dims[1],
            dk: dims[2],
            dv: dims[3],
            a: dims[4],
        };
        assert_eq!(
            additive_attention(
                &q,
                &keys,
                &values,
                shape,
                &params,
                &mut context,
                &mut weights,
                &mut scratch
            ),
            Err(Error::ZeroDimension)
        );
    }
    let short_wk = &wk[..5];
    let bad = AdditiveParams {
        w_key: short_wk,
        ..params
    };
    assert_eq!(
        additive_attention(
            &q,
            &keys,
            &values,
            ADD,
            &bad,
            &mut context,
            &mut weights,
            &mut scratch
        ),
        Err(Error::LengthMismatch {
            expected: 6,
            found: 5
        })
    );
    assert_eq!(
        additive_attention(
            &q,
            &keys,
            &values,
            ADD,
            &params,
            &mut context,
            &mut weights[..3],
            &mut scratch
        ),
        Err(Error::LengthMismatch {
            expected: 4,
            found: 3
        })
    );
    let zero_block = [MaskTerm::BlockSparse {
        block: 0,
        window: 0,
        global: &[],
        random: &[],
    }];
    let bad = AdditiveParams {
        mask: Mask::new(&zero_block),
        ..params
    };
    assert_eq!(
        additive_attention(
            &q,
            &keys,
            &values,
            ADD,
            &bad,
            &mut context,
            &mut weights,
            &mut scratch
        ),
        Err(Error::InvalidMask)
    );
    assert_eq!(
        additive_attention(
            &q,
            &keys,
            &values,
            ADD,
            &params,
            &mut context,
            &mut weights,
            &mut scratch[..2]
        ),
        Err(Error::ScratchTooSmall {
            needed: 3,
            found: 2
        })
    );
    let mut typed_scratch = [0.0f32; 8];
    let needed = additive_attention_typed_scratch_len(ADD);
    assert_eq!(
        additive_attention_typed(
            &q,
            &keys,
            &values,
            ADD,
            &params,
            &mut context,
            &mut weights,
            &mut typed_scratch
        ),
        Err(Error::ScratchTooSmall { needed, found: 8 })
    );
    let huge = AdditiveShape {
        l: usize::MAX,
        dk: 2,
        ..ADD
    };
    assert_eq!(
        additive_attention(
            &q,
            &keys,
            &values,
            huge,
            &params,
            &mut context,
            &mut weights,
            &mut scratch
        ),
        Err(Error::ShapeOverflow)
    );
}

#[test]
fn luong_every_error() {
    let shape = LuongShape { l: 3, d: 2, dv: 1 };
    let (q, keys, values) = (vals(2, 1), vals(6, 2), vals(3, 3));
    let w = vals(8, 4);
    let mut context = [0.0f32; 1];
    let mut weights = [0.0f32; 3];
    let dot = LuongParams {
        score: LuongScore::Dot,
        mask: Mask::NONE,
    };
    assert_eq!(
        luong_attention(
            &q,
            &keys,
            &values,
            LuongShape { d: 0, ..shape },
            &dot,
            &mut context,
            &mut weights,
            &mut []
        ),
        Err(Error::ZeroDimension)
    );
    // Concat with an empty `v` has hidden size 0.
    let empty_v = LuongParams {
        score: LuongScore::Concat { w: &[], v: &[] },
        mask: Mask::NONE,
    };
    assert_eq!(
        luong_attention(
            &q,
            &keys,
            &values,
            shape,
            &empty_v,
            &mut context,
            &mut weights,
            &mut []
        ),
        Err(Error::ZeroDimension)
    );
    let general = LuongParams {
        score: LuongScore::General { w: &w[..3] },
        mask: Mask::NONE,
    };
    assert_eq!(
        luong_attention(
            &q,
            &keys,
            &values,
            shape,
            &general,
            &mut context,
            &mut weights,
            &mut [0.0; 2]
        ),
        Err(Error::LengthMismatch {
            expected: 4,
            found: 3
        })
    );
    let concat = LuongParams {
        score: LuongScore::Concat {
            w: &w[..7],
            v: &w[..2],
        },
        mask: Mask::NONE,
    };
    assert_eq!(
        luong_attention(
            &q,
            &keys,
            &values,
            shape,
            &concat,
            &mut context,
            &mut weights,
            &mut [0.0; 2]
        ),
        Err(Error::LengthMismatch {
            expected: 8,
            found: 7
        })
    );
    let general = LuongParams {
        score: LuongScore::General { w: &w[..4] },
        mask: Mask::NONE,
    };
    assert_eq!(
        luong_attention(
            &q,
            &keys,
            &values,
            shape,
            &general,
            &mut context,
            &mut weights,
            &mut [0.0; 1]
        ),
        Err(Error::ScratchTooSmall {
            needed: 2,
            found: 1
        })
    );
    let zero_dilation = [MaskTerm::Dilated {
        left: 0,
        right: 0,
        dilation: 0,
    }];
    let bad = LuongParams {
        mask: Mask::new(&zero_dilation),
        ..dot
    };
    assert_eq!(
        luong_attention(
            &q,
            &keys,
            &values,
            shape,
            &bad,
            &mut context,
            &mut weights,
            &mut []
        ),
        Err(Error::InvalidMask)
    );
    assert_eq!(
        luong_attention(
            &q,
            &keys,
            &values,
            LuongShape {
                l: usize::MAX,
                ..shape
            },
            &dot,
            &mut context,
            &mut weights,
            &mut []
        ),
        Err(Error::ShapeOverflow)
    );
    assert!(matches!(
        luong_attention_typed(
            &q,
            &keys,
            &values,
            shape,
            &dot,
            &mut context,
            &mut weights,
            &mut [0.0; 3]
        ),
        Err(Error::ScratchTooSmall {
            needed: 4,
            found: 3
        })
    ));
}

/// Runs additive and all three Luong scores on one query; returns (context, weights) each.
fn single_query_all(
    query: &[f32],
    keys: &[f32],
    values: &[f32],
    w_big: f32,
    mask: Mask<'_>,
) -> Vec<(Vec<f32>, Vec<f32>)> {
    let (l, d, dv) = (
        keys.len() / query.len(),
        query.len(),
        values.len() / (keys.len() / query.len()),
    );
    let mut results = Vec::new();
    // Additive: a = 2, identity-ish projections scaled by w_big.
    let shape = AdditiveShape {
        l,
        dq: d,
        dk: d,
        dv,
        a: 2,
    };
    let wq: Vec<f32> = (0..2 * d)
        .map(|i| if i % (d + 1) == 0 { w_big } else { 0.5 })
        .collect();
    let params = AdditiveParams {
        w_query: &wq,
        w_key: &wq,
        v: &[w_big, 1.0],
        mask,
    };
    let (mut c, mut w) = (vec![0.0f32; dv], vec![0.0f32; l]);
    additive_attention(
        query,
        keys,
        values,
        shape,
        &params,
        &mut c,
        &mut w,
        &mut [0.0; 2],
    )
    .unwrap();
    results.push((c.clone(), w.clone()));
    let gw: Vec<f32> = (0..d * d)
        .map(|i| if i % (d + 1) == 0 { w_big } else { -0.25 })
        .collect();
    let cw: Vec<f32> = (0..4 * d)
        .map(|i| if i % 3 == 0 { w_big } else { 1.0 })
        .collect();
    let cv = [1.0f32, w_big];
    let shape = LuongShape { l, d, dv };
    for score in [
        LuongScore::Dot,
        LuongScore::General { w: &gw },
        LuongScore::Concat { w: &cw, v: &cv },
    ] {
        let p = LuongParams { score, mask };
        let mut scratch = vec![0.0f32; luong_attention_scratch_len(shape, &score)];
        luong_attention(query, keys, values, shape, &p, &mut c, &mut w, &mut scratch).unwrap();
        results.push((c.clone(), w.clone()));
    }
    results
}

#[test]
fn additive_luong_fully_masked_and_one_key() {
    let padding = [MaskTerm::KeyPadding { valid: 0 }];
    for (c, w) in single_query_all(
        &[0.5, -0.5],
        &vals(6, 1),
        &vals(6, 2),
        1.0,
        Mask::new(&padding),
    ) {
        assert_eq!(c, [0.0, 0.0]);
        assert_eq!(w, [0.0; 3]);
    }
    let causal = [MaskTerm::Causal];
    for (c, w) in single_query_all(
        &[0.5, -0.5],
        &vals(6, 1),
        &vals(6, 2),
        1.0,
        Mask::new(&causal).with_signed_offset(-1),
    ) {
        assert_eq!((c, w), (vec![0.0, 0.0], vec![0.0; 3]));
    }
    // One key, or one allowed key: weight exactly 1, context exactly that value.
    let v = [3.0f32, -4.0];
    for (c, w) in single_query_all(&[1e30, -1e30], &[2.0, 1e30], &v, 1e20, Mask::NONE) {
        assert_eq!((c, w), (v.to_vec(), vec![1.0]));
    }
    let values = vals(6, 2);
    for (c, w) in single_query_all(&[0.5, -0.5], &vals(6, 1), &values, 1.0, Mask::new(&causal)) {
        assert_eq!((c, w), (values[..2].to_vec(), vec![1.0, 0.0, 0.0]));
    }
}

#[test]
fn additive_luong_equal_logits_give_the_mean() {
    // Identical keys: equal scores under every score function.
    let keys = [0.3f32, -0.7].repeat(5);
    let values = vals(10, 3);
    let want = mean_rows(&values, 2);
    for (c, w) in single_query_all(&[0.2, 0.9], &keys, &values, 1.0, Mask::NONE) {
        assert_near(&c, &want, 1e-6, "context");
        assert_near(&w, &[0.2; 5], 1e-6, "weights");
    }
}

#[test]
fn additive_luong_overflowing_scores_stay_finite() {
    // Sums past f32::MAX in every score (inf - inf in the plain f32 sums): weights and
    // contexts stay finite, and the dominant key still wins.
    let m = f32::MAX;
    let keys = [m, -m, 1.0, 1.0, -m, -m];
    let values = [1.0f32, 10.0, 2.0, 20.0, 3.0, 30.0];
    for (i, (c, w)) in single_query_all(&[m, m], &keys, &values, m, Mask::NONE)
        .into_iter()
        .enumerate()
    {
        assert!(all_finite(&c) && all_finite(&w), "score {i}: {c:?} {w:?}");
        let sum: f32 = w.iter().sum();
        assert!((sum - 1.0).abs() < 1e-5, "score {i}: {w:?}");
        assert!((1.0..=3.0).contains(&c[0]), "score {i}: {c:?}");
    }
    // Luong dot: q·k = 0, 2·MAX, -2·MAX: key 1 takes everything.
    let dot = &single_query_all(&[m, m], &keys, &values, m, Mask::NONE)[1];
    assert_eq!(dot.1, [0.0, 1.0, 0.0]);
    // Values near MAX: a convex combination of them stays finite.
    for (c, _) in single_query_all(&[0.0, 0.0], &[0.0; 6], &[m; 6], 1.0, Mask::NONE) {
        assert!(all_finite(&c), "{c:?}");
    }
}

#[test]
fn additive_luong_non_finite_inputs_do_not_panic() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut keys = vals(6, 1);
        keys[3] = bad;
        let _ = single_query_all(&[bad, 0.5], &keys, &vals(6, 2), 1.0, Mask::NONE);
        let _ = single_query_all(&[0.5, 0.5], &vals(6, 1), &[bad; 6], bad, Mask::NONE);
    }
}

// ---------------------------------------------------------------------------------------
// Int8 SDPA and a layer: the variants they add to the catalogue

#[test]
fn int8_sdpa_errors() {
    let scales = Int8Scales {
        q: 0.01,
        k: 0.01,
        v: 0.1,
        out: 0.1,
    };
    let mk = |s: Int8Scales, scale: Option<f32>| {
        Int8SdpaParams::new(s, 2, Score::Dot, scale, Mask::NONE, Int8Bias::None)
    };
    for bad in [0.0f32, -1.0, f32::NAN, f32::INFINITY, 1e-45] {
        assert_eq!(
            mk(Int8Scales { q: bad, ..scales }, None).err(),
            Some(Error::InvalidScale),
            "q scale {bad}"
        );
        assert_eq!(
            mk(Int8Scales { out: bad, ..scales }, None).err(),
            Some(Error::InvalidScale),
            "out scale {bad}"
        );
        assert_eq!(mk(scales, Some(bad)).err(), Some(Error::InvalidScale));
    }
    let p = mk(scales, None).unwrap();
    let shape = AttentionShape::single(1, 2, 2, 1);
    let (q, k, v) = ([100i8, 0], [100i8, 0, 0, 100], [100i8, 50]);
    let mut out = [0i8; 1];
    assert!(int8_sdpa(&q, &k, &v, &mut out, shape, &p, &mut [0; 1]).is_ok());
    assert_eq!(
        int8_sdpa(&q, &k, &v, &mut out, shape, &p, &mut []),
        Err(Error::ScratchTooSmall {
            needed: 1,
            found: 0
        })
    );
    assert_eq!(
        int8_sdpa(&q, &k[..3], &v, &mut out, shape, &p, &mut [0; 1]),
        Err(Error::LengthMismatch {
            expected: 4,
            found: 3
        })
    );
    assert_eq!(
        int8_sdpa(
            &q,
            &k,
            &v,
            &mut out,
            AttentionShape::single(1, 2, 0, 1),
            &p,
            &mut [0; 1]
        ),
        Err(Error::ZeroDimension)
    );
    // d past MAX_D: the i32 dot product could overflow.
    let d = MAX_D + 1;
    let big = vec![0i8; d];
    assert_eq!(
        int8_sdpa(
            &big,
            &big,
            &[0],
            &mut out,
            AttentionShape::single(1, 1, d, 1),
            &p,
            &mut [0; 1]
        ),
        Err(Error::InvalidParameter)
    );
    // A fully masked row is zero; saturating inputs stay in range.
    let padding = [MaskTerm::KeyPadding { valid: 0 }];
    let masked = Int8SdpaParams {
        mask: Mask::new(&padding),
        ..p
    };
    out = [7];
    int8_sdpa(&q, &k, &v, &mut out, shape, &masked, &mut [0; 1]).unwrap();
    assert_eq!(out, [0]);
    int8_sdpa(
        &[-128, -128],
        &[-128, -128, 127, 127],
        &[-128, 127],
        &mut out,
        shape,
        &p,
        &mut [0; 1],
    )
    .unwrap();
    assert!(out[0] >= -127);
}

#[test]
fn layer_norm_errors() {
    let x = vals(6, 1);
    let mut y = [0.0f32; 6];
    let w = [1.0f32; 3];
    assert!(layer_norm(&x, &w, None, &mut y, 3, 1e-5).is_ok());
    for eps in [-1.0f32, f32::NAN, f32::INFINITY] {
        assert_eq!(
            layer_norm(&x, &w, None, &mut y, 3, eps),
            Err(Error::InvalidScale)
        );
    }
    assert!(matches!(
        layer_norm(&x, &w, None, &mut y, 4, 1e-5),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(layer_norm(&x, &w, None, &mut y, 0, 1e-5).is_err());
    // A constant row with eps = 0 has zero variance: zeros, not NaN.
    layer_norm(&[2.0f32; 6], &w, None, &mut y, 3, 0.0).unwrap();
    assert!(all_finite(&y));
}

// ---------------------------------------------------------------------------------------
// The Error type itself

#[test]
fn kv_cache_full() {
    use microattn::kv_cache::{CacheMode, KvCache, KvShape};
    // Two KV heads, two slots, d = dv = 2.
    let shape = KvShape::new(2, 2, 2, 2);
    let (mut k, mut v) = ([0.0f32; 8], [0.0f32; 8]);
    let mut cache = KvCache::new(&mut k, &mut v, shape, CacheMode::Linear).unwrap();
    let rows = [[1.0f32, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0], [9.0; 4]];
    cache.append(&rows[0], &rows[0]).unwrap();
    cache.append(&rows[1], &rows[1]).unwrap();
    assert!(cache.is_full());
    // A third token: CacheFull, and the cache unchanged.
    assert_eq!(cache.append(&rows[2], &rows[2]), Err(Error::CacheFull));
    assert_eq!((cache.len(), cache.next_position()), (2, 2));
    assert_eq!(cache.keys(0), Some(&[1.0f32, 2.0, 5.0, 6.0][..]));
    assert_eq!(cache.values(1), Some(&[3.0f32, 4.0, 7.0, 8.0][..]));
    // A wrong length is still a length error on a full cache.
    assert!(matches!(
        cache.append(&rows[2][..3], &rows[2]),
        Err(Error::LengthMismatch { .. })
    ));
    // Cleared, it takes tokens again.
    cache.clear();
    cache.append(&rows[2], &rows[2]).unwrap();
    assert_eq!(cache.keys(1), Some(&[9.0f32, 9.0][..]));
    // A ring of the same size is never full: it overwrites the oldest token.
    let (mut k, mut v) = ([0.0f32; 8], [0.0f32; 8]);
    let mut ring = KvCache::new(&mut k, &mut v, shape, CacheMode::Ring).unwrap();
    for row in &rows {
        ring.append(row, row).unwrap();
    }
    assert!(!ring.is_full());
    assert_eq!(ring.keys(0), Some(&[9.0f32, 9.0, 5.0, 6.0][..]));
}

#[test]
fn every_error_displays() {
    let all = [
        Error::ZeroDimension,
        Error::LengthMismatch {
            expected: 3,
            found: 2,
        },
        Error::HeadsMismatch,
        Error::InvalidScale,
        Error::InvalidMask,
        Error::InvalidBias,
        Error::InvalidParameter,
        Error::ScratchTooSmall {
            needed: 5,
            found: 4,
        },
        Error::ShapeOverflow,
        Error::CacheFull,
    ];
    let texts: Vec<String> = all.iter().map(|e| e.to_string()).collect();
    for (i, t) in texts.iter().enumerate() {
        assert!(!t.is_empty());
        assert!(texts[..i].iter().all(|u| u != t), "duplicate message {t}");
    }
    assert!(texts[1].contains('3') && texts[1].contains('2'));
    assert!(texts[7].contains('5') && texts[7].contains('4'));
}

// ---------------------------------------------------------------------------------------
// Masks at extreme parameters (fuzz regressions)

#[test]
fn mask_rows_match_the_definition_at_extreme_parameters() {
    // Found by fuzz/sdpa: a dilation of usize::MAX was saturated to i64::MAX, so a query at
    // position i64::MAX "saw" key 0 = i64::MAX - 1 · i64::MAX; block sizes and global
    // positions past i64::MAX were saturated the same way.
    let big = usize::MAX;
    let global = [big, 3];
    let terms = [
        MaskTerm::Dilated {
            left: big,
            right: big,
            dilation: big,
        },
        MaskTerm::Dilated {
            left: 1,
            right: 1,
            dilation: big - 1,
        },
        MaskTerm::Dilated {
            left: big,
            right: 0,
            dilation: 1 << 62,
        },
        MaskTerm::Sliding {
            left: big,
            right: 0,
        },
        MaskTerm::GlobalSliding {
            left: 0,
            right: 0,
            global: &global,
        },
        MaskTerm::BlockSparse {
            block: big,
            window: 0,
            global: &[],
            random: &[],
        },
        MaskTerm::BlockSparse {
            block: 1 << 62,
            window: 1,
            global: &[],
            random: &[(1, 0)],
        },
    ];
    for offset in [
        i64::MAX - 1,
        i64::MAX,
        i64::MIN,
        i64::MIN + 1,
        -5,
        0,
        1 << 62,
    ] {
        for term in terms {
            let t = [term];
            let mask = Mask::new(&t).with_signed_offset(offset);
            for row in 0..3 {
                let got: Vec<usize> = mask.row(row, 12).flatten().collect();
                let want: Vec<usize> = (0..12).filter(|&j| mask.allows(row, j)).collect();
                assert_eq!(got, want, "{term:?} offset {offset} row {row}");
            }
        }
    }
}

#[test]
fn cosine_of_a_tiny_and_a_huge_vector_is_near_zero() {
    // Found by fuzz/sdpa: |k| overflows f32, so the rescaled cosine path runs, and it
    // dropped the 1e-8 clamp of the tiny |q|: cos came out as -1 instead of ~-1e-12.
    let p = SdpaParams {
        score: Score::Cosine,
        ..Default::default()
    };
    let out = sdpa1(
        &[1e-20],
        &[-f32::MAX, 1.0],
        &[-2.75, 0.0],
        AttentionShape::single(1, 2, 1, 1),
        &p,
    )
    .unwrap();
    // Both logits are within 1e-11 of 0: the mean of the values.
    assert_near(&out, &[-1.375], 1e-6, "cosine");
}

/// Regression (was an open bug, found by fuzz/layers): when a row's f32 sum overflowed, the
/// mean was ±inf, `x - mean` ±inf, the variance inf and its inverse square root 0, so the
/// output was `inf · 0 = NaN`. The true normalized values are finite (at most sqrt(dim) in
/// magnitude).
#[test]
fn layer_norm_of_huge_values_is_finite() {
    let m = f32::MAX;
    let mut y = [0.0f32; 4];
    layer_norm(&[m, m, 0.0, 0.0], &[1.0f32; 4], None, &mut y, 4, 0.0).unwrap();
    assert!(all_finite(&y), "{y:?}");
    // Mean MAX/2, every deviation ±MAX/2 = one standard deviation.
    assert_near(
        &y,
        &[1.0, 1.0, -1.0, -1.0],
        1e-6,
        "layer_norm [MAX, MAX, 0, 0]",
    );
}

/// f64 reference LayerNorm of one row (biased variance), or RMSNorm when `center` is false.
fn norm_f64(x: &[f64], eps: f64, center: bool) -> Vec<f64> {
    let n = x.len() as f64;
    let mean = if center {
        x.iter().sum::<f64>() / n
    } else {
        0.0
    };
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    x.iter().map(|v| (v - mean) / (var + eps).sqrt()).collect()
}

#[test]
fn norms_of_extreme_rows_are_accurate() {
    use microattn::layers::{add_layer_norm, layer_norm_in_place, rms_norm, rms_norm_in_place};
    let m = f32::MAX;
    let rows: [(&[f32], f32); 7] = [
        (&[m, m, 0.0, 0.0], 0.0),
        // Deviations overflow too: x - mean = -MAX - MAX/3.
        (&[m, m, -m, 1.0], 1e-5),
        (&[3e38, -2e38, 1e38, 0.5], 1e-5),
        // Squares overflow, sums do not.
        (&[1e20, -3e20, 2e20, 5e19], 1e-5),
        // Squares underflow, and eps = 0 cannot hide it.
        (&[1e-40, -1e-40, 3e-40, 0.0], 0.0),
        (&[1e-25, 2e-25, -5e-26, 7e-26], 0.0),
        // Tiny values with a tiny eps that dominates: the output is ~x / sqrt(eps).
        (&[1e-30, -2e-30, 3e-30, 0.0], 1e-44),
    ];
    let ones = [1.0f32; 4];
    for (row, eps) in rows {
        let x64: Vec<f64> = row.iter().map(|&v| v as f64).collect();
        for center in [true, false] {
            let want = norm_f64(&x64, eps as f64, center);
            let mut y = [0.0f32; 4];
            let mut z = [0.0f32; 4];
            z.copy_from_slice(row);
            if center {
                layer_norm(row, &ones, None, &mut y, 4, eps).unwrap();
                layer_norm_in_place(&mut z, &ones, None, 4, eps).unwrap();
            } else {
                rms_norm(row, &ones, &mut y, 4, eps).unwrap();
                rms_norm_in_place(&mut z, &ones, 4, eps).unwrap();
            }
            let what = format!("{row:?} eps {eps} center {center}");
            assert_near(&y, &want, 1e-5, &what);
            assert_eq!(y, z, "in place: {what}");
            // bf16 storage (the f32 range): the same rows through the widening paths
            // (clamped: f32::MAX rounds to bf16 infinity).
            let big = microattn::bf16::MAX.to_f32();
            let xb: Vec<microattn::bf16> = row
                .iter()
                .map(|&v| microattn::bf16::from_f32(v.clamp(-big, big)))
                .collect();
            let xb64: Vec<f64> = xb.iter().map(|v| v.to_f32() as f64).collect();
            let mut yb = vec![microattn::bf16::ZERO; 4];
            if center {
                layer_norm(&xb, &ones, None, &mut yb, 4, eps).unwrap();
            } else {
                rms_norm(&xb, &ones, &mut yb, 4, eps).unwrap();
            }
            let yb: Vec<f32> = yb.iter().map(|v| v.to_f32()).collect();
            assert_near(
                &yb,
                &norm_f64(&xb64, eps as f64, center),
                1e-2,
                &format!("bf16 {what}"),
            );
        }
    }
    // add_layer_norm: x + residual overflows element-wise (MAX + MAX) although both are finite.
    let (x, r) = ([m, m, 0.0, -m], [m, 0.0, 1.0, 0.5 * m]);
    let sum: Vec<f64> = x
        .iter()
        .zip(&r)
        .map(|(&a, &b)| a as f64 + b as f64)
        .collect();
    let mut y = x;
    add_layer_norm(&mut y, &r, &ones, None, 4, 1e-5).unwrap();
    assert_near(&y, &norm_f64(&sum, 1e-5, true), 1e-5, "add_layer_norm");
}

/// Regression (found by fuzz/misc): a huge image shape returns `ShapeOverflow` instead of
/// overflowing `grid_h * grid_w` in builds with overflow checks.
#[test]
fn patch_embed_huge_shape_is_an_error() {
    use microattn::layers::{patch_embed, PatchEmbedWeights, PatchShape};
    let shape = PatchShape::new(1, usize::MAX, usize::MAX / 2, 1, 1);
    let weights = PatchEmbedWeights {
        patch_weight: &[1.0f32],
        patch_bias: None,
        cls_token: None,
        pos_embed: None,
    };
    let result = patch_embed(&[0.0f32], &weights, &mut [0.0f32; 2], shape, &mut [0.0; 2]);
    assert_eq!(result, Err(Error::ShapeOverflow));
}
