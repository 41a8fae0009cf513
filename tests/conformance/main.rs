//! Conformance runner (`cargo test --release --test conformance`, `harness = false`).
//!
//! Runs every case of `tests/conformance/cases/` (or exactly `$MICROATTN_CONFORMANCE_DIR/*.json`)
//! in every element type its `tolerance` names and `$MICROATTN_CONFORMANCE_TYPES` allows,
//! prints one line per case and type with the measured rel-L2 of each output, and closes with
//! `conformance: N passed, M failed`. The exit code is non-zero when anything failed.
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

/// The types `$MICROATTN_CONFORMANCE_TYPES` allows (all when unset or blank).
fn allowed_types() -> Result<Vec<ElemType>, String> {
    let Ok(list) = std::env::var("MICROATTN_CONFORMANCE_TYPES") else {
        return Ok(ElemType::ALL.to_vec());
    };
    if list.trim().is_empty() {
        return Ok(ElemType::ALL.to_vec());
    }
    let mut types = Vec::new();
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let ty = ElemType::parse(&name.to_ascii_lowercase())
            .ok_or_else(|| format!("unknown type {name:?} (expected f32, f16, i8)"))?;
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
        let Some(&(_, tol)) = case.tolerance.iter().find(|(name, _)| name == ty.name()) else {
            continue;
        };
        run_case(&case, *ty, tol, tally);
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
