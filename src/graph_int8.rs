//! Int8 graph attention (`GATConv` semantics as [`crate::graph::gat`]), integer only:
//!
//! - `x' = x Wᵀ`: int8 × int8 → `i32`, requantized to int8 per channel ([`Int8Dense`]).
//! - Scores: `s_src[n,h] = x'[n,h]·att_src[h]` and `s_dst` as exact `i32` dot products of
//!   int8 vectors, each turned by one fixed-point multiplier into a base-2 logit with 20
//!   fractional bits (the format of [`crate::attention::int8`]); `e = LeakyReLU(z_src +
//!   z_dst)` with a Q16 slope.
//! - Softmax over the incoming edges of each target and head: two passes (integer maximum,
//!   then Q16 weights `2^(e - max)` from [`exp2_neg_weight`] and their `i64` sum), the
//!   messages `w · x'[j,h]` summed in `i64`.
//! - Output: `acc / sum` (one exact 128-bit division per value) times `x'_scale / out_scale`
//!   in Q16 output steps, heads concatenated or averaged, the bias (Q16 output steps) added,
//!   one rounding to int8.

use crate::attention::int8::{exp2_neg_weight, int8_dense, Int8Dense, LOGIT_FRAC_BITS};
use crate::error::{check_len, mul, nonzero, Error};
use crate::graph::{Coo, Csr, EdgeList, GatEdges, GatParams, GatShape};
use crate::projection::LinearShape;
use crate::quant::{round_shift, saturate_i8, FixedMultiplier, QParams};

/// Largest magnitude of one score term (`z_src` or `z_dst`) in logit units, checked from the
/// multipliers and `F` before a call: sums and slopes of such terms cannot overflow.
pub const MAX_GAT_LOGIT: u128 = 1 << 40;

/// Largest `|negative_slope|` of the int8 GAT (16, as Q16 `2^20`).
pub const MAX_GAT_SLOPE_Q16: i32 = 1 << 20;

/// Fractional bits of the output before its final rounding (bias and per-head values).
const OUT_FRAC_BITS: u32 = 16;

/// A prepared int8 GAT layer (integers only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Int8GatParams<'a> {
    /// `lin`: `x` scale → `x'` scale, `[H*F, Fin]`, no bias (a bias here is added to `x'`).
    pub lin: Int8Dense<'a>,
    /// `att_src`, int8 `[H, F]`.
    pub att_src: &'a [i8],
    /// `att_dst`, int8 `[H, F]`.
    pub att_dst: &'a [i8],
    /// `x'_scale · att_src_scale · log2(e) · 2^20`.
    pub src_logit: FixedMultiplier,
    /// `x'_scale · att_dst_scale · log2(e) · 2^20`.
    pub dst_logit: FixedMultiplier,
    /// LeakyReLU slope in Q16, `|slope| <=` [`MAX_GAT_SLOPE_Q16`].
    pub slope_q16: i32,
    /// `x'_scale / out_scale`.
    pub out: FixedMultiplier,
    /// `round(bias / out_scale · 2^16)`, `[H*F]` (concat) or `[F]` (mean); or none.
    pub bias: Option<&'a [i32]>,
    /// Concatenate the heads (`true`) or average them.
    pub concat: bool,
    /// Replace the self loops of the edge list by exactly one per node.
    pub add_self_loops: bool,
}

/// The quantization scales of an int8 GAT call.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Int8GatScales {
    /// Projected features `x'`.
    pub projected: f32,
    /// `att_src` (per tensor).
    pub att_src: f32,
    /// `att_dst` (per tensor).
    pub att_dst: f32,
    /// Output.
    pub out: f32,
}

impl<'a> Int8GatParams<'a> {
    /// Prepares the attention part (float, once) around an already prepared projection
    /// `lin` (`x` scale → `scales.projected`): the score and output multipliers, the Q16
    /// slope, the bias (f32, converted into `bias_storage`).
    ///
    /// Errors: a bad scale or a multiplier out of range, a slope not finite or beyond 16
    /// ([`Error::InvalidScale`] / [`Error::InvalidParameter`]), a bias that does not fit
    /// ([`Error::InvalidBias`]), short storage.
    pub fn prepare(
        lin: Int8Dense<'a>,
        att_src: &'a [i8],
        att_dst: &'a [i8],
        scales: Int8GatScales,
        bias: Option<&[f32]>,
        params: &GatParams,
        bias_storage: &'a mut [i32],
    ) -> Result<Self, Error> {
        let xp = QParams::new(scales.projected)?.scale() as f64;
        let out = QParams::new(scales.out)?.scale() as f64;
        let unit = core::f64::consts::LOG2_E * (1u64 << LOGIT_FRAC_BITS) as f64;
        let slope = params.negative_slope as f64 * (1u64 << 16) as f64;
        if !(slope.is_finite() && slope.abs() <= MAX_GAT_SLOPE_Q16 as f64) {
            return Err(Error::InvalidParameter);
        }
        let bias = match bias {
            None => None,
            Some(b) => {
                let found = bias_storage.len();
                let storage = bias_storage
                    .get_mut(..b.len())
                    .ok_or(Error::ScratchTooSmall {
                        needed: b.len(),
                        found,
                    })?;
                for (o, &v) in storage.iter_mut().zip(b) {
                    let q = libm::round(v as f64 / out * (1u64 << OUT_FRAC_BITS) as f64);
                    if !(q.is_finite() && q.abs() <= i32::MAX as f64) {
                        return Err(Error::InvalidBias);
                    }
                    *o = q as i32;
                }
                Some(&*storage)
            }
        };
        Ok(Int8GatParams {
            lin,
            att_src,
            att_dst,
            src_logit: FixedMultiplier::from_real(
                xp * QParams::new(scales.att_src)?.scale() as f64 * unit,
            )?,
            dst_logit: FixedMultiplier::from_real(
                xp * QParams::new(scales.att_dst)?.scale() as f64 * unit,
            )?,
            slope_q16: libm::round(slope) as i32,
            out: FixedMultiplier::from_real(xp / out)?,
            bias,
            concat: params.concat,
            add_self_loops: params.add_self_loops,
        })
    }
}

/// Largest values of each stage before saturation, in output steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Int8GatStats {
    /// Projected features `x'`.
    pub projected: i64,
    /// Outputs.
    pub out: i64,
}

/// `i8` scratch of [`int8_gat`]: the projected features, `N·H·F`. Saturates.
pub const fn int8_gat_scratch_len(shape: GatShape) -> usize {
    shape
        .nodes
        .saturating_mul(shape.heads)
        .saturating_mul(shape.out_features)
}

/// `i64` scratch of [`int8_gat`]: message sums (`N·H·F`) and, per node and head, the two
/// score terms, the softmax maximum and sum (`4·N·H`). Saturates.
pub const fn int8_gat_acc_len(shape: GatShape) -> usize {
    let nh = shape.nodes.saturating_mul(shape.heads);
    nh.saturating_mul(shape.out_features)
        .saturating_add(nh.saturating_mul(4))
}

/// `|m · 2^14 · f|` bound check of one score multiplier.
fn check_logit(m: FixedMultiplier, f: usize) -> Result<(), Error> {
    FixedMultiplier::from_raw(m.multiplier(), m.shift())?;
    let worst = (16384u128 * f as u128 * m.multiplier() as u128) >> (31 - m.shift()) as u32;
    if worst > MAX_GAT_LOGIT {
        return Err(Error::InvalidScale);
    }
    Ok(())
}

/// `round(n / d)` half away from zero for `d > 0`, in 128 bits.
fn div_round_wide(n: i128, d: i128) -> i128 {
    // (The checked division only keeps a panic out of the code.)
    let q = (n.unsigned_abs() + d as u128 / 2)
        .checked_div(d as u128)
        .unwrap_or(0);
    let q = q.min(i64::MAX as u128 / 4) as i128;
    if n < 0 {
        -q
    } else {
        q
    }
}

/// One int8 GAT layer: `x` `[N, Fin]` int8, `edge_index` the COO list `[2, E]` (sources then
/// targets, any integer type), `out` `[N, H*F]` (concat) or `[N, F]` (mean) int8.
/// `scratch` holds [`int8_gat_scratch_len`] `i8`s, `acc` [`int8_gat_acc_len`] `i64`s.
/// Integer only. A node without incoming edges gets only the bias.
///
/// Errors, checked before anything is written: a zero `N`, `Fin`, `F` or `H`; lengths that
/// do not match; an odd `edge_index` length; a node id out of range
/// ([`Error::InvalidParameter`]); a slope beyond [`MAX_GAT_SLOPE_Q16`]; score multipliers
/// that could exceed [`MAX_GAT_LOGIT`] ([`Error::InvalidScale`]); short scratch.
#[allow(clippy::too_many_arguments)]
pub fn int8_gat<I: Copy + TryInto<usize>>(
    x: &[i8],
    edge_index: &[I],
    params: &Int8GatParams<'_>,
    out: &mut [i8],
    shape: GatShape,
    scratch: &mut [i8],
    acc: &mut [i64],
    stats: Option<&mut Int8GatStats>,
) -> Result<(), Error> {
    int8_gat_core(x, &Coo(edge_index), params, out, shape, scratch, acc, stats)
}

/// [`int8_gat`] over a CSR adjacency (the edges into node `i` come from the sources
/// `col_idx[row_ptr[i]..row_ptr[i + 1]]`, see [`GatEdges::Csr`]): the same bytes as
/// [`int8_gat`] on the COO list of the same edges. Integer only.
///
/// Errors: as [`int8_gat`]; malformed row pointers or a column `>= N`
/// ([`Error::InvalidParameter`]).
#[allow(clippy::too_many_arguments)]
pub fn int8_gat_csr<I: Copy + TryInto<usize>>(
    x: &[i8],
    row_ptr: &[I],
    col_idx: &[I],
    params: &Int8GatParams<'_>,
    out: &mut [i8],
    shape: GatShape,
    scratch: &mut [i8],
    acc: &mut [i64],
    stats: Option<&mut Int8GatStats>,
) -> Result<(), Error> {
    let edges = Csr { row_ptr, col_idx };
    int8_gat_core(x, &edges, params, out, shape, scratch, acc, stats)
}

/// [`int8_gat`] over edges in either form ([`GatEdges`]). Integer only.
#[allow(clippy::too_many_arguments)]
pub fn int8_gat_edges<I: Copy + TryInto<usize>>(
    x: &[i8],
    edges: GatEdges<'_, I>,
    params: &Int8GatParams<'_>,
    out: &mut [i8],
    shape: GatShape,
    scratch: &mut [i8],
    acc: &mut [i64],
    stats: Option<&mut Int8GatStats>,
) -> Result<(), Error> {
    match edges {
        GatEdges::Coo(e) => int8_gat_core(x, &Coo(e), params, out, shape, scratch, acc, stats),
        GatEdges::Csr { row_ptr, col_idx } => {
            let edges = Csr { row_ptr, col_idx };
            int8_gat_core(x, &edges, params, out, shape, scratch, acc, stats)
        }
    }
}

/// The layer over an edge list of one form.
#[allow(clippy::too_many_arguments)]
fn int8_gat_core<L: EdgeList>(
    x: &[i8],
    edges: &L,
    params: &Int8GatParams<'_>,
    out: &mut [i8],
    shape: GatShape,
    scratch: &mut [i8],
    acc: &mut [i64],
    stats: Option<&mut Int8GatStats>,
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
    check_len(params.att_src, hf)?;
    check_len(params.att_dst, hf)?;
    let out_features = if params.concat { hf } else { f };
    if let Some(b) = params.bias {
        check_len(b, out_features)?;
    }
    check_len(out, mul(n, out_features)?)?;
    edges.validate(n)?;
    if params.slope_q16.unsigned_abs() > MAX_GAT_SLOPE_Q16 as u32 {
        return Err(Error::InvalidParameter);
    }
    if f > crate::attention::int8::MAX_D {
        return Err(Error::InvalidParameter);
    }
    check_logit(params.src_logit, f)?;
    check_logit(params.dst_logit, f)?;
    FixedMultiplier::from_raw(params.out.multiplier(), params.out.shift())?;
    let nhf = int8_gat_scratch_len(shape);
    let found = scratch.len();
    let xp = scratch
        .get_mut(..nhf)
        .ok_or(Error::ScratchTooSmall { needed: nhf, found })?;
    let needed = int8_gat_acc_len(shape);
    if acc.len() < needed {
        return Err(Error::ScratchTooSmall {
            needed,
            found: acc.len(),
        });
    }
    let nh = n * h;
    // `needed` covers the five areas; the checked splits only keep panics out of the code.
    let short = Error::ScratchTooSmall {
        needed,
        found: acc.len(),
    };
    let (msg, rest) = acc.split_at_mut_checked(nhf).ok_or(short)?;
    let (z_src, rest) = rest.split_at_mut_checked(nh).ok_or(short)?;
    let (z_dst, rest) = rest.split_at_mut_checked(nh).ok_or(short)?;
    let (max, rest) = rest.split_at_mut_checked(nh).ok_or(short)?;
    let sum = rest.get_mut(..nh).ok_or(short)?;

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

    // x' = x Wᵀ (checks the layer before writing).
    let projected = int8_dense(x, &params.lin, xp, LinearShape::new(n, in_features, hf))?;
    let dot =
        |a: &[i8], b: &[i8]| -> i32 { a.iter().zip(b).map(|(&p, &q)| p as i32 * q as i32).sum() };
    for i in 0..n {
        let (Some(xp_row), Some(src_row), Some(dst_row)) =
            (row(xp, i, hf), row_mut(z_src, i, h), row_mut(z_dst, i, h))
        else {
            break;
        };
        for (head, (zs, zd)) in src_row.iter_mut().zip(dst_row).enumerate() {
            let (Some(feat), Some(a_src), Some(a_dst)) = (
                row(xp_row, head, f),
                row(params.att_src, head, f),
                row(params.att_dst, head, f),
            ) else {
                break;
            };
            *zs = params.src_logit.mul_round(dot(feat, a_src));
            *zd = params.dst_logit.mul_round(dot(feat, a_dst));
        }
    }

    // Every (source, target) pair of the softmax, self loops as GATConv handles them.
    let loops = params.add_self_loops;
    let edges = || {
        let listed = edges.pairs(n).filter(move |&(s, t)| !(loops && s == t));
        listed.chain((0..if loops { n } else { 0 }).map(|i| (i, i)))
    };
    let score = |zs: i64, zd: i64| {
        let e = zs + zd;
        if e < 0 {
            round_shift(e * params.slope_q16 as i64, 16)
        } else {
            e
        }
    };

    // Pass 1: maximum score per target and head.
    max.fill(i64::MIN);
    for (s, t) in edges() {
        let (Some(src), Some(dst), Some(max)) =
            (row(z_src, s, h), row(z_dst, t, h), row_mut(max, t, h))
        else {
            continue;
        };
        for ((&zs, &zd), m) in src.iter().zip(dst).zip(max) {
            *m = (*m).max(score(zs, zd));
        }
    }
    // Pass 2: Q16 weights, their sums and the weighted messages.
    sum.fill(0);
    msg.fill(0);
    for (s, t) in edges() {
        let (Some(src), Some(dst), Some(max), Some(sum), Some(xp_s), Some(msg_t)) = (
            row(z_src, s, h),
            row(z_dst, t, h),
            row(max, t, h),
            row_mut(sum, t, h),
            row(xp, s, hf),
            row_mut(msg, t, hf),
        ) else {
            continue;
        };
        let heads = src.iter().zip(dst).zip(max).zip(sum).enumerate();
        for (head, (((&zs, &zd), &m), sum)) in heads {
            let w = exp2_neg_weight(m - score(zs, zd));
            if w == 0 {
                continue;
            }
            *sum += w;
            let (Some(values), Some(acc)) = (row(xp_s, head, f), row_mut(msg_t, head, f)) else {
                break;
            };
            for (a, &v) in acc.iter_mut().zip(values) {
                *a += w * v as i64;
            }
        }
    }

    // Normalize (one rounding to Q16 output steps), combine heads, add the bias, round.
    let m = params.out;
    // value = acc / sum · multiplier · 2^(shift - 31) · 2^16 = acc·multiplier / (sum · 2^(15 - shift)).
    let k = 15 - m.shift();
    let head_value = |a: i64, s: i64| -> i64 {
        if s <= 0 {
            return 0;
        }
        let num = a as i128 * m.multiplier() as i128;
        let (num, den) = if k >= 0 {
            (num, (s as i128) << k as u32)
        } else {
            (num << (-k) as u32, s as i128)
        };
        div_round_wide(num, den) as i64
    };
    let bias = |c: usize| params.bias.and_then(|b| b.get(c)).map_or(0, |&b| b as i64);
    let mut peak = 0;
    // (Entries by `get`: in bounds for the checked shapes, so they never read the 0 default.)
    let at = |x: &[i64], i: usize| x.get(i).copied().unwrap_or(0);
    for i in 0..n {
        let (Some(out_row), Some(acc_row), Some(sum_row)) = (
            row_mut(out, i, out_features),
            row(msg, i, hf),
            row(sum, i, h),
        ) else {
            break;
        };
        for (c, o) in out_row.iter_mut().enumerate() {
            let fixed = if params.concat {
                head_value(at(acc_row, c), at(sum_row, c.checked_div(f).unwrap_or(0)))
            } else {
                let total = sum_row
                    .iter()
                    .enumerate()
                    .map(|(head, &s)| head_value(at(acc_row, head * f + c), s))
                    .fold(0i64, i64::saturating_add);
                let q = (total.unsigned_abs() + h as u64 / 2)
                    .checked_div(h as u64)
                    .unwrap_or(0);
                if total < 0 {
                    -(q as i64)
                } else {
                    q as i64
                }
            };
            let v = round_shift(fixed.saturating_add(bias(c)), OUT_FRAC_BITS);
            peak = peak.max(v.abs());
            *o = saturate_i8(v);
        }
    }
    if let Some(stats) = stats {
        *stats = Int8GatStats {
            projected,
            out: peak,
        };
    }
    Ok(())
}

/// Element counts of the storage of an int8 GAT layer: int8 weights (`lin` `[H·F, Fin]`,
/// `att_src` and `att_dst` `[H, F]`), `f32` scales (one per `lin` row), `i32` bias (at most
/// `H·F`), multipliers (one per `lin` row). Saturates.
pub const fn int8_gat_storage_len(shape: GatShape) -> crate::layers::int8::Int8LayerStorage {
    let hf = shape.heads.saturating_mul(shape.out_features);
    crate::layers::int8::Int8LayerStorage {
        weights: hf
            .saturating_mul(shape.in_features)
            .saturating_add(hf.saturating_mul(2)),
        weight_scales: hf,
        ints: hf,
        multipliers: hf,
    }
}

/// A GAT layer's f32 weights quantized for [`int8_gat`] (the offline step, float): `lin`
/// per output channel, `att_src` and `att_dst` per tensor (max-abs), borrowed from caller
/// storage ([`int8_gat_storage_len`]), with the f32 bias and the layer's parameters.
#[derive(Debug, Clone, Copy)]
pub struct Int8GatQuant<'a> {
    lin_f32: &'a [f32],
    lin: &'a [i8],
    lin_scales: &'a [f32],
    att_src: &'a [i8],
    att_dst: &'a [i8],
    att_src_scale: f32,
    att_dst_scale: f32,
    bias: Option<&'a [f32]>,
    params: GatParams,
    shape: GatShape,
}

impl<'a> Int8GatQuant<'a> {
    /// Quantizes `weights` (`GATConv`'s state dict) into `weights_q` / `weight_scales`.
    ///
    /// Errors: a zero dimension, lengths that do not match `shape`, a weight that is not
    /// finite ([`Error::InvalidScale`]), short storage.
    pub fn new(
        weights: &crate::graph::GatWeights<'a, f32>,
        shape: GatShape,
        params: &GatParams,
        weights_q: &'a mut [i8],
        weight_scales: &'a mut [f32],
    ) -> Result<Self, Error> {
        use crate::layers::int8::quantize_per_row;
        nonzero(&[
            shape.nodes,
            shape.in_features,
            shape.out_features,
            shape.heads,
        ])?;
        let hf = mul(shape.heads, shape.out_features)?;
        check_len(weights.lin_weight, mul(hf, shape.in_features)?)?;
        check_len(weights.att_src, hf)?;
        check_len(weights.att_dst, hf)?;
        if let Some(b) = weights.bias {
            check_len(b, shape.output_features(params.concat))?;
        }
        let needed = int8_gat_storage_len(shape).weights;
        let found = weights_q.len();
        let short = Error::ScratchTooSmall { needed, found };
        let (lin, rest) = weights_q
            .split_at_mut_checked(mul(hf, shape.in_features)?)
            .ok_or(short)?;
        let (att_src, rest) = rest.split_at_mut_checked(hf).ok_or(short)?;
        let att_dst = rest.get_mut(..hf).ok_or(short)?;
        let found = weight_scales.len();
        let lin_scales = weight_scales
            .get_mut(..hf)
            .ok_or(Error::ScratchTooSmall { needed: hf, found })?;
        quantize_per_row(weights.lin_weight, lin_scales, lin)?;
        let mut one = [0f32];
        quantize_per_row(weights.att_src, &mut one, att_src)?;
        let att_src_scale = one[0];
        quantize_per_row(weights.att_dst, &mut one, att_dst)?;
        Ok(Int8GatQuant {
            lin_f32: weights.lin_weight,
            lin,
            lin_scales,
            att_src,
            att_dst,
            att_src_scale,
            att_dst_scale: one[0],
            bias: weights.bias,
            params: *params,
            shape,
        })
    }

    /// Scales no stage can saturate at for an input at scale `x_scale`: `x'` from
    /// `Σ|w| · 127 · x_scale` per channel, the output from that plus the largest bias
    /// (outputs are convex combinations of `x'` rows plus the bias).
    pub fn worst_case_scales(&self, x_scale: f32) -> Int8GatScales {
        let x_max = x_scale * 127.0;
        let mut xp_max = f32::MIN_POSITIVE;
        for row in self.lin_f32.chunks_exact(self.shape.in_features.max(1)) {
            let s: f32 = row.iter().map(|v| libm::fabsf(*v)).sum();
            xp_max = xp_max.max(s * x_max);
        }
        let b_max = self.bias.map_or(0.0, |b| {
            b.iter().fold(0.0f32, |m, v| m.max(libm::fabsf(*v)))
        });
        Int8GatScales {
            projected: xp_max / 127.0,
            att_src: self.att_src_scale,
            att_dst: self.att_dst_scale,
            out: (xp_max + b_max) / 127.0,
        }
    }

    /// The integer params for an input at scale `x_scale` and the `projected` and `out`
    /// scales of `scales` (float, once); tables in `ints` and `multipliers`
    /// ([`int8_gat_storage_len`]). Errors: those of [`Int8Dense::prepare`] and
    /// [`Int8GatParams::prepare`].
    pub fn prepare<'p>(
        &'p self,
        scales: &Int8GatScales,
        x_scale: f32,
        ints: &'p mut [i32],
        multipliers: &'p mut [FixedMultiplier],
    ) -> Result<Int8GatParams<'p>, Error> {
        let lin = Int8Dense::prepare(
            self.lin,
            self.lin_scales.len(),
            self.lin_scales,
            x_scale,
            scales.projected,
            None,
            &mut [],
            multipliers,
        )?;
        let scales = Int8GatScales {
            att_src: self.att_src_scale,
            att_dst: self.att_dst_scale,
            ..*scales
        };
        Int8GatParams::prepare(
            lin,
            self.att_src,
            self.att_dst,
            scales,
            self.bias,
            &self.params,
            ints,
        )
    }

    /// Calibrates the `x'` and output scales on a sample input `x` (int8 at `x_scale`) and
    /// its edges (as [`int8_gat`]): starts from
    /// [`worst_case_scales`](Self::worst_case_scales), runs the layer `rounds` times, each
    /// run's peaks refining the scales, and once more at the scales it returns: `out` then
    /// holds the layer's output at `scales.out`. `scratch`, `acc` as [`int8_gat`], `ints`,
    /// `multipliers` as [`prepare`](Self::prepare).
    #[allow(clippy::too_many_arguments)]
    pub fn calibrate<I: Copy + TryInto<usize>>(
        &self,
        x: &[i8],
        x_scale: f32,
        edge_index: &[I],
        rounds: usize,
        out: &mut [i8],
        scratch: &mut [i8],
        acc: &mut [i64],
        ints: &mut [i32],
        multipliers: &mut [FixedMultiplier],
    ) -> Result<Int8GatScales, Error> {
        use crate::layers::int8::refine_scale;
        let mut s = self.worst_case_scales(x_scale);
        for round in 0..=rounds {
            let params = self.prepare(&s, x_scale, ints, multipliers)?;
            let mut st = Int8GatStats::default();
            int8_gat(
                x,
                edge_index,
                &params,
                out,
                self.shape,
                scratch,
                acc,
                Some(&mut st),
            )?;
            if round < rounds {
                s.projected = refine_scale(s.projected, st.projected);
                s.out = refine_scale(s.out, st.out);
            }
        }
        Ok(s)
    }
}
