//! Shapes, masks, biases and attention parameters as C structs, and their conversion to the
//! borrowed Rust types (on the stack, for the duration of one call).

use crate::buffers::input;
use crate::status::{Fail, MICROATTN_ERR_INVALID_ARGUMENT, MICROATTN_ERR_INVALID_BIAS};
use core::mem::{align_of, offset_of, size_of};
use microattn::attention::{AttentionShape, Bias, Score};
use microattn::mask::{Mask, MaskTerm};
use microattn::Error;

/// Shape of an attention call. Tensors are row-major: `q` is `[heads][lq][d]`, `k` is
/// `[kv_heads][lk][d]`, `v` is `[kv_heads][lk][dv]` and the output `[heads][lq][dv]`. Query
/// head `h` reads key/value head `h / (heads / kv_heads)` (GQA; `kv_heads = 1` is MQA).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct microattn_shape_t {
    /// Query heads (1 for single-head attention).
    pub heads: usize,
    /// Key/value heads: `heads`, a divisor of it (GQA) or 1 (MQA).
    pub kv_heads: usize,
    /// Query rows per head.
    pub lq: usize,
    /// Keys per head.
    pub lk: usize,
    /// Query/key feature size.
    pub d: usize,
    /// Value feature size.
    pub dv: usize,
}

impl From<microattn_shape_t> for AttentionShape {
    fn from(s: microattn_shape_t) -> Self {
        AttentionShape::multi_head(s.heads, s.kv_heads, s.lq, s.lk, s.d, s.dv)
    }
}

/// Mask term kind: every key (the term allows everything).
pub const MICROATTN_MASK_NONE: u32 = 0;
/// Mask term kind: keys at or before the query position, `j <= p`.
pub const MICROATTN_MASK_CAUSAL: u32 = 1;
/// Mask term kind: `p - left <= j <= p + right` (causal sliding window: `right = 0`).
pub const MICROATTN_MASK_SLIDING: u32 = 2;
/// Mask term kind: `j = p + t * dilation` for an integer `t` in `[-left, right]`.
pub const MICROATTN_MASK_DILATED: u32 = 3;
/// Mask term kind (Longformer): inside the window `[p - left, p + right]`, or `j` in
/// `global`, or `p` in `global`.
pub const MICROATTN_MASK_GLOBAL_SLIDING: u32 = 4;
/// Mask term kind (BigBird), with `qb = p / block`, `kb = j / block`: allowed when
/// `|qb - kb| <= window`, or `qb` or `kb` in `global`, or `(qb, kb)` in `random`.
pub const MICROATTN_MASK_BLOCK_SPARSE: u32 = 5;
/// Mask term kind: the first `valid` keys, `j < valid` (the rest is padding).
pub const MICROATTN_MASK_KEY_PADDING: u32 = 6;

/// Most terms one mask may AND together (the conversion keeps them on the stack).
pub const MICROATTN_MAX_MASK_TERMS: usize = 8;

/// A `(query block, key block)` pair of a BigBird mask's random connections.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct microattn_block_pair_t {
    /// Query block index.
    pub query_block: usize,
    /// Key block index.
    pub key_block: usize,
}

// The random pairs are passed on to the library as `&[(usize, usize)]` without a copy, which
// is sound only if the tuple has the struct's layout in this build (Rust does not promise a
// tuple layout, so it is checked here at compile time).
const _: () = {
    assert!(size_of::<(usize, usize)>() == size_of::<microattn_block_pair_t>());
    assert!(align_of::<(usize, usize)>() == align_of::<microattn_block_pair_t>());
    assert!(offset_of!((usize, usize), 0) == offset_of!(microattn_block_pair_t, query_block));
    assert!(offset_of!((usize, usize), 1) == offset_of!(microattn_block_pair_t, key_block));
};

/// One condition on the keys a query may attend to; a key is allowed when every term of the
/// mask allows it. Query row `i` sits at position `p = i + q_pos_offset`, key `j` at `j`.
/// Only the fields of `kind` are read; set the others to 0 (a designated initializer does).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct microattn_mask_term_t {
    /// One of `MICROATTN_MASK_*`.
    pub kind: u32,
    /// SLIDING, GLOBAL_SLIDING: keys visible before the query; DILATED: steps before.
    pub left: usize,
    /// SLIDING, GLOBAL_SLIDING: keys visible after the query; DILATED: steps after.
    pub right: usize,
    /// DILATED: distance between visible keys, positive.
    pub dilation: usize,
    /// BLOCK_SPARSE: block size in positions, positive.
    pub block: usize,
    /// BLOCK_SPARSE: neighbouring blocks visible on each side.
    pub window: usize,
    /// KEY_PADDING: number of real keys.
    pub valid: usize,
    /// GLOBAL_SLIDING: global positions; BLOCK_SPARSE: global block indices (any order).
    pub global: *const usize,
    /// Entries of `global` (0 allows a null `global`).
    pub global_len: usize,
    /// BLOCK_SPARSE: extra `(query block, key block)` pairs.
    pub random: *const microattn_block_pair_t,
    /// Entries of `random`.
    pub random_len: usize,
}

/// A mask: the AND of `num_terms` terms, and the position of query row 0. All zero is no
/// mask with query row 0 at position 0.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct microattn_mask_t {
    /// The terms (at most `MICROATTN_MAX_MASK_TERMS`); may be NULL when `num_terms` is 0.
    pub terms: *const microattn_mask_term_t,
    /// Number of terms; 0 allows every key.
    pub num_terms: usize,
    /// Absolute position of query row 0 (negative: queries before every key). A decode step
    /// against `lk` cached keys uses `lk - lq`.
    pub q_pos_offset: i64,
}

impl microattn_mask_t {
    /// No mask, query row 0 at position 0.
    pub(crate) const NONE: microattn_mask_t = microattn_mask_t {
        terms: core::ptr::null(),
        num_terms: 0,
        q_pos_offset: 0,
    };
}

/// Score kind: `scale * q.k` (Transformer attention).
pub const MICROATTN_SCORE_DOT: u32 = 0;
/// Score kind: `scale * q.k / (max(|q|, 1e-8) * max(|k|, 1e-8))`.
pub const MICROATTN_SCORE_COSINE: u32 = 1;
/// Score kind: `-scale * |q - k|^2`.
pub const MICROATTN_SCORE_NEG_SQ_L2: u32 = 2;
/// Score kind: `-scale * |q - k|_1`.
pub const MICROATTN_SCORE_NEG_L1: u32 = 3;

/// Bias kind: no bias.
pub const MICROATTN_BIAS_NONE: u32 = 0;
/// Bias kind: ALiBi, `-values[h] * |p - j|`; `values` holds one slope per query head.
pub const MICROATTN_BIAS_ALIBI: u32 = 1;
/// Bias kind: T5 relative buckets, `values[h * t5_num_buckets + bucket(j - p)]`.
pub const MICROATTN_BIAS_T5: u32 = 2;

/// An additive position bias on the logits. All zero is no bias.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct microattn_bias_t {
    /// One of `MICROATTN_BIAS_*`.
    pub kind: u32,
    /// ALIBI: `heads` slopes; T5: the `heads * t5_num_buckets` table, row-major.
    pub values: *const f32,
    /// Entries of `values`.
    pub values_len: usize,
    /// T5: nonzero when keys after the query get their own buckets.
    pub t5_bidirectional: u32,
    /// T5: buckets per head (at least 4 when bidirectional, 2 otherwise).
    pub t5_num_buckets: usize,
    /// T5: distance from which all positions share the last bucket.
    pub t5_max_distance: usize,
}

impl microattn_bias_t {
    /// No bias.
    pub(crate) const NONE: microattn_bias_t = microattn_bias_t {
        kind: MICROATTN_BIAS_NONE,
        values: core::ptr::null(),
        values_len: 0,
        t5_bidirectional: 0,
        t5_num_buckets: 0,
        t5_max_distance: 0,
    };
}

/// Everything about an attention call except the tensors. All zero (or a NULL pointer to it)
/// is dot-product attention with scale `1/sqrt(d)`, no mask, no bias.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct microattn_sdpa_params_t {
    /// One of `MICROATTN_SCORE_*`.
    pub score: u32,
    /// Nonzero: use `scale`; zero: the scale is `1/sqrt(d)`.
    pub has_scale: u32,
    /// Logit scale when `has_scale` is nonzero; must be finite.
    pub scale: f32,
    /// Allowed keys per query row and the query position offset.
    pub mask: microattn_mask_t,
    /// Additive position bias.
    pub bias: microattn_bias_t,
}

impl microattn_sdpa_params_t {
    /// The defaults a NULL params pointer stands for.
    pub(crate) const DEFAULT: microattn_sdpa_params_t = microattn_sdpa_params_t {
        score: MICROATTN_SCORE_DOT,
        has_scale: 0,
        scale: 0.0,
        mask: microattn_mask_t::NONE,
        bias: microattn_bias_t::NONE,
    };
}

/// The params a possibly NULL pointer designates (NULL: the defaults).
///
/// # Safety
/// `params` is NULL or points to a valid `microattn_sdpa_params_t`.
pub(crate) unsafe fn params_or_default(
    params: *const microattn_sdpa_params_t,
) -> Result<microattn_sdpa_params_t, Fail> {
    if params.is_null() {
        return Ok(microattn_sdpa_params_t::DEFAULT);
    }
    if params as usize % align_of::<microattn_sdpa_params_t>() != 0 {
        return Err(Fail(MICROATTN_ERR_INVALID_ARGUMENT));
    }
    // SAFETY: non-null, aligned, valid by the caller's contract; every bit pattern of the
    // struct is a valid value (integers, a float and raw pointers).
    Ok(unsafe { *params })
}

/// The score of a `MICROATTN_SCORE_*` value.
pub(crate) fn score(kind: u32) -> Result<Score, Fail> {
    match kind {
        MICROATTN_SCORE_DOT => Ok(Score::Dot),
        MICROATTN_SCORE_COSINE => Ok(Score::Cosine),
        MICROATTN_SCORE_NEG_SQ_L2 => Ok(Score::NegSqL2),
        MICROATTN_SCORE_NEG_L1 => Ok(Score::NegL1),
        _ => Err(Fail(MICROATTN_ERR_INVALID_ARGUMENT)),
    }
}

/// The `MICROATTN_SCORE_*` value of a score.
pub(crate) fn score_kind(score: Score) -> u32 {
    match score {
        Score::Dot => MICROATTN_SCORE_DOT,
        Score::Cosine => MICROATTN_SCORE_COSINE,
        Score::NegSqL2 => MICROATTN_SCORE_NEG_SQ_L2,
        Score::NegL1 => MICROATTN_SCORE_NEG_L1,
    }
}

/// The logit scale a params struct asks for (`None`: `1/sqrt(d)`).
pub(crate) fn scale(p: &microattn_sdpa_params_t) -> Option<f32> {
    (p.has_scale != 0).then_some(p.scale)
}

/// One C mask term as the library's term, borrowing its arrays.
///
/// # Safety
/// The term's `global` and `random` arrays are valid for `'a` (as [`input`]).
unsafe fn mask_term<'a>(t: &microattn_mask_term_t) -> Result<MaskTerm<'a>, Fail> {
    Ok(match t.kind {
        MICROATTN_MASK_NONE => MaskTerm::None,
        MICROATTN_MASK_CAUSAL => MaskTerm::Causal,
        MICROATTN_MASK_SLIDING => MaskTerm::Sliding {
            left: t.left,
            right: t.right,
        },
        MICROATTN_MASK_DILATED => MaskTerm::Dilated {
            left: t.left,
            right: t.right,
            dilation: t.dilation,
        },
        MICROATTN_MASK_GLOBAL_SLIDING => MaskTerm::GlobalSliding {
            left: t.left,
            right: t.right,
            // SAFETY: the caller's contract.
            global: unsafe { input(t.global, t.global_len) }?,
        },
        MICROATTN_MASK_BLOCK_SPARSE => {
            // SAFETY: the caller's contract.
            let pairs = unsafe { input(t.random, t.random_len) }?;
            // SAFETY: same layout (asserted above), same length, same lifetime.
            let random: &'a [(usize, usize)] = unsafe {
                core::slice::from_raw_parts(pairs.as_ptr().cast::<(usize, usize)>(), pairs.len())
            };
            MaskTerm::BlockSparse {
                block: t.block,
                window: t.window,
                // SAFETY: the caller's contract.
                global: unsafe { input(t.global, t.global_len) }?,
                random,
            }
        }
        MICROATTN_MASK_KEY_PADDING => MaskTerm::KeyPadding { valid: t.valid },
        _ => return Err(Error::InvalidMask.into()),
    })
}

/// Runs `f` with the library's form of `mask` (its terms converted into a stack array).
///
/// # Safety
/// `mask.terms` points to `mask.num_terms` valid terms (or `num_terms` is 0), and every
/// array they point to is valid for the call.
pub(crate) unsafe fn with_mask<R>(
    mask: &microattn_mask_t,
    f: impl FnOnce(Mask<'_>) -> Result<R, Fail>,
) -> Result<R, Fail> {
    // SAFETY: the caller's contract.
    let c_terms = unsafe { input(mask.terms, mask.num_terms) }?;
    if c_terms.len() > MICROATTN_MAX_MASK_TERMS {
        return Err(Fail(MICROATTN_ERR_INVALID_ARGUMENT));
    }
    let mut terms = [MaskTerm::None; MICROATTN_MAX_MASK_TERMS];
    for (t, c) in terms.iter_mut().zip(c_terms) {
        // SAFETY: the caller's contract.
        *t = unsafe { mask_term(c) }?;
    }
    let terms = terms.get(..c_terms.len()).unwrap_or(&[]);
    f(Mask::new(terms).with_signed_offset(mask.q_pos_offset))
}

/// The library's form of a C bias, borrowing its table.
///
/// # Safety
/// `bias.values` points to `bias.values_len` valid floats (or the length is 0).
pub(crate) unsafe fn bias<'a>(bias: &microattn_bias_t) -> Result<Bias<'a>, Fail> {
    // SAFETY: the caller's contract.
    let values = || unsafe { input(bias.values, bias.values_len) };
    Ok(match bias.kind {
        MICROATTN_BIAS_NONE => Bias::None,
        MICROATTN_BIAS_ALIBI => Bias::Alibi { slopes: values()? },
        MICROATTN_BIAS_T5 => Bias::T5 {
            bidirectional: bias.t5_bidirectional != 0,
            num_buckets: bias.t5_num_buckets,
            max_distance: bias.t5_max_distance,
            table: values()?,
        },
        _ => return Err(Fail(MICROATTN_ERR_INVALID_BIAS)),
    })
}

/// Runs `f` with the library's form of the float attention parameters.
///
/// # Safety
/// Every array `p` points to is valid for the call (see [`with_mask`], [`bias`]).
pub(crate) unsafe fn with_sdpa_params<R>(
    p: &microattn_sdpa_params_t,
    f: impl FnOnce(&microattn::attention::SdpaParams<'_>) -> Result<R, Fail>,
) -> Result<R, Fail> {
    let score = score(p.score)?;
    // SAFETY: the caller's contract.
    let bias = unsafe { bias(&p.bias) }?;
    // SAFETY: the caller's contract.
    unsafe {
        with_mask(&p.mask, |mask| {
            f(&microattn::attention::SdpaParams {
                scale: scale(p),
                score,
                mask,
                bias,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn term(kind: u32) -> microattn_mask_term_t {
        microattn_mask_term_t {
            kind,
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

    #[test]
    fn block_sparse_term_reads_pairs_and_globals() {
        let global = [2usize, 7];
        let pairs = [
            microattn_block_pair_t {
                query_block: 1,
                key_block: 4,
            },
            microattn_block_pair_t {
                query_block: 3,
                key_block: 0,
            },
        ];
        let mut t = term(MICROATTN_MASK_BLOCK_SPARSE);
        t.block = 4;
        t.window = 1;
        t.global = global.as_ptr();
        t.global_len = 2;
        t.random = pairs.as_ptr();
        t.random_len = 2;
        let converted = unsafe { mask_term(&t) }.unwrap();
        assert_eq!(
            converted,
            MaskTerm::BlockSparse {
                block: 4,
                window: 1,
                global: &[2, 7],
                random: &[(1, 4), (3, 0)],
            }
        );
    }

    #[test]
    fn bad_terms_are_errors() {
        assert_eq!(
            unsafe { mask_term(&term(99)) },
            Err(Fail::from(Error::InvalidMask))
        );
        let mut t = term(MICROATTN_MASK_GLOBAL_SLIDING);
        t.global_len = 3; // null with a nonzero length
        assert_eq!(
            unsafe { mask_term(&t) },
            Err(Fail(crate::status::MICROATTN_ERR_NULL_POINTER))
        );
        let many = [term(MICROATTN_MASK_CAUSAL); MICROATTN_MAX_MASK_TERMS + 1];
        let mask = microattn_mask_t {
            terms: many.as_ptr(),
            num_terms: many.len(),
            q_pos_offset: 0,
        };
        assert_eq!(
            unsafe { with_mask(&mask, |_| Ok(())) },
            Err(Fail(MICROATTN_ERR_INVALID_ARGUMENT))
        );
    }

    #[test]
    fn offset_and_terms_reach_the_mask() {
        let terms = [term(MICROATTN_MASK_CAUSAL)];
        let mask = microattn_mask_t {
            terms: terms.as_ptr(),
            num_terms: 1,
            q_pos_offset: -3,
        };
        unsafe {
            with_mask(&mask, |m| {
                assert_eq!(m.terms, &[MaskTerm::Causal]);
                assert_eq!(m.q_pos_offset, -3);
                Ok(())
            })
        }
        .unwrap();
    }
}
