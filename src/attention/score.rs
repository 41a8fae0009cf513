//! How a query and a key become a logit: score functions and additive position biases.

use crate::element::Element;
use crate::error::Error;
use crate::math::sqrt;

/// The similarity between a query and a key, before the softmax.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Score {
    /// `scale * q·k` (Transformer attention).
    #[default]
    Dot,
    /// `scale * q·k / (max(|q|, 1e-8) * max(|k|, 1e-8))`.
    Cosine,
    /// `-scale * |q - k|²`.
    NegSqL2,
    /// `-scale * |q - k|₁`.
    NegL1,
}

/// Norms below this count as this, so a zero vector has cosine 0 with everything (as
/// `torch.nn.functional.cosine_similarity`).
pub(crate) const COSINE_EPS: f32 = 1e-8;

impl Score {
    /// `|q|` clamped as the cosine score needs it (1 for the other scores, which ignore it).
    #[inline]
    pub(crate) fn query_norm<E: Element>(self, q: &[E]) -> f32 {
        match self {
            Score::Cosine => sqrt(E::dot(q, q)).max(COSINE_EPS),
            _ => 1.0,
        }
    }

    /// The unscaled-by-bias logit of `q` and `k`; `q_norm` from [`Score::query_norm`].
    #[inline]
    pub(crate) fn logit<E: Element>(self, q: &[E], k: &[E], q_norm: f32, scale: f32) -> f32 {
        match self {
            Score::Cosine => {
                let k_norm = sqrt(E::dot(k, k)).max(COSINE_EPS);
                let q_dot_k = E::dot(q, k);
                if q_norm.is_finite() && k_norm.is_finite() && q_dot_k.is_finite() {
                    scale * (q_dot_k / q_norm / k_norm)
                } else {
                    scale * cosine_rescaled(q, k)
                }
            }
            Score::Dot | Score::NegSqL2 | Score::NegL1 => {
                let fast = match self {
                    Score::Dot => scale * E::dot(q, k),
                    Score::NegSqL2 => -scale * E::sq_l2_distance(q, k),
                    _ => -scale * E::l1_distance(q, k),
                };
                // A sum that overflowed f32 gives inf (possibly of the wrong size) or
                // `inf - inf = NaN`: recompute it rescaled, so only non-finite inputs give a
                // non-finite logit.
                if fast.is_finite() {
                    fast
                } else {
                    self.distance_rescaled(q, k, scale)
                }
            }
        }
    }

    /// The slow path of the dot and distance scores for inputs whose sums overflow f32: `q`
    /// and `k` are divided by powers of two (exact, bar the underflow of elements far below
    /// the largest) so no sum exceeds a few times the number of terms; the result is scaled
    /// back and saturated at `±f32::MAX`.
    #[cold]
    fn distance_rescaled<E: Element>(self, q: &[E], k: &[E], scale: f32) -> f32 {
        if self == Score::Dot {
            return dot_rescaled(&[(q, k)], scale);
        }
        // One common power of two for both vectors, so the differences stay exact.
        let e = max_exponent(q).max(max_exponent(k));
        let mut sum = 0.0f32;
        for (&a, &b) in q.iter().zip(k) {
            let diff = scalbn(a.to_f32(), -e) - scalbn(b.to_f32(), -e);
            sum += if self == Score::NegSqL2 {
                diff * diff
            } else {
                libm::fabsf(diff)
            };
        }
        let power = if self == Score::NegSqL2 { 2 * e } else { e };
        scale_back(-scale, sum, power)
    }
}

/// `x` limited to `±f32::MAX` (NaN stays NaN).
#[inline]
pub(crate) fn saturate(x: f32) -> f32 {
    x.clamp(-f32::MAX, f32::MAX)
}

/// `2^e · x` (libm `scalbnf`: exact unless the result is subnormal or out of range).
#[inline]
fn scalbn(x: f32, e: i32) -> f32 {
    libm::scalbnf(x, e)
}

/// The smallest `e` with `|x| < 2^e` for every finite element (-200 when all are zero):
/// dividing by `2^e` brings them into `(-1, 1)`. Non-finite elements are skipped (they make
/// the result non-finite whatever the scaling).
pub(crate) fn max_exponent<E: Element>(x: &[E]) -> i32 {
    x.iter()
        .map(|v| {
            let v = v.to_f32();
            if v.is_finite() && v != 0.0 {
                libm::frexpf(v).1
            } else {
                -200
            }
        })
        .fold(-200, i32::max)
}

/// `scale · sum · 2^power` without an intermediate overflow, saturated at `±f32::MAX`.
#[inline]
pub(crate) fn scale_back(scale: f32, sum: f32, power: i32) -> f32 {
    let (mantissa, exponent) = libm::frexpf(scale);
    // Both exponents are within a few hundred, so the clamp only guards the addition.
    let power = exponent.saturating_add(power).clamp(-1000, 1000);
    saturate(scalbn(mantissa * sum, power))
}

/// `scale · Σ_segments a · b` with every `a` and every `b` divided by a power of two so that
/// no partial sum overflows: finite (saturated at `±f32::MAX`) for finite inputs. The slow
/// path of a dot product whose plain f32 sum overflowed.
#[cold]
pub(crate) fn dot_rescaled<A: Element, B: Element>(segments: &[(&[A], &[B])], scale: f32) -> f32 {
    // One exponent for all `a`s and one for all `b`s, so the segments share a scale.
    let ea = segments
        .iter()
        .fold(-200, |e, (a, _)| e.max(max_exponent(a)));
    let eb = segments
        .iter()
        .fold(-200, |e, (_, b)| e.max(max_exponent(b)));
    let mut sum = 0.0f32;
    for (a, b) in segments {
        for (&x, &y) in a.iter().zip(b.iter()) {
            sum += scalbn(x.to_f32(), -ea) * scalbn(y.to_f32(), -eb);
        }
    }
    scale_back(scale, sum, ea + eb)
}

/// Cosine of vectors whose squared norms overflow f32: both are divided by their largest
/// magnitude first, so every sum stays below `len`. Rare path, kept out of the hot loop.
#[cold]
fn cosine_rescaled<E: Element>(q: &[E], k: &[E]) -> f32 {
    let largest = |x: &[E]| x.iter().fold(0.0f32, |m, v| m.max(libm::fabsf(v.to_f32())));
    let (mq, mk) = (largest(q), largest(k));
    if mq == 0.0 || mk == 0.0 {
        return 0.0;
    }
    let (mut qk, mut qq, mut kk) = (0.0f32, 0.0f32, 0.0f32);
    for (a, b) in q.iter().zip(k) {
        let (a, b) = (a.to_f32() / mq, b.to_f32() / mk);
        qk += a * b;
        qq += a * a;
        kk += b * b;
    }
    // The norms' clamp at COSINE_EPS, in the divided units: a tiny vector against a huge
    // one still has a cosine near 0, as in the plain formula.
    qk / sqrt(qq).max(COSINE_EPS / mq) / sqrt(kk).max(COSINE_EPS / mk)
}

/// An additive bias on the logits that depends on the head and on the query and key positions.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Bias<'a> {
    /// No bias.
    #[default]
    None,
    /// ALiBi: `-slopes[h] * |p - j|`; one slope per query head.
    Alibi {
        /// One slope per query head.
        slopes: &'a [f32],
    },
    /// T5 relative position buckets: `table[h * num_buckets + bucket(j - p)]`.
    T5 {
        /// Whether keys after the query get their own buckets.
        bidirectional: bool,
        /// Buckets per head (at least 4 when bidirectional, 2 otherwise).
        num_buckets: usize,
        /// Distance from which all positions share the last bucket; above the exact range.
        max_distance: usize,
        /// `heads × num_buckets` learned values, row-major.
        table: &'a [f32],
    },
}

impl Bias<'_> {
    /// Checks the bias against the number of query heads.
    pub fn validate(&self, heads: usize) -> Result<(), Error> {
        match *self {
            Bias::None => Ok(()),
            Bias::Alibi { slopes } => {
                if slopes.len() != heads || slopes.iter().any(|s| !s.is_finite()) {
                    Err(Error::InvalidBias)
                } else {
                    Ok(())
                }
            }
            Bias::T5 {
                bidirectional,
                num_buckets,
                max_distance,
                table,
            } => {
                let half = if bidirectional {
                    num_buckets / 2
                } else {
                    num_buckets
                };
                let exact = half / 2;
                let table_len = heads.checked_mul(num_buckets).ok_or(Error::ShapeOverflow)?;
                if exact == 0 || max_distance <= exact || table.len() != table_len {
                    Err(Error::InvalidBias)
                } else {
                    Ok(())
                }
            }
        }
    }

    /// The bias of query head `head` at position `p` for the key at position `j`.
    /// Call [`Bias::validate`] first; an invalid bias adds 0.
    #[inline]
    pub fn value(&self, head: usize, p: i64, j: usize) -> f32 {
        // `j - p` saturated to i64 (keys are slice indices, so `j <= isize::MAX`).
        let relative = i64::try_from(j).unwrap_or(i64::MAX).saturating_sub(p);
        match *self {
            Bias::None => 0.0,
            Bias::Alibi { slopes } => {
                let distance = relative.unsigned_abs() as f32;
                // Saturated: a steep slope times a long distance overflows to ±inf, and a
                // logit at ∓inf plus it would be NaN.
                slopes.get(head).map_or(0.0, |&m| saturate(-m * distance))
            }
            Bias::T5 {
                bidirectional,
                num_buckets,
                max_distance,
                table,
            } => {
                let bucket = t5_bucket(relative, bidirectional, num_buckets, max_distance);
                table
                    .get(head * num_buckets + bucket)
                    .copied()
                    .unwrap_or(0.0)
            }
        }
    }
}

/// T5's `_relative_position_bucket` for `relative = key position - query position`.
///
/// Small distances get a bucket each; larger ones share buckets on a log scale up to
/// `max_distance`, beyond which everything lands in the last bucket.
///
/// ```
/// use microattn::attention::t5_bucket;
/// assert_eq!(t5_bucket(-3, true, 32, 128), 3);
/// assert_eq!(t5_bucket(3, true, 32, 128), 19);
/// assert_eq!(t5_bucket(-1000, true, 32, 128), 15);
/// ```
pub fn t5_bucket(
    relative: i64,
    bidirectional: bool,
    num_buckets: usize,
    max_distance: usize,
) -> usize {
    let mut buckets = num_buckets;
    let mut bucket = 0usize;
    let distance = if bidirectional {
        buckets /= 2;
        if relative > 0 {
            bucket += buckets;
        }
        relative.unsigned_abs()
    } else {
        // Only keys before the query are distinguished.
        relative.min(0).unsigned_abs()
    };
    let exact = buckets / 2;
    if exact == 0 {
        return bucket;
    }
    if distance < exact as u64 {
        return bucket + distance as usize;
    }
    // As PyTorch: f32 log of the ratio, divided by an f64 log rounded to f32, truncated.
    let log_ratio = crate::math::ln(distance as f32 / exact as f32);
    let log_range = libm::log(max_distance as f64 / exact as f64) as f32;
    let large = exact + (log_ratio / log_range * (buckets - exact) as f32) as usize;
    bucket + large.min(buckets - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_of_huge_vectors_is_finite_and_right() {
        let q = [3e30f32, 4e30, 0.0];
        let k = [4e25f32, 3e25, 0.0];
        let norm = Score::Cosine.query_norm(&q);
        let cos = Score::Cosine.logit(&q, &k, norm, 1.0);
        assert!((cos - 24.0 / 25.0).abs() < 1e-6, "{cos}");
        let small = [1e-3f32, 0.0, 0.0];
        let cos = Score::Cosine.logit(&small, &q, Score::Cosine.query_norm(&small), 2.0);
        assert!((cos - 2.0 * 0.6).abs() < 1e-6, "{cos}");
    }
}
