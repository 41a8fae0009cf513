//! One exported function per public slice-tier kernel (generic kernels instantiated for the
//! storage types firmware uses). Nothing calls them: scripts/no-panic builds this crate as an
//! optimized `cdylib` with `panic = "abort"`, disassembles it and walks the call graph from
//! each `no_panic_*` symbol to the panic machinery of `core`. A kernel is panic-free when no
//! path leads there, whatever the arguments, because the arguments come from outside.
//!
//! Names are `no_panic_<kernel>`; scripts/no-panic reports them without the prefix.
#![no_std]
// Rust types through the C ABI: the functions are never called, only analysed.
#![allow(improper_ctypes_definitions, clippy::too_many_arguments)]

use microattn::attention::int8::{
    int8_additive_attention, int8_dense, int8_linear_attention, int8_luong_attention, int8_mha,
    int8_sdpa, int8_sdpa_packed_kv, Int8AdditiveParams, Int8Dense, Int8LinearAttentionParams,
    Int8LuongParams, Int8MhaParams, Int8MhaStats, Int8PackedKv, Int8SdpaParams,
};
use microattn::attention::{
    additive_attention, additive_attention_typed, linear_attention, linear_attention_typed,
    luong_attention, luong_attention_typed, sdpa, sdpa_typed, visited_keys, AdditiveParams,
    AdditiveShape, AttentionShape, LinearAttentionParams, LinearAttentionState, LuongParams,
    LuongShape, SdpaParams,
};
use microattn::graph::{gat, GatParams, GatShape, GatWeights};
use microattn::layers::{
    decoder_layer, encoder_layer, patch_embed, DecoderShape, DecoderWeights, EncoderShape,
    EncoderWeights, LayerConfig, PatchEmbedWeights, PatchShape,
};
use microattn::layers::{ffn, gated_ffn, layer_norm, rms_norm, Activation, FfnShape};
use microattn::layers::{FfnWeights, GatedFfnWeights};
use microattn::mask::Mask;
use microattn::mha::{mha, mha_typed, MhaShape, MhaWeights};
use microattn::position::{alibi_slopes, learned_add, rope, sinusoidal_table, RopeParams};
use microattn::projection::{linear, linear_mixed, linear_typed, LinearShape};
use microattn::softmax::{softmax_in_place, OnlineSoftmax};
use microattn::ssm::{
    selective_scan, selective_scan_step, ScanSequence, ScanShape, ScanToken, ScanWeights,
};
use microattn::{f16, Error};

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}

#[no_mangle]
pub extern "C" fn no_panic_sdpa(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &mut [f32],
    shape: AttentionShape,
    params: &SdpaParams<'_>,
) -> Result<(), Error> {
    sdpa(q, k, v, out, shape, params)
}

#[no_mangle]
pub extern "C" fn no_panic_sdpa_typed_f16(
    q: &[f16],
    k: &[f16],
    v: &[f16],
    out: &mut [f16],
    shape: AttentionShape,
    params: &SdpaParams<'_>,
    scratch: &mut [f32],
) -> Result<(), Error> {
    sdpa_typed(q, k, v, out, shape, params, scratch)
}

#[no_mangle]
pub extern "C" fn no_panic_visited_keys(
    shape: AttentionShape,
    mask: &Mask<'_>,
) -> Result<usize, Error> {
    visited_keys(shape, mask)
}

#[no_mangle]
pub extern "C" fn no_panic_mask_row(mask: &Mask<'_>, row: usize, lk: usize) -> usize {
    mask.row(row, lk).map(|r| r.end - r.start).sum()
}

#[no_mangle]
pub extern "C" fn no_panic_softmax_in_place(x: &mut [f32]) {
    softmax_in_place(x)
}

#[no_mangle]
pub extern "C" fn no_panic_online_softmax(state: &mut OnlineSoftmax, scores: &mut [f32]) -> f32 {
    state.update(scores) * state.inverse_sum()
}

#[no_mangle]
pub extern "C" fn no_panic_mha(
    query: &[f32],
    key: &[f32],
    value: &[f32],
    weights: &MhaWeights<'_, f32>,
    out: &mut [f32],
    shape: MhaShape,
    params: &SdpaParams<'_>,
    scratch: &mut [f32],
) -> Result<(), Error> {
    mha(query, key, value, weights, out, shape, params, scratch)
}

#[no_mangle]
pub extern "C" fn no_panic_mha_typed_f16(
    query: &[f16],
    key: &[f16],
    value: &[f16],
    weights: &MhaWeights<'_, f16>,
    out: &mut [f16],
    shape: MhaShape,
    params: &SdpaParams<'_>,
    scratch: &mut [f32],
) -> Result<(), Error> {
    mha_typed(query, key, value, weights, out, shape, params, scratch)
}

#[no_mangle]
pub extern "C" fn no_panic_linear(
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    y: &mut [f32],
    shape: LinearShape,
) -> Result<(), Error> {
    linear(x, w, b, y, shape)
}

#[no_mangle]
pub extern "C" fn no_panic_linear_typed_f16(
    x: &[f16],
    w: &[f16],
    b: Option<&[f16]>,
    y: &mut [f32],
    shape: LinearShape,
) -> Result<(), Error> {
    linear_typed(x, w, b, y, shape)
}

#[no_mangle]
pub extern "C" fn no_panic_linear_mixed_f16(
    x: &[f32],
    w: &[f16],
    b: Option<&[f16]>,
    y: &mut [f16],
    shape: LinearShape,
) -> Result<(), Error> {
    linear_mixed(x, w, b, y, shape)
}

#[no_mangle]
pub extern "C" fn no_panic_linear_attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &mut [f32],
    shape: AttentionShape,
    params: &LinearAttentionParams,
    scratch: &mut [f32],
) -> Result<(), Error> {
    linear_attention(q, k, v, out, shape, params, scratch)
}

#[no_mangle]
pub extern "C" fn no_panic_linear_attention_typed_f16(
    q: &[f16],
    k: &[f16],
    v: &[f16],
    out: &mut [f16],
    shape: AttentionShape,
    params: &LinearAttentionParams,
    scratch: &mut [f32],
) -> Result<(), Error> {
    linear_attention_typed(q, k, v, out, shape, params, scratch)
}

#[no_mangle]
pub extern "C" fn no_panic_linear_attention_state(
    buffer: &mut [f32],
    d: usize,
    dv: usize,
    eps: f32,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &mut [f32],
) -> Result<(), Error> {
    let mut state = LinearAttentionState::new(buffer, d, dv, eps)?;
    state.step(q, k, v, out)?;
    state.push(k, v)?;
    state.query(q, out)
}

#[no_mangle]
pub extern "C" fn no_panic_additive_attention(
    query: &[f32],
    keys: &[f32],
    values: &[f32],
    shape: AdditiveShape,
    params: &AdditiveParams<'_, f32>,
    context: &mut [f32],
    weights: &mut [f32],
    scratch: &mut [f32],
) -> Result<(), Error> {
    additive_attention(
        query, keys, values, shape, params, context, weights, scratch,
    )
}

#[no_mangle]
pub extern "C" fn no_panic_additive_attention_typed_f16(
    query: &[f16],
    keys: &[f16],
    values: &[f16],
    shape: AdditiveShape,
    params: &AdditiveParams<'_, f16>,
    context: &mut [f16],
    weights: &mut [f16],
    scratch: &mut [f32],
) -> Result<(), Error> {
    additive_attention_typed(
        query, keys, values, shape, params, context, weights, scratch,
    )
}

#[no_mangle]
pub extern "C" fn no_panic_luong_attention(
    query: &[f32],
    keys: &[f32],
    values: &[f32],
    shape: LuongShape,
    params: &LuongParams<'_, f32>,
    context: &mut [f32],
    weights: &mut [f32],
    scratch: &mut [f32],
) -> Result<(), Error> {
    luong_attention(
        query, keys, values, shape, params, context, weights, scratch,
    )
}

#[no_mangle]
pub extern "C" fn no_panic_luong_attention_typed_f16(
    query: &[f16],
    keys: &[f16],
    values: &[f16],
    shape: LuongShape,
    params: &LuongParams<'_, f16>,
    context: &mut [f16],
    weights: &mut [f16],
    scratch: &mut [f32],
) -> Result<(), Error> {
    luong_attention_typed(
        query, keys, values, shape, params, context, weights, scratch,
    )
}

#[no_mangle]
pub extern "C" fn no_panic_int8_sdpa(
    q: &[i8],
    k: &[i8],
    v: &[i8],
    out: &mut [i8],
    shape: AttentionShape,
    params: &Int8SdpaParams<'_>,
    scratch: &mut [i64],
) -> Result<(), Error> {
    int8_sdpa(q, k, v, out, shape, params, scratch)
}

#[no_mangle]
pub extern "C" fn no_panic_int8_sdpa_packed_kv(
    q: &[i8],
    k: &[i8],
    v: &[i8],
    storage: &mut [u32],
    capacity: usize,
    d: usize,
    dv: usize,
    out: &mut [i8],
    params: &Int8SdpaParams<'_>,
    scratch: &mut [i64],
) -> Result<(), Error> {
    let mut cache = Int8PackedKv::new(storage, capacity, d, dv)?;
    cache.push(k, v)?;
    int8_sdpa_packed_kv(q, &cache, out, params, scratch)
}

#[no_mangle]
pub extern "C" fn no_panic_layer_norm(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    dim: usize,
    eps: f32,
) -> Result<(), Error> {
    layer_norm(x, weight, bias, y, dim, eps)
}

#[no_mangle]
pub extern "C" fn no_panic_rms_norm(
    x: &[f32],
    weight: &[f32],
    y: &mut [f32],
    dim: usize,
    eps: f32,
) -> Result<(), Error> {
    rms_norm(x, weight, y, dim, eps)
}

#[no_mangle]
pub extern "C" fn no_panic_ffn(
    x: &[f32],
    weights: &FfnWeights<'_, f32>,
    activation: Activation,
    y: &mut [f32],
    shape: FfnShape,
    scratch: &mut [f32],
) -> Result<(), Error> {
    ffn(x, weights, activation, y, shape, scratch)
}

#[no_mangle]
pub extern "C" fn no_panic_gated_ffn(
    x: &[f32],
    weights: &GatedFfnWeights<'_, f32>,
    activation: Activation,
    y: &mut [f32],
    shape: FfnShape,
    scratch: &mut [f32],
) -> Result<(), Error> {
    gated_ffn(x, weights, activation, y, shape, scratch)
}

#[no_mangle]
pub extern "C" fn no_panic_int8_additive_attention(
    query: &[i8],
    keys: &[i8],
    values: &[i8],
    shape: AdditiveShape,
    params: &Int8AdditiveParams<'_>,
    context: &mut [i8],
    weights: &mut [i16],
    scratch: &mut [i64],
) -> Result<(), Error> {
    int8_additive_attention(
        query, keys, values, shape, params, context, weights, scratch,
    )
}

#[no_mangle]
pub extern "C" fn no_panic_int8_luong_attention(
    query: &[i8],
    keys: &[i8],
    values: &[i8],
    shape: LuongShape,
    params: &Int8LuongParams<'_>,
    context: &mut [i8],
    weights: &mut [i16],
    scratch: &mut [i64],
) -> Result<(), Error> {
    int8_luong_attention(
        query, keys, values, shape, params, context, weights, scratch,
    )
}

#[no_mangle]
pub extern "C" fn no_panic_int8_mha(
    query: &[i8],
    key: &[i8],
    value: &[i8],
    params: &Int8MhaParams<'_>,
    out: &mut [i8],
    shape: MhaShape,
    scratch: &mut [i8],
    acc: &mut [i64],
    stats: Option<&mut Int8MhaStats>,
) -> Result<(), Error> {
    int8_mha(query, key, value, params, out, shape, scratch, acc, stats)
}

#[no_mangle]
pub extern "C" fn no_panic_int8_dense(
    x: &[i8],
    layer: &Int8Dense<'_>,
    y: &mut [i8],
    shape: LinearShape,
) -> Result<i64, Error> {
    int8_dense(x, layer, y, shape)
}

#[no_mangle]
pub extern "C" fn no_panic_int8_linear_attention(
    q: &[i8],
    k: &[i8],
    v: &[i8],
    out: &mut [i8],
    shape: AttentionShape,
    params: &Int8LinearAttentionParams,
    scratch: &mut [i64],
) -> Result<(), Error> {
    int8_linear_attention(q, k, v, out, shape, params, scratch)
}

#[no_mangle]
pub extern "C" fn no_panic_rope(
    x: &mut [f32],
    heads: usize,
    len: usize,
    dim: usize,
    params: &RopeParams,
) -> Result<(), Error> {
    rope(x, heads, len, dim, params)
}

#[no_mangle]
pub extern "C" fn no_panic_sinusoidal_table(
    pe: &mut [f32],
    len: usize,
    dim: usize,
    pos_offset: usize,
    base: f32,
) -> Result<(), Error> {
    sinusoidal_table(pe, len, dim, pos_offset, base)
}

#[no_mangle]
pub extern "C" fn no_panic_learned_add(
    x: &mut [f32],
    table: &[f32],
    len: usize,
    dim: usize,
    pos_offset: usize,
) -> Result<(), Error> {
    learned_add(x, table, len, dim, pos_offset)
}

#[no_mangle]
pub extern "C" fn no_panic_alibi_slopes(slopes: &mut [f32]) -> Result<(), Error> {
    alibi_slopes(slopes)
}

#[no_mangle]
pub extern "C" fn no_panic_gat(
    x: &[f32],
    edge_index: &[u32],
    weights: &GatWeights<'_, f32>,
    out: &mut [f32],
    shape: GatShape,
    params: &GatParams,
    scratch: &mut [f32],
) -> Result<(), Error> {
    gat(x, edge_index, weights, out, shape, params, scratch)
}

#[no_mangle]
pub extern "C" fn no_panic_selective_scan(
    state: &mut [f32],
    weights: &ScanWeights<'_, f32>,
    seq: &ScanSequence<'_, f32>,
    y: &mut [f32],
    shape: ScanShape,
) -> Result<(), Error> {
    selective_scan(state, weights, seq, y, shape)
}

#[no_mangle]
pub extern "C" fn no_panic_selective_scan_step(
    state: &mut [f32],
    weights: &ScanWeights<'_, f32>,
    token: &ScanToken<'_, f32>,
    y: &mut [f32],
    shape: ScanShape,
) -> Result<(), Error> {
    selective_scan_step(state, weights, token, y, shape)
}

#[no_mangle]
pub extern "C" fn no_panic_patch_embed(
    image: &[f32],
    weights: &PatchEmbedWeights<'_, f32>,
    tokens: &mut [f32],
    shape: PatchShape,
    scratch: &mut [f32],
) -> Result<(), Error> {
    patch_embed(image, weights, tokens, shape, scratch)
}

#[no_mangle]
pub extern "C" fn no_panic_encoder_layer(
    src: &[f32],
    weights: &EncoderWeights<'_, f32>,
    out: &mut [f32],
    shape: EncoderShape,
    config: &LayerConfig<'_>,
    buffer: &mut [f32],
    scratch: &mut [f32],
) -> Result<(), Error> {
    encoder_layer(src, weights, out, shape, config, buffer, scratch)
}

#[no_mangle]
pub extern "C" fn no_panic_decoder_layer(
    tgt: &[f32],
    memory: &[f32],
    weights: &DecoderWeights<'_, f32>,
    out: &mut [f32],
    shape: DecoderShape,
    config: &LayerConfig<'_>,
    buffer: &mut [f32],
    scratch: &mut [f32],
) -> Result<(), Error> {
    decoder_layer(tgt, memory, weights, out, shape, config, buffer, scratch)
}

/// Control: an unchecked index must be found, or the analysis is broken (scripts/no-panic
/// fails if this one comes out clean).
#[no_mangle]
pub extern "C" fn no_panic_control_must_panic(x: &[f32], i: usize) -> f32 {
    x[i]
}
