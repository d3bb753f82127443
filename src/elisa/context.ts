// The context builder: from a guest's requested GVA (the middle page), its vCPU, the
// application's map requests and entry point, it builds the gate and sub contexts (guest
// page tables, EPTs with APT, code pages, stacks, the EPTP list with slot 511 = gate) in
// pages from an allocator, and describes the result for the backends.

import {
  checkAligned, checkCanonical, checkWalkLevels, hex, leafSizeName, levelSize, linearBits, rangeIsCanonical,
  type LeafLevel, type WalkLevels,
} from './address';
import type { GateCodeGenerator, GateCodePages, VmfuncSite } from './codepages';
import { Ept, EptpList, GATE_SLOT } from './ept';
import { elisaGateCode } from './gatecode';
import type { EptFlags, PtFlags } from './flags';
import { resolveMapRequests, type MapRequest, type SourceResolver } from './mapreq';
import { OutOfMemoryError, PAGE_SIZE, PAGE_SIZE_N, type PageAllocator, type PhysPage } from './memory';
import { GuestPageTable } from './pagetable';
import { describeWalk, walk2d, type GuestWalk } from './walk';

/** libelisa's guest-physical base for gate and sub pages (256 GiB). */
export const DEFAULT_BASE_GPA = 1n << 38n;
/** libelisa's sub stack size. */
export const DEFAULT_SUB_STACK_SIZE = 8n << 20n;
/** Size of the GPA window for each context's guest page-table pages. */
export const TABLE_WINDOW = 1n << 30n;
/** The gate stack: one page (it only holds the RFLAGS pushed for the IF check). */
export const GATE_STACK_SIZE = PAGE_SIZE_N;

/** Everything the builder needs. */
export interface BuildOptions {
  /** Where the context pages and tables come from. */
  allocator: PageAllocator;
  /** Generates the four code pages. Default: the real gate code (src/elisa/gate.ts). */
  codeGenerator?: GateCodeGenerator;
  /** The requested GVA: the middle page (page aligned; top = gva − 4 KiB, bottom = gva + 4 KiB). */
  gva: bigint;
  /** The application's entry function (must be in executable sub-context memory). */
  entry: bigint;
  /** The guest's vCPU identifier (recorded in the description). */
  vcpu?: bigint;
  /** Application mappings for the sub context. */
  maps?: readonly MapRequest[];
  /** Resolves map-request sources (virtual or guest-physical) to physical addresses. */
  resolver?: SourceResolver;
  /** Guest paging levels (4 or 5). Default 4. */
  ptLevels?: WalkLevels;
  /** EPT walk length (4 or 5). Default 4. */
  eptLevels?: WalkLevels;
  /** MAXPHYADDR. Default 52. */
  maxPhysAddr?: number;
  /**
   * Execute-only EPT translations supported. Default true: the code pages are mapped
   * execute-only as in libelisa. When false they are mapped read+execute instead (the gate
   * code reads no data from its own page, so only secrecy of the code bytes is lost).
   */
  executeOnly?: boolean;
  /** GPA of the gate/sub pages. Default 1 << 38 like libelisa. */
  baseGpa?: bigint;
  /** Sub stack bytes (multiple of 4 KiB). Default 8 MiB like libelisa. */
  subStackSize?: bigint;
  /** EPTP A/D enable. Default true (as libelisa). */
  accessDirty?: boolean;
  /** The privilege of callers: decides which fetch rights the entry point needs. Default 'user'. */
  callerMode?: 'user' | 'supervisor';
  /**
   * Start of the 1 GiB GPA window where each context's guest page-table pages are placed
   * (consecutive pages, in allocation order). Default: base GPA + 1 GiB, so that every
   * context GPA lies at or above the base and any CR3 the guest loads below it meets the APT.
   * 'physical' places each table at the GPA equal to its physical address instead.
   */
  tableGpaBase?: bigint | 'physical';
}

/** One translation of a context, as the backends need it. */
export interface Mapping {
  /** What this is ("gate code", "sub stack", "application 3", "page table"). */
  what: string;
  /** Guest-virtual address (undefined for page-table pages, which only have a GPA). */
  gva?: bigint;
  gpa: bigint;
  /** Physical address of the backing memory. */
  hpa: bigint;
  level: LeafLevel;
  pt?: PtFlags;
  ept: EptFlags;
}

/** One built context (gate or sub). */
export interface ContextDescription {
  name: 'gate' | 'sub';
  /** The EPTP that selects it. */
  eptp: bigint;
  /** Physical address of the guest page-table root: what CR3 must reach; every unmapped GPA resolves here (APT). */
  ptRoot: bigint;
  /** GPA at which the root is mapped: the CR3 value the tables were built for (any unmapped GPA works, too). */
  ptRootGpa: bigint;
  /** The guest page table. */
  pt: GuestPageTable;
  /** The EPT. */
  ept: Ept;
  /** Every translation, code and data first, table pages last. */
  mappings: Mapping[];
  /** Milliseconds the APT fill took. */
  aptFillMs: number;
}

/** The result of a build. */
export interface ElisaContexts {
  gva: bigint;
  entry: bigint;
  vcpu?: bigint;
  ptLevels: WalkLevels;
  eptLevels: WalkLevels;
  /** The EPTP list (slot 511 = gate, slot 0 for the host, slot 1 empty). */
  eptpList: EptpList;
  gate: ContextDescription;
  sub: ContextDescription;
  /** The pages the guest maps in its own (default) context: code bytes and their GVAs. */
  defaultPages: { top: { gva: bigint; bytes: Uint8Array }; bottom: { gva: bigint; bytes: Uint8Array } };
  /** Where the generated VMFUNCs are. */
  vmfuncSites: VmfuncSite[];
  /** GVA of the function the guest calls to enter (in the top page), if the generator reports it. */
  gateEntryGva?: bigint;
  /** Where the stacks are (GVA ranges). */
  stacks: { gate: { base: bigint; top: bigint }; sub: { base: bigint; top: bigint; relocated: boolean } };
  /** Physical pages holding code, list and stacks (tables not included). */
  dataPages: { gateCode: PhysPage; subCode: PhysPage; list: PhysPage; gateStack: PhysPage[]; subStack: PhysPage[] };
  /** The 2-D walk of `gva` in a context, in words (CR3 = the root's GPA; rights reported, not checked). */
  describe(gva: bigint, context?: 'gate' | 'sub'): string;
  /** Returns every page to the allocator (idempotent). */
  destroy(): void;
}

/** Thrown for builder input that cannot produce valid contexts. */
export class BuildError extends Error {
  override name = 'BuildError';
}

const CODE_PT: PtFlags = { user: true };
const CODE_EPT: EptFlags = { execute: true, userExecute: true, memoryType: 'WB' };
const DATA_PT: PtFlags = { writable: true, user: true, noExecute: true };
const DATA_EPT: EptFlags = { read: true, write: true, memoryType: 'WB' };
// With EPT A/D on, the CPU's guest-table reads are EPT writes: tables need R and W.
const TABLE_EPT: EptFlags = { read: true, write: true, memoryType: 'WB' };

/** Picks the sub stack range: after the list page like libelisa, else below the top page, else refuses. */
function placeSubStack(gva: bigint, size: bigint, bits: number): { base: bigint; relocated: boolean } {
  const after = gva + 2n * PAGE_SIZE_N;
  if (rangeIsCanonical(after, size, bits)) return { base: after, relocated: false };
  const below = gva - PAGE_SIZE_N - size;
  if (below >= 0n && rangeIsCanonical(below, size, bits)) return { base: below, relocated: true };
  throw new BuildError(`no room for a ${hex(size)}-byte sub stack next to GVA ${hex(gva)}: both [${hex(after)}, +size) and [${hex(below)}, +size) leave the canonical ${bits}-bit range`);
}

/**
 * Builds the gate and sub contexts. On any error every page taken so far is returned to the
 * allocator before the error propagates.
 */
export function buildContexts(options: BuildOptions): ElisaContexts {
  const allocator = options.allocator;
  const ptLevels = checkWalkLevels(options.ptLevels ?? 4, 'guest paging levels');
  const eptLevels = checkWalkLevels(options.eptLevels ?? 4, 'EPT levels');
  const maxPhysAddr = options.maxPhysAddr ?? 52;
  const bits = linearBits(ptLevels);
  const gva = options.gva;
  const baseGpa = options.baseGpa ?? DEFAULT_BASE_GPA;
  const subStackSize = options.subStackSize ?? DEFAULT_SUB_STACK_SIZE;
  const accessDirty = options.accessDirty ?? true;
  const tableGpaBase = options.tableGpaBase ?? baseGpa + TABLE_WINDOW;
  if (typeof gva !== 'bigint' || typeof options.entry !== 'bigint') throw new BuildError('gva and entry must be bigints');

  const fail = (fn: () => void): void => {
    try { fn(); } catch (err) { throw new BuildError(err instanceof Error ? err.message : String(err)); }
  };
  fail(() => {
    checkAligned(gva, PAGE_SIZE_N, 'requested GVA (the middle page)');
    checkCanonical(gva, bits, 'requested GVA (the middle page)');
    checkCanonical(options.entry, bits, 'entry point');
    checkAligned(baseGpa, PAGE_SIZE_N, 'base GPA');
    if (tableGpaBase !== 'physical') checkAligned(tableGpaBase, PAGE_SIZE_N, 'page-table GPA window');
  });
  if (gva < PAGE_SIZE_N || !rangeIsCanonical(gva - PAGE_SIZE_N, 3n * PAGE_SIZE_N, bits)) {
    throw new BuildError(`requested GVA ${hex(gva)}: the top page (${hex(gva - PAGE_SIZE_N)}) and bottom page (${hex(gva + PAGE_SIZE_N)}) must be canonical ${bits}-bit addresses in the same half`);
  }
  if (subStackSize <= 0n || subStackSize % PAGE_SIZE_N !== 0n) throw new BuildError(`sub stack size ${hex(subStackSize)} is not a positive multiple of 4 KiB`);
  const listGva = gva + PAGE_SIZE_N;
  const gateStackBase = rangeIsCanonical(gva + 2n * PAGE_SIZE_N, GATE_STACK_SIZE, bits) ? gva + 2n * PAGE_SIZE_N : gva - 2n * PAGE_SIZE_N;
  const subStack = placeSubStack(gva, subStackSize, bits);
  const subStackPageCount = Number(subStackSize / PAGE_SIZE_N);
  const stackGpaBase = baseGpa + 2n * PAGE_SIZE_N;
  const geometry = { ptLevels, eptLevels, maxPhysAddr, executeOnly: options.executeOnly ?? true };

  // Resolve and check the application's requests before taking any memory.
  const appMaps = (() => {
    try {
      return resolveMapRequests(options.maps ?? [], geometry, options.resolver ?? {});
    } catch (err) { throw new BuildError(err instanceof Error ? err.message : String(err)); }
  })();
  // Reserved ranges the builder itself uses: an application request must stay clear of them.
  const reservedGva: [bigint, bigint, string][] = [
    [gva, gva + 2n * PAGE_SIZE_N, 'the middle page and the EPTP list page'],
    [subStack.base, subStack.base + subStackSize, 'the sub stack'],
  ];
  const reservedGpa: [bigint, bigint, string][] = [[baseGpa, stackGpaBase + subStackSize, 'the gate/sub code, EPTP list and stack pages']];
  if (tableGpaBase !== 'physical') {
    reservedGpa.push([tableGpaBase, tableGpaBase + TABLE_WINDOW, 'the page-table GPA window']);
    if (tableGpaBase < stackGpaBase + subStackSize && tableGpaBase + TABLE_WINDOW > baseGpa) {
      throw new BuildError(`page-table GPA window ${hex(tableGpaBase)} (+1 GiB) overlaps the context pages at [${hex(baseGpa)}, ${hex(stackGpaBase + subStackSize)})`);
    }
  }
  appMaps.forEach((m, i) => {
    const end = (a: bigint): bigint => a + levelSize(m.level);
    for (const [lo, hi, what] of reservedGva) {
      if (m.gva < hi && end(m.gva) > lo) throw new BuildError(`map request ${i}${m.name ? ` (${m.name})` : ''}: GVA range [${hex(m.gva)}, ${hex(end(m.gva))}) overlaps ${what} at [${hex(lo)}, ${hex(hi)})`);
    }
    for (const [lo, hi, what] of reservedGpa) {
      if (m.gpa < hi && end(m.gpa) > lo) throw new BuildError(`map request ${i}${m.name ? ` (${m.name})` : ''}: GPA range [${hex(m.gpa)}, ${hex(end(m.gpa))}) overlaps ${what} at [${hex(lo)}, ${hex(hi)})`);
    }
  });
  const reach = 1n << BigInt(Math.min(maxPhysAddr, 12 + 9 * eptLevels));
  if (stackGpaBase + subStackSize > reach) {
    throw new BuildError(`base GPA ${hex(baseGpa)}: the context pages would end beyond the ${hex(reach)} guest-physical reach`);
  }
  if (tableGpaBase !== 'physical' && tableGpaBase + TABLE_WINDOW > reach) {
    throw new BuildError(`page-table GPA window ${hex(tableGpaBase)} (+1 GiB) ends beyond the ${hex(reach)} guest-physical reach`);
  }

  const owned: PhysPage[] = [];
  const trees: { destroy(): void }[] = [];
  const take = (): PhysPage => { const p = allocator.allocate(); owned.push(p); return p; };
  let destroyed = false;
  const destroy = (): void => {
    if (destroyed) return;
    destroyed = true;
    for (const t of trees) t.destroy();
    for (const p of owned) allocator.free(p);
  };

  try {
    const list = new EptpList(take());
    const gateCode = take();
    const subCode = take();
    const gateStack = [take()];
    const subStackPages: PhysPage[] = [];
    for (let i = 0; i < subStackPageCount; i++) subStackPages.push(take());

    const newContext = (name: 'gate' | 'sub') => {
      // Each context's tables get consecutive GPAs in the window (the two contexts never share an EPT).
      let nextTableGpa = tableGpaBase === 'physical' ? 0n : tableGpaBase;
      const tableAddress = tableGpaBase === 'physical' ? undefined : (): bigint => {
        if (nextTableGpa >= (tableGpaBase as bigint) + TABLE_WINDOW) throw new BuildError(`${name} context: more than 1 GiB of page-table pages`);
        nextTableGpa += PAGE_SIZE_N;
        return nextTableGpa - PAGE_SIZE_N;
      };
      const pt = new GuestPageTable(allocator, { levels: ptLevels, maxPhysAddr, ...(tableAddress ? { tableAddress } : {}) });
      trees.push(pt);
      const ept = new Ept(allocator, { levels: eptLevels, maxPhysAddr, executeOnly: geometry.executeOnly });
      trees.push(ept);
      const mappings: Mapping[] = [];
      const map = (what: string, va: bigint, gpa: bigint, hpa: bigint, level: LeafLevel, ptf: PtFlags, eptf: EptFlags): void => {
        try {
          pt.map(va, gpa, level, ptf);
          ept.map(gpa, hpa, level, eptf);
        } catch (err) { throw rewrap(err, `${name} context, ${what}`); }
        mappings.push({ what, gva: va, gpa, hpa, level, pt: ptf, ept: eptf });
      };
      return { name, pt, ept, mappings, map };
    };
    const finish = (ctx: ReturnType<typeof newContext>): ContextDescription => {
      // The guest tables must be readable (and, with A/D, writable) at their GPAs through the EPT.
      for (const { page, address: gpa } of ctx.pt.tableAddresses()) {
        try { ctx.ept.map(gpa, page.address, 1, TABLE_EPT); } catch (err) {
          throw rewrap(err, `${ctx.name} context: cannot map page-table page ${hex(page.address)} at GPA ${hex(gpa)}`);
        }
        ctx.mappings.push({ what: 'page table', gpa, hpa: page.address, level: 1, ept: TABLE_EPT });
      }
      const aptFillMs = ctx.ept.fillApt(ctx.pt.root.address);
      return {
        name: ctx.name, eptp: ctx.ept.eptp({ memoryType: 'WB', accessDirty }), ptRoot: ctx.pt.root.address,
        ptRootGpa: ctx.pt.rootAddress, pt: ctx.pt, ept: ctx.ept, mappings: ctx.mappings, aptFillMs,
      };
    };

    // Sub context: sub code at the middle, the list after it, the stack, the application's pages.
    const sub = newContext('sub');
    const codeEpt: EptFlags = geometry.executeOnly ? CODE_EPT : { ...CODE_EPT, read: true };
    sub.map('sub code', gva, baseGpa, subCode.address, 1, CODE_PT, codeEpt);
    sub.map('EPTP list', listGva, baseGpa + PAGE_SIZE_N, list.page.address, 1, DATA_PT, DATA_EPT);
    subStackPages.forEach((page, i) => sub.map(`sub stack page ${i}`, subStack.base + BigInt(i) * PAGE_SIZE_N, stackGpaBase + BigInt(i) * PAGE_SIZE_N, page.address, 1, DATA_PT, DATA_EPT));
    appMaps.forEach((m, i) => sub.map(m.name ?? `application ${i}`, m.gva, m.gpa, m.physical, m.level, m.pt, m.ept));
    const subDesc = finish(sub);

    // Gate context: gate code at the middle, the list, the gate stack. Nothing of the sub context.
    const gate = newContext('gate');
    gate.map('gate code', gva, baseGpa, gateCode.address, 1, CODE_PT, codeEpt);
    gate.map('EPTP list', listGva, baseGpa + PAGE_SIZE_N, list.page.address, 1, DATA_PT, DATA_EPT);
    gate.map('gate stack', gateStackBase, baseGpa + 2n * PAGE_SIZE_N, gateStack[0]!.address, 1, DATA_PT, DATA_EPT);
    const gateDesc = finish(gate);

    list.set(GATE_SLOT, gateDesc.eptp);

    let code: GateCodePages;
    try {
      code = (options.codeGenerator ?? elisaGateCode)({ vaBits: bits === 57 ? 57 : 48,
        gva, eptpListGva: listGva, subEptp: subDesc.eptp, entry: options.entry,
        gateStackTop: gateStackBase + GATE_STACK_SIZE, subStackTop: subStack.base + subStackSize,
      });
    } catch (err) { throw new BuildError(`code generation failed: ${err instanceof Error ? err.message : String(err)}`); }
    for (const key of ['top', 'bottom', 'gate', 'sub'] as const) {
      if (!(code[key] instanceof Uint8Array) || code[key].length !== PAGE_SIZE) throw new BuildError(`code generator returned a ${key} page of ${code[key]?.length} bytes, not ${PAGE_SIZE}`);
    }
    gateCode.bytes.set(code.gate);
    subCode.bytes.set(code.sub);

    const contexts = { gate: gateDesc, sub: subDesc };
    const describe = (addr: bigint, which: 'gate' | 'sub' = 'sub'): string => {
      const c = contexts[which];
      return `${which} context (EPTP ${hex(c.eptp)}, CR3 = GPA ${hex(c.ptRootGpa)}):\n` +
        describeWalk(walk2d({ mem: allocator, eptp: c.eptp, cr3: c.ptRootGpa, levels: ptLevels }, addr, { probe: true }, { maxPhysAddr, executeOnly: geometry.executeOnly }));
    };

    // The sub code calls the entry point: it must be a fetchable address of the sub context.
    const entryWalk: GuestWalk = walk2d({ mem: allocator, eptp: subDesc.eptp, cr3: subDesc.ptRootGpa, levels: ptLevels }, options.entry,
      { fetch: true, user: (options.callerMode ?? 'user') === 'user' }, { maxPhysAddr, executeOnly: geometry.executeOnly });
    if (entryWalk.kind !== 'ok' || !appMaps.some((m) => sameRange(m.gva, m.level, options.entry))) {
      const why = entryWalk.kind === 'ok' ? 'it is not inside an application mapping' : entryWalk.reason;
      throw new BuildError(`entry point ${hex(options.entry)} is not in executable sub-context memory (${options.callerMode ?? 'user'} fetch): ${why}`);
    }

    return {
      gva, entry: options.entry, ...(options.vcpu !== undefined ? { vcpu: options.vcpu } : {}), ptLevels, eptLevels,
      eptpList: list, gate: gateDesc, sub: subDesc,
      defaultPages: { top: { gva: gva - PAGE_SIZE_N, bytes: code.top }, bottom: { gva: gva + PAGE_SIZE_N, bytes: code.bottom } },
      vmfuncSites: code.vmfuncSites,
      ...(code.entryGva !== undefined ? { gateEntryGva: code.entryGva } : {}),
      stacks: { gate: { base: gateStackBase, top: gateStackBase + GATE_STACK_SIZE }, sub: { base: subStack.base, top: subStack.base + subStackSize, relocated: subStack.relocated } },
      dataPages: { gateCode, subCode, list: list.page, gateStack, subStack: subStackPages },
      describe,
      destroy,
    };
  } catch (err) {
    destroy();
    throw err;
  }
}

/** Adds context to an input error; memory exhaustion propagates unchanged so callers can tell it apart. */
function rewrap(err: unknown, where: string): Error {
  if (err instanceof OutOfMemoryError) return err;
  return new BuildError(`${where}: ${err instanceof Error ? err.message : String(err)}`);
}

function sameRange(base: bigint, level: LeafLevel, address: bigint): boolean {
  return address >= base && address < base + levelSize(level);
}

/** Text summary of a context's mappings (debugging aid). */
export function describeMappings(ctx: ContextDescription): string {
  return ctx.mappings.map((m) => `${m.what}: ${m.gva !== undefined ? `GVA ${hex(m.gva)} → ` : ''}GPA ${hex(m.gpa)} → HPA ${hex(m.hpa)} (${leafSizeName(m.level)})`).join('\n');
}

