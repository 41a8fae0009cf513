//! # microattn-capi
//!
//! A C ABI for [`microattn`]: `extern "C"` functions over raw pointers and lengths, for C
//! firmware (Zephyr, STM32Cube, bare CMSIS projects). `cbindgen` turns this crate into
//! `include/microattn.h`; the crate builds as `libmicroattn_capi.a` for the host and every
//! Cortex-M target.
//!
//! Conventions, the same for every function:
//!
//! - Every function returns a [`microattn_status_t`](status::microattn_status_t): `MICROATTN_OK` (0) or
//!   one negative code per way a call can fail, so C never sees a panic or an abort.
//! - Every buffer comes as a pointer and an element count. A null pointer with a nonzero
//!   count is `MICROATTN_ERR_NULL_POINTER`; a count of zero accepts any pointer. Misaligned
//!   pointers are `MICROATTN_ERR_INVALID_ARGUMENT`, and an output buffer that overlaps any
//!   other buffer of the call is `MICROATTN_ERR_BUFFER_OVERLAP` (Rust forbids that aliasing).
//! - Scratch is caller-provided; each kernel that needs it has a `*_scratch_len` query.
//! - Enumerations cross the boundary as `uint32_t` fields with `#define`d values: a C enum's
//!   size differs between compilers and flags (`-fshort-enums` is the default for
//!   `arm-none-eabi`), and an out-of-range value must be an error code, not undefined
//!   behaviour.
#![no_std]
#![deny(missing_docs)]
// The exported names follow C conventions (`microattn_*`), not Rust ones.
#![allow(non_camel_case_types)]

// The host staticlib links std for its panic runtime (with `panic = "abort"`, a panic would
// abort; no panic path is reachable from the exported functions).
#[cfg(not(target_os = "none"))]
extern crate std;

// The header lists items in this order (cbindgen follows the module declarations), so the
// modules are kept apart from each other to stop rustfmt from sorting them.
mod buffers;

pub mod status;

pub mod params;

pub mod sdpa;

pub mod int8;

pub mod mha;

pub mod linear;

pub mod quant;

pub use status::*;

/// Bare-metal staticlibs need a panic handler. None of the exported functions can panic
/// (every index is checked); should one ever do so, the core stops here instead of running on
/// with corrupted state, and a debugger shows where.
#[cfg(all(target_os = "none", feature = "panic-handler", not(test)))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {
        core::hint::spin_loop();
    }
}
