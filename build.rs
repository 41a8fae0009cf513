//! Compile-time backend cfgs.
//!
//! On stable Rust, `cfg(target_feature)` does not report the Arm DSP or MVE (Helium)
//! extensions (`rustc --print cfg --target thumbv7em-none-eabihf -C target-cpu=cortex-m4`
//! lists no `target_feature` at all), so this script derives them from the target triple and
//! the `-C target-cpu` / `-C target-feature` flags cargo passes in `CARGO_ENCODED_RUSTFLAGS`:
//!
//! | cfg | when |
//! |---|---|
//! | `arm_dsp` | `thumbv7em*` (Cortex-M4/M7: DSP is part of Armv7E-M); `thumbv8m.main*` with `target-cpu` cortex-m33, -m35p, -m55 or -m85, or `+dsp` |
//! | `arm_mve` | `thumbv8m.main*` with `target-cpu` cortex-m55 or -m85, or `+mve` |
//!
//! `-C target-feature=-dsp` / `-mve` turn them off. `microattn_avx512` is set for rustc 1.89
//! and later, where the AVX-512 intrinsics the x86 backend uses are stable.

use std::env;
use std::process::Command;

fn main() {
    println!("cargo:rustc-check-cfg=cfg(arm_dsp)");
    println!("cargo:rustc-check-cfg=cfg(arm_mve)");
    println!("cargo:rustc-check-cfg=cfg(microattn_avx512)");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");

    let target = env::var("TARGET").unwrap_or_default();
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let (cpu, features) = codegen_options(&flags);

    let v8m_main = target.starts_with("thumbv8m.main");
    let cpu_has_mve = matches!(cpu.as_str(), "cortex-m55" | "cortex-m85");
    let cpu_has_dsp = cpu_has_mve || matches!(cpu.as_str(), "cortex-m33" | "cortex-m35p");
    let mve = v8m_main && feature(&features, "mve", cpu_has_mve);
    let dsp = mve
        || (target.starts_with("thumbv7em") && feature(&features, "dsp", true))
        || (v8m_main && feature(&features, "dsp", cpu_has_dsp));
    if dsp {
        println!("cargo:rustc-cfg=arm_dsp");
    }
    if mve {
        println!("cargo:rustc-cfg=arm_mve");
    }

    if rustc_minor().is_some_and(|minor| minor >= 89) {
        println!("cargo:rustc-cfg=microattn_avx512");
    }
}

/// The `target-cpu` and the `target-feature` items of the encoded rustflags
/// (`-C target-cpu=x`, `-Ctarget-cpu=x` or `-C` `target-cpu=x`).
fn codegen_options(encoded: &str) -> (String, Vec<String>) {
    let mut cpu = String::new();
    let mut features = Vec::new();
    let mut args = encoded.split('\x1f').filter(|a| !a.is_empty());
    while let Some(arg) = args.next() {
        let option = match arg {
            "-C" | "--codegen" => args.next().unwrap_or(""),
            _ => arg
                .strip_prefix("-C")
                .or_else(|| arg.strip_prefix("--codegen="))
                .unwrap_or(""),
        };
        if let Some(value) = option.strip_prefix("target-cpu=") {
            cpu = value.to_string();
        } else if let Some(value) = option.strip_prefix("target-feature=") {
            features.extend(value.split(',').map(str::to_string));
        }
    }
    (cpu, features)
}

/// Whether `name` is on: the last `+name` / `-name` wins, else `default`.
fn feature(features: &[String], name: &str, default: bool) -> bool {
    let mut on = default;
    for f in features {
        if f.strip_prefix('+') == Some(name) {
            on = true;
        } else if f.strip_prefix('-') == Some(name) {
            on = false;
        }
    }
    on
}

/// The minor version of the compiler building this crate (`rustc 1.MINOR.x`).
fn rustc_minor() -> Option<u32> {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(rustc).arg("--version").output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    let version = text.split_whitespace().nth(1)?;
    version.split('.').nth(1)?.parse().ok()
}
