// Software walkers, written from the SDM's description and independent of the builders:
// the guest page-table walk (GVA → GPA), the EPT walk (GPA → HPA) and the composed
// two-dimensional walk in which every guest table read itself goes through the EPT, the
// way the CPU does it. They are the tests' oracle and a debugging tool (describe()).

import { hex, isCanonical, tableIndex, type WalkLevels } from './address';
import { ADDRESS_MASK, describeEptBits, describePtBits, EPT, memoryTypeName, PT, type MemoryType } from './flags';
import type { PhysicalMemory } from './memory';
import { decodeEptp } from './ept';

/** What kind of access a walk is for. */
export interface Access {
  /** A data write (otherwise a read, unless fetch). */
  write?: boolean;
  /** An instruction fetch. */
  fetch?: boolean;
  /** A CPL3 access. */
  user?: boolean;
  /** Report the translation and its rights without checking them (for describe()); table reads are still checked. */
  probe?: boolean;
}

/** Options describing the (virtual) CPU. */
export interface WalkCpu {
  /** MAXPHYADDR; default 52. */
  maxPhysAddr?: number;
  /** Mode-based execute control for EPT (bit 10 governs user fetches); default true. */
  modeBasedExecute?: boolean;
  /** Execute-only EPT translations supported; default true. */
  executeOnly?: boolean;
}

/** One EPT table entry read on the way. */
export interface EptStep { level: number; tableHpa: bigint; index: number; entry: bigint }

/** The outcome of an EPT walk. */
export type EptWalk =
  | { kind: 'ok'; gpa: bigint; hpa: bigint; level: number; entry: bigint; read: boolean; write: boolean; execute: boolean; userExecute: boolean; memoryType: MemoryType; steps: EptStep[] }
  | { kind: 'violation'; gpa: bigint; reason: string; steps: EptStep[] }
  | { kind: 'misconfig'; gpa: bigint; reason: string; steps: EptStep[] };

function entryAt(mem: PhysicalMemory, table: bigint, index: number): bigint | undefined {
  const page = mem.pageAt(table);
  if (!page) return undefined;
  return new DataView(page.buffer, page.byteOffset, page.byteLength).getBigUint64(index * 8, true);
}

function reservedAddressBits(maxPhysAddr: number): bigint {
  return ((1n << 52n) - 1n) & ~((1n << BigInt(maxPhysAddr)) - 1n);
}

/** Walks `gpa` through the EPT `eptp` names, checking `access` against the combined R/W/X/XU rights. */
export function walkEpt(mem: PhysicalMemory, eptp: bigint, gpa: bigint, access: Access = {}, cpu: WalkCpu = {}): EptWalk {
  const maxPhysAddr = cpu.maxPhysAddr ?? 52;
  const fields = decodeEptp(eptp, maxPhysAddr);
  const steps: EptStep[] = [];
  const reach = Math.min(maxPhysAddr, 12 + 9 * fields.levels);
  if (gpa < 0n || gpa >= 1n << BigInt(reach)) {
    return { kind: 'violation', gpa, reason: `GPA ${hex(gpa)} is beyond the ${reach}-bit reach of a ${fields.levels}-level EPT`, steps };
  }
  let table = fields.root;
  let r = true, w = true, x = true, xu = true;
  for (let level = fields.levels as number; level >= 1; level--) {
    const index = tableIndex(gpa, level);
    const entry = entryAt(mem, table, index);
    if (entry === undefined) return { kind: 'misconfig', gpa, reason: `level-${level} EPT table ${hex(table)} is not in the walked memory`, steps };
    steps.push({ level, tableHpa: table, index, entry });
    const present = (entry & (EPT.R | EPT.W | EPT.X)) !== 0n || ((cpu.modeBasedExecute ?? true) && (entry & EPT.XU) !== 0n);
    if (!present) return { kind: 'violation', gpa, reason: `level-${level} EPT entry ${index} of table ${hex(table)} is not present`, steps };
    const bad = (why: string): EptWalk => ({ kind: 'misconfig', gpa, reason: `level-${level} EPT entry ${hex(entry)}: ${why}`, steps });
    if ((entry & EPT.W) && !(entry & EPT.R)) return bad('write allowed without read');
    if ((entry & EPT.X) && !(entry & EPT.R) && cpu.executeOnly === false) return bad('execute-only but the CPU lacks execute-only support');
    if (entry & reservedAddressBits(maxPhysAddr)) return bad(`address bits above MAXPHYADDR ${maxPhysAddr} set`);
    const leaf = level === 1 || (entry & EPT.PS) !== 0n;
    if (level >= 4 && (entry & 0xf8n)) return bad('bits 7:3 are reserved in a PML4/PML5 entry');
    if (!leaf && (entry & 0x78n)) return bad('bits 6:3 (memory type, ignore PAT) are reserved in a non-leaf entry');
    r &&= (entry & EPT.R) !== 0n; w &&= (entry & EPT.W) !== 0n; x &&= (entry & EPT.X) !== 0n; xu &&= (entry & EPT.XU) !== 0n;
    if (leaf) {
      const mt = memoryTypeName((entry & EPT.MT_MASK) >> EPT.MT_SHIFT);
      if (!mt) return bad(`memory type ${(entry & EPT.MT_MASK) >> EPT.MT_SHIFT} is reserved`);
      const offsetBits = BigInt(12 + 9 * (level - 1));
      if (level > 1 && (entry & ((1n << offsetBits) - 1n) & ~0xfffn)) return bad(`address bits ${offsetBits - 1n}:12 are reserved in a large leaf`);
      const mbec = cpu.modeBasedExecute ?? true;
      const missing = access.write ? (!w ? 'write' : undefined)
        : access.fetch ? ((mbec && access.user) ? (!xu ? 'user execute' : undefined) : (!x ? 'execute' : undefined))
        : (!r ? 'read' : undefined);
      if (missing && !access.probe) return { kind: 'violation', gpa, reason: `${missing} not allowed (effective rights: ${describeEptBits((r ? 1n : 0n) | (w ? 2n : 0n) | (x ? 4n : 0n) | (xu ? EPT.XU : 0n), false)})`, steps };
      const hpa = (entry & ADDRESS_MASK & ~((1n << offsetBits) - 1n)) | (gpa & ((1n << offsetBits) - 1n));
      return { kind: 'ok', gpa, hpa, level, entry, read: r, write: w, execute: x, userExecute: xu, memoryType: mt, steps };
    }
    table = entry & ADDRESS_MASK;
  }
  throw new Error('unreachable');
}

/** One guest table entry read on the way; `ept` is the EPT walk of the entry's GPA in a 2-D walk. */
export interface GuestStep { level: number; tableGpa: bigint; index: number; entry: bigint; ept?: EptWalk }

/** The outcome of a guest page-table walk (1-D or 2-D). */
export type GuestWalk =
  | { kind: 'ok'; gva: bigint; gpa: bigint; level: number; entry: bigint; writable: boolean; user: boolean; executable: boolean; steps: GuestStep[]; final?: EptWalk; hpa?: bigint }
  | { kind: 'page-fault'; gva: bigint; reason: string; steps: GuestStep[] }
  | { kind: 'ept'; gva: bigint; reason: string; steps: GuestStep[]; failed: EptWalk };

/** Reads a guest table entry at a GPA: a qword, or an EPT failure. */
type EntryReader = (gpa: bigint) => { entry: bigint; ept?: EptWalk } | { failed: EptWalk } | undefined;

function walkGuestWith(read: EntryReader, cr3: bigint, gva: bigint, levels: WalkLevels, access: Access, maxPhysAddr: number): GuestWalk {
  const steps: GuestStep[] = [];
  const bits = 12 + 9 * levels;
  if (!isCanonical(gva, bits)) return { kind: 'page-fault', gva, reason: `GVA ${hex(gva)} is not canonical for ${bits}-bit linear addresses (#GP, not #PF)`, steps };
  let table = cr3 & ADDRESS_MASK;
  let writable = true, user = true, executable = true;
  for (let level = levels as number; level >= 1; level--) {
    const index = tableIndex(gva, level);
    const got = read(table + BigInt(index) * 8n);
    if (got === undefined) return { kind: 'page-fault', gva, reason: `level-${level} table at GPA ${hex(table)} is not in memory`, steps };
    if ('failed' in got) return { kind: 'ept', gva, reason: `reading the level-${level} entry at GPA ${hex(table + BigInt(index) * 8n)}: EPT ${got.failed.kind}: ${got.failed.kind === 'ok' ? '' : got.failed.reason}`, steps, failed: got.failed };
    const entry = got.entry;
    steps.push({ level, tableGpa: table, index, entry, ...(got.ept ? { ept: got.ept } : {}) });
    if (!(entry & PT.P)) return { kind: 'page-fault', gva, reason: `level-${level} entry ${index} of table ${hex(table)} is not present`, steps };
    if (entry & reservedAddressBits(maxPhysAddr)) return { kind: 'page-fault', gva, reason: `level-${level} entry ${hex(entry)} sets address bits above MAXPHYADDR (reserved)`, steps };
    if (level >= 4 && (entry & PT.PS)) return { kind: 'page-fault', gva, reason: `level-${level} entry ${hex(entry)} sets PS, reserved at that level`, steps };
    writable &&= (entry & PT.W) !== 0n; user &&= (entry & PT.U) !== 0n; executable &&= (entry & PT.NX) === 0n;
    const leaf = level === 1 || (entry & PT.PS) !== 0n;
    if (leaf) {
      const offsetBits = BigInt(12 + 9 * (level - 1));
      if (level > 1 && (entry & ((1n << offsetBits) - 1n) & ~0x1fffn)) return { kind: 'page-fault', gva, reason: `large leaf ${hex(entry)} sets reserved address bits`, steps };
      const missing = access.user && !user ? 'user access to a supervisor page'
        : access.write && !writable ? 'write to a read-only page'
        : access.fetch && !executable ? 'instruction fetch from an NX page' : undefined;
      if (missing && !access.probe) return { kind: 'page-fault', gva, reason: missing, steps };
      const gpa = (entry & ADDRESS_MASK & ~((1n << offsetBits) - 1n)) | (gva & ((1n << offsetBits) - 1n));
      return { kind: 'ok', gva, gpa, level, entry, writable, user, executable, steps };
    }
    table = entry & ADDRESS_MASK;
  }
  throw new Error('unreachable');
}

/** Walks `gva` through guest tables that live in `mem` at their GPAs (no EPT: GPA = physical). */
export function walkGuest(mem: PhysicalMemory, cr3: bigint, gva: bigint, levels: WalkLevels, access: Access = {}, cpu: WalkCpu = {}): GuestWalk {
  const read: EntryReader = (gpa) => {
    const e = entryAt(mem, gpa & ~0xfffn, Number((gpa & 0xfffn) / 8n));
    return e === undefined ? undefined : { entry: e };
  };
  return walkGuestWith(read, cr3, gva, levels, access, cpu.maxPhysAddr ?? 52);
}

/** Inputs of a two-dimensional walk. */
export interface TwoDimensional {
  /** Physical memory holding EPT, table and data pages. */
  mem: PhysicalMemory;
  /** The EPTP in force. */
  eptp: bigint;
  /** CR3 (a GPA; low flag bits ignored). */
  cr3: bigint;
  /** Guest paging levels. */
  levels: WalkLevels;
}

/**
 * The CPU's walk: each guest table entry is read at a GPA translated by the EPT (a read, or a
 * write when the EPTP enables A/D, since the CPU may set guest A/D bits), then the final GPA
 * is translated with the access's own rights.
 */
export function walk2d(ctx: TwoDimensional, gva: bigint, access: Access = {}, cpu: WalkCpu = {}): GuestWalk {
  const ad = decodeEptp(ctx.eptp, cpu.maxPhysAddr ?? 52).accessDirty;
  const read: EntryReader = (gpa) => {
    const ept = walkEpt(ctx.mem, ctx.eptp, gpa, { write: ad }, cpu);
    if (ept.kind !== 'ok') return { failed: ept };
    const e = entryAt(ctx.mem, ept.hpa & ~0xfffn, Number((ept.hpa & 0xfffn) / 8n));
    return e === undefined ? undefined : { entry: e, ept };
  };
  const guest = walkGuestWith(read, ctx.cr3, gva, ctx.levels, access, cpu.maxPhysAddr ?? 52);
  if (guest.kind !== 'ok') return guest;
  const final = walkEpt(ctx.mem, ctx.eptp, guest.gpa, access, cpu);
  if (final.kind !== 'ok') return { kind: 'ept', gva, reason: `translating the final GPA ${hex(guest.gpa)}: EPT ${final.kind}: ${final.reason}`, steps: guest.steps, failed: final };
  return { ...guest, final, hpa: final.hpa };
}

function describeEpt(e: EptWalk, indent: string): string[] {
  const lines = e.steps.map((s) => `${indent}EPT L${s.level} table ${hex(s.tableHpa)}[${s.index}] = ${hex(s.entry)} (${describeEptBits(s.entry, s.level === 1 || (s.entry & EPT.PS) !== 0n)})`);
  if (e.kind === 'ok') lines.push(`${indent}→ HPA ${hex(e.hpa)} (${e.level === 1 ? '4 KiB' : e.level === 2 ? '2 MiB' : '1 GiB'} leaf, rights ${[e.read && 'R', e.write && 'W', e.execute && 'X', e.userExecute && 'XU'].filter(Boolean).join(' ') || 'none'}, ${e.memoryType})`);
  else lines.push(`${indent}→ EPT ${e.kind}: ${e.reason}`);
  return lines;
}

/** The walk in words, one line per table read. */
export function describeWalk(walk: GuestWalk): string {
  const lines: string[] = [`GVA ${hex(walk.gva)}:`];
  for (const s of walk.steps) {
    const leaf = s.level === 1 || (s.entry & PT.PS) !== 0n;
    lines.push(`  guest L${s.level} table GPA ${hex(s.tableGpa)}[${s.index}] = ${hex(s.entry)} (${describePtBits(s.entry)}${leaf && s.entry & PT.P ? ', leaf' : ''})`);
    if (s.ept) lines.push(...describeEpt(s.ept, '      '));
  }
  if (walk.kind === 'ok') {
    lines.push(`  → GPA ${hex(walk.gpa)} (guest rights: ${walk.writable ? 'W' : 'RO'}${walk.user ? ' U' : ' S'}${walk.executable ? ' X' : ' NX'})`);
    if (walk.final) lines.push('  final GPA through the EPT:', ...describeEpt(walk.final, '      '));
  } else if (walk.kind === 'page-fault') {
    lines.push(`  → #PF: ${walk.reason}`);
  } else {
    lines.push(...describeEpt(walk.failed, '      '), `  → ${walk.reason}`);
  }
  return lines.join('\n');
}
