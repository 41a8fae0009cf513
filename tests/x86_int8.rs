//! The x86_64 int8 paths (`vnni512`: AVX-512 VNNI `vpdpbusd`; `avx2`: `vpmaddwd`) against an
//! `i64` evaluation of the same sums and against `arch::scalar`, byte for byte: the
//! primitives `dot_i8_keys` / `pv_i8` on random shapes (lengths on and off every vector width,
//! key strides wider than `d`, extreme values, weights over the whole `i32` range so the sums
//! wrap), and a whole `int8_sdpa` call on every path.
//!
//! Each f32 backend is selected in turn (`arch::select`), which caps the int8 path
//! (`scalar` → scalar int8, `avx2` → AVX2, `avx512` → VNNI when the CPU has it).
#![cfg(all(target_arch = "x86_64", feature = "std"))]

use microattn::arch;
use microattn::attention::int8::{
    int8_sdpa, int8_sdpa_scratch_len, Int8Bias, Int8Scales, Int8SdpaParams,
};
use microattn::attention::{AttentionShape, Score};
use microattn::mask::{Mask, MaskTerm};
use std::sync::Mutex;

/// `arch::select` is process-wide: the tests here take turns.
static SELECT: Mutex<()> = Mutex::new(());

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
    fn bytes(&mut self, n: usize) -> Vec<i8> {
        (0..n).map(|_| self.next_u64() as i8).collect()
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Runs `f` once per f32 backend (so once per int8 path), then restores the best backend.
/// Returns the int8 paths seen.
fn on_every_path(mut f: impl FnMut(&str)) -> Vec<&'static str> {
    let _guard = SELECT.lock().unwrap_or_else(|e| e.into_inner());
    let names: Vec<&str> = arch::backends().map(|b| b.name()).collect();
    let mut paths = Vec::new();
    for name in &names {
        arch::select(name).expect("listed backend");
        let path = arch::int8_path();
        if *name == "scalar" {
            assert_eq!(path, "scalar", "the scalar backend must give scalar int8");
        }
        paths.push(path);
        f(path);
    }
    arch::select(names.last().expect("scalar at least"));
    eprintln!("int8 paths checked: {paths:?}");
    paths
}

/// `Σ q_i k_i` in `i64`, reduced modulo 2^32 (what wrapping `i32` arithmetic gives).
fn dot_ref(q: &[i8], k: &[i8]) -> i32 {
    q.iter()
        .zip(k)
        .map(|(&a, &b)| a as i64 * b as i64)
        .sum::<i64>() as i32
}

const DIMS: &[usize] = &[
    1, 3, 4, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 127, 128, 129, 191, 256, 300,
];
const KEYS: &[usize] = &[0, 1, 2, 7, 8, 9, 10, 15, 16, 17, 31, 32, 33, 47];

#[test]
fn dot_i8_keys_matches_reference_on_every_path() {
    let mut rng = Rng(1);
    let mut cases = Vec::new();
    for &d in DIMS {
        for &n in KEYS {
            let stride = d + [0, 1, 5][rng.below(3)];
            // Exactly as long as the keys need: a read past the last key would leave the slice.
            let len = if n == 0 { 0 } else { (n - 1) * stride + d };
            let extreme = rng.below(4) == 0;
            let (q, keys) = if extreme {
                (vec![-128i8; d], vec![-128i8; len])
            } else {
                (rng.bytes(d), rng.bytes(len))
            };
            cases.push((q, keys, stride, n));
        }
    }
    let paths = on_every_path(|path| {
        for (q, keys, stride, n) in &cases {
            let mut out = vec![0x5555_5555i32; *n];
            arch::dot_i8_keys(q, keys, *stride, &mut out).expect("keys fit");
            let mut scalar = vec![0i32; *n];
            arch::scalar::dot_i8_keys(q, keys, *stride, &mut scalar);
            for (j, (&got, &s)) in out.iter().zip(&scalar).enumerate() {
                let want = dot_ref(q, &keys[j * stride..][..q.len()]);
                assert_eq!(
                    got,
                    want,
                    "{path}: d {} keys {n} stride {stride} key {j}",
                    q.len()
                );
                assert_eq!(got, s, "{path}: scalar differs");
            }
            // Single dot products go through the same path.
            if *n > 0 {
                assert_eq!(arch::dot_i8(q, &keys[..q.len()]), out[0], "{path}: dot_i8");
            }
        }
    });
    assert!(paths.contains(&"scalar"));
}

#[test]
fn pv_i8_matches_reference_on_every_path() {
    let mut rng = Rng(2);
    let mut cases = Vec::new();
    for &dv in DIMS {
        for &n in KEYS {
            let stride = dv + [0, 3, 16][rng.below(3)];
            let len = if n == 0 { 0 } else { (n - 1) * stride + dv };
            let v = if rng.below(4) == 0 {
                vec![-128i8; len]
            } else {
                rng.bytes(len)
            };
            // Q15 softmax weights (0..2^15, as int8_sdpa passes), any i16 (both take the
            // 16-bit path), or any i32 (the 32-bit path; the sums wrap).
            let w: Vec<i32> = match rng.below(4) {
                0 => (0..n).map(|_| rng.below(32768) as i32).collect(),
                1 => (0..n).map(|_| rng.next_u64() as i32).collect(),
                2 => (0..n).map(|_| rng.next_u64() as i16 as i32).collect(),
                _ => vec![i32::MIN; n],
            };
            let acc: Vec<i32> = (0..dv).map(|_| rng.next_u64() as i32).collect();
            cases.push((w, v, stride, acc));
        }
    }
    on_every_path(|path| {
        for (w, v, stride, acc0) in &cases {
            let mut acc = acc0.clone();
            arch::pv_i8(w, v, *stride, &mut acc).expect("rows fit");
            let mut scalar = acc0.clone();
            arch::scalar::pv_i8(w, v, *stride, &mut scalar);
            for (c, (&got, &s)) in acc.iter().zip(&scalar).enumerate() {
                let exact = acc0[c] as i64
                    + w.iter()
                        .enumerate()
                        .map(|(j, &wj)| wj as i64 * v[j * stride + c] as i64)
                        .sum::<i64>();
                // The i64 sum of at most 47 products below 2^38 does not overflow.
                assert_eq!(
                    got,
                    exact as i32,
                    "{path}: dv {} rows {} stride {stride} column {c}",
                    acc0.len(),
                    w.len()
                );
                assert_eq!(got, s, "{path}: scalar differs");
            }
        }
    });
}

#[test]
fn short_inputs_are_rejected_on_every_path() {
    on_every_path(|path| {
        let mut out = [0i32; 3];
        assert!(
            arch::dot_i8_keys(&[1; 64], &[1; 64 * 3 - 1], 64, &mut out).is_err(),
            "{path}"
        );
        let mut acc = [0i32; 64];
        assert!(
            arch::pv_i8(&[1, 2], &[1; 127], 64, &mut acc).is_err(),
            "{path}"
        );
    });
}

/// Whole int8 attention calls (dot score, with and without a causal mask, decode-like rows,
/// d and dv off the vector widths): the output bytes are the same on every path.
#[test]
fn int8_sdpa_output_is_the_same_on_every_path() {
    let causal = [MaskTerm::Causal];
    let shapes = [
        (2, 2, 37, 70, 64, 64),
        (4, 2, 1, 512, 64, 64),
        (1, 1, 64, 64, 16, 16),
        (2, 1, 9, 33, 20, 72),
        (1, 1, 5, 200, 129, 100),
    ];
    let mut rng = Rng(3);
    let mut runs = Vec::new();
    for &(heads, kv_heads, lq, lk, d, dv) in &shapes {
        let shape = AttentionShape::multi_head(heads, kv_heads, lq, lk, d, dv);
        let (ql, kl, vl, ol) = shape.lengths().expect("valid shape");
        let (q, k, v) = (rng.bytes(ql), rng.bytes(kl), rng.bytes(vl));
        runs.push((shape, q, k, v, ol));
    }
    let scales = Int8Scales {
        q: 0.02,
        k: 0.02,
        v: 0.05,
        out: 0.02,
    };
    let mut outputs: Vec<Vec<Vec<i8>>> = Vec::new();
    on_every_path(|_| {
        let mut per_path = Vec::new();
        for (shape, q, k, v, ol) in &runs {
            for mask in [
                Mask::NONE,
                Mask::new(&causal).with_offset(shape.lk - shape.lq),
            ] {
                let params =
                    Int8SdpaParams::new(scales, shape.d, Score::Dot, None, mask, Int8Bias::None)
                        .expect("valid params");
                let mut out = vec![0i8; *ol];
                let mut scratch = vec![0i64; int8_sdpa_scratch_len(*shape)];
                int8_sdpa(q, k, v, &mut out, *shape, &params, &mut scratch).expect("valid call");
                per_path.push(out);
            }
        }
        outputs.push(per_path);
    });
    // Not all zeros: the comparison would be vacuous.
    assert!(outputs[0].iter().flatten().any(|&x| x != 0));
    for other in &outputs[1..] {
        assert_eq!(other, &outputs[0]);
    }
}
