//! Conformance firmware: checks the int8 primitives against the scalar reference
//! ([`arch_check`]), runs every embedded case (see `build.rs`) and exits 0; the host script
//! judges the printed errors against the tolerances and the int8 hashes against its own.
#![no_std]
#![no_main]

use core::ptr::addr_of_mut;
use cortex_m_rt::entry;
use microattn_firmware::arch_check;
use microattn_firmware::conformance::{run_all, Buffers};
use microattn_firmware::{command_line, exit_success, maybe_self_test};

/// Working buffers in .bss, sized at build time for this machine's cases.
static mut BUFFERS: Buffers = Buffers::new();

#[entry]
fn main() -> ! {
    let mut cmdline = [0u8; 128];
    maybe_self_test(command_line(&mut cmdline));
    // SAFETY: the only reference to BUFFERS, taken once; no interrupts use it.
    let buffers = unsafe { &mut *addr_of_mut!(BUFFERS) };
    arch_check::run();
    run_all(buffers);
    exit_success()
}
