//! The portable `core::simd` backend (`nightly` feature): its place in the selection order,
//! and whole SDPA calls on it against the scalar backend and an f64 reference, on random
//! shapes whose lengths are mostly not multiples of its 8 lanes. (Its primitives are checked
//! with every other backend in `tests/arch_backends.rs`.)
//!
//! Run with `cargo +nightly test --features std,nightly --test portable_backend`.
#![cfg(all(feature = "nightly", feature = "std"))]

use microattn::arch;
use microattn::attention::{sdpa, AttentionShape, SdpaParams};
use microattn::mask::{Mask, MaskTerm};

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
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }
    /// Uniform in [-a, a).
    fn vec(&mut self, n: usize, a: f32) -> Vec<f32> {
        (0..n)
            .map(|_| ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * a)
            .collect()
    }
}

/// Softmax(scale · q·kᵀ)·v per head in f64, keys after the query's position (`causal`)
/// excluded; query `i` is at position `i + lk - lq` (its keys end with the last one).
fn reference(q: &[f32], k: &[f32], v: &[f32], s: AttentionShape, causal: bool) -> Vec<f64> {
    let scale = 1.0 / (s.d as f64).sqrt();
    let group = s.heads / s.kv_heads;
    let mut out = vec![0.0; s.heads * s.lq * s.dv];
    for h in 0..s.heads {
        let kh = h / group;
        for i in 0..s.lq {
            let qi = &q[(h * s.lq + i) * s.d..][..s.d];
            let allowed = |j: usize| !causal || j + s.lq <= i + s.lk;
            let logits: Vec<Option<f64>> = (0..s.lk)
                .map(|j| {
                    let kj = &k[(kh * s.lk + j) * s.d..][..s.d];
                    let dot: f64 = qi.iter().zip(kj).map(|(&a, &b)| a as f64 * b as f64).sum();
                    allowed(j).then_some(dot * scale)
                })
                .collect();
            let m = logits
                .iter()
                .flatten()
                .fold(f64::NEG_INFINITY, |a, &b| a.max(b));
            if m == f64::NEG_INFINITY {
                continue;
            }
            let w: Vec<f64> = logits
                .iter()
                .map(|l| l.map_or(0.0, |l| (l - m).exp()))
                .collect();
            let total: f64 = w.iter().sum();
            let o = &mut out[(h * s.lq + i) * s.dv..][..s.dv];
            for (j, wj) in w.iter().enumerate() {
                let vj = &v[(kh * s.lk + j) * s.dv..][..s.dv];
                for (oc, &vc) in o.iter_mut().zip(vj) {
                    *oc += wj / total * vc as f64;
                }
            }
        }
    }
    out
}

/// One test, because `arch::select` changes the backend for every thread of the process.
#[test]
fn portable_backend_is_ranked_and_matches_scalar_and_the_reference() {
    let names: Vec<&str> = arch::backends().map(|b| b.name()).collect();
    eprintln!("backends: {names:?}");
    // Listed right after scalar: never the default over an ISA-specific backend.
    assert_eq!(names.get(1), Some(&"portable"));
    let portable = arch::backends().find(|b| b.name() == "portable").unwrap();
    assert_eq!(portable.lanes(), 8);
    match std::env::var("MICROATTN_BACKEND") {
        Ok(name) => assert_eq!(arch::backend().name(), name, "override not applied"),
        Err(_) => assert_eq!(arch::backend().name(), *names.last().unwrap()),
    }

    let mut rng = Rng(0x5EED_0005);
    let causal = [MaskTerm::Causal];
    for case in 0..60 {
        let kv_heads = rng.range(1, 2);
        let shape = AttentionShape {
            heads: kv_heads * rng.range(1, 2),
            kv_heads,
            // Short (per-row path) and from 8 rows (blocked path), mostly not multiples of 8.
            lq: if case % 2 == 0 {
                rng.range(1, 7)
            } else {
                rng.range(8, 45)
            },
            lk: rng.range(1, 70),
            d: [1, 3, 8, 13, 16, 31, 64][rng.range(0, 6)],
            dv: [1, 5, 8, 17, 32, 63][rng.range(0, 5)],
        };
        // At least as many keys as queries, so every causal row has a key.
        let s = AttentionShape {
            lk: shape.lk.max(shape.lq),
            ..shape
        };
        let q = rng.vec(s.heads * s.lq * s.d, 2.0);
        let k = rng.vec(s.kv_heads * s.lk * s.d, 2.0);
        let v = rng.vec(s.kv_heads * s.lk * s.dv, 1.0);
        let is_causal = case % 3 == 0;
        let params = SdpaParams {
            mask: if is_causal {
                Mask::new(&causal).with_offset(s.lk - s.lq)
            } else {
                Mask::NONE
            },
            ..Default::default()
        };
        let run = |name: &str| {
            arch::select(name).expect("backend available");
            let mut out = vec![f32::NAN; s.heads * s.lq * s.dv];
            sdpa(&q, &k, &v, &mut out, s, &params).unwrap();
            out
        };
        let (got, want) = (run("portable"), run("scalar"));
        let exact = reference(&q, &k, &v, s, is_causal);
        for (i, ((&g, &w), &e)) in got.iter().zip(&want).zip(&exact).enumerate() {
            // Outputs are convex combinations of values in [-1, 1].
            assert!(
                (g - w).abs() <= 2e-6 && (g as f64 - e).abs() <= 2e-6,
                "case {case} {s:?} causal {is_causal} [{i}]: portable {g}, scalar {w}, f64 {e}"
            );
        }
    }
}
