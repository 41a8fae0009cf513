//! Transformer building blocks around the attention kernels: norms, activations, feed-forward
//! networks, encoder and decoder layers, ViT patch embedding.
//!
//! Every block states its memory as a [`Footprint`] computed by a `const fn` of its sizes, so
//! firmware can size `static` buffers at compile time.

mod activation;
mod decoder;
mod encoder;
mod ffn;
mod fixed;
pub mod int8;
mod norm;
mod vit;

pub use activation::{gelu, gelu_tanh, relu, sigmoid, silu, softplus, Activation};
pub use decoder::{
    decoder_buffer_len, decoder_footprint, decoder_layer, decoder_scratch_len, DecoderShape,
    DecoderWeights,
};
pub use encoder::{
    encoder_buffer_len, encoder_footprint, encoder_layer, encoder_scratch_len, EncoderShape,
    EncoderWeights, LayerConfig,
};
pub use ffn::{
    ffn, ffn_fixed, ffn_footprint, ffn_in_place, ffn_scratch_len, gated_ffn, gated_ffn_fixed,
    gated_ffn_footprint, gated_ffn_in_place, gated_ffn_scratch_len, FfnShape, FfnWeights,
    FfnWeightsFixed, GatedFfnWeights, GatedFfnWeightsFixed,
};
pub use fixed::{layer_norm_fixed, patch_embed_fixed, rms_norm_fixed, PatchEmbedWeightsFixed};
pub use norm::{
    add_layer_norm, layer_norm, layer_norm_footprint, layer_norm_in_place, rms_norm,
    rms_norm_footprint, rms_norm_in_place, LayerNormWeights,
};
pub use vit::{
    patch_embed, patch_embed_footprint, patch_embed_scratch_len, PatchEmbedWeights, PatchShape,
};

/// The memory a block needs, in elements.
///
/// `weights` and `buffers` (caller-provided activation buffers) are in the storage element
/// type (`f32`, `f16`, `bf16`); `scratch` (reused between calls) and `state` (kept between
/// calls, such as a scan state) are f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Footprint {
    /// Parameters, in the storage element type.
    pub weights: usize,
    /// Activation buffers between sub-blocks, in the storage element type.
    pub buffers: usize,
    /// Caller-provided f32 working memory, needed only during a call.
    pub scratch: usize,
    /// f32 memory kept from one call to the next.
    pub state: usize,
}

impl Footprint {
    /// No memory at all.
    pub const NONE: Footprint = Footprint {
        weights: 0,
        buffers: 0,
        scratch: 0,
        state: 0,
    };

    /// Bytes in total when each storage element takes `element_bytes` bytes (4 for f32, 2 for
    /// f16/bf16). Saturates instead of overflowing.
    pub const fn bytes(&self, element_bytes: usize) -> usize {
        let stored = self.weights.saturating_add(self.buffers);
        let f32_elements = self.scratch.saturating_add(self.state);
        stored
            .saturating_mul(element_bytes)
            .saturating_add(f32_elements.saturating_mul(4))
    }
}
