// A guest VM for host mode: the x86 layer's GuestMachine (one vCPU in 64-bit long mode,
// identity-mapped RAM, CPUID, a guest program from native/guest loaded at its link
// address) driven by a synchronous run loop that serves the runtime's ports (console,
// exit, result, assertions, exception reports) and that a backend can take over
// (setExecutor): the emulated backend runs the gate and sub contexts in other VMs on the
// same thread and returns here only for exits of the guest's own (default) context.
import { readFileSync } from 'node:fs';
import { ExitReason, InternalErrorSuberror, IoDirection, SyncRegs, type Exit, type Kvm, type Vcpu } from '../../kvm';
import { parseElf, type ElfImage } from '../../x86/elf';
import { decodeReport, type ExceptionReport } from '../../x86/exceptions';
import {
  GuestAssertionError, GuestError, GuestFault, GuestShutdown, GuestTimeout, GuestUnexpectedExit, type GuestRegisters,
} from '../../x86/errors';
import { exceptionAreaGpa } from '../../x86/layout';
import { GuestMachine as X86Machine, MAX_CONSOLE_WRITE } from '../../x86/machine';
import { GuestPort } from '../../x86/ports';
import { guestProgramPath } from '../../x86/programs';

/** Options of GuestMachine.create. */
export interface GuestMachineOptions {
  /** Guest RAM in bytes, identity mapped from GPA 0 (default 4 MiB; the program must fit). */
  memoryBytes?: number;
  /** A Kvm handle to share (default: opened here and closed on dispose). */
  kvm?: Kvm;
  /** A name for messages (default: the program's name). */
  name?: string;
}

/** Options of GuestMachine.run. */
export interface GuestRunOptions {
  /** Bound on the whole run in milliseconds (default 10 000). */
  timeoutMs?: number;
  /** Extra OUT ports the caller serves (e.g. a benchmark's baseline port): port → handler of the bytes written. */
  ports?: ReadonlyMap<number, (data: Uint8Array) => void>;
}

/** What a finished run produced. */
export interface GuestRunResult {
  /** exit(code) / main's return value. */
  exitCode: number;
  /** The last value passed to result(), if any. */
  result: bigint | undefined;
  /** Everything the guest printed. */
  console: string;
  /** Wall-clock milliseconds of the run. */
  elapsedMs: number;
}

/**
 * Runs the guest's vCPU until an exit of its default context needs the host. Returns
 * the vCPU whose kvm_run holds that exit (the guest's own vCPU). May throw a
 * GuestError subclass for failures it detects itself (e.g. in a sub context).
 */
export type VcpuExecutor = (remainingMs: number) => Vcpu;

const hex = (v: bigint | number): string => `0x${v.toString(16)}`;

/** A guest VM running one program from native/guest. Dispose it to free the VM and memory. */
export class GuestMachine implements Disposable {
  /** The x86 layer's machine underneath (VM, vCPU, memory). */
  readonly x86: X86Machine;
  /** The loaded program. */
  readonly image: ElfImage;
  /** Name for messages. */
  readonly name: string;
  /** Guest-physical ranges the program's segments occupy: [start, end). */
  readonly loaded: readonly { start: number; end: number }[];
  #executor: VcpuExecutor | undefined;
  #invalidOpcode: ((report: ExceptionReport) => boolean) | undefined;
  #console = '';
  #disposed = false;
  #onDispose: (() => void)[] = [];

  private constructor(x86: X86Machine, image: ElfImage, name: string) {
    this.x86 = x86; this.image = image; this.name = name;
    this.loaded = image.segments.map((s) => ({ start: s.paddr, end: s.paddr + s.memsz }));
  }

  /** The KVM handle. */
  get kvm(): Kvm { return this.x86.kvm; }
  /** The guest's VM (its default context). */
  get vm() { return this.x86.vm; }
  /** Guest RAM, guest-physical [0, memory.size). */
  get memory() { return this.x86.memory; }
  /** The guest's (only) vCPU. */
  get vcpu(): Vcpu { return this.x86.vcpu; }

  /**
   * Creates a VM (x86 GuestMachine), loads `program` (a name in native/guest/out, a path,
   * or ELF bytes) and prepares vCPU 0 at its entry point in long mode with interrupts off.
   */
  static create(program: string | Uint8Array, options: GuestMachineOptions = {}): GuestMachine {
    const file = typeof program === 'string' ? readFileSync(program.includes('/') ? program : guestProgramPath(program)) : program;
    const name = options.name ?? (typeof program === 'string' ? program : 'guest program');
    const image = parseElf(file, name);
    const bytes = options.memoryBytes ?? 4 << 20;
    if (!Number.isSafeInteger(bytes) || bytes < 2 << 20 || bytes % (2 << 20) !== 0) {
      throw new RangeError(`guest memory must be a multiple of 2 MiB and at least 2 MiB, got ${bytes}`);
    }
    const x86 = X86Machine.create({ memory: bytes, ...(options.kvm ? { kvm: options.kvm } : {}) });
    try {
      x86.loadElf(file);
      x86.vcpu.sync.request(SyncRegs.REGS | SyncRegs.SREGS | SyncRegs.EVENTS);
      return new GuestMachine(x86, image, name);
    } catch (err) {
      x86.dispose();
      throw err;
    }
  }

  /** The address of a symbol of the program; throws naming it if it is missing. */
  symbol(name: string): bigint {
    return BigInt(this.image.symbols.address(name));
  }

  /** Console output so far. */
  get console(): string { return this.#console; }

  /** Hands the vCPU's execution to a backend (undefined: plain KVM_RUN). */
  setExecutor(executor: VcpuExecutor | undefined): void { this.#executor = executor; }

  /**
   * Lets a backend look at every #UD the guest's exception stubs report before it becomes
   * a GuestFault: on hosts where VMFUNC raises #UD, the backend carries the VMFUNC out
   * and returns true (the run continues).
   */
  setInvalidOpcodeHandler(handler: ((report: ExceptionReport) => boolean) | undefined): void { this.#invalidOpcode = handler; }

  /** Registers a clean-up to run (first) when the machine is disposed. */
  onDispose(fn: () => void): void { this.#onDispose.push(fn); }

  /** The vCPU's registers as an error report wants them. */
  registers(vcpu: Vcpu = this.vcpu): GuestRegisters {
    const r = vcpu.sync.valid & SyncRegs.REGS ? vcpu.sync.regs : vcpu.getRegs();
    return { rax: r.rax, rcx: r.rcx, rdx: r.rdx, rbx: r.rbx, rsp: r.rsp, rbp: r.rbp, rsi: r.rsi, rdi: r.rdi,
      r8: r.r8, r9: r.r9, r10: r.r10, r11: r.r11, r12: r.r12, r13: r.r13, r14: r.r14, r15: r.r15, rip: r.rip, rflags: r.rflags };
  }

  /**
   * Runs the program until it exits. Resolves with exit code, result and console;
   * throws a GuestError (GuestFault, GuestAssertionError, GuestTimeout, ...) otherwise.
   * Synchronous on the calling thread: every context vCPU of this guest vCPU runs on it.
   */
  run(options: GuestRunOptions = {}): GuestRunResult {
    const timeoutMs = options.timeoutMs ?? 10_000;
    const started = performance.now();
    const deadline = started + timeoutMs;
    let result: bigint | undefined;
    let resultLo = 0n;
    let assertMsg = '';
    const decoder = new TextDecoder('latin1');
    for (;;) {
      const remaining = deadline - performance.now();
      if (remaining <= 0) throw new GuestTimeout(timeoutMs, this.registers(), this.#console);
      let vcpu: Vcpu;
      if (this.#executor) vcpu = this.#executor(remaining);
      else { this.vcpu.runRaw(remaining); vcpu = this.vcpu; }
      const exit = vcpu.lastExit();
      switch (exit.kind) {
        case 'io': {
          if (exit.direction === IoDirection.OUT) {
            const value = exit.size === 4 ? BigInt(new DataView(exit.data.buffer, exit.data.byteOffset, 4).getUint32(0, true)) : BigInt(exit.data[0] ?? 0);
            switch (exit.port) {
              case GuestPort.console: this.#console += decoder.decode(exit.data); continue;
              case GuestPort.consoleBuf: this.#console += decoder.decode(this.#consoleBuffer(Number(value))); continue;
              case GuestPort.resultLo: resultLo = value; continue;
              case GuestPort.resultHi: result = (value << 32n) | resultLo; continue;
              case GuestPort.assertMsg: assertMsg += decoder.decode(exit.data); continue;
              case GuestPort.assertFail: throw new GuestAssertionError(assertMsg, Number(value), this.#console);
              case GuestPort.exit:
                return { exitCode: Number(BigInt.asIntN(32, value)), result, console: this.#console, elapsedMs: performance.now() - started };
              default: {
                const handler = options.ports?.get(exit.port);
                if (handler) { handler(exit.data); continue; }
                break;
              }
              case GuestPort.exception: {
                const report = decodeReport(new DataView(this.memory.buffer), exceptionAreaGpa(0));
                if (report.vector === 6 && this.#invalidOpcode?.(report)) continue;
                const sym = this.image.symbols.containing(Number(report.rip));
                throw new GuestFault(report, this.#console, sym?.name);
              }
            }
          }
          throw new GuestUnexpectedExit('io', `${exit.direction === IoDirection.OUT ? 'write to' : 'read from'} port ${hex(exit.port)} (size ${exit.size}) at RIP ${hex(this.registers(vcpu).rip)}`, this.#console);
        }
        case 'intr':
          if (exit.timedOut) throw new GuestTimeout(timeoutMs, this.registers(vcpu), this.#console);
          continue;
        case 'shutdown': throw new GuestShutdown(this.registers(vcpu), this.#console);
        case 'hlt': throw new GuestUnexpectedExit('hlt', `HLT at RIP ${hex(this.registers(vcpu).rip)}`, this.#console);
        default: throw new GuestUnexpectedExit(exit.kind, describeGuestExit(exit, this.registers(vcpu).rip), this.#console);
      }
    }
  }

  /** The bytes of a buffered console write: a {u64 address, u64 length} descriptor at `descriptor` (identity-mapped GVAs). */
  #consoleBuffer(descriptor: number): Uint8Array {
    const mem = this.memory.bytes();
    if (descriptor < 0x1000 || descriptor + 16 > mem.length) throw new GuestUnexpectedExit('io', `console descriptor at ${hex(descriptor)} is outside guest RAM`, this.#console);
    const d = new DataView(mem.buffer, mem.byteOffset + descriptor, 16);
    const at = d.getBigUint64(0, true), len = d.getBigUint64(8, true);
    if (len > BigInt(MAX_CONSOLE_WRITE) || at < 0x1000n || at + len > BigInt(mem.length)) {
      throw new GuestUnexpectedExit('io', `console buffer [${hex(at)}, +${len}) is not in guest RAM (or longer than ${MAX_CONSOLE_WRITE} bytes)`, this.#console);
    }
    // Safe: the range was checked against guest RAM just above.
    return mem.slice(Number(at), Number(at + len));
  }

  /** Disposes attachments, then the x86 machine (VM, memory, Kvm if it opened it). Idempotent. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    const hooks = this.#onDispose.splice(0).reverse();
    for (const fn of hooks) fn();
    this.x86.dispose();
  }

  [Symbol.dispose](): void { this.dispose(); }
}

/** One line about an exit, with the instruction bytes of an emulation failure. */
export function describeGuestExit(exit: Exit, rip: bigint): string {
  switch (exit.kind) {
    case 'mmio': return `${exit.isWrite ? 'write to' : 'read from'} unbacked guest-physical address ${hex(exit.address)} (${exit.length} bytes) at RIP ${hex(rip)}`;
    case 'internalError':
      return `KVM internal error (suberror ${InternalErrorSuberror[exit.suberror] ?? exit.suberror})` +
        (exit.instructionBytes ? `, instruction bytes ${Buffer.from(exit.instructionBytes).toString('hex')}` : '') + ` at RIP ${hex(rip)}`;
    default: return `exit ${ExitReason[exit.reason] ?? exit.reason} at RIP ${hex(rip)}`;
  }
}

export { GuestError };
