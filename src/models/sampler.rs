//! Choosing the next token from the logits, as llama2.c's `run.c`: greedy (temperature 0),
//! or softmax at a temperature followed by plain multinomial or top-p (nucleus) sampling,
//! with `run.c`'s xorshift generator so a seed gives the same coin flips.
//!
//! The softmax divides by the sum (as `run.c` does, rather than multiplying by its inverse)
//! so the probabilities are rounded the same way; `exp` is libm's `expf`, which can differ
//! from the C library's by an ulp, so a coin that lands within an ulp of a boundary may pick
//! the neighbouring token.
//!
//! ```
//! use microattn::models::sampler::{ProbIndex, Sampler};
//! let mut logits = [0.1f32, 3.0, -1.0];
//! let mut greedy = Sampler::new(0.0, 0.9, 42)?;
//! assert_eq!(greedy.sample(&mut logits, &mut [])?, 1);
//! let mut nucleus = Sampler::new(1.0, 0.9, 42)?;
//! let mut probindex = [ProbIndex::default(); 3];
//! let token = nucleus.sample(&mut logits, &mut probindex)?;
//! assert!(token < 3);
//! # Ok::<(), microattn::models::ModelError>(())
//! ```

use super::ModelError;
use crate::math::exp;

/// `run.c`'s xorshift* generator (`random_u32`, `random_f32`). A zero state stays zero, so
/// seed it with a non-zero value (`run.c` replaces a zero seed by the time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Rng {
    /// The 64-bit state.
    pub state: u64,
}

impl Rng {
    /// A generator in state `seed`.
    pub const fn new(seed: u64) -> Self {
        Rng { state: seed }
    }

    /// The next 32 random bits.
    pub fn next_u32(&mut self) -> u32 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        (self.state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as u32
    }

    /// A float in `[0, 1)` from the top 24 bits of [`Rng::next_u32`].
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u32() >> 8) as f32 / 16_777_216.0
    }
}

/// A candidate token of top-p sampling; the caller provides `vocab_size` of them.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ProbIndex {
    /// Probability.
    pub prob: f32,
    /// Token id.
    pub index: u32,
}

/// Index of the largest value, the first one on ties (0 for an empty slice).
pub fn argmax(x: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &v) in x.iter().enumerate().skip(1) {
        if v > x[best] {
            best = i;
        }
    }
    best as u32
}

/// Temperature, top-p and the random state.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Sampler {
    temperature: f32,
    topp: f32,
    /// The random generator (public so a run can be resumed or inspected).
    pub rng: Rng,
}

impl Sampler {
    /// Temperature 0 is greedy; a `topp` outside `(0, 1)` samples from the whole
    /// distribution.
    ///
    /// Errors: a negative or non-finite temperature, a non-finite `topp`
    /// ([`ModelError::InvalidSampling`]).
    pub fn new(temperature: f32, topp: f32, seed: u64) -> Result<Self, ModelError> {
        if !(temperature.is_finite() && temperature >= 0.0 && topp.is_finite()) {
            return Err(ModelError::InvalidSampling);
        }
        Ok(Sampler {
            temperature,
            topp,
            rng: Rng::new(seed),
        })
    }

    /// The next token. Overwrites `logits` with the probabilities unless greedy.
    /// `probindex` needs `logits.len()` entries for top-p sampling and may be empty otherwise.
    ///
    /// Errors: empty logits ([`ModelError::InvalidSampling`]), a short `probindex`.
    pub fn sample(
        &mut self,
        logits: &mut [f32],
        probindex: &mut [ProbIndex],
    ) -> Result<u32, ModelError> {
        let n = logits.len();
        if n == 0 {
            return Err(ModelError::InvalidSampling);
        }
        if self.temperature == 0.0 {
            return Ok(argmax(logits));
        }
        let nucleus = self.topp > 0.0 && self.topp < 1.0;
        if nucleus && probindex.len() < n {
            return Err(ModelError::BufferTooSmall {
                needed: n,
                found: probindex.len(),
            });
        }
        for l in logits.iter_mut() {
            *l /= self.temperature;
        }
        softmax(logits);
        let coin = self.rng.next_f32();
        Ok(if nucleus {
            sample_topp(logits, self.topp, &mut probindex[..n], coin)
        } else {
            sample_mult(logits, coin)
        })
    }
}

/// `run.c`'s softmax: subtract the maximum, exponentiate, divide by the sum.
fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(x[0], f32::max);
    let mut sum = 0.0f32;
    for v in x.iter_mut() {
        *v = exp(*v - max);
        sum += *v;
    }
    for v in x.iter_mut() {
        *v /= sum;
    }
}

/// The first index where the running sum of `probs` exceeds `coin` (the last one if none).
fn sample_mult(probs: &[f32], coin: f32) -> u32 {
    let mut cdf = 0.0f32;
    for (i, &p) in probs.iter().enumerate() {
        cdf += p;
        if coin < cdf {
            return i as u32;
        }
    }
    probs.len() as u32 - 1
}

/// Nucleus sampling: among the most probable tokens whose mass first exceeds `topp`, pick
/// one in proportion to its probability. Tokens below `(1 - topp) / (n - 1)` cannot be in
/// the nucleus and are dropped before sorting, as in `run.c`.
fn sample_topp(probs: &[f32], topp: f32, probindex: &mut [ProbIndex], coin: f32) -> u32 {
    let n = probs.len();
    let cutoff = (1.0 - topp) / n.saturating_sub(1).max(1) as f32;
    let mut n0 = 0;
    for (i, &p) in probs.iter().enumerate() {
        if p >= cutoff {
            probindex[n0] = ProbIndex {
                prob: p,
                index: i as u32,
            };
            n0 += 1;
        }
    }
    if n0 == 0 {
        // Only possible with NaN probabilities; fall back to the most probable token.
        return argmax(probs);
    }
    let candidates = &mut probindex[..n0];
    // Descending probability; equal probabilities keep index order, as glibc's (merge sort)
    // qsort does.
    candidates.sort_unstable_by(|a, b| {
        b.prob
            .partial_cmp(&a.prob)
            .unwrap_or(core::cmp::Ordering::Equal)
            .then(a.index.cmp(&b.index))
    });
    let mut cumulative = 0.0f32;
    let mut last = n0 - 1;
    for (i, c) in candidates.iter().enumerate() {
        cumulative += c.prob;
        if cumulative > topp {
            last = i;
            break;
        }
    }
    let r = coin * cumulative;
    let mut cdf = 0.0f32;
    for c in &candidates[..=last] {
        cdf += c.prob;
        if r < cdf {
            return c.index;
        }
    }
    candidates[last].index
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xorshift_matches_an_independent_u128_evaluation() {
        // The generator written out with 128-bit arithmetic and explicit 64-bit masking.
        let mask = (1u128 << 64) - 1;
        let mut s: u128 = 1234;
        let mut rng = Rng::new(1234);
        for _ in 0..100 {
            s ^= s >> 12;
            s ^= (s << 25) & mask;
            s ^= s >> 27;
            let expected = (((s * 0x2545F4914F6CDD1D) & mask) >> 32) as u32;
            assert_eq!(rng.next_u32(), expected);
        }
    }

    #[test]
    fn random_f32_is_in_unit_interval() {
        let mut rng = Rng::new(7);
        for _ in 0..1000 {
            let f = rng.next_f32();
            assert!((0.0..1.0).contains(&f));
        }
    }

    #[test]
    fn argmax_takes_the_first_maximum() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[]), 0);
    }

    #[test]
    fn multinomial_follows_the_cdf() {
        let p = [0.25f32, 0.5, 0.25];
        assert_eq!(sample_mult(&p, 0.0), 0);
        assert_eq!(sample_mult(&p, 0.3), 1);
        assert_eq!(sample_mult(&p, 0.8), 2);
        assert_eq!(sample_mult(&p, 1.0), 2);
    }

    #[test]
    fn topp_keeps_only_the_nucleus() {
        // Mass 0.6 + 0.3 exceeds 0.8 after two tokens: token 0 can never be drawn.
        let p = [0.1f32, 0.6, 0.3];
        let mut buf = [ProbIndex::default(); 3];
        for k in 0..100 {
            let coin = k as f32 / 100.0;
            let t = sample_topp(&p, 0.8, &mut buf, coin);
            assert!(t == 1 || t == 2);
            // The nucleus has mass 0.9: coins below 0.6/0.9 pick token 1.
            assert_eq!(t == 1, coin * 0.9 < 0.6, "coin {coin}");
        }
    }

    #[test]
    fn bad_parameters_are_errors() {
        assert!(Sampler::new(-1.0, 0.9, 1).is_err());
        assert!(Sampler::new(f32::NAN, 0.9, 1).is_err());
        assert!(Sampler::new(1.0, f32::INFINITY, 1).is_err());
        let mut s = Sampler::new(1.0, 0.9, 1).unwrap();
        assert!(s.sample(&mut [], &mut []).is_err());
        assert!(s.sample(&mut [1.0, 2.0], &mut []).is_err());
    }
}
