// The manager VM of the vmfunc backend (host mode). The ELISA hypercalls that build
// contexts (GPA→HPA, rendezvous) must come from a vCPU of a VM that owns the memory:
// this small VM maps the manager arena (the memfd the context pages come from) at
// arenaGpa and runs one-instruction stubs (./stub.ts) on the host's behalf. Under the
// hardened variant the host designates it a manager with KVM_ENABLE_CAP; its lifetime
// bounds every attachment made from it (destroying it revokes them in the kernel).
import type { GuestMemory } from '../../../kvm';
import { native } from '../../../kvm/native';
import { GuestMachine as X86Machine } from '../../../x86/machine';
import { PAGE_SIZE } from '../../memory';
import { ElisaCall, hypercallError, KVM_CAP_ELISA_MANAGER, type ElisaVariant, type Hypercall } from './abi';
import { BATCH_GPA_TO_HPA_STUB, HypercallError, hypercallOn, runStub } from './stub';

/** Where the stubs run in the manager VM (its program area, above the host structures). */
const STUB_GPA = 0x100000;
/** Result table of the batch GPA→HPA stub (identity-mapped manager RAM). */
const TABLE_GPA = 0x110000;
/** Pages resolved per batch run: the table must fit in the manager's 2 MiB of RAM. */
const BATCH_PAGES = 8192;
/** Memory slot of the arena in the manager VM (slot 0 is the manager's own RAM). */
const ARENA_SLOT = 1;

/** Options of ManagerVm.create. */
export interface ManagerVmOptions {
  /** The loaded ELISA variant (decides designation and the list's address space). */
  variant: ElisaVariant;
  /** Bound on each stub run in ms (a VMCALL the host does not serve never returns). */
  timeoutMs: number;
}

/** A VM that owns the manager arena and executes manager hypercalls. */
export class ManagerVm implements Disposable {
  readonly #machine: X86Machine;
  /** The loaded ELISA variant this VM was set up for. */
  readonly variant: ElisaVariant;
  /** Guest-physical address of arena page 0 in this VM. */
  readonly arenaGpa: bigint;
  readonly #timeoutMs: number;
  #disposed = false;

  private constructor(machine: X86Machine, variant: ElisaVariant, arenaGpa: bigint, timeoutMs: number) {
    this.#machine = machine;
    this.variant = variant;
    this.arenaGpa = arenaGpa;
    this.#timeoutMs = timeoutMs;
  }

  /**
   * Creates the VM (2 MiB of its own RAM, one long-mode vCPU), maps `arena` at
   * `arenaGpa` and, under the hardened variant, designates it a manager.
   */
  static create(arena: GuestMemory, arenaGpa: bigint, options: ManagerVmOptions): ManagerVm {
    const machine = X86Machine.create({ memory: '2M' });
    try {
      machine.vm.setUserMemoryRegion({ slot: ARENA_SLOT, guestPhysAddr: arenaGpa, memory: arena });
      if (options.variant === 'hardened') {
        // KVM_ENABLE_CAP with the patch's own capability number, which our Cap enum does
        // not list (it is not upstream); args[0] = 1 asks for manager status.
        try {
          native.enableCap(machine.vm.fd, KVM_CAP_ELISA_MANAGER, 0, BigUint64Array.of(1n, 0n, 0n, 0n));
        } catch (err) {
          const msg = err instanceof Error ? err.message : String(err);
          const hint = /EPERM/.test(msg) ? 'the hardened kvm_intel gives manager VMs only to processes with CAP_SYS_RAWIO'
            : /EINVAL/.test(msg) ? 'the loaded kvm_intel does not know the capability: it is not the hardened ELISA variant' : '';
          throw new Error(`cannot designate the manager VM (KVM_ENABLE_CAP 0x${KVM_CAP_ELISA_MANAGER.toString(16)}): ${msg}${hint ? ` (${hint})` : ''}`);
        }
      }
      return new ManagerVm(machine, options.variant, arenaGpa, options.timeoutMs);
    } catch (err) {
      machine.dispose();
      throw err;
    }
  }

  /** KVM's VM (for statistics). */
  get vm() { return this.#machine.vm; }

  /** True once disposed. */
  get disposed(): boolean { return this.#disposed; }

  /** Executes one hypercall on the manager's vCPU; returns RAX. */
  call(call: Hypercall): bigint {
    this.#check();
    return hypercallOn(this.#machine.vcpu, this.#machine.bytes, STUB_GPA, call, this.#timeoutMs);
  }

  /** Executes `call`, which must return 0; throws naming it and the error otherwise. */
  callOk(call: Hypercall, what: string): void {
    const r = this.call(call);
    if (r !== 0n) throw new HypercallError(`manager VM: ${what} failed: ${hypercallError(r) ?? `returned 0x${r.toString(16)}`}`);
  }

  /**
   * Host-physical addresses of arena pages [first, first + count): GPA→HPA (1000/3/1) of
   * each, in batches run in-guest. Every page is pinned by the kernel (compat: until
   * kvm_intel is unloaded; hardened: until this VM and the guests bound to it are gone).
   */
  resolveArena(first: number, count: number): bigint[] {
    this.#check();
    const out: bigint[] = [];
    const bytes = this.#machine.bytes;
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (let done = 0; done < count; done += BATCH_PAGES) {
      const n = Math.min(BATCH_PAGES, count - done);
      const gpa = this.arenaGpa + BigInt((first + done) * PAGE_SIZE);
      runStub(this.#machine.vcpu, bytes, STUB_GPA, BATCH_GPA_TO_HPA_STUB, { r8: gpa, r9: BigInt(n), r10: BigInt(TABLE_GPA) },
        this.#timeoutMs, `GPA→HPA of ${n} arena pages from 0x${gpa.toString(16)}`);
      for (let i = 0; i < n; i++) {
        // Safe: TABLE_GPA + 8 * BATCH_PAGES = 0x120000 lies inside the 2 MiB of RAM.
        const hpa = view.getBigUint64(TABLE_GPA + 8 * i, true);
        const err = hypercallError(hpa);
        if (err !== undefined || hpa === 0n || hpa % BigInt(PAGE_SIZE) !== 0n) {
          const page = gpa + BigInt(i * PAGE_SIZE);
          throw new HypercallError(`manager VM: GPA→HPA of arena page 0x${page.toString(16)} returned ${err ?? `0x${hpa.toString(16)} (not a page address)`}`);
        }
        out.push(hpa);
      }
    }
    return out;
  }

  /** Destroys the VM (hardened: the kernel revokes every binding made from it). Idempotent. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#machine.dispose();
  }

  [Symbol.dispose](): void { this.dispose(); }

  #check(): void {
    if (this.#disposed) throw new Error('the manager VM was disposed');
  }
}

export { ElisaCall };
