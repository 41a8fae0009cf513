//! The llama2.c decoder: checkpoint parsing and the forward pass, in f32.
//!
//! # Checkpoint format (llama2.c version 0)
//!
//! Seven little-endian `i32` ([`Config`]: `dim, hidden_dim, n_layers, n_heads, n_kv_heads,
//! vocab_size, seq_len`; a positive `vocab_size` means the classifier is the token
//! embedding), then f32 tensors in this order, weights in PyTorch's `[out, in]` layout:
//! token embedding `[vocab, dim]`, attention RMSNorm `[layers, dim]`, `wq` `[layers, dim,
//! dim]`, `wk` and `wv` `[layers, kv_dim, dim]`, `wo` `[layers, dim, dim]`, FFN RMSNorm
//! `[layers, dim]`, `w1` `[layers, hidden, dim]`, `w2` `[layers, dim, hidden]`, `w3`
//! `[layers, hidden, dim]`, final RMSNorm `[dim]`, two unused RoPE tables `[seq_len,
//! head_size / 2]`, and the classifier `[vocab, dim]` only when it is not shared. Bytes after
//! that are ignored, as llama2.c does.
//!
//! [`Llama2::from_bytes`] views the tensors in place (no copy): the bytes must start at a
//! 4-byte boundary ([`Align4`](super::Align4) for `include_bytes!`). A host that reads the
//! file can instead fill a `Vec<f32>` and use [`Llama2::from_words`].
//!
//! # Forward pass
//!
//! Per token, as llama2.c's `run.c`: embedding row; per layer RMSNorm (eps `1e-5`), `q`, `k`,
//! `v` projections ([`crate::projection::linear`]), RoPE on adjacent pairs
//! ([`crate::position::rope`], [`RopeLayout::Interleaved`]), the new `k`/`v` written to the
//! KV cache, grouped-query causal attention of the one query row over the cached positions
//! ([`crate::attention::sdpa`]), output projection and residual; RMSNorm, SwiGLU FFN
//! ([`crate::layers::gated_ffn`]) and residual; final RMSNorm and the classifier.
//!
//! The KV cache is `[layers, kv_heads, capacity, head_size]` for keys and again for values.
//! At position `pos` a KV head's keys `0..=pos` are one contiguous slice, but the slices of
//! different KV heads are `capacity` rows apart, not `pos + 1`: so attention runs once per KV
//! head, over that head's `pos + 1` rows and the query heads that share it. Each step costs
//! O(pos) and copies nothing.
//!
//! All state lives in one caller-provided f32 buffer ([`RunState::buffer_len`], a `const fn`),
//! so firmware can put it in a `static`. The configuration is validated once when the model
//! is parsed; the forward pass checks the token, the position and the state, and then cannot
//! fail or panic.

use super::{take, ModelError};
use crate::attention::{sdpa, AttentionShape, SdpaParams};
use crate::layers::{
    gated_ffn, rms_norm, rms_norm_in_place, Activation, FfnShape, GatedFfnWeights,
};
use crate::mask::{Mask, MaskTerm};
use crate::position::{rope, RopeLayout, RopeParams};
use crate::projection::{linear, LinearShape};

/// RMSNorm epsilon of llama2.c.
pub const RMS_EPS: f32 = 1e-5;

/// Bytes of the checkpoint header: seven `i32`.
pub const HEADER_BYTES: usize = 28;

/// The causal mask of a decode step; the query position comes from `with_offset`.
const CAUSAL: [MaskTerm<'static>; 1] = [MaskTerm::Causal];

/// Model sizes from the checkpoint header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Config {
    /// Model width.
    pub dim: usize,
    /// FFN hidden width.
    pub hidden_dim: usize,
    /// Decoder layers.
    pub n_layers: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (a divisor of `n_heads`).
    pub n_kv_heads: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Longest sequence the model was trained for (the largest useful KV cache).
    pub seq_len: usize,
    /// Whether the classifier is the token embedding (a positive `vocab_size` in the file).
    pub shared_classifier: bool,
}

impl Config {
    /// Karpathy's `stories260K` (tinyllamas): 5 layers of width 64, 8 query and 4 KV heads.
    pub const STORIES260K: Config = Config {
        dim: 64,
        hidden_dim: 172,
        n_layers: 5,
        n_heads: 8,
        n_kv_heads: 4,
        vocab_size: 512,
        seq_len: 512,
        shared_classifier: true,
    };

    /// Reads and validates the 28-byte header.
    ///
    /// Errors: fewer than 28 bytes ([`ModelError::Truncated`]); see [`Config::validate`].
    pub fn from_header(bytes: &[u8]) -> Result<Config, ModelError> {
        let mut v = [0i32; 7];
        for (i, out) in v.iter_mut().enumerate() {
            let b = bytes.get(4 * i..4 * i + 4).ok_or(ModelError::Truncated {
                needed: HEADER_BYTES,
                found: bytes.len(),
            })?;
            *out = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        Config::from_values(v)
    }

    /// From the seven header integers, as llama2.c reads them.
    fn from_values(v: [i32; 7]) -> Result<Config, ModelError> {
        let positive = |x: i32| usize::try_from(x).map_err(|_| ModelError::InvalidConfig);
        let config = Config {
            dim: positive(v[0])?,
            hidden_dim: positive(v[1])?,
            n_layers: positive(v[2])?,
            n_heads: positive(v[3])?,
            n_kv_heads: positive(v[4])?,
            vocab_size: v[5].unsigned_abs() as usize,
            seq_len: positive(v[6])?,
            shared_classifier: v[5] > 0,
        };
        config.validate()?;
        Ok(config)
    }

    /// The header that describes this configuration.
    pub fn header_bytes(&self) -> [u8; HEADER_BYTES] {
        let vocab = self.vocab_size as i32;
        let v = [
            self.dim as i32,
            self.hidden_dim as i32,
            self.n_layers as i32,
            self.n_heads as i32,
            self.n_kv_heads as i32,
            if self.shared_classifier {
                vocab
            } else {
                -vocab
            },
            self.seq_len as i32,
        ];
        let mut out = [0u8; HEADER_BYTES];
        for (chunk, x) in out.chunks_exact_mut(4).zip(v) {
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        out
    }

    /// Checks that the sizes fit together: every size positive and at most `i32::MAX`,
    /// `n_heads` dividing `dim`, `n_kv_heads` dividing `n_heads`, an even head size (RoPE
    /// rotates pairs), and the checkpoint size fitting in `usize` bytes.
    pub fn validate(&self) -> Result<(), ModelError> {
        let sizes = [
            self.dim,
            self.hidden_dim,
            self.n_layers,
            self.n_heads,
            self.n_kv_heads,
            self.vocab_size,
            self.seq_len,
        ];
        if sizes.iter().any(|&s| s == 0 || s > i32::MAX as usize)
            || self.dim % self.n_heads != 0
            || self.n_heads % self.n_kv_heads != 0
            || self.head_size() % 2 != 0
        {
            return Err(ModelError::InvalidConfig);
        }
        self.checked_floats()
            .and_then(|n| n.checked_mul(4))
            .and_then(|n| n.checked_add(HEADER_BYTES))
            .ok_or(ModelError::InvalidConfig)?;
        Ok(())
    }

    /// Features per head: `dim / n_heads`.
    pub const fn head_size(&self) -> usize {
        match self.dim.checked_div(self.n_heads) {
            Some(h) => h,
            None => 0,
        }
    }

    /// Key/value width: `n_kv_heads * head_size`.
    pub const fn kv_dim(&self) -> usize {
        self.n_kv_heads.saturating_mul(self.head_size())
    }

    /// Query heads per KV head.
    pub const fn kv_group(&self) -> usize {
        match self.n_heads.checked_div(self.n_kv_heads) {
            Some(g) => g,
            None => 0,
        }
    }

    /// f32 values after the header (saturating; [`Config::validate`] rules out overflow).
    pub const fn checkpoint_floats(&self) -> usize {
        let (d, l) = (self.dim, self.n_layers);
        let layer = d
            .saturating_mul(d)
            .saturating_mul(2)
            .saturating_add(d.saturating_mul(self.kv_dim()).saturating_mul(2))
            .saturating_add(d.saturating_mul(self.hidden_dim).saturating_mul(3))
            .saturating_add(d.saturating_mul(2));
        let embedding = self.vocab_size.saturating_mul(d);
        let classifier = if self.shared_classifier { 0 } else { embedding };
        embedding
            .saturating_add(l.saturating_mul(layer))
            .saturating_add(d)
            .saturating_add(self.seq_len.saturating_mul(self.head_size()))
            .saturating_add(classifier)
    }

    /// Bytes of the whole checkpoint: header and tensors.
    pub const fn checkpoint_bytes(&self) -> usize {
        self.checkpoint_floats()
            .saturating_mul(4)
            .saturating_add(HEADER_BYTES)
    }

    /// [`Config::checkpoint_floats`] with overflow checks.
    fn checked_floats(&self) -> Option<usize> {
        let (d, l) = (self.dim, self.n_layers);
        let kv = self.n_kv_heads.checked_mul(self.head_size())?;
        let layer = d
            .checked_mul(d)?
            .checked_mul(2)?
            .checked_add(d.checked_mul(kv)?.checked_mul(2)?)?
            .checked_add(d.checked_mul(self.hidden_dim)?.checked_mul(3)?)?
            .checked_add(d.checked_mul(2)?)?;
        let embedding = self.vocab_size.checked_mul(d)?;
        let classifier = if self.shared_classifier { 0 } else { embedding };
        embedding
            .checked_add(l.checked_mul(layer)?)?
            .checked_add(d)?
            .checked_add(self.seq_len.checked_mul(self.head_size())?)?
            .checked_add(classifier)
    }

    /// Elements of one KV cache (keys or values) holding `capacity` positions:
    /// `n_layers * n_kv_heads * capacity * head_size`.
    pub const fn kv_cache_len(&self, capacity: usize) -> usize {
        self.n_layers
            .saturating_mul(self.kv_dim())
            .saturating_mul(capacity)
    }
}

/// Which RMSNorm weight vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Norm {
    /// Before attention.
    Attention,
    /// Before the FFN.
    Ffn,
    /// After the last layer.
    Final,
}

/// Which weight matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Matrix {
    Wq,
    Wk,
    Wv,
    Wo,
    W1,
    W2,
    W3,
    Classifier,
}

impl Matrix {
    /// `(out, in)` features of this matrix.
    pub(crate) const fn shape(self, c: &Config) -> (usize, usize) {
        match self {
            Matrix::Wq | Matrix::Wo => (c.dim, c.dim),
            Matrix::Wk | Matrix::Wv => (c.kv_dim(), c.dim),
            Matrix::W1 | Matrix::W3 => (c.hidden_dim, c.dim),
            Matrix::W2 => (c.dim, c.hidden_dim),
            Matrix::Classifier => (c.vocab_size, c.dim),
        }
    }
}

/// `t[i*n .. (i+1)*n]`, or [`ModelError::InvalidConfig`] (never for a validated model).
#[inline]
pub(crate) fn part<T>(t: &[T], i: usize, n: usize) -> Result<&[T], ModelError> {
    i.checked_mul(n)
        .and_then(|start| t.get(start..start.checked_add(n)?))
        .ok_or(ModelError::InvalidConfig)
}

/// Mutable [`part`].
#[inline]
pub(crate) fn part_mut<T>(t: &mut [T], i: usize, n: usize) -> Result<&mut [T], ModelError> {
    i.checked_mul(n)
        .and_then(|start| t.get_mut(start..start.checked_add(n)?))
        .ok_or(ModelError::InvalidConfig)
}

/// An f32 llama2.c model: a validated [`Config`] and views of the checkpoint's tensors.
#[derive(Debug, Clone, Copy)]
pub struct Llama2<'a> {
    config: Config,
    pub(crate) token_embedding: &'a [f32],
    pub(crate) rms_att: &'a [f32],
    pub(crate) rms_ffn: &'a [f32],
    pub(crate) rms_final: &'a [f32],
    pub(crate) wq: &'a [f32],
    pub(crate) wk: &'a [f32],
    pub(crate) wv: &'a [f32],
    pub(crate) wo: &'a [f32],
    pub(crate) w1: &'a [f32],
    pub(crate) w2: &'a [f32],
    pub(crate) w3: &'a [f32],
    pub(crate) classifier: &'a [f32],
}

impl<'a> Llama2<'a> {
    /// Parses a checkpoint in place: header, then zero-copy views of the tensors.
    ///
    /// Errors: a short file ([`ModelError::Truncated`]), a bad header
    /// ([`ModelError::InvalidConfig`]), bytes not starting at a 4-byte boundary or a
    /// big-endian target ([`ModelError::Misaligned`]).
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Self, ModelError> {
        let config = Config::from_header(bytes)?;
        let tensors =
            bytes
                .get(HEADER_BYTES..config.checkpoint_bytes())
                .ok_or(ModelError::Truncated {
                    needed: config.checkpoint_bytes(),
                    found: bytes.len(),
                })?;
        Llama2::from_tensors(config, bytes_as_f32(tensors)?)
    }

    /// Parses a checkpoint already read into f32 words (the header's integers are the bit
    /// patterns of the first seven words): for hosts that load the file into a `Vec<f32>`.
    ///
    /// Errors: as [`Llama2::from_bytes`], counting in words instead of bytes is irrelevant:
    /// sizes in [`ModelError::Truncated`] are bytes.
    pub fn from_words(words: &'a [f32]) -> Result<Self, ModelError> {
        let mut header = [0i32; 7];
        for (h, w) in header.iter_mut().zip(words) {
            *h = w.to_bits() as i32;
        }
        if words.len() < 7 {
            return Err(ModelError::Truncated {
                needed: HEADER_BYTES,
                found: words.len() * 4,
            });
        }
        let config = Config::from_values(header)?;
        let tensors =
            words
                .get(7..7 + config.checkpoint_floats())
                .ok_or(ModelError::Truncated {
                    needed: config.checkpoint_bytes(),
                    found: words.len() * 4,
                })?;
        Llama2::from_tensors(config, tensors)
    }

    /// Splits the tensor area (exactly `checkpoint_floats` long) into the named tensors.
    fn from_tensors(config: Config, data: &'a [f32]) -> Result<Self, ModelError> {
        let c = &config;
        let (d, l) = (c.dim, c.n_layers);
        let mut rest = data;
        let mut next = |n: usize| -> Result<&'a [f32], ModelError> {
            let (head, tail) = rest.split_at_checked(n).ok_or(ModelError::InvalidConfig)?;
            rest = tail;
            Ok(head)
        };
        let layers = |m: Matrix| {
            let (o, i) = m.shape(c);
            l * o * i
        };
        let token_embedding = next(c.vocab_size * d)?;
        let rms_att = next(l * d)?;
        let wq = next(layers(Matrix::Wq))?;
        let wk = next(layers(Matrix::Wk))?;
        let wv = next(layers(Matrix::Wv))?;
        let wo = next(layers(Matrix::Wo))?;
        let rms_ffn = next(l * d)?;
        let w1 = next(layers(Matrix::W1))?;
        let w2 = next(layers(Matrix::W2))?;
        let w3 = next(layers(Matrix::W3))?;
        let rms_final = next(d)?;
        next(c.seq_len * c.head_size())?; // the old RoPE tables
        let classifier = if c.shared_classifier {
            token_embedding
        } else {
            next(c.vocab_size * d)?
        };
        Ok(Llama2 {
            config,
            token_embedding,
            rms_att,
            rms_ffn,
            rms_final,
            wq,
            wk,
            wv,
            wo,
            w1,
            w2,
            w3,
            classifier,
        })
    }

    /// The model's sizes.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// All of one matrix kind, `[layers, out, in]` (the classifier has one "layer").
    pub(crate) fn matrix(&self, m: Matrix) -> &'a [f32] {
        match m {
            Matrix::Wq => self.wq,
            Matrix::Wk => self.wk,
            Matrix::Wv => self.wv,
            Matrix::Wo => self.wo,
            Matrix::W1 => self.w1,
            Matrix::W2 => self.w2,
            Matrix::W3 => self.w3,
            Matrix::Classifier => self.classifier,
        }
    }

    /// The f32 RMSNorm weights (also used by the int8 model, which keeps norms in f32).
    pub(crate) fn norm_weights(&self, which: Norm, layer: usize) -> Result<&'a [f32], ModelError> {
        let d = self.config.dim;
        match which {
            Norm::Attention => part(self.rms_att, layer, d),
            Norm::Ffn => part(self.rms_ffn, layer, d),
            Norm::Final => Ok(self.rms_final),
        }
    }

    /// Runs token `token` at position `pos` and returns the logits (`vocab_size`, in the
    /// state, writable so a sampler can work in place). Positions must be fed in order
    /// `0, 1, …` (each step reads the cache entries of the previous ones).
    ///
    /// Errors: a token outside the vocabulary, `pos` at or beyond the state's capacity, a
    /// state built for another configuration.
    pub fn forward<'s>(
        &self,
        state: &'s mut RunState<'_>,
        token: u32,
        pos: usize,
    ) -> Result<&'s mut [f32], ModelError> {
        if state.config != self.config {
            return Err(ModelError::StateMismatch);
        }
        forward_core(self, &mut (), &mut state.cache, &mut state.acts, token, pos)
    }
}

/// Views little-endian f32 bytes in place, or [`ModelError::Misaligned`].
#[cfg(target_endian = "little")]
pub(crate) fn bytes_as_f32(bytes: &[u8]) -> Result<&[f32], ModelError> {
    // SAFETY: every bit pattern is a valid f32, `align_to` only returns a correctly aligned
    // middle part, and the lifetime stays that of `bytes`. On a little-endian target the
    // in-memory floats are the file's little-endian floats.
    let (head, floats, tail) = unsafe { bytes.align_to::<f32>() };
    if head.is_empty() && tail.is_empty() {
        Ok(floats)
    } else {
        Err(ModelError::Misaligned)
    }
}

/// Big-endian targets cannot view little-endian floats in place.
#[cfg(not(target_endian = "little"))]
pub(crate) fn bytes_as_f32(_bytes: &[u8]) -> Result<&[f32], ModelError> {
    Err(ModelError::Misaligned)
}

/// The per-token activations, shared by the f32 and int8 models.
#[derive(Debug)]
pub(crate) struct Activations<'s> {
    /// Residual stream `[dim]`.
    pub(crate) x: &'s mut [f32],
    /// Normalized input, then attention output `[dim]`.
    pub(crate) xb: &'s mut [f32],
    /// Sub-block output `[dim]`.
    pub(crate) xb2: &'s mut [f32],
    /// Queries `[n_heads, head_size]`.
    pub(crate) q: &'s mut [f32],
    /// New keys `[kv_dim]`.
    pub(crate) k: &'s mut [f32],
    /// New values `[kv_dim]`.
    pub(crate) v: &'s mut [f32],
    /// FFN hidden activations `[2 * hidden_dim]`.
    pub(crate) hb: &'s mut [f32],
    /// `[vocab_size]`.
    pub(crate) logits: &'s mut [f32],
}

impl<'s> Activations<'s> {
    /// f32 elements of the activations.
    pub(crate) const fn len(c: &Config) -> usize {
        c.dim
            .saturating_mul(4)
            .saturating_add(c.kv_dim().saturating_mul(2))
            .saturating_add(c.hidden_dim.saturating_mul(2))
            .saturating_add(c.vocab_size)
    }

    /// Takes the activations off the front of `rest`.
    pub(crate) fn new(
        c: &Config,
        rest: &mut &'s mut [f32],
        total: usize,
        found: usize,
    ) -> Result<Self, ModelError> {
        Ok(Activations {
            x: take(rest, c.dim, total, found)?,
            xb: take(rest, c.dim, total, found)?,
            xb2: take(rest, c.dim, total, found)?,
            q: take(rest, c.dim, total, found)?,
            k: take(rest, c.kv_dim(), total, found)?,
            v: take(rest, c.kv_dim(), total, found)?,
            hb: take(rest, c.hidden_dim * 2, total, found)?,
            logits: take(rest, c.vocab_size, total, found)?,
        })
    }
}

/// Everything a model with f32 weights and an f32 KV cache keeps between and during steps,
/// in one caller-provided buffer of [`RunState::buffer_len`] f32s.
#[derive(Debug)]
pub struct RunState<'s> {
    config: Config,
    acts: Activations<'s>,
    cache: F32Cache<'s>,
}

impl<'s> RunState<'s> {
    /// f32 elements of the buffer for a cache of `capacity` positions (at most
    /// `config.seq_len` are useful): the activations and the key and value caches.
    pub const fn buffer_len(config: &Config, capacity: usize) -> usize {
        Activations::len(config).saturating_add(config.kv_cache_len(capacity).saturating_mul(2))
    }

    /// A state for `config` with room for `capacity` positions, in `buffer` (at least
    /// [`RunState::buffer_len`]; the rest is unused). The cache needs no clearing: a step
    /// only reads positions written by earlier steps.
    ///
    /// Errors: a zero capacity ([`ModelError::InvalidConfig`]), a short buffer.
    pub fn new(
        config: &Config,
        capacity: usize,
        buffer: &'s mut [f32],
    ) -> Result<Self, ModelError> {
        config.validate()?;
        if capacity == 0 {
            return Err(ModelError::InvalidConfig);
        }
        let total = RunState::buffer_len(config, capacity);
        let found = buffer.len();
        let mut rest = buffer;
        let acts = Activations::new(config, &mut rest, total, found)?;
        let n = config.kv_cache_len(capacity);
        let key = take(&mut rest, n, total, found)?;
        let value = take(&mut rest, n, total, found)?;
        Ok(RunState {
            config: *config,
            acts,
            cache: F32Cache {
                key,
                value,
                capacity,
            },
        })
    }

    /// Positions the KV cache holds.
    pub fn capacity(&self) -> usize {
        self.cache.capacity
    }

    /// The logits of the last step.
    pub fn logits(&self) -> &[f32] {
        self.acts.logits
    }

    /// The key cache, the value cache and the capacity (for calibration).
    pub(crate) fn caches(&self) -> (&[f32], &[f32], usize) {
        (self.cache.key, self.cache.value, self.cache.capacity)
    }
}

/// What differs between the f32 and the int8 model: how weights are stored and multiplied.
/// `W` is the backend's working memory (quantized activations for int8).
pub(crate) trait Backend<W> {
    /// The model's sizes.
    fn config(&self) -> &Config;
    /// Writes the embedding row of `token` (already range-checked) into `x`.
    fn embed(&self, token: usize, x: &mut [f32]) -> Result<(), ModelError>;
    /// RMSNorm weights.
    fn norm(&self, which: Norm, layer: usize) -> Result<&[f32], ModelError>;
    /// `out = W x` for matrix `m` of layer `layer`.
    fn matmul(
        &self,
        m: Matrix,
        layer: usize,
        x: &[f32],
        out: &mut [f32],
        work: &mut W,
    ) -> Result<(), ModelError>;
    /// SwiGLU FFN of layer `layer`: `out = W2 (silu(W1 x) * W3 x)`; `hb` holds
    /// `2 * hidden_dim` f32.
    fn ffn(
        &self,
        layer: usize,
        x: &[f32],
        out: &mut [f32],
        hb: &mut [f32],
        work: &mut W,
    ) -> Result<(), ModelError>;
}

/// What differs between KV cache element types.
pub(crate) trait KvCache {
    /// Positions the cache holds.
    fn capacity(&self) -> usize;
    /// Stores the new `k` and `v` (`[kv_dim]`, head-major) of layer `layer` at `pos`.
    fn store(
        &mut self,
        c: &Config,
        layer: usize,
        pos: usize,
        k: &[f32],
        v: &[f32],
    ) -> Result<(), ModelError>;
    /// Causal attention of the query heads `q` (`[n_heads, head_size]`) at `pos` over the
    /// cached positions `0..=pos` of layer `layer`, into `out` (`[n_heads, head_size]`).
    fn attend(
        &mut self,
        c: &Config,
        layer: usize,
        pos: usize,
        q: &[f32],
        out: &mut [f32],
    ) -> Result<(), ModelError>;
}

/// The f32 KV cache: `[layers, kv_heads, capacity, head_size]` for keys and for values.
#[derive(Debug)]
pub(crate) struct F32Cache<'s> {
    pub(crate) key: &'s mut [f32],
    pub(crate) value: &'s mut [f32],
    pub(crate) capacity: usize,
}

impl KvCache for F32Cache<'_> {
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
            let row = (layer * c.n_kv_heads + g) * self.capacity + pos;
            part_mut(self.key, row, hs)?.copy_from_slice(part(k, g, hs)?);
            part_mut(self.value, row, hs)?.copy_from_slice(part(v, g, hs)?);
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
        let params = SdpaParams {
            mask: Mask::new(&CAUSAL).with_offset(pos),
            ..SdpaParams::default()
        };
        for g in 0..c.n_kv_heads {
            // This KV head's positions 0..=pos: contiguous, `capacity` rows per head.
            let head = layer * c.n_kv_heads + g;
            let k = part(part(self.key, head, self.capacity * hs)?, 0, len * hs)?;
            let v = part(part(self.value, head, self.capacity * hs)?, 0, len * hs)?;
            let q_g = part(q, g, group * hs)?;
            let out_g = part_mut(out, g, group * hs)?;
            sdpa(q_g, k, v, out_g, shape, &params)?;
        }
        Ok(())
    }
}

impl Backend<()> for Llama2<'_> {
    fn config(&self) -> &Config {
        &self.config
    }

    fn embed(&self, token: usize, x: &mut [f32]) -> Result<(), ModelError> {
        x.copy_from_slice(part(self.token_embedding, token, self.config.dim)?);
        Ok(())
    }

    fn norm(&self, which: Norm, layer: usize) -> Result<&[f32], ModelError> {
        self.norm_weights(which, layer)
    }

    fn matmul(
        &self,
        m: Matrix,
        layer: usize,
        x: &[f32],
        out: &mut [f32],
        _work: &mut (),
    ) -> Result<(), ModelError> {
        let (o, i) = m.shape(&self.config);
        let w = part(self.matrix(m), layer, o * i)?;
        linear(x, w, None, out, LinearShape::new(1, i, o))?;
        Ok(())
    }

    fn ffn(
        &self,
        layer: usize,
        x: &[f32],
        out: &mut [f32],
        hb: &mut [f32],
        _work: &mut (),
    ) -> Result<(), ModelError> {
        let c = &self.config;
        let n = c.hidden_dim * c.dim;
        let weights = GatedFfnWeights {
            gate: part(self.w1, layer, n)?,
            up: part(self.w3, layer, n)?,
            down: part(self.w2, layer, n)?,
        };
        let shape = FfnShape::new(1, c.dim, c.hidden_dim);
        gated_ffn(x, &weights, Activation::Silu, out, shape, hb)?;
        Ok(())
    }
}

/// One decode step, written once for every weight and cache type.
pub(crate) fn forward_core<'s, W, B: Backend<W>, C: KvCache>(
    model: &B,
    work: &mut W,
    cache: &mut C,
    acts: &'s mut Activations<'_>,
    token: u32,
    pos: usize,
) -> Result<&'s mut [f32], ModelError> {
    let c = *model.config();
    if token as usize >= c.vocab_size {
        return Err(ModelError::TokenOutOfRange {
            token,
            vocab_size: c.vocab_size,
        });
    }
    if pos >= cache.capacity() {
        return Err(ModelError::PositionOutOfRange {
            pos,
            capacity: cache.capacity(),
        });
    }
    let Activations {
        x,
        xb,
        xb2,
        q,
        k,
        v,
        hb,
        logits,
    } = acts;
    let hs = c.head_size();
    let rope_params = RopeParams {
        pos_offset: pos,
        ..RopeParams::new(RopeLayout::Interleaved)
    };
    model.embed(token as usize, x)?;
    for l in 0..c.n_layers {
        // Attention block.
        rms_norm(x, model.norm(Norm::Attention, l)?, xb, c.dim, RMS_EPS)?;
        model.matmul(Matrix::Wq, l, xb, q, work)?;
        model.matmul(Matrix::Wk, l, xb, k, work)?;
        model.matmul(Matrix::Wv, l, xb, v, work)?;
        rope(q, c.n_heads, 1, hs, &rope_params)?;
        rope(k, c.n_kv_heads, 1, hs, &rope_params)?;
        cache.store(&c, l, pos, k, v)?;
        cache.attend(&c, l, pos, q, xb)?;
        model.matmul(Matrix::Wo, l, xb, xb2, work)?;
        add(x, xb2);
        // FFN block.
        rms_norm(x, model.norm(Norm::Ffn, l)?, xb, c.dim, RMS_EPS)?;
        model.ffn(l, xb, xb2, hb, work)?;
        add(x, xb2);
    }
    rms_norm_in_place(x, model.norm(Norm::Final, 0)?, c.dim, RMS_EPS)?;
    model.matmul(Matrix::Classifier, 0, x, logits, work)?;
    Ok(&mut **logits)
}

/// `x += y` (the residual connection).
#[inline]
fn add(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}
