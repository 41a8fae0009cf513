//! One conformance case (`microattn-conformance/1`, see `FORMAT.md`): parsing with every
//! problem reported as an `Err(String)` (a malformed file is a failed case, never a panic),
//! tensor accessors for the op adapters, and the rel-L2 comparison.

// Some accessors exist for adapters that other engineers add (i32 tensors for GAT, ...).
#![allow(dead_code)]

use serde_json::{Map, Value};
use std::fmt;

/// The format tag every case must carry.
pub const FORMAT_TAG: &str = "microattn-conformance/1";

/// The element type a case is run in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ElemType {
    /// Inputs as given, f32 arithmetic.
    F32,
    /// Inputs and outputs stored as IEEE half.
    F16,
    /// Inputs and outputs stored as bfloat16: a project extension, not a `FORMAT.md` type.
    /// It runs only when `MICROATTN_CONFORMANCE_TYPES` names it, on every case with an `f16`
    /// tolerance, against 8 times that tolerance (see `main.rs`).
    Bf16,
    /// Inputs quantized to int8, integer kernels.
    I8,
}

impl ElemType {
    /// The `FORMAT.md` types, in the order the runner checks them: the default type list.
    pub const DEFAULT: [ElemType; 3] = [ElemType::F32, ElemType::F16, ElemType::I8];

    /// Every type `MICROATTN_CONFORMANCE_TYPES` may name, in the order the runner checks them.
    pub const ALL: [ElemType; 4] = [ElemType::F32, ElemType::F16, ElemType::Bf16, ElemType::I8];

    /// The name used in `tolerance` and `MICROATTN_CONFORMANCE_TYPES`.
    pub fn name(self) -> &'static str {
        match self {
            ElemType::F32 => "f32",
            ElemType::F16 => "f16",
            ElemType::Bf16 => "bf16",
            ElemType::I8 => "i8",
        }
    }

    /// Whether values are stored as floats (f32, f16, bf16): the types the `ops/<op>.rs`
    /// adapters run, through the library's generic float kernels.
    pub fn is_float(self) -> bool {
        match self {
            ElemType::F32 | ElemType::F16 | ElemType::Bf16 => true,
            ElemType::I8 => false,
        }
    }

    /// The type called `name`, if it is one of ours.
    pub fn parse(name: &str) -> Option<ElemType> {
        ElemType::ALL.into_iter().find(|t| t.name() == name)
    }
}

impl fmt::Display for ElemType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Tensor values: f32 unless the file says `"dtype": "i32"`.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    /// Float values.
    F32(Vec<f32>),
    /// Integer values (GAT's `edge_index`).
    I32(Vec<i32>),
}

/// A row-major tensor from a case file.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// `shape.iter().product()` values.
    pub data: Data,
}

impl Tensor {
    /// The float values, or an error naming the tensor when it holds integers.
    pub fn f32s(&self) -> Result<&[f32], String> {
        match &self.data {
            Data::F32(v) => Ok(v),
            Data::I32(_) => Err("tensor holds i32 values, f32 expected".into()),
        }
    }

    /// The integer values, or an error when the tensor holds floats.
    pub fn i32s(&self) -> Result<&[i32], String> {
        match &self.data {
            Data::I32(v) => Ok(v),
            Data::F32(_) => Err("tensor holds f32 values, i32 expected".into()),
        }
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        match &self.data {
            Data::F32(v) => v.len(),
            Data::I32(v) => v.len(),
        }
    }

    /// The values widened to f64 (integers exactly), for the comparison.
    fn values_f64(&self) -> Vec<f64> {
        match &self.data {
            Data::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Data::I32(v) => v.iter().map(|&x| f64::from(x)).collect(),
        }
    }

    fn from_json(value: &Value) -> Result<Tensor, String> {
        let obj = value.as_object().ok_or("tensor is not an object")?;
        let shape = obj
            .get("shape")
            .and_then(Value::as_array)
            .ok_or("tensor has no `shape` array")?
            .iter()
            .map(|d| {
                d.as_u64()
                    .and_then(|d| usize::try_from(d).ok())
                    .ok_or_else(|| format!("shape entry {d} is not a non-negative integer"))
            })
            .collect::<Result<Vec<usize>, String>>()?;
        let count = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or("shape element count overflows")?;
        let raw = obj
            .get("data")
            .and_then(Value::as_array)
            .ok_or("tensor has no `data` array")?;
        if raw.len() != count {
            return Err(format!(
                "shape {shape:?} needs {count} values, data has {}",
                raw.len()
            ));
        }
        let data = match obj.get("dtype").map(|d| d.as_str()) {
            None | Some(Some("f32")) => Data::F32(
                raw.iter()
                    .map(|x| {
                        x.as_f64()
                            .map(|x| x as f32)
                            .filter(|x| x.is_finite())
                            .ok_or_else(|| format!("data value {x} is not a finite f32"))
                    })
                    .collect::<Result<_, String>>()?,
            ),
            Some(Some("i32")) => Data::I32(
                raw.iter()
                    .map(|x| {
                        x.as_i64()
                            .and_then(|x| i32::try_from(x).ok())
                            .ok_or_else(|| format!("data value {x} is not an i32"))
                    })
                    .collect::<Result<_, String>>()?,
            ),
            Some(other) => return Err(format!("unknown dtype {other:?}")),
        };
        Ok(Tensor { shape, data })
    }
}

/// A parsed case file.
#[derive(Debug, Clone)]
pub struct Case {
    /// The case name (reporting only: the runner never dispatches on it).
    pub name: String,
    /// The operation, e.g. `sdpa`.
    pub op: String,
    /// The op's parameters, an object (empty when the file has none).
    pub params: Value,
    /// Input tensors by name (sorted by name: serde_json keeps objects ordered by key).
    pub inputs: Vec<(String, Tensor)>,
    /// Expected output tensors by name (sorted by name); never empty.
    pub expected: Vec<(String, Tensor)>,
    /// The types to run and the rel-L2 bound of each, as written in the file (types this
    /// runner does not know are kept by name so they can be reported).
    pub tolerance: Vec<(String, f64)>,
}

impl Case {
    /// Parses a case from its JSON text; every malformation is an `Err`.
    pub fn from_json(text: &str) -> Result<Case, String> {
        let root: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
        let obj = root.as_object().ok_or("case is not a JSON object")?;
        match obj.get("format").and_then(Value::as_str) {
            Some(FORMAT_TAG) => {}
            Some(other) => return Err(format!("unknown format {other:?}")),
            None => return Err("missing `format`".into()),
        }
        let name = obj
            .get("name")
            .and_then(Value::as_str)
            .ok_or("missing string `name`")?
            .to_string();
        let op = obj
            .get("op")
            .and_then(Value::as_str)
            .ok_or("missing string `op`")?
            .to_string();
        let params = match obj.get("params") {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(p @ Value::Object(_)) => p.clone(),
            Some(_) => return Err("`params` is not an object".into()),
        };
        let inputs = tensors(obj.get("inputs"), "inputs")?;
        let expected = tensors(obj.get("expected"), "expected")?;
        if expected.is_empty() {
            return Err("`expected` holds no tensor".into());
        }
        let tolerance = obj
            .get("tolerance")
            .and_then(Value::as_object)
            .ok_or("missing object `tolerance`")?
            .iter()
            .map(|(ty, tol)| match tol.as_f64() {
                Some(t) if t.is_finite() && t >= 0.0 => Ok((ty.clone(), t)),
                _ => Err(format!("tolerance for {ty} is not a non-negative number")),
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Case {
            name,
            op,
            params,
            inputs,
            expected,
            tolerance,
        })
    }

    /// The input tensor `name`.
    pub fn input(&self, name: &str) -> Result<&Tensor, String> {
        self.inputs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t)
            .ok_or_else(|| format!("missing input `{name}`"))
    }

    /// The f32 values of input `name`.
    pub fn input_f32(&self, name: &str) -> Result<&[f32], String> {
        self.input(name)?
            .f32s()
            .map_err(|e| format!("input `{name}`: {e}"))
    }

    /// The input tensor `name` if the case has it (optional inputs such as `z`).
    pub fn optional_input(&self, name: &str) -> Option<&Tensor> {
        self.inputs.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// The expected tensor `name` (adapters read it only for its shape).
    pub fn expected_tensor(&self, name: &str) -> Result<&Tensor, String> {
        self.expected
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t)
            .ok_or_else(|| format!("missing expected tensor `{name}`"))
    }
}

/// The named tensors of `inputs` or `expected` (absent means none).
fn tensors(value: Option<&Value>, what: &str) -> Result<Vec<(String, Tensor)>, String> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(name, t)| {
                Tensor::from_json(t)
                    .map(|t| (name.clone(), t))
                    .map_err(|e| format!("{what}.{name}: {e}"))
            })
            .collect(),
        Some(_) => Err(format!("`{what}` is not an object")),
    }
}

/// How one output compares with its reference.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// The expected tensor's name.
    pub name: String,
    /// `||y - y_ref|| / max(||y_ref||, 1e-12)` in f64 (NaN when it cannot be measured).
    pub rel_l2: f64,
    /// Output values that are NaN or infinite.
    pub non_finite: usize,
    /// Why the output could not be compared at all (missing, wrong length).
    pub problem: Option<String>,
}

impl Comparison {
    /// Whether the output is within `tol`: comparable, all finite, and `rel_l2 <= tol`.
    pub fn passed(&self, tol: f64) -> bool {
        // NaN fails the `<=` by itself; the explicit checks make the reason visible.
        self.problem.is_none() && self.non_finite == 0 && self.rel_l2 <= tol
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(problem) = &self.problem {
            return write!(f, "{}: {problem}", self.name);
        }
        write!(f, "{} rel_l2={:.3e}", self.name, self.rel_l2)?;
        if self.non_finite > 0 {
            write!(f, " NON-FINITE={}", self.non_finite)?;
        }
        Ok(())
    }
}

/// Compares `got` (the adapter's output named like `expected`, if any) with `expected`.
pub fn compare(name: &str, expected: &Tensor, got: Option<&[f32]>) -> Comparison {
    let mut result = Comparison {
        name: name.to_string(),
        rel_l2: f64::NAN,
        non_finite: 0,
        problem: None,
    };
    let Some(got) = got else {
        result.problem = Some("the op produced no such output".into());
        return result;
    };
    if got.len() != expected.len() {
        result.problem = Some(format!(
            "output has {} values, expected {} (shape {:?})",
            got.len(),
            expected.len(),
            expected.shape
        ));
        return result;
    }
    result.non_finite = got.iter().filter(|x| !x.is_finite()).count();
    let reference = expected.values_f64();
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (&y, &r) in got.iter().zip(&reference) {
        let e = f64::from(y) - r;
        diff += e * e;
        norm += r * r;
    }
    result.rel_l2 = diff.sqrt() / norm.sqrt().max(1e-12);
    result
}
