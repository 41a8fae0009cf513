//! Conformance runner (`cargo test --release --test conformance`, `harness = false`).
//!
//! Runs every case of `tests/conformance/cases/` (or exactly `$MICROATTN_CONFORMANCE_DIR/*.json`)
//! in every element type its `tolerance` names and `$MICROATTN_CONFORMANCE_TYPES` allows,
//! prints one line per case and type with the measured rel-L2 of each output, and closes with
//! `conformance: N passed, M failed`. The exit code is non-zero when anything failed.
//!
//! Element types: `FORMAT.md`'s `f32`, `f16` and `i8` by default. `bf16` (inputs, weights and
//! outputs stored as `half::bf16`, through the same generic `*_typed` kernels as f16) is a
//! project extension that runs only when `MICROATTN_CONFORMANCE_TYPES` names it, so the
//! default run on `FORMAT.md` cases is unchanged. A case is run in bf16 when it has an `f16`
//! tolerance, and the bound is 8 times that tolerance: bf16 keeps 8 significant bits to f16's
//! 11, so its rounding of every stored value is 2^3 = 8 times coarser (a `bf16` key in a case
//! file is not read: `FORMAT.md` defines none). See `tests/conformance/README.md`.
//!
//! Before the cases it checks itself: a perturbed reference, a NaN output and malformed files
//! must all be reported as failures, so a green run cannot come from a comparison that never
//! fails.

mod case;
mod ops;
mod params;

use case::{compare, Case, Comparison, ElemType};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// How much looser the bf16 bound is than the case's f16 bound: bf16 has 3 fewer significand
/// bits than f16 (7 + 1 against 10 + 1), so its unit roundoff is 2^3 times larger.
const BF16_TOLERANCE_FACTOR: f64 = 8.0;

/// Passed and failed (case, type) runs.
#[derive(Default)]
struct Tally {
    passed: usize,
    failed: usize,
}

impl Tally {
    fn fail(&mut self, what: &str, reason: &str) {
        println!("FAIL {what}: {reason}");
        self.failed += 1;
    }
}

fn main() -> ExitCode {
    let mut tally = Tally::default();

    if let Err(e) = self_check() {
        tally.fail("self-check", &e);
    } else {
        println!("self-check: comparison rejects perturbed, non-finite and malformed data");
    }

    let types = match allowed_types() {
        Ok(types) => types,
        Err(e) => {
            tally.fail("MICROATTN_CONFORMANCE_TYPES", &e);
            Vec::new()
        }
    };

    match case_files() {
        Ok(files) if files.is_empty() => tally.fail("cases", "no *.json case files found"),
        Ok(files) => {
            for file in &files {
                run_file(file, &types, &mut tally);
            }
        }
        Err(e) => tally.fail("cases", &e),
    }

    println!(
        "conformance: {} passed, {} failed",
        tally.passed, tally.failed
    );
    if tally.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The types `$MICROATTN_CONFORMANCE_TYPES` allows (`FORMAT.md`'s f32, f16, i8 when unset or
/// blank; bf16 only when named).
fn allowed_types() -> Result<Vec<ElemType>, String> {
    let Ok(list) = std::env::var("MICROATTN_CONFORMANCE_TYPES") else {
        return Ok(ElemType::DEFAULT.to_vec());
    };
    if list.trim().is_empty() {
        return Ok(ElemType::DEFAULT.to_vec());
    }
    let mut types = Vec::new();
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let ty = ElemType::parse(&name.to_ascii_lowercase())
            .ok_or_else(|| format!("unknown type {name:?} (expected f32, f16, bf16, i8)"))?;
        if !types.contains(&ty) {
            types.push(ty);
        }
    }
    Ok(types)
}

/// The case files to run, sorted: `$MICROATTN_CONFORMANCE_DIR/*.json` when set, else the
/// project's own cases.
fn case_files() -> Result<Vec<PathBuf>, String> {
    let dir = match std::env::var_os("MICROATTN_CONFORMANCE_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/cases"),
    };
    let entries =
        std::fs::read_dir(&dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
            .path();
        if path.extension().is_some_and(|ext| ext == "json") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Loads one file and runs it in every type it names that is allowed.
fn run_file(path: &Path, allowed: &[ElemType], tally: &mut Tally) {
    let label = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into(),
    );
    let case = match std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read: {e}"))
        .and_then(|text| Case::from_json(&text))
    {
        Ok(case) => case,
        Err(e) => return tally.fail(&format!("{label} (malformed case)"), &e),
    };
    for ty in allowed {
        let Some(tol) = tolerance(&case, *ty) else {
            continue;
        };
        run_case(&case, *ty, tol, tally);
    }
}

/// The rel-L2 bound of `case` in `ty`, or `None` when the case is not run in `ty`: the file's
/// own entry for the `FORMAT.md` types, 8 times the `f16` entry for bf16.
fn tolerance(case: &Case, ty: ElemType) -> Option<f64> {
    let named = |name: &str| {
        case.tolerance
            .iter()
            .find(|(n, _)| n == name)
            .map(|&(_, tol)| tol)
    };
    match ty {
        ElemType::Bf16 => named(ElemType::F16.name()).map(|tol| tol * BF16_TOLERANCE_FACTOR),
        ElemType::F32 | ElemType::F16 | ElemType::I8 => named(ty.name()),
    }
}

/// Runs `case` in `ty` and prints its line.
fn run_case(case: &Case, ty: ElemType, tol: f64, tally: &mut Tally) {
    let what = format!("{ty} {}", case.name);
    // A kernel or adapter panic is that case's failure, not the end of the run.
    let outputs = match catch_unwind(AssertUnwindSafe(|| ops::run(case, ty))) {
        Ok(Ok(outputs)) => outputs,
        Ok(Err(reason)) => return tally.fail(&what, &reason),
        Err(_) => return tally.fail(&what, "panicked (see stderr)"),
    };
    let comparisons = compare_outputs(case, &outputs);
    let passed = comparisons.iter().all(|c| c.passed(tol));
    let measured: Vec<String> = comparisons.iter().map(ToString::to_string).collect();
    let mut line = format!("{}  (tol {tol:.1e}", measured.join(", "));
    if ty == ElemType::Bf16 {
        line += &format!(" = {BF16_TOLERANCE_FACTOR} x f16 tol");
    }
    // The margin: the worst output's error as a share of the tolerance.
    if comparisons.iter().all(|c| c.rel_l2.is_finite()) {
        let worst = comparisons.iter().map(|c| c.rel_l2).fold(0.0, f64::max);
        line += &format!(", worst at {:.1}% of tol", 100.0 * worst / tol);
    }
    line.push(')');
    if passed {
        println!("PASS {what}: {line}");
        tally.passed += 1;
    } else {
        tally.fail(&what, &line);
    }
}

/// Compares every expected tensor of `case` with the output of the same name.
fn compare_outputs(case: &Case, outputs: &ops::Outputs) -> Vec<Comparison> {
    case.expected
        .iter()
        .map(|(name, expected)| {
            let got = outputs
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_slice());
            compare(name, expected, got)
        })
        .collect()
}

/// Proves the comparison can fail: a reference compared with itself passes, and the same
/// reference perturbed beyond the tolerance, with a NaN or an infinity, or with a wrong length
/// fails; malformed files are errors; an `sdpa` case whose answer is known exactly (a zero
/// query attends uniformly, so the output is the mean of `v`) passes and fails once its
/// expected tensor is perturbed in memory.
fn self_check() -> Result<(), String> {
    let text = r#"{
        "format": "microattn-conformance/1", "name": "self_check", "op": "sdpa",
        "params": {},
        "inputs": {
            "q": {"shape": [2, 2], "data": [0, 0, 0, 0]},
            "k": {"shape": [3, 2], "data": [1, -2, 0.5, 3, -1, 0.25]},
            "v": {"shape": [3, 2], "data": [1, 10, 2, 20, 6, 60]}
        },
        "expected": {"out": {"shape": [2, 2], "data": [3, 30, 3, 30]}},
        "tolerance": {"f32": 1e-5}
    }"#;
    let mut case = Case::from_json(text).map_err(|e| format!("valid case rejected: {e}"))?;
    let tol = 1e-5;

    // bf16 is opt-in and derives its bound from f16: a case without `f16` is not run in it.
    if ElemType::DEFAULT.contains(&ElemType::Bf16) {
        return Err("bf16 is in the default type list".into());
    }
    if tolerance(&case, ElemType::F32) != Some(tol) || tolerance(&case, ElemType::Bf16).is_some() {
        return Err("tolerance lookup: f32 not read or bf16 run without an f16 bound".into());
    }
    let with_f16 = Case {
        tolerance: vec![("f16".into(), 2e-3), ("bf16".into(), 1.0)],
        ..case.clone()
    };
    if tolerance(&with_f16, ElemType::Bf16) != Some(2e-3 * BF16_TOLERANCE_FACTOR) {
        return Err("bf16 bound is not 8 x the f16 bound".into());
    }
    let reference = case.expected[0].1.f32s()?.to_vec();
    let expect = |ok: bool, what: &str, got: &[f32]| -> Result<(), String> {
        let c = compare("out", &case.expected[0].1, Some(got));
        if c.passed(tol) == ok {
            Ok(())
        } else {
            Err(format!("{what}: comparison said passed={} ({c})", !ok))
        }
    };
    expect(true, "identical output", &reference)?;
    let mut near = reference.clone();
    near[0] *= 1.0 + 1e-7;
    expect(true, "output within tolerance", &near)?;
    let mut far = reference.clone();
    far[3] += 0.01; // rel_l2 = 0.01 / sqrt(1818) ≈ 2.3e-4 > 1e-5
    expect(false, "perturbed output", &far)?;
    for bad in [f32::NAN, f32::INFINITY] {
        let mut broken = reference.clone();
        broken[1] = bad;
        expect(false, "non-finite output", &broken)?;
    }
    expect(false, "short output", &reference[..3])?;
    if compare("out", &case.expected[0].1, None).passed(tol) {
        return Err("missing output passed".into());
    }

    // End to end through the library: the exact answer passes, a perturbed reference fails.
    let run = |case: &Case| -> Result<bool, String> {
        let outputs = ops::run(case, ElemType::F32)?;
        Ok(compare_outputs(case, &outputs)
            .iter()
            .all(|c| c.passed(tol)))
    };
    if !run(&case)? {
        return Err("sdpa with a zero query does not give the mean of v".into());
    }
    if let case::Data::F32(data) = &mut case.expected[0].1.data {
        data[2] += 0.05;
    }
    if run(&case)? {
        return Err("a perturbed expected tensor still passed".into());
    }

    let malformed = [
        "",
        "{",
        "[]",
        r#"{"format": "other/1", "name": "x", "op": "sdpa", "expected": {}, "tolerance": {}}"#,
        r#"{"format": "microattn-conformance/1", "name": "x", "op": "sdpa",
            "expected": {"out": {"shape": [2], "data": [1]}}, "tolerance": {"f32": 1e-5}}"#,
        r#"{"format": "microattn-conformance/1", "name": "x", "op": "sdpa",
            "expected": {"out": {"shape": [1], "data": ["a"]}}, "tolerance": {"f32": 1e-5}}"#,
        r#"{"format": "microattn-conformance/1", "name": "x", "op": "sdpa",
            "expected": {"out": {"shape": [-1], "data": []}}, "tolerance": {"f32": 1e-5}}"#,
        r#"{"format": "microattn-conformance/1", "name": "x", "op": "sdpa",
            "expected": {}, "tolerance": {"f32": 1e-5}}"#,
        r#"{"format": "microattn-conformance/1", "name": "x", "op": "sdpa",
            "expected": {"out": {"shape": [1], "data": [1]}}, "tolerance": {"f32": "x"}}"#,
    ];
    for text in malformed {
        if Case::from_json(text).is_ok() {
            return Err(format!("malformed case accepted: {text}"));
        }
    }
    Ok(())
}
