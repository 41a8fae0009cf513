//! Linear (elu+1), Bahdanau and Luong attention against f64 references written from the
//! formulas (the quadratic "attention" form for linear attention, `Wᵀ`-free direct forms for
//! Luong), plus the structural properties: the causal state stepped token by token equals the
//! whole-sequence kernel, causal rows ignore later keys, masked weights are 0, weights sum to
//! 1, and every invalid input is an `Err`.

use microattn::attention::*;
use microattn::mask::{Mask, MaskTerm};
use microattn::{bf16, f16, Element, Error};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------
// Test helpers: a deterministic PRNG, the error measure, f64 references.

/// SplitMix64: deterministic inputs without a dependency.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[-scale, scale)`.
    fn f32(&mut self, scale: f32) -> f32 {
        let unit = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        (unit * 2.0 - 1.0) * scale
    }

    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.f32(scale)).collect()
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// `||got - want|| / max(||want||, 1e-12)`.
fn rel_l2(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let mut num = 0.0;
    let mut den = 0.0;
    for (&g, &w) in got.iter().zip(want) {
        assert!(g.is_finite(), "non-finite output {g}");
        num += (g as f64 - w) * (g as f64 - w);
        den += w * w;
    }
    num.sqrt() / den.sqrt().max(1e-12)
}

fn assert_close(got: &[f32], want: &[f64], tol: f64, what: &str) {
    let err = rel_l2(got, want);
    assert!(
        err < tol,
        "{what}: rel_l2 {err:e} >= {tol:e}\n got {got:?}\nwant {want:?}"
    );
}

/// `elu(x) + 1` exactly as written: `x + 1` for `x > 0`, `(e^x - 1) + 1` otherwise.
fn phi64(x: f32) -> f64 {
    let x = x as f64;
    let elu = if x > 0.0 { x } else { x.exp_m1() };
    elu + 1.0
}

/// Linear attention as attention: `out_i = Σ_j (φq_i·φk_j) v_j / (Σ_j φq_i·φk_j + eps)` over
/// `j <= i` when causal. Single head: `q` `[lq, d]`, `k` `[lk, d]`, `v` `[lk, dv]`.
fn ref_linear(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    d: usize,
    dv: usize,
    causal: bool,
    eps: f64,
) -> Vec<f64> {
    let (lq, lk) = (q.len() / d, k.len() / d);
    let mut out = vec![0.0; lq * dv];
    for i in 0..lq {
        let last = if causal { i + 1 } else { lk };
        let mut den = eps;
        for j in 0..last {
            let sim: f64 = (0..d)
                .map(|a| phi64(q[i * d + a]) * phi64(k[j * d + a]))
                .sum();
            den += sim;
            for c in 0..dv {
                out[i * dv + c] += sim * v[j * dv + c] as f64;
            }
        }
        for c in 0..dv {
            out[i * dv + c] /= den;
        }
    }
    out
}

/// Softmax over the keys `mask` allows to query row 0 (others weight 0; none allowed: all 0),
/// then the context. Returns `(context, weights)`.
fn ref_softmax_context(
    scores: &[f64],
    values: &[f32],
    dv: usize,
    mask: &Mask<'_>,
) -> (Vec<f64>, Vec<f64>) {
    let l = scores.len();
    let allowed: Vec<bool> = (0..l).map(|j| mask.allows(0, j)).collect();
    let max = (0..l)
        .filter(|&j| allowed[j])
        .map(|j| scores[j])
        .fold(f64::NEG_INFINITY, f64::max);
    let mut weights = vec![0.0; l];
    if max > f64::NEG_INFINITY {
        let sum: f64 = (0..l)
            .filter(|&j| allowed[j])
            .map(|j| (scores[j] - max).exp())
            .sum();
        for j in 0..l {
            if allowed[j] {
                weights[j] = (scores[j] - max).exp() / sum;
            }
        }
    }
    let mut context = vec![0.0; dv];
    for j in 0..l {
        for c in 0..dv {
            context[c] += weights[j] * values[j * dv + c] as f64;
        }
    }
    (context, weights)
}

/// `score_j = Σ_a v_a tanh(Σ_b Wq[a,b] q_b + Σ_b Wk[a,b] k_jb)`.
fn ref_additive(query: &[f32], keys: &[f32], wq: &[f32], wk: &[f32], v: &[f32]) -> Vec<f64> {
    let (dq, a) = (query.len(), v.len());
    let dk = wk.len() / a;
    let l = keys.len() / dk;
    (0..l)
        .map(|j| {
            (0..a)
                .map(|r| {
                    let hq: f64 = (0..dq)
                        .map(|b| wq[r * dq + b] as f64 * query[b] as f64)
                        .sum();
                    let hk: f64 = (0..dk)
                        .map(|b| wk[r * dk + b] as f64 * keys[j * dk + b] as f64)
                        .sum();
                    v[r] as f64 * (hq + hk).tanh()
                })
                .sum()
        })
        .collect()
}

enum RefLuong<'a> {
    Dot,
    General(&'a [f32]),
    Concat(&'a [f32], &'a [f32]),
}

/// Luong scores straight from the definitions: `q·k`, `Σ_rc q_r W[r,c] k_c`,
/// `Σ_a v_a tanh(Σ_c W[a,c] [q;k]_c)`.
fn ref_luong(query: &[f32], keys: &[f32], score: &RefLuong<'_>) -> Vec<f64> {
    let d = query.len();
    let l = keys.len() / d;
    let f = |x: f32| x as f64;
    (0..l)
        .map(|j| {
            let k = &keys[j * d..(j + 1) * d];
            match *score {
                RefLuong::Dot => (0..d).map(|c| f(query[c]) * f(k[c])).sum(),
                RefLuong::General(w) => (0..d)
                    .flat_map(|r| (0..d).map(move |c| (r, c)))
                    .map(|(r, c)| f(query[r]) * f(w[r * d + c]) * f(k[c]))
                    .sum(),
                RefLuong::Concat(w, v) => (0..v.len())
                    .map(|a| {
                        let cat = query.iter().chain(k);
                        let h: f64 = cat
                            .enumerate()
                            .map(|(c, &x)| f(w[a * 2 * d + c]) * f(x))
                            .sum();
                        f(v[a]) * h.tanh()
                    })
                    .sum(),
            }
        })
        .collect()
}

fn to_e<E: Element>(x: &[f32]) -> Vec<E> {
    x.iter().map(|&v| E::from_f32(v)).collect()
}

fn to_f32<E: Element>(x: &[E]) -> Vec<f32> {
    x.iter().map(|&v| v.to_f32()).collect()
}

/// The inputs as the typed kernel sees them (rounded to `E`), back in f32 for the reference.
fn rounded<E: Element>(x: &[f32]) -> Vec<f32> {
    to_f32(&to_e::<E>(x))
}

fn weights_check(weights: &[f32], mask: &Mask<'_>) {
    let l = weights.len();
    let any = (0..l).any(|j| mask.allows(0, j));
    for (j, &w) in weights.iter().enumerate() {
        if !mask.allows(0, j) {
            assert_eq!(w, 0.0, "masked key {j} has weight {w}");
        }
        assert!((0.0..=1.0).contains(&w));
    }
    let sum: f32 = weights.iter().sum();
    if any {
        assert!((sum - 1.0).abs() < 1e-5, "weights sum to {sum}");
    } else {
        assert_eq!(sum, 0.0);
    }
}

// ---------------------------------------------------------------------------------------
// Linear attention.

fn run_linear(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    shape: AttentionShape,
    params: &LinearAttentionParams,
) -> Vec<f32> {
    let mut out = vec![f32::NAN; shape.heads * shape.lq * shape.dv];
    let mut scratch = vec![f32::NAN; linear_attention_scratch_len(shape)];
    linear_attention(q, k, v, &mut out, shape, params, &mut scratch).unwrap();
    out
}

#[test]
fn linear_matches_reference() {
    let mut rng = Rng(1);
    for trial in 0..40 {
        let causal = trial % 2 == 1;
        let (d, dv) = (1 + rng.below(12), 1 + rng.below(12));
        let lk = 1 + rng.below(24);
        let lq = if causal { lk } else { 1 + rng.below(24) };
        let eps = [0.0, 1e-6, 0.5][trial % 3];
        let scale = [0.5, 2.0, 6.0][(trial / 3) % 3];
        let (q, k, v) = (
            rng.vec(lq * d, scale),
            rng.vec(lk * d, scale),
            rng.vec(lk * dv, 1.0),
        );
        let shape = AttentionShape::single(lq, lk, d, dv);
        let out = run_linear(
            &q,
            &k,
            &v,
            shape,
            &LinearAttentionParams {
                causal,
                eps: eps as f32,
            },
        );
        let want = ref_linear(&q, &k, &v, d, dv, causal, eps);
        assert_close(
            &out,
            &want,
            1e-5,
            &format!("trial {trial} causal {causal} {shape:?}"),
        );
    }
}

#[test]
fn linear_heads_share_their_kv_head() {
    let mut rng = Rng(2);
    for causal in [false, true] {
        let (heads, kv_heads, l, d, dv) = (6, 2, 9, 5, 3);
        let q = rng.vec(heads * l * d, 1.5);
        let k = rng.vec(kv_heads * l * d, 1.5);
        let v = rng.vec(kv_heads * l * dv, 1.0);
        let shape = AttentionShape::multi_head(heads, kv_heads, l, l, d, dv);
        let out = run_linear(
            &q,
            &k,
            &v,
            shape,
            &LinearAttentionParams { causal, eps: 1e-6 },
        );
        for h in 0..heads {
            let kvh = h / (heads / kv_heads);
            let want = ref_linear(
                &q[h * l * d..][..l * d],
                &k[kvh * l * d..][..l * d],
                &v[kvh * l * dv..][..l * dv],
                d,
                dv,
                causal,
                1e-6,
            );
            assert_close(
                &out[h * l * dv..][..l * dv],
                &want,
                1e-5,
                &format!("head {h}"),
            );
        }
    }
}

#[test]
fn linear_typed_f16_bf16_match_reference() {
    fn check<E: Element>(tol: f64) {
        let mut rng = Rng(3);
        for causal in [false, true] {
            let (l, d, dv) = (16, 8, 12);
            let (q, k, v) = (
                rng.vec(l * d, 2.0),
                rng.vec(l * d, 2.0),
                rng.vec(l * dv, 1.0),
            );
            let (qe, ke, ve) = (to_e::<E>(&q), to_e::<E>(&k), to_e::<E>(&v));
            let shape = AttentionShape::single(l, l, d, dv);
            let mut out = vec![E::from_f32(f32::NAN); l * dv];
            let mut scratch = vec![0.0; linear_attention_scratch_len(shape)];
            let params = LinearAttentionParams { causal, eps: 1e-6 };
            linear_attention_typed(&qe, &ke, &ve, &mut out, shape, &params, &mut scratch).unwrap();
            let want = ref_linear(
                &rounded::<E>(&q),
                &rounded::<E>(&k),
                &rounded::<E>(&v),
                d,
                dv,
                causal,
                1e-6,
            );
            assert_close(&to_f32(&out), &want, tol, core::any::type_name::<E>());
        }
    }
    check::<f16>(1e-3);
    check::<bf16>(8e-3);
}

#[test]
fn linear_state_steps_equal_the_whole_sequence() {
    let mut rng = Rng(4);
    const L: usize = 13;
    const D: usize = 6;
    const DV: usize = 4;
    let (q, k, v) = (
        rng.vec(L * D, 2.0),
        rng.vec(L * D, 2.0),
        rng.vec(L * DV, 1.0),
    );
    let shape = AttentionShape::single(L, L, D, DV);
    let whole = run_linear(
        &q,
        &k,
        &v,
        shape,
        &LinearAttentionParams {
            causal: true,
            eps: 1e-6,
        },
    );

    let mut buffer = [f32::NAN; linear_state_len(D, DV)];
    let mut state = LinearAttentionState::new(&mut buffer, D, DV, 1e-6).unwrap();
    let mut fixed = LinearAttentionStateFixed::<D, DV>::new(1e-6).unwrap();
    for t in 0..L {
        let (q_t, k_t, v_t) = (&q[t * D..][..D], &k[t * D..][..D], &v[t * DV..][..DV]);
        let mut out = [0.0f32; DV];
        state.step(q_t, k_t, v_t, &mut out).unwrap();
        assert_eq!(out[..], whole[t * DV..][..DV], "slice state, token {t}");
        let mut out_fixed = [0.0f32; DV];
        fixed.step(
            q_t.try_into().unwrap(),
            k_t.try_into().unwrap(),
            v_t.try_into().unwrap(),
            &mut out_fixed,
        );
        assert_eq!(out_fixed, out, "fixed state, token {t}");
    }

    // After a reset the state starts a new sequence.
    state.reset();
    fixed.reset();
    let mut out = [0.0f32; DV];
    state.step(&q[..D], &k[..D], &v[..DV], &mut out).unwrap();
    assert_eq!(out[..], whole[..DV]);
    let mut out_fixed = [0.0f32; DV];
    fixed.step(
        q[..D].try_into().unwrap(),
        k[..D].try_into().unwrap(),
        v[..DV].try_into().unwrap(),
        &mut out_fixed,
    );
    assert_eq!(out_fixed, out);
}

#[test]
fn linear_state_push_then_query_serves_several_queries() {
    // Decode with two query heads sharing one KV head: push once, query twice.
    let mut rng = Rng(5);
    let (l, d, dv) = (7, 3, 2);
    let q = rng.vec(2 * l * d, 1.0);
    let (k, v) = (rng.vec(l * d, 1.0), rng.vec(l * dv, 1.0));
    let mut buffer = vec![0.0f32; linear_state_len(d, dv)];
    let mut state = LinearAttentionState::new(&mut buffer, d, dv, 0.0).unwrap();
    assert_eq!((state.d(), state.dv()), (d, dv));
    for t in 0..l {
        state.push(&k[t * d..][..d], &v[t * dv..][..dv]).unwrap();
        for h in 0..2 {
            let mut out = vec![0.0f32; dv];
            state.query(&q[(h * l + t) * d..][..d], &mut out).unwrap();
            let want = ref_linear(
                &q[(h * l + t) * d..][..d],
                &k[..(t + 1) * d],
                &v[..(t + 1) * dv],
                d,
                dv,
                false,
                0.0,
            );
            assert_close(&out, &want, 1e-5, &format!("token {t} head {h}"));
        }
    }
}

#[test]
fn linear_causal_rows_ignore_later_keys() {
    let mut rng = Rng(6);
    let (l, d, dv) = (12, 5, 4);
    let (q, k, v) = (
        rng.vec(l * d, 2.0),
        rng.vec(l * d, 2.0),
        rng.vec(l * dv, 1.0),
    );
    let shape = AttentionShape::single(l, l, d, dv);
    let params = LinearAttentionParams {
        causal: true,
        eps: 1e-6,
    };
    let base = run_linear(&q, &k, &v, shape, &params);
    for cut in 0..l {
        let (mut k2, mut v2) = (k.clone(), v.clone());
        for x in &mut k2[(cut + 1) * d..] {
            *x = rng.f32(50.0);
        }
        for x in &mut v2[(cut + 1) * dv..] {
            *x = rng.f32(50.0);
        }
        let changed = run_linear(&q, &k2, &v2, shape, &params);
        assert_eq!(
            base[..(cut + 1) * dv],
            changed[..(cut + 1) * dv],
            "rows up to {cut}"
        );
    }
}

#[test]
fn linear_fixed_equals_slice_tier() {
    let mut rng = Rng(7);
    const LQ: usize = 5;
    const LK: usize = 7;
    let q: [[f32; 4]; LQ] = core::array::from_fn(|_| core::array::from_fn(|_| rng.f32(2.0)));
    let k: [[f32; 4]; LK] = core::array::from_fn(|_| core::array::from_fn(|_| rng.f32(2.0)));
    let v: [[f32; 3]; LK] = core::array::from_fn(|_| core::array::from_fn(|_| rng.f32(1.0)));
    let params = LinearAttentionParams {
        causal: false,
        eps: 1e-6,
    };
    let mut out = [[0.0f32; 3]; LQ];
    linear_attention_fixed(&q, &k, &v, &mut out, &params).unwrap();
    let shape = AttentionShape::single(LQ, LK, 4, 3);
    let want = run_linear(
        q.as_flattened(),
        k.as_flattened(),
        v.as_flattened(),
        shape,
        &params,
    );
    assert_eq!(out.as_flattened(), &want[..]);

    let causal = LinearAttentionParams {
        causal: true,
        eps: 1e-6,
    };
    let mut out = [[0.0f32; 3]; LK];
    let qk: [[f32; 4]; LK] = k;
    linear_attention_fixed(&qk, &k, &v, &mut out, &causal).unwrap();
    let want = ref_linear(
        qk.as_flattened(),
        k.as_flattened(),
        v.as_flattened(),
        4,
        3,
        true,
        1e-6,
    );
    assert_close(out.as_flattened(), &want, 1e-5, "fixed causal");
}

#[test]
fn linear_extreme_inputs_stay_finite() {
    // eps = 0 and queries whose features underflow phi: the denominator is 0, output zeros.
    let (l, d, dv) = (4, 3, 2);
    let q = vec![-200.0f32; l * d];
    let k = vec![0.5f32; l * d];
    let v = vec![1.0f32; l * dv];
    for causal in [false, true] {
        let shape = AttentionShape::single(l, l, d, dv);
        let out = run_linear(
            &q,
            &k,
            &v,
            shape,
            &LinearAttentionParams { causal, eps: 0.0 },
        );
        assert_eq!(out, vec![0.0; l * dv]);
    }
    // Very negative but representable features: the direct e^x keeps full precision where
    // expm1(x) + 1 would cancel to 0.
    let mut rng = Rng(8);
    let q: Vec<f32> = (0..l * d).map(|_| -30.0 + rng.f32(5.0)).collect();
    let k: Vec<f32> = (0..l * d).map(|_| -40.0 + rng.f32(5.0)).collect();
    let v = rng.vec(l * dv, 1.0);
    let shape = AttentionShape::single(l, l, d, dv);
    let out = run_linear(
        &q,
        &k,
        &v,
        shape,
        &LinearAttentionParams {
            causal: false,
            eps: 0.0,
        },
    );
    let want: Vec<f64> = {
        // Reference with phi = e^x computed in f64 (the same function, no cancellation).
        let phi = |x: f32| (x as f64).exp();
        (0..l)
            .flat_map(|i| {
                let (q, k, v) = (&q, &k, &v);
                let sims: Vec<f64> = (0..l)
                    .map(|j| (0..d).map(|a| phi(q[i * d + a]) * phi(k[j * d + a])).sum())
                    .collect();
                let den: f64 = sims.iter().sum();
                (0..dv)
                    .map(move |c| (0..l).map(|j| sims[j] * v[j * dv + c] as f64).sum::<f64>() / den)
            })
            .collect()
    };
    assert_close(&out, &want, 1e-5, "very negative features");
    // Large positive features: still finite.
    let q = vec![1e6f32; l * d];
    let out = run_linear(
        &q,
        &q,
        &v,
        shape,
        &LinearAttentionParams {
            causal: true,
            eps: 0.0,
        },
    );
    assert!(out.iter().all(|x| x.is_finite()));
}

#[test]
fn linear_errors() {
    let shape = AttentionShape::single(2, 3, 2, 2);
    let (q, k, v) = ([0.0f32; 4], [0.0f32; 6], [0.0f32; 6]);
    let mut out = [0.0f32; 4];
    let mut scratch = [0.0f32; 16];
    let p = LinearAttentionParams::default();
    let run = |q: &[f32],
               k: &[f32],
               v: &[f32],
               out: &mut [f32],
               shape,
               p: &LinearAttentionParams,
               s: &mut [f32]| {
        let before = out.to_vec();
        let r = linear_attention(q, k, v, out, shape, p, s);
        if r.is_err() {
            assert_eq!(before, out, "an Err wrote output");
        }
        r
    };
    assert_eq!(run(&q, &k, &v, &mut out, shape, &p, &mut scratch), Ok(()));
    for zero in 0..6 {
        let mut dims = [1, 1, 2, 3, 2, 2];
        dims[zero] = 0;
        let s = AttentionShape::multi_head(dims[0], dims[1], dims[2], dims[3], dims[4], dims[5]);
        assert_eq!(
            run(&q, &k, &v, &mut out, s, &p, &mut scratch),
            Err(Error::ZeroDimension)
        );
    }
    let mism = |expected, found| Err(Error::LengthMismatch { expected, found });
    assert_eq!(
        run(&q[..3], &k, &v, &mut out, shape, &p, &mut scratch),
        mism(4, 3)
    );
    assert_eq!(
        run(&q, &k[..5], &v, &mut out, shape, &p, &mut scratch),
        mism(6, 5)
    );
    assert_eq!(
        run(&q, &k, &v[..5], &mut out, shape, &p, &mut scratch),
        mism(6, 5)
    );
    assert_eq!(
        run(&q, &k, &v, &mut out[..3], shape, &p, &mut scratch),
        mism(4, 3)
    );
    let gqa = AttentionShape::multi_head(3, 2, 1, 1, 1, 1);
    assert_eq!(
        run(
            &[0.0; 3],
            &[0.0; 2],
            &[0.0; 2],
            &mut [0.0; 3],
            gqa,
            &p,
            &mut scratch
        ),
        Err(Error::HeadsMismatch)
    );
    for eps in [f32::NAN, f32::INFINITY, -1e-6, f32::NEG_INFINITY] {
        let bad = LinearAttentionParams { causal: false, eps };
        assert_eq!(
            run(&q, &k, &v, &mut out, shape, &bad, &mut scratch),
            Err(Error::InvalidScale)
        );
    }
    let causal = LinearAttentionParams {
        causal: true,
        eps: 1e-6,
    };
    assert_eq!(
        run(&q, &k, &v, &mut out, shape, &causal, &mut scratch),
        Err(Error::InvalidParameter)
    );
    let needed = linear_attention_scratch_len(shape);
    assert_eq!(needed, 2 * 2 + 2 + 2);
    assert_eq!(
        run(&q, &k, &v, &mut out, shape, &p, &mut scratch[..needed - 1]),
        Err(Error::ScratchTooSmall {
            needed,
            found: needed - 1
        })
    );
    let huge = AttentionShape::single(usize::MAX, 1, 2, 1);
    assert_eq!(
        run(&q, &k, &v, &mut out, huge, &p, &mut scratch),
        Err(Error::ShapeOverflow)
    );

    // Typed tier: the same checks.
    let qh = [f16::ZERO; 4];
    let mut outh = [f16::ZERO; 4];
    assert_eq!(
        linear_attention_typed(&qh[..3], &qh, &qh, &mut outh, shape, &p, &mut scratch),
        mism(4, 3)
    );

    // The state.
    let mut buf = [0.0f32; 8];
    assert_eq!(
        LinearAttentionState::new(&mut buf, 0, 2, 0.0).err(),
        Some(Error::ZeroDimension)
    );
    assert_eq!(
        LinearAttentionState::new(&mut buf, 2, 0, 0.0).err(),
        Some(Error::ZeroDimension)
    );
    assert_eq!(
        LinearAttentionState::new(&mut buf, 2, 2, f32::NAN).err(),
        Some(Error::InvalidScale)
    );
    assert_eq!(
        LinearAttentionState::new(&mut buf, 2, 2, -1.0).err(),
        Some(Error::InvalidScale)
    );
    assert_eq!(
        LinearAttentionState::new(&mut buf[..7], 2, 2, 0.0).err(),
        Some(Error::ScratchTooSmall {
            needed: 8,
            found: 7
        })
    );
    assert_eq!(
        LinearAttentionState::new(&mut buf, usize::MAX, 2, 0.0).err(),
        Some(Error::ShapeOverflow)
    );
    assert_eq!(
        LinearAttentionState::new(&mut buf, usize::MAX, 1, 0.0).err(),
        Some(Error::ShapeOverflow)
    );
    let mut state = LinearAttentionState::new(&mut buf, 2, 2, 0.0).unwrap();
    let mut o = [0.0f32; 2];
    assert_eq!(state.push(&[1.0f32], &[1.0, 1.0]), mism(2, 1));
    assert_eq!(state.push(&[1.0f32, 1.0], &[1.0]), mism(2, 1));
    assert_eq!(state.query(&[1.0f32], &mut o), mism(2, 1));
    assert_eq!(state.query(&[1.0f32, 1.0], &mut o[..1]), mism(2, 1));
    // A failed step leaves the state untouched.
    assert_eq!(
        state.step(&[1.0f32], &[1.0, 1.0], &[5.0, 5.0], &mut o),
        mism(2, 1)
    );
    assert_eq!(
        state.step(&[1.0f32, 1.0], &[1.0, 1.0], &[5.0], &mut o),
        mism(2, 1)
    );
    assert_eq!(
        state.step(&[1.0f32, 1.0], &[1.0, 1.0], &[5.0, 5.0], &mut o[..1]),
        mism(2, 1)
    );
    state.query(&[0.0f32, 0.0], &mut o).unwrap();
    assert_eq!(o, [0.0, 0.0], "the state saw a token from a failed step");

    assert_eq!(
        LinearAttentionStateFixed::<0, 2>::new(0.0).err(),
        Some(Error::ZeroDimension)
    );
    assert_eq!(
        LinearAttentionStateFixed::<2, 0>::new(0.0).err(),
        Some(Error::ZeroDimension)
    );
    assert_eq!(
        LinearAttentionStateFixed::<2, 2>::new(f32::INFINITY).err(),
        Some(Error::InvalidScale)
    );

    let mut o3 = [[0.0f32; 1]; 3];
    let bad = LinearAttentionParams {
        causal: false,
        eps: f32::NAN,
    };
    assert_eq!(
        linear_attention_fixed(&[[0.0f32]; 3], &[[0.0]; 2], &[[0.0]; 2], &mut o3, &bad),
        Err(Error::InvalidScale)
    );
    assert_eq!(
        linear_attention_fixed(&[[0.0f32]; 3], &[[0.0]; 2], &[[0.0]; 2], &mut o3, &causal),
        Err(Error::InvalidParameter)
    );
    let mut o0: [[f32; 1]; 0] = [];
    assert_eq!(
        linear_attention_fixed(&[], &[[0.0f32]; 2], &[[0.0]; 2], &mut o0, &p),
        Err(Error::ZeroDimension)
    );
}

// ---------------------------------------------------------------------------------------
// Bahdanau.

struct AdditiveCase {
    shape: AdditiveShape,
    query: Vec<f32>,
    keys: Vec<f32>,
    values: Vec<f32>,
    wq: Vec<f32>,
    wk: Vec<f32>,
    v: Vec<f32>,
}

fn additive_case(rng: &mut Rng) -> AdditiveCase {
    let shape = AdditiveShape {
        l: 1 + rng.below(20),
        dq: 1 + rng.below(12),
        dk: 1 + rng.below(12),
        dv: 1 + rng.below(12),
        a: 1 + rng.below(16),
    };
    AdditiveCase {
        query: rng.vec(shape.dq, 1.0),
        keys: rng.vec(shape.l * shape.dk, 1.0),
        values: rng.vec(shape.l * shape.dv, 1.0),
        wq: rng.vec(shape.a * shape.dq, 0.7),
        wk: rng.vec(shape.a * shape.dk, 0.7),
        v: rng.vec(shape.a, 2.0),
        shape,
    }
}

/// A few masks for a single query over `l` keys, including fully masked ones.
fn masks(l: usize, rng: &mut Rng) -> Vec<(Vec<MaskTerm<'static>>, usize)> {
    vec![
        (vec![], 0),
        (
            vec![MaskTerm::KeyPadding {
                valid: 1 + rng.below(l),
            }],
            0,
        ),
        (vec![MaskTerm::Causal], rng.below(l)),
        (vec![MaskTerm::Sliding { left: 2, right: 1 }], rng.below(l)),
        (
            vec![MaskTerm::Dilated {
                left: 3,
                right: 3,
                dilation: 2,
            }],
            rng.below(l),
        ),
        (vec![MaskTerm::Sliding { left: 1, right: 1 }], l + 5), // no key allowed
        (vec![MaskTerm::KeyPadding { valid: 0 }], 0),           // no key allowed
    ]
}

#[test]
fn additive_matches_reference_with_masks() {
    let mut rng = Rng(11);
    for trial in 0..25 {
        let c = additive_case(&mut rng);
        for (terms, offset) in masks(c.shape.l, &mut rng) {
            let mask = Mask::new(&terms).with_offset(offset);
            let params = AdditiveParams {
                w_query: &c.wq,
                w_key: &c.wk,
                v: &c.v,
                mask,
            };
            let mut context = vec![f32::NAN; c.shape.dv];
            let mut weights = vec![f32::NAN; c.shape.l];
            let mut scratch = vec![f32::NAN; additive_attention_scratch_len(c.shape)];
            additive_attention(
                &c.query,
                &c.keys,
                &c.values,
                c.shape,
                &params,
                &mut context,
                &mut weights,
                &mut scratch,
            )
            .unwrap();
            let scores = ref_additive(&c.query, &c.keys, &c.wq, &c.wk, &c.v);
            let (want_c, want_w) = ref_softmax_context(&scores, &c.values, c.shape.dv, &mask);
            let what = format!("trial {trial} {terms:?}@{offset}");
            weights_check(&weights, &mask);
            if want_w.iter().all(|&w| w == 0.0) {
                assert_eq!(context, vec![0.0; c.shape.dv], "{what}");
                continue;
            }
            assert_close(&weights, &want_w, 1e-5, &format!("weights {what}"));
            assert_close(&context, &want_c, 1e-5, &format!("context {what}"));
        }
    }
}

#[test]
fn additive_typed_matches_reference() {
    fn check<E: Element>(tol: f64) {
        let mut rng = Rng(12);
        for _ in 0..10 {
            let c = additive_case(&mut rng);
            let terms = [MaskTerm::KeyPadding {
                valid: 1 + c.shape.l / 2,
            }];
            let mask = Mask::new(&terms);
            let (wq, wk, v) = (to_e::<E>(&c.wq), to_e::<E>(&c.wk), to_e::<E>(&c.v));
            let params = AdditiveParams {
                w_query: &wq,
                w_key: &wk,
                v: &v,
                mask,
            };
            let mut context = vec![E::from_f32(f32::NAN); c.shape.dv];
            let mut weights = vec![E::from_f32(f32::NAN); c.shape.l];
            let mut scratch = vec![f32::NAN; additive_attention_typed_scratch_len(c.shape)];
            let (q, k, vals) = (
                to_e::<E>(&c.query),
                to_e::<E>(&c.keys),
                to_e::<E>(&c.values),
            );
            additive_attention_typed(
                &q,
                &k,
                &vals,
                c.shape,
                &params,
                &mut context,
                &mut weights,
                &mut scratch,
            )
            .unwrap();
            let scores = ref_additive(
                &rounded::<E>(&c.query),
                &rounded::<E>(&c.keys),
                &to_f32(&wq),
                &to_f32(&wk),
                &to_f32(&v),
            );
            let (want_c, want_w) =
                ref_softmax_context(&scores, &rounded::<E>(&c.values), c.shape.dv, &mask);
            assert_close(&to_f32(&weights), &want_w, tol, "typed weights");
            assert_close(&to_f32(&context), &want_c, tol, "typed context");
            for w in &weights[terms_valid(&terms)..] {
                assert_eq!(w.to_f32(), 0.0);
            }
        }
    }
    fn terms_valid(terms: &[MaskTerm<'_>]) -> usize {
        match terms[0] {
            MaskTerm::KeyPadding { valid } => valid,
            _ => unreachable!(),
        }
    }
    check::<f32>(1e-5);
    check::<f16>(2e-3);
    check::<bf16>(1.5e-2);
}

#[test]
fn additive_fixed_equals_slice_tier() {
    let mut rng = Rng(13);
    let wq: [[f32; 3]; 4] = core::array::from_fn(|_| core::array::from_fn(|_| rng.f32(1.0)));
    let wk: [[f32; 2]; 4] = core::array::from_fn(|_| core::array::from_fn(|_| rng.f32(1.0)));
    let v: [f32; 4] = core::array::from_fn(|_| rng.f32(1.0));
    let query: [f32; 3] = core::array::from_fn(|_| rng.f32(1.0));
    let keys: [[f32; 2]; 5] = core::array::from_fn(|_| core::array::from_fn(|_| rng.f32(1.0)));
    let values: [[f32; 6]; 5] = core::array::from_fn(|_| core::array::from_fn(|_| rng.f32(1.0)));
    let terms = [MaskTerm::KeyPadding { valid: 4 }];
    let params = AdditiveParamsFixed {
        w_query: &wq,
        w_key: &wk,
        v: &v,
        mask: Mask::new(&terms),
    };
    let (mut context, mut weights) = ([0.0f32; 6], [0.0f32; 5]);
    additive_attention_fixed(&query, &keys, &values, &params, &mut context, &mut weights).unwrap();
    let scores = ref_additive(
        &query,
        keys.as_flattened(),
        wq.as_flattened(),
        wk.as_flattened(),
        &v,
    );
    let (want_c, want_w) = ref_softmax_context(&scores, values.as_flattened(), 6, &params.mask);
    assert_close(&weights, &want_w, 1e-5, "fixed weights");
    assert_close(&context, &want_c, 1e-5, "fixed context");
    assert_eq!(weights[4], 0.0);
}

#[test]
fn additive_errors() {
    let shape = AdditiveShape {
        l: 3,
        dq: 2,
        dk: 4,
        dv: 5,
        a: 6,
    };
    let (query, keys, values) = (vec![0.0f32; 2], vec![0.0f32; 12], vec![0.0f32; 15]);
    let (wq, wk, v) = (vec![0.0f32; 12], vec![0.0f32; 24], vec![0.0f32; 6]);
    let mut context = vec![0.0f32; 5];
    let mut weights = vec![0.0f32; 3];
    let mut scratch = vec![0.0f32; 6];
    let ok = AdditiveParams {
        w_query: &wq,
        w_key: &wk,
        v: &v,
        mask: Mask::NONE,
    };
    let run = |q: &[f32],
               k: &[f32],
               vals: &[f32],
               shape,
               p: &AdditiveParams<'_>,
               c: &mut [f32],
               w: &mut [f32],
               s: &mut [f32]| { additive_attention(q, k, vals, shape, p, c, w, s) };
    assert_eq!(
        run(
            &query,
            &keys,
            &values,
            shape,
            &ok,
            &mut context,
            &mut weights,
            &mut scratch
        ),
        Ok(())
    );
    let mism = |expected, found| Err(Error::LengthMismatch { expected, found });
    for zero in 0..5 {
        let mut dims = [3, 2, 4, 5, 6];
        dims[zero] = 0;
        let s = AdditiveShape {
            l: dims[0],
            dq: dims[1],
            dk: dims[2],
            dv: dims[3],
            a: dims[4],
        };
        assert_eq!(
            run(
                &query,
                &keys,
                &values,
                s,
                &ok,
                &mut context,
                &mut weights,
                &mut scratch
            ),
            Err(Error::ZeroDimension)
        );
    }
    assert_eq!(
        run(
            &query[..1],
            &keys,
            &values,
            shape,
            &ok,
            &mut context,
            &mut weights,
            &mut scratch
        ),
        mism(2, 1)
    );
    assert_eq!(
        run(
            &query,
            &keys[..11],
            &values,
            shape,
            &ok,
            &mut context,
            &mut weights,
            &mut scratch
        ),
        mism(12, 11)
    );
    assert_eq!(
        run(
            &query,
            &keys,
            &values[..14],
            shape,
            &ok,
            &mut context,
            &mut weights,
            &mut scratch
        ),
        mism(15, 14)
    );
    let bad = AdditiveParams {
        w_query: &wq[..11],
        ..ok
    };
    assert_eq!(
        run(
            &query,
            &keys,
            &values,
            shape,
            &bad,
            &mut context,
            &mut weights,
            &mut scratch
        ),
        mism(12, 11)
    );
    let bad = AdditiveParams {
        w_key: &wk[..23],
        ..ok
    };
    assert_eq!(
        run(
            &query,
            &keys,
            &values,
            shape,
            &bad,
            &mut context,
            &mut weights,
            &mut scratch
        ),
        mism(24, 23)
    );
    let bad = AdditiveParams { v: &v[..5], ..ok };
    assert_eq!(
        run(
            &query,
            &keys,
            &values,
            shape,
            &bad,
            &mut context,
            &mut weights,
            &mut scratch
        ),
        mism(6, 5)
    );
    assert_eq!(
        run(
            &query,
            &keys,
            &values,
            shape,
            &ok,
            &mut context[..4],
            &mut weights,
            &mut scratch
        ),
        mism(5, 4)
    );
    assert_eq!(
        run(
            &query,
            &keys,
            &values,
            shape,
            &ok,
            &mut context,
            &mut weights[..2],
            &mut scratch
        ),
        mism(3, 2)
    );
    let zero_dilation = [MaskTerm::Dilated {
        left: 1,
        right: 1,
        dilation: 0,
    }];
    let bad = AdditiveParams {
        mask: Mask::new(&zero_dilation),
        ..ok
    };
    assert_eq!(
        run(
            &query,
            &keys,
            &values,
            shape,
            &bad,
            &mut context,
            &mut weights,
            &mut scratch
        ),
        Err(Error::InvalidMask)
    );
    assert_eq!(
        run(
            &query,
            &keys,
            &values,
            shape,
            &ok,
            &mut context,
            &mut weights,
            &mut scratch[..5]
        ),
        Err(Error::ScratchTooSmall {
            needed: 6,
            found: 5
        })
    );
    let huge = AdditiveShape {
        l: usize::MAX,
        dk: 2,
        ..shape
    };
    assert_eq!(
        run(
            &query,
            &keys,
            &values,
            huge,
            &ok,
            &mut context,
            &mut weights,
            &mut scratch
        ),
        Err(Error::ShapeOverflow)
    );

    // Typed: needs a + l + dv floats.
    let h = |x: &[f32]| to_e::<f16>(x);
    let (qh, kh, vh, wqh, wkh, vvh) = (h(&query), h(&keys), h(&values), h(&wq), h(&wk), h(&v));
    let okh = AdditiveParams {
        w_query: &wqh,
        w_key: &wkh,
        v: &vvh,
        mask: Mask::NONE,
    };
    let (mut ch, mut wh) = (vec![f16::ZERO; 5], vec![f16::ZERO; 3]);
    let needed = additive_attention_typed_scratch_len(shape);
    assert_eq!(needed, 6 + 3 + 5);
    let mut big = vec![0.0f32; needed];
    assert_eq!(
        additive_attention_typed(&qh, &kh, &vh, shape, &okh, &mut ch, &mut wh, &mut big),
        Ok(())
    );
    assert_eq!(
        additive_attention_typed(
            &qh,
            &kh,
            &vh,
            shape,
            &okh,
            &mut ch,
            &mut wh,
            &mut big[..needed - 1]
        ),
        Err(Error::ScratchTooSmall {
            needed,
            found: needed - 1
        })
    );
    assert_eq!(
        additive_attention_typed(&qh, &kh, &vh, shape, &okh, &mut ch[..4], &mut wh, &mut big),
        mism(5, 4)
    );

    // Fixed: only the mask can be wrong.
    let p = AdditiveParamsFixed {
        w_query: &[[1.0f32]],
        w_key: &[[1.0f32]],
        v: &[1.0],
        mask: Mask::new(&zero_dilation),
    };
    let (mut c1, mut w2) = ([0.0f32; 1], [0.0f32; 2]);
    assert_eq!(
        additive_attention_fixed(&[0.0], &[[0.0]; 2], &[[0.0]; 2], &p, &mut c1, &mut w2),
        Err(Error::InvalidMask)
    );
}

// ---------------------------------------------------------------------------------------
// Luong.

#[test]
fn luong_matches_reference_with_masks() {
    let mut rng = Rng(21);
    for trial in 0..30 {
        let shape = LuongShape {
            l: 1 + rng.below(20),
            d: 1 + rng.below(12),
            dv: 1 + rng.below(12),
        };
        let a = 1 + rng.below(16);
        let query = rng.vec(shape.d, 1.0);
        let keys = rng.vec(shape.l * shape.d, 1.0);
        let values = rng.vec(shape.l * shape.dv, 1.0);
        let w_general = rng.vec(shape.d * shape.d, 0.8);
        let w_concat = rng.vec(a * 2 * shape.d, 0.7);
        let v_concat = rng.vec(a, 2.0);
        let forms = [
            (LuongScore::Dot, RefLuong::Dot),
            (
                LuongScore::General { w: &w_general },
                RefLuong::General(&w_general),
            ),
            (
                LuongScore::Concat {
                    w: &w_concat,
                    v: &v_concat,
                },
                RefLuong::Concat(&w_concat, &v_concat),
            ),
        ];
        for (score, reference) in &forms {
            for (terms, offset) in masks(shape.l, &mut rng) {
                let mask = Mask::new(&terms).with_offset(offset);
                let params = LuongParams {
                    score: *score,
                    mask,
                };
                let mut context = vec![f32::NAN; shape.dv];
                let mut weights = vec![f32::NAN; shape.l];
                let mut scratch = vec![f32::NAN; luong_attention_scratch_len(shape, score)];
                luong_attention(
                    &query,
                    &keys,
                    &values,
                    shape,
                    &params,
                    &mut context,
                    &mut weights,
                    &mut scratch,
                )
                .unwrap();
                let scores = ref_luong(&query, &keys, reference);
                let (want_c, want_w) = ref_softmax_context(&scores, &values, shape.dv, &mask);
                let what = format!("trial {trial} {score:?} {terms:?}@{offset}");
                weights_check(&weights, &mask);
                if want_w.iter().all(|&w| w == 0.0) {
                    assert_eq!(context, vec![0.0; shape.dv], "{what}");
                    continue;
                }
                assert_close(&weights, &want_w, 1e-5, &format!("weights {what}"));
                assert_close(&context, &want_c, 1e-5, &format!("context {what}"));
            }
        }
    }
}

#[test]
fn luong_typed_matches_reference() {
    fn check<E: Element>(tol: f64) {
        let mut rng = Rng(22);
        let shape = LuongShape { l: 9, d: 8, dv: 6 };
        let a = 5;
        let query = rng.vec(shape.d, 1.0);
        let keys = rng.vec(shape.l * shape.d, 1.0);
        let values = rng.vec(shape.l * shape.dv, 1.0);
        let wg = to_e::<E>(&rng.vec(shape.d * shape.d, 0.8));
        let wc = to_e::<E>(&rng.vec(a * 2 * shape.d, 0.7));
        let vc = to_e::<E>(&rng.vec(a, 2.0));
        let (wg32, wc32, vc32) = (to_f32(&wg), to_f32(&wc), to_f32(&vc));
        let forms = [
            (LuongScore::Dot, RefLuong::Dot),
            (LuongScore::General { w: &wg[..] }, RefLuong::General(&wg32)),
            (
                LuongScore::Concat {
                    w: &wc[..],
                    v: &vc[..],
                },
                RefLuong::Concat(&wc32, &vc32),
            ),
        ];
        let terms = [MaskTerm::Causal];
        let mask = Mask::new(&terms).with_offset(6);
        let (q, k, vals) = (to_e::<E>(&query), to_e::<E>(&keys), to_e::<E>(&values));
        for (score, reference) in &forms {
            let params = LuongParams {
                score: *score,
                mask,
            };
            let mut context = vec![E::from_f32(f32::NAN); shape.dv];
            let mut weights = vec![E::from_f32(f32::NAN); shape.l];
            let mut scratch = vec![f32::NAN; luong_attention_typed_scratch_len(shape, score)];
            luong_attention_typed(
                &q,
                &k,
                &vals,
                shape,
                &params,
                &mut context,
                &mut weights,
                &mut scratch,
            )
            .unwrap();
            let scores = ref_luong(&rounded::<E>(&query), &rounded::<E>(&keys), reference);
            let (want_c, want_w) =
                ref_softmax_context(&scores, &rounded::<E>(&values), shape.dv, &mask);
            assert_close(&to_f32(&weights), &want_w, tol, "typed weights");
            assert_close(&to_f32(&context), &want_c, tol, "typed context");
            assert!(weights[7..].iter().all(|w| w.to_f32() == 0.0));
        }
    }
    check::<f32>(1e-5);
    check::<f16>(2e-3);
    check::<bf16>(1.5e-2);
}

#[test]
fn luong_fixed_equals_slice_tier() {
    let mut rng = Rng(23);
    const L: usize = 6;
    const D: usize = 4;
    const DV: usize = 3;
    const A: usize = 5;
    let query: [f32; D] = core::array::from_fn(|_| rng.f32(1.0));
    let keys: [[f32; D]; L] = core::array::from_fn(|_| core::array::from_fn(|_| rng.f32(1.0)));
    let values: [[f32; DV]; L] = core::array::from_fn(|_| core::array::from_fn(|_| rng.f32(1.0)));
    let wg: [[f32; D]; D] = core::array::from_fn(|_| core::array::from_fn(|_| rng.f32(1.0)));
    let wc: [[[f32; D]; 2]; A] =
        core::array::from_fn(|_| core::array::from_fn(|_| core::array::from_fn(|_| rng.f32(1.0))));
    let vc: [f32; A] = core::array::from_fn(|_| rng.f32(1.0));
    let terms = [MaskTerm::Sliding { left: 1, right: 2 }];
    let mask = Mask::new(&terms).with_offset(2);
    let check = |context: &[f32], weights: &[f32], reference: RefLuong<'_>, what: &str| {
        let scores = ref_luong(&query, keys.as_flattened(), &reference);
        let (want_c, want_w) = ref_softmax_context(&scores, values.as_flattened(), DV, &mask);
        assert_close(weights, &want_w, 1e-5, what);
        assert_close(context, &want_c, 1e-5, what);
        assert_eq!(weights[0], 0.0);
    };
    let (mut context, mut weights) = ([0.0f32; DV], [0.0f32; L]);
    luong_dot_fixed(&query, &keys, &values, &mask, &mut context, &mut weights).unwrap();
    check(&context, &weights, RefLuong::Dot, "dot");
    luong_general_fixed(
        &query,
        &keys,
        &values,
        &wg,
        &mask,
        &mut context,
        &mut weights,
    )
    .unwrap();
    check(
        &context,
        &weights,
        RefLuong::General(wg.as_flattened()),
        "general",
    );
    luong_concat_fixed(
        &query,
        &keys,
        &values,
        &wc,
        &vc,
        &mask,
        &mut context,
        &mut weights,
    )
    .unwrap();
    check(
        &context,
        &weights,
        RefLuong::Concat(wc.as_flattened().as_flattened(), &vc),
        "concat",
    );
}

#[test]
fn luong_huge_logits_stay_exact() {
    // Dot scores near 1e5 differ by far more than exp's range: the softmax is one-hot, no NaN.
    let shape = LuongShape { l: 3, d: 1, dv: 1 };
    let params = LuongParams {
        score: LuongScore::Dot,
        mask: Mask::NONE,
    };
    let (mut context, mut weights) = ([0.0f32], [0.0f32; 3]);
    luong_attention(
        &[1000.0],
        &[99.0, 100.0, -100.0],
        &[1.0, 2.0, 3.0],
        shape,
        &params,
        &mut context,
        &mut weights,
        &mut [],
    )
    .unwrap();
    assert_eq!(weights, [0.0, 1.0, 0.0]);
    assert_eq!(context, [2.0]);
}

#[test]
fn luong_errors() {
    let shape = LuongShape { l: 3, d: 2, dv: 4 };
    let (query, keys, values) = (vec![0.0f32; 2], vec![0.0f32; 6], vec![0.0f32; 12]);
    let (wg, wc, vc) = (vec![0.0f32; 4], vec![0.0f32; 20], vec![0.0f32; 5]);
    let mut context = vec![0.0f32; 4];
    let mut weights = vec![0.0f32; 3];
    let mut scratch = vec![0.0f32; 5];
    let mism = |expected, found| Err(Error::LengthMismatch { expected, found });
    let dot = LuongParams {
        score: LuongScore::Dot,
        mask: Mask::NONE,
    };
    let general = LuongParams {
        score: LuongScore::General { w: &wg },
        mask: Mask::NONE,
    };
    let concat = LuongParams {
        score: LuongScore::Concat { w: &wc, v: &vc },
        mask: Mask::NONE,
    };
    let run = |q: &[f32],
               k: &[f32],
               vals: &[f32],
               shape,
               p: &LuongParams<'_>,
               c: &mut [f32],
               w: &mut [f32],
               s: &mut [f32]| { luong_attention(q, k, vals, shape, p, c, w, s) };
    for p in [&dot, &general, &concat] {
        assert_eq!(
            run(
                &query,
                &keys,
                &values,
                shape,
                p,
                &mut context,
                &mut weights,
                &mut scratch
            ),
            Ok(())
        );
        for zero in 0..3 {
            let mut dims = [3, 2, 4];
            dims[zero] = 0;
            let s = LuongShape {
                l: dims[0],
                d: dims[1],
                dv: dims[2],
            };
            assert_eq!(
                run(
                    &query,
                    &keys,
                    &values,
                    s,
                    p,
                    &mut context,
                    &mut weights,
                    &mut scratch
                ),
                Err(Error::ZeroDimension)
            );
        }
        assert_eq!(
            run(
                &query[..1],
                &keys,
                &values,
                shape,
                p,
                &mut context,
                &mut weights,
                &mut scratch
            ),
            mism(2, 1)
        );
        assert_eq!(
            run(
                &query,
                &keys[..5],
                &values,
                shape,
                p,
                &mut context,
                &mut weights,
                &mut scratch
            ),
            mism(6, 5)
        );
        assert_eq!(
            run(
                &query,
                &keys,
                &values[..11],
                shape,
                p,
                &mut context,
                &mut weights,
                &mut scratch
            ),
            mism(12, 11)
        );
        assert_eq!(
            run(
                &query,
                &keys,
                &values,
                shape,
                p,
                &mut context[..3],
                &mut weights,
                &mut scratch
            ),
            mism(4, 3)
        );
        assert_eq!(
            run(
                &query,
                &keys,
                &values,
                shape,
                p,
                &mut context,
                &mut weights[..2],
                &mut scratch
            ),
            mism(3, 2)
        );
        let zero_block = [MaskTerm::BlockSparse {
            block: 0,
            window: 1,
            global: &[],
            random: &[],
        }];
        let bad = LuongParams {
            mask: Mask::new(&zero_block),
            ..*p
        };
        assert_eq!(
            run(
                &query,
                &keys,
                &values,
                shape,
                &bad,
                &mut context,
                &mut weights,
                &mut scratch
            ),
            Err(Error::InvalidMask)
        );
    }
    assert_eq!(luong_attention_scratch_len(shape, &dot.score), 0);
    assert_eq!(luong_attention_scratch_len(shape, &general.score), 2);
    assert_eq!(luong_attention_scratch_len(shape, &concat.score), 5);
    assert_eq!(
        luong_attention_typed_scratch_len(shape, &concat.score),
        5 + 3 + 4
    );
    assert_eq!(
        run(
            &query,
            &keys,
            &values,
            shape,
            &general,
            &mut context,
            &mut weights,
            &mut scratch[..1]
        ),
        Err(Error::ScratchTooSmall {
            needed: 2,
            found: 1
        })
    );
    assert_eq!(
        run(
            &query,
            &keys,
            &values,
            shape,
            &concat,
            &mut context,
            &mut weights,
            &mut scratch[..4]
        ),
        Err(Error::ScratchTooSmall {
            needed: 5,
            found: 4
        })
    );
    let bad = LuongParams {
        score: LuongScore::General { w: &wg[..3] },
        mask: Mask::NONE,
    };
    assert_eq!(
        run(
            &query,
            &keys,
            &values,
            shape,
            &bad,
            &mut context,
            &mut weights,
            &mut scratch
        ),
        mism(4, 3)
    );
    let bad = LuongParams {
        score: LuongScore::Concat {
            w: &wc[..19],
            v: &vc,
        },
        mask: Mask::NONE,
    };
    assert_eq!(
        run(
            &query,
            &keys,
            &values,
            shape,
            &bad,
            &mut context,
            &mut weights,
            &mut scratch
        ),
        mism(20, 19)
    );
    let bad = LuongParams {
        score: LuongScore::Concat {
            w: &wc[..16],
            v: &vc[..4],
        },
        mask: Mask::NONE,
    };
    assert_eq!(
        run(
            &query,
            &keys,
            &values,
            shape,
            &bad,
            &mut context,
            &mut weights,
            &mut scratch
        ),
        Ok(())
    );
    let bad = LuongParams {
        score: LuongScore::Concat { w: &[], v: &[] },
        mask: Mask::NONE,
    };
    assert_eq!(
        run(
            &query,
            &keys,
            &values,
            shape,
            &bad,
            &mut context,
            &mut weights,
            &mut scratch
        ),
        Err(Error::ZeroDimension)
    );
    let huge = LuongShape {
        l: usize::MAX,
        d: 2,
        dv: 1,
    };
    assert_eq!(
        run(
            &query,
            &keys,
            &values,
            huge,
            &dot,
            &mut context,
            &mut weights,
            &mut scratch
        ),
        Err(Error::ShapeOverflow)
    );
    let huge_d = LuongShape {
        l: 1,
        d: usize::MAX / 2 + 1,
        dv: 1,
    };
    let overflow = LuongParams {
        score: LuongScore::Concat { w: &wc, v: &vc },
        mask: Mask::NONE,
    };
    assert!(run(
        &query,
        &keys,
        &values,
        huge_d,
        &overflow,
        &mut context,
        &mut weights,
        &mut scratch
    )
    .is_err());

    // Typed: scratch holds the scores and the context too.
    let h = |x: &[f32]| to_e::<f16>(x);
    let (qh, kh, vh) = (h(&query), h(&keys), h(&values));
    let (mut ch, mut wh) = (vec![f16::ZERO; 4], vec![f16::ZERO; 3]);
    let doth = LuongParams::<f16> {
        score: LuongScore::Dot,
        mask: Mask::NONE,
    };
    let needed = luong_attention_typed_scratch_len(shape, &doth.score);
    let mut big = vec![0.0f32; needed];
    assert_eq!(
        luong_attention_typed(&qh, &kh, &vh, shape, &doth, &mut ch, &mut wh, &mut big),
        Ok(())
    );
    assert_eq!(
        luong_attention_typed(
            &qh,
            &kh,
            &vh,
            shape,
            &doth,
            &mut ch,
            &mut wh,
            &mut big[..needed - 1]
        ),
        Err(Error::ScratchTooSmall {
            needed,
            found: needed - 1
        })
    );

    // Fixed: only the mask can be wrong.
    let zero_dilation = [MaskTerm::Dilated {
        left: 1,
        right: 1,
        dilation: 0,
    }];
    let mask = Mask::new(&zero_dilation);
    let (mut c1, mut w2) = ([0.0f32; 1], [0.0f32; 2]);
    let (q1, k2, v2) = ([0.0f32], [[0.0f32]; 2], [[0.0f32]; 2]);
    assert_eq!(
        luong_dot_fixed(&q1, &k2, &v2, &mask, &mut c1, &mut w2),
        Err(Error::InvalidMask)
    );
    assert_eq!(
        luong_general_fixed(&q1, &k2, &v2, &[[1.0]], &mask, &mut c1, &mut w2),
        Err(Error::InvalidMask)
    );
    assert_eq!(
        luong_concat_fixed(
            &q1,
            &k2,
            &v2,
            &[[[1.0], [1.0]]],
            &[1.0],
            &mask,
            &mut c1,
            &mut w2
        ),
        Err(Error::InvalidMask)
    );
}

// ---------------------------------------------------------------------------------------
// Properties.

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Without a mask, permuting keys and values permutes the weights and keeps the context.
    #[test]
    fn luong_and_additive_are_permutation_equivariant(seed in any::<u64>(), l in 1usize..12, d in 1usize..6, rot in 0usize..12) {
        let mut rng = Rng(seed);
        let dv = 3;
        let query = rng.vec(d, 1.0);
        let keys = rng.vec(l * d, 1.0);
        let values = rng.vec(l * dv, 1.0);
        let w = rng.vec(d * d, 1.0);
        let perm: Vec<usize> = (0..l).map(|j| (j + rot) % l).collect();
        let keys_p: Vec<f32> = perm.iter().flat_map(|&j| keys[j * d..(j + 1) * d].to_vec()).collect();
        let values_p: Vec<f32> = perm.iter().flat_map(|&j| values[j * dv..(j + 1) * dv].to_vec()).collect();
        let shape = LuongShape { l, d, dv };
        let params = LuongParams { score: LuongScore::General { w: &w }, mask: Mask::NONE };
        let mut scratch = vec![0.0f32; d];
        let (mut c, mut wts) = (vec![0.0f32; dv], vec![0.0f32; l]);
        let (mut cp, mut wp) = (vec![0.0f32; dv], vec![0.0f32; l]);
        luong_attention(&query, &keys, &values, shape, &params, &mut c, &mut wts, &mut scratch).unwrap();
        luong_attention(&query, &keys_p, &values_p, shape, &params, &mut cp, &mut wp, &mut scratch).unwrap();
        for (i, &j) in perm.iter().enumerate() {
            prop_assert!((wp[i] - wts[j]).abs() < 1e-6);
        }
        for (a, b) in c.iter().zip(&cp) {
            prop_assert!((a - b).abs() < 1e-5);
        }
        prop_assert!((wts.iter().sum::<f32>() - 1.0).abs() < 1e-5);

        let ashape = AdditiveShape { l, dq: d, dk: d, dv, a: d };
        let ap = AdditiveParams { w_query: &w, w_key: &w, v: &query, mask: Mask::NONE };
        additive_attention(&query, &keys, &values, ashape, &ap, &mut c, &mut wts, &mut scratch).unwrap();
        additive_attention(&query, &keys_p, &values_p, ashape, &ap, &mut cp, &mut wp, &mut scratch).unwrap();
        for (i, &j) in perm.iter().enumerate() {
            prop_assert!((wp[i] - wts[j]).abs() < 1e-6);
        }
        for (a, b) in c.iter().zip(&cp) {
            prop_assert!((a - b).abs() < 1e-5);
        }
        prop_assert!((wts.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }

    /// Arbitrary shapes and slice lengths never panic: either Ok or Err.
    #[test]
    fn no_input_panics(dims in proptest::collection::vec(0usize..5, 6), lens in proptest::collection::vec(0usize..40, 8), causal in any::<bool>(), eps in prop_oneof![Just(0.0f32), Just(1e-6), Just(f32::NAN), Just(-1.0)]) {
        let buf = |n: usize| vec![0.5f32; n];
        let shape = AttentionShape::multi_head(dims[0], dims[1], dims[2], dims[3], dims[4], dims[5]);
        let mut out = buf(lens[3]);
        let mut scratch = buf(lens[4]);
        let params = LinearAttentionParams { causal, eps };
        let _ = linear_attention(&buf(lens[0]), &buf(lens[1]), &buf(lens[2]), &mut out, shape, &params, &mut scratch);

        let ashape = AdditiveShape { l: dims[0], dq: dims[1], dk: dims[2], dv: dims[3], a: dims[4] };
        let (wq, wk, v) = (buf(lens[5]), buf(lens[6]), buf(lens[7]));
        let ap = AdditiveParams { w_query: &wq, w_key: &wk, v: &v, mask: Mask::NONE };
        let (mut c, mut w) = (buf(lens[3]), buf(lens[4]));
        let _ = additive_attention(&buf(lens[0]), &buf(lens[1]), &buf(lens[2]), ashape, &ap, &mut c, &mut w, &mut scratch);

        let lshape = LuongShape { l: dims[0], d: dims[1], dv: dims[2] };
        for score in [LuongScore::Dot, LuongScore::General { w: &wq }, LuongScore::Concat { w: &wk, v: &v }] {
            let lp = LuongParams { score, mask: Mask::NONE };
            let _ = luong_attention(&buf(lens[0]), &buf(lens[1]), &buf(lens[2]), lshape, &lp, &mut c, &mut w, &mut scratch);
        }
    }
}
