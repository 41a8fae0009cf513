//! Int8 dense layer `y = x Wᵀ + b`: int8 activations (one scale), int8 weights with one scale
//! per output channel, `i32` bias in accumulator units, exact `i32` accumulation and a
//! per-channel fixed-point requantization to int8 (the TFLite / CMSIS-NN scheme).

use crate::error::{check_len, Error};
use crate::projection::LinearShape;
use crate::quant::{saturate_i8, FixedMultiplier};

/// Largest `in_features` of [`int8_dense`]: `|Σ x w| <= 128² · in` fits an `i32`.
pub const MAX_DENSE_IN: usize = 1 << 16;

/// A prepared int8 dense layer (borrowed; integers only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Int8Dense<'a> {
    /// `W`, `[out, in]` row-major (PyTorch's `Linear.weight`).
    pub weight: &'a [i8],
    /// `b` in accumulator units: `round(b[c] / (x_scale · w_scale[c]))`, `[out]`.
    pub bias: Option<&'a [i32]>,
    /// `x_scale · w_scale[c] / y_scale`: one per output channel, or one for all.
    pub multipliers: &'a [FixedMultiplier],
}

impl<'a> Int8Dense<'a> {
    /// Prepares a layer (float, once): `w_scales` has one scale per output channel (row of
    /// `weight`) or a single one; `bias` (f32, `[out]`) is converted into `bias_storage`,
    /// the multipliers into `multiplier_storage` (`w_scales.len()` entries).
    ///
    /// Errors: a scale that is not finite and positive or a multiplier out of range
    /// ([`Error::InvalidScale`]), a bias whose integer form does not fit an `i32`
    /// ([`Error::InvalidBias`]), `w_scales` neither 1 nor `out` long, a bias not `out` long,
    /// short storage.
    #[allow(clippy::too_many_arguments)]
    pub fn prepare(
        weight: &'a [i8],
        out_features: usize,
        w_scales: &[f32],
        x_scale: f32,
        y_scale: f32,
        bias: Option<&[f32]>,
        bias_storage: &'a mut [i32],
        multiplier_storage: &'a mut [FixedMultiplier],
    ) -> Result<Self, Error> {
        if w_scales.len() != out_features && w_scales.len() != 1 {
            return Err(Error::LengthMismatch {
                expected: out_features,
                found: w_scales.len(),
            });
        }
        let x = positive(x_scale)?;
        let y = positive(y_scale)?;
        let needed = w_scales.len();
        let found = multiplier_storage.len();
        let multipliers = multiplier_storage
            .get_mut(..needed)
            .ok_or(Error::ScratchTooSmall { needed, found })?;
        for (m, &w) in multipliers.iter_mut().zip(w_scales) {
            *m = FixedMultiplier::from_real(x * positive(w)? / y)?;
        }
        let bias = match bias {
            None => None,
            Some(b) => {
                check_len(b, out_features)?;
                let found = bias_storage.len();
                let out = bias_storage
                    .get_mut(..out_features)
                    .ok_or(Error::ScratchTooSmall {
                        needed: out_features,
                        found,
                    })?;
                for (c, (o, &v)) in out.iter_mut().zip(b).enumerate() {
                    let w = w_scales.get(c).or(w_scales.first()).copied().unwrap_or(1.0);
                    let q = libm::round(v as f64 / (x * w as f64));
                    if !(q.is_finite() && q.abs() <= i32::MAX as f64) {
                        return Err(Error::InvalidBias);
                    }
                    *o = q as i32;
                }
                Some(&*out)
            }
        };
        Ok(Int8Dense {
            weight,
            bias,
            multipliers,
        })
    }

    /// The layer restricted to output channels `start..start + count` (a head's rows).
    pub(crate) fn rows(&self, start: usize, count: usize, in_features: usize) -> Int8Dense<'a> {
        let multipliers = if self.multipliers.len() == 1 {
            self.multipliers
        } else {
            self.multipliers.get(start..start + count).unwrap_or(&[])
        };
        Int8Dense {
            weight: self
                .weight
                .get(start * in_features..(start + count) * in_features)
                .unwrap_or(&[]),
            bias: self
                .bias
                .map(|b| b.get(start..start + count).unwrap_or(&[])),
            multipliers,
        }
    }

    /// Checks the layer against `out` channels of `in` features (integer only).
    pub(crate) fn validate(&self, out: usize, inputs: usize) -> Result<(), Error> {
        if inputs > MAX_DENSE_IN {
            return Err(Error::InvalidParameter);
        }
        check_len(self.weight, crate::error::product(&[out, inputs])?)?;
        if let Some(b) = self.bias {
            check_len(b, out)?;
        }
        if self.multipliers.len() != out && self.multipliers.len() != 1 {
            return Err(Error::LengthMismatch {
                expected: out,
                found: self.multipliers.len(),
            });
        }
        for m in self.multipliers {
            FixedMultiplier::from_raw(m.multiplier(), m.shift())?;
        }
        Ok(())
    }
}

fn positive(s: f32) -> Result<f64, Error> {
    if s.is_finite() && s > 0.0 {
        Ok(s as f64)
    } else {
        Err(Error::InvalidScale)
    }
}

/// `y = requantize(x Wᵀ + b)` with int8 `x` `[rows, in]`, int8 `y` `[rows, out]`. Integer only.
/// Returns the largest `|y|` before saturation (in output steps): above 127 means the output
/// scale clipped, which calibration can use.
///
/// The bias is added to the exact `i32` dot product with `i32` saturation. Errors: a zero
/// dimension, lengths that do not match `shape`, `in > MAX_DENSE_IN`
/// ([`Error::InvalidParameter`]), multipliers neither 1 nor `out` long.
///
/// ```
/// use microattn::attention::int8::{int8_dense, Int8Dense};
/// use microattn::projection::LinearShape;
/// use microattn::quant::FixedMultiplier;
/// let m = [FixedMultiplier::from_real(0.5)?];
/// let layer = Int8Dense { weight: &[1, 2, 3, 4], bias: Some(&[1, -1]), multipliers: &m };
/// let mut y = [0i8; 2];
/// let peak = int8_dense(&[10, 20], &layer, &mut y, LinearShape::new(1, 2, 2))?;
/// assert_eq!(y, [26, 55]); // (50 + 1) / 2 = 25.5 → 26, (110 - 1) / 2 = 54.5 → 55
/// assert_eq!(peak, 55);
/// # Ok::<(), microattn::Error>(())
/// ```
pub fn int8_dense(
    x: &[i8],
    layer: &Int8Dense<'_>,
    y: &mut [i8],
    shape: LinearShape,
) -> Result<i64, Error> {
    let (x_len, _, y_len) = shape.lengths()?;
    check_len(x, x_len)?;
    check_len(y, y_len)?;
    layer.validate(shape.out_features, shape.in_features)?;
    Ok(dense_rows(
        x,
        layer,
        y,
        shape.in_features,
        shape.out_features,
    ))
}

/// Fixed-size [`int8_dense`]: `ROWS` inputs of `IN` features to `OUT` features.
pub fn int8_dense_fixed<const ROWS: usize, const IN: usize, const OUT: usize>(
    x: &[[i8; IN]; ROWS],
    layer: &Int8Dense<'_>,
    y: &mut [[i8; OUT]; ROWS],
) -> Result<i64, Error> {
    int8_dense(
        x.as_flattened(),
        layer,
        y.as_flattened_mut(),
        LinearShape::new(ROWS, IN, OUT),
    )
}

/// The dense layer on validated shapes; returns the peak `|y|` before saturation.
pub(crate) fn dense_rows(
    x: &[i8],
    layer: &Int8Dense<'_>,
    y: &mut [i8],
    inputs: usize,
    outputs: usize,
) -> i64 {
    let mut peak = 0i64;
    // Validated sizes are never 0 (`max` only keeps the chunking from asserting it).
    let (inputs, outputs) = (inputs.max(1), outputs.max(1));
    for (x_row, y_row) in x.chunks_exact(inputs).zip(y.chunks_exact_mut(outputs)) {
        for (c, (o, w_row)) in y_row
            .iter_mut()
            .zip(layer.weight.chunks_exact(inputs))
            .enumerate()
        {
            let dot: i32 = x_row
                .iter()
                .zip(w_row)
                .map(|(&a, &b)| a as i32 * b as i32)
                .sum();
            let bias = layer.bias.and_then(|b| b.get(c)).copied().unwrap_or(0);
            let m = layer
                .multipliers
                .get(c)
                .or(layer.multipliers.first())
                .copied()
                .unwrap_or(FixedMultiplier::ONE);
            let value = m.mul_round(dot.saturating_add(bias));
            peak = peak.max(value.abs());
            *o = saturate_i8(value);
        }
    }
    peak
}
