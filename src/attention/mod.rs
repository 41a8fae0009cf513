//! Attention kernels, one file per family.

mod additive;
pub mod int8;
mod linear;
mod luong;
pub(crate) mod score;
mod sdpa;

pub use additive::{
    additive_attention, additive_attention_fixed, additive_attention_scratch_len,
    additive_attention_typed, additive_attention_typed_scratch_len, AdditiveParams,
    AdditiveParamsFixed, AdditiveShape,
};
pub use linear::{
    elu_plus_one, linear_attention, linear_attention_fixed, linear_attention_scratch_len,
    linear_attention_typed, linear_state_len, LinearAttentionParams, LinearAttentionState,
    LinearAttentionStateFixed,
};
pub use luong::{
    luong_attention, luong_attention_scratch_len, luong_attention_typed,
    luong_attention_typed_scratch_len, luong_concat_fixed, luong_dot_fixed, luong_general_fixed,
    LuongParams, LuongScore, LuongShape,
};
pub use score::{t5_bucket, Bias, Score};
pub use sdpa::{
    sdpa, sdpa_fixed, sdpa_heads_fixed, sdpa_output_len, sdpa_scratch_len, sdpa_typed,
    visited_keys, AttentionShape, SdpaParams, TILE,
};
