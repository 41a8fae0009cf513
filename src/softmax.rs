//! Softmax: the streaming (online) form used by every attention kernel, and a plain in-place
//! form for kernels that return their weights.
//!
//! The online form keeps a running maximum `m` and sum `l` over the scores seen so far. When a
//! tile of scores raises the maximum, everything accumulated so far is multiplied by
//! `exp(m_old - m_new)`, so no score matrix is needed and `exp` never sees a positive argument:
//! logits of 1e4 or 1e30 give the same weights as logits near zero.

use crate::math::exp;

/// Running maximum and sum of one softmax row, fed a tile of scores at a time.
///
/// ```
/// use microattn::softmax::OnlineSoftmax;
/// let mut row = OnlineSoftmax::new();
/// let mut acc = 0.0f32;
/// for (tile, values) in [([1.0f32, 2.0], [10.0f32, 20.0]), ([3.0, 1e4], [30.0, 40.0])] {
///     let mut weights = tile;
///     let rescale = row.update(&mut weights);
///     acc = acc * rescale + weights.iter().zip(values).map(|(w, v)| w * v).sum::<f32>();
/// }
/// assert_eq!(acc * row.inverse_sum(), 40.0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OnlineSoftmax {
    max: f32,
    sum: f32,
}

impl Default for OnlineSoftmax {
    fn default() -> Self {
        Self::new()
    }
}

impl OnlineSoftmax {
    /// A row that has seen no score.
    pub const fn new() -> Self {
        OnlineSoftmax {
            max: f32::NEG_INFINITY,
            sum: 0.0,
        }
    }

    /// Folds in a tile of scores, replacing each by its unnormalized weight
    /// `exp(score - running_max)`. Returns the factor by which the caller must multiply what
    /// it accumulated from earlier tiles (1 when the maximum did not move).
    pub fn update(&mut self, scores: &mut [f32]) -> f32 {
        let tile_max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let new_max = self.max.max(tile_max);
        if new_max == f32::NEG_INFINITY {
            // Only -inf scores so far: they carry no weight.
            scores.fill(0.0);
            return 1.0;
        }
        let rescale = if self.max == new_max {
            1.0
        } else {
            exp(self.max - new_max)
        };
        let mut tile_sum = 0.0;
        for s in scores.iter_mut() {
            *s = exp(*s - new_max);
            tile_sum += *s;
        }
        self.sum = self.sum * rescale + tile_sum;
        self.max = new_max;
        rescale
    }

    /// `1 / sum` of the weights seen, or 0 for a row that saw none (a fully masked row gives
    /// zeros, not NaN).
    pub fn inverse_sum(&self) -> f32 {
        if self.sum > 0.0 {
            1.0 / self.sum
        } else {
            0.0
        }
    }
}

/// Softmax of `x` in place. An empty slice stays empty; a slice of only `-inf` becomes zeros.
///
/// ```
/// let mut x = [1.0f32, 1.0, 1e4];
/// microattn::softmax::softmax_in_place(&mut x);
/// assert_eq!(x, [0.0, 0.0, 1.0]);
/// ```
pub fn softmax_in_place(x: &mut [f32]) {
    let mut row = OnlineSoftmax::new();
    row.update(x);
    let inv = row.inverse_sum();
    for w in x.iter_mut() {
        *w *= inv;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_equal_one_pass() {
        let scores = [0.5f32, -3.0, 2.0, 7.0, 7.0, -1e4, 1e4, 3.0];
        let mut whole = scores;
        softmax_in_place(&mut whole);
        let mut row = OnlineSoftmax::new();
        let mut weights = [0.0f32; 8];
        for (chunk_index, chunk) in scores.chunks(3).enumerate() {
            let mut tile = [0.0f32; 3];
            tile[..chunk.len()].copy_from_slice(chunk);
            let rescale = row.update(&mut tile[..chunk.len()]);
            for w in &mut weights[..chunk_index * 3] {
                *w *= rescale;
            }
            weights[chunk_index * 3..chunk_index * 3 + chunk.len()]
                .copy_from_slice(&tile[..chunk.len()]);
        }
        for (w, e) in weights.iter().zip(whole) {
            assert!((w * row.inverse_sum() - e).abs() < 1e-7);
        }
    }

    #[test]
    fn empty_and_infinite_rows_give_zeros() {
        let mut none: [f32; 0] = [];
        softmax_in_place(&mut none);
        let mut ninf = [f32::NEG_INFINITY; 3];
        softmax_in_place(&mut ninf);
        assert_eq!(ninf, [0.0; 3]);
        assert_eq!(OnlineSoftmax::new().inverse_sum(), 0.0);
    }
}
