//! The fixed-size tiers (`layer_norm_fixed`, `rms_norm_fixed`, `ffn_fixed`,
//! `gated_ffn_fixed`, `patch_embed_fixed`, `gat_fixed`, `gat_csr_fixed`) against the slice
//! tier on random data: the same bits, which checks that every array layout (head-major
//! GAT weights, `[E, C, P, P]` patch weights, `[C, H, W]` images) maps onto the slice
//! layout the slice tier documents. The slice tier itself is tested against f64 references
//! (tests/layers.rs, tests/graph.rs).

use microattn::graph::{
    gat, gat_csr, gat_csr_fixed, gat_fixed, gat_scratch_len, GatParams, GatShape, GatWeightsFixed,
};
use microattn::layers::{
    ffn, ffn_fixed, gated_ffn, gated_ffn_fixed, layer_norm, layer_norm_fixed, patch_embed,
    patch_embed_fixed, patch_embed_scratch_len, rms_norm, rms_norm_fixed, Activation, FfnShape,
    FfnWeightsFixed, GatedFfnWeightsFixed, PatchEmbedWeightsFixed, PatchShape,
};

struct Rng(u64);

impl Rng {
    fn f(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    fn fill<const N: usize>(&mut self) -> [f32; N] {
        core::array::from_fn(|_| self.f())
    }
    fn fill2<const A: usize, const B: usize>(&mut self) -> [[f32; B]; A] {
        core::array::from_fn(|_| self.fill())
    }
}

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn norms_fixed_equal_slice_tier() {
    let mut rng = Rng(1);
    let x: [[f32; 6]; 4] = rng.fill2();
    let (w, b): ([f32; 6], [f32; 6]) = (rng.fill(), rng.fill());
    let mut y = [[0.0f32; 6]; 4];
    let mut want = [0.0f32; 24];
    layer_norm_fixed(&x, &w, Some(&b), &mut y, 1e-5).unwrap();
    layer_norm(x.as_flattened(), &w, Some(&b), &mut want, 6, 1e-5).unwrap();
    assert_eq!(bits(y.as_flattened()), bits(&want));
    rms_norm_fixed(&x, &w, &mut y, 1e-6).unwrap();
    rms_norm(x.as_flattened(), &w, &mut want, 6, 1e-6).unwrap();
    assert_eq!(bits(y.as_flattened()), bits(&want));
    assert!(layer_norm_fixed(&x, &w, None, &mut y, -1.0).is_err());
}

#[test]
fn ffn_fixed_equal_slice_tier() {
    let mut rng = Rng(2);
    let x: [[f32; 4]; 3] = rng.fill2();
    let (w1, w2): ([[f32; 4]; 8], [[f32; 8]; 4]) = (rng.fill2(), rng.fill2());
    let (b1, b2): ([f32; 8], [f32; 4]) = (rng.fill(), rng.fill());
    let weights = FfnWeightsFixed {
        w1: &w1,
        b1: Some(&b1),
        w2: &w2,
        b2: Some(&b2),
    };
    let mut y = [[0.0f32; 4]; 3];
    let mut want = [0.0f32; 12];
    let mut scratch = [0.0f32; 8];
    ffn_fixed(&x, &weights, Activation::Gelu, &mut y, &mut scratch).unwrap();
    let shape = FfnShape::new(3, 4, 8);
    ffn(
        x.as_flattened(),
        &weights.as_slices(),
        Activation::Gelu,
        &mut want,
        shape,
        &mut scratch,
    )
    .unwrap();
    assert_eq!(bits(y.as_flattened()), bits(&want));

    let up: [[f32; 4]; 8] = rng.fill2();
    let gated = GatedFfnWeightsFixed {
        gate: &w1,
        up: &up,
        down: &w2,
    };
    let mut scratch2 = [[0.0f32; 8]; 2];
    gated_ffn_fixed(&x, &gated, Activation::Silu, &mut y, &mut scratch2).unwrap();
    let mut s = [0.0f32; 16];
    gated_ffn(
        x.as_flattened(),
        &gated.as_slices(),
        Activation::Silu,
        &mut want,
        shape,
        &mut s,
    )
    .unwrap();
    assert_eq!(bits(y.as_flattened()), bits(&want));
}

#[test]
fn patch_embed_fixed_equals_slice_tier() {
    let mut rng = Rng(3);
    // 2 channels, 4×6 image, 2×2 patches: 6 patches, a class token, 5 features.
    const SHAPE: PatchShape = PatchShape::new(2, 4, 6, 2, 5);
    let image: [[[f32; 6]; 4]; 2] = core::array::from_fn(|_| rng.fill2());
    let pw: [[[[f32; 2]; 2]; 2]; 5] =
        core::array::from_fn(|_| core::array::from_fn(|_| rng.fill2()));
    let (bias, cls): ([f32; 5], [f32; 5]) = (rng.fill(), rng.fill());
    let pos: [[f32; 5]; 7] = rng.fill2();
    let weights = PatchEmbedWeightsFixed {
        patch_weight: &pw,
        patch_bias: Some(&bias),
        cls_token: Some(&cls),
        pos_embed: Some(&pos),
    };
    let mut tokens = [[0.0f32; 5]; 7];
    let mut scratch = [0.0f32; patch_embed_scratch_len(SHAPE)];
    patch_embed_fixed(&image, &weights, &mut tokens, &mut scratch).unwrap();
    let mut want = [0.0f32; 35];
    let image_flat = image.as_flattened().as_flattened();
    patch_embed(
        image_flat,
        &weights.as_slices(),
        &mut want,
        SHAPE,
        &mut scratch,
    )
    .unwrap();
    assert_eq!(bits(tokens.as_flattened()), bits(&want));
    // Token 1 is patch (0, 0): Σ_c,y,x w[e][c][y][x] · image[c][y][x] + bias + pos[1], in f64.
    for e in 0..5 {
        let mut v = bias[e] as f64 + pos[1][e] as f64;
        for c in 0..2 {
            for yy in 0..2 {
                for xx in 0..2 {
                    v += pw[e][c][yy][xx] as f64 * image[c][yy][xx] as f64;
                }
            }
        }
        assert!((tokens[1][e] as f64 - v).abs() < 1e-5, "feature {e}");
    }
    // Without the class token the same TOK is the wrong length: an error, not a panic.
    let no_cls = PatchEmbedWeightsFixed {
        cls_token: None,
        ..weights
    };
    assert!(patch_embed_fixed(&image, &no_cls, &mut tokens, &mut scratch).is_err());
}

#[test]
fn gat_fixed_equal_slice_tier() {
    let mut rng = Rng(4);
    const SHAPE: GatShape = GatShape::new(5, 3, 2, 2);
    let x: [[f32; 3]; 5] = rng.fill2();
    let lin: [[[f32; 3]; 2]; 2] = core::array::from_fn(|_| rng.fill2());
    let (att_src, att_dst): ([[f32; 2]; 2], [[f32; 2]; 2]) = (rng.fill2(), rng.fill2());
    let bias: [f32; 4] = rng.fill();
    let weights = GatWeightsFixed {
        lin_weight: &lin,
        att_src: &att_src,
        att_dst: &att_dst,
        bias: Some(&bias),
    };
    let edges = [[0u16, 1, 2, 3, 4, 0], [1, 2, 2, 0, 0, 3]];
    let params = GatParams::default();
    let mut out = [[0.0f32; 4]; 5];
    let mut scratch = [0.0f32; gat_scratch_len(SHAPE)];
    gat_fixed(&x, &edges, &weights, &mut out, &params, &mut scratch).unwrap();
    let mut want = [0.0f32; 20];
    let w = weights.as_slices();
    gat(
        x.as_flattened(),
        edges.as_flattened(),
        &w,
        &mut want,
        SHAPE,
        &params,
        &mut scratch,
    )
    .unwrap();
    assert_eq!(bits(out.as_flattened()), bits(&want));
    // The same edges as CSR (by target): 0 ← {3, 4}, 1 ← {0}, 2 ← {1, 2}, 3 ← {0}, 4 ← {}.
    let (row_ptr, col) = ([0u16, 2, 3, 5, 6, 6], [3u16, 4, 0, 1, 2, 0]);
    let mut out_csr = [[0.0f32; 4]; 5];
    gat_csr_fixed(
        &x,
        &row_ptr,
        &col,
        &weights,
        &mut out_csr,
        &params,
        &mut scratch,
    )
    .unwrap();
    gat_csr(
        x.as_flattened(),
        &row_ptr,
        &col,
        &w,
        &mut want,
        SHAPE,
        &params,
        &mut scratch,
    )
    .unwrap();
    assert_eq!(bits(out_csr.as_flattened()), bits(&want));
    // CSR is grouped by target, COO was not: equal up to summation order.
    for (a, b) in out.as_flattened().iter().zip(out_csr.as_flattened()) {
        assert!((a - b).abs() < 1e-5);
    }
    // Mean of heads into OUT = F; OUT = F with concat is a length error.
    let mean_weights = GatWeightsFixed::<f32, 3, 2, 2, 2> {
        bias: None,
        lin_weight: &lin,
        att_src: &att_src,
        att_dst: &att_dst,
    };
    let mut out_mean = [[0.0f32; 2]; 5];
    let mean = GatParams {
        concat: false,
        ..params
    };
    gat_fixed(
        &x,
        &edges,
        &mean_weights,
        &mut out_mean,
        &mean,
        &mut scratch,
    )
    .unwrap();
    let mut want_mean = [0.0f32; 10];
    gat(
        x.as_flattened(),
        edges.as_flattened(),
        &mean_weights.as_slices(),
        &mut want_mean,
        SHAPE,
        &mean,
        &mut scratch,
    )
    .unwrap();
    assert_eq!(bits(out_mean.as_flattened()), bits(&want_mean));
    assert!(gat_fixed(
        &x,
        &edges,
        &mean_weights,
        &mut out_mean,
        &params,
        &mut scratch
    )
    .is_err());
}
