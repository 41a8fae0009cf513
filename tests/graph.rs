//! GAT over a CSR adjacency (`gat_csr`, `int8_gat_csr`) against the COO path and an f64
//! reference written from `GATConv`'s definition; isolated nodes; malformed CSR input.

use microattn::graph::{gat, gat_csr, gat_scratch_len, GatEdges, GatParams, GatShape, GatWeights};
use microattn::graph_int8::{
    int8_gat, int8_gat_acc_len, int8_gat_csr, int8_gat_scratch_len, int8_gat_storage_len,
    Int8GatQuant,
};
use microattn::quant::FixedMultiplier;
use microattn::Error;

/// xorshift64*, uniform in [-1, 1).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn uniform(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() >> 33) as usize % n
    }
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform() * scale).collect()
    }
}

/// A random graph: `(source, target)` pairs (repeats and self loops included), with node
/// `isolated` receiving no edge at all.
fn random_edges(rng: &mut Rng, n: usize, e: usize, isolated: usize) -> Vec<(usize, usize)> {
    let mut edges = Vec::new();
    while edges.len() < e {
        let (s, t) = (rng.below(n), rng.below(n));
        if t != isolated {
            edges.push((s, t));
        }
    }
    edges
}

fn coo(edges: &[(usize, usize)]) -> Vec<u32> {
    let mut v: Vec<u32> = edges.iter().map(|e| e.0 as u32).collect();
    v.extend(edges.iter().map(|e| e.1 as u32));
    v
}

/// CSR of the transposed adjacency: row `t` lists the sources of the edges into `t`, in the
/// order they appear in `edges`.
fn csr(edges: &[(usize, usize)], n: usize) -> (Vec<u32>, Vec<u32>) {
    let mut row_ptr = vec![0u32; n + 1];
    let mut col = Vec::new();
    for t in 0..n {
        col.extend(edges.iter().filter(|e| e.1 == t).map(|e| e.0 as u32));
        row_ptr[t + 1] = col.len() as u32;
    }
    (row_ptr, col)
}

/// `GATConv` in f64 from its definition: `x' = x Wᵀ`; for target `i` and head `h`, over the
/// incoming edges `j → i` (self loops replaced by one per node when `loops`), `α_ij =
/// softmax_j(LeakyReLU(a_src·x'_j + a_dst·x'_i))`, `out_i = Σ α_ij x'_j`; heads concatenated
/// or averaged; bias added.
#[allow(clippy::too_many_arguments)]
fn reference(
    x: &[f32],
    edges: &[(usize, usize)],
    w: &GatWeights<'_, f32>,
    shape: GatShape,
    p: &GatParams,
) -> Vec<f64> {
    let GatShape {
        nodes: n,
        in_features: fin,
        out_features: f,
        heads: h,
    } = shape;
    let xp: Vec<f64> = (0..n * h * f)
        .map(|k| {
            let (i, c) = (k / (h * f), k % (h * f));
            (0..fin)
                .map(|a| x[i * fin + a] as f64 * w.lin_weight[c * fin + a] as f64)
                .sum()
        })
        .collect();
    let mut pairs: Vec<(usize, usize)> = edges
        .iter()
        .copied()
        .filter(|&(s, t)| !(p.add_self_loops && s == t))
        .collect();
    if p.add_self_loops {
        pairs.extend((0..n).map(|i| (i, i)));
    }
    let width = if p.concat { h * f } else { f };
    let mut out = vec![0.0f64; n * width];
    for i in 0..n {
        for head in 0..h {
            let feat = |j: usize| &xp[(j * h + head) * f..][..f];
            let dot =
                |v: &[f64], a: &[f32]| -> f64 { v.iter().zip(a).map(|(x, y)| x * *y as f64).sum() };
            let a_src = &w.att_src[head * f..][..f];
            let a_dst = &w.att_dst[head * f..][..f];
            let scores: Vec<(usize, f64)> = pairs
                .iter()
                .filter(|e| e.1 == i)
                .map(|&(j, _)| {
                    let e = dot(feat(j), a_src) + dot(feat(i), a_dst);
                    (
                        j,
                        if e > 0.0 {
                            e
                        } else {
                            p.negative_slope as f64 * e
                        },
                    )
                })
                .collect();
            let m = scores.iter().map(|s| s.1).fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = scores.iter().map(|s| (s.1 - m).exp()).sum();
            for k in 0..f {
                let v: f64 = scores
                    .iter()
                    .map(|&(j, s)| (s - m).exp() / z * feat(j)[k])
                    .sum();
                if p.concat {
                    out[i * width + head * f + k] = v;
                } else {
                    out[i * width + k] += v / h as f64;
                }
            }
        }
        for k in 0..width {
            out[i * width + k] += w.bias.map_or(0.0, |b| b[k] as f64);
        }
    }
    out
}

fn rel_l2(got: &[f32], want: &[f64]) -> f64 {
    let d: f64 = got
        .iter()
        .zip(want)
        .map(|(g, w)| (*g as f64 - w).powi(2))
        .sum();
    let n: f64 = want.iter().map(|w| w * w).sum();
    d.sqrt() / n.sqrt().max(1e-12)
}

/// Owned GAT weights.
struct Weights {
    lin: Vec<f32>,
    att_src: Vec<f32>,
    att_dst: Vec<f32>,
    bias: Option<Vec<f32>>,
}

impl Weights {
    fn random(rng: &mut Rng, shape: GatShape, concat: bool, bias: bool) -> Self {
        let hf = shape.heads * shape.out_features;
        Weights {
            lin: rng.vec(hf * shape.in_features, 0.6),
            att_src: rng.vec(hf, 0.8),
            att_dst: rng.vec(hf, 0.8),
            bias: bias.then(|| rng.vec(shape.output_features(concat), 0.3)),
        }
    }
    fn view(&self) -> GatWeights<'_, f32> {
        GatWeights {
            lin_weight: &self.lin,
            att_src: &self.att_src,
            att_dst: &self.att_dst,
            bias: self.bias.as_deref(),
        }
    }
}

const CONFIGS: [(usize, usize, usize, usize, usize, bool, bool); 5] = [
    // nodes, in, out per head, heads, edges, concat, self loops
    (8, 6, 4, 2, 14, true, true),
    (7, 5, 3, 3, 12, false, false),
    (12, 4, 5, 1, 40, true, false),
    (5, 3, 2, 4, 0, false, true),
    (16, 8, 4, 2, 60, false, true),
];

#[test]
fn csr_matches_coo_and_f64_reference() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for (case, &(n, fin, f, h, e, concat, loops)) in CONFIGS.iter().enumerate() {
        let shape = GatShape::new(n, fin, f, h);
        let params = GatParams {
            concat,
            negative_slope: 0.2,
            add_self_loops: loops,
        };
        let w = Weights::random(&mut rng, shape, concat, case % 2 == 0);
        let x = rng.vec(n * fin, 1.0);
        // Node 1 receives no edge: with self loops it attends to itself only, without them
        // it gets only the bias.
        let edges = random_edges(&mut rng, n, e, 1);
        let (row_ptr, col) = csr(&edges, n);
        let width = shape.output_features(concat);
        let mut scratch = vec![0.0f32; gat_scratch_len(shape)];
        let mut out_csr = vec![f32::NAN; n * width];
        gat_csr(
            &x,
            &row_ptr,
            &col,
            &w.view(),
            &mut out_csr,
            shape,
            &params,
            &mut scratch,
        )
        .unwrap();
        let want = reference(&x, &edges, &w.view(), shape, &params);
        let err = rel_l2(&out_csr, &want);
        assert!(err < 1e-5, "case {case}: CSR vs f64 rel_l2 {err}");

        // COO in target order: the same sums in the same order, so the same bits.
        let mut sorted = edges.clone();
        sorted.sort_by_key(|e| e.1);
        let mut out_coo = vec![f32::NAN; n * width];
        gat(
            &x,
            &coo(&sorted),
            &w.view(),
            &mut out_coo,
            shape,
            &params,
            &mut scratch,
        )
        .unwrap();
        assert_eq!(
            out_csr.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            out_coo.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "case {case}: CSR and target-sorted COO differ"
        );
        // COO in the original (random) order: the same values up to summation order.
        gat(
            &x,
            &coo(&edges),
            &w.view(),
            &mut out_coo,
            shape,
            &params,
            &mut scratch,
        )
        .unwrap();
        let coo_f64: Vec<f64> = out_coo.iter().map(|&v| v as f64).collect();
        assert!(rel_l2(&out_csr, &coo_f64) < 1e-6, "case {case}: CSR vs COO");

        // The isolated node.
        let row = &out_csr[width..2 * width];
        if loops {
            assert!(row.iter().all(|v| v.is_finite()));
        } else {
            for (k, &v) in row.iter().enumerate() {
                let b = w.bias.as_ref().map_or(0.0, |b| b[k]);
                assert_eq!(v, b, "case {case}: isolated node output is the bias");
            }
        }
    }
}

#[test]
fn csr_index_types() {
    // The same graph with u16, i32, i64 and usize ids gives the same output.
    let shape = GatShape::new(4, 2, 2, 2);
    let mut rng = Rng(3);
    let w = Weights::random(&mut rng, shape, true, true);
    let x = rng.vec(8, 1.0);
    let params = GatParams::default();
    let (row_ptr, col) = ([0usize, 2, 3, 3, 5], [1usize, 3, 0, 0, 2]);
    let run = |rp: &dyn Fn(&mut [f32], &mut [f32])| {
        let mut out = vec![0.0f32; 16];
        let mut scratch = vec![0.0f32; gat_scratch_len(shape)];
        rp(&mut out, &mut scratch);
        out
    };
    let base = run(&|o, s| gat_csr(&x, &row_ptr, &col, &w.view(), o, shape, &params, s).unwrap());
    let rp16: Vec<u16> = row_ptr.iter().map(|&v| v as u16).collect();
    let c16: Vec<u16> = col.iter().map(|&v| v as u16).collect();
    let rp64: Vec<i64> = row_ptr.iter().map(|&v| v as i64).collect();
    let c64: Vec<i64> = col.iter().map(|&v| v as i64).collect();
    assert_eq!(
        base,
        run(&|o, s| gat_csr(&x, &rp16, &c16, &w.view(), o, shape, &params, s).unwrap())
    );
    assert_eq!(
        base,
        run(&|o, s| gat_csr(&x, &rp64, &c64, &w.view(), o, shape, &params, s).unwrap())
    );
}

#[test]
fn malformed_csr_is_an_error() {
    let shape = GatShape::new(3, 2, 2, 1);
    let mut rng = Rng(11);
    let w = Weights::random(&mut rng, shape, true, false);
    let x = rng.vec(6, 1.0);
    let params = GatParams::default();
    let mut scratch = vec![0.0f32; gat_scratch_len(shape)];
    let good: ([i32; 4], [i32; 3]) = ([0, 1, 1, 3], [2, 0, 1]);
    let mut out = [0.0f32; 6];
    gat_csr(
        &x,
        &good.0,
        &good.1,
        &w.view(),
        &mut out,
        shape,
        &params,
        &mut scratch,
    )
    .unwrap();
    let bad: [(&[i32], &[i32]); 8] = [
        (&[0, 2, 1, 3], &[2, 0, 1]),    // decreasing
        (&[1, 1, 2, 3], &[2, 0, 1]),    // does not start at 0
        (&[0, 1, 1, 2], &[2, 0, 1]),    // does not end at col_idx.len()
        (&[0, 1, 1, 4], &[2, 0, 1]),    // beyond col_idx
        (&[0, 1, 3], &[2, 0, 1]),       // N pointers, not N + 1
        (&[0, 1, 1, 3, 3], &[2, 0, 1]), // N + 2 pointers
        (&[0, 1, 1, 3], &[2, 3, 1]),    // column = N
        (&[0, 1, 1, 3], &[2, -1, 1]),   // negative column
    ];
    for (k, (row_ptr, col)) in bad.iter().enumerate() {
        let mut out = [7.0f32; 6];
        let r = gat_csr(
            &x,
            row_ptr,
            col,
            &w.view(),
            &mut out,
            shape,
            &params,
            &mut scratch,
        );
        assert!(
            matches!(
                r,
                Err(Error::InvalidParameter | Error::LengthMismatch { .. })
            ),
            "malformed CSR {k}: {r:?}"
        );
        assert_eq!(out, [7.0; 6], "malformed CSR {k}: output written");
        let e = GatEdges::Csr {
            row_ptr,
            col_idx: col,
        };
        assert!(e.validate(3).is_err());
    }
    // A negative row pointer.
    let r = gat_csr(
        &x,
        &[0, -1, 1, 3],
        &[2, 0, 1],
        &w.view(),
        &mut out,
        shape,
        &params,
        &mut scratch,
    );
    assert_eq!(r, Err(Error::InvalidParameter));
}

#[test]
fn int8_csr_matches_int8_coo_and_f64() {
    let mut rng = Rng(0x5151_aaaa_0123_4567);
    for (case, &(n, fin, f, h, e, concat, loops)) in CONFIGS.iter().enumerate() {
        let shape = GatShape::new(n, fin, f, h);
        let params = GatParams {
            concat,
            negative_slope: 0.2,
            add_self_loops: loops,
        };
        let w = Weights::random(&mut rng, shape, concat, true);
        let xf = rng.vec(n * fin, 1.0);
        let edges = random_edges(&mut rng, n, e, 1);
        let (row_ptr, col) = csr(&edges, n);
        let x_max = xf.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let x_scale = x_max / 127.0;
        let x: Vec<i8> = xf.iter().map(|v| (v / x_scale).round() as i8).collect();
        let st = int8_gat_storage_len(shape);
        let (mut q, mut qs) = (vec![0i8; st.weights], vec![0f32; st.weight_scales]);
        let layer = Int8GatQuant::new(&w.view(), shape, &params, &mut q, &mut qs).unwrap();
        let (mut ints, mut mults) = (
            vec![0i32; st.ints],
            vec![FixedMultiplier::ONE; st.multipliers],
        );
        let width = shape.output_features(concat);
        let mut out = vec![0i8; n * width];
        let mut scratch = vec![0i8; int8_gat_scratch_len(shape)];
        let mut acc = vec![0i64; int8_gat_acc_len(shape)];
        let coo_edges = coo(&edges);
        let scales = layer
            .calibrate(
                &x,
                x_scale,
                &coo_edges,
                3,
                &mut out,
                &mut scratch,
                &mut acc,
                &mut ints,
                &mut mults,
            )
            .unwrap();
        let params8 = layer
            .prepare(&scales, x_scale, &mut ints, &mut mults)
            .unwrap();
        let mut out_coo = vec![0i8; n * width];
        int8_gat(
            &x,
            &coo_edges,
            &params8,
            &mut out_coo,
            shape,
            &mut scratch,
            &mut acc,
            None,
        )
        .unwrap();
        assert_eq!(
            out, out_coo,
            "case {case}: calibrate leaves the final output"
        );
        // Integer sums are exact: any edge order gives the same bytes.
        let mut out_csr = vec![0i8; n * width];
        int8_gat_csr(
            &x,
            &row_ptr,
            &col,
            &params8,
            &mut out_csr,
            shape,
            &mut scratch,
            &mut acc,
            None,
        )
        .unwrap();
        assert_eq!(out_csr, out_coo, "case {case}: int8 CSR and COO differ");
        let got: Vec<f32> = out_csr.iter().map(|&v| v as f32 * scales.out).collect();
        let want = reference(&xf, &edges, &w.view(), shape, &params);
        let err = rel_l2(&got, &want);
        assert!(err < 5e-2, "case {case}: int8 CSR vs f64 rel_l2 {err}");
        // Malformed CSR: errors, output untouched.
        let mut out_bad = vec![5i8; n * width];
        let mut rp = row_ptr.clone();
        rp[0] = 1;
        assert!(int8_gat_csr(
            &x,
            &rp,
            &col,
            &params8,
            &mut out_bad,
            shape,
            &mut scratch,
            &mut acc,
            None
        )
        .is_err());
        let mut bad_col = col.clone();
        if let Some(c) = bad_col.first_mut() {
            *c = n as u32;
            assert!(int8_gat_csr(
                &x,
                &row_ptr,
                &bad_col,
                &params8,
                &mut out_bad,
                shape,
                &mut scratch,
                &mut acc,
                None
            )
            .is_err());
        }
        assert!(out_bad.iter().all(|&v| v == 5));
    }
}
