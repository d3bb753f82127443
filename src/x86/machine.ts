// The high-level API: a one-vCPU KVM machine in 64-bit long mode that loads a static
// ELF program and runs it to completion, collecting its console, exit code and result.
//
//   using m = GuestMachine.create({ memory: '64M' });
//   const r = await m.loadElf(guestProgramPath('hello')).run({ timeoutMs: 5000 });
//   r.console; r.exitCode; r.result
//
// Lower-level pieces (writeSystemStructures, buildIdentityMap, prepareLongModeVcpu)
// stay usable on their own for callers that build VMs differently.
import { existsSync, readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { describeExit, GuestMemory, IoDirection, Kvm, parseSize,
  type Exit, type Regs, type Size, type Vcpu, type Vm } from '../kvm/index';
import { ElfError, loadSegments, parseElf, type ElfSymbols } from './elf';
import { GuestAssertionError, GuestError, GuestFault, GuestShutdown, GuestTimeout, GuestUnexpectedExit } from './errors';
import { decodeReport } from './exceptions';
import { exceptionAreaGpa, GUEST_RESERVED_END, INITIAL_STACK_TOP } from './layout';
import { INITIAL_RFLAGS, longModeState, writeSystemStructures } from './longmode';
import { buildIdentityMap, LARGE_PAGE_SIZE } from './paging';
import { GuestPort, guestPortName } from './ports';
import { guestProgramPath } from './programs';

/** The most one buffered console write (GuestPort.consoleBuf) may carry. */
export const MAX_CONSOLE_WRITE = 1 << 20;

/** Default time limit of GuestMachine.run, in milliseconds. */
export const DEFAULT_RUN_TIMEOUT_MS = 10_000;

/** Options of GuestMachine.create. */
export interface GuestMachineOptions {
  /** Guest memory at guest-physical 0, e.g. '64M' (default). At least 2 MiB. */
  memory?: Size;
  /** An open /dev/kvm to use (it stays the caller's); by default the machine opens its own. */
  kvm?: Kvm;
  /**
   * 'identity' (default): the host builds identity tables for all of memory, page 0
   * not present. Or `{ cr3 }`: the caller writes its own tables into `bytes` (outside
   * [0, 1 MiB) or into the page-table area) and CR3 is set to this value.
   */
  pageTables?: 'identity' | { cr3: bigint | number };
}

/** Options of a run. */
export interface GuestRunOptions {
  /** Interrupt the guest after this long (default DEFAULT_RUN_TIMEOUT_MS). */
  timeoutMs?: number;
  /** Called with each piece of console text as it arrives. */
  onConsole?: (text: string) => void;
  /**
   * Run KVM_RUN on the calling thread (Vcpu.run) instead of the vCPU's own thread
   * (Vcpu.runAsync): less overhead per exit, but the event loop is blocked until the
   * guest ends (the timeout still applies). Default false.
   */
  blocking?: boolean;
}

/** How a run that ended with exit() went. */
export interface GuestRunResult {
  /** Everything the guest wrote to the console port. */
  console: string;
  /** The value passed to exit() (or returned from main), as a signed 32-bit integer. */
  exitCode: number;
  /** The last value passed to result(), or undefined if the guest never called it. */
  result: bigint | undefined;
  /** VM exits the run took (each a KVM_RUN return). */
  exits: number;
  /** Wall-clock time of the run. */
  elapsedMs: number;
}

/**
 * Puts `vcpu` into 64-bit long mode at CPL 0 using the structures writeSystemStructures
 * wrote: segment registers, GDTR/IDTR/TR for vCPU `index`, CR0/CR3/CR4/EFER, and the
 * CPUID KVM supports (KVM_GET_SUPPORTED_CPUID → KVM_SET_CPUID2).
 */
export function prepareLongModeVcpu(vcpu: Vcpu, options: { index: number; vcpus: number; cr3: bigint | number }): void {
  vcpu.setCpuid2(vcpu.vm.kvm.supportedCpuid());
  vcpu.setSregs({ ...vcpu.getSregs(), ...longModeState(options.index, options.vcpus, options.cr3) });
}

const hex = (v: number | bigint): string => `0x${v.toString(16)}`;

/** The identity map covers all of memory, rounded up to whole 2 MiB pages. */
function identityMapSize(memoryBytes: number): number {
  return Math.ceil(memoryBytes / LARGE_PAGE_SIZE) * LARGE_PAGE_SIZE;
}

/** A program loaded into a GuestMachine, ready to run. */
export class GuestProgram {
  /** @internal Use GuestMachine.loadElf. */
  constructor(
    private readonly machine: GuestMachine,
    /** Where the program came from (a path, or "ELF image" for bytes). */
    readonly source: string,
    /** The entry point (RIP at the start of the run). */
    readonly entry: number,
    /** The program's .symtab. */
    readonly symbols: ElfSymbols,
  ) {}

  /** Runs the program; see GuestMachine.run. */
  run(options?: GuestRunOptions): Promise<GuestRunResult> {
    return this.machine.run(options);
  }
}

/** A KVM VM with one vCPU in long mode, its memory at guest-physical 0. */
export class GuestMachine implements Disposable {
  readonly kvm: Kvm;
  readonly vm: Vm;
  readonly vcpu: Vcpu;
  /** Guest memory (slot 0 at guest-physical 0). */
  readonly memory: GuestMemory;
  /** CR3 the vCPU runs with. */
  readonly cr3: bigint;
  readonly #ownsKvm: boolean;
  readonly #identity: boolean;
  #program: GuestProgram | undefined;
  #state: 'idle' | 'ready' | 'running' | 'ended' = 'idle';
  #ended = '';
  #disposed = false;

  private constructor(kvm: Kvm, ownsKvm: boolean, vm: Vm, vcpu: Vcpu, memory: GuestMemory, cr3: bigint, identity: boolean) {
    this.kvm = kvm;
    this.#identity = identity;
    this.#ownsKvm = ownsKvm;
    this.vm = vm;
    this.vcpu = vcpu;
    this.memory = memory;
    this.cr3 = cr3;
  }

  /** Creates the VM, its memory, one vCPU in long mode, and the host structures in [0, 1 MiB). */
  static create(options: GuestMachineOptions = {}): GuestMachine {
    const size = parseSize(options.memory ?? '64M', 'guest memory');
    if (size < 2 * GUEST_RESERVED_END) {
      throw new RangeError(`guest memory of ${size} bytes is too small: the host keeps [0, 1 MiB) and programs load above it; give at least 2M`);
    }
    const kvm = options.kvm ?? Kvm.open();
    const cleanup: Disposable[] = options.kvm ? [] : [kvm];
    try {
      const memory = GuestMemory.anonymous(size);
      cleanup.unshift(memory);
      const vm = kvm.createVm();
      cleanup.unshift(vm);
      vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memory });
      const vcpu = vm.createVcpu(0);
      const bytes = memory.bytes();
      writeSystemStructures(bytes, 1);
      const tables = options.pageTables ?? 'identity';
      const cr3 = tables === 'identity'
        ? BigInt(buildIdentityMap(bytes, { bytes: identityMapSize(size) }).cr3)
        : BigInt(tables.cr3);
      prepareLongModeVcpu(vcpu, { index: 0, vcpus: 1, cr3 });
      return new GuestMachine(kvm, !options.kvm, vm, vcpu, memory, cr3, tables === 'identity');
    } catch (err) {
      for (const d of cleanup) d[Symbol.dispose]();
      throw err;
    }
  }

  /** Guest memory as bytes, index = guest-physical address. */
  get bytes(): Uint8Array {
    this.#check('use the memory of');
    return this.memory.bytes();
  }

  /**
   * Loads a static ELF64 executable (a path or its bytes) and points the vCPU at its
   * entry with RSP = INITIAL_STACK_TOP. Segments may not touch [0, 1 MiB) (host
   * structures) and must fit in memory. Loading again replaces the program: the host
   * structures (and identity tables) are written afresh, other memory keeps its contents.
   */
  loadElf(source: string | Uint8Array): GuestProgram {
    this.#check('load a program into');
    if (this.#state === 'running') throw new Error('cannot load a program while the guest is running');
    const what = typeof source === 'string' ? source : 'ELF image';
    let file: Uint8Array;
    try {
      file = typeof source === 'string' ? readFileSync(source) : source;
    } catch (err) {
      throw new ElfError(`cannot read ${what}: ${(err as Error).message}`);
    }
    const image = parseElf(file, what);
    this.#writeHostStructures();
    loadSegments(file, image, this.memory.bytes(), [{ start: 0, end: GUEST_RESERVED_END, what: 'the host structures (GDT, IDT, page tables, stacks)' }]);
    this.setEntry(image.entry);
    this.#program = new GuestProgram(this, what, image.entry, image.symbols);
    return this.#program;
  }

  /** GDT, TSS, IDT, stubs and (unless the caller brought its own) the identity tables. */
  #writeHostStructures(): void {
    const bytes = this.memory.bytes();
    writeSystemStructures(bytes, 1);
    if (this.#identity) buildIdentityMap(bytes, { bytes: identityMapSize(this.memory.size) });
  }

  /**
   * Points the vCPU at `rip` with stack `rsp`, every other GPR zero and interrupts
   * off: for code placed in memory by other means than loadElf.
   */
  setEntry(rip: number | bigint, rsp: number | bigint = INITIAL_STACK_TOP): void {
    this.#check('set the entry of');
    const regs = this.vcpu.getRegs();
    for (const k of Object.keys(regs) as (keyof Regs)[]) regs[k] = 0n;
    regs.rip = BigInt(rip);
    regs.rsp = BigInt(rsp);
    regs.rflags = INITIAL_RFLAGS;
    this.vcpu.setRegs(regs);
    // The same long-mode state for every program, whatever the last one did to it.
    this.vcpu.setSregs({ ...this.vcpu.getSregs(), ...longModeState(0, 1, this.cr3) });
    this.#state = 'ready';
  }

  /**
   * Runs the guest until it calls exit(), faults, shuts down, stops unexpectedly or
   * exceeds the time limit. Resolves with console text, exit code and result; rejects
   * with a GuestFault, GuestShutdown, GuestTimeout, GuestAssertionError or
   * GuestUnexpectedExit (each carrying the console text so far). After a timeout
   * the guest may be run again and continues where it was stopped.
   */
  async run(options: GuestRunOptions = {}): Promise<GuestRunResult> {
    this.#check('run');
    const timeoutMs = options.timeoutMs ?? DEFAULT_RUN_TIMEOUT_MS;
    if (typeof timeoutMs !== 'number' || !(timeoutMs > 0) || !Number.isFinite(timeoutMs)) {
      throw new RangeError(`timeoutMs must be a positive finite number, got ${String(timeoutMs)}`);
    }
    if (this.#state === 'idle') throw new Error('nothing to run: load a program (loadElf) or call setEntry first');
    if (this.#state === 'running') throw new Error('the guest is already running');
    if (this.#state === 'ended') throw new Error(`the guest already ended (${this.#ended}); load a program again to rerun it`);
    this.#state = 'running';
    const run = new RunState(options.onConsole);
    const start = performance.now();
    try {
      for (;;) {
        const remaining = timeoutMs - (performance.now() - start);
        if (remaining <= 0) throw new GuestTimeout(timeoutMs, this.#registers(), run.console);
        const limit = { timeoutMs: Math.max(1, Math.ceil(remaining)) };
        const exit = options.blocking ? this.vcpu.run(limit) : await this.vcpu.runAsync(limit);
        run.exits++;
        const code = this.#handle(exit, run, timeoutMs);
        if (code !== undefined) {
          this.#end(`exit code ${code}`);
          return { console: run.console, exitCode: code, result: run.result, exits: run.exits, elapsedMs: performance.now() - start };
        }
      }
    } catch (err) {
      if (this.#state === 'running') {
        if (err instanceof GuestTimeout) this.#state = 'ready';
        else this.#end(err instanceof Error ? err.message : String(err));
      }
      throw err;
    }
  }

  /** Handles one exit: returns the exit code when the guest called exit(), throws on failure. */
  #handle(exit: Exit, run: RunState, timeoutMs: number): number | undefined {
    switch (exit.kind) {
      case 'io': {
        if (exit.direction !== IoDirection.OUT) {
          throw new GuestUnexpectedExit('io', `the guest read ${exit.size} byte(s) from port ${hex(exit.port)}, ` +
            'but the runtime has no input ports', run.console);
        }
        const data = exit.data;
        const u32 = (): number => {
          if (exit.size !== 4 || exit.count !== 1) {
            throw new GuestUnexpectedExit('io', `port ${hex(exit.port)} (${guestPortName(exit.port)}) takes one 32-bit write, ` +
              `got ${exit.count} × ${exit.size} byte(s)`, run.console);
          }
          return new DataView(data.buffer, data.byteOffset, 4).getUint32(0, true);
        };
        switch (exit.port) {
          case GuestPort.console: run.write(data); return undefined;
          case GuestPort.consoleBuf: {
            const desc = new DataView(this.#readVirtual(BigInt(u32()), 16, run).slice().buffer);
            const len = desc.getBigUint64(8, true);
            if (len > BigInt(MAX_CONSOLE_WRITE)) {
              throw new GuestUnexpectedExit('io', `console write of ${len} bytes exceeds the ${MAX_CONSOLE_WRITE}-byte limit`, run.console);
            }
            run.write(this.#readVirtual(desc.getBigUint64(0, true), Number(len), run));
            return undefined;
          }
          case GuestPort.exit: return u32() | 0;
          case GuestPort.resultLo: run.resultLo = u32(); return undefined;
          case GuestPort.resultHi: run.result = (BigInt(u32()) << 32n) | BigInt(run.resultLo ?? 0); return undefined;
          case GuestPort.assertMsg: run.assertion += Buffer.from(data).toString('utf8'); return undefined;
          case GuestPort.assertFail: throw new GuestAssertionError(run.assertion || '(no message)', u32(), run.console);
          case GuestPort.exception: {
            const area = exceptionAreaGpa(this.vcpu.id);
            const bytes = this.memory.bytes();
            // Safe: the area lies in the reserved first MiB, inside memory (create() checked the size).
            const report = decodeReport(new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength), area);
            throw new GuestFault(report, run.console, this.#symbolize(report.rip));
          }
          default:
            throw new GuestUnexpectedExit('io', `the guest wrote ${exit.count} × ${exit.size} byte(s) to port ${hex(exit.port)}, ` +
              `which the runtime does not use (ports: ${Object.entries(GuestPort).map(([n, p]) => `${n} ${hex(p)}`).join(', ')})`, run.console);
        }
      }
      case 'intr':
        if (exit.timedOut) throw new GuestTimeout(timeoutMs, this.#registers(), run.console);
        return undefined; // a kick or stray signal: keep going until exit or the deadline
      case 'shutdown':
        throw new GuestShutdown(this.#registers(), run.console);
      case 'hlt':
        throw new GuestUnexpectedExit('hlt', `the guest executed HLT at RIP ${hex(this.#registers().rip)} ` +
          'with interrupts off, without calling exit()', run.console);
      case 'mmio':
        throw new GuestUnexpectedExit('mmio', `${exit.isWrite ? 'write' : 'read'} of ${exit.length} byte(s) at guest-physical ` +
          `${hex(exit.address)}, where no memory is (RIP ${hex(this.#registers().rip)})`, run.console);
      default:
        throw new GuestUnexpectedExit(exit.kind, `${describeExit(exit)} (RIP ${hex(this.#registers().rip)})`, run.console);
    }
  }

  /**
   * Copies `length` bytes at guest-virtual `address`: directly under the identity map,
   * else page by page through KVM_TRANSLATE (the caller's page tables).
   */
  #readVirtual(address: bigint, length: number, run: RunState): Uint8Array {
    const bytes = this.memory.bytes();
    const out = new Uint8Array(length);
    for (let done = 0; done < length;) {
      const va = address + BigInt(done);
      const chunk = Math.min(length - done, 0x1000 - Number(va & 0xfffn));
      let pa = va;
      if (!this.#identity) {
        const t = this.vcpu.translate(va);
        if (!t.valid) throw new GuestUnexpectedExit('io', `console buffer byte at ${hex(va)} is not mapped`, run.console);
        pa = t.physicalAddress;
      } else if (va < 0x1000n) {
        throw new GuestUnexpectedExit('io', `console buffer byte at ${hex(va)} is in the unmapped null page`, run.console);
      }
      if (pa + BigInt(chunk) > BigInt(bytes.byteLength)) {
        throw new GuestUnexpectedExit('io', `console buffer byte at ${hex(va)} (guest-physical ${hex(pa)}) is outside guest memory`, run.console);
      }
      // Safe: [pa, pa + chunk) was checked against the size of guest memory just above.
      out.set(bytes.subarray(Number(pa), Number(pa) + chunk), done);
      done += chunk;
    }
    return out;
  }

  #registers(): Regs {
    return this.vcpu.getRegs();
  }

  #symbolize(rip: bigint): string | undefined {
    const s = this.#program?.symbols.containing(Number(rip));
    if (!s) return undefined;
    const off = Number(rip) - s.value;
    return off === 0 ? s.name : `${s.name}+${hex(off)}`;
  }

  #end(how: string): void {
    this.#state = 'ended';
    this.#ended = how;
  }

  #check(action: string): void {
    if (this.#disposed) throw new GuestError(`cannot ${action} a disposed GuestMachine`, '');
  }

  /** True once disposed. */
  get disposed(): boolean {
    return this.#disposed;
  }

  /** Disposes the VM (and its vCPU, stopping a run in flight), the memory and, if owned, /dev/kvm. Idempotent. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.vm.dispose();
    this.memory.dispose();
    if (this.#ownsKvm) this.kvm.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}

/** Mutable state of one run. */
class RunState {
  #chunks: string[] = [];
  readonly #decoder = new TextDecoder('utf-8');
  exits = 0;
  resultLo: number | undefined;
  result: bigint | undefined;
  assertion = '';

  constructor(private readonly onConsole?: (text: string) => void) {}

  write(data: Uint8Array): void {
    const text = this.#decoder.decode(data, { stream: true });
    if (!text) return;
    this.#chunks.push(text);
    this.onConsole?.(text);
  }

  get console(): string {
    return this.#chunks.join('');
  }
}

/**
 * Runs one guest program in a fresh machine and disposes it: the one-call form.
 * `program` is a path or a program name under native/guest/out.
 */
export async function runGuestProgram(program: string, options: GuestRunOptions & { memory?: Size } = {}): Promise<GuestRunResult> {
  const path = existsSync(program) ? program : guestProgramPath(program);
  using machine = GuestMachine.create({ memory: options.memory });
  return await machine.loadElf(path).run(options);
}
