//! Position encodings: sinusoidal (a table or added on the fly), learned absolute tables, and
//! rotary embeddings (RoPE) in both common layouts, applied in place.
//!
//! The relative biases live with the attention kernels that add them to the logits:
//! ALiBi and T5 buckets are [`Bias`] variants (re-exported here), [`alibi_slopes`] fills the
//! standard ALiBi slopes.
//!
//! Every encoding rotates or offsets feature pair `k` by the angle `pos * base^(-2k/dim)`.
//! That angle is formed and reduced modulo 2π in f64 before the f32 `sin`/`cos`: an f32
//! product `pos * freq` carries an absolute error of about `pos * 6e-8` rad, which at
//! position 4096 already exceeds the f32 accuracy bound, while the f64 angle stays exact
//! to f32 precision for any position below 2^40. On cores without a double-precision FPU this
//! costs a few soft-float operations per (position, pair), not per element.
//!
//! All functions work on any [`Element`] (`f32`, `f16`, `bf16`): values are read as f32,
//! rotated or offset in f32, and rounded once when written back. None needs scratch.
//!
//! ```
//! use microattn::position::{rope, RopeLayout, RopeParams};
//! // Two heads of three positions, head size 4, decoding from position 10.
//! let mut x = [1.0f32; 2 * 3 * 4];
//! let params = RopeParams { pos_offset: 10, ..RopeParams::new(RopeLayout::Half) };
//! rope(&mut x, 2, 3, 4, &params)?;
//! // A rotation keeps the length of each pair.
//! assert!((x[0] * x[0] + x[2] * x[2] - 2.0).abs() < 1e-6);
//! # Ok::<(), microattn::Error>(())
//! ```

pub use crate::attention::{t5_bucket, Bias};

use crate::element::Element;
use crate::error::{check_len, mul, nonzero, product, Error};
use crate::layers::Footprint;
use crate::math::{cos, sin};

/// Which features RoPE rotates together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum RopeLayout {
    /// Pair `k` is features `2k` and `2k+1` (llama2.c, Meta's LLaMA, GPT-J).
    Interleaved,
    /// Pair `k` is features `k` and `k + dim/2`: `rotate_half` (GPT-NeoX, Hugging Face LLaMA).
    Half,
}

/// How RoPE rotates: layout, frequency base and the position of row 0.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RopeParams {
    /// Pairing of features.
    pub layout: RopeLayout,
    /// Frequency base (10000 in most models); finite and positive.
    pub base: f32,
    /// Absolute position of row 0 (the number of tokens already in a KV cache when decoding).
    pub pos_offset: usize,
}

impl RopeParams {
    /// `layout` with base 10000 and rows starting at position 0.
    pub const fn new(layout: RopeLayout) -> Self {
        RopeParams {
            layout,
            base: 10000.0,
            pos_offset: 0,
        }
    }
}

/// `base^(-2k/dim)`, the angular frequency of feature pair `k`, in f64.
#[inline]
fn inverse_frequency(k: usize, dim: usize, base: f32) -> f64 {
    libm::pow(base as f64, -((2 * k) as f64) / dim as f64)
}

/// `(sin, cos)` of `pos * inv_freq`, the angle reduced modulo 2π in f64 first.
#[inline]
fn sin_cos(pos: f64, inv_freq: f64) -> (f32, f32) {
    const TAU: f64 = core::f64::consts::TAU;
    let angle = pos * inv_freq;
    // `TAU` is 2π to 2.5e-16, so `turns * TAU` adds at most `turns * 2.5e-16` rad: nothing at
    // f32 precision.
    let turns = libm::round(angle / TAU);
    let mut reduced = angle - turns * TAU;
    // Past about 2^60 rad the product `turns * TAU` is off by more than a turn (and past
    // 1e54 by more than f32::MAX): take the exact remainder instead. Such a position has no
    // meaningful phase left anyway; the point is a finite value.
    if libm::fabs(reduced) > TAU {
        reduced = libm::fmod(angle, TAU);
    }
    let reduced = reduced as f32;
    (sin(reduced), cos(reduced))
}

/// Absolute position of row `row` as f64 (exact below 2^53, no overflow).
#[inline]
fn position(pos_offset: usize, row: usize) -> f64 {
    pos_offset as f64 + row as f64
}

/// A frequency base must be finite and positive.
fn check_base(base: f32) -> Result<(), Error> {
    if base.is_finite() && base > 0.0 {
        Ok(())
    } else {
        Err(Error::InvalidParameter)
    }
}

/// Rotary position embedding of `x` in place: `x` is `[heads, len, dim]` row-major (`heads = 1`
/// for `[len, dim]`); row `l` sits at position `params.pos_offset + l` and its feature pair
/// `k` (see [`RopeLayout`]) is rotated by the angle `pos * base^(-2k/dim)`:
/// `(a, b) -> (a cos - b sin, a sin + b cos)`.
///
/// Errors: a zero dimension, an odd `dim`, `x.len() != heads * len * dim`, a base that is not
/// finite and positive. Needs no scratch ([`rope_footprint`]).
pub fn rope<E: Element>(
    x: &mut [E],
    heads: usize,
    len: usize,
    dim: usize,
    params: &RopeParams,
) -> Result<(), Error> {
    nonzero(&[heads, len, dim])?;
    if dim % 2 != 0 {
        return Err(Error::InvalidParameter);
    }
    check_base(params.base)?;
    check_len(x, product(&[heads, len, dim])?)?;
    let half = dim / 2;
    // Pair-major order: one `pow` per pair and one `sin`/`cos` per (pair, position), shared by
    // every head. (`len * dim` is positive: `max` only keeps the chunking from asserting it.)
    let head_len = (len * dim).max(1);
    for k in 0..half {
        let inv_freq = inverse_frequency(k, dim, params.base);
        for l in 0..len {
            let (s, c) = sin_cos(position(params.pos_offset, l), inv_freq);
            for head in x.chunks_exact_mut(head_len) {
                let row = head.get_mut(l * dim..(l + 1) * dim);
                if let Some((xa, xb)) = row.and_then(|row| pair(row, params.layout, k, half)) {
                    let (a, b) = (xa.to_f32(), xb.to_f32());
                    *xa = E::from_f32(a * c - b * s);
                    *xb = E::from_f32(a * s + b * c);
                }
            }
        }
    }
    Ok(())
}

/// Feature pair `k` of a row of `2 * half` features in `layout`, or `None` past the row (never
/// for `k < half`: the lookups only keep panics out of the code).
#[inline]
fn pair<E>(row: &mut [E], layout: RopeLayout, k: usize, half: usize) -> Option<(&mut E, &mut E)> {
    match layout {
        RopeLayout::Interleaved => match row.get_mut(2 * k..2 * k + 2) {
            Some([a, b]) => Some((a, b)),
            _ => None,
        },
        RopeLayout::Half => {
            let (first, second) = row.split_at_mut_checked(half)?;
            Some((first.get_mut(k)?, second.get_mut(k)?))
        }
    }
}

/// Memory of [`rope`]: no weights, no scratch, no state.
pub const fn rope_footprint() -> Footprint {
    Footprint::NONE
}

/// Fixed-size [`rope`] on `[L, D]`: errors only for an odd `D`, a zero size or a bad base.
pub fn rope_fixed<E: Element, const L: usize, const D: usize>(
    x: &mut [[E; D]; L],
    params: &RopeParams,
) -> Result<(), Error> {
    rope(x.as_flattened_mut(), 1, L, D, params)
}

/// Fixed-size [`rope`] on `[H, L, D]`.
pub fn rope_heads_fixed<E: Element, const H: usize, const L: usize, const D: usize>(
    x: &mut [[[E; D]; L]; H],
    params: &RopeParams,
) -> Result<(), Error> {
    rope(x.as_flattened_mut().as_flattened_mut(), H, L, D, params)
}

/// Checks the shape of a `[len, dim]` buffer and the base of a sinusoidal encoding.
fn check_sinusoidal<E>(x: &[E], len: usize, dim: usize, base: f32) -> Result<(), Error> {
    nonzero(&[len, dim])?;
    check_base(base)?;
    check_len(x, mul(len, dim)?)
}

/// Calls `f(row, feature, value)` for every entry of the sinusoidal table of `len` rows from
/// position `pos_offset`: `sin(pos * base^(-2k/dim))` at feature `2k`, `cos` at `2k + 1`.
/// An odd `dim` ends with a sine column.
fn for_each_sinusoid(
    len: usize,
    dim: usize,
    pos_offset: usize,
    base: f32,
    mut f: impl FnMut(usize, usize, f32),
) {
    for k in 0..dim.div_ceil(2) {
        let inv_freq = inverse_frequency(k, dim, base);
        for l in 0..len {
            let (s, c) = sin_cos(position(pos_offset, l), inv_freq);
            f(l, 2 * k, s);
            if 2 * k + 1 < dim {
                f(l, 2 * k + 1, c);
            }
        }
    }
}

/// Fills `pe` (`[len, dim]`) with the sinusoidal encoding of "Attention Is All You Need" for
/// positions `pos_offset ..`: `pe[l][2k] = sin(pos / base^(2k/dim))`,
/// `pe[l][2k+1] = cos(pos / base^(2k/dim))`, with `pos = pos_offset + l`.
///
/// Errors: a zero dimension, `pe.len() != len * dim`, a base that is not finite and positive.
/// The table is [`sinusoidal_footprint`] elements.
///
/// ```
/// use microattn::position::sinusoidal_table;
/// let mut pe = [0.0f32; 3 * 4];
/// sinusoidal_table(&mut pe, 3, 4, 0, 10000.0)?;
/// assert_eq!(&pe[..4], &[0.0, 1.0, 0.0, 1.0]); // position 0: sin 0, cos 0
/// # Ok::<(), microattn::Error>(())
/// ```
pub fn sinusoidal_table<E: Element>(
    pe: &mut [E],
    len: usize,
    dim: usize,
    pos_offset: usize,
    base: f32,
) -> Result<(), Error> {
    check_sinusoidal(pe, len, dim, base)?;
    for_each_sinusoid(len, dim, pos_offset, base, |l, f, v| {
        // In bounds after `check_sinusoidal`; `get_mut` only keeps a panic out of the code.
        if let Some(e) = pe.get_mut(l * dim + f) {
            *e = E::from_f32(v);
        }
    });
    Ok(())
}

/// Adds the sinusoidal encoding of positions `pos_offset ..` to `x` (`[len, dim]`) on the fly,
/// without a table. Same values and errors as [`sinusoidal_table`].
pub fn sinusoidal_add<E: Element>(
    x: &mut [E],
    len: usize,
    dim: usize,
    pos_offset: usize,
    base: f32,
) -> Result<(), Error> {
    check_sinusoidal(x, len, dim, base)?;
    for_each_sinusoid(len, dim, pos_offset, base, |l, f, v| {
        // In bounds after `check_sinusoidal`; `get_mut` only keeps a panic out of the code.
        if let Some(e) = x.get_mut(l * dim + f) {
            *e = E::from_f32(e.to_f32() + v);
        }
    });
    Ok(())
}

/// Fixed-size [`sinusoidal_table`].
pub fn sinusoidal_table_fixed<E: Element, const L: usize, const D: usize>(
    pe: &mut [[E; D]; L],
    pos_offset: usize,
    base: f32,
) -> Result<(), Error> {
    sinusoidal_table(pe.as_flattened_mut(), L, D, pos_offset, base)
}

/// Memory of a sinusoidal table of `len` positions and `dim` features (held as weights; the
/// on-the-fly [`sinusoidal_add`] needs none).
pub const fn sinusoidal_footprint(len: usize, dim: usize) -> Footprint {
    Footprint {
        weights: len.saturating_mul(dim),
        ..Footprint::NONE
    }
}

/// Adds rows `pos_offset .. pos_offset + len` of a learned absolute position table
/// (`[max_len, dim]`, as `nn.Embedding` weights) to `x` (`[len, dim]`).
///
/// Errors: a zero dimension, `x.len() != len * dim`, a table whose length is not a multiple
/// of `dim`, or positions past the table's last row ([`Error::InvalidParameter`]).
///
/// ```
/// use microattn::position::learned_add;
/// let table = [0.0f32, 0.0, 1.0, 1.0, 2.0, 2.0]; // 3 positions, dim 2
/// let mut x = [10.0f32; 4];
/// learned_add(&mut x, &table, 2, 2, 1)?; // positions 1 and 2
/// assert_eq!(x, [11.0, 11.0, 12.0, 12.0]);
/// # Ok::<(), microattn::Error>(())
/// ```
pub fn learned_add<E: Element>(
    x: &mut [E],
    table: &[E],
    len: usize,
    dim: usize,
    pos_offset: usize,
) -> Result<(), Error> {
    nonzero(&[len, dim])?;
    check_len(x, mul(len, dim)?)?;
    if table.len() % dim != 0 {
        return Err(Error::LengthMismatch {
            expected: table.len() / dim * dim,
            found: table.len(),
        });
    }
    // Positions whose offsets overflow are past any table.
    let end = pos_offset.checked_add(len).ok_or(Error::InvalidParameter)?;
    let (start, end) = match (pos_offset.checked_mul(dim), end.checked_mul(dim)) {
        (Some(start), Some(end)) => (start, end),
        _ => return Err(Error::InvalidParameter),
    };
    let rows = table.get(start..end).ok_or(Error::InvalidParameter)?;
    for (xi, &t) in x.iter_mut().zip(rows) {
        *xi = E::from_f32(xi.to_f32() + t.to_f32());
    }
    Ok(())
}

/// Memory of a learned table of `max_len` positions and `dim` features.
pub const fn learned_footprint(max_len: usize, dim: usize) -> Footprint {
    Footprint {
        weights: max_len.saturating_mul(dim),
        ..Footprint::NONE
    }
}

/// The ALiBi slopes of `slopes.len()` heads, as in the ALiBi paper's reference code: for `n`
/// a power of two, `m_h = 2^(-8 (h+1) / n)`; otherwise the `c` slopes of the largest power of
/// two `c < n` followed by every other slope of `2c`. Use them as [`Bias::Alibi`].
///
/// Errors: no heads ([`Error::ZeroDimension`]).
///
/// ```
/// let mut slopes = [0.0f32; 8];
/// microattn::position::alibi_slopes(&mut slopes)?;
/// assert_eq!(slopes[0], 0.5);
/// assert_eq!(slopes[7], 1.0 / 256.0);
/// # Ok::<(), microattn::Error>(())
/// ```
pub fn alibi_slopes(slopes: &mut [f32]) -> Result<(), Error> {
    let n = slopes.len();
    nonzero(&[n])?;
    // Largest power of two not above n.
    let c = 1usize << (usize::BITS - 1 - n.leading_zeros());
    for (h, m) in slopes.iter_mut().enumerate() {
        let exponent = if h < c {
            -8.0 * (h + 1) as f64 / c as f64
        } else {
            // Slopes 0, 2, 4, ... of 2c heads: 2^(-8 (2j + 1) / 2c).
            let j = h - c;
            -8.0 * (2 * j + 1) as f64 / (2 * c) as f64
        };
        *m = libm::exp2(exponent) as f32;
    }
    Ok(())
}
