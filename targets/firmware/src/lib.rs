//! Shared pieces of the QEMU firmware: semihosting output and exit, fault and panic
//! handlers that fail the run, the command line, and the on-target conformance runner.
//!
//! Output is `defmt` (`defmt::println!`): binary frames written to the host's stdout through
//! semihosting by `defmt-semihosting`, decoded on the host by `defmt-print -e ELF`. QEMU runs
//! with `-semihosting-config enable=on,target=native`, so the exit status of QEMU is the
//! firmware's: 0 after [`exit_success`], 1 after a failure, a panic or a fault.
#![no_std]
#![deny(missing_docs)]

pub mod arch_check;
pub mod bench;
pub mod conformance;

// The defmt global logger: frames go to semihosting stdout.
use defmt_semihosting as _;

use core::panic::PanicInfo;
use cortex_m_rt::{exception, ExceptionFrame};
use cortex_m_semihosting::{debug, nr};

/// Name of the machine this firmware was built for (its cargo feature).
pub const MACHINE: &str = env!("MICROATTN_MACHINE");

/// Ends the QEMU run with exit status 0.
pub fn exit_success() -> ! {
    debug::exit(debug::EXIT_SUCCESS);
    // Only reached without a semihosting host (real hardware): park the core.
    loop {
        cortex_m::asm::bkpt();
    }
}

/// Ends the QEMU run with a non-zero exit status.
pub fn exit_failure() -> ! {
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::bkpt();
    }
}

/// The semihosting command line (QEMU: the `arg=` items of `-semihosting-config`, space
/// separated) copied into `buf`; empty when there is none.
pub fn command_line(buf: &mut [u8]) -> &str {
    // SYS_GET_CMDLINE takes {buffer, length} and writes the used length back.
    let mut block = [buf.as_mut_ptr() as usize, buf.len()];
    // SAFETY: the block describes `buf`, which the host writes at most `buf.len()` bytes to.
    let status =
        unsafe { cortex_m_semihosting::syscall1(nr::GET_CMDLINE, block.as_mut_ptr() as usize) };
    if status != 0 {
        return "";
    }
    let len = block[1].min(buf.len());
    core::str::from_utf8(&buf[..len]).unwrap_or("")
}

/// Runs the self-test named on the command line, if any: `selftest-panic` panics and
/// `selftest-hardfault` executes an undefined instruction. Both must make QEMU exit non-zero;
/// `scripts/qemu-test` checks that they do.
pub fn maybe_self_test(cmdline: &str) {
    for word in cmdline.split(' ') {
        match word {
            "selftest-panic" => panic!("self-test panic"),
            "selftest-hardfault" => {
                // SAFETY: deliberately faults; the HardFault handler ends the run.
                unsafe { core::arch::asm!("udf #0") };
            }
            _ => {}
        }
    }
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    defmt::println!("PANIC on {=str}: {}", MACHINE, defmt::Display2Format(info));
    exit_failure()
}

#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    defmt::println!(
        "HARDFAULT on {=str}: pc={=u32:#010x} lr={=u32:#010x}",
        MACHINE,
        frame.pc(),
        frame.lr()
    );
    exit_failure()
}

#[exception]
unsafe fn DefaultHandler(irqn: i16) {
    defmt::println!("UNEXPECTED EXCEPTION on {=str}: {=i16}", MACHINE, irqn);
    exit_failure()
}
