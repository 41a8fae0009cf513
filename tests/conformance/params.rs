//! JSON parameters → library types. The library's mask terms and biases borrow their lists,
//! so parsing builds owned specs here ([`MaskList`], [`BiasSpec`]) and lends them out.
//! Every problem is an `Err(String)`, so a malformed case fails instead of panicking.

// Helpers for every op's adapter; not all of them are used by the ops present today.
#![allow(dead_code)]

use microattn::attention::{Bias, Score};
use microattn::mask::MaskTerm;
use serde_json::Value;

/// Parameter `key` of `params` as a non-negative integer, `None` when absent or null.
pub fn opt_usize(params: &Value, key: &str) -> Result<Option<usize>, String> {
    match params.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => as_usize(v)
            .map(Some)
            .map_err(|e| format!("param `{key}`: {e}")),
    }
}

/// Parameter `key` as a non-negative integer, required.
pub fn req_usize(params: &Value, key: &str) -> Result<usize, String> {
    opt_usize(params, key)?.ok_or_else(|| format!("missing param `{key}`"))
}

/// Parameter `key` as a (possibly negative) integer, `None` when absent or null.
pub fn opt_i64(params: &Value, key: &str) -> Result<Option<i64>, String> {
    match params.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| format!("param `{key}`: {v} is not an integer")),
    }
}

/// Parameter `key` as a finite number, `None` when absent or null.
pub fn opt_f64(params: &Value, key: &str) -> Result<Option<f64>, String> {
    match params.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|x| x.is_finite())
            .map(Some)
            .ok_or_else(|| format!("param `{key}`: {v} is not a finite number")),
    }
}

/// Parameter `key` as a boolean, `None` when absent or null.
pub fn opt_bool(params: &Value, key: &str) -> Result<Option<bool>, String> {
    match params.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_bool()
            .map(Some)
            .ok_or_else(|| format!("param `{key}`: {v} is not a boolean")),
    }
}

/// Parameter `key` as a string, `None` when absent or null.
pub fn opt_str<'v>(params: &'v Value, key: &str) -> Result<Option<&'v str>, String> {
    match params.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_str()
            .map(Some)
            .ok_or_else(|| format!("param `{key}`: {v} is not a string")),
    }
}

/// The score function named by param `key` (`dot` when absent).
pub fn score(params: &Value, key: &str) -> Result<Score, String> {
    match opt_str(params, key)? {
        None | Some("dot") => Ok(Score::Dot),
        Some("cosine") => Ok(Score::Cosine),
        Some("neg_sq_l2") => Ok(Score::NegSqL2),
        Some("neg_l1") => Ok(Score::NegL1),
        Some(other) => Err(format!("param `{key}`: unknown score {other:?}")),
    }
}

fn as_usize(v: &Value) -> Result<usize, String> {
    v.as_u64()
        .and_then(|x| usize::try_from(x).ok())
        .ok_or_else(|| format!("{v} is not a non-negative integer"))
}

fn usize_list(v: Option<&Value>, what: &str) -> Result<Vec<usize>, String> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|x| as_usize(x).map_err(|e| format!("`{what}` entry: {e}")))
            .collect(),
        Some(other) => Err(format!("`{what}` is not a list: {other}")),
    }
}

fn f32_list(v: &Value, what: &str) -> Result<Vec<f32>, String> {
    v.as_array()
        .ok_or_else(|| format!("`{what}` is not a list"))?
        .iter()
        .map(|x| {
            x.as_f64()
                .map(|x| x as f32)
                .filter(|x| x.is_finite())
                .ok_or_else(|| format!("`{what}` entry {x} is not a finite number"))
        })
        .collect()
}

/// One mask entry of `FORMAT.md`, owning its lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaskSpec {
    /// `none`.
    None,
    /// `causal`.
    Causal,
    /// `sliding`.
    Sliding { left: usize, right: usize },
    /// `dilated`.
    Dilated {
        left: usize,
        right: usize,
        dilation: usize,
    },
    /// `global_sliding`.
    GlobalSliding {
        left: usize,
        right: usize,
        global: Vec<usize>,
    },
    /// `block_sparse`.
    BlockSparse {
        block: usize,
        window: usize,
        global: Vec<usize>,
        random: Vec<(usize, usize)>,
    },
    /// `key_padding`.
    KeyPadding { valid: usize },
}

impl MaskSpec {
    fn from_json(v: &Value) -> Result<MaskSpec, String> {
        let kind = v
            .get("kind")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("mask entry without a string `kind`: {v}"))?;
        let field = |key: &str| req_usize(v, key).map_err(|e| format!("mask `{kind}`: {e}"));
        Ok(match kind {
            "none" => MaskSpec::None,
            "causal" => MaskSpec::Causal,
            "sliding" => MaskSpec::Sliding {
                left: field("left")?,
                right: field("right")?,
            },
            "dilated" => MaskSpec::Dilated {
                left: field("left")?,
                right: field("right")?,
                dilation: field("dilation")?,
            },
            "global_sliding" => MaskSpec::GlobalSliding {
                left: field("left")?,
                right: field("right")?,
                global: usize_list(v.get("global"), "global")?,
            },
            "block_sparse" => {
                let random = match v.get("random") {
                    None | Some(Value::Null) => Vec::new(),
                    Some(Value::Array(pairs)) => pairs
                        .iter()
                        .map(|pair| match usize_list(Some(pair), "random")?.as_slice() {
                            &[qb, kb] => Ok((qb, kb)),
                            _ => Err(format!("`random` entry {pair} is not a [qb, kb] pair")),
                        })
                        .collect::<Result<_, String>>()?,
                    Some(other) => return Err(format!("`random` is not a list: {other}")),
                };
                MaskSpec::BlockSparse {
                    block: field("block")?,
                    window: field("window")?,
                    global: usize_list(v.get("global"), "global")?,
                    random,
                }
            }
            "key_padding" => MaskSpec::KeyPadding {
                valid: field("valid")?,
            },
            other => return Err(format!("unknown mask kind {other:?}")),
        })
    }

    /// The library term, borrowing this spec's lists.
    pub fn term(&self) -> MaskTerm<'_> {
        match self {
            MaskSpec::None => MaskTerm::None,
            MaskSpec::Causal => MaskTerm::Causal,
            &MaskSpec::Sliding { left, right } => MaskTerm::Sliding { left, right },
            &MaskSpec::Dilated {
                left,
                right,
                dilation,
            } => MaskTerm::Dilated {
                left,
                right,
                dilation,
            },
            MaskSpec::GlobalSliding {
                left,
                right,
                global,
            } => MaskTerm::GlobalSliding {
                left: *left,
                right: *right,
                global,
            },
            MaskSpec::BlockSparse {
                block,
                window,
                global,
                random,
            } => MaskTerm::BlockSparse {
                block: *block,
                window: *window,
                global,
                random,
            },
            &MaskSpec::KeyPadding { valid } => MaskTerm::KeyPadding { valid },
        }
    }
}

/// A mask list (an AND of entries); empty allows every key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaskList(pub Vec<MaskSpec>);

impl MaskList {
    /// Parses param `key` (`mask`, `tgt_mask`, ...): a list of entries, a single entry, or
    /// absent/null for no mask.
    pub fn parse(params: &Value, key: &str) -> Result<MaskList, String> {
        let specs = match params.get(key) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(MaskSpec::from_json)
                .collect::<Result<_, _>>()?,
            Some(entry @ Value::Object(_)) => vec![MaskSpec::from_json(entry)?],
            Some(other) => return Err(format!("param `{key}` is not a mask list: {other}")),
        };
        Ok(MaskList(specs))
    }

    /// The library terms, borrowing this list; build a `Mask` with `Mask::new(&terms)`.
    pub fn terms(&self) -> Vec<MaskTerm<'_>> {
        self.0.iter().map(MaskSpec::term).collect()
    }
}

/// An additive position bias of `FORMAT.md`, owning its values.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum BiasSpec {
    /// No bias.
    #[default]
    None,
    /// ALiBi, one slope per query head.
    Alibi { slopes: Vec<f32> },
    /// T5 relative buckets; `table` holds the per-head rows flattened, row-major.
    T5 {
        bidirectional: bool,
        num_buckets: usize,
        max_distance: usize,
        table: Vec<f32>,
    },
}

impl BiasSpec {
    /// Parses param `key` (usually `bias`); absent or null is no bias.
    pub fn parse(params: &Value, key: &str) -> Result<BiasSpec, String> {
        let v = match params.get(key) {
            None | Some(Value::Null) => return Ok(BiasSpec::None),
            Some(v) => v,
        };
        let kind = v
            .get("kind")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("param `{key}` has no string `kind`"))?;
        match kind {
            "none" => Ok(BiasSpec::None),
            "alibi" => Ok(BiasSpec::Alibi {
                slopes: f32_list(v.get("slopes").unwrap_or(&Value::Null), "slopes")?,
            }),
            "t5" => {
                let rows = v
                    .get("table")
                    .and_then(Value::as_array)
                    .ok_or("t5 bias: `table` is not a list of per-head rows")?;
                // Per-head rows, flattened: the library indexes `h * num_buckets + bucket`.
                let width = rows.first().and_then(Value::as_array).map_or(0, Vec::len);
                let mut table = Vec::new();
                for row in rows {
                    let row = f32_list(row, "table row")?;
                    if row.len() != width {
                        return Err("t5 bias: table rows differ in length".into());
                    }
                    table.extend(row);
                }
                Ok(BiasSpec::T5 {
                    bidirectional: opt_bool(v, "bidirectional")?
                        .ok_or("t5 bias: missing `bidirectional`")?,
                    num_buckets: req_usize(v, "num_buckets")?,
                    max_distance: req_usize(v, "max_distance")?,
                    table,
                })
            }
            other => Err(format!("unknown bias kind {other:?}")),
        }
    }

    /// The library bias, borrowing this spec.
    pub fn bias(&self) -> Bias<'_> {
        match self {
            BiasSpec::None => Bias::None,
            BiasSpec::Alibi { slopes } => Bias::Alibi { slopes },
            BiasSpec::T5 {
                bidirectional,
                num_buckets,
                max_distance,
                table,
            } => Bias::T5 {
                bidirectional: *bidirectional,
                num_buckets: *num_buckets,
                max_distance: *max_distance,
                table,
            },
        }
    }
}

/// Param `q_pos_offset` (default 0): the absolute position of query row 0, possibly negative.
pub fn q_pos_offset(params: &Value) -> Result<i64, String> {
    Ok(opt_i64(params, "q_pos_offset")?.unwrap_or(0))
}
