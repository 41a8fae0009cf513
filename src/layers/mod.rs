//! Transformer building blocks around the attention kernels: norms, activations, feed-forward
//! networks, encoder and decoder layers, ViT patch embedding.
//!
//! Every block states its memory as a [`Footprint`] computed by a `const fn` of its sizes, so
//! firmware can size `static` buffers at compile time.

/// The memory a block needs, in elements.
///
/// `weights` are in the storage element type (`f32`, `f16`, `bf16`); `scratch` (reused
/// between calls) and `state` (kept between calls, such as a scan state) are f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Footprint {
    /// Parameters, in the storage element type.
    pub weights: usize,
    /// Caller-provided f32 working memory, needed only during a call.
    pub scratch: usize,
    /// f32 memory kept from one call to the next.
    pub state: usize,
}

impl Footprint {
    /// Bytes in total when each weight takes `weight_bytes` bytes (4 for f32, 2 for f16/bf16).
    /// Saturates instead of overflowing.
    pub const fn bytes(&self, weight_bytes: usize) -> usize {
        let f32_elements = self.scratch.saturating_add(self.state);
        self.weights
            .saturating_mul(weight_bytes)
            .saturating_add(f32_elements.saturating_mul(4))
    }
}
