//! Int8 attention in two steps, as the library does it: **prepare** (float, once: scales to
//! integer multipliers, biases to integer logit offsets) and **run** (integers only, so a
//! Cortex-M0 without FPU links no soft-float routine for it).

use crate::buffers::{disjoint, input, output, Region};
use crate::params::{
    microattn_bias_t, microattn_mask_t, microattn_sdpa_params_t, microattn_shape_t,
    params_or_default, score, score_kind, with_mask, MICROATTN_BIAS_ALIBI, MICROATTN_BIAS_NONE,
    MICROATTN_BIAS_T5, MICROATTN_SCORE_COSINE, MICROATTN_SCORE_DOT, MICROATTN_SCORE_NEG_L1,
    MICROATTN_SCORE_NEG_SQ_L2,
};
use crate::quant::microattn_fixed_multiplier_t;
use crate::status::{
    microattn_status_t, status, Fail, MICROATTN_ERR_INVALID_ARGUMENT, MICROATTN_ERR_INVALID_BIAS,
    MICROATTN_ERR_NULL_POINTER,
};
use microattn::attention::int8::{
    int8_sdpa, int8_sdpa_packed_scratch_len, int8_sdpa_scratch_len, Int8Bias, Int8Logits,
    Int8Scales, Int8SdpaParams,
};
use microattn::quant::FixedMultiplier;

/// Per-tensor symmetric quantization scales of an int8 attention call: `x ~= scale * x_int8`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct microattn_s8_scales_t {
    /// Scale of the queries.
    pub q: f32,
    /// Scale of the keys.
    pub k: f32,
    /// Scale of the values.
    pub v: f32,
    /// Scale of the output. `out = v` never saturates (outputs are convex combinations of
    /// value rows); a smaller, calibrated scale gives more resolution.
    pub out: f32,
}

/// An int8 position bias in the integer logit format (base 2, 20 fractional bits), as
/// `microattn_s8_prepare` writes it. All zero is no bias.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct microattn_s8_bias_t {
    /// One of `MICROATTN_BIAS_*`.
    pub kind: u32,
    /// ALIBI: per-head slopes; T5: the `heads * t5_num_buckets` table (integer logit units).
    pub values: *const i32,
    /// Entries of `values`.
    pub values_len: usize,
    /// T5: nonzero when keys after the query get their own buckets.
    pub t5_bidirectional: u32,
    /// T5: buckets per head.
    pub t5_num_buckets: usize,
    /// T5: smallest distance of each logarithmic bucket, sorted.
    pub t5_thresholds: *const u32,
    /// Entries of `t5_thresholds`.
    pub t5_thresholds_len: usize,
}

/// Prepared int8 attention parameters: integers only. `microattn_s8_prepare` fills them
/// from float scales; firmware without an FPU can store the prepared struct (e.g. generated
/// on the host) and call `microattn_sdpa_s8` with it directly.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct microattn_s8_params_t {
    /// One of `MICROATTN_SCORE_*`.
    pub score: u32,
    /// DOT, COSINE, NEG_L1: the logit multiplier; NEG_SQ_L2: the `q.k` multiplier.
    pub logit: microattn_fixed_multiplier_t,
    /// NEG_SQ_L2: the multiplier of the key's squared norm (unused otherwise).
    pub key: microattn_fixed_multiplier_t,
    /// NEG_L1: the query weight, Q15 in `[0, 32768]` (unused otherwise).
    pub q_weight: i32,
    /// NEG_L1: the key weight, Q15 in `[0, 32768]` (unused otherwise).
    pub k_weight: i32,
    /// Output requantization multiplier, `v_scale / out_scale`.
    pub out: microattn_fixed_multiplier_t,
    /// Allowed keys per query row and the query position offset (its arrays are borrowed:
    /// they must stay valid while the params are used).
    pub mask: microattn_mask_t,
    /// Position bias in integer form (borrows the storage given to `microattn_s8_prepare`).
    pub bias: microattn_s8_bias_t,
}

fn fixed(m: FixedMultiplier) -> microattn_fixed_multiplier_t {
    microattn_fixed_multiplier_t {
        multiplier: m.multiplier(),
        shift: m.shift(),
    }
}

fn unfixed(m: microattn_fixed_multiplier_t) -> Result<FixedMultiplier, Fail> {
    Ok(FixedMultiplier::from_raw(m.multiplier, m.shift)?)
}

/// Reads a C bias pointer (NULL: no bias).
///
/// # Safety
/// `bias` is NULL or valid, and so are the arrays it points to.
unsafe fn c_bias<'a>(
    bias: *const microattn_bias_t,
) -> Result<microattn::attention::Bias<'a>, Fail> {
    if bias.is_null() {
        return Ok(microattn::attention::Bias::None);
    }
    if bias as usize % core::mem::align_of::<microattn_bias_t>() != 0 {
        return Err(Fail(MICROATTN_ERR_INVALID_ARGUMENT));
    }
    // SAFETY: the caller's contract.
    unsafe { crate::params::bias(&*bias) }
}

/// `int32_t` elements of bias storage `microattn_s8_prepare` needs for `bias`: one per ALiBi
/// slope or T5 table entry; 0 for no bias, a NULL pointer or an unknown kind.
///
/// # Safety
/// `bias` is NULL or valid.
#[no_mangle]
pub unsafe extern "C" fn microattn_s8_bias_storage_len(bias: *const microattn_bias_t) -> usize {
    // SAFETY: the caller's contract.
    match unsafe { c_bias(bias) } {
        Ok(b) => Int8Bias::storage_len(&b),
        Err(_) => 0,
    }
}

/// `uint32_t` elements of threshold storage `microattn_s8_prepare` needs for `bias`: the
/// logarithmic buckets of a T5 bias; 0 for other biases.
///
/// # Safety
/// `bias` is NULL or valid.
#[no_mangle]
pub unsafe extern "C" fn microattn_s8_t5_threshold_count(bias: *const microattn_bias_t) -> usize {
    // SAFETY: the caller's contract.
    match unsafe { c_bias(bias) } {
        Ok(b) => Int8Bias::t5_threshold_count(&b),
        Err(_) => 0,
    }
}

/// Prepares int8 attention (uses float, once): turns quantization scales, the logit scale
/// and an f32 bias into the integers `microattn_sdpa_s8` runs on.
///
/// @param[in]  scales             quantization scales of q, k, v and the output
/// @param[in]  d                  query/key feature size (for the default scale `1/sqrt(d)`)
/// @param[in]  heads              query heads (the bias is checked against them)
/// @param[in]  params             score, scale, mask and f32 bias; NULL for the defaults.
///                                The mask is copied by pointer: its term arrays must
///                                outlive `prepared`.
/// @param[out] bias_storage       `microattn_s8_bias_storage_len(&params->bias)` int32s,
///                                referenced by `prepared` afterwards (may be NULL when 0)
/// @param[out] thresholds         `microattn_s8_t5_threshold_count(&params->bias)` uint32s,
///                                referenced by `prepared` afterwards (may be NULL when 0)
/// @param[out] prepared           the integer parameters
///
/// @return `MICROATTN_OK`, `MICROATTN_ERR_INVALID_SCALE` (a scale not finite and positive,
///         or multipliers out of range), `_INVALID_BIAS`, `_SCRATCH_TOO_SMALL` (short
///         storage), `_NULL_POINTER`, `_INVALID_ARGUMENT` (unknown score),
///         `_BUFFER_OVERLAP`.
///
/// # Safety
/// Pointers are valid for their lengths; `params` is NULL or valid.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn microattn_s8_prepare(
    scales: *const microattn_s8_scales_t,
    d: usize,
    heads: usize,
    params: *const microattn_sdpa_params_t,
    bias_storage: *mut i32,
    bias_storage_len: usize,
    thresholds: *mut u32,
    thresholds_len: usize,
    prepared: *mut microattn_s8_params_t,
) -> microattn_status_t {
    status((|| {
        if scales.is_null() || prepared.is_null() {
            return Err(Fail(MICROATTN_ERR_NULL_POINTER));
        }
        let aligned = scales as usize % core::mem::align_of::<microattn_s8_scales_t>() == 0
            && prepared as usize % core::mem::align_of::<microattn_s8_params_t>() == 0;
        if !aligned {
            return Err(Fail(MICROATTN_ERR_INVALID_ARGUMENT));
        }
        // SAFETY: non-null, aligned, valid by the caller's contract (both are copied).
        let (s, p) = unsafe { (*scales, params_or_default(params)?) };
        disjoint(
            &[
                Region::new(bias_storage, bias_storage_len),
                Region::new(thresholds, thresholds_len),
                Region::new(prepared, 1),
            ],
            &[Region::new(p.bias.values, p.bias.values_len)],
        )?;
        let score = score(p.score)?;
        // SAFETY: the caller's contract.
        let (f32_bias, storage, thresholds) = unsafe {
            (
                crate::params::bias(&p.bias)?,
                output(bias_storage, bias_storage_len)?,
                output(thresholds, thresholds_len)?,
            )
        };
        // The mask is only checked here; it is converted again when the kernel runs.
        // SAFETY: the caller's contract.
        unsafe { with_mask(&p.mask, |m| Ok(m.validate()?)) }?;
        let scale = crate::params::scale(&p);
        let bias = Int8Bias::from_bias(&f32_bias, heads, storage, thresholds)?;
        let scales = Int8Scales {
            q: s.q,
            k: s.k,
            v: s.v,
            out: s.out,
        };
        let prep = Int8SdpaParams::new(scales, d, score, scale, microattn::mask::Mask::NONE, bias)?;
        let mut c = microattn_s8_params_t {
            score: score_kind(prep.logits.score()),
            logit: fixed(FixedMultiplier::ONE),
            key: fixed(FixedMultiplier::ONE),
            q_weight: 0,
            k_weight: 0,
            out: fixed(prep.out),
            mask: p.mask,
            bias: s8_bias(&prep.bias),
        };
        match prep.logits {
            Int8Logits::Dot { logit } | Int8Logits::Cosine { logit } => c.logit = fixed(logit),
            Int8Logits::NegSqL2 { cross, key } => {
                c.logit = fixed(cross);
                c.key = fixed(key);
            }
            Int8Logits::NegL1 {
                q_weight,
                k_weight,
                logit,
            } => {
                c.logit = fixed(logit);
                c.q_weight = q_weight;
                c.k_weight = k_weight;
            }
        }
        // SAFETY: non-null, aligned (checked), writable by the caller's contract.
        unsafe { prepared.write(c) };
        Ok(())
    })())
}

/// The C form of a prepared integer bias (pointers into the caller's storage).
fn s8_bias(bias: &Int8Bias<'_>) -> microattn_s8_bias_t {
    let none = microattn_s8_bias_t {
        kind: MICROATTN_BIAS_NONE,
        values: core::ptr::null(),
        values_len: 0,
        t5_bidirectional: 0,
        t5_num_buckets: 0,
        t5_thresholds: core::ptr::null(),
        t5_thresholds_len: 0,
    };
    match *bias {
        Int8Bias::None => none,
        Int8Bias::Alibi { slopes } => microattn_s8_bias_t {
            kind: MICROATTN_BIAS_ALIBI,
            values: slopes.as_ptr(),
            values_len: slopes.len(),
            ..none
        },
        Int8Bias::T5 {
            bidirectional,
            num_buckets,
            table,
            thresholds,
        } => microattn_s8_bias_t {
            kind: MICROATTN_BIAS_T5,
            values: table.as_ptr(),
            values_len: table.len(),
            t5_bidirectional: u32::from(bidirectional),
            t5_num_buckets: num_buckets,
            t5_thresholds: thresholds.as_ptr(),
            t5_thresholds_len: thresholds.len(),
        },
    }
}

/// The library's integer bias from its C form.
///
/// # Safety
/// The bias arrays are valid for `'a`.
unsafe fn int8_bias<'a>(b: &microattn_s8_bias_t) -> Result<Int8Bias<'a>, Fail> {
    Ok(match b.kind {
        MICROATTN_BIAS_NONE => Int8Bias::None,
        MICROATTN_BIAS_ALIBI => Int8Bias::Alibi {
            // SAFETY: the caller's contract.
            slopes: unsafe { input(b.values, b.values_len) }?,
        },
        MICROATTN_BIAS_T5 => Int8Bias::T5 {
            bidirectional: b.t5_bidirectional != 0,
            num_buckets: b.t5_num_buckets,
            // SAFETY: the caller's contract.
            table: unsafe { input(b.values, b.values_len) }?,
            // SAFETY: the caller's contract.
            thresholds: unsafe { input(b.t5_thresholds, b.t5_thresholds_len) }?,
        },
        _ => return Err(Fail(MICROATTN_ERR_INVALID_BIAS)),
    })
}

/// The library's integer logits from their C form.
fn logits(p: &microattn_s8_params_t) -> Result<Int8Logits, Fail> {
    Ok(match p.score {
        MICROATTN_SCORE_DOT => Int8Logits::Dot {
            logit: unfixed(p.logit)?,
        },
        MICROATTN_SCORE_COSINE => Int8Logits::Cosine {
            logit: unfixed(p.logit)?,
        },
        MICROATTN_SCORE_NEG_SQ_L2 => Int8Logits::NegSqL2 {
            cross: unfixed(p.logit)?,
            key: unfixed(p.key)?,
        },
        MICROATTN_SCORE_NEG_L1 => Int8Logits::NegL1 {
            q_weight: p.q_weight,
            k_weight: p.k_weight,
            logit: unfixed(p.logit)?,
        },
        _ => return Err(Fail(MICROATTN_ERR_INVALID_ARGUMENT)),
    })
}

/// Int8 scaled dot-product attention (integer arithmetic only): int8 `q`, `k`, `v`, integer
/// scores, an integer streaming softmax (Q16 weights), requantized to an int8 output. The
/// output bytes are the same on every target.
///
/// @param[in]  q        queries `[heads][lq][d]`
/// @param[in]  k        keys `[kv_heads][lk][d]`
/// @param[in]  v        values `[kv_heads][lk][dv]`
/// @param[out] out      output `[heads][lq][dv]`; rows with no allowed key are 0
/// @param[in]  shape    dimensions (`d <= 65536`, `lk <= 2^23`)
/// @param[in]  params   prepared parameters (`microattn_s8_prepare`), not NULL
/// @param[in,out] scratch  int64 accumulator row,
///                      `scratch_len >= microattn_sdpa_s8_scratch_len(shape)`
///
/// @return `MICROATTN_OK`, or `MICROATTN_ERR_ZERO_DIMENSION`, `_LENGTH_MISMATCH`,
///         `_HEADS_MISMATCH`, `_INVALID_PARAMETER` (`d` or `lk` beyond the limits),
///         `_INVALID_SCALE` (multipliers that could overflow for this `d`), `_INVALID_MASK`,
///         `_INVALID_BIAS`, `_SCRATCH_TOO_SMALL`, `_NULL_POINTER`, `_INVALID_ARGUMENT`,
///         `_BUFFER_OVERLAP`.
///
/// # Safety
/// Each pointer is valid for its length; `params` and the arrays it points to are valid.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn microattn_sdpa_s8(
    q: *const i8,
    q_len: usize,
    k: *const i8,
    k_len: usize,
    v: *const i8,
    v_len: usize,
    out: *mut i8,
    out_len: usize,
    shape: microattn_shape_t,
    params: *const microattn_s8_params_t,
    scratch: *mut i64,
    scratch_len: usize,
) -> microattn_status_t {
    status((|| {
        if params.is_null() {
            return Err(Fail(MICROATTN_ERR_NULL_POINTER));
        }
        if params as usize % core::mem::align_of::<microattn_s8_params_t>() != 0 {
            return Err(Fail(MICROATTN_ERR_INVALID_ARGUMENT));
        }
        disjoint(
            &[Region::new(out, out_len), Region::new(scratch, scratch_len)],
            &[
                Region::new(q, q_len),
                Region::new(k, k_len),
                Region::new(v, v_len),
                Region::new(params, 1),
            ],
        )?;
        // SAFETY: the caller's contract; overlap checked above.
        let (q, k, v, out, scratch, p) = unsafe {
            (
                input(q, q_len)?,
                input(k, k_len)?,
                input(v, v_len)?,
                output(out, out_len)?,
                output(scratch, scratch_len)?,
                *params,
            )
        };
        let logits = logits(&p)?;
        let out_multiplier = unfixed(p.out)?;
        // SAFETY: the caller's contract on the bias arrays.
        let bias = unsafe { int8_bias(&p.bias) }?;
        // SAFETY: the caller's contract on the mask arrays.
        unsafe {
            with_mask(&p.mask, |mask| {
                let params = Int8SdpaParams::from_raw(logits, out_multiplier, mask, bias);
                Ok(int8_sdpa(q, k, v, out, shape.into(), &params, scratch)?)
            })
        }
    })())
}

/// `int64_t` elements of scratch `microattn_sdpa_s8` needs: one accumulator row, `dv`.
#[no_mangle]
pub extern "C" fn microattn_sdpa_s8_scratch_len(shape: microattn_shape_t) -> usize {
    int8_sdpa_scratch_len(shape.into())
}

/// `int64_t` elements of scratch with which `microattn_sdpa_s8` packs each key/value head
/// into 16-bit pairs once per call on the Cortex-M DSP cores (M4, M7, M33; used when a head
/// has two or more query rows and `d`, `dv` are multiples of 4): the accumulator row plus
/// `2 * lk * (d + dv)` bytes. The output bytes are the same with either length.
#[no_mangle]
pub extern "C" fn microattn_sdpa_s8_packed_scratch_len(shape: microattn_shape_t) -> usize {
    int8_sdpa_packed_scratch_len(shape.into())
}
