//! Scaled dot-product attention (f32 and f16 storage) and the decode step against a KV cache.

use crate::buffers::{disjoint, input, output, Region};
use crate::params::{
    microattn_sdpa_params_t, microattn_shape_t, params_or_default, with_sdpa_params,
};
use crate::status::{microattn_status_t, status, Fail, MICROATTN_ERR_INVALID_PARAMETER};
use microattn::attention::{sdpa, sdpa_scratch_len, sdpa_typed, AttentionShape, Bias, SdpaParams};
use microattn::{f16, Element, Error};

/// Scaled dot-product attention, f32.
///
/// Computes `out = softmax(score(q, k) + bias, masked) . v` for every query row of every
/// head, with a streaming softmax: no score matrix, no scratch. Rows whose mask allows no key
/// are zero.
///
/// @param[in]  q        queries `[heads][lq][d]`, `q_len` elements
/// @param[in]  k        keys `[kv_heads][lk][d]`, `k_len` elements
/// @param[in]  v        values `[kv_heads][lk][dv]`, `v_len` elements
/// @param[out] out      output `[heads][lq][dv]`, `out_len` elements; must not overlap
///                      any input
/// @param[in]  shape    dimensions, see `microattn_shape_t`
/// @param[in]  params   score, scale, mask and bias; NULL for plain dot-product attention
///
/// @return `MICROATTN_OK`, or `MICROATTN_ERR_ZERO_DIMENSION`, `_LENGTH_MISMATCH`,
///         `_HEADS_MISMATCH`, `_INVALID_SCALE`, `_INVALID_MASK`, `_INVALID_BIAS`,
///         `_INVALID_PARAMETER`, `_SHAPE_OVERFLOW`, `_NULL_POINTER`, `_INVALID_ARGUMENT`,
///         `_BUFFER_OVERLAP`.
///
/// Scratch: none (`microattn_sdpa_f32_scratch_len` returns 0).
///
/// # Safety
/// Each pointer is valid for its length (see the conventions at the top); `params` is NULL or valid.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn microattn_sdpa_f32(
    q: *const f32,
    q_len: usize,
    k: *const f32,
    k_len: usize,
    v: *const f32,
    v_len: usize,
    out: *mut f32,
    out_len: usize,
    shape: microattn_shape_t,
    params: *const microattn_sdpa_params_t,
) -> microattn_status_t {
    status((|| {
        disjoint(
            &[Region::new(out, out_len)],
            &[
                Region::new(q, q_len),
                Region::new(k, k_len),
                Region::new(v, v_len),
            ],
        )?;
        // SAFETY: the caller's contract; overlap checked above.
        let (q, k, v, out, p) = unsafe {
            (
                input(q, q_len)?,
                input(k, k_len)?,
                input(v, v_len)?,
                output(out, out_len)?,
                params_or_default(params)?,
            )
        };
        // SAFETY: the caller's contract on the arrays `params` points to.
        unsafe { with_sdpa_params(&p, |p| Ok(sdpa(q, k, v, out, shape.into(), p)?)) }
    })())
}

/// Scratch `microattn_sdpa_f32` needs: always 0 (listed so that every kernel has a query).
#[no_mangle]
pub extern "C" fn microattn_sdpa_f32_scratch_len(shape: microattn_shape_t) -> usize {
    let _ = shape;
    0
}

/// Scaled dot-product attention with IEEE binary16 (`uint16_t` bit patterns) storage and f32
/// arithmetic; the output is rounded to f16 once per element.
///
/// @param[in]  q            queries `[heads][lq][d]` as f16 bits
/// @param[in]  k            keys `[kv_heads][lk][d]` as f16 bits
/// @param[in]  v            values `[kv_heads][lk][dv]` as f16 bits
/// @param[out] out          output `[heads][lq][dv]` as f16 bits
/// @param[in]  shape        dimensions
/// @param[in]  params       score, scale, mask and bias; NULL for the defaults
/// @param[in,out] scratch   f32 working row, `scratch_len >= microattn_sdpa_f16_scratch_len(shape)`
///
/// @return as `microattn_sdpa_f32`, plus `MICROATTN_ERR_SCRATCH_TOO_SMALL`.
///
/// # Safety
/// Each pointer is valid for its length; `params` is NULL or valid.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn microattn_sdpa_f16(
    q: *const u16,
    q_len: usize,
    k: *const u16,
    k_len: usize,
    v: *const u16,
    v_len: usize,
    out: *mut u16,
    out_len: usize,
    shape: microattn_shape_t,
    params: *const microattn_sdpa_params_t,
    scratch: *mut f32,
    scratch_len: usize,
) -> microattn_status_t {
    status((|| {
        disjoint(
            &[Region::new(out, out_len), Region::new(scratch, scratch_len)],
            &[
                Region::new(q, q_len),
                Region::new(k, k_len),
                Region::new(v, v_len),
            ],
        )?;
        // SAFETY: `f16` is `repr(transparent)` over `u16`; the caller's contract; overlap
        // checked above.
        let (q, k, v, out, scratch, p) = unsafe {
            (
                input(q.cast::<f16>(), q_len)?,
                input(k.cast::<f16>(), k_len)?,
                input(v.cast::<f16>(), v_len)?,
                output(out.cast::<f16>(), out_len)?,
                output(scratch, scratch_len)?,
                params_or_default(params)?,
            )
        };
        // SAFETY: the caller's contract on the arrays `params` points to.
        unsafe {
            with_sdpa_params(&p, |p| {
                Ok(sdpa_typed(q, k, v, out, shape.into(), p, scratch)?)
            })
        }
    })())
}

/// f32 elements of scratch `microattn_sdpa_f16` needs: one output row, `dv`.
#[no_mangle]
pub extern "C" fn microattn_sdpa_f16_scratch_len(shape: microattn_shape_t) -> usize {
    sdpa_scratch_len(shape.into())
}

/// Shape of a decode step: one new query token per head against a KV cache that holds
/// `cache_len` tokens in rows of capacity `cache_capacity`. The cache is
/// `[kv_heads][cache_capacity][d]` (keys) and `[kv_heads][cache_capacity][dv]` (values), of
/// which the first `cache_len` rows of each head are filled.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct microattn_decode_shape_t {
    /// Query heads.
    pub heads: usize,
    /// Key/value heads in the cache (GQA/MQA when smaller than `heads`).
    pub kv_heads: usize,
    /// Query/key feature size.
    pub d: usize,
    /// Value feature size.
    pub dv: usize,
    /// Filled rows per head (the keys attended to), from 1 to `cache_capacity`.
    pub cache_len: usize,
    /// Allocated rows per head: the stride between heads in the cache.
    pub cache_capacity: usize,
}

/// Checked element counts `(q/out per d or dv, k cache, v cache)` and the per-head shape.
struct DecodeLayout {
    group: usize,
    q_len: usize,
    k_len: usize,
    v_len: usize,
    out_len: usize,
}

fn decode_layout(s: &microattn_decode_shape_t) -> Result<DecodeLayout, Fail> {
    let dims = [
        s.heads,
        s.kv_heads,
        s.d,
        s.dv,
        s.cache_len,
        s.cache_capacity,
    ];
    if dims.contains(&0) {
        return Err(Error::ZeroDimension.into());
    }
    if s.heads % s.kv_heads != 0 {
        return Err(Error::HeadsMismatch.into());
    }
    if s.cache_len > s.cache_capacity {
        return Err(Fail(MICROATTN_ERR_INVALID_PARAMETER));
    }
    let mul = |a: usize, b: usize| a.checked_mul(b).ok_or(Fail::from(Error::ShapeOverflow));
    Ok(DecodeLayout {
        group: s.heads / s.kv_heads,
        q_len: mul(s.heads, s.d)?,
        k_len: mul(mul(s.kv_heads, s.cache_capacity)?, s.d)?,
        v_len: mul(mul(s.kv_heads, s.cache_capacity)?, s.dv)?,
        out_len: mul(s.heads, s.dv)?,
    })
}

fn check_len(found: usize, expected: usize) -> Result<(), Fail> {
    if found == expected {
        Ok(())
    } else {
        Err(Error::LengthMismatch { expected, found }.into())
    }
}

/// The bias restricted to query heads `first..first + count` (their slopes or table rows).
fn bias_heads<'a>(bias: &Bias<'a>, first: usize, count: usize) -> Result<Bias<'a>, Fail> {
    let rows = |table: &'a [f32], width: usize| {
        let start = first.checked_mul(width)?;
        let len = count.checked_mul(width)?;
        table.get(start..start.checked_add(len)?)
    };
    Ok(match *bias {
        Bias::None => Bias::None,
        Bias::Alibi { slopes } => Bias::Alibi {
            slopes: rows(slopes, 1).ok_or(Fail::from(Error::InvalidBias))?,
        },
        Bias::T5 {
            bidirectional,
            num_buckets,
            max_distance,
            table,
        } => Bias::T5 {
            bidirectional,
            num_buckets,
            max_distance,
            table: rows(table, num_buckets).ok_or(Fail::from(Error::InvalidBias))?,
        },
    })
}

/// The first `rows` rows of width `width` of one head's cache.
fn filled<E>(cache: &[E], rows: usize, width: usize) -> Result<&[E], Fail> {
    rows.checked_mul(width)
        .and_then(|n| cache.get(..n))
        .ok_or(Fail::from(Error::ShapeOverflow))
}

/// One decode step for storage type `E`: each KV head's filled cache rows with its group of
/// query heads, through `kernel` (the library's f32 or typed SDPA).
#[allow(clippy::too_many_arguments)]
fn decode_step<E: Element>(
    q: &[E],
    k_cache: &[E],
    v_cache: &[E],
    out: &mut [E],
    s: &microattn_decode_shape_t,
    position: i64,
    params: &SdpaParams<'_>,
    mut kernel: impl FnMut(
        &[E],
        &[E],
        &[E],
        &mut [E],
        AttentionShape,
        &SdpaParams<'_>,
    ) -> Result<(), Error>,
) -> Result<(), Fail> {
    let layout = decode_layout(s)?;
    check_len(q.len(), layout.q_len)?;
    check_len(k_cache.len(), layout.k_len)?;
    check_len(v_cache.len(), layout.v_len)?;
    check_len(out.len(), layout.out_len)?;
    // Validate the whole-head parameters once, so a bad bias reports the same code as SDPA.
    params.mask.validate()?;
    params.bias.validate(s.heads)?;
    params.resolved_scale(s.d)?;
    let group = layout.group;
    let per_head = AttentionShape::multi_head(group, 1, 1, s.cache_len, s.d, s.dv);
    let mask = params.mask.with_signed_offset(position);
    // Plain index arithmetic with `get`, not `chunks_exact`: the sizes are validated above,
    // but the optimizer cannot see that, and this keeps every panic path out of the binary.
    let part = |len: usize, index: usize| -> Result<core::ops::Range<usize>, Fail> {
        let start = index.checked_mul(len);
        let range = start.and_then(|a| Some(a..a.checked_add(len)?));
        range.ok_or(Fail::from(Error::ShapeOverflow))
    };
    for g in 0..s.kv_heads {
        let (q_part, out_part) = (part(group * s.d, g)?, part(group * s.dv, g)?);
        let (k_part, v_part) = (
            part(s.cache_capacity * s.d, g)?,
            part(s.cache_capacity * s.dv, g)?,
        );
        let overflow = || Fail::from(Error::ShapeOverflow);
        let q_g = q.get(q_part).ok_or_else(overflow)?;
        let out_g = out.get_mut(out_part).ok_or_else(overflow)?;
        let k_h = k_cache.get(k_part).ok_or_else(overflow)?;
        let v_h = v_cache.get(v_part).ok_or_else(overflow)?;
        let p = SdpaParams {
            mask,
            bias: bias_heads(&params.bias, g * group, group)?,
            ..*params
        };
        kernel(
            q_g,
            filled(k_h, s.cache_len, s.d)?,
            filled(v_h, s.cache_len, s.dv)?,
            out_g,
            per_head,
            &p,
        )?;
    }
    Ok(())
}

/// One autoregressive decode step, f32: the new token's query (one row per head) attends to
/// the first `cache_len` rows of a KV cache whose heads are `cache_capacity` rows apart, so
/// the cache can be preallocated and filled in place.
///
/// Typically the caller writes the new token's key and value into row `cache_len - 1` of
/// each head first, then calls this with `position = cache_len - 1` (the new token's absolute
/// position; it replaces `params->mask.q_pos_offset`, so a causal or sliding-window mask and
/// the ALiBi/T5 biases see the right distances).
///
/// @param[in]  q         query `[heads][d]`, `q_len` elements
/// @param[in]  k_cache   keys `[kv_heads][cache_capacity][d]`
/// @param[in]  v_cache   values `[kv_heads][cache_capacity][dv]`
/// @param[out] out       output `[heads][dv]`
/// @param[in]  shape     heads, feature sizes, cache fill and capacity
/// @param[in]  position  absolute position of the query token
/// @param[in]  params    score, scale, mask and bias; NULL for the defaults
///
/// @return as `microattn_sdpa_f32`; `MICROATTN_ERR_INVALID_PARAMETER` when
///         `cache_len > cache_capacity`.
///
/// Scratch: none.
///
/// # Safety
/// Each pointer is valid for its length; `params` is NULL or valid.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn microattn_decode_step_f32(
    q: *const f32,
    q_len: usize,
    k_cache: *const f32,
    k_cache_len: usize,
    v_cache: *const f32,
    v_cache_len: usize,
    out: *mut f32,
    out_len: usize,
    shape: microattn_decode_shape_t,
    position: i64,
    params: *const microattn_sdpa_params_t,
) -> microattn_status_t {
    status((|| {
        disjoint(
            &[Region::new(out, out_len)],
            &[
                Region::new(q, q_len),
                Region::new(k_cache, k_cache_len),
                Region::new(v_cache, v_cache_len),
            ],
        )?;
        // SAFETY: the caller's contract; overlap checked above.
        let (q, k, v, out, p) = unsafe {
            (
                input(q, q_len)?,
                input(k_cache, k_cache_len)?,
                input(v_cache, v_cache_len)?,
                output(out, out_len)?,
                params_or_default(params)?,
            )
        };
        // SAFETY: the caller's contract on the arrays `params` points to.
        unsafe { with_sdpa_params(&p, |p| decode_step(q, k, v, out, &shape, position, p, sdpa)) }
    })())
}

/// One decode step with f16 storage (`uint16_t` bits) for the query, the cache and the
/// output; otherwise as `microattn_decode_step_f32`.
///
/// @param[in,out] scratch  f32 working row, `scratch_len >= microattn_decode_step_f16_scratch_len(shape)`
///
/// @return as `microattn_decode_step_f32`, plus `MICROATTN_ERR_SCRATCH_TOO_SMALL`.
///
/// # Safety
/// Each pointer is valid for its length; `params` is NULL or valid.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn microattn_decode_step_f16(
    q: *const u16,
    q_len: usize,
    k_cache: *const u16,
    k_cache_len: usize,
    v_cache: *const u16,
    v_cache_len: usize,
    out: *mut u16,
    out_len: usize,
    shape: microattn_decode_shape_t,
    position: i64,
    params: *const microattn_sdpa_params_t,
    scratch: *mut f32,
    scratch_len: usize,
) -> microattn_status_t {
    status((|| {
        disjoint(
            &[Region::new(out, out_len), Region::new(scratch, scratch_len)],
            &[
                Region::new(q, q_len),
                Region::new(k_cache, k_cache_len),
                Region::new(v_cache, v_cache_len),
            ],
        )?;
        // SAFETY: `f16` is `repr(transparent)` over `u16`; the caller's contract; overlap
        // checked above.
        let (q, k, v, out, scratch, p) = unsafe {
            (
                input(q.cast::<f16>(), q_len)?,
                input(k_cache.cast::<f16>(), k_cache_len)?,
                input(v_cache.cast::<f16>(), v_cache_len)?,
                output(out.cast::<f16>(), out_len)?,
                output(scratch, scratch_len)?,
                params_or_default(params)?,
            )
        };
        // SAFETY: the caller's contract on the arrays `params` points to.
        unsafe {
            with_sdpa_params(&p, |p| {
                decode_step(q, k, v, out, &shape, position, p, |q, k, v, o, s, p| {
                    sdpa_typed(q, k, v, o, s, p, scratch)
                })
            })
        }
    })())
}

/// f32 elements of scratch `microattn_decode_step_f16` needs: one output row, `dv`.
#[no_mangle]
pub extern "C" fn microattn_decode_step_f16_scratch_len(shape: microattn_decode_shape_t) -> usize {
    shape.dv
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{microattn_bias_t, microattn_mask_t, microattn_mask_term_t};
    use crate::params::{MICROATTN_BIAS_ALIBI, MICROATTN_MASK_CAUSAL};
    use crate::status::*;
    use std::vec::Vec;

    fn causal_term() -> microattn_mask_term_t {
        microattn_mask_term_t {
            kind: MICROATTN_MASK_CAUSAL,
            left: 0,
            right: 0,
            dilation: 0,
            block: 0,
            window: 0,
            valid: 0,
            global: core::ptr::null(),
            global_len: 0,
            random: core::ptr::null(),
            random_len: 0,
        }
    }

    fn data(n: usize, seed: u32) -> Vec<f32> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (x >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
            })
            .collect()
    }

    /// A decode step against a strided cache equals full SDPA on the compacted cache with
    /// the last query row, for GQA with a causal mask and ALiBi.
    #[test]
    fn decode_step_matches_sdpa_on_compacted_cache() {
        let (heads, kv_heads, d, dv, filled, cap) = (4, 2, 3, 2, 5, 8);
        let k_cache = data(kv_heads * cap * d, 1);
        let v_cache = data(kv_heads * cap * dv, 2);
        let q = data(heads * d, 3);
        let slopes = [0.5f32, 0.25, 0.125, 0.0625];
        let terms = [causal_term()];
        let params = microattn_sdpa_params_t {
            mask: microattn_mask_t {
                terms: terms.as_ptr(),
                num_terms: 1,
                q_pos_offset: 1234, // replaced by `position`
            },
            bias: microattn_bias_t {
                kind: MICROATTN_BIAS_ALIBI,
                values: slopes.as_ptr(),
                values_len: 4,
                ..microattn_bias_t::NONE
            },
            ..microattn_sdpa_params_t::DEFAULT
        };
        let shape = microattn_decode_shape_t {
            heads,
            kv_heads,
            d,
            dv,
            cache_len: filled,
            cache_capacity: cap,
        };
        let mut out = std::vec![0.0f32; heads * dv];
        let st = unsafe {
            microattn_decode_step_f32(
                q.as_ptr(),
                q.len(),
                k_cache.as_ptr(),
                k_cache.len(),
                v_cache.as_ptr(),
                v_cache.len(),
                out.as_mut_ptr(),
                out.len(),
                shape,
                (filled - 1) as i64,
                &params,
            )
        };
        assert_eq!(st, MICROATTN_OK);

        // Reference: the library's SDPA with lq = 1 on a compacted cache.
        let compact = |cache: &[f32], w: usize| -> Vec<f32> {
            cache
                .chunks_exact(cap * w)
                .flat_map(|h| h[..filled * w].iter().copied())
                .collect()
        };
        let (k, v) = (compact(&k_cache, d), compact(&v_cache, dv));
        let mut expected = std::vec![0.0f32; heads * dv];
        let causal = [microattn::mask::MaskTerm::Causal];
        let p = SdpaParams {
            mask: microattn::mask::Mask::new(&causal).with_signed_offset((filled - 1) as i64),
            bias: Bias::Alibi { slopes: &slopes },
            ..Default::default()
        };
        sdpa(
            &q,
            &k,
            &v,
            &mut expected,
            AttentionShape::multi_head(heads, kv_heads, 1, filled, d, dv),
            &p,
        )
        .unwrap();
        for (a, b) in out.iter().zip(&expected) {
            assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{a} vs {b}");
        }
    }

    #[test]
    fn bad_buffers_are_error_codes() {
        let x = [0.5f32; 8];
        let mut out = [0.0f32; 8];
        let shape = microattn_shape_t {
            heads: 1,
            kv_heads: 1,
            lq: 2,
            lk: 2,
            d: 4,
            dv: 4,
        };
        let call = |q: *const f32, out: *mut f32, out_len: usize| unsafe {
            microattn_sdpa_f32(
                q,
                8,
                x.as_ptr(),
                8,
                x.as_ptr(),
                8,
                out,
                out_len,
                shape,
                core::ptr::null(),
            )
        };
        assert_eq!(
            call(core::ptr::null(), out.as_mut_ptr(), 8),
            MICROATTN_ERR_NULL_POINTER
        );
        assert_eq!(
            call(x.as_ptr(), out.as_mut_ptr(), 7),
            MICROATTN_ERR_LENGTH_MISMATCH
        );
        // Output overlapping an input.
        let mut shared = [0.5f32; 8];
        let p = shared.as_mut_ptr();
        assert_eq!(call(p, p, 8), MICROATTN_ERR_BUFFER_OVERLAP);
        // Misaligned pointer.
        let bytes = [0u8; 64];
        let odd = unsafe { bytes.as_ptr().add(1) }.cast::<f32>();
        assert_eq!(
            call(odd, out.as_mut_ptr(), 8),
            MICROATTN_ERR_INVALID_ARGUMENT
        );
        assert_eq!(call(x.as_ptr(), out.as_mut_ptr(), 8), MICROATTN_OK);
    }
}
