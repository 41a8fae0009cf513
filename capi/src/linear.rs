//! Linear attention (elu+1 feature map): whole sequences, and a causal state that advances
//! one token at a time in O(d * dv) memory, whatever the sequence length.

use crate::buffers::{disjoint, input, output, Region};
use crate::params::microattn_shape_t;
use crate::status::{
    microattn_status_t, status, Fail, MICROATTN_ERR_INVALID_ARGUMENT, MICROATTN_ERR_NULL_POINTER,
};
use core::mem::{align_of, size_of};
use microattn::attention::{
    linear_attention, linear_attention_scratch_len, linear_state_len, LinearAttentionParams,
    LinearAttentionState,
};

/// Parameters of whole-sequence linear attention. A NULL pointer means non-causal with
/// `eps = 1e-6`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct microattn_linear_params_t {
    /// Nonzero: token `t` sees tokens `0` to `t` only (requires `lq == lk`).
    pub causal: u32,
    /// Added to the normalizer; finite and `>= 0`.
    pub eps: f32,
}

/// Linear attention, f32: `out_i = phi(q_i) S / (phi(q_i) . z + eps)` with `phi(x) = elu(x) + 1`,
/// `S = sum_j phi(k_j) v_j^T`, `z = sum_j phi(k_j)`; causal: the sums run over `j <= i`.
/// Shapes as `microattn_sdpa_f32` (GQA allowed).
///
/// @param[in]  q, k, v, out  as `microattn_sdpa_f32`
/// @param[in]  params        causal flag and eps; NULL for non-causal, `eps = 1e-6`
/// @param[in,out] scratch    `scratch_len >= microattn_linear_attention_scratch_len(shape)`
///
/// @return `MICROATTN_OK`, or `MICROATTN_ERR_ZERO_DIMENSION`, `_LENGTH_MISMATCH`,
///         `_HEADS_MISMATCH`, `_INVALID_SCALE` (bad eps), `_INVALID_PARAMETER` (causal with
///         `lq != lk`), `_SCRATCH_TOO_SMALL`, `_SHAPE_OVERFLOW`, `_NULL_POINTER`,
///         `_INVALID_ARGUMENT`, `_BUFFER_OVERLAP`.
///
/// # Safety
/// Each pointer is valid for its length; `params` is NULL or valid.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn microattn_linear_attention_f32(
    q: *const f32,
    q_len: usize,
    k: *const f32,
    k_len: usize,
    v: *const f32,
    v_len: usize,
    out: *mut f32,
    out_len: usize,
    shape: microattn_shape_t,
    params: *const microattn_linear_params_t,
    scratch: *mut f32,
    scratch_len: usize,
) -> microattn_status_t {
    status((|| {
        let p = if params.is_null() {
            LinearAttentionParams::default()
        } else if params as usize % align_of::<microattn_linear_params_t>() != 0 {
            return Err(Fail(MICROATTN_ERR_INVALID_ARGUMENT));
        } else {
            // SAFETY: non-null, aligned, valid by the caller's contract.
            let c = unsafe { *params };
            LinearAttentionParams {
                causal: c.causal != 0,
                eps: c.eps,
            }
        };
        disjoint(
            &[Region::new(out, out_len), Region::new(scratch, scratch_len)],
            &[
                Region::new(q, q_len),
                Region::new(k, k_len),
                Region::new(v, v_len),
            ],
        )?;
        // SAFETY: the caller's contract; overlap checked above.
        let (q, k, v, out, scratch) = unsafe {
            (
                input(q, q_len)?,
                input(k, k_len)?,
                input(v, v_len)?,
                output(out, out_len)?,
                output(scratch, scratch_len)?,
            )
        };
        Ok(linear_attention(q, k, v, out, shape.into(), &p, scratch)?)
    })())
}

/// f32 elements of scratch `microattn_linear_attention_f32` needs: `d * dv + d + dv`.
#[no_mangle]
pub extern "C" fn microattn_linear_attention_scratch_len(shape: microattn_shape_t) -> usize {
    linear_attention_scratch_len(shape.into())
}

/// Words of opaque storage in `microattn_linear_state_t`.
pub const MICROATTN_LINEAR_STATE_WORDS: usize = 8;

/// "LINS": marks a state `microattn_linear_state_init` has set up.
const STATE_MAGIC: u32 = 0x4C49_4E53;

// The library's state must fit the opaque words, with no stricter alignment.
const _: () = {
    assert!(
        size_of::<LinearAttentionState<'static>>()
            <= MICROATTN_LINEAR_STATE_WORDS * size_of::<usize>()
    );
    assert!(align_of::<LinearAttentionState<'static>>() <= align_of::<usize>());
};

/// State of causal linear attention for one head: the running sums over the tokens pushed so
/// far, kept in a caller-provided float buffer. Treat it as opaque; it may be copied with
/// `memcpy`, but the buffer given to `microattn_linear_state_init` must stay valid and must
/// not be touched by the caller while the state is in use.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct microattn_linear_state_t {
    magic: u32,
    buffer: *mut f32,
    buffer_len: usize,
    opaque: [usize; MICROATTN_LINEAR_STATE_WORDS],
}

/// f32 elements of buffer a linear attention state needs: `d * dv + d + dv` (saturates at
/// `SIZE_MAX`).
#[no_mangle]
pub extern "C" fn microattn_linear_state_len(d: usize, dv: usize) -> usize {
    linear_state_len(d, dv)
}

/// Sets up an empty causal linear attention state over `buffer`.
///
/// @param[out] state       the state to initialize
/// @param[in,out] buffer   `buffer_len >= microattn_linear_state_len(d, dv)` floats, owned
///                         by the state until it is no longer used
/// @param[in]  d           query/key feature size
/// @param[in]  dv          value feature size
/// @param[in]  eps         added to the normalizer; finite and `>= 0` (1e-6 is usual)
///
/// @return `MICROATTN_OK`, `MICROATTN_ERR_ZERO_DIMENSION`, `_INVALID_SCALE` (bad eps),
///         `_SCRATCH_TOO_SMALL`, `_SHAPE_OVERFLOW`, `_NULL_POINTER`, `_INVALID_ARGUMENT`,
///         `_BUFFER_OVERLAP` (the buffer overlaps the state).
///
/// # Safety
/// `state` is NULL or valid for a write; `buffer` is valid for `buffer_len` floats for as
/// long as the state is used.
#[no_mangle]
pub unsafe extern "C" fn microattn_linear_state_init(
    state: *mut microattn_linear_state_t,
    buffer: *mut f32,
    buffer_len: usize,
    d: usize,
    dv: usize,
    eps: f32,
) -> microattn_status_t {
    status((|| {
        if state.is_null() {
            return Err(Fail(MICROATTN_ERR_NULL_POINTER));
        }
        if state as usize % align_of::<microattn_linear_state_t>() != 0 {
            return Err(Fail(MICROATTN_ERR_INVALID_ARGUMENT));
        }
        disjoint(
            &[Region::new(buffer, buffer_len), Region::new(state, 1)],
            &[],
        )?;
        // SAFETY: the caller's contract (the buffer outlives the state); overlap checked.
        let buf: &'static mut [f32] = unsafe { output(buffer, buffer_len) }?;
        let inner = LinearAttentionState::new(buf, d, dv, eps)?;
        let mut c = microattn_linear_state_t {
            magic: STATE_MAGIC,
            buffer,
            buffer_len,
            opaque: [0; MICROATTN_LINEAR_STATE_WORDS],
        };
        // SAFETY: the opaque words are large and aligned enough (asserted above); the state
        // has no destructor, so storing it by bytes is fine.
        unsafe {
            c.opaque
                .as_mut_ptr()
                .cast::<LinearAttentionState<'static>>()
                .write(inner)
        };
        // SAFETY: non-null, aligned, writable by the caller's contract.
        unsafe { state.write(c) };
        Ok(())
    })())
}

/// The library's state inside an initialized C state, and its buffer's region.
///
/// # Safety
/// `state` is NULL or valid; if initialized, its buffer is still valid.
unsafe fn inner<'s>(
    state: *mut microattn_linear_state_t,
) -> Result<(&'s mut LinearAttentionState<'static>, Region), Fail> {
    if state.is_null() {
        return Err(Fail(MICROATTN_ERR_NULL_POINTER));
    }
    if state as usize % align_of::<microattn_linear_state_t>() != 0 {
        return Err(Fail(MICROATTN_ERR_INVALID_ARGUMENT));
    }
    // SAFETY: non-null, aligned, valid by the caller's contract.
    let c = unsafe { &mut *state };
    if c.magic != STATE_MAGIC {
        return Err(Fail(MICROATTN_ERR_INVALID_ARGUMENT));
    }
    let region = Region::new(c.buffer, c.buffer_len);
    // SAFETY: written by `microattn_linear_state_init` (the magic says so).
    let s = unsafe {
        &mut *c
            .opaque
            .as_mut_ptr()
            .cast::<LinearAttentionState<'static>>()
    };
    Ok((s, region))
}

/// Empties the state (forgets every pushed token).
///
/// @return `MICROATTN_OK`, `MICROATTN_ERR_NULL_POINTER`, `_INVALID_ARGUMENT` (not
///         initialized).
///
/// # Safety
/// `state` is NULL or valid.
#[no_mangle]
pub unsafe extern "C" fn microattn_linear_state_reset(
    state: *mut microattn_linear_state_t,
) -> microattn_status_t {
    status((|| {
        // SAFETY: the caller's contract.
        let (s, _) = unsafe { inner(state) }?;
        s.reset();
        Ok(())
    })())
}

/// Adds one token's key (`d` floats) and value (`dv` floats) to the state.
///
/// @return `MICROATTN_OK`, `MICROATTN_ERR_LENGTH_MISMATCH`, `_NULL_POINTER`,
///         `_INVALID_ARGUMENT`.
///
/// # Safety
/// `state` is NULL or valid; each pointer is valid for its length.
#[no_mangle]
pub unsafe extern "C" fn microattn_linear_state_push_f32(
    state: *mut microattn_linear_state_t,
    k: *const f32,
    k_len: usize,
    v: *const f32,
    v_len: usize,
) -> microattn_status_t {
    status((|| {
        // SAFETY: the caller's contract.
        let (s, buffer) = unsafe { inner(state) }?;
        disjoint(
            &[buffer, Region::new(state, 1)],
            &[Region::new(k, k_len), Region::new(v, v_len)],
        )?;
        // SAFETY: the caller's contract.
        let (k, v) = unsafe { (input(k, k_len)?, input(v, v_len)?) };
        Ok(s.push(k, v)?)
    })())
}

/// Attention output of one query (`d` floats) over the tokens pushed so far, into `out`
/// (`dv` floats); zeros when nothing has been pushed.
///
/// @return `MICROATTN_OK`, `MICROATTN_ERR_LENGTH_MISMATCH`, `_NULL_POINTER`,
///         `_INVALID_ARGUMENT`, `_BUFFER_OVERLAP`.
///
/// # Safety
/// `state` is NULL or valid; each pointer is valid for its length.
#[no_mangle]
pub unsafe extern "C" fn microattn_linear_state_query_f32(
    state: *mut microattn_linear_state_t,
    q: *const f32,
    q_len: usize,
    out: *mut f32,
    out_len: usize,
) -> microattn_status_t {
    status((|| {
        // SAFETY: the caller's contract.
        let (s, buffer) = unsafe { inner(state) }?;
        disjoint(
            &[Region::new(out, out_len), buffer, Region::new(state, 1)],
            &[Region::new(q, q_len)],
        )?;
        // SAFETY: the caller's contract; overlap checked above.
        let (q, out) = unsafe { (input(q, q_len)?, output(out, out_len)?) };
        Ok(s.query(q, out)?)
    })())
}

/// One causal step: pushes the token's key and value, then writes the output of its query
/// (`out_t` = attention of `q_t` over tokens `0` to `t`).
///
/// @param[in,out] state  an initialized state
/// @param[in]  q         `d` floats
/// @param[in]  k         `d` floats
/// @param[in]  v         `dv` floats
/// @param[out] out       `dv` floats
///
/// @return `MICROATTN_OK`, `MICROATTN_ERR_LENGTH_MISMATCH` (nothing pushed then),
///         `_NULL_POINTER`, `_INVALID_ARGUMENT`, `_BUFFER_OVERLAP`.
///
/// # Safety
/// `state` is NULL or valid; each pointer is valid for its length.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn microattn_linear_state_step_f32(
    state: *mut microattn_linear_state_t,
    q: *const f32,
    q_len: usize,
    k: *const f32,
    k_len: usize,
    v: *const f32,
    v_len: usize,
    out: *mut f32,
    out_len: usize,
) -> microattn_status_t {
    status((|| {
        // SAFETY: the caller's contract.
        let (s, buffer) = unsafe { inner(state) }?;
        disjoint(
            &[Region::new(out, out_len), buffer, Region::new(state, 1)],
            &[
                Region::new(q, q_len),
                Region::new(k, k_len),
                Region::new(v, v_len),
            ],
        )?;
        // SAFETY: the caller's contract; overlap checked above.
        let (q, k, v, out) = unsafe {
            (
                input(q, q_len)?,
                input(k, k_len)?,
                input(v, v_len)?,
                output(out, out_len)?,
            )
        };
        Ok(s.step(q, k, v, out)?)
    })())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::*;

    #[test]
    fn state_steps_match_causal_sequence() {
        let (n, d, dv) = (5, 3, 2);
        let q: std::vec::Vec<f32> = (0..n * d).map(|i| (i as f32 * 0.37).sin()).collect();
        let k: std::vec::Vec<f32> = (0..n * d).map(|i| (i as f32 * 0.91).cos()).collect();
        let v: std::vec::Vec<f32> = (0..n * dv).map(|i| i as f32 * 0.1 - 0.3).collect();
        let shape = microattn_shape_t {
            heads: 1,
            kv_heads: 1,
            lq: n,
            lk: n,
            d,
            dv,
        };
        let mut whole = std::vec![0.0f32; n * dv];
        let mut scratch = std::vec![0.0f32; microattn_linear_attention_scratch_len(shape)];
        let params = microattn_linear_params_t {
            causal: 1,
            eps: 1e-6,
        };
        let st = unsafe {
            microattn_linear_attention_f32(
                q.as_ptr(),
                q.len(),
                k.as_ptr(),
                k.len(),
                v.as_ptr(),
                v.len(),
                whole.as_mut_ptr(),
                whole.len(),
                shape,
                &params,
                scratch.as_mut_ptr(),
                scratch.len(),
            )
        };
        assert_eq!(st, MICROATTN_OK);

        let mut buffer = std::vec![0.0f32; microattn_linear_state_len(d, dv)];
        let mut state = core::mem::MaybeUninit::<microattn_linear_state_t>::zeroed();
        // An uninitialized (zeroed) state is refused.
        let mut out = [0.0f32; 2];
        let refused = unsafe {
            microattn_linear_state_query_f32(state.as_mut_ptr(), q.as_ptr(), d, out.as_mut_ptr(), 2)
        };
        assert_eq!(refused, MICROATTN_ERR_INVALID_ARGUMENT);
        let st = unsafe {
            microattn_linear_state_init(
                state.as_mut_ptr(),
                buffer.as_mut_ptr(),
                buffer.len(),
                d,
                dv,
                1e-6,
            )
        };
        assert_eq!(st, MICROATTN_OK);
        for t in 0..n {
            let st = unsafe {
                microattn_linear_state_step_f32(
                    state.as_mut_ptr(),
                    q[t * d..].as_ptr(),
                    d,
                    k[t * d..].as_ptr(),
                    d,
                    v[t * dv..].as_ptr(),
                    dv,
                    out.as_mut_ptr(),
                    dv,
                )
            };
            assert_eq!(st, MICROATTN_OK);
            assert_eq!(out[..], whole[t * dv..(t + 1) * dv]);
        }
        // The output may not alias the state's own buffer.
        let aliased = unsafe {
            microattn_linear_state_query_f32(
                state.as_mut_ptr(),
                q.as_ptr(),
                d,
                buffer.as_mut_ptr(),
                dv,
            )
        };
        assert_eq!(aliased, MICROATTN_ERR_BUFFER_OVERLAP);
    }
}
