//! Test-side builder for the int8 transformer layers: quantizes an f32 state dict (weights
//! per output channel, max-abs), prepares `Int8EncoderParams` / `Int8DecoderParams` for a
//! set of stage scales, and calibrates those scales by running the int8 layer itself
//! (worst-case scales first, then each run's stage peaks set the next run's scales).
//! Nothing here looks at an expected output.
//!
//! Shared by the conformance adapters (`ops/int8/{encoder,decoder}_layer.rs`) and
//! `tests/int8_layers.rs` (included with `#[path]`), so it uses only `microattn` and `std`.

use microattn::attention::int8::{Int8Bias, Int8Dense, Int8MhaParams, Int8Scales, Int8SdpaParams};
use microattn::attention::Score;
use microattn::layers::int8::{
    int8_decoder_layer, int8_decoder_scratch_len, int8_encoder_layer, int8_encoder_scratch_len,
    int8_layer_acc_len, Int8Add, Int8DecoderParams, Int8EncoderParams, Int8FfnParams,
    Int8LayerNorm, Int8LayerStats, Int8Lut,
};
use microattn::layers::{Activation, DecoderShape, EncoderShape};
use microattn::mask::Mask;
use microattn::quant::{quantize, quantize_per_channel, FixedMultiplier, QParams};

/// Symmetric max-abs int8 quantization of a tensor (per tensor).
pub fn quantize_tensor(x: &[f32]) -> Result<(Vec<i8>, f32), String> {
    let m = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let p = QParams::from_max_abs(m).map_err(|e| format!("quantizing: {e}"))?;
    let mut q = vec![0i8; x.len()];
    quantize(x, p, &mut q).map_err(|e| format!("quantizing: {e}"))?;
    Ok((q, p.scale()))
}

/// Per-row (output channel) max-abs int8 quantization of a `[rows, cols]` weight.
pub fn quantize_per_row(w: &[f32], rows: usize) -> Result<(Vec<i8>, Vec<f32>), String> {
    if rows == 0 || w.len() % rows != 0 {
        return Err(format!("cannot split {} weights into {rows} rows", w.len()));
    }
    let scales = w
        .chunks_exact(w.len() / rows)
        .map(|r| {
            let m = r.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            QParams::from_max_abs(m).map(|p| p.scale())
        })
        .collect::<Result<Vec<f32>, _>>()
        .map_err(|e| format!("quantizing: {e}"))?;
    let mut q = vec![0i8; w.len()];
    quantize_per_channel(w, &scales, &mut q).map_err(|e| format!("quantizing: {e}"))?;
    Ok((q, scales))
}

/// An f32 linear layer `[rows, cols]` and its int8 form.
pub struct QLinear {
    w: Vec<f32>,
    b: Option<Vec<f32>>,
    q: Vec<i8>,
    scales: Vec<f32>,
    rows: usize,
    cols: usize,
}

impl QLinear {
    /// Quantizes `w` (`[rows, cols]`) per row.
    pub fn new(w: &[f32], b: Option<&[f32]>, rows: usize) -> Result<Self, String> {
        let (q, scales) = quantize_per_row(w, rows)?;
        Ok(QLinear {
            w: w.to_vec(),
            b: b.map(<[f32]>::to_vec),
            q,
            scales,
            rows,
            cols: w.len() / rows,
        })
    }

    /// Rows `r0..r0 + n` of this layer (one part of a packed in-projection).
    fn part(&self, r0: usize, n: usize) -> Result<QLinear, String> {
        let c = self.cols;
        QLinear::new(
            &self.w[r0 * c..(r0 + n) * c],
            self.b.as_ref().map(|b| &b[r0..r0 + n]),
            n,
        )
    }

    /// Largest `|y|` for inputs bounded by `x_max`: `max_c Σ|w| · x_max + |b|`.
    fn worst(&self, x_max: f32) -> f32 {
        (0..self.rows)
            .map(|r| {
                let s: f32 = self.w[r * self.cols..][..self.cols]
                    .iter()
                    .map(|v| v.abs())
                    .sum();
                s * x_max + self.b.as_ref().map_or(0.0, |b| b[r].abs())
            })
            .fold(f32::MIN_POSITIVE, f32::max)
    }

    /// Prepares the int8 layer from input scale `x` to output scale `y`.
    fn prepare<'a>(
        &'a self,
        x: f32,
        y: f32,
        ints: &mut &'a mut [i32],
        mults: &mut &'a mut [FixedMultiplier],
    ) -> Result<Int8Dense<'a>, String> {
        Int8Dense::prepare(
            &self.q,
            self.rows,
            &self.scales,
            x,
            y,
            self.b.as_deref(),
            take(ints, self.rows),
            take(mults, self.rows),
        )
        .map_err(|e| format!("Int8Dense::prepare: {e}"))
    }
}

/// The first `n` elements of a pool, the rest left in the pool.
fn take<'a, T>(pool: &mut &'a mut [T], n: usize) -> &'a mut [T] {
    let (head, tail) = std::mem::take(pool).split_at_mut(n);
    *pool = tail;
    head
}

/// `nn.MultiheadAttention` weights, quantized.
pub struct QMha {
    q: QLinear,
    k: QLinear,
    v: QLinear,
    out: QLinear,
}

impl QMha {
    /// From the packed `in_proj_weight` `[3E, E]` (+ bias) and `out_proj`.
    pub fn new(
        in_w: &[f32],
        in_b: Option<&[f32]>,
        out_w: &[f32],
        out_b: Option<&[f32]>,
        e: usize,
    ) -> Result<Self, String> {
        let packed = QLinear::new(in_w, in_b, 3 * e)?;
        Ok(QMha {
            q: packed.part(0, e)?,
            k: packed.part(e, e)?,
            v: packed.part(2 * e, e)?,
            out: QLinear::new(out_w, out_b, e)?,
        })
    }
}

/// A LayerNorm's f32 weights.
pub struct Norm {
    /// `weight`.
    pub w: Vec<f32>,
    /// `bias`.
    pub b: Option<Vec<f32>>,
}

impl Norm {
    /// `sqrt(E) · max|γ| + max|β|`: no LayerNorm output is larger.
    fn worst(&self) -> f32 {
        let g = self.w.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let b = self
            .b
            .as_ref()
            .map_or(0.0, |b| b.iter().fold(0.0f32, |m, v| m.max(v.abs())));
        ((self.w.len() as f32).sqrt() * g + b).max(f32::MIN_POSITIVE)
    }
}

/// An encoder or decoder layer's weights (quantized where int8) and configuration.
pub struct QLayer {
    /// `self_attn`.
    pub self_attn: QMha,
    /// `multihead_attn` (decoder).
    pub cross_attn: Option<QMha>,
    /// `linear1`.
    pub linear1: QLinear,
    /// `linear2`.
    pub linear2: QLinear,
    /// `norm1..`.
    pub norms: Vec<Norm>,
    /// FFN activation.
    pub activation: Activation,
    /// Pre-norm.
    pub norm_first: bool,
    /// LayerNorm epsilon.
    pub eps: f32,
    /// Heads.
    pub heads: usize,
    /// Width `E`.
    pub embed: usize,
}

impl QLayer {
    /// From a state dict accessor (`get(name)`: the f32 tensor, if present), as PyTorch
    /// names the tensors; `decoder` adds `multihead_attn.*` and `norm3.*`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        get: &dyn Fn(&str) -> Option<Vec<f32>>,
        embed: usize,
        heads: usize,
        decoder: bool,
        activation: Activation,
        norm_first: bool,
        eps: f32,
    ) -> Result<Self, String> {
        let req = |n: &str| get(n).ok_or_else(|| format!("missing input `{n}`"));
        let mha = |p: &str| -> Result<QMha, String> {
            QMha::new(
                &req(&format!("{p}.in_proj_weight"))?,
                get(&format!("{p}.in_proj_bias")).as_deref(),
                &req(&format!("{p}.out_proj.weight"))?,
                get(&format!("{p}.out_proj.bias")).as_deref(),
                embed,
            )
        };
        let w1 = req("linear1.weight")?;
        let hidden = w1.len() / embed.max(1);
        let norms = (1..=if decoder { 3 } else { 2 })
            .map(|i| {
                Ok(Norm {
                    w: req(&format!("norm{i}.weight"))?,
                    b: get(&format!("norm{i}.bias")),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(QLayer {
            self_attn: mha("self_attn")?,
            cross_attn: if decoder {
                Some(mha("multihead_attn")?)
            } else {
                None
            },
            linear1: QLinear::new(&w1, get("linear1.bias").as_deref(), hidden)?,
            linear2: QLinear::new(
                &req("linear2.weight")?,
                get("linear2.bias").as_deref(),
                embed,
            )?,
            norms,
            activation,
            norm_first,
            eps,
            heads,
            embed,
        })
    }

    /// FFN hidden width.
    pub fn hidden(&self) -> usize {
        self.linear1.rows
    }
}

/// Output scales of an attention's stages.
#[derive(Clone, Copy, Debug, Default)]
pub struct MhaScales {
    /// Projected queries, keys, values.
    pub q: f32,
    /// Projected keys.
    pub k: f32,
    /// Projected values.
    pub v: f32,
    /// Attention output (before `out_proj`).
    pub attn: f32,
    /// Output.
    pub out: f32,
}

/// Output scales of every stage of a layer.
#[derive(Clone, Copy, Debug, Default)]
pub struct LayerScales {
    /// Self-attention.
    pub self_attn: MhaScales,
    /// Cross-attention.
    pub cross_attn: MhaScales,
    /// `norm1..3` outputs.
    pub norm: [f32; 3],
    /// Pre-norm residual sums.
    pub residual: [f32; 3],
    /// `linear1` output (and activation output).
    pub hidden: f32,
    /// `linear2` output.
    pub ffn_out: f32,
}

/// Storage for one prepared layer.
struct Pools {
    ints: Vec<i32>,
    mults: Vec<FixedMultiplier>,
}

impl Pools {
    fn new(layer: &QLayer) -> Self {
        let n = 16 * layer.embed + 2 * layer.hidden() + 8 * layer.embed;
        Pools {
            ints: vec![0; n],
            mults: vec![FixedMultiplier::ONE; n],
        }
    }
}

/// One attention's prepared params: `x` scale of the queries, `kv` of keys and values.
#[allow(clippy::too_many_arguments)]
fn prepare_mha<'a>(
    m: &'a QMha,
    x: f32,
    kv: f32,
    s: &MhaScales,
    heads: usize,
    mask: Mask<'a>,
    ints: &mut &'a mut [i32],
    mults: &mut &'a mut [FixedMultiplier],
) -> Result<Int8MhaParams<'a>, String> {
    let hd = m.q.rows / heads;
    let scales = Int8Scales {
        q: s.q,
        k: s.k,
        v: s.v,
        out: s.attn,
    };
    Ok(Int8MhaParams {
        q_proj: m.q.prepare(x, s.q, ints, mults)?,
        k_proj: m.k.prepare(kv, s.k, ints, mults)?,
        v_proj: m.v.prepare(kv, s.v, ints, mults)?,
        out_proj: m.out.prepare(s.attn, s.out, ints, mults)?,
        attention: Int8SdpaParams::new(scales, hd, Score::Dot, None, mask, Int8Bias::None)
            .map_err(|e| format!("Int8SdpaParams::new: {e}"))?,
    })
}

fn prepare_norm<'a>(
    n: &Norm,
    eps: f32,
    x: f32,
    sub: Option<f32>,
    out: f32,
    ints: &mut &'a mut [i32],
) -> Result<Int8LayerNorm<'a>, String> {
    Int8LayerNorm::prepare(
        &n.w,
        n.b.as_deref(),
        eps,
        x,
        sub,
        out,
        take(ints, 2 * n.w.len()),
    )
    .map_err(|e| format!("Int8LayerNorm::prepare: {e}"))
}

fn add(x: f32, sub: f32, out: f32) -> Result<Int8Add, String> {
    Int8Add::prepare(x, sub, out).map_err(|e| format!("Int8Add::prepare: {e}"))
}

/// The scale of the tensor each stage reads, following the layer's data flow.
struct Flow {
    /// Input of each attention (queries) and of the FFN.
    attn_in: [f32; 2],
    ffn_in: f32,
    /// The residual stream before each sublayer.
    stream: [f32; 3],
    /// The output scale.
    out: f32,
}

fn flow(layer: &QLayer, s: &LayerScales, input: f32) -> Flow {
    let subs = layer.norms.len();
    let (mut stream, mut ins, mut x) = ([input; 3], [input; 3], input);
    for i in 0..subs {
        stream[i] = x;
        if layer.norm_first {
            ins[i] = s.norm[i];
            x = s.residual[i];
        } else {
            ins[i] = x;
            x = s.norm[i];
        }
    }
    Flow {
        attn_in: [ins[0], ins[1]],
        ffn_in: ins[subs - 1],
        stream,
        out: x,
    }
}

/// The scale of the final output for these stage scales.
pub fn output_scale(layer: &QLayer, s: &LayerScales, input: f32) -> f32 {
    flow(layer, s, input).out
}

/// The sublayer output scales in order (self-attention, [cross-attention,] FFN).
fn sub_scales(layer: &QLayer, s: &LayerScales) -> Vec<f32> {
    if layer.cross_attn.is_some() {
        vec![s.self_attn.out, s.cross_attn.out, s.ffn_out]
    } else {
        vec![s.self_attn.out, s.ffn_out]
    }
}

/// The blocks both layer kinds share, prepared.
struct Common<'a> {
    norms: Vec<Int8LayerNorm<'a>>,
    adds: Vec<Int8Add>,
    ffn: Int8FfnParams<'a>,
    self_attn: Int8MhaParams<'a>,
}

fn prepare_common<'a>(
    layer: &'a QLayer,
    s: &LayerScales,
    fl: &Flow,
    self_mask: Mask<'a>,
    ints: &mut &'a mut [i32],
    mults: &mut &'a mut [FixedMultiplier],
) -> Result<Common<'a>, String> {
    let subs = sub_scales(layer, s);
    let mut norms = Vec::new();
    let mut adds = Vec::new();
    for (i, n) in layer.norms.iter().enumerate() {
        let sub = if layer.norm_first {
            None
        } else {
            Some(subs[i])
        };
        norms.push(prepare_norm(
            n,
            layer.eps,
            fl.stream[i],
            sub,
            s.norm[i],
            ints,
        )?);
        adds.push(if layer.norm_first {
            add(fl.stream[i], subs[i], s.residual[i])?
        } else {
            Int8Add::default()
        });
    }
    let activation = Int8Lut::prepare(layer.activation, s.hidden, s.hidden)
        .map_err(|e| format!("Int8Lut::prepare: {e}"))?;
    let ffn = Int8FfnParams {
        linear1: layer.linear1.prepare(fl.ffn_in, s.hidden, ints, mults)?,
        activation,
        linear2: layer.linear2.prepare(s.hidden, s.ffn_out, ints, mults)?,
    };
    let self_attn = prepare_mha(
        &layer.self_attn,
        fl.attn_in[0],
        fl.attn_in[0],
        &s.self_attn,
        layer.heads,
        self_mask,
        ints,
        mults,
    )?;
    Ok(Common {
        norms,
        adds,
        ffn,
        self_attn,
    })
}

/// Prepares the encoder params for scales `s` (input at scale `input`) and calls `f`.
pub fn with_encoder_params<R>(
    layer: &QLayer,
    s: &LayerScales,
    input: f32,
    mask: Mask<'_>,
    f: impl FnOnce(&Int8EncoderParams<'_>) -> R,
) -> Result<R, String> {
    let fl = flow(layer, s, input);
    let mut pools = Pools::new(layer);
    let mut ints: &mut [i32] = &mut pools.ints;
    let mut mults: &mut [FixedMultiplier] = &mut pools.mults;
    let c = prepare_common(layer, s, &fl, mask, &mut ints, &mut mults)?;
    let params = Int8EncoderParams {
        self_attn: c.self_attn,
        ffn: c.ffn,
        norm1: c.norms[0],
        norm2: c.norms[1],
        residual1: c.adds[0],
        residual2: c.adds[1],
        norm_first: layer.norm_first,
    };
    Ok(f(&params))
}

/// Prepares the decoder params for scales `s` (target at `input`, memory at `memory`) and
/// calls `f`.
pub fn with_decoder_params<R>(
    layer: &QLayer,
    s: &LayerScales,
    input: f32,
    memory: f32,
    self_mask: Mask<'_>,
    cross_mask: Mask<'_>,
    f: impl FnOnce(&Int8DecoderParams<'_>) -> R,
) -> Result<R, String> {
    let cross = layer.cross_attn.as_ref().ok_or("not a decoder layer")?;
    let fl = flow(layer, s, input);
    let mut pools = Pools::new(layer);
    let mut ints: &mut [i32] = &mut pools.ints;
    let mut mults: &mut [FixedMultiplier] = &mut pools.mults;
    let c = prepare_common(layer, s, &fl, self_mask, &mut ints, &mut mults)?;
    let cross_attn = prepare_mha(
        cross,
        fl.attn_in[1],
        memory,
        &s.cross_attn,
        layer.heads,
        cross_mask,
        &mut ints,
        &mut mults,
    )?;
    let params = Int8DecoderParams {
        self_attn: c.self_attn,
        cross_attn,
        ffn: c.ffn,
        norm1: c.norms[0],
        norm2: c.norms[1],
        norm3: c.norms[2],
        residual1: c.adds[0],
        residual2: c.adds[1],
        residual3: c.adds[2],
        norm_first: layer.norm_first,
    };
    Ok(f(&params))
}

/// Runs the layer once in int8 with scales `s`: `src` at scale `input`, `memory` (decoder) at
/// its scale. Writes the int8 output and returns the stage peaks.
#[allow(clippy::too_many_arguments)]
pub fn run_layer(
    layer: &QLayer,
    s: &LayerScales,
    src: &[i8],
    input: f32,
    memory: Option<(&[i8], f32)>,
    self_mask: Mask<'_>,
    cross_mask: Mask<'_>,
    out: &mut [i8],
) -> Result<Int8LayerStats, String> {
    let (e, heads, hidden) = (layer.embed, layer.heads, layer.hidden());
    let len = src.len() / e;
    let mut stats = Int8LayerStats::default();
    let mut acc = vec![0i64; int8_layer_acc_len(e, heads)];
    match memory {
        None => {
            let shape = EncoderShape::new(len, e, heads, hidden);
            let mut scratch = vec![0i8; int8_encoder_scratch_len(shape)];
            with_encoder_params(layer, s, input, self_mask, |p| {
                int8_encoder_layer(src, p, out, shape, &mut scratch, &mut acc, Some(&mut stats))
            })?
            .map_err(|err| format!("int8_encoder_layer: {err}"))?;
        }
        Some((mem, mem_scale)) => {
            let shape = DecoderShape::new(len, mem.len() / e, e, heads, hidden);
            let mut scratch = vec![0i8; int8_decoder_scratch_len(shape)];
            with_decoder_params(layer, s, input, mem_scale, self_mask, cross_mask, |p| {
                int8_decoder_layer(
                    src,
                    mem,
                    p,
                    out,
                    shape,
                    &mut scratch,
                    &mut acc,
                    Some(&mut stats),
                )
            })?
            .map_err(|err| format!("int8_decoder_layer: {err}"))?;
        }
    }
    Ok(stats)
}

/// Scales no stage can saturate at (worst-case bounds from the weights and input ranges).
pub fn worst_case_scales(layer: &QLayer, input: f32, memory: f32) -> LayerScales {
    let mut s = LayerScales::default();
    let lim = 127.0;
    let mha = |m: &QMha, x_max: f32, kv_max: f32| {
        let q = m.q.worst(x_max) / lim;
        let v = m.v.worst(kv_max) / lim;
        MhaScales {
            q,
            k: m.k.worst(kv_max) / lim,
            v,
            attn: v,
            out: m.out.worst(v * lim) / lim,
        }
    };
    let subs = if layer.cross_attn.is_some() { 3 } else { 2 };
    let mut stream = input * lim;
    for i in 0..subs {
        let x_max = if layer.norm_first {
            layer.norms[i].worst()
        } else {
            stream
        };
        let sub_max = if i + 1 == subs {
            s.hidden = layer.linear1.worst(x_max) / lim;
            s.ffn_out = layer.linear2.worst(s.hidden * lim) / lim;
            s.ffn_out * lim
        } else if i == 0 {
            s.self_attn = mha(&layer.self_attn, x_max, x_max);
            s.self_attn.out * lim
        } else {
            let cross = layer.cross_attn.as_ref().expect("decoder");
            s.cross_attn = mha(cross, x_max, memory * lim);
            s.cross_attn.out * lim
        };
        if layer.norm_first {
            s.norm[i] = layer.norms[i].worst() / lim;
            stream += sub_max;
            s.residual[i] = stream / lim;
        } else {
            s.norm[i] = layer.norms[i].worst() / lim;
            stream = layer.norms[i].worst();
        }
    }
    s
}

/// `scale · (peak + 1) / 127` when the stage produced anything, else `scale`.
fn refine(scale: f32, peak: i64) -> f32 {
    if peak > 0 {
        scale * (peak as f32 + 1.0) / 127.0
    } else {
        scale
    }
}

/// The next scales from a run's stage peaks.
pub fn refine_scales(s: &LayerScales, st: &Int8LayerStats) -> LayerScales {
    let mha = |m: &MhaScales, p: &microattn::attention::int8::Int8MhaStats| MhaScales {
        q: refine(m.q, p.q),
        k: refine(m.k, p.k),
        v: refine(m.v, p.v),
        attn: refine(m.attn, p.attention),
        out: refine(m.out, p.out),
    };
    let mut r = *s;
    r.self_attn = mha(&s.self_attn, &st.self_attn);
    r.cross_attn = mha(&s.cross_attn, &st.cross_attn);
    for i in 0..3 {
        r.norm[i] = refine(s.norm[i], st.norm[i]);
        r.residual[i] = refine(s.residual[i], st.residual[i]);
    }
    r.hidden = refine(s.hidden, st.ffn.hidden);
    r.ffn_out = refine(s.ffn_out, st.ffn.out);
    r
}

/// Calibrates the stage scales on this input (worst-case scales, then `rounds` runs that
/// refine them from the peaks), runs once more and returns the dequantized output.
#[allow(clippy::too_many_arguments)]
pub fn calibrated_run(
    layer: &QLayer,
    src: &[i8],
    input: f32,
    memory: Option<(&[i8], f32)>,
    self_mask: Mask<'_>,
    cross_mask: Mask<'_>,
    rounds: usize,
) -> Result<Vec<f32>, String> {
    let mut s = worst_case_scales(layer, input, memory.map_or(input, |m| m.1));
    let mut out = vec![0i8; src.len()];
    for _ in 0..rounds {
        let st = run_layer(
            layer, &s, src, input, memory, self_mask, cross_mask, &mut out,
        )?;
        s = refine_scales(&s, &st);
    }
    run_layer(
        layer, &s, src, input, memory, self_mask, cross_mask, &mut out,
    )?;
    let scale = output_scale(layer, &s, input);
    Ok(out.iter().map(|&v| v as f32 * scale).collect())
}
