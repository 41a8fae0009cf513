//! Int8 attention with integer-only arithmetic: firmware on an FPU-less Cortex-M0 runs these
//! kernels without linking a single soft-float routine (`tests/no_float.sh` links every
//! entry point for `thumbv6m-none-eabi` and checks for `__aeabi_f*` / `__aeabi_d*`).
//!
//! | form | kernel | outputs |
//! |---|---|---|
//! | scaled dot-product (all masks, GQA/MQA, all scores, ALiBi/T5) | [`int8_sdpa`] | int8 |
//! | multi-head with int8 weights (per-channel scales) | [`int8_mha`] | int8 (+ stage peaks) |
//! | dense layer (per-channel scales, `i32` bias) | [`int8_dense`] | int8 (+ peak) |
//! | Luong dot / general / concat | [`int8_luong_attention`] | int8 context, Q15 weights |
//! | Bahdanau | [`int8_additive_attention`] | int8 context, Q15 weights |
//! | linear (`elu + 1`), causal or not | [`int8_linear_attention`] | int8 |
//!
//! # Two steps
//!
//! 1. **Prepare** (float allowed, once, on the host or at start-up): turn the quantization
//!    scales into integer multipliers — [`Int8SdpaParams::new`], [`Int8Bias::from_bias`],
//!    [`Int8Dense::prepare`], [`Int8LuongScore::dot`] / `general` / `concat`,
//!    [`Int8AdditiveParams::new`], [`Int8LinearAttentionParams::new`]. Firmware can also
//!    store the integers and rebuild every parameter struct from its public fields and
//!    [`FixedMultiplier::from_raw`](crate::quant::FixedMultiplier::from_raw).
//! 2. **Run** (integers only): the kernels above. Every parameter is re-checked in integers.
//!
//! # Arithmetic
//!
//! - Scores: exact `i32` reductions of int8 vectors (`q·k`, `|k|²`, weighted L1, an integer
//!   cosine with an integer square root, `v · tanh(..)` with a fixed-point `tanh`), turned
//!   into **base-2 logits** with 20 fractional bits (`i64`) by one fixed-point multiplier that
//!   folds in the quantization scales, the logit scale and `log2(e)`. Biases are integer
//!   offsets in the same format.
//! - Softmax: streaming, with the running maximum and the running sum kept as integers.
//!   SDPA weights `2^(z - max)` are computed in 32-bit fixed point — a shift for the integer
//!   part, a 64-entry table and a cubic term for the fraction (within 0.5002 of a Q15 step) —
//!   and stored as **Q15** (1.0 = 32767, so two weights fit one `SMLAD` operand; CMSIS-NN
//!   uses 8 bits). With the dot score and no bias, each key's exponent is one multiply-add on
//!   the raw `i32` dot product, and keys below a per-row cutoff (weight certainly 0) are
//!   skipped. When the maximum grows, the sum and the accumulators are rescaled. The linear,
//!   Luong, Bahdanau and graph kernels use the Q16 `exp2_neg_weight`.
//! - `P·V`: Q15 weight × int8 value products summed exactly in `i32` partial sums per tile,
//!   folded into `i64` accumulators before a rescale, after 511 keys, or at the end.
//! - Output: one 64-bit division per row gives the reciprocal of the sum; each element is
//!   `acc / sum · v_scale / out_scale`, rounded once (half away from zero) and saturated to
//!   `[-127, 127]`.
//!
//! The result on the dequantized inputs is the correctly rounded f64 answer on (almost)
//! every element: tests/int8.rs finds at most one output step of difference, on fewer than
//! 1 % of the elements, for every form.
//!
//! # Limits (checked; `Err` beyond them)
//!
//! | quantity | limit | why |
//! |---|---|---|
//! | sdpa `d` | [`MAX_D`] = 65536 | `|q·k| <= 128²·d` fits an `i32` |
//! | sdpa `lk` | [`MAX_LK`] = 2^23 | accumulators `<= 2^23·lk` rescale within an `i64` |
//! | logit magnitude | [`MAX_LOGIT`] = 2^59 (base-2 units · 2^20) | logit differences fit an `i64` |
//! | logit scale | finite, positive | multipliers are positive fixed-point numbers |
//! | bias value | `|b| < 1488` (natural-log units) | stored as `i32` with 20 fractional bits |
//! | ALiBi distance | saturates at 2^27 | keeps `slope · distance` below 2^58 |
//! | dense / MHA `in` | [`MAX_DENSE_IN`] = 65536 | exact `i32` dot products |
//! | Luong / Bahdanau `d`, hidden size | [`MAX_SINGLE_QUERY_D`] = 65536 | exact `i32` dot products |
//! | linear attention `d`, `lk` | [`MAX_LINEAR_D`] = 2048, [`MAX_LINEAR_L`] = 2^20 | `i64` state and contraction |
//!
//! Accuracy end to end (float inputs quantized per tensor with max-abs, int8 kernel,
//! dequantized, against f64 on the original floats): about 1–2.5 % relative L2 on
//! 128×128×64 attention, almost all of it the int8 rounding of `q`, `k` and the output.

mod additive;
mod bias;
mod context;
mod dense;
mod linear;
mod luong;
mod mha;
mod packed_kv;
mod score;
mod sdpa;
mod softmax;

pub use additive::{
    int8_additive_attention, int8_additive_attention_fixed, int8_additive_scratch_len,
    Int8AdditiveParams, Int8AdditiveScales,
};
pub use bias::{Int8Bias, ALIBI_MAX_DISTANCE};
pub use context::{Int8TanhMultipliers, WEIGHT_Q15_BITS};
pub use dense::{int8_dense, int8_dense_fixed, Int8Dense, MAX_DENSE_IN};
pub use linear::{
    int8_linear_attention, int8_linear_attention_fixed, int8_linear_attention_scratch_len,
    Int8EluFeature, Int8LinearAttentionParams, MAX_LINEAR_D, MAX_LINEAR_L,
};
pub use luong::{
    int8_luong_attention, int8_luong_concat_fixed, int8_luong_fixed, int8_luong_scratch_len,
    Int8LuongParams, Int8LuongScore, MAX_SINGLE_QUERY_D,
};
pub use mha::{int8_mha, int8_mha_acc_len, int8_mha_scratch_len, Int8MhaParams, Int8MhaStats};
pub use packed_kv::{int8_packed_kv_words, int8_sdpa_packed_kv, Int8PackedKv};
pub use score::{Int8Logits, L1_WEIGHT_BITS, MAX_D, MAX_LOGIT};
pub use sdpa::{
    int8_sdpa, int8_sdpa_fixed, int8_sdpa_heads_fixed, int8_sdpa_packed_scratch_len,
    int8_sdpa_scratch_len, Int8Scales, Int8SdpaParams, MAX_LK,
};
pub use softmax::{exp2_neg_weight, LOGIT_FRAC_BITS, WEIGHT_BITS, WEIGHT_ONE};
