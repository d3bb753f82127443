// KVM_CAP_SYNC_REGS: registers exchanged through kvm_run instead of ioctls.
// Before KVM_RUN, areas whose bit is in kvm_dirty_regs are loaded into the vCPU
// (and the bit cleared by KVM); at every return from KVM_RUN, areas whose bit is
// in kvm_valid_regs are stored into kvm_run. So with a request in place, reading
// registers after an exit and changing them before the next run costs no ioctl.
import { SyncRegs, SYNC_REGS_ALL } from './constants';
import { KvmRun, Sizeof } from './layout';
import {
  decodeRegs, decodeSregs, decodeVcpuEvents, encodeRegs, encodeSregs, encodeVcpuEvents,
  REG_NAMES, type Regs, type Sregs, type VcpuEvents,
} from './structs';

const REG_OFFSET = new Map<keyof Regs, number>(REG_NAMES.map((n, i) => [n, KvmRun.sync_regs + 8 * i]));

/** The synced register areas of one vCPU's kvm_run. Obtain it as `vcpu.sync`. */
export class SyncRegsView {
  #valid = 0;

  /**
   * @internal Created by Vcpu; `supported` is KVM_CHECK_EXTENSION(KVM_CAP_SYNC_REGS),
   * `isRunning` says whether KVM currently owns kvm_run (a runAsync in flight).
   */
  constructor(readonly view: DataView, readonly supported: number, private readonly owner: string,
    private readonly isRunning: () => boolean = () => false) {}

  #idle(): void {
    if (this.isRunning()) throw new Error(`${this.owner} is running (runAsync in flight): kvm_run's synced registers belong to KVM until the run ends`);
  }

  /** The areas KVM stores at each exit (kvm_run.kvm_valid_regs). */
  get requested(): number { return this.view.getUint32(KvmRun.kvm_valid_regs, true); } // every defined bit is in the low word

  /**
   * Asks KVM to store `mask` (SyncRegs bits) into kvm_run at every exit from now
   * on. Contents become valid after the next run.
   */
  request(mask: number): void {
    this.#idle();
    if ((mask & ~SYNC_REGS_ALL) !== 0 || (mask & ~this.supported) !== 0) {
      throw new RangeError(`${this.owner}: sync regs mask 0x${mask.toString(16)} not supported (KVM_CAP_SYNC_REGS = 0x${this.supported.toString(16)})`);
    }
    this.#valid &= mask;
    this.view.setBigUint64(KvmRun.kvm_valid_regs, BigInt(mask), true);
  }

  /** Areas that will be loaded into the vCPU at the next run (kvm_run.kvm_dirty_regs). */
  get dirty(): number { return this.view.getUint32(KvmRun.kvm_dirty_regs, true); }

  /** Areas whose kvm_run copy currently holds the vCPU's state (or a full value written by us). */
  get valid(): number { return this.#valid; }

  /** @internal Called after every KVM_RUN: KVM stored exactly the requested areas. */
  afterRun(): void { this.#valid = this.view.getUint32(KvmRun.kvm_valid_regs, true); } // no BigInt: runs on the hot path

  /** @internal The kvm_run copies now hold full values for `mask` (set by a whole-area write). */
  markValid(mask: number): void { this.#valid |= mask; }

  /** Marks areas to be loaded at the next run. They must be valid (else KVM would load stale bytes). */
  markDirty(mask: number): void {
    this.#idle();
    this.#requireValid(mask);
    this.view.setBigUint64(KvmRun.kvm_dirty_regs, BigInt(this.dirty | mask), true);
  }

  #requireValid(mask: number): void {
    this.#idle();
    const missing = mask & ~this.#valid;
    if (missing) {
      const names = [SyncRegs.REGS, SyncRegs.SREGS, SyncRegs.EVENTS].filter((b) => missing & b).map((b) => SyncRegs[b]);
      throw new Error(`${this.owner}: synced ${names.join('|')} not valid in kvm_run — request them (vcpu.sync.request) and run, or write the whole area first`);
    }
  }

  /** The general registers as stored at the last exit (or as written since). */
  get regs(): Regs { this.#requireValid(SyncRegs.REGS); return decodeRegs(this.view, KvmRun.sync_regs); }
  /** Writes all general registers into kvm_run and marks them dirty. */
  set regs(r: Regs) {
    encodeRegs(this.view, r, KvmRun.sync_regs);
    this.#valid |= SyncRegs.REGS;
    this.markDirty(SyncRegs.REGS);
  }

  /** One general register from the synced copy, without decoding the others. */
  getReg(name: keyof Regs): bigint {
    this.#requireValid(SyncRegs.REGS);
    return this.view.getBigUint64(REG_OFFSET.get(name) ?? badReg(name), true);
  }

  /** Changes one general register in the synced copy and marks REGS dirty. */
  setReg(name: keyof Regs, value: bigint): void {
    this.#requireValid(SyncRegs.REGS);
    this.view.setBigUint64(REG_OFFSET.get(name) ?? badReg(name), BigInt.asUintN(64, value), true);
    this.markDirty(SyncRegs.REGS);
  }

  /** Segment/control registers as stored at the last exit (or as written since). */
  get sregs(): Sregs { this.#requireValid(SyncRegs.SREGS); return decodeSregs(this.view, KvmRun.sync_sregs); }
  /** Writes the sregs into kvm_run and marks them dirty. */
  set sregs(s: Sregs) {
    encodeSregs(this.view, s, KvmRun.sync_sregs);
    this.#valid |= SyncRegs.SREGS;
    this.markDirty(SyncRegs.SREGS);
  }

  /** Event state as stored at the last exit (or as written since). */
  get events(): VcpuEvents { this.#requireValid(SyncRegs.EVENTS); return decodeVcpuEvents(this.view, KvmRun.sync_events); }
  /** Writes the events into kvm_run and marks them dirty. */
  set events(e: VcpuEvents) {
    encodeVcpuEvents(this.view, e, KvmRun.sync_events);
    this.#valid |= SyncRegs.EVENTS;
    this.markDirty(SyncRegs.EVENTS);
  }

  /** @internal Keeps a requested area coherent after an ioctl wrote the vCPU state. */
  writeThrough(area: SyncRegs, bytes: Uint8Array): void {
    if (!(this.requested & area)) return;
    const at = area === SyncRegs.REGS ? KvmRun.sync_regs : area === SyncRegs.SREGS ? KvmRun.sync_sregs : KvmRun.sync_events;
    const size = area === SyncRegs.REGS ? Sizeof.kvm_regs : area === SyncRegs.SREGS ? Sizeof.kvm_sregs : Sizeof.kvm_vcpu_events;
    new Uint8Array(this.view.buffer, this.view.byteOffset + at, size).set(bytes.subarray(0, size));
    this.#valid |= area;
  }

  /** @internal The pending (dirty) copy of an area, if any: what the vCPU will run with. */
  pending(area: SyncRegs): DataView | undefined {
    return (this.dirty & area) ? this.view : undefined;
  }
}

function badReg(name: string): never { throw new RangeError(`unknown register '${name}'`); }
