// Host mode: the Node process is the VMM and the ELISA manager. It creates guest VMs
// (src/elisa/host/machine.ts), owns the manager memory (an arena of pages in one memfd
// that the context builder allocates from), loads sub-context programs into that
// memory, builds the gate and sub contexts for a guest vCPU, writes the gate entry
// pages into the region the guest program reserves, and hands the contexts to a
// backend, which makes the guest's VMFUNCs switch between them.
//
//   const manager = ElisaManager.create();
//   const guest = ElisaGuest.create('nop');                     // native/guest/out/nop.elf
//   const att = manager.attach(guest, { program: 'sub/nop' });    // native/guest/out/sub/nop.elf
//   guest.run();                                                  // prints "nop returned 1"
//   guest.dispose(); manager.dispose();
import { readFileSync } from 'node:fs';
import { GuestMemory } from '../kvm';
import { parseElf, ElfError, type ElfImage } from '../x86/elf';
import { GUEST_RESERVED_END } from '../x86/layout';
import { guestProgramPath } from '../x86/programs';
import { hex } from './address';
import { EmulatedBackend } from './backends/emulated';
import { VmfuncBackend } from './backends/vmfunc';
import {
  BackendUnavailableError, emulatedAvailability, vmfuncAvailability, vmfuncBackend,
  type AttachmentStats, type AttachOptions, type Availability, type Backend, type BackendAttachment, type BackendChoice,
  type ManagerMemory, type VmfuncEvent,
} from './backends/backend';
import { buildContexts, type ElisaContexts } from './context';
import type { MapRequest } from './mapreq';
import { ArenaAllocator, PAGE_SIZE, PAGE_SIZE_N, type PhysPage } from './memory';
import type { ElisaGuest } from './host/machine';

export { ElisaGuest, type ElisaGuestOptions, type ElisaRunOptions, type ElisaRunResult } from './host/machine';

/** Where the manager arena appears as "host-physical" memory in EPT entries: 32 GiB, far above guest RAM. */
export const DEFAULT_ARENA_BASE = 1n << 35n;
/** Guest-physical base of the gate/sub pages in the gate and sub contexts (16 GiB). */
export const CONTEXT_BASE_GPA = 1n << 34n;
/** Guest-physical base of a sub program's pages in the sub context (64 MiB above CONTEXT_BASE_GPA). */
export const PROGRAM_BASE_GPA = CONTEXT_BASE_GPA + (64n << 20n);
/** Guest-physical base of shared pages in the sub context (128 MiB above CONTEXT_BASE_GPA). */
export const SHARED_BASE_GPA = CONTEXT_BASE_GPA + (128n << 20n);
/** Sub stack of host-mode attachments (libelisa uses 8 MiB; 64 KiB keeps the arena small). */
export const DEFAULT_SUB_STACK = 64n << 10n;
/**
 * Physical-address width the contexts are built for: KVM gives a vCPU without CPUID
 * a MAXPHYADDR of 36, so every GPA and table address must stay below 64 GiB.
 */
export const CONTEXT_MAXPHYADDR = 36;
/** Symbol of the 3-page gate region a guest program reserves (ELISA_GATE_DEFINE in elisa/gate.h). */
export const GATE_REGION_SYMBOL = 'elisa_gate_region';
/** Symbol of the variable the host fills with the gate entry's address. */
export const GATE_ENTRY_SYMBOL = 'elisa_gate_entry_gva';
/** Default entry function of a sub program. */
export const DEFAULT_SUB_ENTRY = 'elisa_sub_entry';

/** A bad attach request (the message says what to change). */
export class AttachError extends Error {
  override name = 'AttachError';
}

/** Options of ElisaManager.create. */
export interface ManagerOptions {
  /** Pages of manager memory (default 4096 = 16 MiB). */
  arenaPages?: number;
  /** The arena's physical base as EPT entries see it (default 32 GiB). */
  arenaBase?: bigint;
  /** The backend the manager's attachments use (default: selectBackend('auto')); vmfunc prepares the memory its own way. */
  backend?: Backend;
}

/** Pages of manager memory that can be mapped into several sub contexts. */
export interface SharedPages extends Disposable {
  readonly pages: readonly PhysPage[];
  /** Attachments that map these pages now (dispose refuses while there are any). */
  readonly users: number;
  /** The bytes of page `i` (host view of what the sub contexts see). */
  bytes(i?: number): Uint8Array;
  /** Returns the pages to the arena (after every attachment using them is gone). */
  dispose(): void;
}

/** A shared mapping requested for a sub context. */
export interface SharedMapping {
  shared: SharedPages;
  /** Page-aligned GVA in the sub context. */
  gva: bigint;
  /** Map read-only (default false). */
  readonly?: boolean;
}

/** What to attach. */
export interface AttachRequest extends AttachOptions {
  /** The sub program: a name under native/guest/out ('sub/nop'), a path, or ELF bytes. */
  program: string | Uint8Array;
  /** The entry function's symbol (default elisa_sub_entry). */
  entry?: string;
  /** Shared pages to map into the sub context. */
  shared?: readonly SharedMapping[];
  /** GVA of the 3-page gate region (top page); default: the program's elisa_gate_region. */
  gateRegion?: bigint;
  /** Sub stack bytes (default 64 KiB). */
  subStackSize?: bigint;
  /** Backend (default: chosen by selectBackend('auto')). */
  backend?: Backend;
}

/** A sub context attached to a guest vCPU. */
export interface Attachment extends Disposable {
  /** The built contexts (tables, EPTs, EPTP list, code pages). */
  readonly contexts: ElisaContexts;
  /** GVA the guest calls (written into elisa_gate_entry_gva). */
  readonly entryGva: bigint;
  /** GVA of the sub program's entry function. */
  readonly subEntry: bigint;
  /** The backend's name. */
  readonly backend: string;
  /** Switch counters and refused VMFUNCs. */
  readonly stats: AttachmentStats;
  /** Context the guest vCPU is in now. */
  readonly currentContext: string;
  /** Frees the contexts, their VMs and the program pages; clears the guest's gate region. Idempotent. */
  dispose(): void;
}

/** Picks a backend: 'auto' takes vmfunc when it is available, else emulated. */
export function selectBackend(choice: BackendChoice = 'auto'): { backend: Backend; why: string; availability: Availability[] } {
  const vmfunc = vmfuncAvailability();
  const emulated = emulatedAvailability();
  const availability = [vmfunc, emulated];
  if (choice !== 'auto' && choice !== 'emulated' && choice !== 'vmfunc') {
    throw new BackendUnavailableError(`unknown backend '${String(choice)}' (auto, emulated or vmfunc)`);
  }
  if (choice === 'vmfunc' || (choice === 'auto' && vmfunc.available)) {
    if (!vmfunc.available) throw new BackendUnavailableError(`the vmfunc backend cannot run here: ${vmfunc.reason}`);
    // A registered provider (tests, other hardware backends) takes precedence over the built-in one.
    const backend = vmfuncBackend()?.create() ?? new VmfuncBackend();
    return { backend, why: choice === 'vmfunc' ? 'requested with --backend vmfunc' : `VMFUNC available: ${vmfunc.reason}`, availability };
  }
  if (!emulated.available) throw new BackendUnavailableError(`the emulated backend cannot run here: ${emulated.reason}`);
  const why = choice === 'emulated' ? 'requested with --backend emulated' : `vmfunc unavailable: ${vmfunc.reason}`;
  return { backend: new EmulatedBackend(), why, availability };
}

function loadProgram(program: string | Uint8Array): { file: Uint8Array; image: ElfImage; name: string } {
  const name = typeof program === 'string' ? program : 'sub program';
  let file: Uint8Array;
  try {
    file = typeof program === 'string' ? readFileSync(program.startsWith('/') || program.startsWith('.') ? program : guestProgramPath(program)) : program;
  } catch (err) { throw new AttachError(`cannot read the sub program: ${err instanceof Error ? err.message : String(err)}`); }
  try {
    return { file, image: parseElf(file, name), name };
  } catch (err) {
    if (err instanceof ElfError) throw new AttachError(`sub program ${name}: ${err.message}`);
    throw err;
  }
}

/** The ELISA manager of host mode: manager memory and the attachments built from it. */
export class ElisaManager implements Disposable, ManagerMemory {
  readonly memory: GuestMemory;
  readonly allocator: ArenaAllocator;
  /** The backend this manager's memory was prepared for (attachments default to it). */
  readonly backend: Backend;
  readonly #attachments = new Set<HostAttachment>();
  #disposed = false;

  private constructor(memory: GuestMemory, allocator: ArenaAllocator, backend: Backend) {
    this.memory = memory;
    this.allocator = allocator;
    this.backend = backend;
  }

  /** Creates the manager memory (a memfd, so KVM slots of many VMs can share its pages). */
  static create(options: ManagerOptions = {}): ElisaManager {
    const pages = options.arenaPages ?? 4096;
    const base = options.arenaBase ?? DEFAULT_ARENA_BASE;
    if (!Number.isSafeInteger(pages) || pages <= 0) throw new RangeError(`arenaPages must be a positive integer, got ${pages}`);
    if (base + BigInt(pages) * PAGE_SIZE_N > 1n << BigInt(CONTEXT_MAXPHYADDR)) {
      throw new RangeError(`the arena [${hex(base)}, +${pages} pages) must end below 2^${CONTEXT_MAXPHYADDR} (the MAXPHYADDR of context vCPUs)`);
    }
    const backend = options.backend ?? selectBackend('auto').backend;
    const memory = GuestMemory.memfd(pages * PAGE_SIZE, { name: 'elisa-manager' });
    try {
      const allocator = backend.createManagerAllocator?.(memory, pages, base) ?? new ArenaAllocator(pages, base, memory.buffer);
      return new ElisaManager(memory, allocator, backend);
    } catch (err) {
      memory.dispose();
      throw err;
    }
  }

  /** Allocates `count` zeroed pages that attachments can map (e.g. a shared counter). */
  allocateShared(count = 1): SharedPages {
    const pages: PhysPage[] = [];
    try {
      for (let i = 0; i < count; i++) pages.push(this.allocator.allocate());
    } catch (err) {
      for (const p of pages) this.allocator.free(p);
      throw err;
    }
    let freed = false;
    const allocator = this.allocator;
    const shared = {
      pages,
      users: 0,
      bytes: (i = 0) => { if (freed) throw new Error('shared pages were disposed'); return pages[i]!.bytes; },
      dispose() {
        if (freed) return;
        // Freed pages would be handed out again while sub contexts still map them.
        if (shared.users > 0) throw new Error(`shared pages are still mapped by ${shared.users} attachment(s): dispose those first`);
        freed = true;
        for (const p of pages) allocator.free(p);
      },
      [Symbol.dispose]() { this.dispose(); },
    };
    sharedState.set(shared, () => freed);
    return shared;
  }

  /**
   * Attaches a sub context running `request.program` to the guest's vCPU 0. Call before
   * guest.run(); the guest then enters it with elisa_gate_entry(a0..a5).
   */
  attach(guest: ElisaGuest, request: AttachRequest): Attachment {
    if (this.#disposed) throw new AttachError('the manager was disposed');
    const att = new HostAttachment(this, guest, request, () => this.#attachments.delete(att));
    this.#attachments.add(att);
    return att;
  }

  /** Disposes every attachment and the manager memory. Guests stay usable in their default context. */
  dispose(): void {
    if (this.#disposed) return;
    for (const a of [...this.#attachments]) a.dispose();
    this.#disposed = true;
    // A backend-made allocator (vmfunc: the manager VM) goes before the memory it maps.
    const own = this.allocator as Partial<Disposable>;
    if (typeof own[Symbol.dispose] === 'function') own[Symbol.dispose]!();
    this.memory.dispose();
  }

  [Symbol.dispose](): void { this.dispose(); }
}

const attached = new WeakMap<ElisaGuest, HostAttachment>();
/** Whether SharedPages made by a manager were freed (so attach can refuse them). */
const sharedState = new WeakMap<object, () => boolean>();

class HostAttachment implements Attachment {
  readonly contexts: ElisaContexts;
  readonly entryGva: bigint;
  readonly subEntry: bigint;
  readonly #backend: BackendAttachment;
  readonly #guest: ElisaGuest;
  readonly #programPages: PhysPage[] = [];
  readonly #manager: ElisaManager;
  readonly #region: bigint;
  readonly #entryVar: bigint;
  readonly #onDispose: () => void;
  #shared: { users: number }[] = [];
  #disposed = false;

  constructor(manager: ElisaManager, guest: ElisaGuest, request: AttachRequest, onDispose: () => void) {
    this.#manager = manager;
    this.#guest = guest;
    this.#onDispose = onDispose;
    if (guest.memory.disposed) throw new AttachError(`guest ${guest.name} was disposed`);
    if (attached.has(guest)) {
      throw new AttachError(`guest ${guest.name}: vCPU 0 already has a sub context attached (one attachment per vCPU; dispose the first one)`);
    }
    // Where the gate region is, and that writing it cannot clobber the guest.
    const reserved = guest.image.symbols.get(GATE_REGION_SYMBOL);
    const entrySym = guest.image.symbols.get(GATE_ENTRY_SYMBOL);
    if (!entrySym) throw new AttachError(`guest program ${guest.name} has no '${GATE_ENTRY_SYMBOL}' variable: define the gate region with ELISA_GATE_DEFINE() (native/guest/include/elisa/gate.h)`);
    let region: bigint;
    if (request.gateRegion !== undefined) {
      region = request.gateRegion;
      if (typeof region !== 'bigint' || region < 0n) throw new AttachError(`gateRegion must be a non-negative bigint GVA, got ${String(region)}`);
      if (region % PAGE_SIZE_N !== 0n) throw new AttachError(`gate region GVA ${hex(region)} is not 4 KiB aligned (the gate needs three whole pages)`);
    } else {
      if (!reserved) throw new AttachError(`guest program ${guest.name} reserves no gate region ('${GATE_REGION_SYMBOL}'): use ELISA_GATE_DEFINE() or pass gateRegion`);
      region = BigInt(reserved.value);
      if (region % PAGE_SIZE_N !== 0n) throw new AttachError(`the program's ${GATE_REGION_SYMBOL} at ${hex(region)} is not 4 KiB aligned`);
    }
    const end = region + 3n * PAGE_SIZE_N;
    if (region < BigInt(GUEST_RESERVED_END)) throw new AttachError(`gate region [${hex(region)}, ${hex(end)}) overlaps the host-reserved first MiB of the guest (GDT, IDT, page tables)`);
    if (end > BigInt(guest.memory.size)) throw new AttachError(`gate region [${hex(region)}, ${hex(end)}) is outside the guest's identity-mapped RAM [0, ${hex(guest.memory.size)})`);
    const inReserved = reserved !== undefined && region >= BigInt(reserved.value) && end <= BigInt(reserved.value + Math.max(reserved.size, 3 * PAGE_SIZE));
    if (!inReserved) {
      for (const seg of guest.loaded) {
        if (region < BigInt(seg.end) && BigInt(seg.start) < end) {
          throw new AttachError(`gate region [${hex(region)}, ${hex(end)}) overlaps the guest's own mappings (program segment [${hex(seg.start)}, ${hex(seg.end)})); ` +
            `use the region the program reserves${reserved ? ` (${GATE_REGION_SYMBOL} at ${hex(reserved.value)})` : ''} or free guest memory`);
        }
      }
    }
    this.#region = region;
    this.#entryVar = BigInt(entrySym.value);

    // The sub program, in manager pages, mapped at its link addresses.
    const program = loadProgram(request.program);
    const entryName = request.entry ?? DEFAULT_SUB_ENTRY;
    const entrySymbol = program.image.symbols.get(entryName);
    if (!entrySymbol) throw new AttachError(`sub program ${program.name} has no symbol '${entryName}' (the entry function to call in the sub context)`);
    this.subEntry = BigInt(entrySymbol.value);
    const allocator = manager.allocator;
    let contexts: ElisaContexts | undefined;
    try {
      const maps: MapRequest[] = [];
      const pageOf = new Map<bigint, PhysPage>();
      for (const seg of program.image.segments) {
        if (seg.memsz === 0) continue;
        const first = BigInt(seg.vaddr) & ~(PAGE_SIZE_N - 1n);
        const last = (BigInt(seg.vaddr + seg.memsz) + PAGE_SIZE_N - 1n) & ~(PAGE_SIZE_N - 1n);
        for (let va = first; va < last; va += PAGE_SIZE_N) {
          if (pageOf.has(va)) continue;
          const page = allocator.allocate();
          this.#programPages.push(page);
          pageOf.set(va, page);
          maps.push({ name: `sub program page ${hex(va)}`, source: { physical: page.address }, gva: va,
            gpa: PROGRAM_BASE_GPA + BigInt(maps.length) * PAGE_SIZE_N, level: 1,
            pt: { writable: true }, ept: { read: true, write: true, execute: true, memoryType: 'WB' } });
        }
        // Safe: each copy stays inside one arena page (offsets computed per page below).
        for (let i = 0; i < seg.filesz; ) {
          const va = BigInt(seg.vaddr + i);
          const pageVa = va & ~(PAGE_SIZE_N - 1n);
          const off = Number(va - pageVa);
          const n = Math.min(PAGE_SIZE - off, seg.filesz - i);
          pageOf.get(pageVa)!.bytes.set(program.file.subarray(seg.offset + i, seg.offset + i + n), off);
          i += n;
        }
      }
      let sharedIndex = 0n;
      for (const s of request.shared ?? []) {
        const freed = sharedState.get(s.shared);
        if (!freed) throw new AttachError('shared pages must come from ElisaManager.allocateShared');
        if (freed()) throw new AttachError('shared pages were disposed');
        s.shared.pages.forEach((page, i) => {
          maps.push({ name: `shared page ${i} at ${hex(s.gva + BigInt(i) * PAGE_SIZE_N)}`, source: { physical: page.address },
            gva: s.gva + BigInt(i) * PAGE_SIZE_N, gpa: SHARED_BASE_GPA + sharedIndex++ * PAGE_SIZE_N, level: 1,
            pt: { writable: !s.readonly, noExecute: true }, ept: { read: true, write: !s.readonly, memoryType: 'WB' } });
        });
      }
      const backend = request.backend ?? manager.backend;
      try {
        contexts = buildContexts({
          allocator, gva: region + PAGE_SIZE_N, entry: this.subEntry, vcpu: 0n, maps, ptLevels: 4, eptLevels: 4,
          maxPhysAddr: CONTEXT_MAXPHYADDR, baseGpa: CONTEXT_BASE_GPA, subStackSize: request.subStackSize ?? DEFAULT_SUB_STACK,
          callerMode: 'supervisor', executeOnly: true, ...backend.contextOptions,
        });
      } catch (err) {
        throw new AttachError(`cannot build the contexts for ${program.name}: ${err instanceof Error ? err.message : String(err)}`);
      }
      this.contexts = contexts;
      this.entryGva = contexts.gateEntryGva!;
      this.#backend = backend.attach(guest, contexts, manager, request);
    } catch (err) {
      contexts?.destroy();
      for (const p of this.#programPages) allocator.free(p);
      throw err;
    }
    // The default-context pages (as the backend may have rewritten them) and the entry address.
    // Safe: the region was checked to lie inside guest RAM above.
    const mem = guest.memory.bytes();
    mem.set(contexts.defaultPages.top.bytes, Number(region));
    mem.fill(0, Number(region) + PAGE_SIZE, Number(region) + 2 * PAGE_SIZE);
    mem.set(contexts.defaultPages.bottom.bytes, Number(region) + 2 * PAGE_SIZE);
    new DataView(guest.memory.buffer).setBigUint64(Number(this.#entryVar), this.entryGva, true);
    attached.set(guest, this);
    this.#shared = (request.shared ?? []).map((s) => s.shared as { users: number });
    for (const s of this.#shared) s.users++;
    guest.onDispose(() => this.dispose());
  }

  get backend(): string { return this.#backend.backend; }
  get stats(): AttachmentStats { return this.#backend.stats; }
  get currentContext(): string { return this.#backend.currentContext; }

  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#backend.dispose();
    this.contexts.destroy();
    for (const s of this.#shared) s.users--;
    for (const p of this.#programPages) this.#manager.allocator.free(p);
    if (!this.#guest.memory.disposed) {
      this.#guest.memory.bytes(Number(this.#region), 3 * PAGE_SIZE).fill(0);
      new DataView(this.#guest.memory.buffer).setBigUint64(Number(this.#entryVar), 0n, true);
    }
    attached.delete(this.#guest);
    this.#onDispose();
  }

  [Symbol.dispose](): void { this.dispose(); }
}

export type { VmfuncEvent, AttachmentStats };
