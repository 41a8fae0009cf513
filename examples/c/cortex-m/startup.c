/*
 * Minimal Cortex-M startup for the microattn C example: vector table, reset handler (copies
 * .data, zeroes .bss, enables the FPU, calls main) and semihosting output. No vendor HAL, no
 * CMSIS: the same file runs on QEMU's mps2-an386 (Cortex-M4F) and mps3-an547 (Cortex-M55).
 */
#include <stdint.h>

#include "board.h"

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;
int main(void);

/* Arm semihosting: operation in r0, argument in r1, BKPT 0xAB traps to the host. */
static uint32_t semihost(uint32_t op, const void *arg) {
    register uint32_t r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

enum { SYS_WRITE0 = 0x04, SYS_EXIT = 0x18 };
enum { ADP_STOPPED_APPLICATION_EXIT = 0x20026, ADP_STOPPED_RUNTIME_ERROR = 0x20023 };

void board_puts(const char *s) { semihost(SYS_WRITE0, s); }

void board_exit(int code) {
    /* On AArch32 the argument is the reason itself; QEMU exits 0 only for ApplicationExit. */
    semihost(SYS_EXIT, (const void *)(uintptr_t)(code == 0 ? ADP_STOPPED_APPLICATION_EXIT
                                                          : ADP_STOPPED_RUNTIME_ERROR));
    for (;;) {
    }
}

void Reset_Handler(void) {
    for (uint32_t *src = &_sidata, *dst = &_sdata; dst < &_edata;) *dst++ = *src++;
    for (uint32_t *dst = &_sbss; dst < &_ebss;) *dst++ = 0;
    /* CPACR: full access to CP10/CP11 (the FPU, and MVE on the M55) before any float code. */
    volatile uint32_t *cpacr = (volatile uint32_t *)0xE000ED88u;
    *cpacr |= 0xFu << 20;
    __asm__ volatile("dsb\n\tisb" ::: "memory");
    board_exit(main());
}

/* Any fault or unexpected interrupt ends the run with a message and a failing status. */
void Fault_Handler(void) {
    board_puts("HARDFAULT\n");
    board_exit(1);
}

typedef void (*vector_t)(void);

__attribute__((section(".vectors"), used)) static const vector_t vectors[16 + 32] = {
    [0] = (vector_t)(uintptr_t)&_estack,
    [1] = Reset_Handler,
    [2 ... 16 + 32 - 1] = Fault_Handler,
};
