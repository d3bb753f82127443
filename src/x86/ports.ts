// The I/O ports through which a guest program talks to the host. The same numbers are
// defined for guest C code in native/guest/include/elisa/ports.h; test/x86/ports.test.ts
// parses that header and checks that both agree, name for name.

/** Guest→host I/O ports, keyed by the name used in ports.h (ELISA_PORT_RESULT_LO → resultLo). */
export const GuestPort = {
  /** Console bytes (outb or rep outsb), appended to the run's console text. */
  console: 0x00e9,
  /**
   * 32-bit write of the guest-virtual address (< 4 GiB) of { u64 addr; u64 len }: the
   * host appends those bytes to the console (one exit per buffer instead of per byte).
   */
  consoleBuf: 0x00ea,
  /** 32-bit write: ends the run with that exit code. */
  exit: 0x0500,
  /** Low 32 bits of the 64-bit result (written first). */
  resultLo: 0x0504,
  /** High 32 bits of the 64-bit result; this write commits the value. */
  resultHi: 0x0508,
  /** Bytes of a failed guest assertion's message ("file:line: ..."). */
  assertMsg: 0x050c,
  /** 32-bit write of the failed assertion's line: ends the run with a GuestAssertionError. */
  assertFail: 0x0510,
  /** One byte (the vector), written by the host-generated exception stubs after the report. */
  exception: 0x0520,
} as const;

/** Name of one guest port (a key of GuestPort). */
export type GuestPortName = keyof typeof GuestPort;

/** The name of the port with this number, or undefined for a port the runtime does not use. */
export function guestPortName(port: number): GuestPortName | undefined {
  for (const [name, value] of Object.entries(GuestPort)) {
    if (value === port) return name as GuestPortName;
  }
  return undefined;
}
