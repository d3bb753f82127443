// Manager memory whose pages carry host-physical addresses: the arena of ArenaAllocator
// (one memfd, mapped into Node and into the manager VM), with every page's HPA learnt
// through the manager VM (1000/3/1). The context builder then writes real HPAs into
// EPT entries, the EPTP list and EPTPs, exactly what the CPU walks after a VMFUNC.
//
// `base`/`end` keep their ArenaAllocator meaning (the arena's address in the VM that
// maps it: here the manager VM's GPA of page 0); page addresses are HPAs.
import type { GuestMemory } from '../../../kvm';
import { ArenaAllocator, PAGE_SIZE, PAGE_SIZE_N, type AllocatorStats, type PhysPage } from '../../memory';
import type { ManagerVm } from './manager-vm';

/** Arena pages addressed by their host-physical addresses. */
export class HostPhysicalArena extends ArenaAllocator implements Disposable {
  /** The VM that owns the arena and executes manager hypercalls. */
  readonly managerVm: ManagerVm;
  readonly #hpa: bigint[];
  readonly #index = new Map<bigint, number>();
  /** Pages never handed out again (a compat VMCS may still point at them). */
  readonly #quarantine = new Set<number>();
  #quarantinedFreed = 0;

  /**
   * @param memory the arena's memory (mapped in the manager VM at `managerVm.arenaGpa`)
   * @param pages pages in the arena
   * @param managerVm the VM that resolved `hpas`
   * @param hpas HPA of each arena page, in order
   */
  constructor(memory: GuestMemory, pages: number, managerVm: ManagerVm, hpas: readonly bigint[]) {
    super(pages, managerVm.arenaGpa, memory.buffer);
    if (hpas.length !== pages) throw new RangeError(`${hpas.length} host-physical addresses for ${pages} arena pages`);
    this.managerVm = managerVm;
    this.#hpa = [...hpas];
    this.#hpa.forEach((hpa, i) => {
      const other = this.#index.get(hpa);
      if (other !== undefined) throw new Error(`arena pages ${other} and ${i} report the same host-physical address 0x${hpa.toString(16)}`);
      this.#index.set(hpa, i);
    });
  }

  /** Host-physical address of arena page `index`. */
  hpaOfIndex(index: number): bigint {
    const hpa = this.#hpa[index];
    if (hpa === undefined) throw new RangeError(`arena page ${index} does not exist (${this.pageCount} pages)`);
    return hpa;
  }

  /** The manager VM's GPA of the page at host-physical `hpa` (hardened: the EPTP list is named by GPA). */
  gpaOf(hpa: bigint): bigint {
    return this.base + BigInt(this.#indexOf(hpa)) * PAGE_SIZE_N;
  }

  override allocate(): PhysPage {
    const page = super.allocate();
    return { address: this.#hpa[this.#arenaIndex(page.address)]!, bytes: page.bytes };
  }

  override free(page: PhysPage): void {
    const index = this.#indexOf(page.address);
    if (this.#quarantine.has(index)) {
      // Counted as freed, never reused: a compat guest's VMCS may still name it.
      if (!super.isAllocated(this.base + BigInt(index) * PAGE_SIZE_N)) throw new Error(`page 0x${page.address.toString(16)} freed twice`);
      this.#quarantine.delete(index);
      this.#quarantinedFreed++;
      this.#retired.add(index);
      return;
    }
    if (this.#retired.has(index)) throw new Error(`page 0x${page.address.toString(16)} freed twice`);
    super.free({ address: this.base + BigInt(index) * PAGE_SIZE_N, bytes: page.bytes });
  }

  readonly #retired = new Set<number>();

  override pageAt(address: bigint): Uint8Array | undefined {
    const index = this.#index.get(address);
    return index === undefined ? undefined : super.pageAt(this.base + BigInt(index) * PAGE_SIZE_N);
  }

  override isAllocated(address: bigint): boolean {
    const index = this.#index.get(address);
    if (index === undefined || this.#retired.has(index)) return false;
    return super.isAllocated(this.base + BigInt(index) * PAGE_SIZE_N);
  }

  override stats(): AllocatorStats {
    const s = super.stats();
    return { allocated: s.allocated, freed: s.freed + this.#quarantinedFreed, inUse: s.inUse - this.#quarantinedFreed };
  }

  /** Marks an allocated page so that freeing it retires it instead of returning it to the pool. */
  quarantine(hpa: bigint): void {
    const index = this.#indexOf(hpa);
    if (!super.isAllocated(this.base + BigInt(index) * PAGE_SIZE_N)) throw new Error(`page 0x${hpa.toString(16)} is not allocated`);
    this.#quarantine.add(index);
  }

  /** Pages retired by quarantine so far. */
  get retiredPages(): number { return this.#retired.size; }

  /** Destroys the manager VM (the arena memory belongs to the caller). */
  dispose(): void { this.managerVm.dispose(); }

  [Symbol.dispose](): void { this.dispose(); }

  #indexOf(hpa: bigint): number {
    const index = this.#index.get(hpa);
    if (index === undefined) throw new RangeError(`page 0x${hpa.toString(16)} does not belong to this arena`);
    return index;
  }

  #arenaIndex(arenaAddress: bigint): number {
    return Number((arenaAddress - this.base) / BigInt(PAGE_SIZE));
  }
}
