//! Transformer building blocks against plain f64 references written from the math:
//! position encodings, norms, activations, FFN, GAT, ViT embedding, selective scan, encoder and
//! decoder layers. Plus the errors each block must return instead of panicking.

use microattn::position::{
    alibi_slopes, learned_add, rope, rope_fixed, rope_heads_fixed, sinusoidal_add,
    sinusoidal_table, sinusoidal_table_fixed, RopeLayout, RopeParams,
};
use microattn::{f16, Error};

/// Deterministic values in [-1, 1) (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next_f32()).collect()
    }
}

/// `||y - r|| / max(||r||, 1e-12)` (the conformance metric), with every `y` finite.
fn rel_l2(y: &[f32], r: &[f64]) -> f64 {
    assert_eq!(y.len(), r.len());
    assert!(y.iter().all(|v| v.is_finite()), "non-finite output");
    let num: f64 = y.iter().zip(r).map(|(&a, &b)| (a as f64 - b).powi(2)).sum();
    let den: f64 = r.iter().map(|b| b * b).sum();
    num.sqrt() / den.sqrt().max(1e-12)
}

fn assert_close(y: &[f32], r: &[f64], tol: f64, what: &str) {
    let e = rel_l2(y, r);
    assert!(e <= tol, "{what}: rel L2 {e:e} > {tol:e}");
}

// ---------------------------------------------------------------------------------------------
// Position encodings

/// RoPE from the definition: pair `(i, j)` of row `l` rotated by `(offset + l) / base^(2k/d)`.
fn rope_ref(x: &[f32], heads: usize, len: usize, d: usize, p: &RopeParams) -> Vec<f64> {
    let mut y: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    for h in 0..heads {
        for l in 0..len {
            let row = &mut y[(h * len + l) * d..][..d];
            let pos = (p.pos_offset + l) as f64;
            for k in 0..d / 2 {
                let theta = pos / (p.base as f64).powf(2.0 * k as f64 / d as f64);
                let (i, j) = match p.layout {
                    RopeLayout::Interleaved => (2 * k, 2 * k + 1),
                    RopeLayout::Half => (k, k + d / 2),
                };
                let (a, b) = (row[i], row[j]);
                row[i] = a * theta.cos() - b * theta.sin();
                row[j] = a * theta.sin() + b * theta.cos();
            }
        }
    }
    y
}

#[test]
fn rope_matches_reference_both_layouts() {
    let mut rng = Rng::new(1);
    for layout in [RopeLayout::Interleaved, RopeLayout::Half] {
        for (heads, len, d, offset, base) in [
            (1, 16, 8, 0, 10000.0f32),
            (2, 5, 16, 7, 10000.0),
            (3, 4, 6, 123, 500000.0),
            (1, 3, 64, 4095, 10000.0),
            // Large positions: the angle must still be right to f32 precision.
            (2, 2, 32, 1_000_000, 10000.0),
        ] {
            let params = RopeParams {
                layout,
                base,
                pos_offset: offset,
            };
            let x = rng.vec(heads * len * d);
            let mut y = x.clone();
            rope(&mut y, heads, len, d, &params).unwrap();
            let r = rope_ref(&x, heads, len, d, &params);
            assert_close(
                &y,
                &r,
                1e-6,
                &format!("rope {layout:?} {heads}x{len}x{d}+{offset}"),
            );
        }
    }
}

#[test]
fn rope_layouts_differ_and_position_zero_is_identity() {
    let mut rng = Rng::new(2);
    let x = rng.vec(2 * 8);
    let mut a = x.clone();
    let mut b = x.clone();
    rope(&mut a, 1, 2, 8, &RopeParams::new(RopeLayout::Interleaved)).unwrap();
    rope(&mut b, 1, 2, 8, &RopeParams::new(RopeLayout::Half)).unwrap();
    assert_eq!(&a[..8], &x[..8]);
    assert_eq!(&b[..8], &x[..8]);
    assert_ne!(&a[8..], &b[8..]);
}

#[test]
fn rope_f16_and_fixed_tiers() {
    let mut rng = Rng::new(3);
    let params = RopeParams {
        pos_offset: 9,
        ..RopeParams::new(RopeLayout::Half)
    };
    let x = rng.vec(2 * 3 * 8);
    let xh: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
    let x16: Vec<f32> = xh.iter().map(|v| v.to_f32()).collect();
    let mut yh = xh.clone();
    rope(&mut yh, 2, 3, 8, &params).unwrap();
    let y: Vec<f32> = yh.iter().map(|v| v.to_f32()).collect();
    assert_close(&y, &rope_ref(&x16, 2, 3, 8, &params), 1e-3, "rope f16");

    let mut fixed = [[[0.0f32; 8]; 3]; 2];
    fixed
        .as_flattened_mut()
        .as_flattened_mut()
        .copy_from_slice(&x);
    rope_heads_fixed(&mut fixed, &params).unwrap();
    let mut flat = x.clone();
    rope(&mut flat, 2, 3, 8, &params).unwrap();
    assert_eq!(fixed.as_flattened().as_flattened(), &flat[..]);

    let mut one = [[0.5f32; 4]; 2];
    rope_fixed(&mut one, &RopeParams::new(RopeLayout::Interleaved)).unwrap();
    let r = rope_ref(
        &[0.5; 8],
        1,
        2,
        4,
        &RopeParams::new(RopeLayout::Interleaved),
    );
    assert_close(one.as_flattened(), &r, 1e-7, "rope_fixed");
}

#[test]
fn rope_errors() {
    let p = RopeParams::new(RopeLayout::Interleaved);
    let mut x = [0.0f32; 12];
    assert_eq!(rope(&mut x, 1, 4, 3, &p), Err(Error::InvalidParameter)); // odd dim
    assert_eq!(rope(&mut x, 0, 3, 4, &p), Err(Error::ZeroDimension));
    assert!(matches!(
        rope(&mut x, 2, 2, 4, &p),
        Err(Error::LengthMismatch {
            expected: 16,
            found: 12
        })
    ));
    for base in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        let bad = RopeParams { base, ..p };
        assert_eq!(rope(&mut x, 1, 3, 4, &bad), Err(Error::InvalidParameter));
    }
    assert_eq!(
        rope(&mut x, usize::MAX, 2, 4, &p),
        Err(Error::ShapeOverflow)
    );
}

/// `pe[l][2k] = sin(pos / base^(2k/d))`, `pe[l][2k+1] = cos(...)`.
fn sinusoidal_ref(len: usize, d: usize, offset: usize, base: f64) -> Vec<f64> {
    let mut pe = vec![0.0; len * d];
    for l in 0..len {
        let pos = (offset + l) as f64;
        for i in 0..d {
            let k2 = (i - i % 2) as f64;
            let angle = pos / base.powf(k2 / d as f64);
            pe[l * d + i] = if i % 2 == 0 { angle.sin() } else { angle.cos() };
        }
    }
    pe
}

#[test]
fn sinusoidal_table_and_add_match_reference() {
    for (len, d, offset, base) in [
        (32, 16, 0, 10000.0f32),
        (7, 10, 3, 10000.0),
        (5, 7, 0, 100.0), // odd width ends with a sine column
        (4, 64, 250_000, 10000.0),
    ] {
        let r = sinusoidal_ref(len, d, offset, base as f64);
        let mut pe = vec![0.0f32; len * d];
        sinusoidal_table(&mut pe, len, d, offset, base).unwrap();
        assert_close(&pe, &r, 1e-6, &format!("sinusoidal {len}x{d}+{offset}"));

        let mut rng = Rng::new(4);
        let x = rng.vec(len * d);
        let mut y = x.clone();
        sinusoidal_add(&mut y, len, d, offset, base).unwrap();
        let r_add: Vec<f64> = x.iter().zip(&r).map(|(&a, &b)| a as f64 + b).collect();
        assert_close(&y, &r_add, 1e-6, "sinusoidal_add");
    }
    let mut fixed = [[0.0f32; 6]; 3];
    sinusoidal_table_fixed(&mut fixed, 2, 10000.0).unwrap();
    assert_close(
        fixed.as_flattened(),
        &sinusoidal_ref(3, 6, 2, 10000.0),
        1e-6,
        "fixed",
    );
    let mut half = [f16::ZERO; 24];
    sinusoidal_table(&mut half, 4, 6, 0, 10000.0).unwrap();
    let y: Vec<f32> = half.iter().map(|v| v.to_f32()).collect();
    assert_close(&y, &sinusoidal_ref(4, 6, 0, 10000.0), 1e-3, "f16 table");
}

#[test]
fn sinusoidal_errors() {
    let mut pe = [0.0f32; 12];
    assert_eq!(
        sinusoidal_table(&mut pe, 0, 4, 0, 1e4),
        Err(Error::ZeroDimension)
    );
    assert!(matches!(
        sinusoidal_table(&mut pe, 4, 4, 0, 1e4),
        Err(Error::LengthMismatch { .. })
    ));
    assert_eq!(
        sinusoidal_add(&mut pe, 3, 4, 0, -2.0),
        Err(Error::InvalidParameter)
    );
}

#[test]
fn learned_table_adds_the_right_rows() {
    let mut rng = Rng::new(5);
    let (max_len, d, len, offset) = (10, 6, 4, 5);
    let table = rng.vec(max_len * d);
    let x = rng.vec(len * d);
    let mut y = x.clone();
    learned_add(&mut y, &table, len, d, offset).unwrap();
    for l in 0..len {
        for i in 0..d {
            let r = x[l * d + i] as f64 + table[(offset + l) * d + i] as f64;
            assert!((y[l * d + i] as f64 - r).abs() < 1e-6);
        }
    }
    // Past the last row, a ragged table, overflowing positions.
    assert_eq!(
        learned_add(&mut y, &table, len, d, 7),
        Err(Error::InvalidParameter)
    );
    assert!(matches!(
        learned_add(&mut y, &table[..59], len, d, 0),
        Err(Error::LengthMismatch { .. })
    ));
    assert_eq!(
        learned_add(&mut y, &table, len, d, usize::MAX),
        Err(Error::InvalidParameter)
    );
}

/// The ALiBi paper's `get_slopes`, recursively.
fn alibi_ref(n: usize) -> Vec<f64> {
    let pow2 = |n: usize| -> Vec<f64> {
        let start = 2f64.powf(-(2f64.powf(-((n as f64).log2() - 3.0))));
        (0..n).map(|i| start * start.powi(i as i32)).collect()
    };
    if n.is_power_of_two() {
        pow2(n)
    } else {
        let c = 1 << (usize::BITS - 1 - n.leading_zeros());
        let mut s = pow2(c);
        s.extend(alibi_ref(2 * c).into_iter().step_by(2).take(n - c));
        s
    }
}

#[test]
fn alibi_slopes_match_paper() {
    for n in [1, 2, 3, 4, 5, 6, 8, 12, 16, 20, 32] {
        let mut s = vec![0.0f32; n];
        alibi_slopes(&mut s).unwrap();
        let r = alibi_ref(n);
        for (a, b) in s.iter().zip(&r) {
            assert!((*a as f64 - b).abs() <= 1e-7 * b, "n={n}: {a} vs {b}");
        }
    }
    assert_eq!(alibi_slopes(&mut []), Err(Error::ZeroDimension));
}
