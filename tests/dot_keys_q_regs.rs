//! `Backend::dot_keys` when the query fits in at most four vectors (`d` a multiple of the
//! lane count up to `4·lanes`: the SIMD backends keep the query in registers and read each key
//! front to back) and just past it, against an f64 evaluation, for every backend this machine
//! runs. (`tests/arch_backends.rs` covers lengths off the vector widths.)

use microattn::arch;

const U: f64 = 1.0 / (1u64 << 24) as f64;

fn vec(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

#[test]
fn dot_keys_with_the_query_in_registers_matches_f64() {
    let scale = 0.125f32;
    let mut seed = 1;
    for d in [8usize, 16, 24, 32, 48, 64, 80, 128] {
        for n in [0usize, 1, 7, 8, 9, 16, 17, 64] {
            for stride in [d, d + 3] {
                seed += 2;
                let q = vec(d, seed);
                let keys = vec(n.saturating_sub(1) * stride + d, seed + 1);
                for be in arch::backends() {
                    let mut s = vec![f32::NAN; n];
                    be.dot_keys(&q, &keys, stride, scale, &mut s)
                        .expect("keys fit");
                    for (j, &got) in s.iter().enumerate() {
                        let key = &keys[j * stride..][..d];
                        let exact: f64 =
                            q.iter().zip(key).map(|(&a, &b)| a as f64 * b as f64).sum();
                        let abs: f64 = q
                            .iter()
                            .zip(key)
                            .map(|(&a, &b)| (a as f64 * b as f64).abs())
                            .sum();
                        // d products, summed in at most d/8 + 16 steps, then one scaling.
                        let bound = ((d / 8 + 18) as f64) * U * abs * scale as f64 + 1e-30;
                        let want = scale as f64 * exact;
                        assert!(
                            (got as f64 - want).abs() <= bound,
                            "{be:?} d={d} n={n} stride={stride} key {j}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
