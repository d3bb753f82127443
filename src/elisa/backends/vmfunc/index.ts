// The vmfunc backend (host mode): real VMFUNC EPTP switching through a kvm_intel that
// carries the ELISA hypercalls (kernel-patch/, compat or hardened variant).
//
//   ElisaManager.create({ backend })   → a manager VM maps the arena (./manager-vm.ts) and
//                                        learns every page's HPA (./arena.ts), so the
//                                        TypeScript libelisa builds contexts with real HPAs
//   manager.attach(guest, { backend }) → the handshake, in the order the patches need:
//        guest vCPU  1001/3/1  its id (compat: keyed hash) / token (hardened)
//        manager     1001/2/1  rendezvous vCPU = that id
//        manager     1001/2/2  the EPTP list (compat: HPA; hardened: GPA in the manager VM)
//        guest vCPU  1001/3/2  activate: the host writes the vCPU's EPTP into slot 0,
//                              enables VMFUNC and points the VMCS at the list
//      then slot 0 ≠ 0 confirms it. The guest-side calls run as a stub on the guest's own
//      vCPU (placed in the middle page of its gate region, registers saved and restored)
//      before its program starts, so the guest programs need no handshake code.
//   guest.run()                         → elisa_gate_entry runs on the CPU: VMFUNC(0, 511),
//                                        gate, VMFUNC(0, 1), sub, VMFUNC(0, 0); no exit.
//
// Never change the memory slots of an activated guest VM: the compat patch copies the
// EPT pointer into slot 0 once, and a new KVM EPT root (after a slot change) leaves it
// stale (shared/docs/VTX-HOST.md). The hardened patch keeps slot 0 current.
import type { GuestMemory } from '../../../kvm';
import { decodeEptp } from '../../ept';
import type { ElisaContexts } from '../../context';
import type { ElisaGuest } from '../../host/machine';
import {
  BackendUnavailableError,
  type AttachmentStats, type AttachOptions, type Backend, type BackendAttachment, type ManagerMemory,
} from '../backend';
import { ElisaCall, hypercallError, type ElisaVariant } from './abi';
import { HostPhysicalArena } from './arena';
import { detectVmfunc, type VmfuncDetection } from './availability';
import { withRendezvousLock } from './lock';
import { ManagerVm } from './manager-vm';
import { HypercallError, hypercallOn } from './stub';

export { HostPhysicalArena } from './arena';
export { detectVmfunc, probeVariant, type VmfuncDetection, type DetectOptions } from './availability';
export { ElisaCall, KVM_CAP_ELISA_MANAGER, KvmHcError, VmcsField, hypercallError, type ElisaVariant, type Hypercall } from './abi';
export { readExitCounters, diffCounters, vmStatsDir, type ExitCounters } from './exits';
export { ManagerVm } from './manager-vm';
export { HypercallError, hypercallOn, runStub, SINGLE_CALL_STUB, BATCH_GPA_TO_HPA_STUB, STUB_DONE_PORT } from './stub';

/** Options of VmfuncBackend. */
export interface VmfuncBackendOptions {
  /** The loaded variant (default: detected; the constructor throws when vmfunc is unavailable). */
  variant?: ElisaVariant;
  /** EPT features of the CPU (default: detected; both false when unknown). */
  eptCaps?: { executeOnly: boolean; accessDirty: boolean };
  /** Bound on every hypercall stub run in ms (default 10 000: the emulated VT-x host is slow). */
  timeoutMs?: number;
}

/** Thrown when the handshake with the kernel fails. */
export class VmfuncAttachError extends Error {
  override name = 'VmfuncAttachError';
}

/** The hardware backend. */
export class VmfuncBackend implements Backend {
  readonly name = 'vmfunc' as const;
  /** The ELISA variant of the loaded kvm_intel. */
  readonly variant: ElisaVariant;
  /** What the detection found (undefined when the caller named variant and EPT caps). */
  readonly detection: VmfuncDetection | undefined;
  /** Builder options the CPU requires (execute-only EPT entries, EPTP A/D). */
  readonly contextOptions: { executeOnly: boolean; accessDirty: boolean };
  readonly #timeoutMs: number;

  /** Throws BackendUnavailableError (with the reason) when the host cannot run it. */
  constructor(options: VmfuncBackendOptions = {}) {
    let detection: VmfuncDetection | undefined;
    if (options.variant === undefined || options.eptCaps === undefined) {
      detection = detectVmfunc();
      if (!detection.available) throw new BackendUnavailableError(`the vmfunc backend cannot run here: ${detection.reason}`);
    }
    this.detection = detection;
    this.variant = options.variant ?? detection!.variant!;
    const caps = options.eptCaps ?? detection?.eptCaps ?? { executeOnly: false, accessDirty: false };
    this.contextOptions = { executeOnly: caps.executeOnly, accessDirty: caps.accessDirty };
    this.#timeoutMs = options.timeoutMs ?? 10_000;
  }

  /**
   * Prepares manager memory: a manager VM maps `memory` at `base` and resolves the HPA
   * of every page (all of them are pinned by the kernel from now on).
   */
  createManagerAllocator(memory: GuestMemory, pages: number, base: bigint): HostPhysicalArena {
    const vm = ManagerVm.create(memory, base, { variant: this.variant, timeoutMs: this.#timeoutMs });
    try {
      return new HostPhysicalArena(memory, pages, vm, vm.resolveArena(0, pages));
    } catch (err) {
      vm.dispose();
      throw err;
    }
  }

  /** Performs the handshake for the guest's vCPU 0; from then on its VMFUNCs run in hardware. */
  attach(machine: ElisaGuest, contexts: ElisaContexts, manager: ManagerMemory, options: AttachOptions = {}): BackendAttachment {
    const arena = manager.allocator;
    if (!(arena instanceof HostPhysicalArena)) {
      throw new BackendUnavailableError('the manager memory has no host-physical addresses: create the manager with ElisaManager.create({ backend }) for the vmfunc backend');
    }
    if (arena.managerVm.disposed) throw new VmfuncAttachError('the manager VM was disposed');
    if (options.simulateUdHost) throw new RangeError('simulateUdHost is a test option of the emulated backend; the vmfunc backend runs on the real CPU');
    const mgr = arena.managerVm;
    const vcpu = machine.vcpu;
    const mem = machine.memory.bytes();
    // The stub runs in the middle page of the gate region: guest RAM, identity mapped and
    // unused in the default context (the host fills the gate pages after attach).
    const stubAt = Number(contexts.gva);
    const savedBytes = mem.slice(stubAt, stubAt + 16);
    const savedRegs = vcpu.getRegs();
    const listHpa = contexts.eptpList.page.address;
    const guestCall = (call: Parameters<typeof hypercallOn>[3], what: string): bigint => {
      const r = hypercallOn(vcpu, mem, stubAt, call, this.#timeoutMs);
      const err = hypercallError(r);
      if (err) throw new VmfuncAttachError(`guest ${machine.name}: ${what} failed: ${err}`);
      return r;
    };
    let token: bigint | undefined;
    const negotiate = (): bigint => {
      const id = guestCall(ElisaCall.vcpuId(), '1001/3/1 (vCPU id)');
      token = id;
      mgr.callOk(ElisaCall.setRendezvousVcpu(id), '1001/2/1 (rendezvous vCPU)');
      const listAddress = this.variant === 'hardened' ? arena.gpaOf(listHpa) : listHpa;
      mgr.callOk(ElisaCall.setRendezvousList(listAddress), `1001/2/2 (EPTP list ${this.variant === 'hardened' ? 'GPA' : 'HPA'} 0x${listAddress.toString(16)})`);
      guestCall(ElisaCall.activate(), '1001/3/2 (activate)');
      return id;
    };
    try {
      // compat: one host-wide rendezvous, so at most one negotiation at a time.
      token = this.variant === 'compat' ? withRendezvousLock(negotiate) : negotiate();
    } catch (err) {
      if (this.variant === 'hardened' && token !== undefined && !mgr.disposed) {
        try { mgr.call(ElisaCall.revoke(token)); } catch { /* the original error matters more */ }
      }
      throw err instanceof HypercallError || err instanceof VmfuncAttachError ? err
        : new VmfuncAttachError(`handshake failed: ${err instanceof Error ? err.message : String(err)}`);
    } finally {
      // Safe: the same 16 bytes of guest RAM that were saved above.
      mem.set(savedBytes, stubAt);
      vcpu.setRegs(savedRegs);
    }
    // The compat patch's activation says nothing when the rendezvous did not match: slot 0
    // is the only witness that the host wrote the list.
    // compat pins the list forever and its VMCS may point there now: never reuse the page.
    if (this.variant === 'compat') arena.quarantine(listHpa);
    const slot0 = contexts.eptpList.get(0);
    let bad: string | undefined;
    if (slot0 === 0n) bad = `activation did not take: slot 0 of the EPTP list (HPA 0x${listHpa.toString(16)}) is still empty`;
    else {
      try { decodeEptp(slot0); } catch (err) { bad = `activation wrote an invalid EPTP into slot 0: ${(err as Error).message}`; }
    }
    if (bad !== undefined) {
      // Undo what may have been switched on: no VMFUNC of this guest may reach these contexts.
      if (this.variant === 'hardened') { try { mgr.call(ElisaCall.revoke(token!)); } catch { /* reported below */ } }
      contexts.eptpList.page.bytes.fill(0);
      throw new VmfuncAttachError(bad);
    }
    return new VmfuncAttachment(this.variant, mgr, contexts, token!, slot0);
  }
}

/** An activated guest vCPU. */
class VmfuncAttachment implements BackendAttachment {
  readonly backend = 'vmfunc' as const;
  /** Hardware switches are not observable without exits: the counters stay zero. */
  readonly stats: AttachmentStats = { switchesTo: { default: 0, gate: 0, sub: 0 }, failures: [], aptMoves: 0, stateMoves: { sregs: 0, events: 0 } };
  /** The guest's vCPU is only seen between runs, back in its default context. */
  readonly currentContext = 'default';
  readonly variant: ElisaVariant;
  /** The id/token of the guest vCPU. */
  readonly token: bigint;
  /** The EPTP the host wrote into slot 0 at activation (the guest's own EPT). */
  readonly defaultEptp: bigint;
  readonly #manager: ManagerVm;
  readonly #contexts: ElisaContexts;
  #disposed = false;

  constructor(variant: ElisaVariant, manager: ManagerVm, contexts: ElisaContexts, token: bigint, defaultEptp: bigint) {
    this.variant = variant; this.#manager = manager; this.#contexts = contexts; this.token = token; this.defaultEptp = defaultEptp;
  }

  /**
   * Ends the attachment: hardened revokes the binding (the vCPU switches VMFUNC off before
   * its next entry); both clear the EPTP list, so any later VMFUNC of the guest fails and
   * KVM injects #UD.
   */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    if (this.variant === 'hardened' && !this.#manager.disposed) {
      try { this.#manager.call(ElisaCall.revoke(this.token)); } catch { /* manager VM unusable: its destruction revokes too */ }
    }
    // Safe: the list page is manager memory that stays mapped until the manager is disposed,
    // which disposes its attachments (this) first.
    try { this.#contexts.eptpList.page.bytes.fill(0); } catch { /* memory already gone */ }
  }

  [Symbol.dispose](): void { this.dispose(); }
}
