//! Int8 multi-head attention with int8 weights (`torch.nn.MultiheadAttention` layout):
//! int8 projections with per-output-channel weight scales, the integer-only [`int8_sdpa`] on
//! every head, and an int8 output projection. Integers only.
//!
//! Each stage requantizes to an int8 tensor with its own scale, chosen by the caller
//! (static quantization as TFLite / CMSIS-NN). [`Int8MhaStats`] reports the largest value
//! each stage produced before saturation, in its output steps, so scales can be calibrated
//! on device or on the host by running the kernel.

use super::dense::{dense_rows, Int8Dense};
use super::sdpa::{int8_sdpa, validate_sdpa, Int8SdpaParams};
use crate::attention::AttentionShape;
use crate::error::{check_len, product, Error};
use crate::mha::MhaShape;

/// The prepared layers of an int8 multi-head attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Int8MhaParams<'a> {
    /// Query projection: `query` scale → projected-`Q` scale (`[E, E]`, rows `0..E` of
    /// `in_proj_weight`).
    pub q_proj: Int8Dense<'a>,
    /// Key projection: `key` scale → projected-`K` scale.
    pub k_proj: Int8Dense<'a>,
    /// Value projection: `value` scale → projected-`V` scale.
    pub v_proj: Int8Dense<'a>,
    /// Output projection: attention-output scale → output scale.
    pub out_proj: Int8Dense<'a>,
    /// Attention over the projected heads: scales `Q`, `K`, `V` → attention-output scale,
    /// logit scale (usually `1/sqrt(E / heads)`), mask, bias (one entry per head).
    pub attention: Int8SdpaParams<'a>,
}

/// Largest magnitude each stage produced before saturation, in steps of its output scale
/// (a value above 127 means that scale clipped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Int8MhaStats {
    /// Projected queries.
    pub q: i64,
    /// Projected keys.
    pub k: i64,
    /// Projected values.
    pub v: i64,
    /// Attention output (after the int8 requantization; at most 127).
    pub attention: i64,
    /// Output.
    pub out: i64,
}

/// `i8` elements of scratch [`int8_mha`] needs: `2 · (lq + lk) · embed` (projected `Q`, `K`,
/// `V` and the attention output). Saturates instead of overflowing.
pub const fn int8_mha_scratch_len(lq: usize, lk: usize, embed: usize) -> usize {
    lq.saturating_add(lk)
        .saturating_mul(embed)
        .saturating_mul(2)
}

/// `i64` elements of accumulator scratch [`int8_mha`] needs: one head row.
pub const fn int8_mha_acc_len(embed: usize, heads: usize) -> usize {
    match embed.checked_div(heads) {
        Some(hd) => hd,
        None => 0,
    }
}

/// Int8 multi-head attention: `query` `[lq, E]`, `key`/`value` `[lk, E]`, `out` `[lq, E]`,
/// every stage as described in the module docs. `scratch` holds [`int8_mha_scratch_len`]
/// `i8`s, `acc` [`int8_mha_acc_len`] `i64`s; `stats`, when given, receives the stage peaks.
///
/// Errors: a zero dimension, `heads` not dividing `embed`, lengths that do not match `shape`
/// (tensors, weights, biases, multipliers), short scratch, invalid attention parameters
/// (see [`int8_sdpa`]). All are checked before any work; on `Err`, `out` is untouched.
#[allow(clippy::too_many_arguments)]
pub fn int8_mha(
    query: &[i8],
    key: &[i8],
    value: &[i8],
    params: &Int8MhaParams<'_>,
    out: &mut [i8],
    shape: MhaShape,
    scratch: &mut [i8],
    acc: &mut [i64],
    stats: Option<&mut Int8MhaStats>,
) -> Result<(), Error> {
    let hd = shape.head_dim()?;
    let e = shape.embed;
    let q_len = product(&[shape.lq, e])?;
    let kv_len = product(&[shape.lk, e])?;
    check_len(query, q_len)?;
    check_len(key, kv_len)?;
    check_len(value, kv_len)?;
    check_len(out, q_len)?;
    for layer in [
        &params.q_proj,
        &params.k_proj,
        &params.v_proj,
        &params.out_proj,
    ] {
        layer.validate(e, e)?;
    }
    let needed = int8_mha_scratch_len(shape.lq, shape.lk, e);
    let found = scratch.len();
    if found < needed {
        return Err(Error::ScratchTooSmall { needed, found });
    }
    // `needed` covers the four areas; the checked splits only keep panics out of the code.
    let short = Error::ScratchTooSmall { needed, found };
    let (q, rest) = scratch.split_at_mut_checked(q_len).ok_or(short)?;
    let (k, rest) = rest.split_at_mut_checked(kv_len).ok_or(short)?;
    let (v, rest) = rest.split_at_mut_checked(kv_len).ok_or(short)?;
    let attn = rest.get_mut(..q_len).ok_or(short)?;
    let attention =
        AttentionShape::multi_head(shape.heads, shape.heads, shape.lq, shape.lk, hd, hd);
    validate_sdpa(q, k, v, attn.len(), attention, &params.attention)?;
    let found = acc.len();
    let acc = acc
        .get_mut(..hd)
        .ok_or(Error::ScratchTooSmall { needed: hd, found })?;

    let mut peaks = Int8MhaStats {
        q: project_heads(query, &params.q_proj, q, e, hd),
        k: project_heads(key, &params.k_proj, k, e, hd),
        v: project_heads(value, &params.v_proj, v, e, hd),
        ..Int8MhaStats::default()
    };
    int8_sdpa(q, k, v, attn, attention, &params.attention, acc)?;
    peaks.attention = attn.iter().map(|&x| (x as i64).abs()).max().unwrap_or(0);
    // Concatenate the heads into the free Q area: row i is [head 0 | head 1 | ...]. (Sizes
    // are never 0: `max` only keeps the chunking from asserting it.)
    let (hd, e) = (hd.max(1), e.max(1));
    for (h, attn_h) in attn.chunks_exact((shape.lq * hd).max(1)).enumerate() {
        // Not `zip`: its out-of-line copy keeps a division by the chunk size.
        let mut head_rows = attn_h.chunks_exact(hd);
        for row in q.chunks_exact_mut(e) {
            let (Some(head_row), Some(slot)) =
                (head_rows.next(), row.get_mut(h * hd..(h + 1) * hd))
            else {
                break;
            };
            for (x, &y) in slot.iter_mut().zip(head_row) {
                *x = y;
            }
        }
    }
    peaks.out = dense_rows(q, &params.out_proj, out, e, e);
    if let Some(stats) = stats {
        *stats = peaks;
    }
    Ok(())
}

/// `x [rows, E]` through `layer` written head-major `[heads, rows, hd]`; returns the peak.
fn project_heads(x: &[i8], layer: &Int8Dense<'_>, out: &mut [i8], e: usize, hd: usize) -> i64 {
    let rows = x.len().checked_div(e).unwrap_or(0);
    let mut peak = 0;
    // Never 0 after validation (`max` only keeps the chunking from asserting it).
    for (h, out_h) in out.chunks_exact_mut((rows * hd).max(1)).enumerate() {
        let head = layer.rows(h * hd, hd, e);
        peak = peak.max(dense_rows(x, &head, out_h, e, hd));
    }
    peak
}
