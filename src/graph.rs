//! Graph attention (GAT) with the semantics of torch_geometric's `GATConv` (inference: no
//! dropout), over a COO edge list ([`gat`]) or a CSR adjacency ([`gat_csr`]), with no heap.
//!
//! With `H` heads of `F` features each, `x' = x Wᵀ` (`[N, H*F]`, no bias), and per head `h`
//! the scores `s_src[n] = x'[n,h]·att_src[h]`, `s_dst[n] = x'[n,h]·att_dst[h]`. An edge
//! `j → i` scores `e = LeakyReLU(s_src[j] + s_dst[i])`; each target `i` takes the softmax of
//! the scores of its incoming edges and sums `α · x'[j,h]`. The heads are concatenated
//! (`[N, H*F]`) or averaged (`[N, F]`), then the bias is added. A node without incoming
//! edges gets only the bias. With `add_self_loops`, self loops already in the list are
//! ignored and every node gets exactly one (as `GATConv` removes and re-adds them); a
//! repeated edge counts as many times as it appears.
//!
//! The softmax runs in two passes over the edges (maximum per target and head, then
//! weights and sums), so edges may come in any order and nothing is sorted or allocated.
//! Cost: `O(N·Fin·H·F + E·H·F)`; memory: the caller's f32 scratch of [`gat_scratch_len`].

use crate::element::Element;
use crate::error::{check_len, mul, nonzero, Error};
use crate::layers::Footprint;
use crate::math::exp;
use crate::projection::{linear_typed, LinearShape};

/// Sizes of a GAT layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct GatShape {
    /// Nodes `N`.
    pub nodes: usize,
    /// Input features per node.
    pub in_features: usize,
    /// Output features per head `F` (`out_channels` in `GATConv`).
    pub out_features: usize,
    /// Attention heads `H`.
    pub heads: usize,
}

impl GatShape {
    /// `nodes` nodes of `in_features` features into `heads` heads of `out_features`.
    pub const fn new(nodes: usize, in_features: usize, out_features: usize, heads: usize) -> Self {
        GatShape {
            nodes,
            in_features,
            out_features,
            heads,
        }
    }

    /// Features of the output rows: `H*F` when the heads are concatenated, else `F`.
    pub const fn output_features(&self, concat: bool) -> usize {
        if concat {
            self.heads.saturating_mul(self.out_features)
        } else {
            self.out_features
        }
    }
}

/// How a GAT layer combines heads and scores edges.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct GatParams {
    /// Concatenate the heads (`true`, `GATConv`'s default) or average them.
    pub concat: bool,
    /// LeakyReLU slope for negative scores (0.2 in `GATConv`); finite.
    pub negative_slope: f32,
    /// Replace the self loops of the edge list by exactly one per node.
    pub add_self_loops: bool,
}

impl Default for GatParams {
    /// `GATConv`'s defaults: concatenated heads, slope 0.2, self loops added.
    fn default() -> Self {
        GatParams {
            concat: true,
            negative_slope: 0.2,
            add_self_loops: true,
        }
    }
}

/// The parameters of one `GATConv` (its state dict: `lin.weight`, `att_src`, `att_dst`,
/// `bias`), stored as `E`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GatWeights<'a, E = f32> {
    /// `[H*F, Fin]`.
    pub lin_weight: &'a [E],
    /// `[H, F]` (PyTorch's `[1, H, F]`).
    pub att_src: &'a [E],
    /// `[H, F]`.
    pub att_dst: &'a [E],
    /// `[H*F]` when concatenating, `[F]` when averaging; or none.
    pub bias: Option<&'a [E]>,
}

/// f32 scratch of [`gat`]: projected features and aggregates (`2·N·H·F`) plus per node and
/// head the two scores, the softmax maximum and sum (`4·N·H`). Saturates on overflow.
pub const fn gat_scratch_len(shape: GatShape) -> usize {
    let nh = shape.nodes.saturating_mul(shape.heads);
    nh.saturating_mul(shape.out_features)
        .saturating_mul(2)
        .saturating_add(nh.saturating_mul(4))
}

/// Memory of a GAT layer: `H·F·(Fin + 2)` weights plus the bias, and [`gat_scratch_len`].
pub const fn gat_footprint(shape: GatShape, concat: bool) -> Footprint {
    let hf = shape.heads.saturating_mul(shape.out_features);
    Footprint {
        weights: hf
            .saturating_mul(shape.in_features.saturating_add(2))
            .saturating_add(shape.output_features(concat)),
        scratch: gat_scratch_len(shape),
        ..Footprint::NONE
    }
}

/// The scratch areas of one call.
struct Areas<'s> {
    /// `x'`, `[N, H*F]`.
    xp: &'s mut [f32],
    /// Aggregated messages, `[N, H*F]`.
    acc: &'s mut [f32],
    /// Source scores, `[N, H]`.
    s_src: &'s mut [f32],
    /// Target scores, `[N, H]`.
    s_dst: &'s mut [f32],
    /// Softmax maximum per target and head, `[N, H]`.
    max: &'s mut [f32],
    /// Softmax sum per target and head, `[N, H]`.
    sum: &'s mut [f32],
}

/// LeakyReLU.
#[inline]
fn leaky(x: f32, slope: f32) -> f32 {
    if x > 0.0 {
        x
    } else {
        slope * x
    }
}

/// Node id from an edge-list entry, or [`Error::InvalidParameter`] if negative or `>= nodes`.
#[inline]
fn node<I: Copy + TryInto<usize>>(id: I, nodes: usize) -> Result<usize, Error> {
    match id.try_into() {
        Ok(n) if n < nodes => Ok(n),
        _ => Err(Error::InvalidParameter),
    }
}

/// The edges of a graph, in either form `GATConv` takes.
///
/// Node ids may be any integer type (`u16`, `u32`, `i32`, `i64`, `usize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatEdges<'a, I> {
    /// COO `edge_index` `[2, E]` row-major: `E` sources, then `E` targets (message
    /// `source → target`), in any order.
    Coo(&'a [I]),
    /// CSR of the transposed adjacency (torch_sparse's `adj_t`, which `GATConv` also takes):
    /// the edges into node `i` come from the sources `col_idx[row_ptr[i]..row_ptr[i + 1]]`.
    /// `row_ptr` has `N + 1` entries, starts at 0, never decreases and ends at
    /// `col_idx.len()`.
    Csr {
        /// Row pointers, `[N + 1]`.
        row_ptr: &'a [I],
        /// Source node of each edge, grouped by target, `[E]`.
        col_idx: &'a [I],
    },
}

impl<I: Copy + TryInto<usize>> GatEdges<'_, I> {
    /// Checks every node id and, for CSR, the row pointers, against `nodes` nodes.
    ///
    /// Errors: COO of odd length ([`Error::LengthMismatch`]); CSR `row_ptr` not `N + 1`
    /// long ([`Error::LengthMismatch`]), not starting at 0, decreasing, or not ending at
    /// `col_idx.len()`; a node id negative or `>= nodes` ([`Error::InvalidParameter`]).
    pub fn validate(&self, nodes: usize) -> Result<(), Error> {
        match *self {
            GatEdges::Coo(edge_index) => Coo(edge_index).validate(nodes),
            GatEdges::Csr { row_ptr, col_idx } => Csr { row_ptr, col_idx }.validate(nodes),
        }
    }
}

/// An edge list the GAT kernels walk: validated once, then iterated as `(source, target)`
/// pairs. One type per form, so a kernel monomorphized for COO carries no CSR code (the
/// microbit's flash is small).
pub(crate) trait EdgeList {
    /// As [`GatEdges::validate`].
    fn validate(&self, nodes: usize) -> Result<(), Error>;
    /// Every `(source, target)` pair in storage order; ids already validated (an invalid
    /// entry is skipped, never a panic).
    fn pairs(&self, nodes: usize) -> impl Iterator<Item = (usize, usize)> + '_;
}

/// COO `edge_index` (sources, then targets).
pub(crate) struct Coo<'a, I>(pub(crate) &'a [I]);

/// CSR of the transposed adjacency.
pub(crate) struct Csr<'a, I> {
    pub(crate) row_ptr: &'a [I],
    pub(crate) col_idx: &'a [I],
}

impl<I: Copy + TryInto<usize>> EdgeList for Coo<'_, I> {
    fn validate(&self, nodes: usize) -> Result<(), Error> {
        let edge_index = self.0;
        if edge_index.len() % 2 != 0 {
            return Err(Error::LengthMismatch {
                expected: edge_index.len() + 1,
                found: edge_index.len(),
            });
        }
        for &v in edge_index {
            node(v, nodes)?;
        }
        Ok(())
    }

    fn pairs(&self, nodes: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
        let (sources, targets) = self.0.split_at(self.0.len() / 2);
        sources.iter().zip(targets).filter_map(move |(&s, &t)| {
            match (node(s, nodes), node(t, nodes)) {
                (Ok(s), Ok(t)) => Some((s, t)),
                _ => None,
            }
        })
    }
}

impl<I: Copy + TryInto<usize>> EdgeList for Csr<'_, I> {
    fn validate(&self, nodes: usize) -> Result<(), Error> {
        let (row_ptr, col_idx) = (self.row_ptr, self.col_idx);
        check_len(row_ptr, nodes.checked_add(1).ok_or(Error::ShapeOverflow)?)?;
        let mut previous = 0usize;
        for (i, &p) in row_ptr.iter().enumerate() {
            let p: usize = p.try_into().map_err(|_| Error::InvalidParameter)?;
            if (i == 0 && p != 0) || p < previous || p > col_idx.len() {
                return Err(Error::InvalidParameter);
            }
            previous = p;
        }
        if previous != col_idx.len() {
            return Err(Error::InvalidParameter);
        }
        for &v in col_idx {
            node(v, nodes)?;
        }
        Ok(())
    }

    fn pairs(&self, nodes: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
        let (row_ptr, col_idx) = (self.row_ptr, self.col_idx);
        let bound = |p: Option<&I>| p.and_then(|&p| p.try_into().ok()).unwrap_or(0);
        (0..nodes).flat_map(move |t| {
            let (start, end) = (bound(row_ptr.get(t)), bound(row_ptr.get(t + 1)));
            col_idx
                .get(start..end)
                .unwrap_or(&[])
                .iter()
                .filter_map(move |&s| node(s, nodes).ok().map(|s| (s, t)))
        })
    }
}

/// One GAT layer (`GATConv.forward` in eval mode).
///
/// `x` is `[N, Fin]`; `edge_index` is the COO list `[2, E]` row-major (`E` sources, then `E`
/// targets; any integer type: `u16`, `u32`, `i32`, `i64`, `usize`); `out` is
/// `[N, H*F]` (concat) or `[N, F]` (mean). `E = 0` is allowed.
///
/// Errors: a zero `N`, `Fin`, `F` or `H`; a tensor or weight length that does not match;
/// an odd `edge_index` length; a node id negative or `>= N` ([`Error::InvalidParameter`]);
/// a non-finite slope ([`Error::InvalidParameter`]); scratch shorter than
/// [`gat_scratch_len`]. Checked before anything is written.
///
/// ```
/// use microattn::graph::{gat, gat_scratch_len, GatParams, GatShape, GatWeights};
/// // Two nodes, one feature, one head: node 1 listens to node 0 and itself.
/// const SHAPE: GatShape = GatShape::new(2, 1, 1, 1);
/// let weights = GatWeights {
///     lin_weight: &[1.0f32],
///     att_src: &[0.0],
///     att_dst: &[0.0],
///     bias: Some(&[0.5]),
/// };
/// let x = [2.0f32, 4.0];
/// let edges = [0u32, 1]; // sources [0], targets [1]
/// let mut out = [0.0f32; 2];
/// let mut scratch = [0.0f32; gat_scratch_len(SHAPE)];
/// gat(&x, &edges, &weights, &mut out, SHAPE, &GatParams::default(), &mut scratch)?;
/// // Zero attention vectors: uniform weights over the incoming edges.
/// assert_eq!(out, [2.5, 3.5]);
/// # Ok::<(), microattn::Error>(())
/// ```
pub fn gat<E: Element, I: Copy + TryInto<usize>>(
    x: &[E],
    edge_index: &[I],
    weights: &GatWeights<'_, E>,
    out: &mut [E],
    shape: GatShape,
    params: &GatParams,
    scratch: &mut [f32],
) -> Result<(), Error> {
    gat_core(x, &Coo(edge_index), weights, out, shape, params, scratch)
}

/// [`gat`] over a CSR adjacency: the edges into node `i` come from the sources
/// `col_idx[row_ptr[i]..row_ptr[i + 1]]` (torch_sparse's `adj_t`, see [`GatEdges::Csr`]).
/// Same result as [`gat`] on the COO list of the same edges.
///
/// Errors: as [`gat`]; `row_ptr` not `N + 1` long, not starting at 0, decreasing or not
/// ending at `col_idx.len()`, a column `>= N` ([`Error::InvalidParameter`]).
///
/// ```
/// use microattn::graph::{gat_csr, gat_scratch_len, GatParams, GatShape, GatWeights};
/// // Three nodes, one feature, one head. Into node 0: nothing; into node 1: from 0;
/// // into node 2: from 0 and 1.
/// const SHAPE: GatShape = GatShape::new(3, 1, 1, 1);
/// let weights = GatWeights { lin_weight: &[1.0f32], att_src: &[0.0], att_dst: &[0.0], bias: None };
/// let x = [2.0f32, 4.0, 8.0];
/// let (row_ptr, col_idx) = ([0u16, 0, 1, 3], [0u16, 0, 1]);
/// let mut out = [0.0f32; 3];
/// let mut scratch = [0.0f32; gat_scratch_len(SHAPE)];
/// let params = GatParams { add_self_loops: false, ..GatParams::default() };
/// gat_csr(&x, &row_ptr, &col_idx, &weights, &mut out, SHAPE, &params, &mut scratch)?;
/// // Node 0 is isolated (no bias: 0); the others average their sources.
/// assert_eq!(out, [0.0, 2.0, 3.0]);
/// # Ok::<(), microattn::Error>(())
/// ```
#[allow(clippy::too_many_arguments)]
pub fn gat_csr<E: Element, I: Copy + TryInto<usize>>(
    x: &[E],
    row_ptr: &[I],
    col_idx: &[I],
    weights: &GatWeights<'_, E>,
    out: &mut [E],
    shape: GatShape,
    params: &GatParams,
    scratch: &mut [f32],
) -> Result<(), Error> {
    gat_core(
        x,
        &Csr { row_ptr, col_idx },
        weights,
        out,
        shape,
        params,
        scratch,
    )
}

/// [`gat`] over edges in either form ([`GatEdges`]).
pub fn gat_edges<E: Element, I: Copy + TryInto<usize>>(
    x: &[E],
    edges: GatEdges<'_, I>,
    weights: &GatWeights<'_, E>,
    out: &mut [E],
    shape: GatShape,
    params: &GatParams,
    scratch: &mut [f32],
) -> Result<(), Error> {
    match edges {
        GatEdges::Coo(e) => gat_core(x, &Coo(e), weights, out, shape, params, scratch),
        GatEdges::Csr { row_ptr, col_idx } => gat_core(
            x,
            &Csr { row_ptr, col_idx },
            weights,
            out,
            shape,
            params,
            scratch,
        ),
    }
}

/// The layer over a validated-on-entry edge list of one form.
fn gat_core<E: Element, L: EdgeList>(
    x: &[E],
    edges: &L,
    weights: &GatWeights<'_, E>,
    out: &mut [E],
    shape: GatShape,
    params: &GatParams,
    scratch: &mut [f32],
) -> Result<(), Error> {
    let GatShape {
        nodes: n,
        in_features,
        out_features: f,
        heads: h,
    } = shape;
    nonzero(&[n, in_features, f, h])?;
    let hf = mul(h, f)?;
    check_len(x, mul(n, in_features)?)?;
    check_len(weights.lin_weight, mul(hf, in_features)?)?;
    check_len(weights.att_src, hf)?;
    check_len(weights.att_dst, hf)?;
    let out_features = if params.concat { hf } else { f };
    if let Some(b) = weights.bias {
        check_len(b, out_features)?;
    }
    check_len(out, mul(n, out_features)?)?;
    edges.validate(n)?;
    if !params.negative_slope.is_finite() {
        return Err(Error::InvalidParameter);
    }
    // `needed` saturates to usize::MAX on overflow, which no slice reaches: a shape too large
    // fails here, and past this check every product below fits.
    let needed = gat_scratch_len(shape);
    if scratch.len() < needed {
        return Err(Error::ScratchTooSmall {
            needed,
            found: scratch.len(),
        });
    }
    let nhf = n * hf;
    let nh = n * h;
    // `needed` covers every area; the checked splits only keep panics out of the code.
    let short = Error::ScratchTooSmall {
        needed,
        found: scratch.len(),
    };
    let (xp, rest) = scratch.split_at_mut_checked(nhf).ok_or(short)?;
    let (acc, rest) = rest.split_at_mut_checked(nhf).ok_or(short)?;
    let (s_src, rest) = rest.split_at_mut_checked(nh).ok_or(short)?;
    let (s_dst, rest) = rest.split_at_mut_checked(nh).ok_or(short)?;
    let (max, rest) = rest.split_at_mut_checked(nh).ok_or(short)?;
    let sum = rest.get_mut(..nh).ok_or(short)?;
    let a = Areas {
        xp,
        acc,
        s_src,
        s_dst,
        max,
        sum,
    };

    // x' = x Wᵀ, then the per-head scores of every node.
    linear_typed(
        x,
        weights.lin_weight,
        None,
        a.xp,
        LinearShape::new(n, in_features, hf),
    )?;
    // Row `i` (`len` wide) of a per-node area; node ids are `< n` (checked above), so it is
    // always there: `get` only keeps a panic out of the code. Rows and heads are found this
    // way rather than by zipping chunk iterators: the out-of-line copy of such a `zip` keeps a
    // division by the chunk size.
    fn row<T>(area: &[T], i: usize, len: usize) -> Option<&[T]> {
        area.get(i * len..(i + 1) * len)
    }
    fn row_mut<T>(area: &mut [T], i: usize, len: usize) -> Option<&mut [T]> {
        area.get_mut(i * len..(i + 1) * len)
    }
    let att = |feat: &[f32], v: &[E]| {
        feat.iter()
            .zip(v)
            .map(|(&p, &w)| p * w.to_f32())
            .sum::<f32>()
    };
    for node_i in 0..n {
        let (Some(xp_row), Some(src_row), Some(dst_row)) = (
            row(a.xp, node_i, hf),
            row_mut(a.s_src, node_i, h),
            row_mut(a.s_dst, node_i, h),
        ) else {
            break;
        };
        for (head, (s_src, s_dst)) in src_row.iter_mut().zip(dst_row).enumerate() {
            let (Some(feat), Some(w_src), Some(w_dst)) = (
                row(xp_row, head, f),
                row(weights.att_src, head, f),
                row(weights.att_dst, head, f),
            ) else {
                break;
            };
            *s_src = att(feat, w_src);
            *s_dst = att(feat, w_dst);
        }
    }

    // Every (source, target) pair the softmax runs over, self loops handled as GATConv does.
    let loops = params.add_self_loops;
    let edges = || {
        let listed = edges.pairs(n).filter(move |&(s, t)| !(loops && s == t));
        listed.chain((0..if loops { n } else { 0 }).map(|i| (i, i)))
    };
    // Pass 1: maximum score per target and head.
    a.max.fill(f32::NEG_INFINITY);
    for (s, t) in edges() {
        let (Some(src), Some(dst), Some(max)) =
            (row(a.s_src, s, h), row(a.s_dst, t, h), row_mut(a.max, t, h))
        else {
            continue;
        };
        for ((&ss, &sd), m) in src.iter().zip(dst).zip(max) {
            *m = m.max(leaky(ss + sd, params.negative_slope));
        }
    }
    // Pass 2: softmax weights, their sums and the weighted messages.
    a.sum.fill(0.0);
    a.acc.fill(0.0);
    for (s, t) in edges() {
        let (Some(src), Some(dst), Some(max), Some(sum), Some(msgs), Some(acc)) = (
            row(a.s_src, s, h),
            row(a.s_dst, t, h),
            row(a.max, t, h),
            row_mut(a.sum, t, h),
            row(a.xp, s, hf),
            row_mut(a.acc, t, hf),
        ) else {
            continue;
        };
        let heads = src.iter().zip(dst).zip(max).zip(sum).enumerate();
        for (head, (((&ss, &sd), &m), sum)) in heads {
            let (Some(msg), Some(dst)) = (row(msgs, head, f), row_mut(acc, head, f)) else {
                break;
            };
            let w = exp(leaky(ss + sd, params.negative_slope) - m);
            *sum += w;
            for (d, &x) in dst.iter_mut().zip(msg) {
                *d += w * x;
            }
        }
    }

    // Normalize, combine heads, add the bias.
    let bias = |k: usize| {
        weights
            .bias
            .and_then(|b| b.get(k))
            .map_or(0.0, |b| b.to_f32())
    };
    // A node without incoming edges has sum 0: no message, only the bias.
    let inv = |s: f32| if s > 0.0 { 1.0 / s } else { 0.0 };
    for node_i in 0..n {
        let (Some(out_row), Some(acc_row), Some(sum_row)) = (
            row_mut(out, node_i, out_features),
            row(a.acc, node_i, hf),
            row(a.sum, node_i, h),
        ) else {
            break;
        };
        if params.concat {
            let mut k = 0;
            for (head, &s) in sum_row.iter().enumerate() {
                let (Some(out_h), Some(acc_h)) = (row_mut(out_row, head, f), row(acc_row, head, f))
                else {
                    break;
                };
                for (o, &x) in out_h.iter_mut().zip(acc_h) {
                    *o = E::from_f32(x * inv(s) + bias(k));
                    k += 1;
                }
            }
        } else {
            for (k, o) in out_row.iter_mut().enumerate() {
                let total: f32 = sum_row
                    .iter()
                    .enumerate()
                    .map(|(head, &s)| acc_row.get(head * f + k).map_or(0.0, |&x| x) * inv(s))
                    .sum();
                *o = E::from_f32(total / h as f32 + bias(k));
            }
        }
    }
    Ok(())
}

/// The parameters of one `GATConv` as arrays, for [`gat_fixed`] and [`gat_csr_fixed`]:
/// `H` heads of `F` features from `FIN` input features, `OUT` output features per node
/// (`H·F` when the heads are concatenated, `F` when averaged).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GatWeightsFixed<
    'a,
    E,
    const FIN: usize,
    const F: usize,
    const H: usize,
    const OUT: usize,
> {
    /// `lin.weight`, `[H·F, FIN]` (head by head).
    pub lin_weight: &'a [[[E; FIN]; F]; H],
    /// `att_src`, `[H, F]`.
    pub att_src: &'a [[E; F]; H],
    /// `att_dst`, `[H, F]`.
    pub att_dst: &'a [[E; F]; H],
    /// `bias`, `[OUT]`, or none.
    pub bias: Option<&'a [E; OUT]>,
}

impl<'a, E, const FIN: usize, const F: usize, const H: usize, const OUT: usize>
    GatWeightsFixed<'a, E, FIN, F, H, OUT>
{
    /// The same weights as slices, for [`gat`].
    pub fn as_slices(&self) -> GatWeights<'a, E> {
        GatWeights {
            lin_weight: self.lin_weight.as_flattened().as_flattened(),
            att_src: self.att_src.as_flattened(),
            att_dst: self.att_dst.as_flattened(),
            bias: self.bias.map(|b| &b[..]),
        }
    }
}

/// Compile-time checks of the fixed GAT shapes.
const fn check_fixed(n: usize, fin: usize, f: usize, h: usize, out: usize, scratch: usize) {
    assert!(
        n > 0 && fin > 0 && f > 0 && h > 0,
        "GAT sizes must be positive"
    );
    assert!(
        out == h * f || out == f,
        "OUT must be H·F (concat) or F (mean)"
    );
    assert!(
        scratch >= gat_scratch_len(GatShape::new(n, fin, f, h)),
        "scratch shorter than gat_scratch_len"
    );
}

/// Fixed-size [`gat`] over a COO edge list of `EDGES` edges (`[sources, targets]`): `N` nodes
/// of `FIN` features into `[N, OUT]`. Sizes are array lengths, checked at compile time (all
/// positive, `OUT` equal to `H·F` or `F`, `scratch` at least [`gat_scratch_len`]). Errors:
/// `OUT` not matching `params.concat` ([`Error::LengthMismatch`]), a node id out of range, a
/// non-finite slope.
///
/// ```
/// use microattn::graph::{gat_fixed, gat_scratch_len, GatParams, GatShape, GatWeightsFixed};
/// // Two nodes, one feature, one head: node 1 listens to node 0 and itself.
/// let weights = GatWeightsFixed {
///     lin_weight: &[[[1.0f32]]],
///     att_src: &[[0.0]],
///     att_dst: &[[0.0]],
///     bias: Some(&[0.5]),
/// };
/// let x = [[2.0f32], [4.0]];
/// let edges = [[0u32], [1]];
/// let mut out = [[0.0f32; 1]; 2];
/// let mut scratch = [0.0f32; gat_scratch_len(GatShape::new(2, 1, 1, 1))];
/// gat_fixed(&x, &edges, &weights, &mut out, &GatParams::default(), &mut scratch)?;
/// assert_eq!(out, [[2.5], [3.5]]);
/// # Ok::<(), microattn::Error>(())
/// ```
#[allow(clippy::too_many_arguments)]
pub fn gat_fixed<
    E: Element,
    I: Copy + TryInto<usize>,
    const N: usize,
    const FIN: usize,
    const F: usize,
    const H: usize,
    const OUT: usize,
    const EDGES: usize,
    const S: usize,
>(
    x: &[[E; FIN]; N],
    edge_index: &[[I; EDGES]; 2],
    weights: &GatWeightsFixed<'_, E, FIN, F, H, OUT>,
    out: &mut [[E; OUT]; N],
    params: &GatParams,
    scratch: &mut [f32; S],
) -> Result<(), Error> {
    const { check_fixed(N, FIN, F, H, OUT, S) };
    gat(
        x.as_flattened(),
        edge_index.as_flattened(),
        &weights.as_slices(),
        out.as_flattened_mut(),
        GatShape::new(N, FIN, F, H),
        params,
        scratch,
    )
}

/// Fixed-size [`gat_csr`]: `row_ptr` has `NP1 = N + 1` entries (checked at compile time),
/// `col_idx` `EDGES`. Otherwise as [`gat_fixed`]; malformed row pointers or a column out of
/// range are errors ([`Error::InvalidParameter`]).
///
/// ```
/// use microattn::graph::{gat_csr_fixed, gat_scratch_len, GatParams, GatShape, GatWeightsFixed};
/// // Into node 0: nothing; into node 1: from node 0 (mean of two heads).
/// let weights = GatWeightsFixed {
///     lin_weight: &[[[1.0f32]], [[3.0]]],
///     att_src: &[[0.0], [0.0]],
///     att_dst: &[[0.0], [0.0]],
///     bias: None,
/// };
/// let mut out = [[9.0f32; 1]; 2];
/// let mut scratch = [0.0f32; gat_scratch_len(GatShape::new(2, 1, 1, 2))];
/// let params = GatParams { concat: false, add_self_loops: false, ..GatParams::default() };
/// gat_csr_fixed(&[[1.0f32], [5.0]], &[0u8, 0, 1], &[0u8], &weights, &mut out, &params, &mut scratch)?;
/// assert_eq!(out, [[0.0], [2.0]]);
/// # Ok::<(), microattn::Error>(())
/// ```
///
/// Row pointers that are not `N + 1` do not compile:
///
/// ```compile_fail
/// # use microattn::graph::{gat_csr_fixed, GatParams, GatWeightsFixed};
/// let weights = GatWeightsFixed::<f32, 1, 1, 1, 1> {
///     lin_weight: &[[[1.0]]], att_src: &[[0.0]], att_dst: &[[0.0]], bias: None,
/// };
/// let mut out = [[0.0f32; 1]; 2];
/// let mut scratch = [0.0f32; 64];
/// gat_csr_fixed(&[[1.0f32], [5.0]], &[0u8, 1], &[0u8], &weights, &mut out, &GatParams::default(), &mut scratch).unwrap();
/// ```
#[allow(clippy::too_many_arguments)]
pub fn gat_csr_fixed<
    E: Element,
    I: Copy + TryInto<usize>,
    const N: usize,
    const NP1: usize,
    const FIN: usize,
    const F: usize,
    const H: usize,
    const OUT: usize,
    const EDGES: usize,
    const S: usize,
>(
    x: &[[E; FIN]; N],
    row_ptr: &[I; NP1],
    col_idx: &[I; EDGES],
    weights: &GatWeightsFixed<'_, E, FIN, F, H, OUT>,
    out: &mut [[E; OUT]; N],
    params: &GatParams,
    scratch: &mut [f32; S],
) -> Result<(), Error> {
    const {
        check_fixed(N, FIN, F, H, OUT, S);
        assert!(NP1 == N + 1, "row_ptr must have N + 1 entries");
    };
    gat_csr(
        x.as_flattened(),
        row_ptr,
        col_idx,
        &weights.as_slices(),
        out.as_flattened_mut(),
        GatShape::new(N, FIN, F, H),
        params,
        scratch,
    )
}
