//! # microattn
//!
//! `#![no_std]`, allocation-free attention kernels for Cortex-M microcontrollers and std hosts.
//!
//! Every kernel comes in two tiers: a slice tier with runtime shapes that returns
//! [`Error`] for any inconsistent input, and a fixed-size tier (`*_fixed`) whose shapes are
//! const generics on arrays, so a wrong shape does not compile. Neither allocates; scratch,
//! when a kernel needs any, is caller-provided and sized by a `const fn`.
//!
//! | feature | what it adds |
//! |---|---|
//! | `std` | host conveniences (runtime SIMD dispatch, calibration helpers) |
//! | `defmt` | `defmt::Format` on public types, for firmware logging |
//! | `rayon` | heads in parallel on a rayon pool (`par::sdpa_par`; implies `std`) |
//! | `nightly` | a portable `core::simd` backend, `arch` backend `portable` (nightly toolchain only) |
//!
//! ```
//! use microattn::attention::{sdpa_fixed, SdpaParams};
//! use microattn::mask::{Mask, MaskTerm};
//!
//! // Four tokens of width 8, causal self-attention, all on the stack.
//! let x = [[0.5f32; 8]; 4];
//! let mut out = [[0.0f32; 8]; 4];
//! let causal = [MaskTerm::Causal];
//! let params = SdpaParams { mask: Mask::new(&causal), ..Default::default() };
//! sdpa_fixed(&x, &x, &x, &mut out, &params)?;
//! assert_eq!(out[3], [0.5; 8]);
//! # Ok::<(), microattn::Error>(())
//! ```
#![no_std]
#![cfg_attr(feature = "nightly", feature(portable_simd))]
#![deny(missing_docs)]

#[cfg(feature = "std")]
extern crate std;

pub mod arch;
pub mod attention;
pub mod element;
mod error;
pub mod graph;
pub mod graph_int8;
pub mod kv_cache;
pub mod layers;
pub mod mask;
pub mod math;
pub mod mha;
pub mod models;
#[cfg(feature = "rayon")]
pub mod par;
pub mod position;
pub mod projection;
pub mod quant;
pub mod softmax;
pub mod ssm;

pub use element::Element;
pub use error::Error;
pub use half::{bf16, f16};

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
