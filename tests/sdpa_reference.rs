//! Scaled dot-product attention against an f64 reference written straight from the
//! definitions in `tests/conformance/FORMAT.md`.
//!
//! The reference is dense on purpose: it scores every (query, key) pair, decides whether the
//! key is allowed with its own reading of the mask table (not `Mask::allows` or `Mask::row`),
//! adds ALiBi / T5 biases computed here in f64 (T5 buckets from T5's
//! `_relative_position_bucket`), and runs a plain two-pass softmax in f64. A row with no
//! allowed key is zero.

use microattn::attention::{
    sdpa, sdpa_fixed, sdpa_heads_fixed, sdpa_scratch_len, sdpa_typed, AttentionShape, Bias, Score,
    SdpaParams,
};
use microattn::mask::{Mask, MaskTerm};
use microattn::{bf16, f16, Element, Error};

// ---------------------------------------------------------------------------------------------
// Deterministic inputs.

/// SplitMix64: enough randomness for test inputs, no dependency.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    fn vec(&mut self, n: usize, amplitude: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform() * amplitude).collect()
    }

    /// Small integers in [-m, m], exactly representable and with exact f32 dot products.
    fn ints(&mut self, n: usize, m: i64) -> Vec<f32> {
        (0..n)
            .map(|_| ((self.next_u64() % (2 * m as u64 + 1)) as i64 - m) as f32)
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// The reference.

/// Whether `term` allows key `j` for the query at position `p`: the FORMAT.md table, row by
/// row, in wide signed integers so nothing wraps.
fn term_allows(term: &MaskTerm<'_>, p: i128, j: i128) -> bool {
    let in_window = |left: usize, right: usize| p - left as i128 <= j && j <= p + right as i128;
    match *term {
        MaskTerm::None => true,
        MaskTerm::Causal => j <= p,
        MaskTerm::Sliding { left, right } => in_window(left, right),
        MaskTerm::Dilated {
            left,
            right,
            dilation,
        } => {
            // "j = p + t*r for an integer t with -left <= t <= right": try every t.
            let r = dilation as i128;
            (-(left as i128)..=right as i128).any(|t| j == p + t * r)
        }
        MaskTerm::GlobalSliding {
            left,
            right,
            global,
        } => {
            in_window(left, right)
                || global.iter().any(|&g| g as i128 == j)
                || global.iter().any(|&g| g as i128 == p)
        }
        MaskTerm::BlockSparse {
            block,
            window,
            global,
            random,
        } => {
            let b = block as i128;
            let (qb, kb) = (p.div_euclid(b), j.div_euclid(b));
            (qb - kb).abs() <= window as i128
                || global.iter().any(|&g| g as i128 == qb)
                || global.iter().any(|&g| g as i128 == kb)
                || random
                    .iter()
                    .any(|&(rq, rk)| rq as i128 == qb && rk as i128 == kb)
        }
        MaskTerm::KeyPadding { valid } => j < valid as i128,
    }
}

/// A key is allowed only if every term allows it; an empty list allows all.
fn mask_allows(terms: &[MaskTerm<'_>], p: i128, j: i128) -> bool {
    terms.iter().all(|t| term_allows(t, p, j))
}

/// T5's `_relative_position_bucket`, transcribed with the log ratio in f64.
fn t5_bucket_ref(
    relative_position: i64,
    bidirectional: bool,
    num_buckets: usize,
    max_distance: usize,
) -> usize {
    let mut num_buckets = num_buckets as i64;
    let mut relative_buckets = 0i64;
    let mut n = relative_position;
    if bidirectional {
        num_buckets /= 2;
        if n > 0 {
            relative_buckets += num_buckets;
        }
        n = n.abs();
    } else {
        n = -n.min(0);
    }
    let max_exact = num_buckets / 2;
    let bucket = if n < max_exact {
        n
    } else {
        let large = max_exact
            + ((n as f64 / max_exact as f64).ln() / (max_distance as f64 / max_exact as f64).ln()
                * (num_buckets - max_exact) as f64) as i64;
        large.min(num_buckets - 1)
    };
    (relative_buckets + bucket) as usize
}

fn bias_ref(bias: &Bias<'_>, head: usize, p: i128, j: i128) -> f64 {
    match *bias {
        Bias::None => 0.0,
        Bias::Alibi { slopes } => -(slopes[head] as f64) * (p - j).abs() as f64,
        Bias::T5 {
            bidirectional,
            num_buckets,
            max_distance,
            table,
        } => {
            let bucket = t5_bucket_ref((j - p) as i64, bidirectional, num_buckets, max_distance);
            table[head * num_buckets + bucket] as f64
        }
    }
}

fn score_ref(score: Score, q: &[f64], k: &[f64], scale: f64) -> f64 {
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    match score {
        Score::Dot => scale * dot(q, k),
        Score::Cosine => {
            // As torch.nn.functional.cosine_similarity: each norm clamped at 1e-8.
            let nq = dot(q, q).sqrt().max(1e-8);
            let nk = dot(k, k).sqrt().max(1e-8);
            scale * dot(q, k) / (nq * nk)
        }
        Score::NegSqL2 => -scale * q.iter().zip(k).map(|(x, y)| (x - y) * (x - y)).sum::<f64>(),
        Score::NegL1 => -scale * q.iter().zip(k).map(|(x, y)| (x - y).abs()).sum::<f64>(),
    }
}

/// Dense f64 attention: `[heads, lq, dv]`.
fn reference(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    shape: AttentionShape,
    params: &SdpaParams<'_>,
) -> Vec<f64> {
    let AttentionShape {
        heads,
        kv_heads,
        lq,
        lk,
        d,
        dv,
    } = shape;
    let scale = params.scale.map_or(1.0 / (d as f64).sqrt(), |s| s as f64);
    let group = heads / kv_heads;
    let mut out = vec![0.0f64; heads * lq * dv];
    let mut logits = vec![0.0f64; lk];
    let mut allowed = vec![false; lk];
    for h in 0..heads {
        let kvh = h / group;
        for i in 0..lq {
            let p = i as i128 + params.mask.q_pos_offset as i128;
            let q_row = &q[(h * lq + i) * d..][..d];
            for j in 0..lk {
                allowed[j] = mask_allows(params.mask.terms, p, j as i128);
                let k_row = &k[(kvh * lk + j) * d..][..d];
                logits[j] = score_ref(params.score, q_row, k_row, scale)
                    + bias_ref(&params.bias, h, p, j as i128);
            }
            let max = (0..lk)
                .filter(|&j| allowed[j])
                .map(|j| logits[j])
                .fold(f64::NEG_INFINITY, f64::max);
            if max == f64::NEG_INFINITY {
                continue; // no allowed key: the row stays zero
            }
            let weights: Vec<f64> = (0..lk)
                .map(|j| {
                    if allowed[j] {
                        (logits[j] - max).exp()
                    } else {
                        0.0
                    }
                })
                .collect();
            let sum: f64 = weights.iter().sum();
            let out_row = &mut out[(h * lq + i) * dv..][..dv];
            for (j, w) in weights.iter().enumerate() {
                let v_row = &v[(kvh * lk + j) * dv..][..dv];
                for (o, x) in out_row.iter_mut().zip(v_row) {
                    *o += w / sum * x;
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Helpers.

fn widen(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

/// `||got - want|| / max(||want||, 1e-12)`, as the conformance runner measures.
fn rel_l2(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let num: f64 = got
        .iter()
        .zip(want)
        .map(|(&g, w)| (g as f64 - w).powi(2))
        .sum();
    let den: f64 = want.iter().map(|w| w * w).sum();
    num.sqrt() / den.sqrt().max(1e-12)
}

#[track_caller]
fn assert_close(got: &[f32], want: &[f64], tol: f64, what: &dyn Fn() -> String) {
    assert!(
        got.iter().all(|x| x.is_finite()),
        "non-finite output: {}",
        what()
    );
    // Outputs the reference leaves at exactly zero (rows with no allowed key) must be zero.
    for (g, w) in got.iter().zip(want) {
        assert!(*w != 0.0 || *g == 0.0, "{g} where 0 is due: {}", what());
    }
    let err = rel_l2(got, want);
    assert!(err <= tol, "rel_l2 {err:e} > {tol:e}: {}", what());
}

struct Case {
    shape: AttentionShape,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
}

impl Case {
    fn random(rng: &mut Rng, shape: AttentionShape, amplitude: f32) -> Case {
        let (ql, kl, vl, _) = shape.lengths().unwrap();
        Case {
            shape,
            q: rng.vec(ql, amplitude),
            k: rng.vec(kl, amplitude),
            v: rng.vec(vl, 1.0),
        }
    }

    fn run(&self, params: &SdpaParams<'_>) -> Vec<f32> {
        let mut out = vec![f32::NAN; self.shape.heads * self.shape.lq * self.shape.dv];
        sdpa(&self.q, &self.k, &self.v, &mut out, self.shape, params)
            .unwrap_or_else(|e| panic!("sdpa failed with {e:?} on {:?}", self.shape));
        out
    }

    fn reference(&self, params: &SdpaParams<'_>) -> Vec<f64> {
        reference(
            &widen(&self.q),
            &widen(&self.k),
            &widen(&self.v),
            self.shape,
            params,
        )
    }

    /// Runs `sdpa_typed::<E>` and the reference on the `E`-rounded inputs.
    fn run_typed<E: Element>(&self, params: &SdpaParams<'_>) -> (Vec<f32>, Vec<f64>) {
        let cast = |x: &[f32]| x.iter().map(|&v| E::from_f32(v)).collect::<Vec<E>>();
        let back = |x: &[E]| x.iter().map(|v| v.to_f32() as f64).collect::<Vec<f64>>();
        let (q, k, v) = (cast(&self.q), cast(&self.k), cast(&self.v));
        let mut out = vec![E::from_f32(f32::NAN); self.shape.heads * self.shape.lq * self.shape.dv];
        let mut scratch = vec![0.0f32; sdpa_scratch_len(self.shape)];
        sdpa_typed(&q, &k, &v, &mut out, self.shape, params, &mut scratch)
            .unwrap_or_else(|e| panic!("sdpa_typed failed with {e:?} on {:?}", self.shape));
        let want = reference(&back(&q), &back(&k), &back(&v), self.shape, params);
        (out.iter().map(|x| x.to_f32()).collect(), want)
    }
}

/// (heads, kv_heads, lq, lk, d, dv, q_pos_offset): self and cross attention, Lq != Lk,
/// D != Dv, MHA / GQA / MQA, decode offsets, and lengths around the 32-key tile.
const SHAPES: &[(usize, usize, usize, usize, usize, usize, usize)] = &[
    (1, 1, 1, 1, 1, 1, 0),
    (1, 1, 31, 31, 8, 8, 0),
    (1, 1, 33, 33, 16, 5, 0),
    (1, 1, 70, 70, 4, 3, 0),
    (1, 1, 5, 70, 8, 8, 65),
    (1, 1, 70, 33, 6, 9, 0),
    (1, 1, 33, 1, 3, 2, 0),
    (2, 2, 9, 40, 5, 7, 3),
    (6, 2, 7, 33, 8, 4, 0),
    (4, 1, 4, 65, 3, 2, 30),
    (3, 3, 1, 100, 16, 16, 99),
    (1, 1, 40, 20, 8, 8, 100),
];

fn shape_of(s: (usize, usize, usize, usize, usize, usize, usize)) -> (AttentionShape, usize) {
    (
        AttentionShape::multi_head(s.0, s.1, s.2, s.3, s.4, s.5),
        s.6,
    )
}

const GLOBALS: &[usize] = &[0, 17, 5];
const GLOBALS2: &[usize] = &[40, 1];
const RANDOM: &[(usize, usize)] = &[(3, 6), (5, 1), (0, 7)];
const RANDOM2: &[(usize, usize)] = &[(1, 9), (9, 1), (0, 13)];

/// Every mask kind with a few parameter choices.
fn single_terms() -> Vec<MaskTerm<'static>> {
    vec![
        MaskTerm::None,
        MaskTerm::Causal,
        MaskTerm::Sliding { left: 3, right: 0 },
        MaskTerm::Sliding { left: 0, right: 0 },
        MaskTerm::Sliding { left: 2, right: 5 },
        MaskTerm::Sliding { left: 31, right: 0 },
        MaskTerm::Sliding {
            left: 40,
            right: 40,
        },
        MaskTerm::Dilated {
            left: 3,
            right: 2,
            dilation: 2,
        },
        MaskTerm::Dilated {
            left: 5,
            right: 5,
            dilation: 3,
        },
        MaskTerm::Dilated {
            left: 1,
            right: 0,
            dilation: 1,
        },
        MaskTerm::Dilated {
            left: 4,
            right: 0,
            dilation: 7,
        },
        MaskTerm::GlobalSliding {
            left: 2,
            right: 1,
            global: GLOBALS,
        },
        MaskTerm::GlobalSliding {
            left: 0,
            right: 0,
            global: GLOBALS2,
        },
        MaskTerm::BlockSparse {
            block: 4,
            window: 1,
            global: &[0],
            random: RANDOM,
        },
        MaskTerm::BlockSparse {
            block: 32,
            window: 0,
            global: &[],
            random: &[],
        },
        MaskTerm::BlockSparse {
            block: 5,
            window: 0,
            global: &[3],
            random: RANDOM2,
        },
        MaskTerm::BlockSparse {
            block: 1,
            window: 2,
            global: &[],
            random: &[(10, 0)],
        },
        MaskTerm::KeyPadding { valid: 0 },
        MaskTerm::KeyPadding { valid: 1 },
        MaskTerm::KeyPadding { valid: 31 },
        MaskTerm::KeyPadding { valid: 33 },
        MaskTerm::KeyPadding { valid: 1000 },
    ]
}

/// The mask lists tested on every shape: nothing, each term alone, AND-pairs and a triple.
fn mask_lists() -> Vec<Vec<MaskTerm<'static>>> {
    let singles = single_terms();
    let mut lists = vec![vec![]];
    lists.extend(singles.iter().map(|&t| vec![t]));
    let core = [
        MaskTerm::Causal,
        MaskTerm::Sliding { left: 3, right: 2 },
        MaskTerm::Dilated {
            left: 3,
            right: 2,
            dilation: 2,
        },
        MaskTerm::GlobalSliding {
            left: 2,
            right: 1,
            global: GLOBALS,
        },
        MaskTerm::BlockSparse {
            block: 4,
            window: 1,
            global: &[0],
            random: RANDOM,
        },
        MaskTerm::KeyPadding { valid: 31 },
    ];
    for a in 0..core.len() {
        for b in a..core.len() {
            lists.push(vec![core[a], core[b]]);
        }
    }
    lists.push(vec![
        MaskTerm::Causal,
        MaskTerm::BlockSparse {
            block: 5,
            window: 0,
            global: &[3],
            random: RANDOM2,
        },
        MaskTerm::KeyPadding { valid: 33 },
    ]);
    lists
}

// ---------------------------------------------------------------------------------------------
// Agreement with the reference.

#[test]
fn every_mask_and_pair_on_every_shape() {
    let mut rng = Rng(1);
    let lists = mask_lists();
    for &s in SHAPES {
        let (shape, offset) = shape_of(s);
        let case = Case::random(&mut rng, shape, 1.5);
        for terms in &lists {
            for off in [0, offset] {
                let params = SdpaParams {
                    mask: Mask::new(terms).with_offset(off),
                    ..Default::default()
                };
                let got = case.run(&params);
                let want = case.reference(&params);
                assert_close(&got, &want, 1e-5, &|| {
                    format!("shape {shape:?}, offset {off}, mask {terms:?}")
                });
            }
        }
    }
}

#[test]
fn every_score_and_bias() {
    let mut rng = Rng(2);
    let slopes: Vec<f32> = (0..6).map(|h| 0.5f32.powi(h + 1)).collect();
    let t5_table = rng.vec(6 * 32, 1.0);
    let t5_small = rng.vec(6 * 10, 1.0);
    let masks: [&[MaskTerm<'_>]; 3] = [
        &[],
        &[MaskTerm::Causal],
        &[MaskTerm::Sliding { left: 4, right: 2 }],
    ];
    let scales = [None, Some(0.3f32), Some(-0.7), Some(0.0)];
    for (n, &s) in SHAPES.iter().enumerate() {
        let (shape, offset) = shape_of(s);
        let case = Case::random(&mut rng, shape, 1.0);
        let h = shape.heads;
        let biases = [
            Bias::None,
            Bias::Alibi {
                slopes: &slopes[..h],
            },
            Bias::T5 {
                bidirectional: true,
                num_buckets: 32,
                max_distance: 128,
                table: &t5_table[..h * 32],
            },
            Bias::T5 {
                bidirectional: false,
                num_buckets: 10,
                max_distance: 20,
                table: &t5_small[..h * 10],
            },
        ];
        for score in [Score::Dot, Score::Cosine, Score::NegSqL2, Score::NegL1] {
            for bias in biases {
                for (m, terms) in masks.iter().enumerate() {
                    let params = SdpaParams {
                        scale: scales[(n + m) % scales.len()],
                        score,
                        mask: Mask::new(terms).with_offset(offset),
                        bias,
                    };
                    let got = case.run(&params);
                    let want = case.reference(&params);
                    assert_close(&got, &want, 1e-5, &|| {
                        format!("shape {shape:?}, {params:?}")
                    });
                }
            }
        }
    }
}

#[test]
fn half_precision_storage_matches_reference() {
    let mut rng = Rng(3);
    let slopes = [0.5f32, 0.25, 0.125, 0.0625, 0.03, 0.01];
    let lists = mask_lists();
    for (n, &s) in SHAPES.iter().enumerate() {
        let (shape, offset) = shape_of(s);
        let case = Case::random(&mut rng, shape, 1.5);
        for (m, terms) in lists.iter().enumerate().step_by(3) {
            let score = [Score::Dot, Score::Cosine, Score::NegSqL2, Score::NegL1][(n + m) % 4];
            let bias = if m % 2 == 0 {
                Bias::None
            } else {
                Bias::Alibi {
                    slopes: &slopes[..shape.heads],
                }
            };
            let params = SdpaParams {
                score,
                bias,
                mask: Mask::new(terms).with_offset(offset),
                ..Default::default()
            };
            let what = || format!("shape {shape:?}, {params:?}");
            // Output rounding dominates: 2^-11 relative for f16, 2^-8 for bf16.
            let (got, want) = case.run_typed::<f16>(&params);
            assert_close(&got, &want, 1e-3, &|| format!("f16 {}", what()));
            let (got, want) = case.run_typed::<bf16>(&params);
            assert_close(&got, &want, 8e-3, &|| format!("bf16 {}", what()));
            // f32 storage through the generic path is the slice tier, bit for bit.
            let (got, _) = case.run_typed::<f32>(&params);
            assert_eq!(got, case.run(&params), "f32 typed vs sdpa: {}", what());
        }
    }
}

#[test]
fn t5_buckets_follow_the_t5_code() {
    // The kernel's buckets against the transcription above, over every distance that matters
    // (past max_distance everything is in the last bucket).
    for (bidirectional, num_buckets, max_distance) in [
        (true, 32, 128),
        (false, 32, 128),
        (true, 16, 32),
        (false, 10, 20),
        (true, 8, 9),
        (true, 4, 2),
        (false, 2, 5),
        (true, 64, 1000),
    ] {
        for rel in -1500i64..=1500 {
            assert_eq!(
                microattn::attention::t5_bucket(rel, bidirectional, num_buckets, max_distance),
                t5_bucket_ref(rel, bidirectional, num_buckets, max_distance),
                "relative {rel}, bidirectional {bidirectional}, {num_buckets} buckets, \
                 max distance {max_distance}"
            );
        }
        // Extreme relative positions land in the last bucket of their side.
        for rel in [i64::MIN, i64::MIN + 1, i64::MAX] {
            assert_eq!(
                microattn::attention::t5_bucket(rel, bidirectional, num_buckets, max_distance),
                t5_bucket_ref(
                    rel.clamp(-(1 << 62), 1 << 62),
                    bidirectional,
                    num_buckets,
                    max_distance
                ),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Large logits: the online softmax must not overflow, and well separated logits give the
// exact one-hot (or exact tie) weights.

#[test]
fn large_logits_are_exact_and_finite() {
    let mut rng = Rng(4);
    let shape = AttentionShape::multi_head(2, 1, 37, 70, 8, 5);
    let (ql, kl, vl, _) = shape.lengths().unwrap();
    // Integer inputs: q.k is exact in f32, so scale * q.k is the correctly rounded logit and
    // the gaps between logits are at least `scale`.
    let int_case = Case {
        shape,
        q: rng.ints(ql, 3),
        k: rng.ints(kl, 3),
        v: rng.vec(vl, 1.0),
    };
    let causal = [MaskTerm::Causal];
    let window = [MaskTerm::Sliding { left: 40, right: 3 }];
    for scale in [1e4f32, 1e6, 1e10, 1e20, 1e30, 1e35] {
        for (score, terms) in [
            (Score::Dot, &[][..]),
            (Score::Dot, &causal[..]),
            (Score::NegSqL2, &window[..]),
            (Score::NegL1, &causal[..]),
        ] {
            let params = SdpaParams {
                scale: Some(scale),
                score,
                mask: Mask::new(terms),
                ..Default::default()
            };
            let got = int_case.run(&params);
            let want = int_case.reference(&params);
            let what = || format!("scale {scale:e}, {score:?}, {terms:?}");
            assert!(got.iter().all(|x| x.is_finite()), "{}", what());
            // Each output is the mean of the v rows tied at the top: exact up to that mean's
            // rounding.
            for (g, w) in got.iter().zip(&want) {
                assert!((*g as f64 - w).abs() <= 1e-6, "{g} vs {w}: {}", what());
            }
        }
    }
    // Large random inputs with the default scale: logits in the thousands to millions.
    for amplitude in [1e2f32, 1e3, 3e4] {
        let case = Case::random(&mut rng, shape, amplitude);
        for score in [Score::Dot, Score::NegSqL2, Score::NegL1, Score::Cosine] {
            let params = SdpaParams {
                score,
                scale: (score == Score::Cosine).then_some(1e5),
                mask: Mask::new(&causal),
                ..Default::default()
            };
            let got = case.run(&params);
            let want = case.reference(&params);
            assert_close(&got, &want, 1e-5, &|| {
                format!("amplitude {amplitude}, {score:?}")
            });
        }
    }
    // Huge ALiBi slopes: the bias alone is ~1e30.
    let slopes = [1e30f32, 3e29];
    let case = Case::random(&mut rng, shape, 1.0);
    let params = SdpaParams {
        bias: Bias::Alibi { slopes: &slopes },
        mask: Mask::new(&window).with_offset(20),
        ..Default::default()
    };
    assert_close(&case.run(&params), &case.reference(&params), 1e-6, &|| {
        "huge ALiBi slopes".into()
    });
}

#[test]
fn logits_beyond_f32_range_stay_finite() {
    // scale * q.k overflows f32 to +inf for some keys (the f64 reference is still finite).
    // The kernel cannot be exact there, but it must not produce NaN: every output stays a
    // convex combination of the value rows.
    let mut rng = Rng(8);
    let shape = AttentionShape::single(20, 45, 4, 3);
    let (ql, kl, vl, _) = shape.lengths().unwrap();
    let case = Case {
        shape,
        q: rng.ints(ql, 2),
        k: rng.ints(kl, 2),
        v: rng.vec(vl, 1.0),
    };
    let causal = [MaskTerm::Causal];
    for (scale, score) in [
        (f32::MAX, Score::Dot),
        (-f32::MAX, Score::Dot),
        (f32::MAX, Score::NegL1),
        (1e38, Score::Cosine),
    ] {
        let params = SdpaParams {
            scale: Some(scale),
            score,
            mask: Mask::new(&causal),
            ..Default::default()
        };
        let got = case.run(&params);
        for (i, row) in got.chunks(3).enumerate() {
            for (c, &x) in row.iter().enumerate() {
                let column = case.v[c..].iter().step_by(3).take(i + 1);
                let lo = column.clone().copied().fold(f32::INFINITY, f32::min);
                let hi = column.copied().fold(f32::NEG_INFINITY, f32::max);
                assert!(
                    x.is_finite() && lo - 1e-6 <= x && x <= hi + 1e-6,
                    "row {i}: {x} outside [{lo}, {hi}], scale {scale:e}, {score:?}"
                );
            }
        }
    }
}

#[test]
fn fully_masked_rows_are_zero() {
    let mut rng = Rng(5);
    let shape = AttentionShape::multi_head(2, 2, 6, 40, 4, 3);
    let case = Case::random(&mut rng, shape, 1.0);
    let nothing = [MaskTerm::KeyPadding { valid: 0 }];
    let past_the_end = [MaskTerm::Sliding { left: 2, right: 2 }];
    let disjoint = [
        MaskTerm::KeyPadding { valid: 3 },
        MaskTerm::Sliding { left: 2, right: 2 },
    ];
    for (terms, offset) in [
        (&nothing[..], 0),
        (&past_the_end[..], 50),
        (&disjoint[..], 20),
    ] {
        let params = SdpaParams {
            mask: Mask::new(terms).with_offset(offset),
            ..Default::default()
        };
        let got = case.run(&params);
        assert!(got.iter().all(|&x| x == 0.0), "{terms:?} at {offset}");
        assert!(case.reference(&params).iter().all(|&x| x == 0.0));
    }
    // A causal window reaching past the last key: row 0 (position 40) sees key 39 only,
    // the later rows see nothing.
    let late_window = [MaskTerm::Causal, MaskTerm::Sliding { left: 1, right: 0 }];
    let params = SdpaParams {
        mask: Mask::new(&late_window).with_offset(40),
        ..Default::default()
    };
    let got = case.run(&params);
    assert_close(&got, &case.reference(&params), 1e-5, &|| {
        "late window".into()
    });
    for h in 0..2 {
        assert_eq!(&got[h * 18..][..3], &case.v[(h * 40 + 39) * 3..][..3]);
        assert!(
            got[h * 18 + 3..][..15].iter().all(|&x| x == 0.0),
            "head {h}"
        );
    }
}

#[test]
fn extreme_offsets_do_not_panic() {
    let mut rng = Rng(6);
    let shape = AttentionShape::single(4, 33, 4, 4);
    let case = Case::random(&mut rng, shape, 1.0);
    let lists = mask_lists();
    for offset in [usize::MAX, usize::MAX - 2, 1 << 63, i64::MAX as usize] {
        for terms in &lists {
            let params = SdpaParams {
                mask: Mask::new(terms).with_offset(offset),
                ..Default::default()
            };
            let got = case.run(&params);
            assert!(got.iter().all(|x| x.is_finite()));
        }
        // Biases read the positions too.
        let table = rng.vec(32, 1.0);
        for bias in [
            Bias::Alibi { slopes: &[0.5] },
            Bias::T5 {
                bidirectional: true,
                num_buckets: 32,
                max_distance: 128,
                table: &table,
            },
            Bias::T5 {
                bidirectional: false,
                num_buckets: 32,
                max_distance: 128,
                table: &table,
            },
        ] {
            let params = SdpaParams {
                mask: Mask::NONE.with_offset(offset),
                bias,
                ..Default::default()
            };
            let got = case.run(&params);
            assert!(got.iter().all(|x| x.is_finite()), "{bias:?} at {offset}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The fixed-size tier is the slice tier.

#[test]
fn fixed_tiers_agree_with_slice_tier() {
    let mut rng = Rng(7);
    const LQ: usize = 5;
    const LK: usize = 33;
    const D: usize = 7;
    const DV: usize = 3;
    let mut q = [[0.0f32; D]; LQ];
    let mut k = [[0.0f32; D]; LK];
    let mut v = [[0.0f32; DV]; LK];
    for x in q.iter_mut().flatten().chain(k.iter_mut().flatten()) {
        *x = rng.uniform();
    }
    for x in v.iter_mut().flatten() {
        *x = rng.uniform();
    }
    let causal = [MaskTerm::Causal];
    let params = SdpaParams {
        mask: Mask::new(&causal).with_offset(LK - LQ),
        bias: Bias::Alibi { slopes: &[0.25] },
        ..Default::default()
    };
    let mut fixed = [[0.0f32; DV]; LQ];
    sdpa_fixed(&q, &k, &v, &mut fixed, &params).unwrap();
    let case = Case {
        shape: AttentionShape::single(LQ, LK, D, DV),
        q: q.as_flattened().to_vec(),
        k: k.as_flattened().to_vec(),
        v: v.as_flattened().to_vec(),
    };
    assert_eq!(fixed.as_flattened(), case.run(&params).as_slice());
    assert_close(
        fixed.as_flattened(),
        &case.reference(&params),
        1e-5,
        &|| "sdpa_fixed".into(),
    );

    const H: usize = 6;
    const HKV: usize = 2;
    let mut qh = [[[0.0f32; D]; LQ]; H];
    let mut kh = [[[0.0f32; D]; LK]; HKV];
    let mut vh = [[[0.0f32; DV]; LK]; HKV];
    for x in qh.iter_mut().flatten().flatten() {
        *x = rng.uniform();
    }
    for x in kh.iter_mut().flatten().flatten() {
        *x = rng.uniform();
    }
    for x in vh.iter_mut().flatten().flatten() {
        *x = rng.uniform();
    }
    let window = [MaskTerm::Sliding { left: 6, right: 1 }];
    let table = rng.vec(H * 16, 1.0);
    let params = SdpaParams {
        mask: Mask::new(&window).with_offset(10),
        bias: Bias::T5 {
            bidirectional: true,
            num_buckets: 16,
            max_distance: 32,
            table: &table,
        },
        score: Score::Cosine,
        ..Default::default()
    };
    let mut fixed = [[[0.0f32; DV]; LQ]; H];
    sdpa_heads_fixed(&qh, &kh, &vh, &mut fixed, &params).unwrap();
    let case = Case {
        shape: AttentionShape::multi_head(H, HKV, LQ, LK, D, DV),
        q: qh.as_flattened().as_flattened().to_vec(),
        k: kh.as_flattened().as_flattened().to_vec(),
        v: vh.as_flattened().as_flattened().to_vec(),
    };
    let flat = fixed.as_flattened().as_flattened();
    assert_eq!(flat, case.run(&params).as_slice());
    assert_close(flat, &case.reference(&params), 1e-5, &|| {
        "sdpa_heads_fixed".into()
    });

    // The fixed tier still checks its parameters.
    let bad = SdpaParams {
        scale: Some(f32::NAN),
        ..Default::default()
    };
    let mut out = [[0.0f32; DV]; LQ];
    assert_eq!(
        sdpa_fixed(&q, &k, &v, &mut out, &bad),
        Err(Error::InvalidScale)
    );
    let bad = SdpaParams {
        bias: Bias::Alibi { slopes: &[1.0] },
        ..Default::default()
    };
    let mut out = [[[0.0f32; DV]; LQ]; H];
    assert_eq!(
        sdpa_heads_fixed(&qh, &kh, &vh, &mut out, &bad),
        Err(Error::InvalidBias)
    );
}

// ---------------------------------------------------------------------------------------------
// Every refusal: the right `Err`, no panic, and the output left untouched.

/// Runs `sdpa` and `sdpa_typed::<f16>` on buffers of the given lengths (inputs 1.0, output a
/// sentinel); checks both agree and that a refused call left the output untouched.
fn run_with_lengths(
    shape: AttentionShape,
    lens: (usize, usize, usize, usize),
    params: &SdpaParams<'_>,
) -> Result<(), Error> {
    let (q, k, v) = (
        vec![1.0f32; lens.0],
        vec![1.0f32; lens.1],
        vec![1.0f32; lens.2],
    );
    let mut out = vec![7.0f32; lens.3];
    let result = sdpa(&q, &k, &v, &mut out, shape, params);
    if result.is_err() {
        assert!(
            out.iter().all(|&x| x == 7.0),
            "output written on {result:?}"
        );
    }
    let cast = |x: &[f32]| x.iter().map(|&a| f16::from_f32(a)).collect::<Vec<_>>();
    let mut out16 = vec![f16::from_f32(7.0); lens.3];
    let mut scratch = vec![0.0f32; shape.dv.min(1 << 20)];
    let typed = sdpa_typed(
        &cast(&q),
        &cast(&k),
        &cast(&v),
        &mut out16,
        shape,
        params,
        &mut scratch,
    );
    assert_eq!(result, typed, "sdpa and sdpa_typed disagree");
    if typed.is_err() {
        assert!(out16.iter().all(|&x| x == f16::from_f32(7.0)));
    }
    result
}

#[test]
fn every_bad_input_is_an_error() {
    let shape = AttentionShape::multi_head(4, 2, 3, 5, 2, 6);
    let lens = (4 * 3 * 2, 2 * 5 * 2, 2 * 5 * 6, 4 * 3 * 6);
    let ok = SdpaParams::default();
    assert_eq!(run_with_lengths(shape, lens, &ok), Ok(()));

    // Zero dimensions, with slices of the (zero) size the shape implies.
    for zeroed in 0..6 {
        let mut dims = [4, 2, 3, 5, 2, 6];
        dims[zeroed] = 0;
        let [h, hkv, lq, lk, d, dv] = dims;
        let s = AttentionShape::multi_head(h, hkv, lq, lk, d, dv);
        let lens = (h * lq * d, hkv * lk * d, hkv * lk * dv, h * lq * dv);
        assert_eq!(
            run_with_lengths(s, lens, &ok),
            Err(Error::ZeroDimension),
            "{s:?}"
        );
        // ... and with the lengths of the valid shape.
        assert_eq!(
            run_with_lengths(s, (4, 4, 4, 4), &ok),
            Err(Error::ZeroDimension)
        );
    }

    // Each slice one short and one long.
    for which in 0..4 {
        for delta in [-1isize, 1] {
            let mut l = [lens.0, lens.1, lens.2, lens.3];
            let expected = l[which];
            l[which] = (l[which] as isize + delta) as usize;
            assert_eq!(
                run_with_lengths(shape, (l[0], l[1], l[2], l[3]), &ok),
                Err(Error::LengthMismatch {
                    expected,
                    found: l[which]
                }),
                "slice {which} off by {delta}"
            );
        }
    }
    // Empty slices for a non-empty shape.
    assert!(matches!(
        run_with_lengths(shape, (0, 0, 0, 0), &ok),
        Err(Error::LengthMismatch { .. })
    ));

    // Heads that do not divide (GQA group of 1.5, more KV heads than query heads).
    for (h, hkv) in [(3, 2), (2, 4), (5, 3)] {
        let s = AttentionShape::multi_head(h, hkv, 2, 2, 2, 2);
        assert_eq!(
            run_with_lengths(s, (h * 4, hkv * 4, hkv * 4, h * 4), &ok),
            Err(Error::HeadsMismatch)
        );
    }

    // Shapes whose element counts overflow usize.
    for s in [
        AttentionShape::multi_head(usize::MAX, 1, 2, 1, 1, 1),
        AttentionShape::single(usize::MAX / 2, 1, 3, 1),
        AttentionShape::single(1, usize::MAX, 2, 1),
        AttentionShape::single(1, 3, 1, usize::MAX),
    ] {
        assert_eq!(
            run_with_lengths(s, (1, 1, 1, 1), &ok),
            Err(Error::ShapeOverflow),
            "{s:?}"
        );
    }

    // Scales.
    for scale in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -f32::NAN] {
        let params = SdpaParams {
            scale: Some(scale),
            ..Default::default()
        };
        assert_eq!(
            run_with_lengths(shape, lens, &params),
            Err(Error::InvalidScale),
            "{scale}"
        );
    }
    for scale in [0.0f32, -1.0, f32::MAX, f32::MIN_POSITIVE] {
        let params = SdpaParams {
            scale: Some(scale),
            ..Default::default()
        };
        assert_eq!(run_with_lengths(shape, lens, &params), Ok(()), "{scale}");
    }

    // Malformed masks, alone and inside a valid AND.
    let zero_dilation = MaskTerm::Dilated {
        left: 1,
        right: 1,
        dilation: 0,
    };
    let zero_block = MaskTerm::BlockSparse {
        block: 0,
        window: 1,
        global: &[0],
        random: &[(0, 1)],
    };
    for terms in [
        vec![zero_dilation],
        vec![zero_block],
        vec![MaskTerm::Causal, zero_dilation],
        vec![zero_block, MaskTerm::KeyPadding { valid: 3 }],
    ] {
        let params = SdpaParams {
            mask: Mask::new(&terms),
            ..Default::default()
        };
        assert_eq!(
            run_with_lengths(shape, lens, &params),
            Err(Error::InvalidMask),
            "{terms:?}"
        );
    }

    // Biases that do not fit the 4 query heads, or are malformed.
    let t5 = |bidirectional, num_buckets, max_distance, table| Bias::T5 {
        bidirectional,
        num_buckets,
        max_distance,
        table,
    };
    let table = vec![0.5f32; 4 * 32 + 1];
    for bias in [
        Bias::Alibi { slopes: &[] },
        Bias::Alibi {
            slopes: &[1.0, 0.5, 0.25],
        },
        Bias::Alibi {
            slopes: &[1.0, 0.5, 0.25, 0.1, 0.05],
        },
        Bias::Alibi {
            slopes: &[1.0, f32::NAN, 0.25, 0.1],
        },
        Bias::Alibi {
            slopes: &[1.0, 0.5, f32::INFINITY, 0.1],
        },
        t5(true, 32, 128, &table[..4 * 32 - 1]),
        t5(true, 32, 128, &table[..4 * 32 + 1]),
        t5(true, 32, 128, &table[..32]),
        t5(false, 32, 128, &table[..0]),
        t5(true, 0, 128, &table[..0]),
        t5(true, 1, 128, &table[..4]),
        t5(true, 3, 128, &table[..12]),
        t5(false, 1, 128, &table[..4]),
        t5(true, 32, 8, &table[..4 * 32]),
        t5(true, 32, 0, &table[..4 * 32]),
        t5(false, 16, 8, &table[..4 * 16]),
    ] {
        let params = SdpaParams {
            bias,
            ..Default::default()
        };
        assert_eq!(
            run_with_lengths(shape, lens, &params),
            Err(Error::InvalidBias),
            "{bias:?}"
        );
    }
    // The smallest valid T5 settings are accepted.
    for bias in [
        t5(true, 4, 2, &table[..16]),
        t5(false, 2, 2, &table[..8]),
        t5(true, 32, 9, &table[..128]),
    ] {
        let params = SdpaParams {
            bias,
            ..Default::default()
        };
        assert_eq!(run_with_lengths(shape, lens, &params), Ok(()), "{bias:?}");
    }
}

#[test]
fn typed_scratch_must_hold_a_row() {
    let shape = AttentionShape::single(3, 4, 2, 5);
    let q = [f16::ONE; 6];
    let k = [f16::ONE; 8];
    let v = [f16::ONE; 20];
    let mut out = [f16::from_f32(7.0); 15];
    assert_eq!(sdpa_scratch_len(shape), 5);
    for len in [0, 1, 4] {
        let mut scratch = vec![0.0f32; len];
        assert_eq!(
            sdpa_typed(
                &q,
                &k,
                &v,
                &mut out,
                shape,
                &SdpaParams::default(),
                &mut scratch
            ),
            Err(Error::ScratchTooSmall {
                needed: 5,
                found: len
            })
        );
        assert!(out.iter().all(|&x| x == f16::from_f32(7.0)));
    }
    // Longer than needed is fine, and the answer is then exact (all values are 1).
    let mut scratch = [0.0f32; 9];
    sdpa_typed(
        &q,
        &k,
        &v,
        &mut out,
        shape,
        &SdpaParams::default(),
        &mut scratch,
    )
    .unwrap();
    assert!(out.iter().all(|&x| x == f16::ONE));
    let bq = [bf16::ONE; 6];
    let bk = [bf16::ONE; 8];
    let bv = [bf16::ONE; 20];
    let mut bout = [bf16::ZERO; 15];
    let mut scratch = [0.0f32; 4];
    assert_eq!(
        sdpa_typed(
            &bq,
            &bk,
            &bv,
            &mut bout,
            shape,
            &SdpaParams::default(),
            &mut scratch
        ),
        Err(Error::ScratchTooSmall {
            needed: 5,
            found: 4
        })
    );
}
