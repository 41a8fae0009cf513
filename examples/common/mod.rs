//! Shared by `int8_hashes` and `int8_layer_hashes`: loading the conformance cases and
//! printing the FNV-1a hash of each int8 output, in the form `scripts/qemu-test` compares
//! with the firmware's. A `mod.rs` in a folder, so that cargo does not build it as an
//! example of its own.

use crate::case::Case;
use std::path::PathBuf;
use std::process::ExitCode;

/// Runs `int8_output` on every case of the conformance directory given as first argument
/// (default: the project's `tests/conformance/cases`), in file name order, and prints
/// `hash CASE 0x1234abcd` for each output. `None` means the case is not for this example.
/// Errors (unreadable directory or file, bad case, failing case) go to stderr prefixed with
/// `prog`, and make the exit code a failure; the other cases still run.
pub fn hash_cases(
    prog: &str,
    mut int8_output: impl FnMut(&Case) -> Option<Result<Vec<i8>, String>>,
) -> ExitCode {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/cases")
        });
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect(),
        Err(e) => {
            eprintln!("{prog}: cannot read {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
    };
    files.sort();
    let mut failed = false;
    for path in files {
        let case = match std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|t| Case::from_json(&t))
        {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{prog}: {}: {e}", path.display());
                failed = true;
                continue;
            }
        };
        match int8_output(&case) {
            None => {}
            Some(Ok(out)) => println!("hash {} {:#010x}", case.name, fnv1a(&out)),
            Some(Err(e)) => {
                eprintln!("{prog}: {}: {e}", case.name);
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Whether the case has an `i8` tolerance, i.e. is meant to run on the int8 path.
pub fn has_i8(case: &Case) -> bool {
    case.tolerance.iter().any(|(t, _)| t == "i8")
}

/// FNV-1a (32-bit) of int8 bytes, as the firmware computes it.
fn fnv1a(bytes: &[i8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ b as u8 as u32).wrapping_mul(0x0100_0193)
    })
}
