/*
 * I/O ports through which a guest program talks to the host (src/x86/ports.ts holds
 * the same numbers; test/x86/ports.test.ts parses this file and checks they agree).
 * Every port here is handled by the host's run loop; a write to any other port ends
 * the run with an "unexpected exit" error naming the port.
 */
#ifndef ELISA_PORTS_H
#define ELISA_PORTS_H

/* Console: each byte written (outb, or rep outsb) is appended to the console text. */
#define ELISA_PORT_CONSOLE      0x00e9
/* Console, buffered: a 32-bit write of the guest-virtual address (below 4 GiB) of a
 * struct elisa_console_buf { uint64_t addr; uint64_t len; }: the host appends those
 * len bytes at guest-virtual addr to the console. One exit for a whole buffer, where
 * `rep outsb` costs KVM one exit per byte. */
#define ELISA_PORT_CONSOLE_BUF  0x00ea
/* exit(code): a 32-bit write ends the run with that exit code. */
#define ELISA_PORT_EXIT         0x0500
/* result(u64): low 32 bits first, then the high 32 bits, which commit the value. */
#define ELISA_PORT_RESULT_LO    0x0504
#define ELISA_PORT_RESULT_HI    0x0508
/* GUEST_ASSERT: message bytes ("file:line: ..."), then a 32-bit write of the line
 * number to ASSERT_FAIL, which ends the run with a guest assertion error. */
#define ELISA_PORT_ASSERT_MSG   0x050c
#define ELISA_PORT_ASSERT_FAIL  0x0510
/* Written (one byte: the vector) by the host-generated exception stubs after they
 * stored the exception report; guest programs do not write it themselves. */
#define ELISA_PORT_EXCEPTION    0x0520

#endif
