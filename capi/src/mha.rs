//! Multi-head attention with input and output projections (PyTorch `nn.MultiheadAttention`
//! weight layout).

use crate::buffers::{disjoint, input, optional, output, Region};
use crate::params::{microattn_sdpa_params_t, params_or_default, with_sdpa_params};
use crate::status::{
    microattn_status_t, status, Fail, MICROATTN_ERR_INVALID_ARGUMENT, MICROATTN_ERR_NULL_POINTER,
};
use microattn::mha::{mha, mha_scratch_len, MhaShape, MhaWeights};

/// Shape of a multi-head attention call.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct microattn_mha_shape_t {
    /// Query rows (target length).
    pub lq: usize,
    /// Key/value rows (source length; `lq` for self-attention).
    pub lk: usize,
    /// Embedding size `E` of queries, keys, values and output.
    pub embed: usize,
    /// Number of heads; must divide `embed`.
    pub heads: usize,
}

impl From<microattn_mha_shape_t> for MhaShape {
    fn from(s: microattn_mha_shape_t) -> Self {
        MhaShape::new(s.lq, s.lk, s.embed, s.heads)
    }
}

/// The parameters of one `nn.MultiheadAttention`, borrowed, f32. A NULL bias with length 0
/// means no bias (PyTorch's `bias=False`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct microattn_mha_weights_t {
    /// `in_proj_weight`, `[3 * embed][embed]`: the rows of `Wq`, then `Wk`, then `Wv`.
    pub in_proj_weight: *const f32,
    /// Entries of `in_proj_weight`.
    pub in_proj_weight_len: usize,
    /// `in_proj_bias`, `[3 * embed]` (`bq`, `bk`, `bv`), or NULL.
    pub in_proj_bias: *const f32,
    /// Entries of `in_proj_bias`.
    pub in_proj_bias_len: usize,
    /// `out_proj.weight`, `[embed][embed]`.
    pub out_proj_weight: *const f32,
    /// Entries of `out_proj_weight`.
    pub out_proj_weight_len: usize,
    /// `out_proj.bias`, `[embed]`, or NULL.
    pub out_proj_bias: *const f32,
    /// Entries of `out_proj_bias`.
    pub out_proj_bias_len: usize,
}

/// Multi-head attention, f32: `Q = query Wq^T + bq`, `K = key Wk^T + bk`,
/// `V = value Wv^T + bv`, each split into `heads` heads of `embed / heads` features; every head
/// runs scaled dot-product attention (scale `1/sqrt(embed / heads)` unless `params` says
/// otherwise; the mask and bias apply to every head); the heads are concatenated and
/// `out = concat Wo^T + bo`. A query row whose mask allows no key gets `out = bo`.
///
/// @param[in]  query    `[lq][embed]`
/// @param[in]  key      `[lk][embed]` (self-attention: the same pointer as `query`)
/// @param[in]  value    `[lk][embed]`
/// @param[in]  weights  projection weights and biases, not NULL
/// @param[out] out      `[lq][embed]`
/// @param[in]  shape    lengths, embedding size, heads
/// @param[in]  params   score, scale, mask, bias (one ALiBi slope / T5 row per head); NULL
///                      for the defaults
/// @param[in,out] scratch  `scratch_len >= microattn_mha_scratch_len(shape)` floats
///
/// @return `MICROATTN_OK`, or `MICROATTN_ERR_ZERO_DIMENSION`, `_HEADS_MISMATCH` (`heads`
///         does not divide `embed`), `_LENGTH_MISMATCH`, `_SCRATCH_TOO_SMALL`,
///         `_INVALID_SCALE`, `_INVALID_MASK`, `_INVALID_BIAS`, `_SHAPE_OVERFLOW`,
///         `_NULL_POINTER`, `_INVALID_ARGUMENT`, `_BUFFER_OVERLAP`. On error `out` is untouched.
///
/// # Safety
/// Each pointer is valid for its length; `weights` is valid; `params` is NULL or valid.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn microattn_mha_f32(
    query: *const f32,
    query_len: usize,
    key: *const f32,
    key_len: usize,
    value: *const f32,
    value_len: usize,
    weights: *const microattn_mha_weights_t,
    out: *mut f32,
    out_len: usize,
    shape: microattn_mha_shape_t,
    params: *const microattn_sdpa_params_t,
    scratch: *mut f32,
    scratch_len: usize,
) -> microattn_status_t {
    status((|| {
        if weights.is_null() {
            return Err(Fail(MICROATTN_ERR_NULL_POINTER));
        }
        if weights as usize % core::mem::align_of::<microattn_mha_weights_t>() != 0 {
            return Err(Fail(MICROATTN_ERR_INVALID_ARGUMENT));
        }
        // SAFETY: non-null, aligned, valid by the caller's contract (copied).
        let w = unsafe { *weights };
        disjoint(
            &[Region::new(out, out_len), Region::new(scratch, scratch_len)],
            &[
                Region::new(query, query_len),
                Region::new(key, key_len),
                Region::new(value, value_len),
                Region::new(w.in_proj_weight, w.in_proj_weight_len),
                Region::new(w.in_proj_bias, w.in_proj_bias_len),
                Region::new(w.out_proj_weight, w.out_proj_weight_len),
                Region::new(w.out_proj_bias, w.out_proj_bias_len),
            ],
        )?;
        // SAFETY: the caller's contract; overlap checked above.
        let (query, key, value, out, scratch, p) = unsafe {
            (
                input(query, query_len)?,
                input(key, key_len)?,
                input(value, value_len)?,
                output(out, out_len)?,
                output(scratch, scratch_len)?,
                params_or_default(params)?,
            )
        };
        // SAFETY: the caller's contract.
        let weights = unsafe {
            MhaWeights {
                in_proj_weight: input(w.in_proj_weight, w.in_proj_weight_len)?,
                in_proj_bias: optional(w.in_proj_bias, w.in_proj_bias_len)?,
                out_proj_weight: input(w.out_proj_weight, w.out_proj_weight_len)?,
                out_proj_bias: optional(w.out_proj_bias, w.out_proj_bias_len)?,
            }
        };
        // SAFETY: the caller's contract on the arrays `params` points to.
        unsafe {
            with_sdpa_params(&p, |p| {
                Ok(mha(
                    query,
                    key,
                    value,
                    &weights,
                    out,
                    shape.into(),
                    p,
                    scratch,
                )?)
            })
        }
    })())
}

/// f32 elements of scratch `microattn_mha_f32` needs: `2 * (lq + lk) * embed` (projected
/// Q, K, V and the attention output); saturates at `SIZE_MAX`.
#[no_mangle]
pub extern "C" fn microattn_mha_scratch_len(shape: microattn_mha_shape_t) -> usize {
    mha_scratch_len(shape.lq, shape.lk, shape.embed)
}
