// A vCPU fd (rust-vmm's `VcpuFd`): registers, MSRs, CPUID, events, debug, and
// execution. kvm_run is mapped once at creation and read in place (see exit.ts).
//
// Execution:
//  - run()      one KVM_RUN on the calling thread, decoded Exit.
//  - runRaw()   one KVM_RUN, returns only kvm_run.exit_reason: no allocation
//               (hot loops, benchmarks); lastExit() decodes it on demand.
//  - runAsync() one KVM_RUN on this vCPU's own native thread; the event loop
//               stays free. kick() interrupts it.
// Every form takes a timeout. A timeout ends the run with an `intr` exit whose
// `timedOut` is true (runRaw returns ExitReason.INTR and lastInterruptCause()
// says TIMEOUT); it is NOT an exception, because on hosts where guest VMCALL
// spins inside KVM_RUN a timeout is an ordinary outcome. The vCPU is unchanged
// and can be run again.
import { Cap, checkCapArgument } from './cap';
import { ExitReason, GuestDebugFlag, InterruptCause, SyncRegs } from './constants';
import { DisposedError } from './errors';
import { decodeExit, type Exit } from './exit';
import { KvmRun, Sizeof } from './layout';
import { native, type NativeVcpuRunner } from './native';
import {
  decodeDebugRegs, decodeFpu, decodeRegs, decodeSregs, decodeTranslation, decodeVcpuEvents, decodeXcrs,
  encodeCpuidEntries, encodeDebugRegs, encodeFpu, encodeRegs, encodeSregs, encodeVcpuEvents, encodeXcrs,
  type CpuidEntry, type DebugRegs, type Fpu, type Regs, type Sregs, type Translation, type VcpuEvents, type Xcr,
} from './structs';
import { SyncRegsView } from './sync-regs';
import { readMsrs } from './msrs';
import type { Vm } from './vm';

/** Options of run() / runAsync(). */
export interface RunOptions {
  /** Interrupt KVM_RUN after this many milliseconds (exit `intr`, timedOut). Default: no timeout. */
  timeoutMs?: number;
}

/** Options of setGuestDebug (struct kvm_guest_debug). */
export interface GuestDebugOptions {
  /** GuestDebugFlag bits; ENABLE is implied when any other bit is set. 0 disables. */
  control: number;
  /** DR0..DR7 for USE_HW_BP (8 values). */
  debugRegs?: readonly bigint[];
}

const fdRegistry = new FinalizationRegistry<number>((fd) => { try { native.close(fd); } catch { /* gone */ } });
const ALL_GUESTDBG = Object.values(GuestDebugFlag).filter((v): v is number => typeof v === 'number').reduce((a, b) => a | b, 0);

function timeoutArg(o: RunOptions | undefined): number {
  const t = o?.timeoutMs;
  if (t === undefined) return -1;
  if (typeof t !== 'number' || !(t >= 0) || !Number.isFinite(t)) throw new RangeError(`timeoutMs must be a finite number >= 0, got ${String(t)}`);
  return t;
}

/** One virtual CPU. */
export class Vcpu implements Disposable {
  #fd: number;
  #runner: NativeVcpuRunner | undefined;
  readonly #onDispose: () => void;
  readonly #runView: DataView;
  readonly #scratch = new Uint8Array(Sizeof.kvm_xsave);  // big enough for every fixed struct
  readonly #scratchView = new DataView(this.#scratch.buffer);
  /** The KVM_CAP_SYNC_REGS areas of this vCPU's kvm_run. */
  readonly sync: SyncRegsView;

  /** @internal Use Vm.createVcpu. */
  constructor(readonly vm: Vm, readonly id: number, fd: number, onDispose: () => void) {
    const runBuffer = native.mmap(fd, BigInt(vm.kvm.vcpuMmapSize), 0n, 0);
    try {
      this.#runner = new native.VcpuRunner(fd, runBuffer);
    } catch (err) {
      native.munmap(runBuffer);
      throw err;
    }
    this.#fd = fd;
    this.#onDispose = onDispose;
    this.#runView = new DataView(runBuffer);
    this.sync = new SyncRegsView(this.#runView, vm.kvm.checkExtension(Cap.SYNC_REGS), `Vcpu ${id}`, () => this.running);
    fdRegistry.register(this, fd, this);
  }

  /** The vCPU fd. Owned by this object. */
  get fd(): number {
    if (this.#fd < 0) throw new DisposedError(`Vcpu ${this.id}`);
    return this.#fd;
  }

  /** True once dispose() ran. */
  get disposed(): boolean { return this.#fd < 0; }

  /**
   * The fd for a state ioctl. Refused while a runAsync() is in flight: KVM holds
   * the vCPU mutex during KVM_RUN, so the ioctl would block the JS thread until
   * the guest exits (forever, for a guest spinning without a timeout).
   */
  #idleFd(): number {
    const fd = this.fd;
    if (this.#runner?.isRunning()) {
      throw new Error(`Vcpu ${this.id} is running (runAsync in flight): its state belongs to KVM until the run ends; await it or kick() it first`);
    }
    return fd;
  }

  /**
   * A DataView over this vCPU's kvm_run mapping (no copy). Valid until dispose(),
   * which detaches it. Offsets: src/kvm/layout.ts (KvmRun).
   */
  get runView(): DataView {
    if (this.#runner === undefined) throw new DisposedError(`Vcpu ${this.id}`);
    return this.#runView;
  }

  #struct(size: number): Uint8Array { return this.#scratch.subarray(0, size); }

  // ---- registers --------------------------------------------------------------

  /** KVM_GET_REGS (or the pending KVM_CAP_SYNC_REGS copy if one is marked dirty). */
  getRegs(): Regs {
    const fd = this.#idleFd();
    if (this.sync.dirty & SyncRegs.REGS) return decodeRegs(this.#runView, KvmRun.sync_regs);
    native.getRegs(fd, this.#struct(Sizeof.kvm_regs));
    return decodeRegs(this.#scratchView);
  }

  /** KVM_SET_REGS (also updates a requested synced copy, keeping it coherent). */
  setRegs(regs: Regs): void {
    const b = this.#struct(Sizeof.kvm_regs);
    encodeRegs(this.#scratchView, regs);
    native.setRegs(this.#idleFd(), b);
    this.sync.writeThrough(SyncRegs.REGS, b);
  }

  /** Reads the registers, applies `changes`, writes them back; returns the result. */
  updateRegs(changes: Partial<Regs>): Regs {
    const regs = { ...this.getRegs(), ...changes };
    this.setRegs(regs);
    return regs;
  }

  /** KVM_GET_SREGS (or the pending synced copy). */
  getSregs(): Sregs {
    const fd = this.#idleFd();
    if (this.sync.dirty & SyncRegs.SREGS) return decodeSregs(this.#runView, KvmRun.sync_sregs);
    native.getSregs(fd, this.#struct(Sizeof.kvm_sregs));
    return decodeSregs(this.#scratchView);
  }

  /** KVM_SET_SREGS (also updates a requested synced copy). */
  setSregs(sregs: Sregs): void {
    const b = this.#struct(Sizeof.kvm_sregs);
    encodeSregs(this.#scratchView, sregs);
    native.setSregs(this.#idleFd(), b);
    this.sync.writeThrough(SyncRegs.SREGS, b);
  }

  /** KVM_GET_FPU. */
  getFpu(): Fpu {
    native.getFpu(this.#idleFd(), this.#struct(Sizeof.kvm_fpu));
    return decodeFpu(this.#scratchView);
  }

  /** KVM_SET_FPU. */
  setFpu(fpu: Fpu): void {
    encodeFpu(this.#scratchView, fpu);
    native.setFpu(this.#idleFd(), this.#struct(Sizeof.kvm_fpu));
  }

  /** KVM_GET_VCPU_EVENTS (or the pending synced copy). */
  getVcpuEvents(): VcpuEvents {
    const fd = this.#idleFd();
    if (this.sync.dirty & SyncRegs.EVENTS) return decodeVcpuEvents(this.#runView, KvmRun.sync_events);
    native.getVcpuEvents(fd, this.#struct(Sizeof.kvm_vcpu_events));
    return decodeVcpuEvents(this.#scratchView);
  }

  /** KVM_SET_VCPU_EVENTS (also updates a requested synced copy). */
  setVcpuEvents(events: VcpuEvents): void {
    const b = this.#struct(Sizeof.kvm_vcpu_events);
    encodeVcpuEvents(this.#scratchView, events);
    native.setVcpuEvents(this.#idleFd(), b);
    this.sync.writeThrough(SyncRegs.EVENTS, b);
  }

  /**
   * KVM_GET_XSAVE: the 4 KiB XSAVE area (legacy FXSAVE region, XSAVE header,
   * extended components at their CPUID-enumerated offsets), as a copy.
   */
  getXsave(): Uint8Array {
    native.getXsave(this.#idleFd(), this.#struct(Sizeof.kvm_xsave));
    return this.#scratch.slice(0, Sizeof.kvm_xsave);
  }

  /** KVM_SET_XSAVE from a 4096-byte XSAVE area (e.g. one returned by getXsave). */
  setXsave(area: Uint8Array): void {
    if (area.length !== Sizeof.kvm_xsave) throw new RangeError(`XSAVE area must be ${Sizeof.kvm_xsave} bytes, got ${area.length}`);
    native.setXsave(this.#idleFd(), area);
  }

  /** KVM_GET_XCRS: the extended control registers (XCR0). */
  getXcrs(): Xcr[] {
    native.getXcrs(this.#idleFd(), this.#struct(Sizeof.kvm_xcrs));
    return decodeXcrs(this.#scratchView);
  }

  /** KVM_SET_XCRS. */
  setXcrs(xcrs: readonly Xcr[]): void {
    encodeXcrs(this.#scratchView, xcrs);
    native.setXcrs(this.#idleFd(), this.#struct(Sizeof.kvm_xcrs));
  }

  /** KVM_GET_DEBUGREGS: DR0-DR3, DR6, DR7. */
  getDebugRegs(): DebugRegs {
    native.getDebugRegs(this.#idleFd(), this.#struct(Sizeof.kvm_debugregs));
    return decodeDebugRegs(this.#scratchView);
  }

  /** KVM_SET_DEBUGREGS. */
  setDebugRegs(regs: DebugRegs): void {
    encodeDebugRegs(this.#scratchView, regs);
    native.setDebugRegs(this.#idleFd(), this.#struct(Sizeof.kvm_debugregs));
  }

  /**
   * Copies what KVM_CAP_SYNC_REGS does not carry — XCRs, the XSAVE area
   * (x87/SSE/AVX) and the debug registers — to `target`, in one native call
   * (six ioctls). Together with copySyncedStateTo this moves a vCPU's
   * architectural state except MSRs outside sregs, which getMsrs/setMsrs move.
   */
  copyExtendedStateTo(target: Vcpu): void {
    native.copyExtendedState(this.#idleFd(), target.#idleFd());
  }

  /** KVM_GET_MSRS; throws naming the first MSR KVM refuses. */
  getMsrs(indices: readonly number[]): bigint[] { return readMsrs(this.#idleFd(), indices, `Vcpu ${this.id}`); }

  /** KVM_SET_MSRS; throws naming the first MSR KVM refuses. */
  setMsrs(entries: readonly { index: number; value: bigint }[]): void {
    const idx = Uint32Array.from(entries, (e) => e.index);
    const values = BigUint64Array.from(entries, (e) => BigInt.asUintN(64, e.value));
    const n = native.setMsrs(this.#idleFd(), idx, values);
    if (n < idx.length) {
      throw new Error(`KVM_SET_MSRS on Vcpu ${this.id}: MSR 0x${idx[n].toString(16)} = 0x${values[n].toString(16)} was refused (the kernel stopped after ${n} of ${idx.length})`);
    }
  }

  /** KVM_SET_CPUID2: the CPUID the guest sees (typically from Kvm.supportedCpuid()). */
  setCpuid2(entries: readonly CpuidEntry[]): void { native.setCpuid2(this.#idleFd(), encodeCpuidEntries(entries)); }

  /** KVM_TRANSLATE: walks the guest's current page tables for a guest-virtual address. */
  translate(linearAddress: bigint | number): Translation {
    const b = this.#struct(Sizeof.kvm_translation);
    b.fill(0);
    this.#scratchView.setBigUint64(0, BigInt.asUintN(64, BigInt(linearAddress)), true);
    native.translate(this.#idleFd(), b);
    return decodeTranslation(this.#scratchView);
  }

  /** KVM_SET_GUEST_DEBUG: single-step, software/hardware breakpoints (exits `debug`). */
  setGuestDebug(options: GuestDebugOptions): void {
    let control = options.control >>> 0;
    if (control & ~ALL_GUESTDBG) throw new RangeError(`setGuestDebug: unknown control bits 0x${(control & ~ALL_GUESTDBG).toString(16)}`);
    if (control !== 0) control |= GuestDebugFlag.ENABLE;
    const regs = options.debugRegs ?? [];
    if (regs.length > 8) throw new RangeError(`setGuestDebug: at most 8 debug registers, got ${regs.length}`);
    const b = this.#struct(Sizeof.kvm_guest_debug);
    b.fill(0);
    this.#scratchView.setUint32(0, control, true);
    regs.forEach((r, i) => this.#scratchView.setBigUint64(8 + 8 * i, BigInt.asUintN(64, r), true));
    native.setGuestDebug(this.#idleFd(), b);
  }

  /** KVM_INTERRUPT: queue external interrupt `vector` (userspace irqchip only). */
  interrupt(vector: number): void {
    if (!Number.isInteger(vector) || vector < 0 || vector > 255) throw new RangeError(`interrupt vector must be 0..255, got ${vector}`);
    native.interrupt(this.#idleFd(), vector);
  }

  /** KVM_NMI: queue a non-maskable interrupt. */
  nmi(): void { native.nmi(this.#idleFd()); }

  /** KVM_ENABLE_CAP on the vCPU fd. */
  enableCap(cap: Cap, args: readonly (bigint | number)[] = [], flags = 0): void {
    checkCapArgument(cap);
    if (args.length > 4) throw new RangeError(`KVM_ENABLE_CAP takes at most 4 arguments, got ${args.length}`);
    const a = new BigUint64Array(4);
    args.forEach((x, i) => { a[i] = BigInt(x); });
    native.enableCap(this.#idleFd(), cap, flags, a);
  }

  // ---- execution --------------------------------------------------------------

  #live(): NativeVcpuRunner {
    const r = this.#runner;
    if (r === undefined) throw new DisposedError(`Vcpu ${this.id}`);
    return r;
  }

  /**
   * One KVM_RUN on the calling thread, returning kvm_run.exit_reason only (no
   * allocation). A timeout/kick returns ExitReason.INTR. Decode with lastExit().
   * @param timeoutMs interrupt after this many milliseconds; negative = none
   */
  runRaw(timeoutMs = -1): ExitReason {
    const reason = this.#live().runSync(timeoutMs);
    this.sync.afterRun();
    return reason;
  }

  /**
   * `count` KVM_RUNs back to back inside the addon (no JS between them, no
   * timeout), stopping at the first exit other than `expected`. A measuring
   * instrument for benchmarks, not a way to drive guests. Returns how many runs
   * ended with `expected`; lastExit() describes the last one.
   */
  runLoop(count: number, expected: ExitReason): number {
    const n = this.#live().runLoop(count, expected);
    this.sync.afterRun();
    return n;
  }

  /** One KVM_RUN on the calling thread (blocks it), decoded. */
  run(options?: RunOptions): Exit {
    this.runRaw(timeoutArg(options));
    return this.lastExit();
  }

  /**
   * One KVM_RUN on this vCPU's own thread. Rejects with DisposedError if the vCPU
   * is disposed meanwhile (dispose kicks and joins the run).
   */
  async runAsync(options?: RunOptions): Promise<Exit> {
    const t = timeoutArg(options);
    await this.#live().runAsync(t);
    if (this.#runner === undefined) throw new DisposedError(`Vcpu ${this.id}`, 'was disposed while runAsync() was in flight');
    this.sync.afterRun();
    return this.lastExit();
  }

  /** Why the last INTR exit happened (TIMEOUT, KICK, SIGNAL). */
  lastInterruptCause(): InterruptCause { return this.#live().lastInterruptCause(); }

  /** Decodes the exit of the last run from kvm_run (views valid until the next run). */
  lastExit(): Exit {
    const r = this.#live();
    if (r.isRunning()) throw new Error(`Vcpu ${this.id} is running: its kvm_run belongs to KVM until the run ends`);
    const reason = this.#runView.getUint32(KvmRun.exit_reason, true);
    return decodeExit(this.#runView, reason === ExitReason.INTR ? r.lastInterruptCause() : InterruptCause.NONE);
  }

  // ---- kvm_run fields for userspace interrupt injection (KVM_INTERRUPT) ------------

  /** kvm_run.request_interrupt_window: ask for an IRQ_WINDOW_OPEN exit when the guest can take an interrupt. */
  set requestInterruptWindow(on: boolean) { this.runView.setUint8(KvmRun.request_interrupt_window, on ? 1 : 0); }
  /** Whether an interrupt-window exit is requested. */
  get requestInterruptWindow(): boolean { return this.runView.getUint8(KvmRun.request_interrupt_window) !== 0; }

  /** kvm_run.ready_for_interrupt_injection after the last exit. */
  get readyForInterruptInjection(): boolean { return this.runView.getUint8(KvmRun.ready_for_interrupt_injection) !== 0; }

  /** kvm_run.if_flag: the guest's RFLAGS.IF at the last exit. */
  get interruptFlag(): boolean { return this.runView.getUint8(KvmRun.if_flag) !== 0; }

  /** True while a runAsync() is in flight. */
  get running(): boolean { return this.#runner?.isRunning() ?? false; }

  /** Interrupts a runAsync() in flight (it ends with exit `intr`, cause KICK). False if none was. */
  kick(): boolean { return this.#live().kick(); }

  /**
   * Copies the synced register areas valid in this vCPU's kvm_run (those it
   * requested at its last run) into `target`'s kvm_run and marks them dirty
   * there, in one native call: target's next KVM_RUN continues with this
   * vCPU's state. Returns the SyncRegs mask copied. Neither may be running.
   */
  copySyncedStateTo(target: Vcpu): number {
    const mask = native.copySyncRegs(this.#live(), target.#live());
    target.sync.markValid(mask);
    return mask;
  }

  /**
   * Interrupts and joins a runAsync() in flight, unmaps kvm_run (detaching
   * runView), closes the fd. Idempotent.
   */
  dispose(): void {
    if (this.#runner === undefined) return;
    const runner = this.#runner;
    this.#runner = undefined;
    runner.close();
    fdRegistry.unregister(this);
    native.close(this.#fd);
    this.#fd = -1;
    this.#onDispose();
  }

  /** Same as dispose(), for `using`. */
  [Symbol.dispose](): void { this.dispose(); }
}
