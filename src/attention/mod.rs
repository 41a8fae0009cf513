//! Attention kernels, one file per family.

mod score;
mod sdpa;

pub use score::{t5_bucket, Bias, Score};
pub use sdpa::{
    sdpa, sdpa_fixed, sdpa_heads_fixed, sdpa_output_len, sdpa_scratch_len, sdpa_typed,
    visited_keys, AttentionShape, SdpaParams, TILE,
};
