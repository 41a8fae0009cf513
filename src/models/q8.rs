//! The llama2.c decoder with int8 weights, int8 matmuls, an int8 KV cache and int8
//! attention.
//!
//! # Weights
//!
//! Every matrix (`wq`, `wk`, `wv`, `wo`, `w1`, `w2`, `w3`, the token embedding and the
//! classifier) is quantized symmetrically in groups of `group` consecutive inputs of a row:
//! one f32 scale `max|w| / 127` per (row, group), the last group of a row shorter when
//! `group` does not divide the row (`w2` has 172 inputs in stories260K: 5 groups of 32 and
//! one of 12). `group >= in` is one scale per row. RMSNorm weights stay f32 (a few hundred
//! values). The embedding row of a token is dequantized on lookup.
//!
//! # Matmuls
//!
//! `y = W x` quantizes `x` on the fly with the same groups (one scale per group of the
//! input vector), takes each group's int8 × int8 dot product exactly in `i32`, and adds
//! `dot · s_w · s_x` in f32. With groups of 32 the i32 sums are bounded by `32 · 127²`.
//!
//! # KV cache and attention
//!
//! Keys and values are stored as int8, `[layers, kv_heads, capacity, head_size]`, with one
//! fixed scale per feature of each (layer, KV head) for the keys and one for the values. The
//! scales come from calibration ([`calibrate_kv_scales`]: the largest magnitude each feature
//! takes while the f32 model writes 256 tokens of its own, times a margin); a later value
//! beyond it saturates. Per-feature scales matter for keys: after RoPE the slowly rotating
//! last pair of each head carries 2–6 times the magnitude of the others, and one scale per
//! head would spend most of the int8 range on it. (Measured on stories260K: a per-feature
//! static scale is as accurate as a per-position dynamic one, which the integer kernel could
//! not use anyway.)
//!
//! Attention is the library's integer-only kernel [`crate::attention::int8::int8_sdpa`]
//! (int8 `q`, `k`, `v`, fixed-point softmax), called once per KV head with the query heads
//! that share it. The key scales are folded into the query (`q·k = (q∘s_k)·k_int8`), which is
//! quantized per call with one scale; the value scales are applied to the int8 output (in
//! value units, so it never saturates: it is a convex combination of values) when it is
//! dequantized for the output projection.
//!
//! # Accuracy (stories260K, groups of 32, KV margin 1.25)
//!
//! Against `run.c`'s f32 reference: the first 71 greedy tokens of the no-prompt run and the
//! first 93 after the prompt "Tom and his dog went to the" are identical; logits at positions
//! 0..3 are within 0.5 (max abs, rel. L2 ≤ 4.8e-2). The int8 error in a top-2 logit gap
//! averages 0.08, and f32's own gaps go down to 0.12 within the first 32 tokens, so how far
//! the runs agree depends on where those near-ties fall; a KV margin of 1.0 saturates keys
//! and loses the prompt run after 4 tokens (`tests/stories.rs`, `measure_int8_grouping`).
//!
//! # Files
//!
//! [`write_file`] stores a quantized model for firmware (`include_bytes!` + [`Align4`]) and
//! [`Llama2Q8::from_bytes`] reads it in place: the magic `MAQ8`, version 1, the group size
//! (`u32`), the seven header integers of the f32 checkpoint, then the f32 section (attention
//! norms `[layers, dim]`, FFN norms `[layers, dim]`, final norm `[dim]`, KV scales `[2,
//! layers, kv_heads]`, weight scales in matrix order) and the int8 section (the weights in
//! matrix order: embedding, then `wq`, `wk`, `wv`, `wo`, `w1`, `w2`, `w3` of all layers, then
//! the classifier if it is not shared).
//!
//! [`Align4`]: super::Align4

use super::llama2::{
    forward_core, part, part_mut, Activations, Backend, Config, KvCache, Llama2, Matrix, Norm,
    RunState, HEADER_BYTES,
};
use super::sampler::Sampler;
use super::tokenizer::BOS;
use super::{take, ModelError};
use crate::attention::int8::{int8_sdpa, Int8Bias, Int8Scales, Int8SdpaParams};
use crate::attention::{AttentionShape, Score};
use crate::layers::silu;
use crate::mask::{Mask, MaskTerm};
use crate::quant::QParams;

/// The weight grouping the example and the tests use: the smallest scale overhead (13 %) that
/// keeps the first 32 greedy tokens of both `run.c` reference runs (see the module docs).
pub const DEFAULT_GROUP: usize = 32;

/// Headroom of the KV-cache scales over the calibrated maxima used by the example and tests.
pub const DEFAULT_KV_MARGIN: f32 = 1.25;

/// Calibration text of the example and tests: positions the f32 model samples from BOS,
/// and the seed.
pub const CALIBRATION_STEPS: usize = 256;
/// See [`CALIBRATION_STEPS`].
pub const CALIBRATION_SEED: u64 = 42;

/// The largest head size the int8 attention supports (its accumulator row is on the stack).
pub const MAX_HEAD_SIZE: usize = 128;

/// The largest group: `group · 127²` must fit an `i32`.
pub const MAX_GROUP: usize = (i32::MAX / (127 * 127)) as usize;

/// Bytes of the int8 file header: magic, version, group, the seven checkpoint integers.
pub const FILE_HEADER_BYTES: usize = 12 + HEADER_BYTES;

/// The magic number of an int8 model file.
const MAGIC: [u8; 4] = *b"MAQ8";

/// The causal mask of a decode step; the query position comes from `with_offset`.
const CAUSAL: [MaskTerm<'static>; 1] = [MaskTerm::Causal];

/// The quantized matrices, in file order. The embedding comes first; the classifier is
/// last and only stored when it is not the embedding.
const STORED: [Matrix; 7] = [
    Matrix::Wq,
    Matrix::Wk,
    Matrix::Wv,
    Matrix::Wo,
    Matrix::W1,
    Matrix::W2,
    Matrix::W3,
];

/// Groups per row of `cols` inputs.
const fn groups(cols: usize, group: usize) -> usize {
    match cols.checked_add(group.saturating_sub(1)) {
        Some(n) => match n.checked_div(group) {
            Some(g) => g,
            None => 0,
        },
        None => 0,
    }
}

/// `(layers, rows, cols)` of a stored matrix kind, the embedding given as the classifier
/// shape.
const fn dims(c: &Config, m: Matrix) -> (usize, usize, usize) {
    let (rows, cols) = m.shape(c);
    let layers = match m {
        Matrix::Classifier => 1,
        _ => c.n_layers,
    };
    (layers, rows, cols)
}

/// int8 values of all quantized matrices of `config`.
pub const fn values_len(config: &Config) -> usize {
    let mut total = embedding_count(config).saturating_mul(config.vocab_size * config.dim);
    let mut i = 0;
    while i < STORED.len() {
        let (l, r, c) = dims(config, STORED[i]);
        total = total.saturating_add(l.saturating_mul(r).saturating_mul(c));
        i += 1;
    }
    total
}

/// f32 weight scales of all quantized matrices of `config` with groups of `group`.
pub const fn scales_len(config: &Config, group: usize) -> usize {
    let rows = config.vocab_size.saturating_mul(embedding_count(config));
    let mut total = rows.saturating_mul(groups(config.dim, group));
    let mut i = 0;
    while i < STORED.len() {
        let (l, r, c) = dims(config, STORED[i]);
        total = total.saturating_add(l.saturating_mul(r).saturating_mul(groups(c, group)));
        i += 1;
    }
    total
}

/// f32 KV-cache scales: one per feature of each (layer, KV head), for the keys, then for
/// the values: `[2, layers, kv_heads, head_size]`.
pub const fn kv_scales_len(config: &Config) -> usize {
    config
        .n_layers
        .saturating_mul(config.kv_dim())
        .saturating_mul(2)
}

/// Embedding-sized tables stored: the embedding, and the classifier if not shared.
const fn embedding_count(config: &Config) -> usize {
    if config.shared_classifier {
        1
    } else {
        2
    }
}

/// f32 values of the file's f32 section.
const fn file_floats(config: &Config, group: usize) -> usize {
    config
        .n_layers
        .saturating_mul(2)
        .saturating_add(1)
        .saturating_mul(config.dim)
        .saturating_add(kv_scales_len(config))
        .saturating_add(scales_len(config, group))
}

/// Bytes of an int8 model file.
pub const fn file_len(config: &Config, group: usize) -> usize {
    FILE_HEADER_BYTES
        .saturating_add(file_floats(config, group).saturating_mul(4))
        .saturating_add(values_len(config))
}

/// One quantized matrix kind over all layers: `[layers, rows, cols]` int8 values and
/// `[layers, rows, groups]` scales.
#[derive(Debug, Clone, Copy, Default)]
struct QMatrix<'a> {
    values: &'a [i8],
    scales: &'a [f32],
    rows: usize,
    cols: usize,
}

/// Quantizes `x` in groups of `group` into `q`, one scale per group into `s`: `x ≈ s · q`.
/// An all-zero (or vanishingly small) group gets scale 0.
///
/// Errors: a non-finite value ([`crate::Error::InvalidScale`]).
fn quantize_groups(x: &[f32], group: usize, q: &mut [i8], s: &mut [f32]) -> Result<(), ModelError> {
    for ((xg, qg), sg) in x.chunks(group).zip(q.chunks_mut(group)).zip(s.iter_mut()) {
        let max = xg.iter().fold(0.0f32, |m, &v| m.max(libm::fabsf(v)));
        if !max.is_finite() || xg.iter().any(|v| v.is_nan()) {
            return Err(crate::Error::InvalidScale.into());
        }
        match QParams::from_max_abs(max) {
            Ok(p) if max > 0.0 => {
                for (o, &v) in qg.iter_mut().zip(xg) {
                    *o = p.quantize(v);
                }
                *sg = p.scale();
            }
            // Zero, or so small the scale underflows: represent the group as zeros.
            _ => {
                qg.fill(0);
                *sg = 0.0;
            }
        }
    }
    Ok(())
}

/// Exact dot product of two int8 vectors (at most [`MAX_GROUP`] long).
#[inline]
fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| i32::from(x) * i32::from(y))
        .sum()
}

/// Quantizes the whole f32 model in groups of `group` into `values` ([`values_len`]) and
/// `scales` ([`scales_len`]), in file order.
///
/// Errors: `group` zero or above [`MAX_GROUP`] ([`ModelError::InvalidConfig`]), short buffers,
/// a non-finite weight.
pub fn quantize_weights(
    model: &Llama2<'_>,
    group: usize,
    values: &mut [i8],
    scales: &mut [f32],
) -> Result<(), ModelError> {
    let c = model.config();
    check_group(group)?;
    let (nv, ns) = (values_len(c), scales_len(c, group));
    let values_found = values.len();
    let mut values = values.get_mut(..nv).ok_or(ModelError::BufferTooSmall {
        needed: nv,
        found: values_found,
    })?;
    let scales_found = scales.len();
    let mut scales = scales.get_mut(..ns).ok_or(ModelError::BufferTooSmall {
        needed: ns,
        found: scales_found,
    })?;
    let mut tables: [(&[f32], usize); 9] = [(&[], 0); 9];
    tables[0] = (model.token_embedding, c.dim);
    for (t, m) in tables[1..8].iter_mut().zip(STORED) {
        *t = (model.matrix(m), m.shape(c).1);
    }
    let n_tables = if c.shared_classifier {
        8
    } else {
        tables[8] = (model.classifier, c.dim);
        9
    };
    for &(w, cols) in &tables[..n_tables] {
        let per_row = groups(cols, group);
        let rows = w.len() / cols;
        let q = take(&mut values, w.len(), nv, nv)?;
        let s = take(&mut scales, rows * per_row, ns, ns)?;
        for ((w_row, q_row), s_row) in w
            .chunks_exact(cols)
            .zip(q.chunks_exact_mut(cols))
            .zip(s.chunks_exact_mut(per_row))
        {
            quantize_groups(w_row, group, q_row, s_row)?;
        }
    }
    Ok(())
}

/// A group size the int8 path accepts.
fn check_group(group: usize) -> Result<(), ModelError> {
    if group == 0 || group > MAX_GROUP {
        Err(ModelError::InvalidConfig)
    } else {
        Ok(())
    }
}

/// Calibrates the KV-cache scales ([`kv_scales_len`]) the int8 model needs on text the f32
/// `model` writes itself: from BOS, `steps` positions (at most the state's capacity), each
/// next token sampled at temperature 1 with `run.c`'s generator seeded with `seed`. For each
/// feature of each (layer, KV head) the scale is the largest key magnitude seen, times
/// `margin`, over 127; then the same for the values.
///
/// Errors: as [`Llama2::forward`]; a short `kv_scales`; zero steps or a margin that is not
/// finite and positive ([`ModelError::InvalidConfig`]).
pub fn calibrate_kv_scales(
    model: &Llama2<'_>,
    state: &mut RunState<'_>,
    seed: u64,
    steps: usize,
    margin: f32,
    kv_scales: &mut [f32],
) -> Result<(), ModelError> {
    let c = *model.config();
    let n = kv_scales_len(&c);
    let found = kv_scales.len();
    let kv_scales = kv_scales
        .get_mut(..n)
        .ok_or(ModelError::BufferTooSmall { needed: n, found })?;
    if !(margin.is_finite() && margin > 0.0) || steps == 0 {
        return Err(ModelError::InvalidConfig);
    }
    let mut sampler = Sampler::new(1.0, 1.0, seed)?;
    let mut token = BOS;
    for pos in 0..steps {
        let logits = model.forward(state, token, pos)?;
        token = sampler.sample(logits, &mut [])?;
    }
    let (key, value, capacity) = state.caches();
    let hs = c.head_size();
    let (k_scales, v_scales) = kv_scales.split_at_mut(n / 2);
    for (cache, scales) in [(key, k_scales), (value, v_scales)] {
        for (head, head_scales) in scales.chunks_exact_mut(hs).enumerate() {
            let rows = part(part(cache, head, capacity * hs)?, 0, steps * hs)?;
            head_scales.fill(0.0);
            for row in rows.chunks_exact(hs) {
                for (m, x) in head_scales.iter_mut().zip(row) {
                    *m = m.max(libm::fabsf(*x));
                }
            }
            for m in head_scales.iter_mut() {
                // A feature that never saw a nonzero value keeps a harmless positive scale.
                *m = (*m * margin / 127.0).max(f32::MIN_POSITIVE);
            }
        }
    }
    Ok(())
}

/// Writes an int8 model file ([`file_len`] bytes) for `model` quantized in groups of
/// `group`, with the calibrated `kv_scales`; returns the bytes written. `values` and `scales`
/// are work buffers ([`values_len`], [`scales_len`]).
pub fn write_file(
    model: &Llama2<'_>,
    group: usize,
    kv_scales: &[f32],
    values: &mut [i8],
    scales: &mut [f32],
    out: &mut [u8],
) -> Result<usize, ModelError> {
    let c = model.config();
    quantize_weights(model, group, values, scales)?;
    let len = file_len(c, group);
    let found = out.len();
    let out = out
        .get_mut(..len)
        .ok_or(ModelError::BufferTooSmall { needed: len, found })?;
    let nk = kv_scales_len(c);
    let kv_scales = kv_scales.get(..nk).ok_or(ModelError::BufferTooSmall {
        needed: nk,
        found: kv_scales.len(),
    })?;
    out[..4].copy_from_slice(&MAGIC);
    out[4..8].copy_from_slice(&1u32.to_le_bytes());
    out[8..12].copy_from_slice(&(group as u32).to_le_bytes());
    out[12..FILE_HEADER_BYTES].copy_from_slice(&c.header_bytes());
    let floats = model
        .rms_att
        .iter()
        .chain(model.rms_ffn)
        .chain(model.rms_final)
        .chain(kv_scales)
        .chain(&scales[..scales_len(c, group)]);
    let (float_bytes, value_bytes) =
        out[FILE_HEADER_BYTES..].split_at_mut(4 * file_floats(c, group));
    for (chunk, f) in float_bytes.chunks_exact_mut(4).zip(floats) {
        chunk.copy_from_slice(&f.to_le_bytes());
    }
    for (b, &v) in value_bytes.iter_mut().zip(values.iter()) {
        *b = v as u8;
    }
    Ok(len)
}

/// An int8 llama2.c model: views of int8 weights with their scales, f32 norms and the
/// calibrated KV-cache scales.
#[derive(Debug, Clone, Copy)]
pub struct Llama2Q8<'a> {
    config: Config,
    group: usize,
    rms_att: &'a [f32],
    rms_ffn: &'a [f32],
    rms_final: &'a [f32],
    kv_scales: &'a [f32],
    embedding: QMatrix<'a>,
    matrices: [QMatrix<'a>; 8],
}

impl<'a> Llama2Q8<'a> {
    /// An int8 model from its parts: the f32 model's norms, and `values` / `scales` as
    /// [`quantize_weights`] wrote them for `group`, and `kv_scales` from
    /// [`calibrate_kv_scales`].
    ///
    /// Errors: a bad group, a head size above [`MAX_HEAD_SIZE`]
    /// ([`ModelError::InvalidConfig`]), buffers of the wrong length
    /// ([`ModelError::BufferTooSmall`]), a KV scale that is not finite and positive.
    pub fn new(
        norms: &Llama2<'a>,
        group: usize,
        values: &'a [i8],
        scales: &'a [f32],
        kv_scales: &'a [f32],
    ) -> Result<Self, ModelError> {
        Llama2Q8::from_parts(
            *norms.config(),
            group,
            [norms.rms_att, norms.rms_ffn, norms.rms_final],
            values,
            scales,
            kv_scales,
        )
    }

    /// Reads an int8 model file written by [`write_file`] in place. The bytes must start at
    /// a 4-byte boundary ([`Align4`](super::Align4)).
    ///
    /// Errors: a wrong magic or version, a bad header ([`ModelError::InvalidConfig`]), a
    /// short file ([`ModelError::Truncated`]), misaligned bytes.
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Self, ModelError> {
        let truncated = ModelError::Truncated {
            needed: FILE_HEADER_BYTES,
            found: bytes.len(),
        };
        let header = bytes.get(..FILE_HEADER_BYTES).ok_or(truncated)?;
        if header[..4] != MAGIC || header[4..8] != 1u32.to_le_bytes() {
            return Err(ModelError::InvalidConfig);
        }
        let group = u32::from_le_bytes([header[8], header[9], header[10], header[11]]) as usize;
        check_group(group)?;
        let c = Config::from_header(&header[12..])?;
        let len = file_len(&c, group);
        let body = bytes
            .get(FILE_HEADER_BYTES..len)
            .ok_or(ModelError::Truncated {
                needed: len,
                found: bytes.len(),
            })?;
        let (float_bytes, values) = body.split_at(4 * file_floats(&c, group));
        let mut floats = super::llama2::bytes_as_f32(float_bytes)?;
        let mut next = |n: usize| -> Result<&'a [f32], ModelError> {
            let (head, tail) = floats
                .split_at_checked(n)
                .ok_or(ModelError::InvalidConfig)?;
            floats = tail;
            Ok(head)
        };
        let rms_att = next(c.n_layers * c.dim)?;
        let rms_ffn = next(c.n_layers * c.dim)?;
        let rms_final = next(c.dim)?;
        let kv_scales = next(kv_scales_len(&c))?;
        let scales = next(scales_len(&c, group))?;
        Llama2Q8::from_parts(
            c,
            group,
            [rms_att, rms_ffn, rms_final],
            bytes_as_i8(values),
            scales,
            kv_scales,
        )
    }

    /// Checks and splits the parts.
    fn from_parts(
        config: Config,
        group: usize,
        [rms_att, rms_ffn, rms_final]: [&'a [f32]; 3],
        values: &'a [i8],
        scales: &'a [f32],
        kv_scales: &'a [f32],
    ) -> Result<Self, ModelError> {
        let c = &config;
        c.validate()?;
        check_group(group)?;
        if c.head_size() > MAX_HEAD_SIZE {
            return Err(ModelError::InvalidConfig);
        }
        let exact = |found: usize, needed: usize| {
            if found == needed {
                Ok(())
            } else {
                Err(ModelError::BufferTooSmall { needed, found })
            }
        };
        exact(values.len(), values_len(c))?;
        exact(scales.len(), scales_len(c, group))?;
        exact(kv_scales.len(), kv_scales_len(c))?;
        exact(rms_att.len(), c.n_layers * c.dim)?;
        exact(rms_ffn.len(), c.n_layers * c.dim)?;
        exact(rms_final.len(), c.dim)?;
        if kv_scales.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(ModelError::InvalidConfig);
        }
        let (mut values, mut scales) = (values, scales);
        let mut next =
            |layers: usize, rows: usize, cols: usize| -> Result<QMatrix<'a>, ModelError> {
                let nv = layers * rows * cols;
                let ns = layers * rows * groups(cols, group);
                let (v, vt) = values
                    .split_at_checked(nv)
                    .ok_or(ModelError::InvalidConfig)?;
                let (s, st) = scales
                    .split_at_checked(ns)
                    .ok_or(ModelError::InvalidConfig)?;
                values = vt;
                scales = st;
                Ok(QMatrix {
                    values: v,
                    scales: s,
                    rows,
                    cols,
                })
            };
        let embedding = next(1, c.vocab_size, c.dim)?;
        let mut matrices = [QMatrix::default(); 8];
        for m in STORED {
            let (l, r, cols) = dims(c, m);
            matrices[m as usize] = next(l, r, cols)?;
        }
        matrices[Matrix::Classifier as usize] = if c.shared_classifier {
            embedding
        } else {
            next(1, c.vocab_size, c.dim)?
        };
        Ok(Llama2Q8 {
            config,
            group,
            rms_att,
            rms_ffn,
            rms_final,
            kv_scales,
            embedding,
            matrices,
        })
    }

    /// The model's sizes.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Inputs per quantization group.
    pub fn group(&self) -> usize {
        self.group
    }

    /// Runs token `token` at position `pos`; as [`Llama2::forward`].
    pub fn forward<'s>(
        &self,
        state: &'s mut Q8RunState<'_>,
        token: u32,
        pos: usize,
    ) -> Result<&'s mut [f32], ModelError> {
        if state.config != self.config {
            return Err(ModelError::StateMismatch);
        }
        let Q8RunState {
            acts,
            work,
            key,
            value,
            attn_q,
            attn_out,
            capacity,
            ..
        } = state;
        let mut cache = Q8Cache {
            key,
            value,
            attn_q,
            attn_out,
            capacity: *capacity,
            scales: self.kv_scales,
        };
        forward_core(self, work, &mut cache, acts, token, pos)
    }
}

/// `out = W x` for one layer of a quantized matrix kind, `x` quantized in groups of `group`
/// into `xq` / `xs` first.
fn matvec(
    w: &QMatrix<'_>,
    group: usize,
    layer: usize,
    x: &[f32],
    out: &mut [f32],
    xq: &mut [i8],
    xs: &mut [f32],
) -> Result<(), ModelError> {
    let (rows, cols, g) = (w.rows, w.cols, group);
    let per_row = groups(cols, g);
    let values = part(w.values, layer, rows * cols)?;
    let scales = part(w.scales, layer, rows * per_row)?;
    let xq = part_mut(xq, 0, cols)?;
    let xs = part_mut(xs, 0, per_row)?;
    if x.len() != cols || out.len() != rows {
        return Err(ModelError::InvalidConfig);
    }
    quantize_groups(x, g, xq, xs)?;
    for ((o, w_row), s_row) in out
        .iter_mut()
        .zip(values.chunks_exact(cols))
        .zip(scales.chunks_exact(per_row))
    {
        let mut acc = 0.0f32;
        for (((wg, xg), &sw), &sx) in w_row.chunks(g).zip(xq.chunks(g)).zip(s_row).zip(xs.iter()) {
            acc += dot_i8(wg, xg) as f32 * (sw * sx);
        }
        *o = acc;
    }
    Ok(())
}

/// Views bytes as `i8` (same size and alignment, every bit pattern valid).
fn bytes_as_i8(bytes: &[u8]) -> &[i8] {
    // SAFETY: `u8` and `i8` have the same size and alignment and no invalid bit patterns;
    // the length and lifetime are those of `bytes`.
    unsafe { core::slice::from_raw_parts(bytes.as_ptr().cast::<i8>(), bytes.len()) }
}

/// Working memory of the int8 matmuls: the quantized input and its group scales.
#[derive(Debug)]
pub(crate) struct Q8Work<'s> {
    xq: &'s mut [i8],
    xs: &'s mut [f32],
}

impl Backend<Q8Work<'_>> for Llama2Q8<'_> {
    fn config(&self) -> &Config {
        &self.config
    }

    fn embed(&self, token: usize, x: &mut [f32]) -> Result<(), ModelError> {
        let e = &self.embedding;
        let per_row = groups(e.cols, self.group);
        let q = part(e.values, token, e.cols)?;
        let s = part(e.scales, token, per_row)?;
        for ((xg, qg), &sg) in x.chunks_mut(self.group).zip(q.chunks(self.group)).zip(s) {
            for (o, &v) in xg.iter_mut().zip(qg) {
                *o = f32::from(v) * sg;
            }
        }
        Ok(())
    }

    fn norm(&self, which: Norm, layer: usize) -> Result<&[f32], ModelError> {
        let d = self.config.dim;
        match which {
            Norm::Attention => part(self.rms_att, layer, d),
            Norm::Ffn => part(self.rms_ffn, layer, d),
            Norm::Final => Ok(self.rms_final),
        }
    }

    fn matmul(
        &self,
        m: Matrix,
        layer: usize,
        x: &[f32],
        out: &mut [f32],
        work: &mut Q8Work<'_>,
    ) -> Result<(), ModelError> {
        let w = self.matrices[m as usize];
        matvec(&w, self.group, layer, x, out, work.xq, work.xs)
    }

    fn ffn(
        &self,
        layer: usize,
        x: &[f32],
        out: &mut [f32],
        hb: &mut [f32],
        work: &mut Q8Work<'_>,
    ) -> Result<(), ModelError> {
        let h = self.config.hidden_dim;
        let (gate, up) = hb
            .split_at_mut_checked(h)
            .ok_or(ModelError::InvalidConfig)?;
        let up = part_mut(up, 0, h)?;
        self.matmul(Matrix::W1, layer, x, gate, work)?;
        self.matmul(Matrix::W3, layer, x, up, work)?;
        for (g, &u) in gate.iter_mut().zip(up.iter()) {
            *g = silu(*g) * u;
        }
        self.matmul(Matrix::W2, layer, gate, out, work)
    }
}

/// Everything the int8 model keeps between and during steps, in two caller-provided
/// buffers: [`Q8RunState::f32_len`] f32s (activations, group scales) and
/// [`Q8RunState::i8_len`] i8s (quantized activations, attention queries and outputs, the int8 KV cache).
#[derive(Debug)]
pub struct Q8RunState<'s> {
    config: Config,
    capacity: usize,
    acts: Activations<'s>,
    work: Q8Work<'s>,
    key: &'s mut [i8],
    value: &'s mut [i8],
    attn_q: &'s mut [i8],
    attn_out: &'s mut [i8],
}

impl<'s> Q8RunState<'s> {
    /// Widest input of any matmul.
    const fn widest(c: &Config) -> usize {
        if c.hidden_dim > c.dim {
            c.hidden_dim
        } else {
            c.dim
        }
    }

    /// f32 elements of the f32 buffer: the activations and one scale per input (enough for
    /// any group size).
    pub const fn f32_len(config: &Config) -> usize {
        Activations::len(config).saturating_add(Self::widest(config))
    }

    /// i8 elements of the i8 buffer for a cache of `capacity` positions.
    pub const fn i8_len(config: &Config, capacity: usize) -> usize {
        Self::widest(config)
            .saturating_add(config.dim.saturating_mul(2))
            .saturating_add(config.kv_cache_len(capacity).saturating_mul(2))
    }

    /// A state for `config` with room for `capacity` positions. The cache needs no clearing.
    ///
    /// Errors: a zero capacity, an invalid config, short buffers.
    pub fn new(
        config: &Config,
        capacity: usize,
        f32_buffer: &'s mut [f32],
        i8_buffer: &'s mut [i8],
    ) -> Result<Self, ModelError> {
        config.validate()?;
        if capacity == 0 {
            return Err(ModelError::InvalidConfig);
        }
        let (total, found) = (Self::f32_len(config), f32_buffer.len());
        let mut rest = f32_buffer;
        let acts = Activations::new(config, &mut rest, total, found)?;
        let xs = take(&mut rest, Self::widest(config), total, found)?;
        let (total, found) = (Self::i8_len(config, capacity), i8_buffer.len());
        let mut rest = i8_buffer;
        let xq = take(&mut rest, Self::widest(config), total, found)?;
        let attn_q = take(&mut rest, config.dim, total, found)?;
        let attn_out = take(&mut rest, config.dim, total, found)?;
        let n = config.kv_cache_len(capacity);
        let key = take(&mut rest, n, total, found)?;
        let value = take(&mut rest, n, total, found)?;
        Ok(Q8RunState {
            config: *config,
            capacity,
            acts,
            work: Q8Work { xq, xs },
            key,
            value,
            attn_q,
            attn_out,
        })
    }

    /// Positions the KV cache holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// The int8 KV cache of one step, with the model's fixed scales.
struct Q8Cache<'c, 's> {
    key: &'c mut &'s mut [i8],
    value: &'c mut &'s mut [i8],
    attn_q: &'c mut &'s mut [i8],
    attn_out: &'c mut &'s mut [i8],
    capacity: usize,
    /// `[2, layers, kv_heads]`: key scales, then value scales.
    scales: &'c [f32],
}

/// `(key scales, value scales)` of a (layer, KV head) in `[2, layers, kv_heads, hs]`.
fn head_scales(scales: &[f32], head: usize, hs: usize) -> Result<(&[f32], &[f32]), ModelError> {
    let (k, v) = scales.split_at(scales.len() / 2);
    Ok((part(k, head, hs)?, part(v, head, hs)?))
}

/// `round(x / scale)` saturated to `[-127, 127]` (half away from zero, as
/// [`QParams::quantize`]); `scale` is positive.
#[inline]
fn quantize_with(x: f32, scale: f32) -> i8 {
    let r = libm::roundf(x / scale);
    if r.is_nan() {
        0
    } else {
        r.clamp(-127.0, 127.0) as i8
    }
}

impl KvCache for Q8Cache<'_, '_> {
    fn capacity(&self) -> usize {
        self.capacity
    }

    fn store(
        &mut self,
        c: &Config,
        layer: usize,
        pos: usize,
        k: &[f32],
        v: &[f32],
    ) -> Result<(), ModelError> {
        let hs = c.head_size();
        for g in 0..c.n_kv_heads {
            let head = layer * c.n_kv_heads + g;
            let (ks, vs) = head_scales(self.scales, head, hs)?;
            let row = head * self.capacity + pos;
            let pairs = [
                (&mut *self.key, part(k, g, hs)?, ks),
                (&mut *self.value, part(v, g, hs)?, vs),
            ];
            for (cache, x, scales) in pairs {
                let out = part_mut(cache, row, hs)?;
                for ((o, &x), &s) in out.iter_mut().zip(x).zip(scales) {
                    *o = quantize_with(x, s);
                }
            }
        }
        Ok(())
    }

    fn attend(
        &mut self,
        c: &Config,
        layer: usize,
        pos: usize,
        q: &[f32],
        out: &mut [f32],
    ) -> Result<(), ModelError> {
        let (hs, group) = (c.head_size(), c.kv_group());
        let len = pos + 1;
        let shape = AttentionShape::multi_head(group, 1, 1, len, hs, hs);
        let mask = Mask::new(&CAUSAL).with_offset(pos);
        let mut acc = [0i64; MAX_HEAD_SIZE];
        let acc = acc.get_mut(..hs).ok_or(ModelError::InvalidConfig)?;
        // The keys' per-feature scales are folded into the query (`q·k = (q∘s)·k_int8`) and
        // the values' are applied to the output, so the kernel sees unit scales for both.
        let scales = Int8Scales {
            q: 1.0,
            k: 1.0,
            v: 1.0,
            out: 1.0,
        };
        for g in 0..c.n_kv_heads {
            let head = layer * c.n_kv_heads + g;
            let (ks, vs) = head_scales(self.scales, head, hs)?;
            let k = part(part(self.key, head, self.capacity * hs)?, 0, len * hs)?;
            let v = part(part(self.value, head, self.capacity * hs)?, 0, len * hs)?;
            // The query group (`group` heads) gets one scale, chosen per call.
            let q_g = part(q, g, group * hs)?;
            let mut q_max = 0.0f32;
            for q_h in q_g.chunks_exact(hs) {
                for (&x, &s) in q_h.iter().zip(ks) {
                    q_max = q_max.max(libm::fabsf(x * s));
                }
            }
            let qp = QParams::from_max_abs(q_max)?;
            let q_i8 = part_mut(self.attn_q, g, group * hs)?;
            for (q_row, q_h) in q_i8.chunks_exact_mut(hs).zip(q_g.chunks_exact(hs)) {
                for ((o, &x), &s) in q_row.iter_mut().zip(q_h).zip(ks) {
                    *o = qp.quantize(x * s);
                }
            }
            let params = Int8SdpaParams::new(
                Int8Scales {
                    q: qp.scale(),
                    ..scales
                },
                hs,
                Score::Dot,
                None,
                mask,
                Int8Bias::None,
            )?;
            let out_i8 = part_mut(self.attn_out, g, group * hs)?;
            int8_sdpa(q_i8, k, v, out_i8, shape, &params, acc)?;
            let out_g = part_mut(out, g, group * hs)?;
            for (o_row, i_row) in out_g.chunks_exact_mut(hs).zip(out_i8.chunks_exact(hs)) {
                for ((o, &x), &s) in o_row.iter_mut().zip(i_row).zip(vs) {
                    *o = f32::from(x) * s;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator for test data (xorshift), values in [-1, 1).
    fn values(n: usize, seed: u64) -> [f32; 512] {
        let mut rng = crate::models::sampler::Rng::new(seed);
        let mut out = [0.0f32; 512];
        for v in out.iter_mut().take(n) {
            *v = rng.next_f32() * 2.0 - 1.0;
        }
        out
    }

    #[test]
    fn grouped_matvec_matches_the_dequantized_product() {
        // 5 rows of 70 inputs in groups of 32: two full groups and one of 6.
        const ROWS: usize = 5;
        const COLS: usize = 70;
        let w = values(ROWS * COLS, 1);
        let mut x = values(COLS, 2);
        x[3] = 40.0; // an outlier only its own group pays for
        let (w, x) = (&w[..ROWS * COLS], &x[..COLS]);
        let mut wq = [0i8; ROWS * COLS];
        let mut ws = [0.0f32; ROWS * 3];
        for ((wr, qr), sr) in w
            .chunks(COLS)
            .zip(wq.chunks_mut(COLS))
            .zip(ws.chunks_mut(3))
        {
            quantize_groups(wr, 32, qr, sr).unwrap();
        }
        let m = QMatrix {
            values: &wq,
            scales: &ws,
            rows: ROWS,
            cols: COLS,
        };
        let mut out = [0.0f32; ROWS];
        let (mut xq, mut xs) = ([0i8; COLS], [0.0f32; 3]);
        matvec(&m, 32, 0, x, &mut out, &mut xq, &mut xs).unwrap();
        for (r, &o) in out.iter().enumerate() {
            // f64 product of the dequantized operands: the kernel's arithmetic is exact
            // up to f32 rounding of the per-group sums.
            let deq: f64 = (0..COLS)
                .map(|i| {
                    let (g, gr) = (i / 32, r * 3 + i / 32);
                    (wq[r * COLS + i] as f64 * ws[gr] as f64) * (xq[i] as f64 * xs[g] as f64)
                })
                .sum();
            assert!(
                (o as f64 - deq).abs() <= 1e-5 * (1.0 + deq.abs()),
                "row {r}"
            );
            // And close to the exact f32 product: each operand is within half a step.
            let exact: f64 = (0..COLS)
                .map(|i| w[r * COLS + i] as f64 * x[i] as f64)
                .sum();
            let bound: f64 = (0..COLS)
                .map(|i| {
                    let (sw, sx) = (ws[r * 3 + i / 32] as f64, xs[i / 32] as f64);
                    0.5 * sw * (x[i] as f64).abs()
                        + 0.5 * sx * (w[r * COLS + i] as f64).abs()
                        + 0.25 * sw * sx
                })
                .sum();
            assert!((o as f64 - exact).abs() <= bound + 1e-5, "row {r}");
        }
        // Every quantized value is in the symmetric range and every scale is max|g|/127.
        assert!(wq.iter().all(|&q| q != i8::MIN));
        for (g, chunk) in x.chunks(32).enumerate() {
            let max = chunk.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            assert_eq!(xs[g], max / 127.0);
        }
    }

    #[test]
    fn zero_groups_and_bad_values() {
        let mut q = [1i8; 4];
        let mut s = [1.0f32; 2];
        quantize_groups(&[0.0, 0.0, 1.0, -2.0], 2, &mut q, &mut s).unwrap();
        assert_eq!((q, s), ([0, 0, 64, -127], [0.0, 2.0 / 127.0]));
        assert!(quantize_groups(&[f32::NAN, 0.0], 2, &mut q, &mut s).is_err());
        assert!(quantize_groups(&[f32::INFINITY, 0.0], 2, &mut q, &mut s).is_err());
    }

    #[test]
    fn sizes_add_up_for_stories260k() {
        let c = Config::STORIES260K;
        assert_eq!(values_len(&c), 259_328);
        // Rows of 64 inputs: 2 groups; rows of 172 inputs (w2): 6 groups.
        let per_layer = (64 + 32 + 32 + 64) * 2 + 172 * 2 * 2 + 64 * 6;
        assert_eq!(scales_len(&c, 32), 512 * 2 + 5 * per_layer);
        assert_eq!(
            scales_len(&c, 1000),
            512 + 5 * (64 + 32 + 32 + 64 + 172 * 2 + 64)
        );
        assert_eq!(kv_scales_len(&c), 2 * 5 * 32);
    }
}
