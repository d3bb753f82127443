// How a guest run can fail. Every error carries the console text printed so far, so a
// failing test shows what the guest said before it went wrong.
import { describePageFaultError, type ExceptionReport, type GprName } from './exceptions';

const hex = (v: number | bigint): string => `0x${v.toString(16)}`;

/** Base class of every guest-run failure. */
export class GuestError extends Error {
  override name = 'GuestError';
  /** Console output up to the failure. */
  readonly console: string;

  /** Records the console text next to the message. */
  constructor(message: string, console: string) {
    super(message);
    this.console = console;
  }
}

/** The guest raised a CPU exception (vectors 0–31) and the host's stubs reported it. */
export class GuestFault extends GuestError {
  override name = 'GuestFault';
  readonly vector: number;
  /** "#PF" etc. */
  readonly mnemonic: string;
  /** The CPU-pushed error code, undefined for vectors without one. */
  readonly errorCode: number | undefined;
  readonly rip: bigint;
  /** The faulting linear address for a #PF (CR2 at the time of any exception). */
  readonly cr2: bigint;
  /** The symbol containing RIP, when the program has a symbol table. */
  readonly symbol: string | undefined;
  /** The full report (registers, RFLAGS, CS, SS, CR3). */
  readonly report: ExceptionReport;

  /** Builds the message from the report. */
  constructor(report: ExceptionReport, console: string, symbol?: string) {
    let what = `${report.mnemonic} (${report.name}, vector ${report.vector})`;
    if (report.errorCode !== undefined) what += `, error code ${hex(report.errorCode)}`;
    if (report.vector === 14 && report.errorCode !== undefined) {
      what += ` [${describePageFaultError(report.errorCode)}] at address ${hex(report.cr2)}`;
    }
    super(`guest ${what} at RIP ${hex(report.rip)}${symbol ? ` (${symbol})` : ''}`, console);
    this.vector = report.vector;
    this.mnemonic = report.mnemonic;
    this.errorCode = report.errorCode;
    this.rip = report.rip;
    this.cr2 = report.cr2;
    this.symbol = symbol;
    this.report = report;
  }
}

/** Registers read from the vCPU when a run ended without a report of its own. */
export type GuestRegisters = Record<GprName | 'rip' | 'rflags', bigint>;

/** KVM_EXIT_SHUTDOWN: the guest triple-faulted (an exception could not be delivered). */
export class GuestShutdown extends GuestError {
  override name = 'GuestShutdown';
  readonly registers: GuestRegisters;

  /** `registers` are the vCPU's registers after the shutdown. */
  constructor(registers: GuestRegisters, console: string) {
    super(`guest shut down (triple fault): RIP ${hex(registers.rip)}, RSP ${hex(registers.rsp)}, ` +
      `RFLAGS ${hex(registers.rflags)}`, console);
    this.registers = registers;
  }
}

/** The run exceeded its time limit and was interrupted. */
export class GuestTimeout extends GuestError {
  override name = 'GuestTimeout';
  readonly timeoutMs: number;
  /** Where the guest was when it was stopped, if the registers could be read. */
  readonly registers: GuestRegisters | undefined;

  /** `registers` are the vCPU's registers after the interruption. */
  constructor(timeoutMs: number, registers: GuestRegisters | undefined, console: string) {
    super(`guest did not finish within ${timeoutMs} ms` + (registers ? ` (stopped at RIP ${hex(registers.rip)})` : ''), console);
    this.timeoutMs = timeoutMs;
    this.registers = registers;
  }
}

/** A GUEST_ASSERT in the guest failed. */
export class GuestAssertionError extends GuestError {
  override name = 'GuestAssertionError';
  /** Source file of the assertion, as the guest's __FILE__ spelled it. */
  readonly file: string;
  readonly line: number;
  /** The guest's full message ("file:line: assertion `cond` failed: ..."). */
  readonly guestMessage: string;

  /** `message` is what the guest sent; `line` what it wrote to the ASSERT_FAIL port. */
  constructor(message: string, line: number, console: string) {
    const m = /^(.*?):(\d+): /.exec(message);
    super(`guest assertion failed: ${message}`, console);
    this.file = m ? m[1]! : '';
    this.line = line;
    this.guestMessage = message;
  }
}

/** The guest stopped in a way the runtime does not expect (unknown port, MMIO, HLT, ...). */
export class GuestUnexpectedExit extends GuestError {
  override name = 'GuestUnexpectedExit';
  /** The KVM exit reason, e.g. "mmio". */
  readonly reason: string;

  /** `detail` says what the guest did. */
  constructor(reason: string, detail: string, console: string) {
    super(`guest stopped unexpectedly (${reason}): ${detail}`, console);
    this.reason = reason;
  }
}
