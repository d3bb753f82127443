// A KVM virtual machine fd (rust-vmm's `VmFd`): memory slots, vCPUs, VM-wide
// capabilities. Memory slots are validated here, before the ioctl, so a mistake
// is reported as what it is (alignment, overlap, size) instead of a bare EINVAL.
import { Cap, capName, checkCapArgument } from './cap';
import { MemoryRegionFlag, PAGE_SIZE } from './constants';
import { DisposedError, KvmError } from './errors';
import type { GuestMemory, MemoryUser } from './memory';
import { native } from './native';
import type { Kvm } from './system';
import { Vcpu } from './vcpu';

/** Options of Kvm.createVm. */
export interface VmOptions {
  /** KVM_CREATE_VM machine type; 0 (default) is the standard x86 VM. */
  type?: number;
}

/** Arguments of Vm.setUserMemoryRegion. */
export interface MemoryRegion {
  /** Slot number, 0 <= slot < KVM_CAP_NR_MEMSLOTS. */
  slot: number;
  /** Guest-physical address of the first byte (page aligned). */
  guestPhysAddr: bigint | number;
  /** Host memory backing the slot. */
  memory: GuestMemory;
  /** Byte offset into `memory` (page aligned); default 0. */
  offset?: number;
  /** Bytes (page multiple, > 0); default: the rest of `memory` after `offset`. */
  size?: number;
  /** Guest writes become MMIO exits (KVM_MEM_READONLY). */
  readonly?: boolean;
  /** Track written pages for getDirtyLog (KVM_MEM_LOG_DIRTY_PAGES). */
  logDirtyPages?: boolean;
}

/** A slot as the VM holds it. */
export interface MemoryRegionInfo {
  slot: number;
  guestPhysAddr: bigint;
  size: number;
  memory: GuestMemory;
  offset: number;
  readonly: boolean;
  logDirtyPages: boolean;
}

let nextVmNumber = 1;
const fdRegistry = new FinalizationRegistry<number>((fd) => { try { native.close(fd); } catch { /* gone */ } });

function hex(x: bigint | number): string { return `0x${x.toString(16)}`; }

function toGpa(x: bigint | number): bigint {
  if (typeof x === 'number') {
    if (!Number.isSafeInteger(x) || x < 0) throw new RangeError(`guestPhysAddr must be a non-negative integer, got ${x}`);
    return BigInt(x);
  }
  if (typeof x !== 'bigint' || x < 0n) throw new RangeError(`guestPhysAddr must be a non-negative integer, got ${String(x)}`);
  return x;
}

/** A virtual machine. Disposing it disposes its vCPUs and releases its slots. */
export class Vm implements Disposable, MemoryUser {
  #fd: number;
  readonly #onDispose: () => void;
  readonly #slots = new Map<number, MemoryRegionInfo>();
  readonly #vcpus = new Map<number, Vcpu>();
  /** Every id ever created: KVM keeps a vCPU until the VM is destroyed, even after its fd is closed. */
  readonly #usedVcpuIds = new Set<number>();
  #maxSlots = 0;
  /** Process-wide number of this VM, for messages ("Vm 3"). */
  readonly number = nextVmNumber++;

  /** @internal Use Kvm.createVm. */
  constructor(readonly kvm: Kvm, fd: number, onDispose: () => void) {
    this.#fd = fd;
    this.#onDispose = onDispose;
    fdRegistry.register(this, fd, this);
  }

  /** The VM fd. Owned by this object. */
  get fd(): number {
    if (this.#fd < 0) throw new DisposedError(`Vm ${this.number}`);
    return this.#fd;
  }

  /** True once dispose() ran. */
  get disposed(): boolean { return this.#fd < 0; }

  /** KVM_CHECK_EXTENSION on the VM fd (per-VM answers, e.g. for protected VM types). */
  checkExtension(cap: Cap): number {
    checkCapArgument(cap);
    return native.checkExtension(this.fd, cap);
  }

  /** KVM_ENABLE_CAP on the VM fd. */
  enableCap(cap: Cap, args: readonly (bigint | number)[] = [], flags = 0): void {
    checkCapArgument(cap);
    if (args.length > 4) throw new RangeError(`KVM_ENABLE_CAP takes at most 4 arguments, got ${args.length}`);
    const a = new BigUint64Array(4);
    args.forEach((x, i) => { a[i] = BigInt(x); });
    native.enableCap(this.fd, cap, flags, a);
  }

  /** Number of memory slots KVM allows (KVM_CAP_NR_MEMSLOTS). */
  get maxMemorySlots(): number {
    if (this.#maxSlots === 0) this.#maxSlots = this.kvm.checkExtension(Cap.NR_MEMSLOTS);
    return this.#maxSlots;
  }

  /** The slots currently set, sorted by guest-physical address. */
  get memoryRegions(): readonly MemoryRegionInfo[] {
    return [...this.#slots.values()].sort((a, b) => (a.guestPhysAddr < b.guestPhysAddr ? -1 : 1));
  }

  /** @internal (MemoryUser) */
  describeSlot(slot: number): string {
    const r = this.#slots.get(slot);
    return r ? `Vm ${this.number} slot ${slot} (gpa ${hex(r.guestPhysAddr)}, ${r.size} bytes)` : `Vm ${this.number} slot ${slot}`;
  }

  /**
   * KVM_SET_USER_MEMORY_REGION: maps [offset, offset+size) of `memory` at
   * guest-physical `guestPhysAddr`. Refuses (naming the problem) unaligned or
   * empty ranges, ranges outside `memory`, overlaps with another slot, a slot
   * already in use (delete it first), and a read-only slot without
   * KVM_CAP_READONLY_MEM.
   */
  setUserMemoryRegion(region: MemoryRegion): void {
    const fd = this.fd;
    const { slot, memory } = region;
    const gpa = toGpa(region.guestPhysAddr);
    if (!Number.isInteger(slot) || slot < 0 || slot >= this.maxMemorySlots) {
      throw new RangeError(`memory slot ${slot} is out of range (0..${this.maxMemorySlots - 1})`);
    }
    if (this.#slots.has(slot)) throw new Error(`memory slot ${slot} is already in use (${this.describeSlot(slot)}): delete it first`);
    if (memory.disposed) throw new DisposedError(String(memory));
    const offset = region.offset ?? 0;
    if (!Number.isSafeInteger(offset) || offset < 0) throw new RangeError(`offset must be a non-negative integer, got ${offset}`);
    const size = region.size ?? memory.size - offset;
    if (!Number.isSafeInteger(size)) throw new RangeError(`size must be an integer, got ${size}`);
    if (size <= 0) throw new RangeError(`memory slot ${slot}: size must be > 0, got ${size} (use deleteMemoryRegion to remove a slot)`);
    if (size % PAGE_SIZE !== 0) throw new RangeError(`memory slot ${slot}: size ${hex(size)} is not a multiple of the page size (${PAGE_SIZE})`);
    if (gpa % BigInt(PAGE_SIZE) !== 0n) throw new RangeError(`memory slot ${slot}: guestPhysAddr ${hex(gpa)} is not page aligned`);
    if (offset % PAGE_SIZE !== 0) throw new RangeError(`memory slot ${slot}: offset ${hex(offset)} into the memory is not page aligned`);
    if (offset + size > memory.size) {
      throw new RangeError(`memory slot ${slot}: offset ${hex(offset)} + size ${hex(size)} exceeds ${memory} (${hex(memory.size)} bytes)`);
    }
    const end = gpa + BigInt(size);
    for (const other of this.#slots.values()) {
      const otherEnd = other.guestPhysAddr + BigInt(other.size);
      if (gpa < otherEnd && other.guestPhysAddr < end) {
        throw new RangeError(`memory slot ${slot} [${hex(gpa)}, ${hex(end)}) overlaps slot ${other.slot} [${hex(other.guestPhysAddr)}, ${hex(otherEnd)})`);
      }
    }
    if (region.readonly && this.checkExtension(Cap.READONLY_MEM) === 0) {
      throw new Error(`memory slot ${slot}: read-only slots need ${capName(Cap.READONLY_MEM)}, which this KVM lacks`);
    }
    const flags = (region.readonly ? MemoryRegionFlag.READONLY : 0) | (region.logDirtyPages ? MemoryRegionFlag.LOG_DIRTY_PAGES : 0);
    try {
      native.setUserMemoryRegion(fd, slot, flags, gpa, BigInt(size), memory.buffer, BigInt(offset));
    } catch (err) {
      if (err instanceof KvmError) throw new KvmError(err.ioctl, err.errno, `slot ${slot}, gpa ${hex(gpa)}, size ${hex(size)}, flags ${flags}`);
      throw err;
    }
    const info: MemoryRegionInfo = { slot, guestPhysAddr: gpa, size, memory, offset,
      readonly: region.readonly ?? false, logDirtyPages: region.logDirtyPages ?? false };
    this.#slots.set(slot, info);
    memory.attach(this, slot);
  }

  /** Deletes a slot (KVM_SET_USER_MEMORY_REGION with size 0). */
  deleteMemoryRegion(slot: number): void {
    const fd = this.fd;
    const r = this.#slots.get(slot);
    if (!r) throw new Error(`memory slot ${slot} of Vm ${this.number} is not in use`);
    native.setUserMemoryRegion(fd, slot, 0, r.guestPhysAddr, 0n, null, 0n);
    this.#slots.delete(slot);
    r.memory.detach(this, slot);
  }

  /**
   * KVM_GET_DIRTY_LOG: one bit per page of the slot (bit i of byte i/8 = page i
   * written since the last call), which KVM then clears.
   */
  getDirtyLog(slot: number): Uint8Array {
    const r = this.#slots.get(slot);
    if (!r) throw new Error(`memory slot ${slot} of Vm ${this.number} is not in use`);
    if (!r.logDirtyPages) throw new Error(`memory slot ${slot} was set without logDirtyPages: it has no dirty log`);
    const pages = r.size / PAGE_SIZE;
    const bitmap = new Uint8Array(Math.ceil(pages / 64) * 8);
    native.getDirtyLog(this.fd, slot, bitmap);
    return bitmap;
  }

  /** Indices of the pages of `slot` written since the last dirty-log read. */
  dirtyPages(slot: number): number[] {
    const bitmap = this.getDirtyLog(slot);
    const out: number[] = [];
    bitmap.forEach((byte, i) => { for (let b = 0; b < 8; b++) if (byte & (1 << b)) out.push(i * 8 + b); });
    return out;
  }

  /** KVM_SET_TSS_ADDR: three pages of guest-physical space KVM may use (Intel real mode). */
  setTssAddr(address: bigint | number): void { native.setTssAddr(this.fd, toGpa(address)); }

  /** KVM_SET_IDENTITY_MAP_ADDR: one page for the EPT identity map (Intel real mode). */
  setIdentityMapAddr(address: bigint | number): void { native.setIdentityMapAddr(this.fd, toGpa(address)); }

  /** The vCPUs created and not disposed, by id. */
  get vcpus(): readonly Vcpu[] { return [...this.#vcpus.values()]; }

  /** KVM_CREATE_VCPU with APIC id `id` (default: the lowest unused); maps its kvm_run. */
  createVcpu(id?: number): Vcpu {
    const fd = this.fd;
    if (id === undefined) for (id = 0; this.#usedVcpuIds.has(id);) id++;
    if (!Number.isInteger(id) || id < 0) throw new RangeError(`vCPU id must be a non-negative integer, got ${id}`);
    if (this.#vcpus.has(id)) throw new Error(`Vm ${this.number} already has a vCPU ${id}`);
    if (this.#usedVcpuIds.has(id)) {
      throw new Error(`Vm ${this.number} already created vCPU ${id} (disposed, but KVM keeps vCPUs until the VM is destroyed): use another id`);
    }
    const vcpuFd = native.createVcpu(fd, id);
    let vcpu: Vcpu;
    try {
      vcpu = new Vcpu(this, id, vcpuFd, () => this.#vcpus.delete(id));
    } catch (err) {
      native.close(vcpuFd);
      throw err;
    }
    this.#vcpus.set(id, vcpu);
    this.#usedVcpuIds.add(id);
    return vcpu;
  }

  /**
   * Disposes the vCPUs (interrupting and joining any runAsync in flight), releases
   * the slots' memory for disposal, closes the VM fd. Idempotent. The GuestMemory
   * objects are NOT disposed: they belong to the caller and may serve other VMs.
   */
  dispose(): void {
    if (this.#fd < 0) return;
    for (const vcpu of [...this.#vcpus.values()]) vcpu.dispose();
    for (const r of this.#slots.values()) r.memory.detach(this, r.slot);
    this.#slots.clear();
    fdRegistry.unregister(this);
    native.close(this.#fd);
    this.#fd = -1;
    this.#onDispose();
  }

  /** Same as dispose(), for `using`. */
  [Symbol.dispose](): void { this.dispose(); }
}
