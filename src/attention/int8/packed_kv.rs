//! An int8 key/value cache kept packed into 16-bit pairs, for decoding on the Cortex-M DSP
//! cores.
//!
//! [`int8_sdpa`](super::int8_sdpa) packs a head's keys and values once per call when it has
//! two or more query rows to share the cost; a decode step has one, and would pay the packing
//! again at every step. [`Int8PackedKv`] packs each key and value row once, when it is
//! appended, so [`int8_sdpa_packed_kv`] reads the pairs its `SMLAD` loops want directly. The
//! int8 output is the same as [`int8_sdpa`](super::int8_sdpa)'s over the same keys and values
//! in row-major form, on every target (elsewhere than the DSP cores the packed loops are
//! plain Rust, and no faster).

use super::score::{Int8Logits, MAX_D};
use super::sdpa::{
    attend_rows, int8_sdpa_scratch_len, validate_params, HeadKv, Int8SdpaParams, PackedHead, MAX_LK,
};
use crate::arch::int8_packed::{
    pack_key_at, pack_value_at, packed_keys_words, packed_values_words,
};
use crate::attention::AttentionShape;
use crate::error::{check_len, Error};

/// `u32` words of storage an [`Int8PackedKv`] of `capacity` rows needs (saturating).
///
/// ```
/// use microattn::attention::int8::int8_packed_kv_words;
/// // 256 keys and values of 64 bytes: 64 KiB, twice the int8 rows.
/// assert_eq!(int8_packed_kv_words(256, 64, 64), 16384);
/// ```
pub const fn int8_packed_kv_words(capacity: usize, d: usize, dv: usize) -> usize {
    packed_keys_words(capacity, d).saturating_add(packed_values_words(capacity, dv))
}

/// A single-head int8 key/value cache of up to `capacity` rows, stored packed in
/// caller-provided words ([`int8_packed_kv_words`]); keys of `d` bytes and value rows of `dv`
/// bytes, both multiples of 4.
///
/// ```
/// use microattn::attention::int8::{int8_packed_kv_words, Int8PackedKv};
/// let mut storage = [0u32; int8_packed_kv_words(8, 4, 4)];
/// let mut cache = Int8PackedKv::new(&mut storage, 8, 4, 4)?;
/// cache.push(&[1, 2, 3, 4], &[5, 6, 7, 8])?;
/// assert_eq!(cache.len(), 1);
/// # Ok::<(), microattn::Error>(())
/// ```
#[derive(Debug)]
pub struct Int8PackedKv<'a> {
    keys: &'a mut [u32],
    values: &'a mut [u32],
    capacity: usize,
    d: usize,
    dv: usize,
    len: usize,
}

impl<'a> Int8PackedKv<'a> {
    /// An empty cache in `storage` (zeroed here: the padding of the packed layout must be
    /// zero). Errors: [`Error::InvalidParameter`] for a zero size, `d` or `dv` not a multiple
    /// of 4, `d >` [`MAX_D`] or `capacity >` [`MAX_LK`];
    /// [`Error::LengthMismatch`] when `storage` is shorter than [`int8_packed_kv_words`].
    pub fn new(
        storage: &'a mut [u32],
        capacity: usize,
        d: usize,
        dv: usize,
    ) -> Result<Self, Error> {
        let sizes_ok = capacity > 0 && d > 0 && dv > 0 && d % 4 == 0 && dv % 4 == 0;
        if !sizes_ok || d > MAX_D || capacity > MAX_LK {
            return Err(Error::InvalidParameter);
        }
        let needed = int8_packed_kv_words(capacity, d, dv);
        let found = storage.len();
        let storage = storage.get_mut(..needed).ok_or(Error::LengthMismatch {
            expected: needed,
            found,
        })?;
        storage.fill(0);
        let (keys, values) = storage
            .split_at_mut_checked(packed_keys_words(capacity, d))
            .ok_or(Error::ShapeOverflow)?;
        Ok(Int8PackedKv {
            keys,
            values,
            capacity,
            d,
            dv,
            len: 0,
        })
    }

    /// Appends one key (`d` bytes) and value row (`dv` bytes), packing them. Errors:
    /// [`Error::LengthMismatch`] for other lengths, [`Error::CacheFull`] at `capacity` rows.
    pub fn push(&mut self, k: &[i8], v: &[i8]) -> Result<(), Error> {
        check_len(k, self.d)?;
        check_len(v, self.dv)?;
        if self.len == self.capacity {
            return Err(Error::CacheFull);
        }
        pack_key_at(k, self.len, self.keys)?;
        pack_value_at(v, self.len, self.capacity, self.values)?;
        self.len += 1;
        Ok(())
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no row is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Rows the storage has room for.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Empties the cache (the storage is zeroed again).
    pub fn clear(&mut self) {
        self.keys.fill(0);
        self.values.fill(0);
        self.len = 0;
    }
}

/// Int8 attention of `lq` query rows `q` (`[lq, d]`) over the rows of `kv`, into `out`
/// (`[lq, dv]`): what [`int8_sdpa`](super::int8_sdpa) gives for the same keys and values
/// row-major, with `AttentionShape::single(lq, kv.len(), d, dv)` (masks and biases
/// included). `scratch` holds [`int8_sdpa_scratch_len`] `i64`s of that shape.
///
/// Errors: as [`int8_sdpa`](super::int8_sdpa), an empty cache
/// ([`Error::InvalidParameter`]), and [`Error::InvalidParameter`] for a score other than
/// the dot product (the others read the int8 rows, which the cache does not keep).
///
/// ```
/// use microattn::attention::int8::{
///     int8_packed_kv_words, int8_sdpa_packed_kv, Int8Bias, Int8PackedKv, Int8Scales,
///     Int8SdpaParams,
/// };
/// use microattn::attention::Score;
/// use microattn::mask::Mask;
/// let mut storage = [0u32; int8_packed_kv_words(4, 4, 4)];
/// let mut cache = Int8PackedKv::new(&mut storage, 4, 4, 4)?;
/// cache.push(&[100, 0, 0, 0], &[100, 0, 0, 0])?;
/// cache.push(&[0, 100, 0, 0], &[0, 100, 0, 0])?;
/// let scales = Int8Scales { q: 0.01, k: 0.01, v: 0.01, out: 0.01 };
/// let params = Int8SdpaParams::new(scales, 4, Score::Dot, None, Mask::NONE, Int8Bias::None)?;
/// let mut out = [0i8; 4];
/// int8_sdpa_packed_kv(&[100, 0, 0, 0], &cache, &mut out, &params, &mut [0i64; 4])?;
/// // Weights e^0.5 and e^0 over 1.65: 0.62 and 0.38.
/// assert_eq!(out, [62, 38, 0, 0]);
/// # Ok::<(), microattn::Error>(())
/// ```
pub fn int8_sdpa_packed_kv(
    q: &[i8],
    kv: &Int8PackedKv<'_>,
    out: &mut [i8],
    params: &Int8SdpaParams<'_>,
    scratch: &mut [i64],
) -> Result<(), Error> {
    if !matches!(params.logits, Int8Logits::Dot { .. }) || kv.len == 0 {
        return Err(Error::InvalidParameter);
    }
    let lq = q.len() / kv.d;
    if lq == 0 || q.len() % kv.d != 0 {
        return Err(Error::LengthMismatch {
            expected: kv.d,
            found: q.len(),
        });
    }
    let shape = AttentionShape::single(lq, kv.len, kv.d, kv.dv);
    let (_, _, _, out_len) = shape.lengths()?;
    check_len(out, out_len)?;
    validate_params(shape, params)?;
    let needed = int8_sdpa_scratch_len(shape);
    let found = scratch.len();
    let acc = scratch
        .get_mut(..needed)
        .ok_or(Error::ScratchTooSmall { needed, found })?;
    let head = HeadKv {
        lk: kv.len,
        k: &[],
        v: &[],
        packed: Some(PackedHead {
            keys: kv.keys,
            values: kv.values,
            capacity: kv.capacity,
        }),
    };
    attend_rows(q, kv.d, &head, out, 0, params, acc);
    Ok(())
}
