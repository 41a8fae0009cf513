//! The KV cache and its decode step: a sliding-window ring decoding far past its capacity
//! against full attention over the whole history under the same window mask (the library's
//! `sdpa` on the full arrays, and an f64 reference written from the definition); linear
//! decode against one full causal call; GQA/MQA; f16/bf16 storage; int8; every error path.

use microattn::attention::int8::{int8_sdpa, Int8Bias, Int8Scales, Int8SdpaParams};
use microattn::attention::{sdpa, sdpa_typed, AttentionShape, Bias, Score, SdpaParams};
use microattn::kv_cache::{
    decode_scratch_len, int8_decode_scratch_len, kv_cache_bytes, ring_capacity, CacheMode, KvCache,
    KvShape,
};
use microattn::mask::{Mask, MaskTerm};
use microattn::quant::QParams;
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
}

/// A decoding problem: per token `t`, queries `q[t]` (`[heads, d]`) and keys/values
/// `k[t]`/`v[t]` (`[kv_heads, d]` / `[kv_heads, dv]`), as a model's projections produce them.
struct Tokens {
    heads: usize,
    kv_heads: usize,
    d: usize,
    dv: usize,
    q: Vec<Vec<f32>>,
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

impl Tokens {
    fn random(seed: u64, n: usize, heads: usize, kv_heads: usize, d: usize, dv: usize) -> Self {
        let mut rng = Rng(seed);
        // Amplitude 2 with d = 16 gives logits of a few units: peaked but not one-hot.
        Tokens {
            heads,
            kv_heads,
            d,
            dv,
            q: (0..n).map(|_| rng.vec(heads * d, 2.0)).collect(),
            k: (0..n).map(|_| rng.vec(kv_heads * d, 2.0)).collect(),
            v: (0..n).map(|_| rng.vec(kv_heads * dv, 1.0)).collect(),
        }
    }

    fn n(&self) -> usize {
        self.q.len()
    }

    /// The whole history head-major, as a prefill call sees it: `q` `[heads, n, d]`,
    /// `k` `[kv_heads, n, d]`, `v` `[kv_heads, n, dv]`.
    fn full(&self) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let n = self.n();
        let gather = |rows: &[Vec<f32>], heads: usize, w: usize| {
            let mut out = vec![0.0f32; heads * n * w];
            for (t, row) in rows.iter().enumerate() {
                for h in 0..heads {
                    out[(h * n + t) * w..][..w].copy_from_slice(&row[h * w..][..w]);
                }
            }
            out
        };
        (
            gather(&self.q, self.heads, self.d),
            gather(&self.k, self.kv_heads, self.d),
            gather(&self.v, self.kv_heads, self.dv),
        )
    }

    /// f64 reference from the definition: query `t`, head `h` attends to the keys `j` with
    /// `t - window <= j <= t` (`window = None`: `0..=t`), scale `1/sqrt(d)`, plus
    /// `-slope[h] * |t - j|` when ALiBi slopes are given. Returns `[heads, dv]`.
    fn reference(&self, t: usize, window: Option<usize>, slopes: Option<&[f32]>) -> Vec<f64> {
        let (d, dv) = (self.d, self.dv);
        let group = self.heads / self.kv_heads;
        let first = window.map_or(0, |w| t.saturating_sub(w));
        let scale = 1.0 / (d as f64).sqrt();
        let mut out = vec![0.0f64; self.heads * dv];
        for h in 0..self.heads {
            let g = h / group;
            let q = &self.q[t][h * d..][..d];
            let logits: Vec<f64> = (first..=t)
                .map(|j| {
                    let k = &self.k[j][g * d..][..d];
                    let dot: f64 = q.iter().zip(k).map(|(&a, &b)| a as f64 * b as f64).sum();
                    let bias = slopes.map_or(0.0, |s| -(s[h] as f64) * (t - j) as f64);
                    dot * scale + bias
                })
                .collect();
            let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let weights: Vec<f64> = logits.iter().map(|z| (z - max).exp()).collect();
            let sum: f64 = weights.iter().sum();
            for (w, j) in weights.iter().zip(first..=t) {
                let v = &self.v[j][g * dv..][..dv];
                for (o, &x) in out[h * dv..][..dv].iter_mut().zip(v) {
                    *o += w / sum * x as f64;
                }
            }
        }
        out
    }

    /// The same data rounded to `E` and back, so a reference sees what an `E` cache stores.
    fn rounded<E: Element>(&self) -> Tokens {
        let round = |rows: &[Vec<f32>]| -> Vec<Vec<f32>> {
            rows.iter()
                .map(|r| r.iter().map(|&x| E::from_f32(x).to_f32()).collect())
                .collect()
        };
        Tokens {
            q: round(&self.q),
            k: round(&self.k),
            v: round(&self.v),
            ..*self
        }
    }
}

/// Relative L2 error of `got` against `want`.
fn rel_l2(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let num: f64 = got
        .iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w).powi(2))
        .sum();
    let den: f64 = want.iter().map(|w| w * w).sum();
    (num / den.max(1e-300)).sqrt()
}

fn widen(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

/// Row `t` of every head of a `[heads, n, dv]` output: `[heads, dv]`.
fn row_of(full: &[f32], heads: usize, n: usize, t: usize, dv: usize) -> Vec<f32> {
    (0..heads)
        .flat_map(|h| full[(h * n + t) * dv..][..dv].iter().copied())
        .collect()
}

/// Ring decode of `tokens` with window `w`; at every step, compares with `sdpa` over the
/// whole history under `[Causal, Sliding { left: w, right: 0 }]` and with the f64 reference.
/// Returns the largest error against `sdpa` and against f64.
fn check_ring_decode(tokens: &Tokens, w: usize) -> (f64, f64) {
    let (heads, kv_heads, d, dv, n) = (
        tokens.heads,
        tokens.kv_heads,
        tokens.d,
        tokens.dv,
        tokens.n(),
    );
    let shape = KvShape::ring(kv_heads, w, d, dv);
    assert_eq!(shape.capacity, w + 1);
    let mut k_store = vec![0.0f32; shape.k_len()];
    let mut v_store = vec![0.0f32; shape.v_len()];
    let mut cache = KvCache::new(&mut k_store, &mut v_store, shape, CacheMode::Ring).unwrap();
    assert_eq!(cache.window(), Some(w));
    let window_terms = [MaskTerm::Causal, MaskTerm::Sliding { left: w, right: 0 }];
    // The model's own parameters work unchanged with the ring (offset is the cache's job).
    let step_params = SdpaParams {
        mask: Mask::new(&window_terms),
        ..Default::default()
    };
    let mut scratch = vec![0.0f32; decode_scratch_len(shape)];
    let (_, k_full, v_full) = tokens.full();
    let (mut worst_sdpa, mut worst_f64) = (0.0f64, 0.0f64);
    for t in 0..n {
        assert_eq!(cache.next_position(), t as u64);
        cache.append(&tokens.k[t], &tokens.v[t]).unwrap();
        assert_eq!(cache.len(), (t + 1).min(w + 1));
        let mut out = vec![0.0f32; heads * dv];
        cache
            .attend(&tokens.q[t], &mut out, heads, &step_params, &mut scratch)
            .unwrap();
        // Full attention over all `n` positions, query at `t`: the causal term hides the
        // future, the window the past beyond `w`.
        let full_params = SdpaParams {
            mask: Mask::new(&window_terms).with_offset(t),
            ..Default::default()
        };
        let mut want = vec![0.0f32; heads * dv];
        let full_shape = AttentionShape::multi_head(heads, kv_heads, 1, n, d, dv);
        sdpa(
            &tokens.q[t],
            &k_full,
            &v_full,
            &mut want,
            full_shape,
            &full_params,
        )
        .unwrap();
        let e = rel_l2(&out, &widen(&want));
        assert!(e <= 1e-6, "step {t}: ring vs full sdpa rel L2 {e}");
        worst_sdpa = worst_sdpa.max(e);
        let e = rel_l2(&out, &tokens.reference(t, Some(w), None));
        assert!(e <= 1e-5, "step {t}: ring vs f64 rel L2 {e}");
        worst_f64 = worst_f64.max(e);
    }
    (worst_sdpa, worst_f64)
}

#[test]
fn ring_decodes_far_past_capacity_like_full_windowed_attention() {
    // Window 8 (9 slots), 100 tokens: the ring wraps 11 times.
    let tokens = Tokens::random(1, 100, 4, 4, 16, 16);
    let (vs_sdpa, vs_f64) = check_ring_decode(&tokens, 8);
    println!("ring w=8 MHA: max rel L2 vs sdpa {vs_sdpa:.2e}, vs f64 {vs_f64:.2e}");
}

#[test]
fn ring_with_gqa_mqa_and_odd_sizes() {
    for (seed, heads, kv_heads, w, d, dv) in [
        (2, 4, 2, 8, 16, 12),
        (3, 6, 1, 5, 8, 8),
        (4, 3, 3, 1, 4, 7),
        (5, 2, 1, 0, 8, 8),
        // A window wider than a tile of the kernel.
        (6, 4, 2, 40, 8, 8),
    ] {
        let tokens = Tokens::random(seed, 3 * (w + 1) + 7, heads, kv_heads, d, dv);
        let (vs_sdpa, vs_f64) = check_ring_decode(&tokens, w);
        println!(
            "ring w={w} heads={heads} kv={kv_heads}: vs sdpa {vs_sdpa:.2e}, vs f64 {vs_f64:.2e}"
        );
    }
}

#[test]
fn ring_memory_stays_at_the_window() {
    // The whole state of a forever-decoding window-8 cache: 9 slots.
    const SHAPE: KvShape = KvShape::ring(2, 8, 16, 16);
    assert_eq!(SHAPE.capacity, ring_capacity(8));
    assert_eq!(kv_cache_bytes::<f32>(SHAPE), 2 * 2 * 9 * 16 * 4);
    assert_eq!(kv_cache_bytes::<f16>(SHAPE), 2 * 2 * 9 * 16 * 2);
    assert_eq!(kv_cache_bytes::<i8>(SHAPE), 2 * 2 * 9 * 16);
    let mut k = [[[0.0f32; 16]; 9]; 2];
    let mut v = [[[0.0f32; 16]; 9]; 2];
    assert_eq!(
        core::mem::size_of_val(&k) + core::mem::size_of_val(&v),
        kv_cache_bytes::<f32>(SHAPE)
    );
    let mut cache = KvCache::from_arrays(&mut k, &mut v, CacheMode::Ring).unwrap();
    assert_eq!(cache.shape(), SHAPE);
    for t in 0..1000u32 {
        let x = [t as f32; 32];
        cache.append(&x, &x).unwrap();
        assert!(cache.len() <= 9);
    }
    // The last 9 positions, 991..=999, each in slot `p % 9`.
    for slot in 0..9 {
        let p = cache.slot_position(slot).unwrap();
        assert!((991..=999).contains(&p) && p as usize % 9 == slot);
        assert_eq!(cache.keys(1).unwrap()[slot * 16], p as f32);
    }
    assert_eq!(cache.slot_position(9), None);
}

/// Linear decode of `tokens` under `terms` (+ the cache's implicit causality) with `bias`,
/// against one prefill `sdpa` call over all rows with `[Causal] + terms`.
fn check_linear_decode(tokens: &Tokens, terms: &[MaskTerm<'_>], bias: Bias<'_>) -> f64 {
    let (heads, kv_heads, d, dv, n) = (
        tokens.heads,
        tokens.kv_heads,
        tokens.d,
        tokens.dv,
        tokens.n(),
    );
    let (q_full, k_full, v_full) = tokens.full();
    let mut all_terms = vec![MaskTerm::Causal];
    all_terms.extend_from_slice(terms);
    let prefill_params = SdpaParams {
        mask: Mask::new(&all_terms),
        bias,
        ..Default::default()
    };
    let mut prefill = vec![0.0f32; heads * n * dv];
    let shape = AttentionShape::multi_head(heads, kv_heads, n, n, d, dv);
    sdpa(
        &q_full,
        &k_full,
        &v_full,
        &mut prefill,
        shape,
        &prefill_params,
    )
    .unwrap();

    let cache_shape = KvShape::new(kv_heads, n, d, dv);
    let mut k_store = vec![0.0f32; cache_shape.k_len()];
    let mut v_store = vec![0.0f32; cache_shape.v_len()];
    let mut cache =
        KvCache::new(&mut k_store, &mut v_store, cache_shape, CacheMode::Linear).unwrap();
    let step_params = SdpaParams {
        mask: Mask::new(terms).with_offset(12345), // ignored: the cache sets the offset
        bias,
        ..Default::default()
    };
    let mut scratch = vec![0.0f32; decode_scratch_len(cache_shape)];
    let mut worst = 0.0f64;
    for t in 0..n {
        cache.append(&tokens.k[t], &tokens.v[t]).unwrap();
        let mut out = vec![0.0f32; heads * dv];
        cache
            .attend(&tokens.q[t], &mut out, heads, &step_params, &mut scratch)
            .unwrap();
        let want = row_of(&prefill, heads, n, t, dv);
        let e = rel_l2(&out, &widen(&want));
        assert!(e <= 1e-6, "step {t}: decode vs prefill rel L2 {e}");
        worst = worst.max(e);
    }
    assert!(cache.is_full());
    worst
}

#[test]
fn linear_decode_equals_one_causal_prefill_call() {
    for (seed, heads, kv_heads) in [(10, 4, 4), (11, 4, 2), (12, 4, 1)] {
        let tokens = Tokens::random(seed, 50, heads, kv_heads, 16, 12);
        let worst = check_linear_decode(&tokens, &[], Bias::None);
        println!("linear heads={heads} kv={kv_heads}: max rel L2 vs prefill {worst:.2e}");
        // And against the f64 definition.
        let shape = KvShape::new(kv_heads, 50, 16, 12);
        let mut k = vec![0.0f32; shape.k_len()];
        let mut v = vec![0.0f32; shape.v_len()];
        let mut cache = KvCache::new(&mut k, &mut v, shape, CacheMode::Linear).unwrap();
        let mut scratch = [0.0f32; 12];
        for t in 0..50 {
            cache.append(&tokens.k[t], &tokens.v[t]).unwrap();
            let mut out = vec![0.0f32; heads * 12];
            let params = SdpaParams::default();
            cache
                .attend(&tokens.q[t], &mut out, heads, &params, &mut scratch)
                .unwrap();
            let e = rel_l2(&out, &tokens.reference(t, None, None));
            assert!(e <= 1e-5, "step {t}: decode vs f64 rel L2 {e}");
        }
    }
}

#[test]
fn linear_cache_honours_window_masks_and_position_biases() {
    let tokens = Tokens::random(20, 40, 4, 2, 8, 8);
    let window = [MaskTerm::Sliding { left: 5, right: 0 }];
    check_linear_decode(&tokens, &window, Bias::None);
    let slopes = [0.5f32, 0.25, 0.125, 0.0625];
    check_linear_decode(&tokens, &[], Bias::Alibi { slopes: &slopes });
    // ALiBi in absolute positions against the f64 definition.
    let shape = KvShape::new(2, 40, 8, 8);
    let (mut k, mut v) = (vec![0.0f32; shape.k_len()], vec![0.0f32; shape.v_len()]);
    let mut cache = KvCache::new(&mut k, &mut v, shape, CacheMode::Linear).unwrap();
    let params = SdpaParams {
        bias: Bias::Alibi { slopes: &slopes },
        ..Default::default()
    };
    let mut scratch = [0.0f32; 8];
    for t in 0..40 {
        cache.append(&tokens.k[t], &tokens.v[t]).unwrap();
        let mut out = [0.0f32; 32];
        cache
            .attend(&tokens.q[t], &mut out, 4, &params, &mut scratch)
            .unwrap();
        let e = rel_l2(&out, &tokens.reference(t, None, Some(&slopes)));
        assert!(e <= 1e-5, "step {t}: ALiBi decode vs f64 rel L2 {e}");
    }
    // A different table row per head, so a head reading another head's row shows.
    let t5_table: Vec<f32> = (0..4 * 8).map(|i| (i as f32 * 0.37).sin()).collect();
    let t5 = Bias::T5 {
        bidirectional: false,
        num_buckets: 8,
        max_distance: 16,
        table: &t5_table,
    };
    check_linear_decode(&tokens, &[], t5);
}

/// Ring decode with `E` storage against `sdpa_typed::<E>` over the full history and against
/// the f64 reference on the `E`-rounded inputs; returns the worst error against f64.
fn check_typed_ring<E: Element>(tokens: &Tokens, w: usize, tol: f64) -> f64 {
    let (heads, kv_heads, d, dv, n) = (
        tokens.heads,
        tokens.kv_heads,
        tokens.d,
        tokens.dv,
        tokens.n(),
    );
    let rounded = tokens.rounded::<E>();
    let to_e = |x: &[f32]| -> Vec<E> { x.iter().map(|&v| E::from_f32(v)).collect() };
    let shape = KvShape::ring(kv_heads, w, d, dv);
    let mut k_store = vec![E::default(); shape.k_len()];
    let mut v_store = vec![E::default(); shape.v_len()];
    let mut cache = KvCache::new(&mut k_store, &mut v_store, shape, CacheMode::Ring).unwrap();
    let (_, k_full, v_full) = tokens.full();
    let (k_full, v_full) = (to_e(&k_full), to_e(&v_full));
    let terms = [MaskTerm::Sliding { left: w, right: 0 }, MaskTerm::Causal];
    let mut scratch = vec![0.0f32; decode_scratch_len(shape)];
    let mut worst = 0.0f64;
    for t in 0..n {
        // Stored from f32 through the cache's own rounding.
        cache.append_f32(&tokens.k[t], &tokens.v[t]).unwrap();
        let q = to_e(&tokens.q[t]);
        let mut out = vec![E::default(); heads * dv];
        cache
            .attend(&q, &mut out, heads, &SdpaParams::default(), &mut scratch)
            .unwrap();
        let out: Vec<f32> = out.iter().map(|x| x.to_f32()).collect();
        let mut want = vec![E::default(); heads * dv];
        let params = SdpaParams {
            mask: Mask::new(&terms).with_offset(t),
            ..Default::default()
        };
        let full_shape = AttentionShape::multi_head(heads, kv_heads, 1, n, d, dv);
        sdpa_typed(
            &q,
            &k_full,
            &v_full,
            &mut want,
            full_shape,
            &params,
            &mut scratch,
        )
        .unwrap();
        let want: Vec<f32> = want.iter().map(|x| x.to_f32()).collect();
        // Both round the f32 result once to `E`; a few-ulp f32 difference can flip a rounding.
        let e = rel_l2(&out, &widen(&want));
        assert!(e <= tol, "step {t}: ring vs full sdpa_typed rel L2 {e}");
        let e = rel_l2(&out, &rounded.reference(t, Some(w), None));
        assert!(e <= tol, "step {t}: ring vs f64 rel L2 {e}");
        worst = worst.max(e);
    }
    worst
}

#[test]
fn f16_and_bf16_storage() {
    let tokens = Tokens::random(30, 60, 4, 2, 16, 16);
    // The output is rounded to E once: half an ulp, 2^-11 (f16) or 2^-8 (bf16), relative.
    let e16 = check_typed_ring::<f16>(&tokens, 8, 1e-3);
    let eb16 = check_typed_ring::<bf16>(&tokens, 8, 6e-3);
    println!("ring f16: max rel L2 vs f64 {e16:.2e}; bf16: {eb16:.2e}");
    // f16 storage halves the bytes of f32.
    let shape = KvShape::ring(2, 8, 16, 16);
    assert_eq!(
        2 * kv_cache_bytes::<f16>(shape),
        kv_cache_bytes::<f32>(shape)
    );
}

/// Per-tensor symmetric scale for a set of rows.
fn qparams_of(rows: &[Vec<f32>]) -> QParams {
    let max = rows.iter().flatten().fold(0.0f32, |m, x| m.max(x.abs()));
    QParams::from_max_abs(max).unwrap()
}

fn quantize(x: &[f32], q: QParams) -> Vec<i8> {
    x.iter().map(|&v| q.quantize(v)).collect()
}

#[test]
fn int8_ring_decode() {
    let (heads, kv_heads, d, dv, w, n) = (4, 2, 16, 16, 8, 60);
    let tokens = Tokens::random(40, n, heads, kv_heads, d, dv);
    let (kq, vq, qq) = (
        qparams_of(&tokens.k),
        qparams_of(&tokens.v),
        qparams_of(&tokens.q),
    );
    let scales = Int8Scales {
        q: qq.scale(),
        k: kq.scale(),
        v: vq.scale(),
        out: vq.scale(),
    };
    let terms = [MaskTerm::Causal, MaskTerm::Sliding { left: w, right: 0 }];
    let params = Int8SdpaParams::new(
        scales,
        d,
        Score::Dot,
        None,
        Mask::new(&terms),
        Int8Bias::None,
    )
    .unwrap();
    let shape = KvShape::ring(kv_heads, w, d, dv);
    let run = || -> Vec<Vec<i8>> {
        let mut k_store = vec![0i8; shape.k_len()];
        let mut v_store = vec![0i8; shape.v_len()];
        let mut cache = KvCache::new(&mut k_store, &mut v_store, shape, CacheMode::Ring).unwrap();
        let mut scratch = vec![0i64; int8_decode_scratch_len(shape)];
        (0..n)
            .map(|t| {
                cache
                    .append_quantized(&tokens.k[t], &tokens.v[t], kq, vq)
                    .unwrap();
                let mut out = vec![0i8; heads * dv];
                cache
                    .attend_int8(
                        &quantize(&tokens.q[t], qq),
                        &mut out,
                        heads,
                        &params,
                        &mut scratch,
                    )
                    .unwrap();
                out
            })
            .collect()
    };
    let first = run();
    // Integer arithmetic only: the same bytes every time.
    assert_eq!(first, run());
    // Against the f64 reference on the unquantized inputs: the int8 error budget (inputs
    // and output rounded to 8 bits).
    let mut worst = 0.0f64;
    for (t, out) in first.iter().enumerate() {
        let got: Vec<f32> = out.iter().map(|&x| vq.dequantize(x)).collect();
        let e = rel_l2(&got, &tokens.reference(t, Some(w), None));
        assert!(e <= 0.05, "step {t}: int8 ring vs f64 rel L2 {e}");
        worst = worst.max(e);
    }
    // And against the int8 kernel over the whole (quantized) history: the same integers
    // visited in another order; the online rescale may round differently by an output step.
    let (_, k_full, v_full) = tokens.full();
    let (k_full, v_full) = (quantize(&k_full, kq), quantize(&v_full, vq));
    let mut max_step = 0i32;
    for (t, out) in first.iter().enumerate() {
        let full = Int8SdpaParams {
            mask: Mask::new(&terms).with_offset(t),
            ..params
        };
        let mut want = vec![0i8; heads * dv];
        let mut scratch = vec![0i64; dv];
        let full_shape = AttentionShape::multi_head(heads, kv_heads, 1, n, d, dv);
        int8_sdpa(
            &quantize(&tokens.q[t], qq),
            &k_full,
            &v_full,
            &mut want,
            full_shape,
            &full,
            &mut scratch,
        )
        .unwrap();
        for (&a, &b) in out.iter().zip(&want) {
            max_step = max_step.max((a as i32 - b as i32).abs());
        }
    }
    assert!(
        max_step <= 1,
        "int8 ring vs full int8 sdpa differ by {max_step} steps"
    );
    println!("int8 ring: max rel L2 vs f64 {worst:.2e}, max |ring - full int8| {max_step} step(s)");
}

/// Int8 linear decode against one int8 prefill call over all rows, byte for byte (the same
/// keys visited in the same order), with `bias` converted to the int8 format.
fn check_int8_linear(seed: u64, heads: usize, kv_heads: usize, bias: Bias<'_>) {
    let (d, dv, n) = (8, 8, 30);
    let tokens = Tokens::random(seed, n, heads, kv_heads, d, dv);
    let (kq, vq, qq) = (
        qparams_of(&tokens.k),
        qparams_of(&tokens.v),
        qparams_of(&tokens.q),
    );
    let scales = Int8Scales {
        q: qq.scale(),
        k: kq.scale(),
        v: vq.scale(),
        out: vq.scale(),
    };
    let mut storage = vec![0i32; Int8Bias::storage_len(&bias)];
    let mut thresholds = vec![0u32; Int8Bias::t5_threshold_count(&bias)];
    let int8_bias = Int8Bias::from_bias(&bias, heads, &mut storage, &mut thresholds).unwrap();
    let causal = [MaskTerm::Causal];
    let params =
        Int8SdpaParams::new(scales, d, Score::Dot, None, Mask::new(&causal), int8_bias).unwrap();
    let (q_full, k_full, v_full) = tokens.full();
    let mut prefill = vec![0i8; heads * n * dv];
    let shape = AttentionShape::multi_head(heads, kv_heads, n, n, d, dv);
    let mut scratch = vec![0i64; dv];
    int8_sdpa(
        &quantize(&q_full, qq),
        &quantize(&k_full, kq),
        &quantize(&v_full, vq),
        &mut prefill,
        shape,
        &params,
        &mut scratch,
    )
    .unwrap();
    let cache_shape = KvShape::new(kv_heads, n, d, dv);
    let mut k = vec![0i8; cache_shape.k_len()];
    let mut v = vec![0i8; cache_shape.v_len()];
    let mut cache = KvCache::new(&mut k, &mut v, cache_shape, CacheMode::Linear).unwrap();
    for t in 0..n {
        let (k_row, v_row) = (quantize(&tokens.k[t], kq), quantize(&tokens.v[t], vq));
        cache.append(&k_row, &v_row).unwrap();
        let mut out = vec![0i8; heads * dv];
        cache
            .attend_int8(
                &quantize(&tokens.q[t], qq),
                &mut out,
                heads,
                &params,
                &mut scratch,
            )
            .unwrap();
        let want: Vec<i8> = (0..heads)
            .flat_map(|h| prefill[(h * n + t) * dv..][..dv].iter().copied())
            .collect();
        assert_eq!(out, want, "step {t} of {bias:?}");
    }
}

#[test]
fn int8_linear_decode_matches_the_prefill_call_byte_for_byte() {
    check_int8_linear(41, 4, 1, Bias::None);
    let slopes = [0.5f32, 0.25, 0.125, 0.0625];
    check_int8_linear(42, 4, 2, Bias::Alibi { slopes: &slopes });
    let table: Vec<f32> = (0..4 * 8).map(|i| (i as f32 * 0.37).sin()).collect();
    let t5 = Bias::T5 {
        bidirectional: false,
        num_buckets: 8,
        max_distance: 16,
        table: &table,
    };
    check_int8_linear(43, 4, 2, t5);
}

#[test]
fn resume_continues_a_cache_from_its_token_count() {
    let tokens = Tokens::random(50, 23, 2, 1, 4, 4);
    let shape = KvShape::ring(1, 4, 4, 4);
    let (mut k1, mut v1) = (vec![0.0f32; shape.k_len()], vec![0.0f32; shape.v_len()]);
    let (mut k2, mut v2) = (vec![0.0f32; shape.k_len()], vec![0.0f32; shape.v_len()]);
    let mut whole = KvCache::new(&mut k1, &mut v1, shape, CacheMode::Ring).unwrap();
    let mut scratch = [0.0f32; 4];
    for t in 0..23 {
        whole.append(&tokens.k[t], &tokens.v[t]).unwrap();
        // A fresh view per step over the same storage, as a multi-layer model keeps it.
        let mut view = KvCache::resume(&mut k2, &mut v2, shape, CacheMode::Ring, t as u64).unwrap();
        view.append(&tokens.k[t], &tokens.v[t]).unwrap();
        let (mut a, mut b) = ([0.0f32; 8], [0.0f32; 8]);
        let params = SdpaParams::default();
        whole
            .attend(&tokens.q[t], &mut a, 2, &params, &mut scratch)
            .unwrap();
        view.attend(&tokens.q[t], &mut b, 2, &params, &mut scratch)
            .unwrap();
        assert_eq!(a, b, "step {t}");
    }
}

#[test]
fn bad_input_is_an_error() {
    let shape = KvShape::new(2, 3, 4, 4);
    let (mut k, mut v) = ([0.0f32; 24], [0.0f32; 24]);

    // Construction.
    let zero_cap = KvShape::new(2, 0, 4, 4);
    assert_eq!(
        KvCache::new(&mut [0.0f32; 0], &mut [], zero_cap, CacheMode::Ring).err(),
        Some(Error::ZeroDimension)
    );
    for bad in [
        KvShape::new(0, 3, 4, 4),
        KvShape::new(2, 3, 0, 4),
        KvShape::new(2, 3, 4, 0),
    ] {
        assert_eq!(
            KvCache::new(&mut k, &mut v, bad, CacheMode::Linear).err(),
            Some(Error::ZeroDimension)
        );
    }
    assert_eq!(
        KvCache::new(&mut k[..23], &mut v, shape, CacheMode::Linear).err(),
        Some(Error::LengthMismatch {
            expected: 24,
            found: 23
        })
    );
    assert_eq!(
        KvCache::new(&mut k, &mut v[..20], shape, CacheMode::Linear).err(),
        Some(Error::LengthMismatch {
            expected: 24,
            found: 20
        })
    );
    let huge = KvShape::new(usize::MAX / 2, 3, 4, 4);
    assert_eq!(
        KvCache::new(&mut k, &mut v, huge, CacheMode::Linear).err(),
        Some(Error::ShapeOverflow)
    );
    assert_eq!(
        KvCache::resume(&mut k, &mut v, shape, CacheMode::Linear, 4).err(),
        Some(Error::InvalidParameter)
    );
    let empty: &mut [[[f32; 4]; 0]; 2] = &mut [[], []];
    let empty_v: &mut [[[f32; 4]; 0]; 2] = &mut [[], []];
    assert_eq!(
        KvCache::from_arrays(empty, empty_v, CacheMode::Linear).err(),
        Some(Error::ZeroDimension)
    );

    let mut cache = KvCache::new(&mut k, &mut v, shape, CacheMode::Linear).unwrap();
    let mut scratch = [0.0f32; 4];
    let mut out = [0.0f32; 16];
    let q = [0.1f32; 16];
    let params = SdpaParams::default();

    // Attending to nothing.
    assert_eq!(
        cache.attend(&q, &mut out, 4, &params, &mut scratch),
        Err(Error::ZeroDimension)
    );

    // Appending: wrong row lengths leave the cache unchanged.
    let row = [1.0f32; 8];
    assert_eq!(
        cache.append(&row[..7], &row),
        Err(Error::LengthMismatch {
            expected: 8,
            found: 7
        })
    );
    assert_eq!(
        cache.append(&row, &[1.0; 9]),
        Err(Error::LengthMismatch {
            expected: 8,
            found: 9
        })
    );
    assert!(cache.is_empty());
    for _ in 0..3 {
        cache.append(&row, &row).unwrap();
    }
    assert!(cache.is_full());
    assert_eq!(cache.append(&row, &row), Err(Error::CacheFull));
    assert_eq!((cache.len(), cache.next_position()), (3, 3));

    // Decode shapes.
    assert_eq!(
        cache.attend(&q, &mut out, 3, &params, &mut scratch),
        Err(Error::HeadsMismatch)
    );
    assert_eq!(
        cache.attend(&q, &mut out, 0, &params, &mut scratch),
        Err(Error::ZeroDimension)
    );
    assert_eq!(
        cache.attend(&q[..15], &mut out, 4, &params, &mut scratch),
        Err(Error::LengthMismatch {
            expected: 16,
            found: 15
        })
    );
    assert_eq!(
        cache.attend(&q, &mut out[..12], 4, &params, &mut scratch),
        Err(Error::LengthMismatch {
            expected: 16,
            found: 12
        })
    );
    assert_eq!(
        cache.attend(&q, &mut out, 4, &params, &mut scratch[..3]),
        Err(Error::ScratchTooSmall {
            needed: 4,
            found: 3
        })
    );
    let nan_scale = SdpaParams {
        scale: Some(f32::NAN),
        ..Default::default()
    };
    assert_eq!(
        cache.attend(&q, &mut out, 4, &nan_scale, &mut scratch),
        Err(Error::InvalidScale)
    );
    let bad_slopes = SdpaParams {
        bias: Bias::Alibi { slopes: &[1.0] },
        ..Default::default()
    };
    assert_eq!(
        cache.attend(&q, &mut out, 4, &bad_slopes, &mut scratch),
        Err(Error::InvalidBias)
    );
    cache
        .attend(&q, &mut out, 4, &params, &mut scratch)
        .unwrap();
    cache.clear();
    assert!(cache.is_empty());
    cache.append(&row, &row).unwrap();

    // Ring mode: terms it cannot realize, and position biases.
    let (mut k, mut v) = ([0.0f32; 24], [0.0f32; 24]);
    let mut ring = KvCache::new(&mut k, &mut v, shape, CacheMode::Ring).unwrap();
    assert_eq!(ring.window(), Some(2));
    for _ in 0..5 {
        ring.append(&row, &row).unwrap();
    }
    for terms in [
        [MaskTerm::Sliding { left: 1, right: 0 }],
        [MaskTerm::Sliding { left: 3, right: 0 }],
        [MaskTerm::KeyPadding { valid: 2 }],
    ] {
        let p = SdpaParams {
            mask: Mask::new(&terms),
            ..Default::default()
        };
        assert_eq!(
            ring.attend(&q, &mut out, 4, &p, &mut scratch),
            Err(Error::InvalidMask)
        );
    }
    let slopes = [0.5f32; 4];
    let alibi = SdpaParams {
        bias: Bias::Alibi { slopes: &slopes },
        ..Default::default()
    };
    assert_eq!(
        ring.attend(&q, &mut out, 4, &alibi, &mut scratch),
        Err(Error::InvalidBias)
    );
    ring.attend(&q, &mut out, 4, &params, &mut scratch).unwrap();

    // Int8: the same checks, plus the int8 bias in ring mode.
    let (mut k8, mut v8) = ([0i8; 24], [0i8; 24]);
    let mut ring8 = KvCache::new(&mut k8, &mut v8, shape, CacheMode::Ring).unwrap();
    let scales = Int8Scales {
        q: 0.01,
        k: 0.01,
        v: 0.01,
        out: 0.01,
    };
    let p8 = Int8SdpaParams::new(scales, 4, Score::Dot, None, Mask::NONE, Int8Bias::None).unwrap();
    let mut out8 = [0i8; 16];
    let mut acc = [0i64; 4];
    assert_eq!(
        ring8.attend_int8(&[1; 16], &mut out8, 4, &p8, &mut acc),
        Err(Error::ZeroDimension)
    );
    let qp = QParams::new(0.01).unwrap();
    assert_eq!(
        ring8.append_quantized(&row[..4], &row, qp, qp),
        Err(Error::LengthMismatch {
            expected: 8,
            found: 4
        })
    );
    ring8.append_quantized(&row, &row, qp, qp).unwrap();
    assert_eq!(ring8.keys(0), Some(&[100i8, 100, 100, 100][..]));
    assert_eq!(ring8.keys(2), None);
    assert_eq!(
        ring8.attend_int8(&[1; 16], &mut out8, 4, &p8, &mut acc[..3]),
        Err(Error::ScratchTooSmall {
            needed: 4,
            found: 3
        })
    );
    let int_slopes = [1i32; 4];
    let p8_alibi = Int8SdpaParams {
        bias: Int8Bias::Alibi {
            slopes: &int_slopes,
        },
        ..p8
    };
    assert_eq!(
        ring8.attend_int8(&[1; 16], &mut out8, 4, &p8_alibi, &mut acc),
        Err(Error::InvalidBias)
    );
    ring8
        .attend_int8(&[1; 16], &mut out8, 4, &p8, &mut acc)
        .unwrap();
    // Every value is 1.0 = 100 steps of 0.01.
    assert_eq!(out8, [100; 16]);
}
