//! Int8 scaled dot-product attention: int8 `q`/`k`/`v`, integer scores, an integer-only
//! streaming softmax and an integer weighted sum, requantized to an int8 output.
//!
//! Same shapes, masks and GQA/MQA head sharing as [`crate::attention::sdpa`]
//! ([`AttentionShape`]), all four [`Score`]s and the ALiBi / T5 biases. Per query row the
//! kernel walks only the allowed key ranges in tiles of 64 keys (twice
//! [`TILE`](crate::attention::TILE)).

use super::bias::Int8Bias;
use super::score::{Int8Logits, MAX_D};
use super::softmax::{
    normalize_row, rescale, sdpa_weight, IntOnlineSoftmax, EXP2_Q15, SDPA_ONE, WEIGHT_ZERO_T,
};
use crate::arch;
use crate::attention::{AttentionShape, Score, TILE};
use crate::error::{check_len, Error};
use crate::mask::Mask;
use crate::quant::{round_shift, saturate_i8, FixedMultiplier};

/// Keys per tile: twice the float kernels' [`TILE`], so that the per-tile steps (query
/// unpacking, tile maximum, primitive calls) cost less per key; the tile's weights (`i32`) and
/// logits (`i64`) live on the stack (768 bytes).
const KEY_TILE: usize = 2 * TILE;

/// Value columns of one i32 `P·V` partial sum (a stack array of this many `i32`s).
const PV_COLUMNS: usize = 64;

/// Largest number of keys `lk` per head: the `P·V` accumulators (Q15 weights × int8 values
/// summed over up to `lk` keys, `<= 2^22 · lk`) must stay below `2^46` so a rescale by a Q15
/// factor fits in an `i64`.
pub const MAX_LK: usize = 1 << 23;

/// The quantization scales of an int8 attention call (per tensor, symmetric).
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Int8Scales {
    /// `q ≈ q_scale · q_int8`.
    pub q: f32,
    /// `k ≈ k_scale · k_int8`.
    pub k: f32,
    /// `v ≈ v_scale · v_int8`.
    pub v: f32,
    /// `out ≈ out_scale · out_int8`. `out = v` never saturates (attention outputs are convex
    /// combinations of value rows); a smaller, calibrated scale gives more resolution.
    pub out: f32,
}

/// Everything about an int8 attention call except the tensors, in integers only.
///
/// [`Int8SdpaParams::new`] derives the integers from float scales (the one step that uses
/// float); firmware for an FPU-less core can store the result and rebuild it with
/// [`Int8SdpaParams::from_raw`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Int8SdpaParams<'a> {
    /// Score function and the multipliers that turn it into base-2 fixed-point logits.
    pub logits: Int8Logits,
    /// `v_scale / out_scale`: the output requantization multiplier.
    pub out: FixedMultiplier,
    /// Allowed keys per query row (and the query position offset).
    pub mask: Mask<'a>,
    /// Additive position bias, in the integer logit format.
    pub bias: Int8Bias<'a>,
}

impl<'a> Int8SdpaParams<'a> {
    /// Prepares an int8 attention call (uses float, once): `scale` is the logit scale
    /// (`None`: `1 / sqrt(d)`), `d` the query/key feature size.
    ///
    /// Errors: any scale not finite and positive, or multipliers out of range
    /// ([`Error::InvalidScale`]); see [`Int8Logits::new`] and [`FixedMultiplier::from_real`].
    pub fn new(
        scales: Int8Scales,
        d: usize,
        score: Score,
        scale: Option<f32>,
        mask: Mask<'a>,
        bias: Int8Bias<'a>,
    ) -> Result<Self, Error> {
        let scale = scale.unwrap_or_else(|| 1.0 / libm::sqrtf(d as f32));
        for s in [scales.v, scales.out] {
            if !(s.is_finite() && s > 0.0) {
                return Err(Error::InvalidScale);
            }
        }
        Ok(Int8SdpaParams {
            logits: Int8Logits::new(score, scale, scales.q, scales.k)?,
            out: FixedMultiplier::from_real(scales.v as f64 / scales.out as f64)?,
            mask,
            bias,
        })
    }

    /// From precomputed integers (no float); checked when the kernel runs.
    pub const fn from_raw(
        logits: Int8Logits,
        out: FixedMultiplier,
        mask: Mask<'a>,
        bias: Int8Bias<'a>,
    ) -> Self {
        Int8SdpaParams {
            logits,
            out,
            mask,
            bias,
        }
    }
}

/// `i64` elements of scratch [`int8_sdpa`] needs: one accumulator row of `dv`.
pub const fn int8_sdpa_scratch_len(shape: AttentionShape) -> usize {
    shape.dv
}

/// `i64` elements of scratch with which [`int8_sdpa`] packs each key/value head once per
/// call on the Cortex-M DSP cores (M4, M7, M33): [`int8_sdpa_scratch_len`] plus the head's
/// keys and values as 16-bit pairs (`2 · lk · (d + dv)` bytes, rounded up), the form their
/// `SMLAD` loops read without unpacking bytes for every query row. It pays when a head has at
/// least two query rows and `d` and `dv` are multiples of 4; the output bytes are the same
/// either way, and on other targets (or with less scratch) the extra is not used.
///
/// ```
/// use microattn::attention::AttentionShape;
/// use microattn::attention::int8::{int8_sdpa_packed_scratch_len, int8_sdpa_scratch_len};
/// let shape = AttentionShape::single(128, 128, 64, 64);
/// assert_eq!(int8_sdpa_scratch_len(shape), 64);
/// // 512 bytes of accumulators + 32 KiB of packed keys and values.
/// assert_eq!(int8_sdpa_packed_scratch_len(shape), 64 + 4096);
/// ```
pub const fn int8_sdpa_packed_scratch_len(shape: AttentionShape) -> usize {
    let words = arch::int8_packed::packed_keys_words(shape.lk, shape.d)
        .saturating_add(arch::int8_packed::packed_values_words(shape.lk, shape.dv));
    int8_sdpa_scratch_len(shape).saturating_add(words.div_ceil(2))
}

/// Whether [`int8_sdpa`] packs keys and values when the scratch allows: on the Cortex-M DSP
/// cores only (Helium reads the int8 rows directly with its widening gathers; the hosts'
/// SIMD does as well).
const PACK: bool = cfg!(all(target_arch = "arm", arm_dsp, not(arm_mve)));

/// Int8 attention of `q` over `k`/`v` into `out`, shapes as [`AttentionShape`] describes
/// (`[heads, lq, d]`, `[kv_heads, lk, d]`, `[kv_heads, lk, dv]`, `[heads, lq, dv]`).
/// `scratch` holds [`int8_sdpa_scratch_len`] `i64`s ([`int8_sdpa_packed_scratch_len`] for
/// the packed loops of the Cortex-M DSP cores). Integer arithmetic only; the output bytes are
/// the same on every target and with either scratch.
///
/// Rows with no allowed key are zero. Errors: a zero dimension, slice lengths that do not
/// match the shape, `heads % kv_heads != 0`, `d >` [`MAX_D`](super::MAX_D) or
/// `lk >` [`MAX_LK`] ([`Error::InvalidParameter`]), logit multipliers that could overflow for
/// this `d` ([`Error::InvalidScale`]), a malformed mask or bias, short scratch.
///
/// ```
/// use microattn::attention::{AttentionShape, Score};
/// use microattn::attention::int8::{int8_sdpa, Int8Bias, Int8Scales, Int8SdpaParams};
/// use microattn::mask::Mask;
/// let shape = AttentionShape::single(1, 2, 2, 1);
/// let scales = Int8Scales { q: 0.01, k: 0.01, v: 0.1, out: 0.1 };
/// let params = Int8SdpaParams::new(scales, 2, Score::Dot, None, Mask::NONE, Int8Bias::None)?;
/// let (q, k, v) = ([100i8, 0], [100i8, 0, 0, 100], [100i8, 50]);
/// let mut out = [0i8; 1];
/// let mut scratch = [0i64; 1];
/// int8_sdpa(&q, &k, &v, &mut out, shape, &params, &mut scratch)?;
/// // logits 1/sqrt(2) and 0: weights 0.67 / 0.33 → 8.35 in units of 0.1.
/// assert_eq!(out, [83]);
/// # Ok::<(), microattn::Error>(())
/// ```
pub fn int8_sdpa(
    q: &[i8],
    k: &[i8],
    v: &[i8],
    out: &mut [i8],
    shape: AttentionShape,
    params: &Int8SdpaParams<'_>,
    scratch: &mut [i64],
) -> Result<(), Error> {
    validate_sdpa(q, k, v, out.len(), shape, params)?;
    let needed = int8_sdpa_scratch_len(shape);
    let found = scratch.len();
    if found < needed {
        return Err(Error::ScratchTooSmall { needed, found });
    }
    let (acc, rest) = scratch.split_at_mut(needed);
    let pack = PACK
        && shape.d % 4 == 0
        && shape.dv % 4 == 0
        && shape
            .heads
            .checked_div(shape.kv_heads)
            .unwrap_or(0)
            .saturating_mul(shape.lq)
            >= 2
        && matches!(params.logits, Int8Logits::Dot { .. })
        && found >= int8_sdpa_packed_scratch_len(shape);
    let packed_room = if pack {
        arch::int8_packed::scratch_words(rest)
    } else {
        &mut []
    };
    run(q, k, v, out, shape, params, acc, packed_room);
    Ok(())
}

/// Fixed-size single-head int8 attention (the accumulator row lives on the stack: `8 · DV`
/// bytes). Errors only for parameters.
pub fn int8_sdpa_fixed<const LQ: usize, const LK: usize, const D: usize, const DV: usize>(
    q: &[[i8; D]; LQ],
    k: &[[i8; D]; LK],
    v: &[[i8; DV]; LK],
    out: &mut [[i8; DV]; LQ],
    params: &Int8SdpaParams<'_>,
) -> Result<(), Error> {
    let mut acc = [0i64; DV];
    int8_sdpa(
        q.as_flattened(),
        k.as_flattened(),
        v.as_flattened(),
        out.as_flattened_mut(),
        AttentionShape::single(LQ, LK, D, DV),
        params,
        &mut acc,
    )
}

/// Fixed-size multi-head int8 attention with `H` query heads over `HKV` key/value heads.
pub fn int8_sdpa_heads_fixed<
    const H: usize,
    const HKV: usize,
    const LQ: usize,
    const LK: usize,
    const D: usize,
    const DV: usize,
>(
    q: &[[[i8; D]; LQ]; H],
    k: &[[[i8; D]; LK]; HKV],
    v: &[[[i8; DV]; LK]; HKV],
    out: &mut [[[i8; DV]; LQ]; H],
    params: &Int8SdpaParams<'_>,
) -> Result<(), Error> {
    let mut acc = [0i64; DV];
    int8_sdpa(
        q.as_flattened().as_flattened(),
        k.as_flattened().as_flattened(),
        v.as_flattened().as_flattened(),
        out.as_flattened_mut().as_flattened_mut(),
        AttentionShape::multi_head(H, HKV, LQ, LK, D, DV),
        params,
        &mut acc,
    )
}

/// Checks every shape and parameter (integer only).
pub(crate) fn validate_sdpa(
    q: &[i8],
    k: &[i8],
    v: &[i8],
    out_len: usize,
    shape: AttentionShape,
    params: &Int8SdpaParams<'_>,
) -> Result<(), Error> {
    let (q_len, k_len, v_len, expected_out) = shape.lengths()?;
    check_len(q, q_len)?;
    check_len(k, k_len)?;
    check_len(v, v_len)?;
    if out_len != expected_out {
        return Err(Error::LengthMismatch {
            expected: expected_out,
            found: out_len,
        });
    }
    validate_params(shape, params)
}

/// Checks the sizes and the parameters against a shape whose lengths are checked.
pub(crate) fn validate_params(
    shape: AttentionShape,
    params: &Int8SdpaParams<'_>,
) -> Result<(), Error> {
    if shape.d > MAX_D || shape.lk > MAX_LK {
        return Err(Error::InvalidParameter);
    }
    // Re-check multipliers built with `from_raw` (a `FixedMultiplier` can only be built
    // valid, but the fields of the params are public).
    FixedMultiplier::from_raw(params.out.multiplier(), params.out.shift())?;
    params.logits.validate(shape.d)?;
    params.mask.validate()?;
    params.bias.validate(shape.heads)
}

/// Runs every query row of every head; shapes validated, `acc` has `dv` elements. With room
/// for them in `packed_room` (else it is empty), each key/value head is packed first.
#[allow(clippy::too_many_arguments)]
fn run(
    q: &[i8],
    k: &[i8],
    v: &[i8],
    out: &mut [i8],
    shape: AttentionShape,
    params: &Int8SdpaParams<'_>,
    acc: &mut [i64],
    packed_room: &mut [u32],
) {
    let AttentionShape {
        heads,
        kv_heads,
        lq,
        lk,
        d,
        dv,
    } = shape;
    // Validated: kv_heads divides heads and is not 0 (checked_div only spares a panic path).
    let Some(group) = heads.checked_div(kv_heads) else {
        return;
    };
    // Validated: every product below is a length of a slice that exists, so none overflows,
    // and none is 0 (the `max(1)` only spares the optimizer a panic path).
    let (k_len, v_len) = ((lk * d).max(1), (lk * dv).max(1));
    let (q_len, out_len) = ((lq * d).max(1), (lq * dv).max(1));
    // The query and output heads of one key/value head, group by group (lengths of slices
    // that exist: the checked products never fail).
    let (Some(q_group_len), Some(out_group_len)) =
        (q_len.checked_mul(group), out_len.checked_mul(group))
    else {
        return;
    };
    let k_heads = k.chunks_exact(k_len);
    let v_heads = v.chunks_exact(v_len);
    let q_groups = q.chunks_exact(q_group_len.max(1));
    let out_groups = out.chunks_exact_mut(out_group_len.max(1));
    for (kvh, ((k_h, v_h), (q_g, out_g))) in k_heads
        .zip(v_heads)
        .zip(q_groups.zip(out_groups))
        .enumerate()
    {
        let (keys_room, values_room) = packed_room
            .split_at_mut(arch::int8_packed::packed_keys_words(lk, d).min(packed_room.len()));
        let packed = match (
            arch::int8_packed::pack_keys(k_h, d, keys_room),
            arch::int8_packed::pack_values(v_h, dv, values_room),
        ) {
            (Ok(()), Ok(())) => Some(PackedHead {
                keys: keys_room,
                values: values_room,
                capacity: lk,
            }),
            _ => None,
        };
        let kv = HeadKv {
            lk,
            k: k_h,
            v: v_h,
            packed,
        };
        let heads_of_group = q_g.chunks_exact(q_len).zip(out_g.chunks_exact_mut(out_len));
        for (g, (q_h, out_h)) in heads_of_group.enumerate() {
            attend_rows(q_h, d, &kv, out_h, kvh * group + g, params, acc);
        }
    }
}

/// The keys and values of one key/value head: int8 rows, packed pairs, or both.
pub(crate) struct HeadKv<'a> {
    /// Keys (and value rows) in the head.
    pub(crate) lk: usize,
    /// The int8 keys, row-major (empty when there are only packed ones).
    pub(crate) k: &'a [i8],
    /// The int8 value rows, row-major (empty when there are only packed ones).
    pub(crate) v: &'a [i8],
    /// The same keys and values packed into 16-bit pairs.
    pub(crate) packed: Option<PackedHead<'a>>,
}

/// Every query row of one head over one key/value head (`q_h`: rows of `d`, `out_h`: rows
/// of `dv = acc.len()`). Shapes and params validated; without int8 rows, the packed ones
/// must be there and the score must be the dot product.
pub(crate) fn attend_rows(
    q_h: &[i8],
    d: usize,
    kv: &HeadKv<'_>,
    out_h: &mut [i8],
    head: usize,
    params: &Int8SdpaParams<'_>,
    acc: &mut [i64],
) {
    let dv = acc.len();
    let mut bufs = RowBuffers {
        logits: [0; KEY_TILE],
        weights: [0; KEY_TILE],
        parts: [0; PV_COLUMNS],
    };
    // Once per head (a 64-bit division), not per row.
    let diff_scale = match params.logits {
        Int8Logits::Dot { logit } => Some(DiffScale::new(logit)),
        _ => None,
    };
    for (i, (q_row, out_row)) in q_h
        .chunks_exact(d.max(1))
        .zip(out_h.chunks_exact_mut(dv.max(1)))
        .enumerate()
    {
        attend_row(
            q_row, kv, acc, out_row, head, i, params, diff_scale, &mut bufs,
        );
    }
}

/// One key/value head packed into 16-bit pairs ([`arch::int8_packed`]).
pub(crate) struct PackedHead<'a> {
    /// [`arch::int8_packed::pack_keys`]'s layout for `capacity` keys.
    pub(crate) keys: &'a [u32],
    /// [`arch::int8_packed::pack_values`]'s layout for `capacity` rows.
    pub(crate) values: &'a [u32],
    /// The rows the layout has room for (at least the head's keys).
    pub(crate) capacity: usize,
}

/// Per-row work arrays of [`attend_row`], cleared once per head: `logits` and `weights` are
/// written before they are read, and `parts` is all zeros again after each row's last flush.
struct RowBuffers {
    /// Logits of a tile (scores other than dot, or with a bias).
    logits: [i64; KEY_TILE],
    /// Raw dot products of a tile (from one call of the arch primitive: SMLAD on the
    /// Cortex-M DSP cores, Helium on the M55), then the tile's Q15 weights.
    weights: [i32; KEY_TILE],
    /// P·V partial sums of the last `pending` keys (when dv <= PV_COLUMNS).
    parts: [i32; PV_COLUMNS],
}

/// Keys whose `P·V` products an `i32` partial sum holds exactly: `511 · 2^22 < 2^31`.
const PENDING_KEYS: usize = 511;

/// Adds the partial sums to the `i64` accumulators and clears them.
#[inline]
fn flush(acc: &mut [i64], parts: &mut [i32; PV_COLUMNS], pending: &mut usize) {
    if *pending == 0 {
        return;
    }
    #[cfg(all(target_arch = "arm", arm_mve))]
    if arch::mve_softmax::flush(acc, parts) {
        *pending = 0;
        return;
    }
    for (a, p) in acc.iter_mut().zip(parts.iter_mut()) {
        *a += *p as i64;
        *p = 0;
    }
    *pending = 0;
}

/// The dot logit multiplier `m` (base-2 Q20 logit units per unit of a raw dot product) for
/// differences of raw dot products: `t = floor(diff · m_q32 / 2^32)` with
/// `m_q32 = round(m · 2^32)` split into 32-bit halves (an absolute error below 0.5 Q20 units
/// for `diff <= 2^31`), and the smallest difference whose weight is 0 for certain.
#[derive(Debug, Clone, Copy)]
struct DiffScale {
    lo: u32,
    hi: u32,
    /// `t >= 17` (weight 0) from this difference on; below it `t < 17 · 2^20`.
    cutoff: u32,
}

impl DiffScale {
    /// Once per call (one 64-bit division).
    fn new(m: FixedMultiplier) -> Self {
        let mult = m.multiplier().unsigned_abs() as u64; // < 2^31
        let n = m.right_shift(); // 0..=63
        let q32 = if n <= 32 {
            mult << (32 - n) // < 2^63
        } else {
            let n = n - 32;
            (mult + ((1u64 << n) >> 1)) >> n
        };
        let limit = (WEIGHT_ZERO_T as u64) << 32;
        let cutoff = match limit.checked_div(q32) {
            Some(q) => q + u64::from(q * q32 != limit),
            None => u64::MAX,
        };
        DiffScale {
            lo: q32 as u32,
            hi: (q32 >> 32) as u32,
            cutoff: u32::try_from(cutoff).unwrap_or(u32::MAX),
        }
    }

    /// The Q20 logit difference of a raw dot-product difference (`diff <= 2^31`), saturated
    /// at [`WEIGHT_ZERO_T`].
    #[inline(always)]
    fn t(self, diff: u32) -> u32 {
        if diff >= self.cutoff {
            return WEIGHT_ZERO_T;
        }
        // diff · m_q32 < 17 · 2^52: the sum stays below 2^25.
        ((diff as u64 * self.lo as u64) >> 32) as u32 + diff.wrapping_mul(self.hi)
    }
}

/// The dot-score, no-bias tile: turns the raw dot products in `w` into Q15 weights
/// `2^-round(m·(max - s))` against the running maximum (folded in first), adds them to the
/// row's sum and returns the rescale factor of what was accumulated before. Its own function
/// (not inlined) so that its loops keep everything in registers.
#[inline(never)]
fn dot_tile_weights(w: &mut [i32], softmax: &mut IntOnlineSoftmax, ds: DiffScale) -> i64 {
    // With AVX2 / AVX-512 on x86_64, else `w.iter().copied().max()`.
    let tile_max = arch::max_i32(w).unwrap_or(0);
    let (factor, max) = softmax.fold_max(tile_max as i64, |x| {
        ds.t(u32::try_from(x).unwrap_or(u32::MAX)) as u64
    });
    let max = max as i32;
    #[cfg(all(target_arch = "arm", arm_mve))]
    let sum = arch::mve_softmax::dot_weights(w, max, ds.lo, ds.hi, ds.cutoff, EXP2_Q15);
    // AVX2 / AVX-512 on x86_64, `asm!` on the Cortex-M DSP cores, else the scalar loop; at
    // most KEY_TILE · 2^15: no overflow.
    #[cfg(not(all(target_arch = "arm", arm_mve)))]
    let sum = arch::dot_weights_q15(w, max, ds.lo, ds.hi, ds.cutoff, &EXP2_Q15);
    softmax.add(sum as i64);
    factor
}

/// One query row of one head: integer logits tile by tile, online integer softmax with Q15
/// weights, `P·V` in `i32` per tile added to `i64` accumulators, then normalization and
/// requantization into `out_row`.
///
/// With the dot score and no bias (the common case) the logits are never formed: the running
/// maximum is kept as a raw dot product and each key's weight is `2^-round(m·(max - s))`, one
/// 32×32-bit product per key. Otherwise logits are `round(m·s) + bias` in `i64` (Q20).
#[allow(clippy::too_many_arguments)]
fn attend_row(
    q_row: &[i8],
    kv: &HeadKv<'_>,
    acc: &mut [i64],
    out_row: &mut [i8],
    head: usize,
    row: usize,
    params: &Int8SdpaParams<'_>,
    diff_scale: Option<DiffScale>,
    bufs: &mut RowBuffers,
) {
    let RowBuffers {
        logits,
        weights,
        parts,
    } = bufs;
    let (d, dv, lk) = (q_row.len(), acc.len(), kv.lk);
    let packed = kv.packed.as_ref();
    acc.fill(0);
    let position = params.mask.position(row);
    let row_state = params.logits.row_state(q_row);
    let mut softmax = IntOnlineSoftmax::new();
    let dot_logit = match params.logits {
        Int8Logits::Dot { logit } => Some(logit),
        _ => None,
    };
    let no_bias = matches!(params.bias, Int8Bias::None);
    let mut pending = 0usize;
    for run in params.mask.row(row, lk) {
        let mut start = run.start;
        while start < run.end {
            let end = run.end.min(start + KEY_TILE);
            let (Some(w), Some(z)) = (
                weights.get_mut(..end - start),
                logits.get_mut(..end - start),
            ) else {
                break;
            };
            // Keys start..end lie in the int8 rows when there are (shapes validated).
            let keys = kv.k.get(start * d..).unwrap_or(&[]);
            let rows = kv.v.get(start * dv..).unwrap_or(&[]);
            // The packed keys when there are, else the int8 rows.
            let raw_ok = dot_logit.is_some()
                && packed
                    .and_then(|p| arch::int8_packed::dot_i8_packed(q_row, p.keys, start, w).ok())
                    .map_or_else(|| arch::dot_i8_keys(q_row, keys, d, w), Ok)
                    .is_ok();
            let factor = match (dot_logit, diff_scale) {
                (Some(_), Some(ds)) if raw_ok && no_bias => dot_tile_weights(w, &mut softmax, ds),
                _ => {
                    match dot_logit {
                        Some(m) if raw_ok => {
                            for ((z, &s), j) in z.iter_mut().zip(w.iter()).zip(start..end) {
                                *z = m.mul_round(s) + params.bias.value(head, position, j);
                            }
                        }
                        _ => {
                            for ((z, k_row), j) in z
                                .iter_mut()
                                .zip(keys.chunks_exact(d.max(1)))
                                .zip(start..end)
                            {
                                *z = params.logits.logit(q_row, k_row, row_state)
                                    + params.bias.value(head, position, j);
                            }
                        }
                    }
                    let tile_max = z.iter().copied().max().unwrap_or(0);
                    let (factor, max) = softmax.fold_max(tile_max, |x| x);
                    let mut sum = 0i64;
                    for (x, &z) in w.iter_mut().zip(z.iter()) {
                        *x = sdpa_weight(max.abs_diff(z));
                        sum += *x as i64;
                    }
                    softmax.add(sum);
                    factor
                }
            };
            if factor != SDPA_ONE {
                #[cfg(all(target_arch = "arm", arm_mve))]
                let done = arch::mve_softmax::flush_rescale(acc, parts, factor);
                #[cfg(not(all(target_arch = "arm", arm_mve)))]
                let done = false;
                if done {
                    pending = 0;
                } else {
                    flush(acc, parts, &mut pending);
                    for a in acc.iter_mut() {
                        *a = rescale(*a, factor);
                    }
                }
            }
            // P·V of the tile in the i32 partial sums: each key adds at most 2^15 · 128 = 2^22
            // in magnitude, so up to PENDING_KEYS keys are exact before the partial sums are
            // added to the i64 accumulators (before a rescale, at the end, and when full).
            let n = end - start;
            if pending + n > PENDING_KEYS || dv > PV_COLUMNS {
                flush(acc, parts, &mut pending);
            }
            pending += n;
            for (chunk, acc_chunk) in acc.chunks_mut(PV_COLUMNS).enumerate() {
                let part = parts.get_mut(..acc_chunk.len()).unwrap_or_default();
                let rows = rows.get(chunk * PV_COLUMNS..).unwrap_or(&[]);
                let column = chunk * PV_COLUMNS;
                let done = packed.is_some_and(|p| {
                    arch::int8_packed::pv_i8_packed(
                        w, p.values, p.capacity, dv, start, column, part,
                    )
                    .is_ok()
                }) || arch::pv_i8(w, rows, dv, part).is_ok();
                if done && dv > PV_COLUMNS {
                    // More columns than partial sums: one chunk at a time, flushed at once.
                    for (a, p) in acc_chunk.iter_mut().zip(part.iter_mut()) {
                        *a += *p as i64;
                        *p = 0;
                    }
                }
            }
            start = end;
        }
    }
    flush(acc, parts, &mut pending);
    normalize_row_fast(acc, softmax.sum(), params.out, out_row);
}

/// [`normalize_row`] with the same bits, faster in the common case: when the sum has at most
/// 24 significant bits (so [`normalize_row`] shifts left, never rounds) and every shifted
/// accumulator fits an `i32`, each column is one 32×32→64-bit product and a rounding shift
/// (`saturating_mul` cannot saturate: `|x · mr| < 2^31 · 2^31`). Otherwise, or for an unusual
/// output multiplier, it calls [`normalize_row`]. Not inlined: its loop keeps its values in
/// registers.
#[inline(never)]
fn normalize_row_fast(acc: &[i64], sum: i64, out_multiplier: FixedMultiplier, out: &mut [i8]) {
    let bits = 64 - sum.leading_zeros() as i32;
    let up = 24 - bits;
    let n = 54 - out_multiplier.shift();
    if sum <= 0 || !(0..=24).contains(&up) || !(1..=62).contains(&n) {
        return normalize_row(acc, sum, out_multiplier, out);
    }
    // As in normalize_row: sum' = sum · 2^up, inv ≈ 2^54 / sum', mr = inv · multiplier / 2^31.
    let sum = sum << up;
    let inv = div_2_54_rounded(sum as u32) as i64;
    let mr = round_shift(inv * out_multiplier.multiplier() as i64, 31);
    let Ok(mr) = i32::try_from(mr) else {
        return normalize_row(acc, sum >> up, out_multiplier, out);
    };
    // round_shift(p, n) (half away from zero) without a branch: (p + half - [p < 0]) >> n,
    // as for p < 0, -((-p + half) >> n) = (p + half - 1) >> n (2^n - half = half); for
    // n >= 32 the shift is the high word's, by n - 32.
    if n < 32 {
        return normalize_row(acc, sum >> up, out_multiplier, out);
    }
    #[cfg(all(target_arch = "arm", arm_mve))]
    if arch::mve_softmax::normalize_row(acc, -up, mr as i64, n as u32, out) {
        return;
    }
    // AVX-512 on x86_64, `asm!` on the Cortex-M DSP cores.
    if arch::normalize_row_q(acc, up as u32, mr, n as u32, out) {
        return;
    }
    let (half, n_hi) = (1i64 << (n - 1), (n - 32) as u32);
    for (o, &a) in out.iter_mut().zip(acc) {
        let Ok(a) = i32::try_from(a) else {
            return normalize_row(acc, sum >> up, out_multiplier, out);
        };
        let x = a << up;
        if x >> up != a {
            return normalize_row(acc, sum >> up, out_multiplier, out);
        }
        // |x · mr| < 2^62: no saturation, no overflow adding half (<= 2^61).
        let p = x as i64 * mr as i64;
        let rounded = ((p + half + (p >> 63)) >> 32) as i32 >> n_hi;
        *o = saturate_i8(rounded as i64);
    }
}

/// `(2^54 + d / 2) / d` (truncated) for `d` in `[2^23, 2^24)`, with 32-bit divisions: the
/// numerator's top 31 bits (`2^30`), then its low 24 bits (`d / 2`) a byte at a time; every
/// partial remainder is below `d < 2^24`, so each step's dividend fits a `u32`.
fn div_2_54_rounded(d: u32) -> u32 {
    let Some(d) = core::num::NonZeroU32::new(d) else {
        return 0;
    };
    let low = d.get() / 2;
    let mut q = (1u32 << 30) / d;
    let mut r = (1u32 << 30) % d;
    for byte in [low >> 16, (low >> 8) & 0xff, low & 0xff] {
        let cur = (r << 8) | byte;
        q = (q << 8) | (cur / d);
        r = cur % d;
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast normalization gives the bits of `normalize_row` (its reference), on its own
    /// path (here the AVX-512 one when the CPU has it) and on every fallback: sums with up to
    /// 30 significant bits, accumulators near and beyond the i32 range, several output
    /// multipliers, 1 to 20 columns (the vector steps' masked tails).
    #[test]
    #[cfg_attr(miri, ignore = "long sweep: too slow under Miri")]
    fn normalize_row_fast_matches_normalize_row() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let multipliers = [1.0, 0.37, 2.9, 1.0 / 127.0, 100.0, 1e-6];
        let mut cases = 0;
        for &real in &multipliers {
            let m = FixedMultiplier::from_real(real).unwrap();
            for _ in 0..2000 {
                let bits = 1 + (next() % 30) as u32;
                let sum = ((next() >> 34) as i64 & ((1i64 << bits) - 1)).max(1);
                let mut acc = [0i64; 20];
                for a in acc.iter_mut() {
                    let r = next();
                    *a = match r % 4 {
                        // A weighted sum of int8 values: |acc| <= 128 · sum.
                        0 | 1 => {
                            ((r >> 8) as i64 % (128 * sum + 1)) * if r & 16 == 0 { 1 } else { -1 }
                        }
                        2 => (r >> 4) as i32 as i64,
                        _ => (r as i64) >> (r % 40),
                    };
                }
                let len = 1 + (next() % 20) as usize;
                let (acc, mut fast, mut reference) = (&acc[..len], [0i8; 20], [0i8; 20]);
                normalize_row_fast(acc, sum, m, &mut fast[..len]);
                normalize_row(acc, sum, m, &mut reference[..len]);
                assert_eq!(fast, reference, "sum {sum} multiplier {real} acc {acc:?}");
                cases += 1;
            }
        }
        assert_eq!(cases, 12000);
    }

    /// The byte-wise long division against the 64-bit one, at the ends and inside the range.
    #[test]
    #[cfg_attr(miri, ignore = "long sweep: too slow under Miri")]
    fn div_2_54_rounded_matches_u64_division() {
        let check = |d: u32| {
            let want = ((1u64 << 54) + d as u64 / 2) / d as u64;
            assert_eq!(div_2_54_rounded(d) as u64, want, "d = {d}");
        };
        for d in (1u32 << 23)..(1u32 << 23) + 5000 {
            check(d);
        }
        for d in (1u32 << 24) - 5000..(1u32 << 24) {
            check(d);
        }
        for d in ((1u32 << 23)..(1u32 << 24)).step_by(997) {
            check(d);
        }
    }
}
