//! Raw pointers and counts from C to Rust slices, checked: the only `unsafe` reads of C
//! buffers go through here.

use crate::status::{
    Fail, MICROATTN_ERR_BUFFER_OVERLAP, MICROATTN_ERR_INVALID_ARGUMENT, MICROATTN_ERR_NULL_POINTER,
};
use core::mem::{align_of, size_of};

/// A buffer's address range in bytes, for the overlap check.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Region {
    start: usize,
    bytes: usize,
}

impl Region {
    /// The bytes of `len` elements at `ptr`. A null pointer is an empty region: the null check
    /// of [`input`]/[`output`] reports it.
    pub(crate) fn new<T>(ptr: *const T, len: usize) -> Self {
        Region {
            start: ptr as usize,
            bytes: if ptr.is_null() {
                0
            } else {
                len.saturating_mul(size_of::<T>())
            },
        }
    }

    fn overlaps(self, other: Region) -> bool {
        // Empty buffers overlap nothing.
        self.bytes != 0
            && other.bytes != 0
            && self.start < other.start.saturating_add(other.bytes)
            && other.start < self.start.saturating_add(self.bytes)
    }
}

/// Checks pointer, alignment and size of a C buffer of `len` elements.
fn checked<T>(ptr: *const T, len: usize) -> Result<(), Fail> {
    if ptr.is_null() {
        return Err(Fail(MICROATTN_ERR_NULL_POINTER));
    }
    let size = size_of::<T>().max(1);
    let addr = ptr as usize;
    // `from_raw_parts` requires an aligned pointer and at most `isize::MAX` bytes that do not
    // wrap around the address space.
    let fits = len <= isize::MAX as usize / size && addr.checked_add(len * size).is_some();
    if addr % align_of::<T>() != 0 || !fits {
        return Err(Fail(MICROATTN_ERR_INVALID_ARGUMENT));
    }
    Ok(())
}

/// The input buffer `ptr[0..len]`; any pointer (even null) when `len == 0`.
///
/// # Safety
/// When `len > 0` and `ptr` is not null, `ptr` must point to `len` initialized elements
/// that stay valid and unmodified for `'a`.
pub(crate) unsafe fn input<'a, T>(ptr: *const T, len: usize) -> Result<&'a [T], Fail> {
    if len == 0 {
        return Ok(&[]);
    }
    checked(ptr, len)?;
    // SAFETY: non-null, aligned, in range (checked); valid for reads by the caller's contract.
    Ok(unsafe { core::slice::from_raw_parts(ptr, len) })
}

/// An optional input: `None` when `ptr` is null and `len == 0` (C's "no bias"), otherwise as
/// [`input`] (a non-null pointer with `len == 0` is an empty slice).
///
/// # Safety
/// As [`input`].
pub(crate) unsafe fn optional<'a, T>(ptr: *const T, len: usize) -> Result<Option<&'a [T]>, Fail> {
    if ptr.is_null() && len == 0 {
        return Ok(None);
    }
    // SAFETY: forwarded contract.
    unsafe { input(ptr, len) }.map(Some)
}

/// The output buffer `ptr[0..len]`; any pointer (even null) when `len == 0`.
///
/// # Safety
/// When `len > 0` and `ptr` is not null, `ptr` must point to `len` elements writable for
/// `'a` and not accessed by anything else meanwhile except through this slice (the overlap
/// check in [`disjoint`], run first, enforces that among a call's buffers).
pub(crate) unsafe fn output<'a, T>(ptr: *mut T, len: usize) -> Result<&'a mut [T], Fail> {
    if len == 0 {
        return Ok(&mut []);
    }
    checked(ptr.cast_const(), len)?;
    // SAFETY: non-null, aligned, in range (checked); valid for writes by the caller's contract.
    Ok(unsafe { core::slice::from_raw_parts_mut(ptr, len) })
}

/// `MICROATTN_ERR_BUFFER_OVERLAP` when an output region overlaps another output or any
/// input. Inputs may overlap each other (self-attention passes one buffer as q, k and v).
/// Called on the raw regions before any slice exists: a `&mut` slice must never alias
/// another slice, even briefly.
pub(crate) fn disjoint(outputs: &[Region], inputs: &[Region]) -> Result<(), Fail> {
    for (i, &o) in outputs.iter().enumerate() {
        let others = outputs.iter().skip(i + 1).chain(inputs);
        if others.copied().any(|r| o.overlaps(r)) {
            return Err(Fail(MICROATTN_ERR_BUFFER_OVERLAP));
        }
    }
    Ok(())
}
