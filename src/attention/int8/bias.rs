//! Position biases as integer logit offsets (ALiBi, T5), prepared once from the f32 [`Bias`].

use super::softmax::LOGIT_FRAC_BITS;
use crate::attention::{t5_bucket, Bias};
use crate::error::Error;

/// Largest query-key distance ALiBi distinguishes; farther keys get this distance's bias
/// (positions beyond 2^27 are far outside any microcontroller sequence).
pub const ALIBI_MAX_DISTANCE: usize = 1 << 27;

/// An additive position bias in the integer logit format of the int8 kernels: base-2 units
/// with [`LOGIT_FRAC_BITS`] fractional bits (a natural-log bias `b` is stored as
/// `round(b · log2(e) · 2^20)`). Build it with [`Int8Bias::from_bias`] (float, once), or fill
/// the integer slices yourself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Int8Bias<'a> {
    /// No bias.
    #[default]
    None,
    /// ALiBi: `-slopes[h] · min(|p - j|, ALIBI_MAX_DISTANCE)`, one slope per query head.
    Alibi {
        /// Per-head slopes in the logit format.
        slopes: &'a [i32],
    },
    /// T5 relative buckets: `table[h · num_buckets + bucket(j - p)]`.
    T5 {
        /// Whether keys after the query get their own buckets.
        bidirectional: bool,
        /// Buckets per head.
        num_buckets: usize,
        /// `heads × num_buckets` values in the logit format.
        table: &'a [i32],
        /// Where the logarithmic buckets start: `thresholds[i]` is the smallest distance in
        /// bucket `exact + i + 1` (`exact` = a quarter of the buckets when bidirectional, half
        /// otherwise); sorted, [`Int8Bias::t5_threshold_count`] entries.
        thresholds: &'a [u32],
    },
}

/// `log2(e)`: natural-log logits to base 2.
const LOG2_E: f64 = core::f64::consts::LOG2_E;

impl<'a> Int8Bias<'a> {
    /// `i32` elements of storage [`Int8Bias::from_bias`] needs for `bias` (`u32` thresholds
    /// of T5 go to their own buffer of [`Int8Bias::t5_threshold_count`] elements).
    pub fn storage_len(bias: &Bias<'_>) -> usize {
        match *bias {
            Bias::None => 0,
            Bias::Alibi { slopes } => slopes.len(),
            Bias::T5 { table, .. } => table.len(),
        }
    }

    /// Number of logarithmic-bucket thresholds of a T5 bias (0 for other biases).
    pub fn t5_threshold_count(bias: &Bias<'_>) -> usize {
        match *bias {
            Bias::T5 {
                bidirectional,
                num_buckets,
                ..
            } => {
                let buckets = if bidirectional {
                    num_buckets / 2
                } else {
                    num_buckets
                };
                buckets.saturating_sub(buckets / 2 + 1)
            }
            _ => 0,
        }
    }

    /// Converts an f32 bias (prepare step: uses float). `storage` holds
    /// [`storage_len`](Self::storage_len) `i32`s, `thresholds` holds
    /// [`t5_threshold_count`](Self::t5_threshold_count) `u32`s (may be empty otherwise); longer
    /// buffers are fine. `heads` is the number of query heads.
    ///
    /// Errors: the bias does not fit the heads ([`Error::InvalidBias`], as [`Bias::validate`]),
    /// a value whose integer form overflows `i32` (|b| ≥ 1488 natural-log units,
    /// [`Error::InvalidBias`]), short buffers ([`Error::ScratchTooSmall`]).
    pub fn from_bias(
        bias: &Bias<'_>,
        heads: usize,
        storage: &'a mut [i32],
        thresholds: &'a mut [u32],
    ) -> Result<Self, Error> {
        bias.validate(heads)?;
        let needed = Self::storage_len(bias);
        let found = storage.len();
        let storage = storage
            .get_mut(..needed)
            .ok_or(Error::ScratchTooSmall { needed, found })?;
        match *bias {
            Bias::None => Ok(Int8Bias::None),
            Bias::Alibi { slopes } => {
                for (o, &s) in storage.iter_mut().zip(slopes) {
                    *o = to_logit(s)?;
                }
                Ok(Int8Bias::Alibi { slopes: storage })
            }
            Bias::T5 {
                bidirectional,
                num_buckets,
                max_distance,
                table,
            } => {
                for (o, &b) in storage.iter_mut().zip(table) {
                    *o = to_logit(b)?;
                }
                let needed = Self::t5_threshold_count(bias);
                let found = thresholds.len();
                let thresholds = thresholds
                    .get_mut(..needed)
                    .ok_or(Error::ScratchTooSmall { needed, found })?;
                let buckets = if bidirectional {
                    num_buckets / 2
                } else {
                    num_buckets
                };
                let exact = buckets / 2;
                // The bucket of a key `d` positions before the query, from the f32 formula
                // the float kernels use (so both agree on every bucket edge).
                let large = |d: u64| {
                    let rel = -(d.min(i64::MAX as u64) as i64);
                    t5_bucket(rel, bidirectional, num_buckets, max_distance)
                };
                let top = (max_distance as u64).max(exact as u64 + 1);
                for (i, t) in thresholds.iter_mut().enumerate() {
                    let target = exact + i + 1;
                    // Smallest d in [exact, top] with large(d) >= target (monotone in d).
                    let (mut lo, mut hi) = (exact as u64, top);
                    if large(hi) < target {
                        *t = u32::MAX;
                        continue;
                    }
                    while lo < hi {
                        let mid = lo + (hi - lo) / 2;
                        if large(mid) >= target {
                            hi = mid;
                        } else {
                            lo = mid + 1;
                        }
                    }
                    *t = u32::try_from(lo).unwrap_or(u32::MAX);
                }
                Ok(Int8Bias::T5 {
                    bidirectional,
                    num_buckets,
                    table: storage,
                    thresholds,
                })
            }
        }
    }

    /// Checks the bias against the number of query heads (integer only).
    pub fn validate(&self, heads: usize) -> Result<(), Error> {
        match *self {
            Int8Bias::None => Ok(()),
            Int8Bias::Alibi { slopes } => {
                if slopes.len() == heads {
                    Ok(())
                } else {
                    Err(Error::InvalidBias)
                }
            }
            Int8Bias::T5 {
                bidirectional,
                num_buckets,
                table,
                thresholds,
            } => {
                let buckets = if bidirectional {
                    num_buckets / 2
                } else {
                    num_buckets
                };
                let exact = buckets / 2;
                let table_len = heads.checked_mul(num_buckets).ok_or(Error::ShapeOverflow)?;
                let sorted = thresholds.windows(2).all(|w| w[0] <= w[1]);
                if exact == 0
                    || table.len() != table_len
                    || thresholds.len() != buckets - exact - 1
                    || !sorted
                {
                    Err(Error::InvalidBias)
                } else {
                    Ok(())
                }
            }
        }
    }

    /// The bias of query head `head` at position `p` for key `j`; call
    /// [`validate`](Self::validate) first (an invalid bias adds 0). `|value| < 2^59`.
    #[inline]
    pub fn value(&self, head: usize, p: i64, j: usize) -> i64 {
        // `j - p` saturated to i64 (keys are slice indices, so `j <= isize::MAX`).
        let relative = i64::try_from(j).unwrap_or(i64::MAX).saturating_sub(p);
        let distance = |d: u64| usize::try_from(d).unwrap_or(usize::MAX);
        match *self {
            Int8Bias::None => 0,
            Int8Bias::Alibi { slopes } => {
                let distance = distance(relative.unsigned_abs()).min(ALIBI_MAX_DISTANCE) as i64;
                slopes.get(head).map_or(0, |&m| -(m as i64) * distance)
            }
            Int8Bias::T5 {
                bidirectional,
                num_buckets,
                table,
                thresholds,
            } => {
                let (offset, buckets, distance) = if bidirectional {
                    let half = num_buckets / 2;
                    let after = if relative > 0 { half } else { 0 };
                    (after, half, distance(relative.unsigned_abs()))
                } else {
                    (0, num_buckets, distance(relative.min(0).unsigned_abs()))
                };
                let exact = buckets / 2;
                let bucket = if distance < exact {
                    distance
                } else {
                    exact + thresholds.partition_point(|&t| t as usize <= distance)
                };
                table
                    .get(head * num_buckets + offset + bucket)
                    .map_or(0, |&b| b as i64)
            }
        }
    }
}

/// A natural-log bias as an `i32` base-2 logit with [`LOGIT_FRAC_BITS`] fractional bits.
fn to_logit(b: f32) -> Result<i32, Error> {
    let x = libm::round(b as f64 * LOG2_E * (1u64 << LOGIT_FRAC_BITS) as f64);
    if x.is_finite() && x.abs() < i32::MAX as f64 {
        Ok(x as i32)
    } else {
        Err(Error::InvalidBias)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(miri, ignore = "long sweep: too slow under Miri")]
    fn t5_buckets_match_the_float_formula() {
        for (bidirectional, num_buckets, max_distance) in [
            (true, 32, 128),
            (false, 32, 128),
            (true, 16, 32),
            (false, 8, 20),
        ] {
            let heads = 2;
            let table: [f32; 64] = core::array::from_fn(|i| i as f32 * 0.25 - 3.0);
            let table = &table[..heads * num_buckets];
            let bias = Bias::T5 {
                bidirectional,
                num_buckets,
                max_distance,
                table,
            };
            let mut storage = [0i32; 64];
            let mut thresholds = [0u32; 32];
            let int = Int8Bias::from_bias(&bias, heads, &mut storage, &mut thresholds).unwrap();
            int.validate(heads).unwrap();
            for p in [-20i64, 0, 5, 300] {
                for j in 0..400 {
                    for h in 0..heads {
                        let expected = libm::round(
                            bias.value(h, p, j) as f64 * LOG2_E * (1u64 << LOGIT_FRAC_BITS) as f64,
                        ) as i64;
                        assert_eq!(int.value(h, p, j), expected, "p {p} j {j} h {h}");
                    }
                }
            }
        }
    }

    #[test]
    fn alibi_is_slope_times_distance() {
        let slopes = [0.5f32, 0.125];
        let mut storage = [0i32; 2];
        let int = Int8Bias::from_bias(&Bias::Alibi { slopes: &slopes }, 2, &mut storage, &mut [])
            .unwrap();
        assert_eq!(
            int.value(0, 10, 7),
            -3 * (0.5 * LOG2_E * (1 << 20) as f64).round() as i64
        );
        assert_eq!(int.value(1, 10, 10), 0);
        assert_eq!(
            int.value(1, i64::MAX, 0),
            -(storage_of(&int)[1] as i64) * ALIBI_MAX_DISTANCE as i64
        );
    }

    fn storage_of<'a>(b: &Int8Bias<'a>) -> &'a [i32] {
        match *b {
            Int8Bias::Alibi { slopes } => slopes,
            _ => &[],
        }
    }

    #[test]
    fn bad_biases_are_rejected() {
        let mut storage = [0i32; 4];
        assert_eq!(
            Int8Bias::from_bias(&Bias::Alibi { slopes: &[1e9] }, 1, &mut storage, &mut []),
            Err(Error::InvalidBias)
        );
        assert_eq!(
            Int8Bias::from_bias(&Bias::Alibi { slopes: &[1.0] }, 2, &mut storage, &mut []),
            Err(Error::InvalidBias)
        );
        assert!(matches!(
            Int8Bias::from_bias(&Bias::Alibi { slopes: &[1.0; 8] }, 8, &mut storage, &mut []),
            Err(Error::ScratchTooSmall { .. })
        ));
        assert_eq!(
            Int8Bias::Alibi { slopes: &[1, 2] }.validate(3),
            Err(Error::InvalidBias)
        );
    }
}
