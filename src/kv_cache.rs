//! Incremental decoding: a fixed-capacity key/value cache and one decode step (the attention
//! of one new query row, all query heads, against the cached keys and values).
//!
//! # Layout
//!
//! Keys are `[kv_heads, capacity, d]` and values `[kv_heads, capacity, dv]`, row-major, in
//! caller-provided storage ([`KvCache::new`] over slices, [`KvCache::from_arrays`] over
//! const-generic arrays). A decode step reads the first `len` rows of each KV head, which
//! are contiguous, so it calls the attention kernel once per KV head with that head's group
//! of `heads / kv_heads` query heads (GQA; MQA is `kv_heads = 1`, MHA `kv_heads = heads`).
//! Work per step is O(len), or O(window) under a sliding-window mask.
//!
//! # Two modes
//!
//! - [`CacheMode::Linear`]: token `t` goes to slot `t`; slot = position. Appending to a full
//!   cache is [`Error::CacheFull`] (the cache is unchanged; [`KvCache::clear`] it or use a
//!   ring). Any mask term and position bias (ALiBi, T5) works, in absolute positions.
//! - [`CacheMode::Ring`]: a sliding window of `left = capacity - 1` keys
//!   (`MaskTerm::Sliding { left: window, right: 0 }` with causality), so a windowed model
//!   decodes forever in O(window) memory. Token `t` goes to slot `t % capacity`,
//!   overwriting the token `t - capacity`, the first one the window no longer sees. The
//!   query at position `p` (the token appended last) sees every filled slot, which hold
//!   exactly the positions `max(0, p - window)..=p`.
//!
//! # Why the ring is exact
//!
//! In the ring, keys sit in slot order, not position order. Softmax attention without a
//! position bias is a function of the *set* of (key, value) pairs — permuting the keys
//! permutes the logits and the weights alike and leaves `Σ softmax(z)_j v_j` unchanged —
//! so attending over the filled slots gives the output of full attention over the whole
//! history under the window mask (up to float summation order: a few ulp in f32; the int8
//! kernel's integer softmax is order-independent bar the rounding of its running rescale).
//!
//! A position bias breaks this: ALiBi and T5 need each key's position, and the kernels read
//! a key's position from its index. Ring mode therefore returns [`Error::InvalidBias`] for
//! any bias (use a linear cache for ALiBi/T5 models, or apply RoPE to `q`/`k` before
//! appending: rotary embeddings live in the vectors, not in the mask, and work in a ring).
//! Likewise the mask is the ring itself: ring mode accepts only the terms it implements
//! ([`MaskTerm::None`], [`MaskTerm::Causal`], `Sliding { left: window, .. }`) and returns
//! [`Error::InvalidMask`] for any other.
//!
//! # Element types
//!
//! - `f32`, `f16`, `bf16`: [`KvCache::attend`] runs [`sdpa_typed`] (storage in the element
//!   type, f32 arithmetic; `q` and `out` in the same type as the cache).
//!   [`KvCache::append_f32`] rounds a projection's f32 output into the cache.
//! - `i8`: [`KvCache::attend_int8`] runs the integer-only [`int8_sdpa`]. Scales are per
//!   tensor: every cached key shares one scale and every value another
//!   ([`KvCache::append_quantized`]), the ones the [`Int8SdpaParams`] are built with.
//!   Per-channel scales (one per feature, fixed) fit too, outside the cache, for the dot
//!   score: fold the key scales into `q` and apply the value scales to the output (as
//!   `models::q8` does). Per-token scales (one per cached row, set as the token arrives) do
//!   not: `int8_sdpa` folds the key scale into one logit multiplier per call and the value
//!   scale into one output multiplier, so it would need a per-key multiplier on the logit and
//!   on the value weight.
//!
//! # Protocol
//!
//! Per token: compute `q`, `k`, `v` for position [`KvCache::next_position`], [`append`] the
//! token's `k`/`v` (all KV heads), then [`attend`] with its `q`: the query sits at the
//! position of the token appended last, which it sees (causal self-attention). The cache
//! sets the mask's `q_pos_offset` itself; the caller's offset is ignored.
//!
//! [`append`]: KvCache::append
//! [`attend`]: KvCache::attend
//!
//! ```
//! use microattn::attention::SdpaParams;
//! use microattn::kv_cache::{decode_scratch_len, kv_cache_bytes, CacheMode, KvCache, KvShape};
//!
//! // Window 3 (a ring of 4 slots), 2 query heads sharing 1 KV head, head size 4.
//! const SHAPE: KvShape = KvShape::ring(1, 3, 4, 4);
//! let (mut k, mut v) = ([0.0f32; SHAPE.k_len()], [0.0f32; SHAPE.v_len()]);
//! assert_eq!(kv_cache_bytes::<f32>(SHAPE), 128);
//! let mut cache = KvCache::new(&mut k, &mut v, SHAPE, CacheMode::Ring)?;
//! let mut out = [0.0f32; 2 * 4];
//! let mut scratch = [0.0f32; decode_scratch_len(SHAPE)];
//! for t in 0..100 {
//!     let x = [t as f32 * 0.01; 4];
//!     cache.append(&x, &x)?;
//!     cache.attend(&[0.5; 8], &mut out, 2, &SdpaParams::default(), &mut scratch)?;
//! }
//! assert_eq!((cache.len(), cache.next_position()), (4, 100));
//! # Ok::<(), microattn::Error>(())
//! ```

use crate::attention::int8::{int8_sdpa, Int8Bias, Int8SdpaParams};
use crate::attention::{sdpa_typed, AttentionShape, Bias, SdpaParams};
use crate::element::Element;
use crate::error::{check_len, nonzero, product, Error};
use crate::mask::{Mask, MaskTerm};
use crate::quant::QParams;

/// The sizes of a cache: keys `[kv_heads, capacity, d]`, values `[kv_heads, capacity, dv]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct KvShape {
    /// Key/value heads.
    pub kv_heads: usize,
    /// Token slots per KV head.
    pub capacity: usize,
    /// Key feature size (the query's too).
    pub d: usize,
    /// Value feature size.
    pub dv: usize,
}

impl KvShape {
    /// A cache of `capacity` tokens.
    pub const fn new(kv_heads: usize, capacity: usize, d: usize, dv: usize) -> Self {
        KvShape {
            kv_heads,
            capacity,
            d,
            dv,
        }
    }

    /// The ring for a causal sliding window of `window` keys before the query:
    /// [`ring_capacity`]`(window)` slots.
    pub const fn ring(kv_heads: usize, window: usize, d: usize, dv: usize) -> Self {
        Self::new(kv_heads, ring_capacity(window), d, dv)
    }

    /// Elements of key storage, `kv_heads * capacity * d` (saturating; the constructors
    /// reject shapes that overflow).
    pub const fn k_len(self) -> usize {
        self.kv_heads
            .saturating_mul(self.capacity)
            .saturating_mul(self.d)
    }

    /// Elements of value storage, `kv_heads * capacity * dv` (saturating).
    pub const fn v_len(self) -> usize {
        self.kv_heads
            .saturating_mul(self.capacity)
            .saturating_mul(self.dv)
    }

    /// Checks the shape; returns the exact `(k_len, v_len)`.
    fn lengths(&self) -> Result<(usize, usize), Error> {
        nonzero(&[self.kv_heads, self.capacity, self.d, self.dv])?;
        Ok((
            product(&[self.kv_heads, self.capacity, self.d])?,
            product(&[self.kv_heads, self.capacity, self.dv])?,
        ))
    }
}

/// Slots of a ring serving a causal sliding window of `window` keys before the query: the
/// query's own key plus `window` older ones, `window + 1` (saturating).
pub const fn ring_capacity(window: usize) -> usize {
    window.saturating_add(1)
}

/// Bytes of key plus value storage of a cache of `shape` with elements `T` (`f32`, `f16`,
/// `bf16`, `i8`): `(k_len + v_len) * size_of::<T>()`, saturating. The cache adds no other
/// storage; its state is a few words.
pub const fn kv_cache_bytes<T>(shape: KvShape) -> usize {
    shape
        .k_len()
        .saturating_add(shape.v_len())
        .saturating_mul(core::mem::size_of::<T>())
}

/// f32 elements of scratch [`KvCache::attend`] needs: one output row (`dv`).
pub const fn decode_scratch_len(shape: KvShape) -> usize {
    shape.dv
}

/// `i64` elements of scratch [`KvCache::attend_int8`] needs: one accumulator row (`dv`).
pub const fn int8_decode_scratch_len(shape: KvShape) -> usize {
    shape.dv
}

/// Where the next token goes once the cache is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum CacheMode {
    /// Slot = position; appending to a full cache is [`Error::CacheFull`].
    Linear,
    /// Slot = position mod capacity; a sliding window of `capacity - 1` keys.
    Ring,
}

/// A key/value cache over borrowed storage with elements `T`: a float [`Element`] (attend
/// with [`KvCache::attend`]) or `i8` (attend with [`KvCache::attend_int8`]).
#[derive(Debug)]
pub struct KvCache<'a, T> {
    k: &'a mut [T],
    v: &'a mut [T],
    shape: KvShape,
    mode: CacheMode,
    /// Tokens appended since the start (saturating): the next token's position.
    tokens: u64,
}

impl<'a, T: Copy> KvCache<'a, T> {
    /// An empty cache over `k` (`[kv_heads, capacity, d]`) and `v` (`[kv_heads, capacity,
    /// dv]`). The storage needs no clearing: slots are written before they are read.
    ///
    /// Errors: a zero dimension (a zero capacity included), storage lengths that do not match
    /// the shape, a shape that overflows.
    pub fn new(
        k: &'a mut [T],
        v: &'a mut [T],
        shape: KvShape,
        mode: CacheMode,
    ) -> Result<Self, Error> {
        Self::resume(k, v, shape, mode, 0)
    }

    /// A cache whose storage already holds the first `tokens` tokens, as left by a cache of
    /// the same shape and mode after `tokens` appends: for callers that keep the storage
    /// (say, one buffer for all layers of a model) and only the token count between steps.
    ///
    /// Errors: as [`KvCache::new`]; [`Error::InvalidParameter`] for more tokens than a
    /// linear cache holds.
    pub fn resume(
        k: &'a mut [T],
        v: &'a mut [T],
        shape: KvShape,
        mode: CacheMode,
        tokens: u64,
    ) -> Result<Self, Error> {
        let (k_len, v_len) = shape.lengths()?;
        check_len(k, k_len)?;
        check_len(v, v_len)?;
        if mode == CacheMode::Linear && tokens > shape.capacity as u64 {
            return Err(Error::InvalidParameter);
        }
        Ok(KvCache {
            k,
            v,
            shape,
            mode,
            tokens,
        })
    }

    /// An empty cache over fixed-size arrays: `HKV` KV heads, `CAP` slots, feature sizes `D`
    /// and `DV`. Errors only for a zero size.
    pub fn from_arrays<const HKV: usize, const CAP: usize, const D: usize, const DV: usize>(
        k: &'a mut [[[T; D]; CAP]; HKV],
        v: &'a mut [[[T; DV]; CAP]; HKV],
        mode: CacheMode,
    ) -> Result<Self, Error> {
        Self::new(
            k.as_flattened_mut().as_flattened_mut(),
            v.as_flattened_mut().as_flattened_mut(),
            KvShape::new(HKV, CAP, D, DV),
            mode,
        )
    }

    /// The cache's sizes.
    pub fn shape(&self) -> KvShape {
        self.shape
    }

    /// Linear or ring.
    pub fn mode(&self) -> CacheMode {
        self.mode
    }

    /// Token slots per KV head.
    pub fn capacity(&self) -> usize {
        self.shape.capacity
    }

    /// Keys a query may see besides its own in ring mode (`capacity - 1`); `None` for a
    /// linear cache.
    pub fn window(&self) -> Option<usize> {
        match self.mode {
            CacheMode::Linear => None,
            CacheMode::Ring => Some(self.shape.capacity - 1),
        }
    }

    /// Filled slots: the keys the next decode step attends to.
    pub fn len(&self) -> usize {
        // `tokens <= capacity` in linear mode; a ring fills up and stays full.
        usize::try_from(self.tokens).map_or(self.shape.capacity, |t| t.min(self.shape.capacity))
    }

    /// Whether no token was appended yet.
    pub fn is_empty(&self) -> bool {
        self.tokens == 0
    }

    /// Whether a linear cache has no free slot (a ring is never full: it overwrites).
    pub fn is_full(&self) -> bool {
        self.mode == CacheMode::Linear && self.len() == self.shape.capacity
    }

    /// Tokens appended so far: the absolute position of the next token (for RoPE or a
    /// sinusoidal encoding); the token appended last is at `next_position() - 1`.
    pub fn next_position(&self) -> u64 {
        self.tokens
    }

    /// Forgets every token (the storage is left as it is; it is overwritten before use).
    pub fn clear(&mut self) {
        self.tokens = 0;
    }

    /// The slot the next token goes to.
    fn next_slot(&self) -> usize {
        match self.mode {
            CacheMode::Linear => self.len(),
            // `< capacity`, so the cast back is lossless.
            // (`capacity` is positive: the checked remainder only keeps a panic out.)
            CacheMode::Ring => self
                .tokens
                .checked_rem(self.shape.capacity as u64)
                .unwrap_or(0) as usize,
        }
    }

    /// The absolute position of the token in `slot`, or `None` for a slot not filled yet.
    pub fn slot_position(&self, slot: usize) -> Option<u64> {
        if slot >= self.len() {
            return None;
        }
        match self.mode {
            CacheMode::Linear => Some(slot as u64),
            CacheMode::Ring => {
                // The newest token is at `last` in slot `last % capacity`; `slot` holds the
                // newest position congruent to it, at most `capacity - 1` before `last`.
                let cap = self.shape.capacity as u64;
                let last = self.tokens - 1;
                // (`cap` is positive: the checked remainders only keep panics out.)
                let back = (last.checked_rem(cap).unwrap_or(0) + cap - slot as u64)
                    .checked_rem(cap)
                    .unwrap_or(0);
                Some(last - back)
            }
        }
    }

    /// The filled key rows of KV head `kv_head` in slot order, `[len, d]`
    /// ([`KvCache::slot_position`] gives each row's position). `None` for a head out of range.
    pub fn keys(&self, kv_head: usize) -> Option<&[T]> {
        // (Validated sizes are positive: `max` only keeps the chunking from asserting it.)
        let rows = (self.shape.capacity * self.shape.d).max(1);
        self.k
            .chunks_exact(rows)
            .nth(kv_head)
            .and_then(|h| h.get(..self.len() * self.shape.d))
    }

    /// The filled value rows of KV head `kv_head` in slot order, `[len, dv]`.
    pub fn values(&self, kv_head: usize) -> Option<&[T]> {
        let rows = (self.shape.capacity * self.shape.dv).max(1);
        self.v
            .chunks_exact(rows)
            .nth(kv_head)
            .and_then(|h| h.get(..self.len() * self.shape.dv))
    }

    /// Appends one token: its keys `k` (`[kv_heads, d]`) and values `v` (`[kv_heads, dv]`).
    ///
    /// Errors (the cache unchanged): wrong lengths; [`Error::CacheFull`] when a linear cache
    /// is full.
    pub fn append(&mut self, k: &[T], v: &[T]) -> Result<(), Error> {
        self.append_with(k, v, |x| x, |x| x)
    }

    /// Appends one token given in another type, converted element by element.
    fn append_with<S: Copy>(
        &mut self,
        k: &[S],
        v: &[S],
        fk: impl Fn(S) -> T,
        fv: impl Fn(S) -> T,
    ) -> Result<(), Error> {
        let KvShape {
            kv_heads,
            capacity,
            d,
            dv,
        } = self.shape;
        check_len(k, kv_heads * d)?;
        check_len(v, kv_heads * dv)?;
        if self.is_full() {
            return Err(Error::CacheFull);
        }
        let slot = self.next_slot();
        // Row `slot` of every head (`slot < capacity`; sizes are positive: `max` and `get` only
        // keep panics out of the code).
        let (k_head, v_head) = ((capacity * d).max(1), (capacity * dv).max(1));
        for (h, head) in self.k.chunks_exact_mut(k_head).enumerate() {
            let (Some(dst), Some(row)) = (
                head.get_mut(slot * d..(slot + 1) * d),
                k.get(h * d..(h + 1) * d),
            ) else {
                break;
            };
            for (o, &x) in dst.iter_mut().zip(row) {
                *o = fk(x);
            }
        }
        for (h, head) in self.v.chunks_exact_mut(v_head).enumerate() {
            let (Some(dst), Some(row)) = (
                head.get_mut(slot * dv..(slot + 1) * dv),
                v.get(h * dv..(h + 1) * dv),
            ) else {
                break;
            };
            for (o, &x) in dst.iter_mut().zip(row) {
                *o = fv(x);
            }
        }
        self.tokens = self.tokens.saturating_add(1);
        Ok(())
    }

    /// Checks a decode step's shapes and mask and calls
    /// `f(kv_head, q_group, k_head, v_head, out_group, shape, mask)` once per KV head, where
    /// `shape` is `group` query heads × 1 row over `len` keys and `mask` the step's mask.
    fn for_each_group<'m, Q, O>(
        &self,
        q: &[Q],
        out: &mut [O],
        heads: usize,
        terms: &'m [MaskTerm<'m>],
        has_bias: bool,
        mut f: impl FnMut(
            usize,
            &[Q],
            &[T],
            &[T],
            &mut [O],
            AttentionShape,
            Mask<'m>,
        ) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let KvShape {
            kv_heads,
            capacity,
            d,
            dv,
        } = self.shape;
        let len = self.len();
        // `lengths` checks `heads`, divisibility and the query/output sizes once for all
        // groups; `len == 0` (nothing appended) is a zero dimension.
        let shape = AttentionShape::multi_head(heads, kv_heads, 1, len, d, dv);
        let (q_len, _, _, out_len) = shape.lengths()?;
        check_len(q, q_len)?;
        check_len(out, out_len)?;
        let group = heads.checked_div(kv_heads).ok_or(Error::ZeroDimension)?;
        let mask = match self.mode {
            // The query is the token appended last: position `len - 1` = slot.
            CacheMode::Linear => Mask::new(terms).with_offset(len - 1),
            CacheMode::Ring => {
                check_ring_terms(terms, capacity - 1)?;
                if has_bias {
                    return Err(Error::InvalidBias);
                }
                // Every filled slot is inside the window (see the module docs).
                Mask::NONE
            }
        };
        let group_shape = AttentionShape::multi_head(group, 1, 1, len, d, dv);
        // KV head `g`'s query group, output group and filled rows. (Found by `get`, not by
        // zipping chunk iterators, whose out-of-line `zip` keeps a division by the chunk
        // size; every slice is there after the checks above.)
        let (q_group, out_group) = (group * d, group * dv);
        let (k_head, v_head) = (capacity * d, capacity * dv);
        for (g, out_g) in out.chunks_exact_mut(out_group.max(1)).enumerate() {
            let (Some(q_g), Some(k_h), Some(v_h)) = (
                q.get(g * q_group..(g + 1) * q_group),
                self.k.get(g * k_head..g * k_head + len * d),
                self.v.get(g * v_head..g * v_head + len * dv),
            ) else {
                return Err(Error::LengthMismatch {
                    expected: kv_heads * k_head,
                    found: self.k.len(),
                });
            };
            f(g, q_g, k_h, v_h, out_g, group_shape, mask)?;
        }
        Ok(())
    }
}

/// Ring mode implements `Causal` and `Sliding { left: window, .. }` by construction (keys
/// after the query do not exist yet); any other term would need keys by position.
fn check_ring_terms(terms: &[MaskTerm<'_>], window: usize) -> Result<(), Error> {
    let ok = terms.iter().all(|t| match *t {
        MaskTerm::None | MaskTerm::Causal => true,
        MaskTerm::Sliding { left, .. } => left == window,
        _ => false,
    });
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidMask)
    }
}

/// The part of `bias` (validated for all query heads) that the query heads of KV head `g`
/// (`group` of them) read: a per-call head index restarts at 0 in each group. A range that
/// cannot exist after validation gives an empty slice, which the kernel rejects.
fn group_bias(bias: Bias<'_>, g: usize, group: usize) -> Bias<'_> {
    match bias {
        Bias::None => Bias::None,
        Bias::Alibi { slopes } => Bias::Alibi {
            slopes: group_slice(slopes, g, group),
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
            table: group_slice(table, g, group.saturating_mul(num_buckets)),
        },
    }
}

/// [`group_bias`] for the int8 bias.
fn group_int8_bias(bias: Int8Bias<'_>, g: usize, group: usize) -> Int8Bias<'_> {
    match bias {
        Int8Bias::None => Int8Bias::None,
        Int8Bias::Alibi { slopes } => Int8Bias::Alibi {
            slopes: group_slice(slopes, g, group),
        },
        Int8Bias::T5 {
            bidirectional,
            num_buckets,
            table,
            thresholds,
        } => Int8Bias::T5 {
            bidirectional,
            num_buckets,
            table: group_slice(table, g, group.saturating_mul(num_buckets)),
            thresholds,
        },
    }
}

/// Chunk `g` of `n` elements, or an empty slice when `x` is too short.
fn group_slice<T>(x: &[T], g: usize, n: usize) -> &[T] {
    x.chunks_exact(n.max(1)).nth(g).unwrap_or(&[])
}

impl<E: Element> KvCache<'_, E> {
    /// Appends one token given in f32 (a projection's output), rounded to `E`.
    /// Errors: as [`KvCache::append`].
    pub fn append_f32(&mut self, k: &[f32], v: &[f32]) -> Result<(), Error> {
        self.append_with(k, v, E::from_f32, E::from_f32)
    }

    /// One decode step: attention of the query `q` (`[heads, d]`, one row per query head) at
    /// the position of the token appended last over the cached keys and values, into `out`
    /// (`[heads, dv]`), with [`sdpa_typed`] once per KV head. `scratch` holds
    /// [`decode_scratch_len`] f32s.
    ///
    /// `params` gives the scale, score, mask terms and bias; its `q_pos_offset` is replaced
    /// by the query's position. In ring mode the only allowed terms are `None`, `Causal` and
    /// `Sliding { left: window, .. }` ([`Error::InvalidMask`] otherwise) and the bias must
    /// be `None` ([`Error::InvalidBias`]).
    ///
    /// Errors: nothing appended yet ([`Error::ZeroDimension`]), `heads` zero or not a
    /// multiple of `kv_heads`, wrong `q`/`out` lengths, short scratch, and the kernel's
    /// parameter errors.
    pub fn attend(
        &self,
        q: &[E],
        out: &mut [E],
        heads: usize,
        params: &SdpaParams<'_>,
        scratch: &mut [f32],
    ) -> Result<(), Error> {
        let has_bias = params.bias != Bias::None;
        params.bias.validate(heads)?;
        self.for_each_group(
            q,
            out,
            heads,
            params.mask.terms,
            has_bias,
            |g, q, k, v, out, shape, mask| {
                let bias = group_bias(params.bias, g, shape.heads);
                let step = SdpaParams {
                    mask,
                    bias,
                    ..*params
                };
                sdpa_typed(q, k, v, out, shape, &step, scratch)
            },
        )
    }
}

impl KvCache<'_, i8> {
    /// Appends one token given in f32, quantized with per-tensor scales: keys with `k_q`,
    /// values with `v_q` (round half away from zero, saturated to `[-127, 127]`). Every
    /// token of a cache must use the same two scales, the ones the [`Int8SdpaParams`] of
    /// [`KvCache::attend_int8`] are built with. Errors: as [`KvCache::append`].
    pub fn append_quantized(
        &mut self,
        k: &[f32],
        v: &[f32],
        k_q: QParams,
        v_q: QParams,
    ) -> Result<(), Error> {
        self.append_with(k, v, |x| k_q.quantize(x), |x| v_q.quantize(x))
    }

    /// One int8 decode step with the integer-only kernel [`int8_sdpa`], once per KV head:
    /// the int8 query `q` (`[heads, d]`) over the cached int8 keys and values into the int8
    /// `out` (`[heads, dv]`). `params` carries the per-tensor scales of `q`, the cached keys
    /// and values and `out` (built with [`Int8SdpaParams::new`] or stored integers), the
    /// score, mask terms and bias; its `q_pos_offset` is replaced by the query's position.
    /// `scratch` holds [`int8_decode_scratch_len`] `i64`s.
    ///
    /// Ring-mode restrictions and errors as [`KvCache::attend`] (the int8 bias is checked
    /// the same way), plus the int8 kernel's limits.
    pub fn attend_int8(
        &self,
        q: &[i8],
        out: &mut [i8],
        heads: usize,
        params: &Int8SdpaParams<'_>,
        scratch: &mut [i64],
    ) -> Result<(), Error> {
        let has_bias = params.bias != Int8Bias::None;
        params.bias.validate(heads)?;
        self.for_each_group(
            q,
            out,
            heads,
            params.mask.terms,
            has_bias,
            |g, q, k, v, out, shape, mask| {
                let bias = group_int8_bias(params.bias, g, shape.heads);
                let step = Int8SdpaParams {
                    mask,
                    bias,
                    ..*params
                };
                int8_sdpa(q, k, v, out, shape, &step, scratch)
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_slots_know_their_positions() {
        let shape = KvShape::ring(1, 2, 1, 1);
        let (mut k, mut v) = ([0i8; 3], [0i8; 3]);
        let mut cache = KvCache::new(&mut k, &mut v, shape, CacheMode::Ring).unwrap();
        for t in 0..7u8 {
            cache.append(&[t as i8], &[t as i8]).unwrap();
        }
        // Positions 4, 5, 6 in slots 1, 2, 0.
        assert_eq!(cache.keys(0), Some(&[6i8, 4, 5][..]));
        let positions: [Option<u64>; 4] = core::array::from_fn(|s| cache.slot_position(s));
        assert_eq!(positions, [Some(6), Some(4), Some(5), None]);
    }
}
