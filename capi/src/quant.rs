//! Quantization helpers: int8 scales, (de)quantization per tensor and per channel,
//! fixed-point multipliers and requantization, f16 conversion.

use crate::buffers::{disjoint, input, output, Region};
use crate::status::{
    microattn_status_t, status, Fail, MICROATTN_ERR_INVALID_ARGUMENT, MICROATTN_ERR_NULL_POINTER,
};
use microattn::f16;
use microattn::quant::{self, FixedMultiplier, QParams};

/// A positive real number as integers: `multiplier * 2^(shift - 31)`, with `multiplier` in
/// `[1, 2^31 - 1]` and `shift` in `[-32, 31]`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct microattn_fixed_multiplier_t {
    /// Integer multiplier (normalized into `[2^30, 2^31)` by `microattn_fixed_multiplier_from_real`).
    pub multiplier: i32,
    /// Power-of-two exponent.
    pub shift: i32,
}

/// Writes `value` through a possibly null, possibly misaligned C pointer.
///
/// # Safety
/// `ptr` is NULL or valid for a write.
unsafe fn write_out<T>(ptr: *mut T, value: T) -> Result<(), Fail> {
    if ptr.is_null() {
        return Err(Fail(MICROATTN_ERR_NULL_POINTER));
    }
    if ptr as usize % core::mem::align_of::<T>() != 0 {
        return Err(Fail(MICROATTN_ERR_INVALID_ARGUMENT));
    }
    // SAFETY: non-null, aligned, writable by the caller's contract.
    unsafe { ptr.write(value) };
    Ok(())
}

/// The symmetric int8 scale that maps `[-max_abs, max_abs]` onto `[-127, 127]`
/// (`max_abs / 127`; 1 for `max_abs == 0`).
///
/// @param[in]  max_abs  largest magnitude of the tensor, finite and `>= 0`
/// @param[out] scale    the scale
///
/// @return `MICROATTN_OK`, `MICROATTN_ERR_INVALID_SCALE`, `_NULL_POINTER`, `_INVALID_ARGUMENT`.
///
/// # Safety
/// `scale` is NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn microattn_s8_scale_from_max_abs(
    max_abs: f32,
    scale: *mut f32,
) -> microattn_status_t {
    status((|| {
        let q = QParams::from_max_abs(max_abs)?;
        // SAFETY: the caller's contract.
        unsafe { write_out(scale, q.scale()) }
    })())
}

/// Quantizes `x` with one scale: `out[i] = clamp(round(x[i] / scale), -127, 127)`, rounding
/// half away from zero; NaN gives 0.
///
/// @param[in]  x        `len` floats
/// @param[in]  scale    finite and positive
/// @param[out] out      `out_len == len` int8s
///
/// @return `MICROATTN_OK`, `MICROATTN_ERR_INVALID_SCALE`, `_LENGTH_MISMATCH`,
///         `_NULL_POINTER`, `_INVALID_ARGUMENT`, `_BUFFER_OVERLAP`.
///
/// # Safety
/// Each pointer is valid for its length.
#[no_mangle]
pub unsafe extern "C" fn microattn_quantize_s8(
    x: *const f32,
    len: usize,
    scale: f32,
    out: *mut i8,
    out_len: usize,
) -> microattn_status_t {
    status((|| {
        disjoint(&[Region::new(out, out_len)], &[Region::new(x, len)])?;
        let q = QParams::new(scale)?;
        // SAFETY: the caller's contract; overlap checked above.
        let (x, out) = unsafe { (input(x, len)?, output(out, out_len)?) };
        Ok(quant::quantize(x, q, out)?)
    })())
}

/// Dequantizes with one scale: `out[i] = scale * q[i]`.
///
/// @return `MICROATTN_OK`, `MICROATTN_ERR_INVALID_SCALE`, `_LENGTH_MISMATCH`,
///         `_NULL_POINTER`, `_INVALID_ARGUMENT`, `_BUFFER_OVERLAP`.
///
/// # Safety
/// Each pointer is valid for its length.
#[no_mangle]
pub unsafe extern "C" fn microattn_dequantize_s8(
    q: *const i8,
    len: usize,
    scale: f32,
    out: *mut f32,
    out_len: usize,
) -> microattn_status_t {
    status((|| {
        disjoint(&[Region::new(out, out_len)], &[Region::new(q, len)])?;
        let p = QParams::new(scale)?;
        // SAFETY: the caller's contract; overlap checked above.
        let (q, out) = unsafe { (input(q, len)?, output(out, out_len)?) };
        Ok(quant::dequantize(q, p, out)?)
    })())
}

/// Quantizes a weight matrix `[channels][cols]` (one output channel per row, as PyTorch's
/// `Linear.weight`) with one scale per channel: `w[c][i] ~= scales[c] * out[c][i]`.
///
/// @param[in]  w         `w_len = channels * cols` floats
/// @param[in]  scales    `channels` scales, finite and positive
/// @param[out] out       `out_len == w_len` int8s
///
/// @return `MICROATTN_OK`, `MICROATTN_ERR_ZERO_DIMENSION` (no channels), `_LENGTH_MISMATCH`,
///         `_INVALID_SCALE`, `_NULL_POINTER`, `_INVALID_ARGUMENT`, `_BUFFER_OVERLAP`.
///
/// # Safety
/// Each pointer is valid for its length.
#[no_mangle]
pub unsafe extern "C" fn microattn_quantize_per_channel_s8(
    w: *const f32,
    w_len: usize,
    scales: *const f32,
    channels: usize,
    out: *mut i8,
    out_len: usize,
) -> microattn_status_t {
    status((|| {
        disjoint(
            &[Region::new(out, out_len)],
            &[Region::new(w, w_len), Region::new(scales, channels)],
        )?;
        // SAFETY: the caller's contract; overlap checked above.
        let (w, scales, out) = unsafe {
            (
                input(w, w_len)?,
                input(scales, channels)?,
                output(out, out_len)?,
            )
        };
        Ok(quant::quantize_per_channel(w, scales, out)?)
    })())
}

/// Inverse of `microattn_quantize_per_channel_s8`: `out[c][i] = scales[c] * q[c][i]`.
///
/// @return as `microattn_quantize_per_channel_s8`.
///
/// # Safety
/// Each pointer is valid for its length.
#[no_mangle]
pub unsafe extern "C" fn microattn_dequantize_per_channel_s8(
    q: *const i8,
    q_len: usize,
    scales: *const f32,
    channels: usize,
    out: *mut f32,
    out_len: usize,
) -> microattn_status_t {
    status((|| {
        disjoint(
            &[Region::new(out, out_len)],
            &[Region::new(q, q_len), Region::new(scales, channels)],
        )?;
        // SAFETY: the caller's contract; overlap checked above.
        let (q, scales, out) = unsafe {
            (
                input(q, q_len)?,
                input(scales, channels)?,
                output(out, out_len)?,
            )
        };
        Ok(quant::dequantize_per_channel(q, scales, out)?)
    })())
}

/// The nearest fixed-point multiplier to `real` (prepare step; uses double).
///
/// @param[in]  real    positive, finite, below `2^31` and at least `2^-64`
/// @param[out] out     the multiplier
///
/// @return `MICROATTN_OK`, `MICROATTN_ERR_INVALID_SCALE`, `_NULL_POINTER`, `_INVALID_ARGUMENT`.
///
/// # Safety
/// `out` is NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn microattn_fixed_multiplier_from_real(
    real: f64,
    out: *mut microattn_fixed_multiplier_t,
) -> microattn_status_t {
    status((|| {
        let m = FixedMultiplier::from_real(real)?;
        let m = microattn_fixed_multiplier_t {
            multiplier: m.multiplier(),
            shift: m.shift(),
        };
        // SAFETY: the caller's contract.
        unsafe { write_out(out, m) }
    })())
}

/// Requantizes an int32 accumulator to int8 (integer only): `acc * multiplier` rounded half
/// away from zero (exact 64-bit product, one rounding) and saturated to `[-127, 127]`.
///
/// @param[in]  acc         the accumulator
/// @param[in]  multiplier  a valid multiplier (`multiplier >= 1`, `shift` in `[-32, 31]`)
/// @param[out] out         the int8 result
///
/// @return `MICROATTN_OK`, `MICROATTN_ERR_INVALID_SCALE` (invalid multiplier),
///         `_NULL_POINTER`.
///
/// # Safety
/// `out` is NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn microattn_requantize_s8(
    acc: i32,
    multiplier: microattn_fixed_multiplier_t,
    out: *mut i8,
) -> microattn_status_t {
    status((|| {
        let m = FixedMultiplier::from_raw(multiplier.multiplier, multiplier.shift)?;
        // SAFETY: the caller's contract.
        unsafe { write_out(out, quant::requantize(acc, m)) }
    })())
}

/// Converts floats to IEEE binary16 bits (round to nearest even; overflow gives infinity).
///
/// @return `MICROATTN_OK`, `MICROATTN_ERR_LENGTH_MISMATCH`, `_NULL_POINTER`,
///         `_INVALID_ARGUMENT`, `_BUFFER_OVERLAP`.
///
/// # Safety
/// Each pointer is valid for its length.
#[no_mangle]
pub unsafe extern "C" fn microattn_f32_to_f16(
    x: *const f32,
    len: usize,
    out: *mut u16,
    out_len: usize,
) -> microattn_status_t {
    status((|| {
        disjoint(&[Region::new(out, out_len)], &[Region::new(x, len)])?;
        // SAFETY: the caller's contract; overlap checked above.
        let (x, out) = unsafe { (input(x, len)?, output(out, out_len)?) };
        if x.len() != out.len() {
            return Err(microattn::Error::LengthMismatch {
                expected: x.len(),
                found: out.len(),
            }
            .into());
        }
        for (o, &v) in out.iter_mut().zip(x) {
            *o = f16::from_f32(v).to_bits();
        }
        Ok(())
    })())
}

/// Converts IEEE binary16 bits to floats (exact).
///
/// @return as `microattn_f32_to_f16`.
///
/// # Safety
/// Each pointer is valid for its length.
#[no_mangle]
pub unsafe extern "C" fn microattn_f16_to_f32(
    x: *const u16,
    len: usize,
    out: *mut f32,
    out_len: usize,
) -> microattn_status_t {
    status((|| {
        disjoint(&[Region::new(out, out_len)], &[Region::new(x, len)])?;
        // SAFETY: the caller's contract; overlap checked above.
        let (x, out) = unsafe { (input(x, len)?, output(out, out_len)?) };
        if x.len() != out.len() {
            return Err(microattn::Error::LengthMismatch {
                expected: x.len(),
                found: out.len(),
            }
            .into());
        }
        for (o, &v) in out.iter_mut().zip(x) {
            *o = f16::from_bits(v).to_f32();
        }
        Ok(())
    })())
}
