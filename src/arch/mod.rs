//! Inner primitives that isolate the hardware.
//!
//! Kernels are written once against these functions. `scalar` is the reference every other
//! backend is tested against; per-target backends are selected here and nowhere else.

pub mod scalar;

pub use scalar::{axpy, dot, l1_distance, scale, sq_l2_distance};
