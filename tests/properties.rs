//! Properties of attention that hold for any input, checked with proptest:
//!
//! - the softmax weights of a row sum to 1 (read off by attending to one-hot values);
//! - without a mask, permuting the queries permutes the outputs, and permuting keys and
//!   values together leaves the outputs unchanged;
//! - a causal row ignores keys after its position;
//! - every sparse mask (random parameters, random AND-pairs) equals dense attention with the
//!   same boolean mask, written here in f64;
//! - `Mask::row` yields sorted, disjoint, non-empty runs that are exactly the allowed keys, and
//!   the number of keys attention visits is the number of allowed keys.

use microattn::attention::{sdpa, visited_keys, AttentionShape, Bias, Score, SdpaParams};
use microattn::mask::{Mask, MaskTerm};
use microattn::softmax::softmax_in_place;
use proptest::collection::vec;
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// Masks with owned storage, so proptest can generate and shrink them.

#[derive(Debug, Clone)]
enum TermSpec {
    None,
    Causal,
    Sliding(usize, usize),
    Dilated(usize, usize, usize),
    GlobalSliding(usize, usize, Vec<usize>),
    BlockSparse(usize, usize, Vec<usize>, Vec<(usize, usize)>),
    KeyPadding(usize),
}

impl TermSpec {
    fn term(&self) -> MaskTerm<'_> {
        match self {
            TermSpec::None => MaskTerm::None,
            TermSpec::Causal => MaskTerm::Causal,
            &TermSpec::Sliding(left, right) => MaskTerm::Sliding { left, right },
            &TermSpec::Dilated(left, right, dilation) => MaskTerm::Dilated {
                left,
                right,
                dilation,
            },
            TermSpec::GlobalSliding(left, right, global) => MaskTerm::GlobalSliding {
                left: *left,
                right: *right,
                global,
            },
            TermSpec::BlockSparse(block, window, global, random) => MaskTerm::BlockSparse {
                block: *block,
                window: *window,
                global,
                random,
            },
            &TermSpec::KeyPadding(valid) => MaskTerm::KeyPadding { valid },
        }
    }

    /// Whether this term allows key `j` for a query at position `p` (FORMAT.md's table).
    fn allows(&self, p: i64, j: i64) -> bool {
        let window = |left: usize, right: usize| j >= p - left as i64 && j <= p + right as i64;
        match self {
            TermSpec::None => true,
            TermSpec::Causal => j <= p,
            &TermSpec::Sliding(left, right) => window(left, right),
            &TermSpec::Dilated(left, right, r) => {
                let offset = j - p;
                offset % r as i64 == 0
                    && offset / r as i64 >= -(left as i64)
                    && offset / r as i64 <= right as i64
            }
            TermSpec::GlobalSliding(left, right, global) => {
                window(*left, *right)
                    || global.contains(&(j as usize))
                    || global.contains(&(p as usize))
            }
            TermSpec::BlockSparse(block, window, global, random) => {
                let (qb, kb) = (p as usize / block, j as usize / block);
                qb.abs_diff(kb) <= *window
                    || global.contains(&qb)
                    || global.contains(&kb)
                    || random.contains(&(qb, kb))
            }
            &TermSpec::KeyPadding(valid) => (j as usize) < valid,
        }
    }
}

fn term_spec() -> impl Strategy<Value = TermSpec> {
    prop_oneof![
        Just(TermSpec::None),
        Just(TermSpec::Causal),
        (0..12usize, 0..12usize).prop_map(|(l, r)| TermSpec::Sliding(l, r)),
        (0..8usize, 0..8usize, 1..6usize).prop_map(|(l, r, d)| TermSpec::Dilated(l, r, d)),
        (0..6usize, 0..6usize, vec(0..90usize, 0..4))
            .prop_map(|(l, r, g)| TermSpec::GlobalSliding(l, r, g)),
        (
            1..10usize,
            0..3usize,
            vec(0..12usize, 0..3),
            vec((0..12usize, 0..12usize), 0..5)
        )
            .prop_map(|(b, w, g, r)| TermSpec::BlockSparse(b, w, g, r)),
        (0..90usize).prop_map(TermSpec::KeyPadding),
    ]
}

/// No term, one term, or a random AND-pair.
fn mask_spec() -> impl Strategy<Value = Vec<TermSpec>> {
    vec(term_spec(), 0..=2)
}

fn score() -> impl Strategy<Value = Score> {
    prop_oneof![
        Just(Score::Dot),
        Just(Score::Cosine),
        Just(Score::NegSqL2),
        Just(Score::NegL1),
    ]
}

/// The dense boolean mask, `[lq, lk]`, straight from the terms.
fn dense_mask(specs: &[TermSpec], offset: usize, lq: usize, lk: usize) -> Vec<bool> {
    let mut allowed = vec![true; lq * lk];
    for i in 0..lq {
        for j in 0..lk {
            let p = (i + offset) as i64;
            allowed[i * lk + j] = specs.iter().all(|t| t.allows(p, j as i64));
        }
    }
    allowed
}

// ---------------------------------------------------------------------------------------------
// Inputs and the dense f64 attention.

/// SplitMix64 stream of uniform values in [-amplitude, amplitude).
fn values(seed: u64, n: usize, amplitude: f32) -> Vec<f32> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * amplitude
        })
        .collect()
}

fn logit(score: Score, q: &[f32], k: &[f32], scale: f64) -> f64 {
    let q: Vec<f64> = q.iter().map(|&x| x as f64).collect();
    let k: Vec<f64> = k.iter().map(|&x| x as f64).collect();
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    match score {
        Score::Dot => scale * dot(&q, &k),
        Score::Cosine => {
            scale * dot(&q, &k) / (dot(&q, &q).sqrt().max(1e-8) * dot(&k, &k).sqrt().max(1e-8))
        }
        Score::NegSqL2 => -scale * q.iter().zip(&k).map(|(a, b)| (a - b).powi(2)).sum::<f64>(),
        Score::NegL1 => -scale * q.iter().zip(&k).map(|(a, b)| (a - b).abs()).sum::<f64>(),
    }
}

/// Dense single-head attention in f64 with a boolean mask `[lq, lk]`: every score, the
/// disallowed ones dropped, softmax, weighted sum. Rows with no allowed key are zero.
#[allow(clippy::too_many_arguments)]
fn dense_attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    (lq, lk, d, dv): (usize, usize, usize, usize),
    allowed: &[bool],
    score: Score,
    scale: f64,
) -> Vec<f64> {
    let mut out = vec![0.0; lq * dv];
    for i in 0..lq {
        let logits: Vec<Option<f64>> = (0..lk)
            .map(|j| {
                allowed[i * lk + j].then(|| logit(score, &q[i * d..][..d], &k[j * d..][..d], scale))
            })
            .collect();
        let max = logits
            .iter()
            .flatten()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        if max == f64::NEG_INFINITY {
            continue;
        }
        let weights: Vec<f64> = logits
            .iter()
            .map(|l| l.map_or(0.0, |l| (l - max).exp()))
            .collect();
        let sum: f64 = weights.iter().sum();
        for (j, w) in weights.iter().enumerate() {
            for c in 0..dv {
                out[i * dv + c] += w / sum * v[j * dv + c] as f64;
            }
        }
    }
    out
}

fn rel_l2(got: &[f32], want: &[f64]) -> f64 {
    let num: f64 = got
        .iter()
        .zip(want)
        .map(|(&g, w)| (g as f64 - w).powi(2))
        .sum();
    let den: f64 = want.iter().map(|w| w * w).sum();
    num.sqrt() / den.sqrt().max(1e-12)
}

fn run(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    shape: AttentionShape,
    params: &SdpaParams<'_>,
) -> Vec<f32> {
    let mut out = vec![f32::NAN; shape.heads * shape.lq * shape.dv];
    sdpa(q, k, v, &mut out, shape, params).expect("valid call");
    out
}

/// A random permutation of `0..n`.
fn permutation(n: usize) -> impl Strategy<Value = Vec<usize>> {
    Just((0..n).collect::<Vec<usize>>()).prop_shuffle()
}

/// Rows of a `[n, width]` tensor reordered: row `r` of the result is row `perm[r]`.
fn permute_rows(x: &[f32], width: usize, perm: &[usize]) -> Vec<f32> {
    perm.iter()
        .flat_map(|&r| x[r * width..][..width].iter().copied())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every sparse mask computes exactly dense attention with the same boolean mask.
    #[test]
    fn sparse_mask_equals_dense_masked_attention(
        (lq, lk, d, dv) in (1..40usize, 1..80usize, 1..9usize, 1..6usize),
        offset in 0..60usize,
        specs in mask_spec(),
        score in score(),
        seed in any::<u64>(),
    ) {
        let terms: Vec<MaskTerm<'_>> = specs.iter().map(TermSpec::term).collect();
        let shape = AttentionShape::single(lq, lk, d, dv);
        let (q, k, v) = (
            values(seed, lq * d, 1.5),
            values(seed ^ 1, lk * d, 1.5),
            values(seed ^ 2, lk * dv, 1.0),
        );
        let params = SdpaParams {
            score,
            mask: Mask::new(&terms).with_offset(offset),
            ..Default::default()
        };
        let got = run(&q, &k, &v, shape, &params);
        let allowed = dense_mask(&specs, offset, lq, lk);
        let want = dense_attention(
            &q, &k, &v, (lq, lk, d, dv), &allowed, score, 1.0 / (d as f64).sqrt(),
        );
        prop_assert!(got.iter().all(|x| x.is_finite()));
        for i in 0..lq {
            if !allowed[i * lk..][..lk].contains(&true) {
                prop_assert!(got[i * dv..][..dv].iter().all(|&x| x == 0.0), "row {} not zero", i);
            }
        }
        let err = rel_l2(&got, &want);
        prop_assert!(err <= 1e-5, "rel_l2 {:e}", err);
    }

    /// Attending to one-hot values (`v` = identity, `dv = lk`) returns the weights: they are
    /// non-negative, zero on disallowed keys, and sum to 1 (0 for a row with no key).
    #[test]
    fn weights_sum_to_one(
        lq in 1..30usize,
        lk in 1..70usize,
        d in 1..9usize,
        offset in 0..60usize,
        specs in mask_spec(),
        score in score(),
        scale in prop_oneof![Just(None), (-1e4f32..1e4).prop_map(Some)],
        slope in prop_oneof![Just(None), (0.0f32..2.0).prop_map(Some)],
        seed in any::<u64>(),
    ) {
        let terms: Vec<MaskTerm<'_>> = specs.iter().map(TermSpec::term).collect();
        let shape = AttentionShape::single(lq, lk, d, lk);
        let q = values(seed, lq * d, 2.0);
        let k = values(seed ^ 1, lk * d, 2.0);
        let mut identity = vec![0.0f32; lk * lk];
        for j in 0..lk {
            identity[j * lk + j] = 1.0;
        }
        let slopes = [slope.unwrap_or(0.0)];
        let params = SdpaParams {
            scale,
            score,
            mask: Mask::new(&terms).with_offset(offset),
            bias: slope.map_or(Bias::None, |_| Bias::Alibi { slopes: &slopes }),
        };
        let weights = run(&q, &k, &identity, shape, &params);
        let allowed = dense_mask(&specs, offset, lq, lk);
        for i in 0..lq {
            let row = &weights[i * lk..][..lk];
            let any = allowed[i * lk..][..lk].contains(&true);
            for j in 0..lk {
                prop_assert!(row[j] >= 0.0 && row[j] <= 1.0, "weight {} at ({}, {})", row[j], i, j);
                if !allowed[i * lk + j] {
                    prop_assert_eq!(row[j], 0.0, "disallowed key {} of row {} weighted", j, i);
                }
            }
            let sum: f32 = row.iter().sum();
            let expected = if any { 1.0 } else { 0.0 };
            prop_assert!((sum - expected).abs() <= 1e-5, "row {} sums to {}", i, sum);
        }
    }

    /// The plain softmax sums to 1 at any magnitude, -inf entries get no weight.
    #[test]
    fn softmax_in_place_sums_to_one(
        x in vec(prop_oneof![
            -1e3f32..1e3,
            -1e30f32..1e30,
            Just(f32::NEG_INFINITY),
            Just(f32::MAX),
            Just(-f32::MAX),
        ], 1..100),
    ) {
        let mut w = x.clone();
        softmax_in_place(&mut w);
        let finite = x.iter().any(|v| v.is_finite());
        let sum: f32 = w.iter().sum();
        prop_assert!((sum - if finite { 1.0 } else { 0.0 }).abs() <= 1e-5, "sum {}", sum);
        for (wi, xi) in w.iter().zip(&x) {
            prop_assert!(*wi >= 0.0 && *wi <= 1.0);
            if *xi == f32::NEG_INFINITY {
                prop_assert_eq!(*wi, 0.0);
            }
        }
    }

    /// Without a mask every query row is computed alone: permuting the queries permutes the
    /// output rows, bit for bit.
    #[test]
    fn permuting_queries_permutes_outputs(
        (lq, perm) in (1..40usize).prop_flat_map(|n| (Just(n), permutation(n))),
        (lk, d, dv) in (1..70usize, 1..9usize, 1..6usize),
        score in score(),
        seed in any::<u64>(),
    ) {
        let shape = AttentionShape::single(lq, lk, d, dv);
        let q = values(seed, lq * d, 2.0);
        let k = values(seed ^ 1, lk * d, 2.0);
        let v = values(seed ^ 2, lk * dv, 1.0);
        let params = SdpaParams { score, ..Default::default() };
        let out = run(&q, &k, &v, shape, &params);
        let permuted = run(&permute_rows(&q, d, &perm), &k, &v, shape, &params);
        prop_assert_eq!(permuted, permute_rows(&out, dv, &perm));
    }

    /// Without a mask attention is a function of the set of (key, value) pairs: permuting
    /// keys and values together changes the output only by rounding.
    #[test]
    fn permuting_keys_and_values_leaves_output(
        (lk, perm) in (1..80usize).prop_flat_map(|n| (Just(n), permutation(n))),
        (lq, d, dv) in (1..20usize, 1..9usize, 1..6usize),
        score in score(),
        seed in any::<u64>(),
    ) {
        let shape = AttentionShape::single(lq, lk, d, dv);
        let q = values(seed, lq * d, 2.0);
        let k = values(seed ^ 1, lk * d, 2.0);
        let v = values(seed ^ 2, lk * dv, 1.0);
        let params = SdpaParams { score, ..Default::default() };
        let out = run(&q, &k, &v, shape, &params);
        let permuted = run(&q, &permute_rows(&k, d, &perm), &permute_rows(&v, dv, &perm), shape, &params);
        for (a, b) in out.iter().zip(&permuted) {
            prop_assert!((a - b).abs() <= 2e-6, "{} vs {}", a, b);
        }
    }

    /// A causal row at position p never looks past key p: replacing every key and value
    /// after a cut leaves the rows at or before the cut bit-for-bit unchanged, whatever other
    /// term is ANDed with the causal one.
    #[test]
    fn causal_rows_ignore_later_keys(
        (lq, lk, d, dv) in (1..40usize, 1..80usize, 1..9usize, 1..6usize),
        offset in 0..50usize,
        cut in 0..80usize,
        extra in prop_oneof![Just(None), term_spec().prop_map(Some)],
        score in score(),
        seed in any::<u64>(),
    ) {
        let mut specs = vec![TermSpec::Causal];
        specs.extend(extra);
        let terms: Vec<MaskTerm<'_>> = specs.iter().map(TermSpec::term).collect();
        let shape = AttentionShape::single(lq, lk, d, dv);
        let q = values(seed, lq * d, 2.0);
        let (mut k, mut v) = (values(seed ^ 1, lk * d, 2.0), values(seed ^ 2, lk * dv, 1.0));
        let params = SdpaParams {
            score,
            mask: Mask::new(&terms).with_offset(offset),
            ..Default::default()
        };
        let before = run(&q, &k, &v, shape, &params);
        // Keys after the cut become huge: if a row peeked at them it would change a lot.
        let first_changed = (cut + 1).min(lk);
        for (x, y) in k[first_changed * d..].iter_mut().zip(values(seed ^ 3, lk * d, 1e4)) {
            *x = y;
        }
        for (x, y) in v[first_changed * dv..].iter_mut().zip(values(seed ^ 4, lk * dv, 1e4)) {
            *x = y;
        }
        let after = run(&q, &k, &v, shape, &params);
        for i in 0..lq {
            if i + offset <= cut {
                prop_assert_eq!(&before[i * dv..][..dv], &after[i * dv..][..dv], "row {}", i);
            }
        }
    }

    /// Grouped-query attention equals multi-head attention with each KV head repeated for
    /// its group, bit for bit.
    #[test]
    fn gqa_equals_repeated_kv_heads(
        (kv_heads, group) in (1..4usize, 1..4usize),
        (lq, lk, d, dv) in (1..12usize, 1..40usize, 1..6usize, 1..5usize),
        specs in mask_spec(),
        seed in any::<u64>(),
    ) {
        let heads = kv_heads * group;
        let terms: Vec<MaskTerm<'_>> = specs.iter().map(TermSpec::term).collect();
        let q = values(seed, heads * lq * d, 2.0);
        let k = values(seed ^ 1, kv_heads * lk * d, 2.0);
        let v = values(seed ^ 2, kv_heads * lk * dv, 1.0);
        let repeat = |x: &[f32], width: usize| -> Vec<f32> {
            (0..heads)
                .flat_map(|h| x[(h / group) * lk * width..][..lk * width].iter().copied())
                .collect()
        };
        let params = SdpaParams { mask: Mask::new(&terms), ..Default::default() };
        let gqa = run(&q, &k, &v, AttentionShape::multi_head(heads, kv_heads, lq, lk, d, dv), &params);
        let mha = run(
            &q,
            &repeat(&k, d),
            &repeat(&v, dv),
            AttentionShape::multi_head(heads, heads, lq, lk, d, dv),
            &params,
        );
        prop_assert_eq!(gqa, mha);
    }
}

proptest! {
    // Mask structure is cheap to check and has the most parameters: more cases.
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// `Mask::row` yields sorted, disjoint, non-empty runs inside `0..lk` that cover exactly
    /// the keys the definition allows.
    #[test]
    fn row_runs_are_sorted_disjoint_and_exact(
        lq in 1..50usize,
        lk in 1..120usize,
        offset in 0..80usize,
        specs in mask_spec(),
    ) {
        let terms: Vec<MaskTerm<'_>> = specs.iter().map(TermSpec::term).collect();
        let mask = Mask::new(&terms).with_offset(offset);
        let allowed = dense_mask(&specs, offset, lq, lk);
        for i in 0..lq {
            let mut covered = vec![false; lk];
            let mut previous_end = 0;
            for run in mask.row(i, lk) {
                prop_assert!(run.start < run.end, "empty run {:?} in row {}", run, i);
                prop_assert!(run.start >= previous_end, "run {:?} overlaps or unsorted", run);
                prop_assert!(run.end <= lk);
                previous_end = run.end;
                for j in run {
                    covered[j] = true;
                }
            }
            prop_assert_eq!(&covered[..], &allowed[i * lk..][..lk], "row {}", i);
            for j in 0..lk {
                prop_assert_eq!(mask.allows(i, j), allowed[i * lk + j]);
            }
        }
    }

    /// The keys attention visits are the allowed keys, no more: `visited_keys` equals the
    /// brute-force count (times the heads), and a window of width w visits at most w keys
    /// per row however long the sequence.
    #[test]
    fn visited_keys_are_the_allowed_keys(
        heads in 1..4usize,
        lq in 1..60usize,
        lk in 1..300usize,
        offset in 0..100usize,
        specs in mask_spec(),
        (left, right) in (0..16usize, 0..16usize),
    ) {
        let terms: Vec<MaskTerm<'_>> = specs.iter().map(TermSpec::term).collect();
        let mask = Mask::new(&terms).with_offset(offset);
        let shape = AttentionShape::multi_head(heads, 1, lq, lk, 4, 4);
        let allowed = dense_mask(&specs, offset, lq, lk);
        let count = allowed.iter().filter(|&&a| a).count();
        prop_assert_eq!(visited_keys(shape, &mask).unwrap(), heads * count);

        let window = [MaskTerm::Sliding { left, right }];
        let visited = visited_keys(shape, &Mask::new(&window).with_offset(offset)).unwrap();
        prop_assert!(visited <= heads * lq * (left + right + 1));
        let brute = dense_mask(&[TermSpec::Sliding(left, right)], offset, lq, lk)
            .iter()
            .filter(|&&a| a)
            .count();
        prop_assert_eq!(visited, heads * brute);
    }
}
