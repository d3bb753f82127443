// The interface every ELISA backend implements, and how one is chosen. A backend takes
// built contexts (src/elisa/context.ts) and a guest vCPU and makes VMFUNC EPTP switching
// between the guest's own (default) context, the gate context and the sub context
// happen: in hardware (vmfunc) or by moving the vCPU between KVM VMs (emulated).
import { existsSync } from 'node:fs';
import type { ElisaContexts } from '../context';
import type { ArenaAllocator } from '../memory';
import type { GuestMemory } from '../../kvm';
import type { ElisaGuest } from '../host/machine';
import { detectVmfunc } from './vmfunc/availability';

/** Backend names, as `--backend` spells them. */
export type BackendName = 'emulated' | 'vmfunc';
/** What a user may ask for. */
export type BackendChoice = BackendName | 'auto';

/** Manager memory: the arena the context pages come from, and the KVM memory backing it. */
export interface ManagerMemory {
  readonly allocator: ArenaAllocator;
  /** The memfd-backed memory holding the arena (byte i = arena physical base + i). */
  readonly memory: GuestMemory;
}

/** One VMFUNC the backend carried out or refused. */
export interface VmfuncEvent {
  /** Context the VMFUNC executed in. */
  from: string;
  /** Context it switched to (undefined when it failed). */
  to?: string;
  /** Guest-virtual address of the VMFUNC. */
  rip: bigint;
  /**
   * How it was trapped: a rewritten site (port I/O), a foreign VMFUNC ending KVM_RUN as an
   * emulation failure, or a VMFUNC that raised #UD in the guest (reported by its IDT stubs).
   */
  trap: 'site' | 'foreign' | 'ud';
  /** Why it failed (#UD injected), if it did. */
  failure?: string;
}

/** Counters of an attachment. */
export interface AttachmentStats {
  /** Successful switches, by target context name. */
  switchesTo: Record<string, number>;
  /** VMFUNCs that failed (and raised #UD in the context that executed them). */
  failures: VmfuncEvent[];
  /** Times the APT slot moved because the guest's CR3 changed. */
  aptMoves: number;
  /** Switches that also had to load segment/control registers or event state (they differed). */
  stateMoves: { sregs: number; events: number };
}

/** A sub context attached to one guest vCPU, as a backend realises it. */
export interface BackendAttachment extends Disposable {
  /** The backend's name. */
  readonly backend: BackendName;
  /** Counters (live). */
  readonly stats: AttachmentStats;
  /** Name of the context the guest vCPU currently executes in ('default', 'gate', 'sub'). */
  readonly currentContext: string;
  /** Releases the context VMs; the guest keeps running in its default context. Idempotent. */
  dispose(): void;
}

/** Options every backend understands. */
export interface AttachOptions {
  /** Also move the FPU/SSE state (KVM_GET/SET_FPU) at every switch. Default false: see docs/backends.md. */
  moveFpu?: boolean;
  /** Record every VMFUNC in `trace` (slow; for tests). */
  trace?: VmfuncEvent[];
  /**
   * Tests only: behave like a host whose CPU raises #UD for VMFUNC (instead of ending
   * KVM_RUN with an emulation failure): a foreign VMFUNC's #UD is injected into the guest,
   * so its exception report reaches the backend's #UD path.
   */
  simulateUdHost?: boolean;
  /**
   * Carry out successful VMFUNCs of generated sites in the native loop
   * (native/addon/elisa_switch.cc) instead of JavaScript. Default true; `trace`, `timing`,
   * `moveFpu` and `simulateUdHost` always use the JavaScript loop.
   */
  nativeLoop?: boolean;
  /** Host-side timing (benchmarks): filled while the guest runs. */
  timing?: SwitchTiming;
}

/** Host-side timing of switches, measured with performance.now(). */
export interface SwitchTiming {
  /** Milliseconds from each VMFUNC leaving the default context to the default context running again. */
  trips: number[];
  /** Milliseconds the backend's own code took for each switch (from the trap exit to the next KVM_RUN). */
  handling: number[];
}

/** A backend. */
export interface Backend {
  readonly name: BackendName;
  /** Attaches `contexts` to the guest's vCPU 0: from now on its VMFUNCs switch contexts. */
  attach(machine: ElisaGuest, contexts: ElisaContexts, manager: ManagerMemory, options?: AttachOptions): BackendAttachment;
  /**
   * Backends whose contexts need manager memory of their own kind (vmfunc: pages that
   * carry host-physical addresses) create its allocator; the manager disposes it.
   */
  createManagerAllocator?(memory: GuestMemory, pages: number, base: bigint): ArenaAllocator & Disposable;
  /** Context-builder options the backend requires (e.g. what the CPU's EPT supports). */
  readonly contextOptions?: { executeOnly?: boolean; accessDirty?: boolean };
}

/** Whether a backend can run on this host, and why (not). */
export interface Availability {
  name: BackendName;
  available: boolean;
  reason: string;
}

/** How the hardware backend plugs in (it lives in its own module; see registerVmfuncBackend). */
export interface VmfuncProvider {
  /** Whether it can run on this host, and why (not). */
  availability(): Availability;
  /** A backend instance. */
  create(): Backend;
}

let vmfuncProvider: VmfuncProvider | undefined;

/** Registers the hardware (VMFUNC) backend so that `auto` and `--backend vmfunc` can pick it. */
export function registerVmfuncBackend(provider: VmfuncProvider | undefined): void { vmfuncProvider = provider; }

/** The registered hardware backend, if any. */
export function vmfuncBackend(): VmfuncProvider | undefined { return vmfuncProvider; }

/**
 * Whether the hardware backend can run here: it needs Intel VT-x with VMFUNC EPTP
 * switching exposed to KVM and the ELISA hypercalls in the host kernel (kernel-patch/).
 * A registered provider answers for itself; otherwise the CPU flags say why not.
 */
export function vmfuncAvailability(cpuinfo?: string): Availability {
  if (vmfuncProvider && cpuinfo === undefined) return vmfuncProvider.availability();
  // src/elisa/backends/vmfunc/availability.ts: CPU, VMFUNC MSRs, ELISA variant of kvm_intel.
  const d = detectVmfunc(cpuinfo === undefined ? {} : { cpuinfo });
  return { name: 'vmfunc', available: d.available, reason: d.reason };
}

/** The emulated backend runs wherever /dev/kvm does. */
export function emulatedAvailability(): Availability {
  const ok = existsSync('/dev/kvm');
  return { name: 'emulated', available: ok, reason: ok ? 'every KVM host can run it' : '/dev/kvm does not exist' };
}

/** Thrown when the requested backend cannot run here. */
export class BackendUnavailableError extends Error {
  override name = 'BackendUnavailableError';
}
