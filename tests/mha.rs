//! Multi-head attention and the dense layer against an f64 reference written from the
//! definitions (PyTorch `nn.MultiheadAttention`: three input projections, per-head softmax
//! attention, output projection), plus every error path.

use microattn::attention::{Bias, Score, SdpaParams};
use microattn::mask::{Mask, MaskTerm};
use microattn::mha::{
    mha, mha_fixed, mha_scratch_len, mha_typed, MhaScratch, MhaShape, MhaWeights, MhaWeightsFixed,
};
use microattn::projection::{linear, linear_fixed, linear_mixed, linear_typed, LinearShape};
use microattn::{bf16, f16, Element, Error};

/// SplitMix64: a tiny deterministic generator, so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[-amp, amp)`.
    fn uniform(&mut self, amp: f32) -> f32 {
        let unit = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        (2.0 * unit - 1.0) * amp
    }

    fn vec(&mut self, n: usize, amp: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(amp)).collect()
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// One module's parameters and inputs, f32, PyTorch layout.
struct Problem {
    shape: MhaShape,
    query: Vec<f32>,
    key: Vec<f32>,
    value: Vec<f32>,
    in_w: Vec<f32>,
    in_b: Vec<f32>,
    out_w: Vec<f32>,
    out_b: Vec<f32>,
}

impl Problem {
    /// Random problem; `self_attn` makes key and value the query itself.
    fn random(seed: u64, lq: usize, lk: usize, e: usize, heads: usize, self_attn: bool) -> Self {
        let mut rng = Rng(seed);
        // Weights scaled like PyTorch's xavier init so logits stay O(1) to O(10).
        let w_amp = (6.0 / (2.0 * e as f32)).sqrt() * 1.5;
        let query = rng.vec(lq * e, 1.0);
        let (key, value) = if self_attn {
            assert_eq!(lq, lk);
            (query.clone(), query.clone())
        } else {
            (rng.vec(lk * e, 1.0), rng.vec(lk * e, 1.0))
        };
        Problem {
            shape: MhaShape::new(lq, lk, e, heads),
            query,
            key,
            value,
            in_w: rng.vec(3 * e * e, w_amp),
            in_b: rng.vec(3 * e, 0.3),
            out_w: rng.vec(e * e, w_amp),
            out_b: rng.vec(e, 0.3),
        }
    }

    fn weights(&self) -> MhaWeights<'_, f32> {
        MhaWeights {
            in_proj_weight: &self.in_w,
            in_proj_bias: Some(&self.in_b),
            out_proj_weight: &self.out_w,
            out_proj_bias: Some(&self.out_b),
        }
    }

    fn run(&self, params: &SdpaParams<'_>) -> Vec<f32> {
        let s = self.shape;
        let mut out = vec![0.0f32; s.lq * s.embed];
        let mut scratch = vec![f32::NAN; mha_scratch_len(s.lq, s.lk, s.embed)];
        mha(
            &self.query,
            &self.key,
            &self.value,
            &self.weights(),
            &mut out,
            s,
            params,
            &mut scratch,
        )
        .unwrap();
        out
    }

    /// The same problem with every tensor rounded to `E`, and the kernel run in `E`.
    fn run_typed<E: Element>(&self, params: &SdpaParams<'_>) -> (Problem, Vec<f32>) {
        let round = |v: &[f32]| v.iter().map(|&x| E::from_f32(x)).collect::<Vec<E>>();
        let widen = |v: &[E]| v.iter().map(|x| x.to_f32()).collect::<Vec<f32>>();
        let (q, k, v) = (round(&self.query), round(&self.key), round(&self.value));
        let (iw, ib, ow, ob) = (
            round(&self.in_w),
            round(&self.in_b),
            round(&self.out_w),
            round(&self.out_b),
        );
        let s = self.shape;
        let weights = MhaWeights {
            in_proj_weight: &iw,
            in_proj_bias: Some(&ib),
            out_proj_weight: &ow,
            out_proj_bias: Some(&ob),
        };
        let mut out = vec![E::default(); s.lq * s.embed];
        let mut scratch = vec![f32::NAN; mha_scratch_len(s.lq, s.lk, s.embed)];
        mha_typed(&q, &k, &v, &weights, &mut out, s, params, &mut scratch).unwrap();
        let rounded = Problem {
            shape: s,
            query: widen(&q),
            key: widen(&k),
            value: widen(&v),
            in_w: widen(&iw),
            in_b: widen(&ib),
            out_w: widen(&ow),
            out_b: widen(&ob),
        };
        (rounded, widen(&out))
    }
}

/// f64 reference. `allowed(i, j)` is the mask, `bias(h, i, j)` the additive logit bias,
/// `scale` the logit scale (`None`: `1/sqrt(hd)`).
fn reference(
    p: &Problem,
    scale: Option<f64>,
    allowed: impl Fn(usize, usize) -> bool,
    bias: impl Fn(usize, usize, usize) -> f64,
) -> Vec<f64> {
    let MhaShape {
        lq,
        lk,
        embed: e,
        heads,
    } = p.shape;
    let hd = e / heads;
    let scale = scale.unwrap_or(1.0 / (hd as f64).sqrt());
    // x [n, e] times rows `first..first+e` of in_w, plus the matching bias.
    let project = |x: &[f32], n: usize, w: &[f32], b: &[f32], first: usize| -> Vec<f64> {
        let mut y = vec![0.0f64; n * e];
        for i in 0..n {
            for o in 0..e {
                let mut s = b[first + o] as f64;
                for c in 0..e {
                    s += x[i * e + c] as f64 * w[(first + o) * e + c] as f64;
                }
                y[i * e + o] = s;
            }
        }
        y
    };
    let q = project(&p.query, lq, &p.in_w, &p.in_b, 0);
    let k = project(&p.key, lk, &p.in_w, &p.in_b, e);
    let v = project(&p.value, lk, &p.in_w, &p.in_b, 2 * e);
    let mut concat = vec![0.0f64; lq * e];
    for h in 0..heads {
        let cols = h * hd..(h + 1) * hd;
        for i in 0..lq {
            let logits: Vec<Option<f64>> = (0..lk)
                .map(|j| {
                    allowed(i, j).then(|| {
                        let dot: f64 = cols.clone().map(|c| q[i * e + c] * k[j * e + c]).sum();
                        scale * dot + bias(h, i, j)
                    })
                })
                .collect();
            let max = logits
                .iter()
                .flatten()
                .copied()
                .fold(f64::NEG_INFINITY, f64::max);
            if max == f64::NEG_INFINITY {
                continue; // no allowed key: zeros
            }
            let weights: Vec<f64> = logits
                .iter()
                .map(|l| l.map_or(0.0, |l| (l - max).exp()))
                .collect();
            let total: f64 = weights.iter().sum();
            for c in cols.clone() {
                concat[i * e + c] = (0..lk).map(|j| weights[j] * v[j * e + c]).sum::<f64>() / total;
            }
        }
    }
    let mut out = vec![0.0f64; lq * e];
    for i in 0..lq {
        for o in 0..e {
            let mut s = p.out_b[o] as f64;
            for c in 0..e {
                s += concat[i * e + c] * p.out_w[o * e + c] as f64;
            }
            out[i * e + o] = s;
        }
    }
    out
}

fn no_mask(_: usize, _: usize) -> bool {
    true
}

fn no_bias(_: usize, _: usize, _: usize) -> f64 {
    0.0
}

fn rel_l2(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    assert!(got.iter().all(|x| x.is_finite()), "non-finite output");
    let num: f64 = got
        .iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w).powi(2))
        .sum();
    let den: f64 = want.iter().map(|w| w * w).sum();
    num.sqrt() / den.sqrt().max(1e-12)
}

const F32_TOL: f64 = 1e-5;

#[test]
fn self_attention_matches_reference() {
    // Includes one head, head_dim 1, odd head_dim, and more than one 32-key tile.
    for (seed, l, e, heads) in [
        (1, 1, 4, 1),
        (2, 5, 8, 2),
        (3, 7, 16, 4),
        (4, 10, 12, 3),
        (5, 9, 32, 8),
        (6, 6, 5, 5),
        (7, 40, 8, 1),
        (8, 70, 24, 6),
    ] {
        let p = Problem::random(seed, l, l, e, heads, true);
        let err = rel_l2(
            &p.run(&SdpaParams::default()),
            &reference(&p, None, no_mask, no_bias),
        );
        assert!(err < F32_TOL, "l={l} e={e} h={heads}: rel_l2 {err:e}");
    }
}

#[test]
fn cross_attention_matches_reference() {
    for (seed, lq, lk, e, heads) in [
        (11, 6, 9, 16, 2),
        (12, 1, 40, 8, 4),
        (13, 12, 3, 12, 2),
        (14, 33, 65, 16, 8),
    ] {
        let p = Problem::random(seed, lq, lk, e, heads, false);
        let err = rel_l2(
            &p.run(&SdpaParams::default()),
            &reference(&p, None, no_mask, no_bias),
        );
        assert!(
            err < F32_TOL,
            "lq={lq} lk={lk} e={e} h={heads}: rel_l2 {err:e}"
        );
    }
}

#[test]
fn causal_self_attention_matches_reference() {
    let causal = [MaskTerm::Causal];
    let params = SdpaParams {
        mask: Mask::new(&causal),
        ..Default::default()
    };
    for (seed, l, e, heads) in [(21, 12, 32, 8), (22, 37, 16, 4), (23, 3, 6, 3)] {
        let p = Problem::random(seed, l, l, e, heads, true);
        let want = reference(&p, None, |i, j| j <= i, no_bias);
        let err = rel_l2(&p.run(&params), &want);
        assert!(err < F32_TOL, "l={l} e={e} h={heads}: rel_l2 {err:e}");
    }
}

#[test]
fn causal_decode_step_against_longer_memory() {
    // Two new queries at positions 7 and 8 over a cache of 9 keys.
    let causal = [MaskTerm::Causal];
    let params = SdpaParams {
        mask: Mask::new(&causal).with_offset(7),
        ..Default::default()
    };
    let p = Problem::random(31, 2, 9, 8, 2, false);
    let want = reference(&p, None, |i, j| j <= i + 7, no_bias);
    let err = rel_l2(&p.run(&params), &want);
    assert!(err < F32_TOL, "rel_l2 {err:e}");
}

#[test]
fn window_padding_alibi_and_scale_pass_through() {
    let terms = [
        MaskTerm::Sliding { left: 3, right: 1 },
        MaskTerm::KeyPadding { valid: 10 },
    ];
    let slopes = [0.5f32, 0.25, 0.125, 0.0625];
    let params = SdpaParams {
        scale: Some(0.3),
        mask: Mask::new(&terms),
        bias: Bias::Alibi { slopes: &slopes },
        ..Default::default()
    };
    let p = Problem::random(41, 12, 12, 16, 4, true);
    let want = reference(
        &p,
        Some(0.3f32 as f64),
        |i, j| j + 3 >= i && j <= i + 1 && j < 10,
        |h, i, j| -(slopes[h] as f64) * (i as f64 - j as f64).abs(),
    );
    let err = rel_l2(&p.run(&params), &want);
    assert!(err < F32_TOL, "rel_l2 {err:e}");
}

#[test]
fn other_score_functions_pass_through() {
    // Negative squared L2 distance between the projected query and key of each head.
    let params = SdpaParams {
        score: Score::NegSqL2,
        ..Default::default()
    };
    let p = Problem::random(45, 5, 7, 8, 2, false);
    let got = p.run(&params);
    // Shift the reference: -|q-k|² = 2 q·k - |q|² - |k|²; |q|² is constant per row and drops
    // out of the softmax, -|k|² enters as a per-key bias. Compute that bias from the math.
    let e = 8;
    let hd = 4;
    let k_proj: Vec<f64> = (0..7 * e)
        .map(|idx| {
            let (j, o) = (idx / e, idx % e);
            let mut s = p.in_b[e + o] as f64;
            for c in 0..e {
                s += p.key[j * e + c] as f64 * p.in_w[(e + o) * e + c] as f64;
            }
            s
        })
        .collect();
    let scale = 1.0 / (hd as f64).sqrt();
    let want = reference(&p, Some(2.0 * scale), no_mask, |h, _, j| {
        let sq: f64 = (h * hd..(h + 1) * hd)
            .map(|c| k_proj[j * e + c].powi(2))
            .sum();
        -scale * sq
    });
    let err = rel_l2(&got, &want);
    assert!(err < F32_TOL, "rel_l2 {err:e}");
}

#[test]
fn fully_masked_rows_give_the_output_bias() {
    let terms = [MaskTerm::KeyPadding { valid: 0 }];
    let params = SdpaParams {
        mask: Mask::new(&terms),
        ..Default::default()
    };
    let p = Problem::random(51, 4, 6, 8, 2, false);
    let out = p.run(&params);
    for row in out.chunks(8) {
        assert_eq!(row, &p.out_b[..]);
    }
}

#[test]
fn no_biases_is_zero_biases() {
    let mut p = Problem::random(61, 6, 6, 12, 3, true);
    p.in_b.iter_mut().for_each(|b| *b = 0.0);
    p.out_b.iter_mut().for_each(|b| *b = 0.0);
    let s = p.shape;
    let weights = MhaWeights {
        in_proj_weight: &p.in_w,
        in_proj_bias: None,
        out_proj_weight: &p.out_w,
        out_proj_bias: None,
    };
    let mut out = vec![0.0f32; 6 * 12];
    let mut scratch = vec![0.0f32; mha_scratch_len(6, 6, 12)];
    let params = SdpaParams::default();
    mha(
        &p.query,
        &p.key,
        &p.value,
        &weights,
        &mut out,
        s,
        &params,
        &mut scratch,
    )
    .unwrap();
    let err = rel_l2(&out, &reference(&p, None, no_mask, no_bias));
    assert!(err < F32_TOL, "rel_l2 {err:e}");
}

#[test]
fn permuting_keys_and_values_together_changes_nothing() {
    let p = Problem::random(71, 5, 11, 16, 4, false);
    let before = p.run(&SdpaParams::default());
    let mut permuted = Problem::random(71, 5, 11, 16, 4, false);
    let order = [3usize, 10, 0, 7, 1, 9, 2, 8, 4, 6, 5];
    for (dst, &src) in order.iter().enumerate() {
        permuted.key[dst * 16..][..16].copy_from_slice(&p.key[src * 16..][..16]);
        permuted.value[dst * 16..][..16].copy_from_slice(&p.value[src * 16..][..16]);
    }
    let after = permuted.run(&SdpaParams::default());
    for (a, b) in before.iter().zip(&after) {
        assert!((a - b).abs() <= 1e-5 * (1.0 + a.abs()), "{a} vs {b}");
    }
}

#[test]
fn f16_and_bf16_storage_match_reference() {
    let causal = [MaskTerm::Causal];
    let params = SdpaParams {
        mask: Mask::new(&causal),
        ..Default::default()
    };
    let p = Problem::random(81, 12, 12, 32, 8, true);
    let want_of = |r: &Problem| reference(r, None, |i, j| j <= i, no_bias);
    let (rounded, got) = p.run_typed::<f16>(&params);
    let err = rel_l2(&got, &want_of(&rounded));
    assert!(err < 2e-3, "f16 rel_l2 {err:e}");
    let (rounded, got) = p.run_typed::<bf16>(&params);
    let err = rel_l2(&got, &want_of(&rounded));
    assert!(err < 1e-2, "bf16 rel_l2 {err:e}");
    // f32 through the generic path agrees with the f32 entry point.
    let (_, got) = p.run_typed::<f32>(&params);
    let direct = p.run(&params);
    for (a, b) in got.iter().zip(&direct) {
        assert!((a - b).abs() <= 1e-6 * (1.0 + b.abs()), "{a} vs {b}");
    }
}

#[test]
fn fixed_tier_equals_slice_tier() {
    const LQ: usize = 4;
    const LK: usize = 6;
    const E: usize = 8;
    let p = Problem::random(91, LQ, LK, E, 2, false);
    let rows =
        |v: &[f32]| -> Vec<[f32; E]> { v.chunks(E).map(|c| c.try_into().unwrap()).collect() };
    let query: [[f32; E]; LQ] = rows(&p.query).try_into().unwrap();
    let key: [[f32; E]; LK] = rows(&p.key).try_into().unwrap();
    let value: [[f32; E]; LK] = rows(&p.value).try_into().unwrap();
    let in_rows: [[f32; E]; 3 * E] = rows(&p.in_w).try_into().unwrap();
    let in_w: [[[f32; E]; E]; 3] = [0, 1, 2].map(|b| in_rows[b * E..][..E].try_into().unwrap());
    let in_b: [[f32; E]; 3] = rows(&p.in_b).try_into().unwrap();
    let out_w: [[f32; E]; E] = rows(&p.out_w).try_into().unwrap();
    let out_b: [f32; E] = p.out_b[..].try_into().unwrap();
    let weights = MhaWeightsFixed::<E, 2> {
        in_proj_weight: &in_w,
        in_proj_bias: Some(&in_b),
        out_proj_weight: &out_w,
        out_proj_bias: Some(&out_b),
    };
    let causal = [MaskTerm::Causal];
    let params = SdpaParams {
        mask: Mask::new(&causal).with_offset(2),
        ..Default::default()
    };
    let mut out = [[0.0f32; E]; LQ];
    let mut scratch = MhaScratch::new();
    mha_fixed(
        &query,
        &key,
        &value,
        &weights,
        &mut out,
        &params,
        &mut scratch,
    )
    .unwrap();
    assert_eq!(out.as_flattened(), &p.run(&params)[..]);
    assert_eq!(
        core::mem::size_of::<MhaScratch<LQ, LK, E>>(),
        mha_scratch_len(LQ, LK, E) * 4
    );
}

/// Runs `mha` on the buffers of `p` with the given overrides and returns its result.
struct Call<'a> {
    p: &'a Problem,
    shape: MhaShape,
    query: usize,
    key: usize,
    value: usize,
    in_w: usize,
    in_b: Option<usize>,
    out_w: usize,
    out_b: Option<usize>,
    out: usize,
    scratch: usize,
}

impl<'a> Call<'a> {
    fn new(p: &'a Problem) -> Self {
        let s = p.shape;
        Call {
            p,
            shape: s,
            query: p.query.len(),
            key: p.key.len(),
            value: p.value.len(),
            in_w: p.in_w.len(),
            in_b: Some(p.in_b.len()),
            out_w: p.out_w.len(),
            out_b: Some(p.out_b.len()),
            out: s.lq * s.embed,
            scratch: mha_scratch_len(s.lq, s.lk, s.embed),
        }
    }

    fn run(&self, params: &SdpaParams<'_>) -> Result<(), Error> {
        // Buffers padded with spare elements so lengths can also be too long.
        let pad = |v: &[f32], n: usize| {
            let mut v = v.to_vec();
            v.resize(n, 0.5);
            v
        };
        let p = self.p;
        let (q, k, v) = (
            pad(&p.query, self.query),
            pad(&p.key, self.key),
            pad(&p.value, self.value),
        );
        let (iw, ow) = (pad(&p.in_w, self.in_w), pad(&p.out_w, self.out_w));
        let ib = self.in_b.map(|n| pad(&p.in_b, n));
        let ob = self.out_b.map(|n| pad(&p.out_b, n));
        let weights = MhaWeights {
            in_proj_weight: &iw,
            in_proj_bias: ib.as_deref(),
            out_proj_weight: &ow,
            out_proj_bias: ob.as_deref(),
        };
        let sentinel = 7.25f32;
        let mut out = vec![sentinel; self.out];
        let mut scratch = vec![0.0f32; self.scratch];
        let result = mha(
            &q,
            &k,
            &v,
            &weights,
            &mut out,
            self.shape,
            params,
            &mut scratch,
        );
        if result.is_err() {
            assert!(out.iter().all(|&x| x == sentinel), "output written on Err");
        }
        result
    }
}

#[test]
fn bad_inputs_are_errors() {
    let p = Problem::random(101, 3, 5, 8, 2, false);
    let ok = SdpaParams::default();
    assert_eq!(Call::new(&p).run(&ok), Ok(()));
    let mismatch = |expected, found| Err(Error::LengthMismatch { expected, found });

    let with_shape = |lq, lk, e, h| Call {
        shape: MhaShape::new(lq, lk, e, h),
        ..Call::new(&p)
    };
    assert_eq!(with_shape(0, 5, 8, 2).run(&ok), Err(Error::ZeroDimension));
    assert_eq!(with_shape(3, 0, 8, 2).run(&ok), Err(Error::ZeroDimension));
    assert_eq!(with_shape(3, 5, 0, 2).run(&ok), Err(Error::ZeroDimension));
    assert_eq!(with_shape(3, 5, 8, 0).run(&ok), Err(Error::ZeroDimension));
    assert_eq!(with_shape(3, 5, 8, 3).run(&ok), Err(Error::HeadsMismatch));
    assert_eq!(with_shape(3, 5, 8, 16).run(&ok), Err(Error::HeadsMismatch));
    assert_eq!(
        with_shape(usize::MAX / 2, 5, 8, 2).run(&ok),
        Err(Error::ShapeOverflow)
    );

    let c = |f: fn(&mut Call)| {
        let mut call = Call::new(&p);
        f(&mut call);
        call.run(&SdpaParams::default())
    };
    assert_eq!(c(|c| c.query -= 1), mismatch(24, 23));
    assert_eq!(c(|c| c.key += 8), mismatch(40, 48));
    assert_eq!(c(|c| c.value -= 8), mismatch(40, 32));
    assert_eq!(c(|c| c.in_w -= 8), mismatch(192, 184));
    assert_eq!(c(|c| c.in_b = Some(16)), mismatch(24, 16));
    assert_eq!(c(|c| c.out_w += 1), mismatch(64, 65));
    assert_eq!(c(|c| c.out_b = Some(24)), mismatch(8, 24));
    assert_eq!(c(|c| c.out -= 8), mismatch(24, 16));
    assert_eq!(
        c(|c| c.scratch -= 1),
        Err(Error::ScratchTooSmall {
            needed: 128,
            found: 127
        })
    );
    assert_eq!(c(|c| c.scratch += 100), Ok(()));

    let call = Call::new(&p);
    let nan_scale = SdpaParams {
        scale: Some(f32::NAN),
        ..Default::default()
    };
    assert_eq!(call.run(&nan_scale), Err(Error::InvalidScale));
    let bad_terms = [MaskTerm::Dilated {
        left: 1,
        right: 1,
        dilation: 0,
    }];
    let bad_mask = SdpaParams {
        mask: Mask::new(&bad_terms),
        ..Default::default()
    };
    assert_eq!(call.run(&bad_mask), Err(Error::InvalidMask));
    // ALiBi needs one slope per head (2 here).
    let slopes = [0.5f32; 3];
    let bad_bias = SdpaParams {
        bias: Bias::Alibi { slopes: &slopes },
        ..Default::default()
    };
    assert_eq!(call.run(&bad_bias), Err(Error::InvalidBias));
}

#[test]
fn typed_errors_match_f32_errors() {
    let x = vec![f16::ZERO; 3 * 8];
    let w = vec![f16::ZERO; 3 * 8 * 8];
    let wo = vec![f16::ZERO; 8 * 8];
    let weights = MhaWeights {
        in_proj_weight: &w,
        in_proj_bias: None,
        out_proj_weight: &wo,
        out_proj_bias: None,
    };
    let mut out = vec![f16::ZERO; 3 * 8];
    let mut scratch = vec![0.0f32; mha_scratch_len(3, 3, 8)];
    let ok = SdpaParams::default();
    let run = |shape, out: &mut [f16], scratch: &mut [f32]| {
        mha_typed(&x, &x, &x, &weights, out, shape, &ok, scratch)
    };
    assert_eq!(
        run(MhaShape::new(3, 3, 8, 4), &mut out, &mut scratch),
        Ok(())
    );
    assert_eq!(
        run(MhaShape::new(3, 3, 8, 5), &mut out, &mut scratch),
        Err(Error::HeadsMismatch)
    );
    assert_eq!(
        run(MhaShape::new(3, 3, 8, 4), &mut out[..23], &mut scratch),
        Err(Error::LengthMismatch {
            expected: 24,
            found: 23
        })
    );
    assert_eq!(
        run(MhaShape::new(3, 3, 8, 4), &mut out, &mut scratch[..95]),
        Err(Error::ScratchTooSmall {
            needed: 96,
            found: 95
        })
    );
}

#[test]
fn random_shapes_and_lengths_never_panic() {
    // Ok exactly when every length matches; otherwise an Err, never a panic.
    let mut rng = Rng(2024);
    let mut oks = 0;
    for _ in 0..1000 {
        let dim = |rng: &mut Rng| rng.below(6);
        let (lq, lk, e, heads) = (dim(&mut rng), dim(&mut rng), dim(&mut rng), dim(&mut rng));
        let jitter = |rng: &mut Rng, n: usize| match rng.below(40) {
            0 => n + 1,
            1 => n.saturating_sub(1),
            _ => n,
        };
        let lens = [
            jitter(&mut rng, lq * e),
            jitter(&mut rng, lk * e),
            jitter(&mut rng, lk * e),
            jitter(&mut rng, 3 * e * e),
            jitter(&mut rng, 3 * e),
            jitter(&mut rng, e * e),
            jitter(&mut rng, e),
            jitter(&mut rng, lq * e),
            jitter(&mut rng, mha_scratch_len(lq, lk, e)),
        ];
        let bufs: Vec<Vec<f32>> = lens.iter().map(|&n| rng.vec(n, 1.0)).collect();
        let weights = MhaWeights {
            in_proj_weight: &bufs[3],
            in_proj_bias: Some(&bufs[4]),
            out_proj_weight: &bufs[5],
            out_proj_bias: Some(&bufs[6]),
        };
        let mut out = vec![0.0f32; lens[7]];
        let mut scratch = vec![0.0f32; lens[8]];
        let shape = MhaShape::new(lq, lk, e, heads);
        let result = mha(
            &bufs[0],
            &bufs[1],
            &bufs[2],
            &weights,
            &mut out,
            shape,
            &SdpaParams::default(),
            &mut scratch,
        );
        let valid = lq > 0 && lk > 0 && e > 0 && heads > 0 && e % heads == 0;
        let exact = lens[..8] == [lq * e, lk * e, lk * e, 3 * e * e, 3 * e, e * e, e, lq * e];
        let scratch_ok = lens[8] >= mha_scratch_len(lq, lk, e);
        assert_eq!(
            result.is_ok(),
            valid && exact && scratch_ok,
            "{shape:?} {lens:?}"
        );
        if result.is_ok() {
            oks += 1;
            assert!(out.iter().all(|x| x.is_finite()));
        }
    }
    assert!(oks > 50, "too few valid cases exercised: {oks}");
}

// ---- the dense layer ----

fn linear_reference(
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    n: usize,
    i: usize,
    o: usize,
) -> Vec<f64> {
    let mut y = vec![0.0f64; n * o];
    for r in 0..n {
        for c in 0..o {
            let mut s = b.map_or(0.0, |b| b[c] as f64);
            for t in 0..i {
                s += x[r * i + t] as f64 * w[c * i + t] as f64;
            }
            y[r * o + c] = s;
        }
    }
    y
}

#[test]
fn linear_matches_reference() {
    let mut rng = Rng(7);
    // Row counts below, at and across the 8-row block; odd feature sizes.
    for (n, i, o) in [(1, 1, 1), (3, 13, 5), (8, 16, 16), (19, 7, 11), (17, 33, 9)] {
        let x = rng.vec(n * i, 1.0);
        let w = rng.vec(o * i, 0.5);
        let b = rng.vec(o, 0.5);
        let shape = LinearShape::new(n, i, o);
        for bias in [Some(&b[..]), None] {
            let mut y = vec![f32::NAN; n * o];
            linear(&x, &w, bias, &mut y, shape).unwrap();
            let err = rel_l2(&y, &linear_reference(&x, &w, bias, n, i, o));
            assert!(err < 1e-6, "n={n} i={i} o={o}: {err:e}");
        }
    }
}

#[test]
fn linear_typed_and_mixed_storage() {
    let mut rng = Rng(8);
    let (n, i, o) = (10, 12, 7);
    let shape = LinearShape::new(n, i, o);
    let x = rng.vec(n * i, 1.0);
    let w = rng.vec(o * i, 0.5);
    let b = rng.vec(o, 0.5);
    let h = |v: &[f32]| v.iter().map(|&t| f16::from_f32(t)).collect::<Vec<_>>();
    let back = |v: &[f16]| v.iter().map(|t| t.to_f32()).collect::<Vec<_>>();
    let (xh, wh, bh) = (h(&x), h(&w), h(&b));
    let want = linear_reference(&back(&xh), &back(&wh), Some(&back(&bh)), n, i, o);
    // f16 in, f32 out: only f32 rounding.
    let mut y32 = vec![0.0f32; n * o];
    linear_typed(&xh, &wh, Some(&bh), &mut y32, shape).unwrap();
    assert!(rel_l2(&y32, &want) < 1e-6);
    // f16 in, f16 out: one f16 rounding per output.
    let mut y16 = vec![f16::ZERO; n * o];
    linear_typed(&xh, &wh, Some(&bh), &mut y16, shape).unwrap();
    assert!(rel_l2(&back(&y16), &want) < 1e-3);
    // f32 activations against f16 weights.
    let want = linear_reference(&x, &back(&wh), Some(&back(&bh)), n, i, o);
    let mut y = vec![0.0f32; n * o];
    linear_mixed(&x, &wh, Some(&bh), &mut y, shape).unwrap();
    assert!(rel_l2(&y, &want) < 1e-6);
}

#[test]
fn linear_fixed_equals_slices() {
    let x = [[1.0f32, -2.0, 0.5], [0.25, 4.0, -1.0]];
    let w = [[0.5f32, 1.0, -1.0], [2.0, 0.0, 3.0]];
    let b = [0.1f32, -0.2];
    let mut y = [[0.0f32; 2]; 2];
    linear_fixed(&x, &w, Some(&b), &mut y).unwrap();
    let want = linear_reference(x.as_flattened(), w.as_flattened(), Some(&b), 2, 3, 2);
    assert!(rel_l2(y.as_flattened(), &want) < 1e-7);
}

#[test]
fn linear_bad_inputs_are_errors() {
    let (x, w, b) = ([0.0f32; 6], [0.0f32; 12], [0.0f32; 4]);
    let mut y = [0.0f32; 8];
    let shape = LinearShape::new(2, 3, 4);
    assert_eq!(linear(&x, &w, Some(&b), &mut y, shape), Ok(()));
    let mismatch = |expected, found| Err(Error::LengthMismatch { expected, found });
    assert_eq!(linear(&x[..5], &w, None, &mut y, shape), mismatch(6, 5));
    assert_eq!(linear(&x, &w[..11], None, &mut y, shape), mismatch(12, 11));
    assert_eq!(linear(&x, &w, Some(&b[..3]), &mut y, shape), mismatch(4, 3));
    assert_eq!(linear(&x, &w, None, &mut y[..7], shape), mismatch(8, 7));
    for zero in [
        LinearShape::new(0, 3, 4),
        LinearShape::new(2, 0, 4),
        LinearShape::new(2, 3, 0),
    ] {
        assert_eq!(
            linear(&x, &w, None, &mut y, zero),
            Err(Error::ZeroDimension)
        );
    }
    assert_eq!(
        linear(&x, &w, None, &mut y, LinearShape::new(usize::MAX, 2, 4)),
        Err(Error::ShapeOverflow)
    );
}
