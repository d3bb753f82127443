// The emulated EPTP-switching backend: ELISA on any KVM host.
//
// Each EPT context is its own KVM VM. The default context is the guest's own VM; the
// gate and sub contexts are VMs whose memory slots are derived by walking their EPTs:
// every leaf becomes guest-physical memory backed by the arena page the leaf names
// (contiguous GPA→arena runs coalesced into one slot; read-only where the EPT denies
// write). A VMFUNC is trapped — each VMFUNC of the pages we generated is rewritten to
// `nop; out 0xd4, al` (a port-I/O exit, the cheapest exit there is), and a VMFUNC we did
// not write ends KVM_RUN as an emulation failure carrying its bytes — and carried out
// here with the CPU's semantics: EAX must be 0, ECX < 512, the EPTP-list entry (read
// live from the arena at every VMFUNC) must be the EPTP of a context of this
// attachment; otherwise #UD is injected into the context that executed it. On success
// the vCPU's architectural state moves into the target context's VM through kvm_run's
// synced registers (regs, sregs, events: no extra ioctl), RIP just past the VMFUNC.
//
// Successful switches at generated sites run in a C++ loop by default (native-loop.ts);
// everything else comes back here. On hosts whose CPU raises #UD for VMFUNC, the guest's
// exception report is recognised and the VMFUNC carried out (#onInvalidOpcode).
//
// What this cannot enforce, documented in docs/backends.md: execute-only and
// non-executable EPT rights (a KVM slot is readable and executable), and the APT for
// any GPA other than the guest's CR3 in force (an unmapped GPA here is an MMIO exit,
// not the page-table root).
import { Cap, ExitReason, InternalErrorSuberror, IoDirection, KvmRun, SyncRegs, type Vcpu, type Vm } from '../../../kvm';
import { hex } from '../../address';
import type { ElisaContexts } from '../../context';
import { encodeEptp } from '../../ept';
import { ADDRESS_MASK } from '../../flags';
import { NATIVE_TIMEOUT, nativeSwitch, type SwitchLoop } from './native-loop';
import { slotsFromEpt } from './slots';
import { VMFUNC_OPCODE, VMFUNC_TRAP_BYTES, VMFUNC_TRAP_PORT, vmfuncOutcome } from './vmfunc';
import type { PhysPage } from '../../memory';
import { describeGuestExit, GuestError, type ElisaGuest } from '../../host/machine';
import type { ExceptionReport } from '../../../x86/exceptions';
import type {
  AttachmentStats, AttachOptions, Backend, BackendAttachment, ManagerMemory, SwitchTiming, VmfuncEvent,
} from '../backend';

export { VMFUNC_OPCODE, VMFUNC_TRAP_BYTES, VMFUNC_TRAP_PORT, vmfuncOutcome, type VmfuncOutcome } from './vmfunc';
export { slotsFromEpt, type ContextSlot } from './slots';

const UD_VECTOR = 6;
// Offsets into kvm_run's synced areas (struct kvm_regs / kvm_sregs).
const RAX = KvmRun.sync_regs + 0;
const RCX = KvmRun.sync_regs + 16;
const RIP = KvmRun.sync_regs + 16 * 8;
const CR3 = KvmRun.sync_sregs + 8 * 24 + 16 + 16 + 16; // after 8 segments, gdt, idt, cr0, cr2
const REGS_SIZE = KvmRun.sync_sregs - KvmRun.sync_regs;
const SREGS_SIZE = KvmRun.sync_events - KvmRun.sync_sregs;
const EVENTS_SIZE = 64;

/** Views of a vCPU's synced areas. Safe: kvm_run stays mapped until the vCPU is disposed, which detaches the buffer. */
function syncViews(vcpu: Vcpu): Pick<Context, 'view' | 'regs' | 'sregs' | 'events'> {
  const view = vcpu.runView;
  const at = (off: number, len: number): Buffer => Buffer.from(view.buffer, view.byteOffset + off, len);
  return { view, regs: at(KvmRun.sync_regs, REGS_SIZE), sregs: at(KvmRun.sync_sregs, SREGS_SIZE), events: at(KvmRun.sync_events, EVENTS_SIZE) };
}

/** A failure in a gate or sub context (fault, unexpected exit, timeout), reported with where it happened. */
export class ContextExitError extends GuestError {
  override name = 'ContextExitError';
  /** 'gate' or 'sub'. */
  readonly context: string;
  /** Guest vCPU index. */
  readonly vcpu: number;
  /** RIP in that context when it stopped. */
  readonly rip: bigint;
  /** The KVM exit, in words. */
  readonly exit: string;

  /** Builds the message from its parts. */
  constructor(context: string, vcpu: number, rip: bigint, exit: string, console: string) {
    super(`${context} context of guest vCPU ${vcpu} stopped: ${exit} (RIP ${hex(rip)}); the guest was terminated ` +
      `(its state stays in the ${context} context, so it cannot continue)`, console);
    this.context = context; this.vcpu = vcpu; this.rip = rip; this.exit = exit;
  }
}

interface Context {
  name: 'default' | 'gate' | 'sub';
  vm: Vm;
  vcpu: Vcpu;
  view: DataView;
  /** Byte views of kvm_run's synced regs, sregs and events (the mapping never moves). */
  regs: Buffer;
  sregs: Buffer;
  events: Buffer;
  /** Rewritten VMFUNC sites of this context's code, by RIP (as a number: GVAs here are < 2^53). */
  sites: Set<number>;
  /** Number of the APT slot in this VM (gate/sub), and the GPA it sits at. */
  aptSlot?: number;
  aptGpa?: bigint;
  ptRoot?: bigint;
}

/** The emulated backend. */
export class EmulatedBackend implements Backend {
  readonly name = 'emulated' as const;

  /** See Backend.attach. */
  attach(machine: ElisaGuest, contexts: ElisaContexts, manager: ManagerMemory, options: AttachOptions = {}): BackendAttachment {
    return new EmulatedAttachment(machine, contexts, manager, options);
  }
}

/** The page bytes of each generated page, so their VMFUNC sites can be rewritten in place. */
function rewriteSites(bytes: Uint8Array, offsets: readonly number[], what: string): void {
  for (const o of offsets) {
    const got = Array.from(bytes.subarray(o, o + 3));
    if (got.some((b, i) => b !== VMFUNC_OPCODE[i])) {
      throw new Error(`${what}: expected VMFUNC (0f 01 d4) at offset ${hex(o)}, found ${Buffer.from(got).toString('hex')}`);
    }
    bytes.set(VMFUNC_TRAP_BYTES, o);
  }
}

class EmulatedAttachment implements BackendAttachment {
  readonly backend = 'emulated' as const;
  readonly stats: AttachmentStats = { switchesTo: { default: 0, gate: 0, sub: 0 }, failures: [], aptMoves: 0, stateMoves: { sregs: 0, events: 0 } };
  readonly #machine: ElisaGuest;
  readonly #manager: ManagerMemory;
  readonly #byEptp = new Map<bigint, Context>();
  readonly #default: Context;
  readonly #gate: Context;
  readonly #sub: Context;
  readonly #list: DataView;
  readonly #defaultRoot: PhysPage;
  readonly #moveFpu: boolean;
  readonly #trace: VmfuncEvent[] | undefined;
  readonly #timing: SwitchTiming | undefined;
  readonly #simulateUd: boolean;
  #ownUd: bigint | undefined;
  #tripStart = 0;
  #current: Context;
  #dead: string | undefined;
  /** Contexts in the native loop's order (default first). */
  readonly #order: Context[] = [];
  readonly #counters = new Uint32Array(5);
  readonly #aptCr3 = new BigUint64Array(1);
  #loop: SwitchLoop | undefined;
  #disposed = false;

  constructor(machine: ElisaGuest, contexts: ElisaContexts, manager: ManagerMemory, options: AttachOptions) {
    this.#machine = machine;
    this.#manager = manager;
    this.#moveFpu = options.moveFpu ?? false;
    this.#trace = options.trace;
    this.#timing = options.timing;
    this.#simulateUd = options.simulateUdHost ?? false;
    const list = contexts.dataPages.list.bytes;
    this.#list = new DataView(list.buffer, list.byteOffset, list.byteLength);
    const guestVcpu = machine.vcpu;

    // Rewrite the generated VMFUNCs into port-I/O traps, page by page.
    const offsets = (page: string): number[] => contexts.vmfuncSites.filter((s) => s.page === page).map((s) => s.offset);
    rewriteSites(contexts.dataPages.gateCode.bytes, offsets('gate'), 'gate code page');
    rewriteSites(contexts.dataPages.subCode.bytes, offsets('sub'), 'sub code page');
    rewriteSites(contexts.defaultPages.top.bytes, offsets('top'), 'top page');
    rewriteSites(contexts.defaultPages.bottom.bytes, offsets('bottom'), 'bottom page');
    const sitesOf = (page: string): Set<number> => new Set(contexts.vmfuncSites.filter((s) => s.page === page).map((s) => Number(s.gva)));

    // The default context's EPTP: the guest's own VM has no EPT of ours, so an (empty)
    // arena page stands for its root; its EPTP goes into slot 0 ("activation").
    this.#defaultRoot = manager.allocator.allocate();
    const defaultEptp = encodeEptp({ root: this.#defaultRoot.address, levels: contexts.eptLevels, memoryType: 'WB', accessDirty: true });
    this.#default = { name: 'default', vm: machine.vm, vcpu: guestVcpu, ...syncViews(guestVcpu), sites: sitesOf('top') };
    this.#current = this.#default;
    const made: Vm[] = [];
    try {
      const cr3 = guestVcpu.getSregs().cr3 & ADDRESS_MASK;
      // FPU/SSE state moves as a KVM_GET/SET_XSAVE image, not as kvm_fpu: KVM_SET_FPU writes
      // the legacy region without marking the components in use (XSTATE_BV), so a component
      // still in its initial state ignores the values on the next XRSTOR, and KVM_GET_FPU
      // returns a stale legacy region for components the guest put back into their initial
      // state (FNINIT). Measured on this project's KVM; the XSAVE image carries XSTATE_BV.
      const fpu = guestVcpu.getXsave();
      const cpuid = machine.kvm.supportedCpuid();
      const makeContext = (name: 'gate' | 'sub'): Context => {
        const vm = machine.kvm.createVm();
        made.push(vm);
        if (vm.checkExtension(Cap.EXIT_ON_EMULATION_FAILURE)) vm.enableCap(Cap.EXIT_ON_EMULATION_FAILURE, [1]);
        const slots = slotsFromEpt(contexts, name, manager);
        slots.forEach((s, i) => vm.setUserMemoryRegion({ slot: i, guestPhysAddr: s.gpa, memory: manager.memory, offset: s.offset, size: s.size, readonly: s.readonly }));
        const vcpu = vm.createVcpu(0);
        vcpu.setCpuid2(cpuid); // the same CPU model in every context, as one physical CPU would be
        vcpu.setXsave(fpu); // after setCpuid2: KVM checks XSTATE_BV against the CPUID's XCR0 bits
        vcpu.sync.request(SyncRegs.REGS | SyncRegs.SREGS | SyncRegs.EVENTS);
        const ctx: Context = { name, vm, vcpu, ...syncViews(vcpu), sites: sitesOf(name), aptSlot: slots.length, ptRoot: contexts[name].ptRoot };
        this.#placeApt(ctx, cr3);
        return ctx;
      };
      this.#gate = makeContext('gate');
      this.#sub = makeContext('sub');
    } catch (err) {
      for (const vm of made) vm.dispose();
      manager.allocator.free(this.#defaultRoot);
      throw err;
    }
    this.#byEptp.set(defaultEptp, this.#default);
    this.#byEptp.set(contexts.gate.eptp, this.#gate);
    this.#byEptp.set(contexts.sub.eptp, this.#sub);
    contexts.eptpList.set(0, defaultEptp);
    this.#order.push(this.#default, this.#gate, this.#sub);
    this.#aptCr3[0] = this.#gate.aptGpa ?? 0n;
    const native = options.nativeLoop ?? true;
    if (native && !this.#timing && !this.#trace && !this.#simulateUd && !this.#moveFpu) {
      this.#loop = new nativeSwitch.SwitchLoop(
        Int32Array.from(this.#order, (c) => c.vcpu.fd), this.#order.map((c) => c.view.buffer as ArrayBuffer), list,
        BigUint64Array.from([defaultEptp, contexts.gate.eptp, contexts.sub.eptp]),
        this.#order.map((c) => BigUint64Array.from([...c.sites].map(BigInt))), this.#aptCr3, this.#counters);
    }
    machine.setExecutor((remaining) => this.#execute(remaining));
    machine.setInvalidOpcodeHandler((report) => this.#onInvalidOpcode(report));
  }

  /**
   * The #UD path (hosts whose CPU raises #UD for VMFUNC): the guest's exception stubs
   * reported a #UD in the default context. If the bytes at RIP are VMFUNC, undo the
   * exception delivery (registers, RSP, RIP, RFLAGS as the report recorded them before
   * the stub ran) and carry the VMFUNC out. A VMFUNC that must fail is left to the
   * guest's #UD, which is then exactly what the hardware would have raised.
   */
  #onInvalidOpcode(report: ExceptionReport): boolean {
    if (this.#current !== this.#default || this.#dead) return false;
    // A #UD this backend injected itself (a failed VMFUNC) is the guest's to keep.
    if (this.#ownUd === report.rip) { this.#ownUd = undefined; return false; }
    const rip = report.rip;
    let bytes: Uint8Array | undefined;
    const mem = this.#machine.memory;
    if (rip + 3n <= BigInt(mem.size)) bytes = mem.bytes(Number(rip), 3); // identity-mapped guest RAM
    if (!bytes || bytes[0] !== 0x0f || bytes[1] !== 0x01 || bytes[2] !== 0xd4) return false;
    const r = report.registers;
    this.#default.vcpu.sync.regs = { rax: r.rax, rbx: r.rbx, rcx: r.rcx, rdx: r.rdx, rsi: r.rsi, rdi: r.rdi, rsp: r.rsp, rbp: r.rbp,
      r8: r.r8, r9: r.r9, r10: r.r10, r11: r.r11, r12: r.r12, r13: r.r13, r14: r.r14, r15: r.r15, rip, rflags: report.rflags };
    return this.#vmfunc(this.#default, rip, 'ud', false);
  }

  /** Raises #UD in `ctx` at `rip` (as KVM does when a VMFUNC fails; `own` false: simulating a #UD-raising CPU). */
  #injectUd(ctx: Context, rip: bigint, own = true): void {
    if (own) this.#ownUd = rip;
    ctx.vcpu.sync.setReg('rip', rip);
    const events = ctx.vcpu.sync.events;
    ctx.vcpu.sync.events = { ...events, exception: { injected: true, nr: UD_VECTOR, hasErrorCode: false, pending: false, errorCode: 0 } };
  }

  get currentContext(): string { return this.#current.name; }

  /** Puts the context's page-table root at the guest's CR3 GPA (APT for the CR3 in force). */
  #placeApt(ctx: Context, cr3: bigint): void {
    if (ctx.aptGpa === cr3 || ctx.aptSlot === undefined) return;
    if (ctx.aptGpa !== undefined) ctx.vm.deleteMemoryRegion(ctx.aptSlot);
    ctx.aptGpa = undefined;
    // Where the EPT maps the CR3 GPA itself, that mapping wins (APT only fills holes).
    const covered = ctx.vm.memoryRegions.some((r) => cr3 >= r.guestPhysAddr && cr3 < r.guestPhysAddr + BigInt(r.size));
    if (covered) return;
    ctx.vm.setUserMemoryRegion({ slot: ctx.aptSlot, guestPhysAddr: cr3, memory: this.#manager.memory,
      offset: Number(ctx.ptRoot! - this.#manager.allocator.base), size: 4096 });
    ctx.aptGpa = cr3;
  }

  /** The executor: runs the guest vCPU in whichever context it is in until the default context needs the host. */
  #execute(remainingMs: number): Vcpu {
    if (this.#dead) throw new GuestError(this.#dead, this.#machine.console);
    const deadline = performance.now() + remainingMs;
    for (;;) {
      let cur = this.#current;
      const left = deadline - performance.now();
      let timedOut = false;
      if (this.#loop) {
        // The native loop carries out successful site VMFUNCs itself and returns for
        // anything else; the checks below then see the exit it stopped at.
        const code = this.#loop.run(this.#order.indexOf(cur), left > 0 ? left : 0.001);
        cur = this.#current = this.#order[code & 0xff]!;
        timedOut = code >> 8 === NATIVE_TIMEOUT;
        this.#afterNative(cur);
      } else {
        cur.vcpu.runRaw(left > 0 ? left : 0.001);
      }
      const v = cur.view;
      const reason = v.getUint32(KvmRun.exit_reason, true);
      if (reason === ExitReason.IO && v.getUint16(KvmRun.io_port, true) === VMFUNC_TRAP_PORT && v.getUint8(KvmRun.io_direction) === IoDirection.OUT) {
        const rip = Number(v.getBigUint64(RIP, true));
        // Upstream KVM reports the OUT with RIP at the OUT (site + 1; it skips the OUT on
        // the next run unless RIP changed); this project's PVM KVM reports RIP past it (site + 3).
        const site = cur.sites.has(rip - 1) ? rip - 1 : cur.sites.has(rip - 3) ? rip - 3 : -1;
        if (site >= 0) {
          if (this.#timing) this.#timed(cur, BigInt(site));
          else this.#vmfunc(cur, BigInt(site), 'site');
          continue;
        }
      } else if (reason === ExitReason.INTERNAL_ERROR && v.getUint32(KvmRun.internal_suberror, true) === InternalErrorSuberror.EMULATION) {
        const exit = cur.vcpu.lastExit();
        const bytes = exit.kind === 'internalError' ? exit.instructionBytes : undefined;
        if (bytes && bytes.length >= 3 && bytes[0] === 0x0f && bytes[1] === 0x01 && bytes[2] === 0xd4) {
          if (this.#simulateUd && cur === this.#default) this.#injectUd(cur, v.getBigUint64(RIP, true), false);
          else this.#vmfunc(cur, v.getBigUint64(RIP, true), 'foreign');
          continue;
        }
      }
      if (cur === this.#default) return cur.vcpu;
      const rip = v.getBigUint64(RIP, true);
      const exit = cur.vcpu.lastExit();
      const what = timedOut || (exit.kind === 'intr' && exit.timedOut) ? 'the run timed out while the guest was inside this context'
        : exit.kind === 'shutdown' ? 'shutdown (triple fault: an exception, and no IDT is mapped in this context)'
        : describeGuestExit(exit, rip);
      this.#dead = `guest vCPU 0 was terminated earlier: the ${cur.name} context stopped (${what})`;
      this.#machine.terminate(`the ${cur.name} context of vCPU 0 stopped (${what}) at RIP ${hex(rip)}`);
      throw new ContextExitError(cur.name, 0, rip, what, this.#machine.console);
    }
  }

  /** After the native loop: its counters into the stats, and every context's kvm_run marked as holding full state. */
  #afterNative(cur: Context): void {
    const c = this.#counters;
    if (c[2]! + c[3]! + c[4]! === 0) { cur.vcpu.sync.afterRun(); return; } // no switch: only `cur` ran
    this.stats.stateMoves.sregs += c[0]!;
    this.stats.stateMoves.events += c[1]!;
    this.#order.forEach((ctx, i) => { this.stats.switchesTo[ctx.name] = (this.stats.switchesTo[ctx.name] ?? 0) + c[2 + i]!; });
    c.fill(0);
    // Safe: the loop wrote whole areas (copies of stored state) or KVM stored them.
    for (const ctx of this.#order) ctx.vcpu.sync.afterRun();
  }


  /** #vmfunc with host-side timing (benchmarks). */
  #timed(cur: Context, rip: bigint): void {
    const t = this.#timing!;
    const start = performance.now();
    if (cur === this.#default) this.#tripStart = start;
    this.#vmfunc(cur, rip, 'site');
    const end = performance.now();
    t.handling.push(end - start);
    if (this.#current === this.#default && cur !== this.#default) t.trips.push(end - this.#tripStart);
  }

  /**
   * Carries out one VMFUNC executed in `cur` at `rip`, with the CPU's semantics. On
   * failure injects #UD (unless `injectOnFailure` is false) and returns false.
   */
  #vmfunc(cur: Context, rip: bigint, trap: VmfuncEvent['trap'], injectOnFailure = true): boolean {
    const v = cur.view;
    // The list is live memory: the entry is read now, as the CPU would.
    const outcome = vmfuncOutcome(v.getBigUint64(RAX, true), v.getBigUint64(RCX, true), (i) => this.#list.getBigUint64(i * 8, true), this.#byEptp);
    if (!outcome.ok) {
      const ev: VmfuncEvent = { from: cur.name, rip, trap, failure: outcome.failure };
      this.stats.failures.push(ev);
      this.#trace?.push(ev);
      // VMFUNC failed: KVM injects #UD with RIP at the VMFUNC.
      if (injectOnFailure) this.#injectUd(cur, rip);
      return false;
    }
    const target = outcome.target;
    if (cur === this.#default) {
      const cr3 = v.getBigUint64(CR3, true) & ADDRESS_MASK;
      if (cr3 !== this.#aptCr3[0]) {
        this.#placeApt(this.#gate, cr3);
        this.#placeApt(this.#sub, cr3);
        this.#aptCr3[0] = cr3;
        this.stats.aptMoves++;
      }
    }
    if (target !== cur) {
      this.#moveState(cur, target);
      if (this.#moveFpu) target.vcpu.setXsave(cur.vcpu.getXsave()); // XSAVE image: see the attach-time copy
    }
    target.vcpu.sync.setReg('rip', rip + 3n);
    this.stats.switchesTo[target.name] = (this.stats.switchesTo[target.name] ?? 0) + 1;
    this.#trace?.push({ from: cur.name, to: target.name, rip, trap });
    this.#current = target;
    return true;
  }

  /**
   * Moves the architectural state from `from` to `to` through kvm_run: the general
   * registers always; sregs and events only when they differ from what `to` holds
   * (its kvm_run copy is its current state: stored at its last exit or written since),
   * because loading sregs makes KVM re-validate segments and control registers.
   */
  #moveState(from: Context, to: Context): void {
    to.regs.set(from.regs);
    let dirty = SyncRegs.REGS;
    if (!from.sregs.equals(to.sregs)) { to.sregs.set(from.sregs); dirty |= SyncRegs.SREGS; this.stats.stateMoves.sregs++; }
    if (!from.events.equals(to.events)) { to.events.set(from.events); dirty |= SyncRegs.EVENTS; this.stats.stateMoves.events++; }
    to.vcpu.sync.markValid(SyncRegs.REGS | SyncRegs.SREGS | SyncRegs.EVENTS);
    to.vcpu.sync.markDirty(dirty);
  }

  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#machine.setExecutor(undefined);
    this.#machine.setInvalidOpcodeHandler(undefined);
    this.#loop?.close();
    this.#loop = undefined;
    this.#gate.vm.dispose();
    this.#sub.vm.dispose();
    this.#manager.allocator.free(this.#defaultRoot);
    this.#byEptp.clear();
  }

  [Symbol.dispose](): void { this.dispose(); }
}
