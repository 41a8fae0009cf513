//! Multi-head attention with input and output projections, in the weight layout of PyTorch's
//! `torch.nn.MultiheadAttention` (batch-first, one sequence).
//!
//! With `E = embed` and `hd = E / heads`:
//! `Q = query Wqᵀ + bq`, `K = key Wkᵀ + bk`, `V = value Wvᵀ + bv` (the three blocks of
//! `in_proj_weight [3E, E]` and `in_proj_bias [3E]`), each split into `heads` slices of `hd`
//! features; every head runs [`crate::attention::sdpa`] (scale `1/sqrt(hd)` unless
//! [`SdpaParams::scale`] says otherwise, any mask, score and bias); the heads are
//! concatenated and `out = concat · Woᵀ + bo`. Self-attention passes the same slice as
//! `query`, `key` and `value`; cross-attention passes a memory of `lk` rows as `key`/`value`.
//!
//! A query row whose mask allows no key has a zero attention output, so its `out` row is
//! `bo` (PyTorch gives NaN there).
//!
//! Scratch (f32, caller-provided, [`mha_scratch_len`] elements): projected `Q` `[heads, lq,
//! hd]`, `K` and `V` `[heads, lk, hd]` (head-major, the layout `sdpa` reads), and the
//! attention output `[heads, lq, hd]`. After attention the `Q` area is reused for the
//! concatenated heads `[lq, E]` that feed the output projection.

use crate::attention::{sdpa, AttentionShape, SdpaParams};
use crate::element::Element;
use crate::error::{check_len, nonzero, product, Error};
use crate::projection::{linear, linear_mixed, linear_typed, LinearShape};

/// Shapes of one multi-head attention call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct MhaShape {
    /// Query rows (target length).
    pub lq: usize,
    /// Key/value rows (source length; equal to `lq` for self-attention).
    pub lk: usize,
    /// Embedding size `E` of queries, keys, values and output.
    pub embed: usize,
    /// Number of heads; must divide `embed`.
    pub heads: usize,
}

impl MhaShape {
    /// `lq` queries over `lk` keys/values of width `embed`, split into `heads` heads.
    pub const fn new(lq: usize, lk: usize, embed: usize, heads: usize) -> Self {
        MhaShape {
            lq,
            lk,
            embed,
            heads,
        }
    }

    /// Features per head, or an error for a zero dimension or heads not dividing `embed`.
    pub fn head_dim(&self) -> Result<usize, Error> {
        nonzero(&[self.lq, self.lk, self.embed, self.heads])?;
        // `heads` is positive here; `max(1)` lets the compiler drop the division panics.
        let heads = self.heads.max(1);
        if self.embed % heads != 0 {
            return Err(Error::HeadsMismatch);
        }
        Ok(self.embed / heads)
    }

    /// The attention each head runs, on the projected tensors.
    fn attention(&self, head_dim: usize) -> AttentionShape {
        AttentionShape::multi_head(self.heads, self.heads, self.lq, self.lk, head_dim, head_dim)
    }
}

/// The parameters of one `nn.MultiheadAttention`, borrowed, stored as `E`.
///
/// The biases are optional because PyTorch's `bias=False` drops both.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MhaWeights<'a, E = f32> {
    /// `in_proj_weight`, `[3 * embed, embed]`: the rows of `Wq`, then `Wk`, then `Wv`.
    pub in_proj_weight: &'a [E],
    /// `in_proj_bias`, `[3 * embed]`: `bq`, `bk`, `bv`.
    pub in_proj_bias: Option<&'a [E]>,
    /// `out_proj.weight`, `[embed, embed]`.
    pub out_proj_weight: &'a [E],
    /// `out_proj.bias`, `[embed]`.
    pub out_proj_bias: Option<&'a [E]>,
}

/// Elements of [`MhaWeights`] for width `embed`: `4 · embed²` weights plus, with biases,
/// `4 · embed` bias values (`in_proj` and `out_proj`). Saturates instead of overflowing.
///
/// ```
/// // A 64-wide layer with biases: 16 640 values, 66 560 bytes as f32.
/// assert_eq!(microattn::mha::mha_weights_len(64, true), 16_640);
/// ```
pub const fn mha_weights_len(embed: usize, with_bias: bool) -> usize {
    let weights = embed.saturating_mul(embed).saturating_mul(4);
    if with_bias {
        weights.saturating_add(embed.saturating_mul(4))
    } else {
        weights
    }
}

/// f32 elements of scratch [`mha`] and [`mha_typed`] need: `2 * (lq + lk) * embed`
/// (projected `Q`, `K`, `V` and the attention output). Saturates instead of overflowing,
/// so an impossible size shows up as [`Error::ScratchTooSmall`], never a panic.
pub const fn mha_scratch_len(lq: usize, lk: usize, embed: usize) -> usize {
    lq.saturating_add(lk)
        .saturating_mul(embed)
        .saturating_mul(2)
}

/// Multi-head attention in f32: `query` `[lq, E]`, `key`/`value` `[lk, E]`, `out` `[lq, E]`.
///
/// `params` applies to every head: its [`Bias`](crate::attention::Bias) has one entry per
/// head, its mask positions are query rows. Errors: a zero dimension, `heads` not dividing
/// `embed` ([`Error::HeadsMismatch`]), a tensor or weight whose length does not match
/// `shape`, scratch shorter than [`mha_scratch_len`], an invalid scale, mask or bias. On
/// `Err`, `out` is untouched.
///
/// ```
/// use microattn::attention::SdpaParams;
/// use microattn::mask::{Mask, MaskTerm};
/// use microattn::mha::{mha, mha_scratch_len, MhaShape, MhaWeights};
///
/// const SHAPE: MhaShape = MhaShape::new(3, 3, 4, 2);
/// // Identity projections, zero biases: each head attends with its own 2 features.
/// let mut eye = [0.0f32; 16];
/// for i in 0..4 { eye[i * 5] = 1.0; }
/// let in_w: Vec<f32> = [eye; 3].concat();
/// let weights = MhaWeights {
///     in_proj_weight: &in_w,
///     in_proj_bias: None,
///     out_proj_weight: &eye,
///     out_proj_bias: None,
/// };
/// let x = [1.0f32, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.5, 0.5, 0.5, 0.5];
/// let causal = [MaskTerm::Causal];
/// let params = SdpaParams { mask: Mask::new(&causal), ..Default::default() };
/// let mut out = [0.0f32; 12];
/// let mut scratch = [0.0f32; mha_scratch_len(3, 3, 4)];
/// mha(&x, &x, &x, &weights, &mut out, SHAPE, &params, &mut scratch)?;
/// assert_eq!(out[..4], x[..4]); // the first token sees only itself
/// # Ok::<(), microattn::Error>(())
/// ```
#[allow(clippy::too_many_arguments)]
pub fn mha(
    query: &[f32],
    key: &[f32],
    value: &[f32],
    weights: &MhaWeights<'_, f32>,
    out: &mut [f32],
    shape: MhaShape,
    params: &SdpaParams<'_>,
    scratch: &mut [f32],
) -> Result<(), Error> {
    let buffers = split_scratch(scratch, shape)?;
    let concat = attend_heads(
        query,
        key,
        value,
        weights,
        out.len(),
        shape,
        params,
        buffers,
    )?;
    linear(
        concat,
        weights.out_proj_weight,
        weights.out_proj_bias,
        out,
        LinearShape::new(shape.lq, shape.embed, shape.embed),
    )
}

/// Multi-head attention with inputs, weights and output stored as `E` (`f16`, `bf16` or
/// `f32`) and f32 arithmetic: projections accumulate in f32 into the f32 `scratch`, attention
/// runs in f32, and only the final output is rounded to `E`. Same errors as [`mha`].
///
/// ```
/// use microattn::attention::SdpaParams;
/// use microattn::f16;
/// use microattn::mha::{mha_typed, mha_scratch_len, MhaShape, MhaWeights};
///
/// const SHAPE: MhaShape = MhaShape::new(1, 2, 2, 1);
/// let h = |v: &[f32]| v.iter().map(|&x| f16::from_f32(x)).collect::<Vec<_>>();
/// let in_w = h(&[1., 0., 0., 1., 1., 0., 0., 1., 1., 0., 0., 1.]); // Wq = Wk = Wv = I
/// let out_w = h(&[1., 0., 0., 1.]);
/// let out_b = h(&[0.5, 0.5]);
/// let weights = MhaWeights {
///     in_proj_weight: &in_w,
///     in_proj_bias: None,
///     out_proj_weight: &out_w,
///     out_proj_bias: Some(&out_b),
/// };
/// let (q, kv) = (h(&[0.0, 0.0]), h(&[2.0, 0.0, 0.0, 4.0]));
/// let mut out = [f16::ZERO; 2];
/// let mut scratch = [0.0f32; mha_scratch_len(1, 2, 2)];
/// mha_typed(&q, &kv, &kv, &weights, &mut out, SHAPE, &SdpaParams::default(), &mut scratch)?;
/// // A zero query weighs both keys equally: mean of the values plus the bias.
/// assert_eq!([out[0].to_f32(), out[1].to_f32()], [1.5, 2.5]);
/// # Ok::<(), microattn::Error>(())
/// ```
#[allow(clippy::too_many_arguments)]
pub fn mha_typed<E: Element>(
    query: &[E],
    key: &[E],
    value: &[E],
    weights: &MhaWeights<'_, E>,
    out: &mut [E],
    shape: MhaShape,
    params: &SdpaParams<'_>,
    scratch: &mut [f32],
) -> Result<(), Error> {
    let buffers = split_scratch(scratch, shape)?;
    let concat = attend_heads(
        query,
        key,
        value,
        weights,
        out.len(),
        shape,
        params,
        buffers,
    )?;
    linear_mixed(
        concat,
        weights.out_proj_weight,
        weights.out_proj_bias,
        out,
        LinearShape::new(shape.lq, shape.embed, shape.embed),
    )
}

/// The f32 scratch areas of one call, each exactly sized.
struct Buffers<'s> {
    /// Projected queries `[heads, lq, hd]`, then the concatenated heads `[lq, E]`.
    q: &'s mut [f32],
    /// Projected keys `[heads, lk, hd]`.
    k: &'s mut [f32],
    /// Projected values `[heads, lk, hd]`.
    v: &'s mut [f32],
    /// Attention output `[heads, lq, hd]`.
    attn: &'s mut [f32],
}

/// Cuts `scratch` into the four areas, or reports why it cannot.
fn split_scratch(scratch: &mut [f32], shape: MhaShape) -> Result<Buffers<'_>, Error> {
    shape.head_dim()?;
    let q_len = product(&[shape.lq, shape.embed])?;
    let kv_len = product(&[shape.lk, shape.embed])?;
    let needed = mha_scratch_len(shape.lq, shape.lk, shape.embed);
    let found = scratch.len();
    // `needed` saturates, so a shape too large for memory fails here, not in the split.
    if found < needed {
        return Err(Error::ScratchTooSmall { needed, found });
    }
    // `needed` >= 2 q_len + 2 kv_len; the `min`s only let the compiler see that the splits
    // cannot fail (no panic path).
    let (q, rest) = scratch.split_at_mut(q_len.min(found));
    let (k, rest) = rest.split_at_mut(kv_len.min(rest.len()));
    let (v, rest) = rest.split_at_mut(kv_len.min(rest.len()));
    let attn_len = q_len.min(rest.len());
    let (attn, _) = rest.split_at_mut(attn_len);
    Ok(Buffers { q, k, v, attn })
}

/// Validates everything, projects `Q`, `K`, `V` head by head, runs attention over all heads
/// and concatenates the heads. Returns the concatenation `[lq, E]` for the output projection.
#[allow(clippy::too_many_arguments)]
fn attend_heads<'s, E: Element>(
    query: &[E],
    key: &[E],
    value: &[E],
    weights: &MhaWeights<'_, E>,
    out_len: usize,
    shape: MhaShape,
    params: &SdpaParams<'_>,
    buffers: Buffers<'s>,
) -> Result<&'s [f32], Error> {
    let hd = shape.head_dim()?;
    let e = shape.embed;
    let q_len = product(&[shape.lq, e])?;
    check_len(query, q_len)?;
    check_len(key, product(&[shape.lk, e])?)?;
    check_len(value, product(&[shape.lk, e])?)?;
    check_len(weights.in_proj_weight, product(&[3, e, e])?)?;
    if let Some(b) = weights.in_proj_bias {
        check_len(b, product(&[3, e])?)?;
    }
    check_len(weights.out_proj_weight, product(&[e, e])?)?;
    if let Some(b) = weights.out_proj_bias {
        check_len(b, e)?;
    }
    if out_len != q_len {
        return Err(Error::LengthMismatch {
            expected: q_len,
            found: out_len,
        });
    }
    let attention = shape.attention(hd);
    // Bad parameters fail before any projection work.
    params.validate(&attention)?;

    let Buffers { q, k, v, attn } = buffers;
    let ee = e * e;
    // Lengths were checked above; `min` and `get` only spare the compiler's panic paths.
    let w = weights.in_proj_weight;
    let (wq, rest) = w.split_at(ee.min(w.len()));
    let (wk, wv) = rest.split_at(ee.min(rest.len()));
    let bias = |part: usize| {
        weights
            .in_proj_bias
            .and_then(|b| b.get(part * e..)?.get(..e))
    };
    project_heads(query, wq, bias(0), q, shape.lq, e, hd)?;
    project_heads(key, wk, bias(1), k, shape.lk, e, hd)?;
    project_heads(value, wv, bias(2), v, shape.lk, e, hd)?;

    sdpa(q, k, v, attn, attention, params)?;

    // Concatenate heads into the now free Q area: row i is [head 0 | head 1 | ...].
    // (`max(1)`, `get` and `next` rather than `zip` of chunk iterators, which divides by
    // the chunk sizes, only let the compiler see there is no panic path.)
    for (h, attn_h) in attn.chunks_exact((shape.lq * hd).max(1)).enumerate() {
        let mut rows = q.chunks_exact_mut(e.max(1));
        let mut head_rows = attn_h.chunks_exact(hd.max(1));
        while let (Some(row), Some(head_row)) = (rows.next(), head_rows.next()) {
            let slot = row.get_mut(h * hd..).unwrap_or_default();
            for (dst, &src) in slot.iter_mut().zip(head_row) {
                *dst = src;
            }
        }
    }
    Ok(q)
}

/// `x [rows, E]` through one projection `W [E, E]`, `b [E]`, written head-major
/// `[heads, rows, hd]`: head `h` is the dense layer with the `hd` rows of `W` that produce its
/// features, so each head's block is contiguous for `sdpa`.
fn project_heads<E: Element>(
    x: &[E],
    w: &[E],
    b: Option<&[E]>,
    out: &mut [f32],
    rows: usize,
    e: usize,
    hd: usize,
) -> Result<(), Error> {
    let head_shape = LinearShape::new(rows, e, hd);
    // Shapes were validated; `max(1)` and `get` only spare the compiler's panic paths.
    let w_heads = w.chunks_exact((hd * e).max(1));
    let out_heads = out.chunks_exact_mut((rows * hd).max(1));
    for (h, (w_h, out_h)) in w_heads.zip(out_heads).enumerate() {
        let b_h = b.and_then(|b| b.get(h * hd..)?.get(..hd));
        linear_typed(x, w_h, b_h, out_h, head_shape)?;
    }
    Ok(())
}

/// Weights of one `nn.MultiheadAttention` with `EMB` features and `H` heads, for
/// [`mha_fixed`]. The arrays have PyTorch's layout (`in_proj_weight` `[3][EMB][EMB]` is
/// `[3 * EMB, EMB]` in memory). `H` lives in the type because a model's weights come with
/// its head count, and so that [`mha_fixed`] infers it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MhaWeightsFixed<'a, const EMB: usize, const H: usize> {
    /// `in_proj_weight`: `Wq`, `Wk`, `Wv`.
    pub in_proj_weight: &'a [[[f32; EMB]; EMB]; 3],
    /// `in_proj_bias`: `bq`, `bk`, `bv`.
    pub in_proj_bias: Option<&'a [[f32; EMB]; 3]>,
    /// `out_proj.weight`.
    pub out_proj_weight: &'a [[f32; EMB]; EMB],
    /// `out_proj.bias`.
    pub out_proj_bias: Option<&'a [f32; EMB]>,
}

impl<'a, const EMB: usize, const H: usize> MhaWeightsFixed<'a, EMB, H> {
    /// The same weights as slices, for [`mha`].
    pub fn as_slices(&self) -> MhaWeights<'a, f32> {
        MhaWeights {
            in_proj_weight: self.in_proj_weight.as_flattened().as_flattened(),
            in_proj_bias: self.in_proj_bias.map(|b| b.as_flattened()),
            out_proj_weight: self.out_proj_weight.as_flattened(),
            out_proj_bias: self.out_proj_bias.map(|b| &b[..]),
        }
    }
}

/// Scratch for [`mha_fixed`], sized at compile time: `mha_scratch_len(LQ, LK, EMB)` f32
/// (`2 * (LQ + LK) * EMB * 4` bytes), suitable for a `static`.
#[derive(Debug, Clone, PartialEq)]
pub struct MhaScratch<const LQ: usize, const LK: usize, const EMB: usize> {
    q: [[f32; EMB]; LQ],
    k: [[f32; EMB]; LK],
    v: [[f32; EMB]; LK],
    attn: [[f32; EMB]; LQ],
}

impl<const LQ: usize, const LK: usize, const EMB: usize> MhaScratch<LQ, LK, EMB> {
    /// Zeroed scratch (a `const fn`, so it can initialize a `static`).
    pub const fn new() -> Self {
        MhaScratch {
            q: [[0.0; EMB]; LQ],
            k: [[0.0; EMB]; LK],
            v: [[0.0; EMB]; LK],
            attn: [[0.0; EMB]; LQ],
        }
    }
}

impl<const LQ: usize, const LK: usize, const EMB: usize> Default for MhaScratch<LQ, LK, EMB> {
    fn default() -> Self {
        Self::new()
    }
}

/// Fixed-size f32 multi-head attention: `LQ` queries over `LK` keys/values of `EMB`
/// features in `H` heads. Shapes, weights and scratch are arrays, so a wrong shape does not
/// compile, and neither does an `H` that is zero or does not divide `EMB`. Errors only for a
/// zero `LQ`, `LK` or `EMB` and for parameters (scale, mask, bias).
///
/// ```
/// use microattn::attention::SdpaParams;
/// use microattn::mha::{mha_fixed, MhaScratch, MhaWeightsFixed};
///
/// let (w, b) = ([[[0.1f32; 8]; 8]; 3], [[0.0f32; 8]; 3]);
/// let (wo, bo) = ([[0.2f32; 8]; 8], [1.0f32; 8]);
/// let weights = MhaWeightsFixed::<8, 2> {
///     in_proj_weight: &w,
///     in_proj_bias: Some(&b),
///     out_proj_weight: &wo,
///     out_proj_bias: Some(&bo),
/// };
/// let (tgt, memory) = ([[1.0f32; 8]; 3], [[0.5f32; 8]; 5]);
/// let mut out = [[0.0f32; 8]; 3];
/// let mut scratch = MhaScratch::new();
/// mha_fixed(&tgt, &memory, &memory, &weights, &mut out, &SdpaParams::default(), &mut scratch)?;
/// // Every value row projects to 0.4 per feature, so out = 8 * 0.2 * 0.4 + 1.
/// assert!((out[2][7] - 1.64).abs() < 1e-5);
/// # Ok::<(), microattn::Error>(())
/// ```
///
/// Heads that do not divide the embedding are rejected at compile time:
///
/// ```compile_fail
/// # use microattn::attention::SdpaParams;
/// # use microattn::mha::{mha_fixed, MhaScratch, MhaWeightsFixed};
/// let (w, wo) = ([[[0.0f32; 8]; 8]; 3], [[0.0f32; 8]; 8]);
/// let weights = MhaWeightsFixed::<8, 3> {
///     in_proj_weight: &w, in_proj_bias: None, out_proj_weight: &wo, out_proj_bias: None,
/// };
/// let x = [[0.0f32; 8]; 2];
/// let mut out = [[0.0f32; 8]; 2];
/// let mut scratch = MhaScratch::new();
/// mha_fixed(&x, &x, &x, &weights, &mut out, &SdpaParams::default(), &mut scratch).unwrap();
/// ```
pub fn mha_fixed<const LQ: usize, const LK: usize, const EMB: usize, const H: usize>(
    query: &[[f32; EMB]; LQ],
    key: &[[f32; EMB]; LK],
    value: &[[f32; EMB]; LK],
    weights: &MhaWeightsFixed<'_, EMB, H>,
    out: &mut [[f32; EMB]; LQ],
    params: &SdpaParams<'_>,
    scratch: &mut MhaScratch<LQ, LK, EMB>,
) -> Result<(), Error> {
    const { assert!(H > 0 && EMB % H == 0, "H must be positive and divide EMB") };
    let shape = MhaShape::new(LQ, LK, EMB, H);
    let weights = weights.as_slices();
    let buffers = Buffers {
        q: scratch.q.as_flattened_mut(),
        k: scratch.k.as_flattened_mut(),
        v: scratch.v.as_flattened_mut(),
        attn: scratch.attn.as_flattened_mut(),
    };
    let out = out.as_flattened_mut();
    let concat = attend_heads(
        query.as_flattened(),
        key.as_flattened(),
        value.as_flattened(),
        &weights,
        out.len(),
        shape,
        params,
        buffers,
    )?;
    linear(
        concat,
        weights.out_proj_weight,
        weights.out_proj_bias,
        out,
        LinearShape::new(LQ, EMB, EMB),
    )
}
