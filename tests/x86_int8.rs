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
const KEYS: &[usize] = &[
    0, 1, 2, 7, 8, 9, 10, 15, 16, 17, 31, 32, 33, 47, 64, 67, 130,
];

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

/// The Q15 `exp2` constants from their definitions in f64 (the kernel's are checked against
/// the same definitions in its unit tests).
fn exp2_constants() -> ([u32; 64], u32, u32) {
    let mut table = [0u32; 64];
    for (k, t) in table.iter_mut().enumerate() {
        *t = (2f64.powf(31.0 - k as f64 / 64.0)).round() as u32;
    }
    let ln2 = std::f64::consts::LN_2 * 2f64.powi(32);
    (table, ln2.round() as u32, (ln2 / 3.0).round() as u32)
}

/// One `dot_weights_q15` input: raw dot products and the scale.
struct WeightCase {
    x: Vec<i32>,
    max: i32,
    lo: u32,
    hi: u32,
    cutoff: u32,
}

/// Runs every case on the current path and on `arch::scalar`: the same weights and sums, bit
/// for bit (from an offset into a longer buffer too, so the vector loads are unaligned and
/// the lengths hit every tail).
fn check_weights(path: &str, cases: &[WeightCase], exp2: &arch::Exp2Q15<'_>) {
    for (i, c) in cases.iter().enumerate() {
        let offset = i % 4;
        let mut buf = vec![0x1234_5678i32; offset + c.x.len() + 3];
        buf[offset..offset + c.x.len()].copy_from_slice(&c.x);
        let mut want = c.x.clone();
        let want_sum = arch::scalar::dot_weights_q15(&mut want, c.max, c.lo, c.hi, c.cutoff, exp2);
        let got_sum = arch::dot_weights_q15(
            &mut buf[offset..offset + c.x.len()],
            c.max,
            c.lo,
            c.hi,
            c.cutoff,
            exp2,
        );
        let got = &buf[offset..offset + c.x.len()];
        if got != want.as_slice() {
            let j = (0..want.len()).find(|&j| got[j] != want[j]).unwrap();
            panic!(
                "{path}: case {i} key {j}: x {} max {} lo {} hi {} cutoff {}: {} (scalar {})",
                c.x[j], c.max, c.lo, c.hi, c.cutoff, got[j], want[j]
            );
        }
        assert_eq!(got_sum, want_sum, "{path}: case {i}: sum");
        // Nothing written outside the slice.
        assert!(buf[..offset].iter().all(|&b| b == 0x1234_5678), "{path}");
        assert!(
            buf[offset + c.x.len()..].iter().all(|&b| b == 0x1234_5678),
            "{path}"
        );
    }
}

/// Keys whose logit difference is `t` itself (`hi = 1, lo = 0`: `t = d`), 32 or 37 per case.
fn t_cases(ts: impl Iterator<Item = u32>, cutoff: u32) -> Vec<WeightCase> {
    let ts: Vec<u32> = ts.collect();
    let max = i32::MAX;
    ts.chunks(37)
        .flat_map(|c| c.chunks(if c.len() == 37 { 32 } else { 37 }))
        .map(|c| WeightCase {
            x: c.iter().map(|&t| max.wrapping_sub(t as i32)).collect(),
            max,
            lo: 0,
            hi: 1,
            cutoff,
        })
        .collect()
}

/// The scalar weights against `2^-t` in f64: within half a Q15 step (plus the polynomial's
/// 2e-4 of a step), capped at `2^15 - 1`, 0 from `t = 17·2^20` on and from the cutoff on;
/// `t` computed here as `floor(d·(hi·2^32 + lo) / 2^32)` in `u128`, modulo 2^32.
#[test]
fn scalar_weights_are_2_to_the_minus_t() {
    let (table, ln2, ln2_third) = exp2_constants();
    let exp2 = arch::Exp2Q15 {
        table: &table,
        ln2_q32: ln2,
        ln2_third_q32: ln2_third,
    };
    let mut rng = Rng(4);
    let mut worst = 0.0f64;
    for round in 0..2000 {
        // A logit multiplier below 2^8 Q20 units per raw unit, as the SDPA's (q32 < 2^40).
        let q32 = rng.next_u64() >> (24 + rng.below(40));
        let (lo, hi) = (q32 as u32, (q32 >> 32) as u32);
        let max = rng.next_u64() as i32;
        let cutoff = if round % 2 == 0 {
            u32::MAX
        } else {
            rng.next_u64() as u32 >> rng.below(32)
        };
        let mut x: Vec<i32> = (0..33)
            .map(|_| max.wrapping_sub((rng.next_u64() as u32 >> rng.below(32)) as i32))
            .collect();
        let d: Vec<u32> = x.iter().map(|&v| max.abs_diff(v)).collect();
        let sum = arch::scalar::dot_weights_q15(&mut x, max, lo, hi, cutoff, &exp2);
        assert_eq!(sum, x.iter().map(|&v| v as u32).sum::<u32>());
        for (&w, &d) in x.iter().zip(&d) {
            // Wrapping, as documented (the SDPA's cutoff keeps t below 2^25).
            let t = ((d as u128 * q32 as u128) >> 32) as u32;
            if d >= cutoff || t >= 17 << 20 {
                assert_eq!(w, 0, "d {d} t {t}");
                continue;
            }
            let exact = (2f64.powf(-(t as f64) / (1u64 << 20) as f64) * 32768.0).min(32767.0);
            let err = (w as f64 - exact).abs();
            worst = worst.max(err);
            assert!(err <= 0.5002, "t {t}: {w} against {exact}");
        }
    }
    assert!(
        worst > 0.4,
        "the sweep reached rounding boundaries ({worst})"
    );
    // Exact points: 2^0 is capped, 2^-1, 2^-15, 2^-16 rounds up to one step, 2^-17 is 0.
    let mut w = [
        0,
        -(1 << 20),
        -(15 << 20),
        -(16 << 20),
        -((16 << 20) + 64),
        -(17 << 20),
    ];
    arch::scalar::dot_weights_q15(&mut w, 0, 0, 1, u32::MAX, &exp2);
    assert_eq!(w, [32767, 1 << 14, 1, 1, 0, 0]);
}

/// Every path gives the scalar weights, bit for bit: every `t` below 2^21, every `t` within
/// 64 of each table step and within 4096 of each power of two up to 2^-17 and past it, `d`
/// around cutoffs, extreme `max` and `x` (`d` up to 2^32 - 1), random multipliers as the SDPA
/// builds them and random ones, and random `exp2` constants (the arithmetic wraps the same
/// way for any).
#[test]
fn dot_weights_q15_matches_scalar_on_every_path() {
    let (table, ln2, ln2_third) = exp2_constants();
    let exp2 = arch::Exp2Q15 {
        table: &table,
        ln2_q32: ln2,
        ln2_third_q32: ln2_third,
    };
    let mut cases = t_cases(0..1 << 21, u32::MAX);
    let mut boundary = Vec::new();
    for n in 0..=18u32 {
        for k in 0..64u32 {
            let step = (n << 20) + (k << 14);
            boundary.extend(step.saturating_sub(64)..step + 64);
        }
        boundary.extend((n << 20).saturating_sub(4096)..(n << 20) + 4096);
    }
    cases.extend(t_cases(boundary.into_iter(), u32::MAX));
    // Cutoffs: d just below, at and above.
    let mut rng = Rng(5);
    for _ in 0..2000 {
        let cutoff = rng.next_u64() as u32 >> rng.below(32);
        let ds = (0..3).map(|i| cutoff.wrapping_add(i).wrapping_sub(1));
        let mut c = t_cases(
            ds.chain((0..13).map(|_| rng.next_u64() as u32 >> 12)),
            cutoff,
        );
        cases.append(&mut c);
    }
    // Random multipliers, maxima and keys; lengths 0 to 40.
    for i in 0..20000 {
        let len = i % 41;
        let q32 = match i % 3 {
            0 => rng.next_u64() >> (24 + rng.below(40)),
            1 => rng.next_u64() >> rng.below(64),
            _ => rng.next_u64(),
        };
        let max = match i % 5 {
            0 => i32::MAX,
            1 => i32::MIN,
            _ => rng.next_u64() as i32,
        };
        let x = (0..len)
            .map(|_| match rng.below(4) {
                0 => rng.next_u64() as i32,
                1 => i32::MIN,
                _ => max.wrapping_sub((rng.next_u64() as u32 >> rng.below(32)) as i32),
            })
            .collect();
        let cutoff = match i % 4 {
            0 => u32::MAX,
            1 => rng.next_u64() as u32,
            _ => rng.next_u64() as u32 >> rng.below(32),
        };
        cases.push(WeightCase {
            x,
            max,
            lo: q32 as u32,
            hi: (q32 >> 32) as u32,
            cutoff,
        });
    }
    let paths = on_every_path(|path| check_weights(path, &cases, &exp2));
    assert!(paths.contains(&"scalar"));
    // Random constants: 200 tables, each over random keys.
    let mut random = Vec::new();
    for _ in 0..200 {
        let mut t = [0u32; 64];
        t.iter_mut().for_each(|x| *x = rng.next_u64() as u32);
        let (a, b) = (rng.next_u64() as u32, rng.next_u64() as u32);
        let mut c = Vec::new();
        for i in 0..20 {
            let q32 = rng.next_u64() >> rng.below(64);
            let max = rng.next_u64() as i32;
            c.push(WeightCase {
                x: (0..(i * 7) % 41).map(|_| rng.next_u64() as i32).collect(),
                max,
                lo: q32 as u32,
                hi: (q32 >> 32) as u32,
                cutoff: rng.next_u64() as u32,
            });
        }
        random.push((t, a, b, c));
    }
    on_every_path(|path| {
        for (table, a, b, c) in &random {
            let exp2 = arch::Exp2Q15 {
                table,
                ln2_q32: *a,
                ln2_third_q32: *b,
            };
            check_weights(path, c, &exp2);
        }
    });
}
