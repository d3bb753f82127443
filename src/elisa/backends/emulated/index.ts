// The emulated EPTP-switching backend: ELISA on any KVM host.
//
// Each EPT context is its own KVM VM. The default context is the guest's own VM; the
// gate and sub contexts are VMs whose memory slots are derived by walking their EPTs:
// every leaf becomes guest-physical memory backed by the arena page the leaf names
// (contiguous GPA→arena runs coalesced into one slot; read-only where the EPT denies
// write). A VMFUNC is trapped — each VMFUNC of the pages we generated is rewritten to
// `out 0xd4, al; nop` (a port-I/O exit, the cheapest exit there is), and a VMFUNC we did
// not write ends KVM_RUN as an emulation failure carrying its bytes — and carried out
// here with the CPU's semantics: EAX must be 0, ECX < 512, the EPTP-list entry (read
// live from the arena at every VMFUNC) must be the EPTP of a context of this
// attachment; otherwise #UD is injected into the context that executed it. On success
// the vCPU's architectural state moves into the target context's VM through kvm_run's
// synced registers (regs, sregs, events: no extra ioctl), RIP just past the VMFUNC.
//
// What this cannot enforce, documented in docs/backends.md: execute-only and
// non-executable EPT rights (a KVM slot is readable and executable), and the APT for
// any GPA other than the guest's CR3 in force (an unmapped GPA here is an MMIO exit,
// not the page-table root).
import { Cap, ExitReason, InternalErrorSuberror, IoDirection, KvmRun, SyncRegs, type Vcpu, type Vm } from '../../../kvm';
import { hex, levelSize } from '../../address';
import type { ElisaContexts } from '../../context';
import { encodeEptp } from '../../ept';
import { ADDRESS_MASK, EPT } from '../../flags';
import type { PhysPage } from '../../memory';
import { describeGuestExit, GuestError, type GuestMachine } from '../../host/machine';
import type { ExceptionReport } from '../../../x86/exceptions';
import type {
  AttachmentStats, AttachOptions, Backend, BackendAttachment, ManagerMemory, SwitchTiming, VmfuncEvent,
} from '../backend';

/** The I/O port of the rewritten VMFUNC sites (`out 0xd4, al`: 0xd4 is VMFUNC's last opcode byte). */
export const VMFUNC_TRAP_PORT = 0xd4;
/** What each generated VMFUNC (0f 01 d4) is rewritten to: out 0xd4, al; nop. */
export const VMFUNC_TRAP_BYTES: readonly number[] = Object.freeze([0xe6, VMFUNC_TRAP_PORT, 0x90]);
/** VMFUNC's encoding. */
export const VMFUNC_OPCODE: readonly number[] = Object.freeze([0x0f, 0x01, 0xd4]);

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

/** One memory slot of a context VM. */
export interface ContextSlot {
  gpa: bigint;
  /** Byte offset into the arena memory. */
  offset: number;
  size: number;
  readonly: boolean;
  /** 'ept' for slots derived from EPT leaves, 'apt' for the page-table root at the guest's CR3. */
  source: 'ept' | 'apt';
}

/**
 * Derives a context VM's memory slots by walking the EPT's leaves: each leaf's GPA
 * range is backed by the arena bytes its HPA names; adjacent leaves whose GPAs and
 * HPAs are both contiguous and whose writability agrees are coalesced. Throws if a
 * leaf points outside the arena (the backend can only back arena memory).
 */
export function slotsFromEpt(contexts: ElisaContexts, which: 'gate' | 'sub', manager: ManagerMemory): ContextSlot[] {
  const { allocator } = manager;
  const out: ContextSlot[] = [];
  for (const leaf of contexts[which].ept.leaves()) {
    const size = levelSize(leaf.level);
    const hpa = leaf.entry & ADDRESS_MASK & ~(size - 1n);
    if (hpa < allocator.base || hpa + size > allocator.end) {
      throw new Error(`${which} context: EPT leaf GPA ${hex(leaf.gpa)} → HPA ${hex(hpa)} lies outside the manager arena ` +
        `[${hex(allocator.base)}, ${hex(allocator.end)}): the emulated backend can only back arena memory`);
    }
    const readonly = (leaf.entry & EPT.W) === 0n;
    const offset = Number(hpa - allocator.base);
    const last = out[out.length - 1];
    if (last && last.readonly === readonly && last.gpa + BigInt(last.size) === leaf.gpa && last.offset + last.size === offset) {
      last.size += Number(size);
    } else {
      out.push({ gpa: leaf.gpa, offset, size: Number(size), readonly, source: 'ept' });
    }
  }
  return out;
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
  attach(machine: GuestMachine, contexts: ElisaContexts, manager: ManagerMemory, options: AttachOptions = {}): BackendAttachment {
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
  readonly #machine: GuestMachine;
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
  #disposed = false;

  constructor(machine: GuestMachine, contexts: ElisaContexts, manager: ManagerMemory, options: AttachOptions) {
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
      const fpu = guestVcpu.getFpu();
      const cpuid = machine.kvm.supportedCpuid();
      const makeContext = (name: 'gate' | 'sub'): Context => {
        const vm = machine.kvm.createVm();
        made.push(vm);
        if (vm.checkExtension(Cap.EXIT_ON_EMULATION_FAILURE)) vm.enableCap(Cap.EXIT_ON_EMULATION_FAILURE, [1]);
        const slots = slotsFromEpt(contexts, name, manager);
        slots.forEach((s, i) => vm.setUserMemoryRegion({ slot: i, guestPhysAddr: s.gpa, memory: manager.memory, offset: s.offset, size: s.size, readonly: s.readonly }));
        const vcpu = vm.createVcpu(0);
        vcpu.setCpuid2(cpuid); // the same CPU model in every context, as one physical CPU would be
        vcpu.setFpu(fpu);
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
      const cur = this.#current;
      const left = deadline - performance.now();
      const reason = cur.vcpu.runRaw(left > 0 ? left : 0.001);
      const v = cur.view;
      if (reason === ExitReason.IO && v.getUint16(KvmRun.io_port, true) === VMFUNC_TRAP_PORT && v.getUint8(KvmRun.io_direction) === IoDirection.OUT) {
        const rip = Number(v.getBigUint64(RIP, true));
        // KVM reports the OUT with RIP at the instruction (it skips it on the next run).
        const site = cur.sites.has(rip) ? rip : cur.sites.has(rip - 2) ? rip - 2 : -1;
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
      const what = exit.kind === 'intr' && exit.timedOut ? 'the run timed out while the guest was inside this context'
        : exit.kind === 'shutdown' ? 'shutdown (triple fault: an exception, and no IDT is mapped in this context)'
        : describeGuestExit(exit, rip);
      this.#dead = `guest vCPU 0 was terminated earlier: the ${cur.name} context stopped (${what})`;
      throw new ContextExitError(cur.name, 0, rip, what, this.#machine.console);
    }
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
    const eax = Number(v.getBigUint64(RAX, true) & 0xffffffffn);
    const ecx = Number(v.getBigUint64(RCX, true) & 0xffffffffn);
    let failure: string | undefined;
    let target: Context | undefined;
    if (eax !== 0) failure = `EAX = ${hex(eax)}: only VM function 0 (EPTP switching) is enabled`;
    else if (ecx >= 512) failure = `ECX = ${hex(ecx)}: the EPTP list has 512 entries`;
    else {
      // The list is live memory: read the entry now, as the CPU would.
      const eptp = this.#list.getBigUint64(ecx * 8, true);
      target = this.#byEptp.get(eptp);
      if (!target) failure = eptp === 0n ? `EPTP list entry ${ecx} is empty` : `EPTP list entry ${ecx} (${hex(eptp)}) is not the EPTP of a context of this vCPU`;
    }
    if (failure !== undefined || !target) {
      const ev: VmfuncEvent = { from: cur.name, rip, trap, failure: failure ?? 'no target' };
      this.stats.failures.push(ev);
      this.#trace?.push(ev);
      // VMFUNC failed: KVM injects #UD with RIP at the VMFUNC.
      if (injectOnFailure) this.#injectUd(cur, rip);
      return false;
    }
    if (cur === this.#default) {
      const cr3 = v.getBigUint64(CR3, true) & ADDRESS_MASK;
      if (cr3 !== this.#gate.aptGpa || cr3 !== this.#sub.aptGpa) {
        this.#placeApt(this.#gate, cr3);
        this.#placeApt(this.#sub, cr3);
        this.stats.aptMoves++;
      }
    }
    if (target !== cur) {
      this.#moveState(cur, target);
      if (this.#moveFpu) target.vcpu.setFpu(cur.vcpu.getFpu());
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
    this.#gate.vm.dispose();
    this.#sub.vm.dispose();
    this.#manager.allocator.free(this.#defaultRoot);
    this.#byEptp.clear();
  }

  [Symbol.dispose](): void { this.dispose(); }
}
