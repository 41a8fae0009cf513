/* What startup.c gives the example: output and exit over Arm semihosting (QEMU's
   -semihosting-config, or a debugger on a real board). */
#ifndef MICROATTN_EXAMPLE_BOARD_H
#define MICROATTN_EXAMPLE_BOARD_H

/* Writes a NUL-terminated string to the host's stdout. */
void board_puts(const char *s);

/* Ends the program: QEMU exits with status 0 when `code` is 0, 1 otherwise. */
void board_exit(int code) __attribute__((noreturn));

#endif
