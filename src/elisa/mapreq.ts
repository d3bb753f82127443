// Map requests: what an application asks to have mapped into its sub context (libelisa's
// elisa_map_req): a source page, where it appears (GVA and GPA), its size and its rights.

import { checkAligned, checkCanonical, checkLeafLevel, hex, leafSizeName, levelSize, linearBits, type LeafLevel, type WalkLevels } from './address';
import { encodeEptFlags, encodePtFlags, type EptCapabilities, type EptFlags, type PtFlags } from './flags';

/** Where the bytes of a mapping come from. */
export type MapSource =
  /** A manager virtual address, resolved by the backend (pagemap, hypercall). */
  | { virtual: bigint }
  /** A guest-physical address of the manager VM, resolved to host-physical by the backend. */
  | { guestPhysical: bigint }
  /** An already resolved physical (host-physical from the EPT's view) address. */
  | { physical: bigint };

/** One mapping into a sub context. */
export interface MapRequest {
  /** The source of the bytes. */
  source: MapSource;
  /** Destination guest-virtual address (canonical, aligned to the level's size). */
  gva: bigint;
  /** Destination guest-physical address (aligned to the level's size). */
  gpa: bigint;
  /** 1: 4 KiB, 2: 2 MiB, 3: 1 GiB. */
  level: LeafLevel;
  /** Guest page-table rights. */
  pt: PtFlags;
  /** EPT rights and memory type. */
  ept: EptFlags;
  /** A name for error messages (e.g. "sub stack page 3"). */
  name?: string;
}

/** Turns sources into physical addresses; each method throws if the range is not resolvable or not physically contiguous. */
export interface SourceResolver {
  /** Physical address of `size` contiguous bytes at manager virtual address `va`. */
  resolveVirtual?(va: bigint, size: bigint): bigint;
  /** Physical address of `size` contiguous bytes at manager guest-physical address `gpa`. */
  resolveGuestPhysical?(gpa: bigint, size: bigint): bigint;
}

/** A validated request with its source resolved. */
export interface ResolvedMapRequest extends MapRequest {
  /** Physical address of the source. */
  physical: bigint;
}

/** Thrown for a map request the builder cannot honour. */
export class MapRequestError extends Error {
  override name = 'MapRequestError';
}

/** Geometry the requests are checked against. */
export interface MapGeometry extends EptCapabilities {
  /** Guest paging levels (canonical width 48 or 57). */
  ptLevels: WalkLevels;
  /** EPT walk length. */
  eptLevels: WalkLevels;
  /** MAXPHYADDR. */
  maxPhysAddr: number;
}

function label(req: MapRequest, index: number): string {
  return req.name ? `map request ${index} (${req.name})` : `map request ${index}`;
}

/** Resolves one request's source to a physical address. */
export function resolveSource(req: MapRequest, resolver: SourceResolver, what: string): bigint {
  const size = levelSize(req.level);
  const s = req.source as Record<string, unknown>;
  if (s === null || typeof s !== 'object') throw new MapRequestError(`${what}: source must be { virtual }, { guestPhysical } or { physical }`);
  if (typeof s.physical === 'bigint') return s.physical;
  if (typeof s.virtual === 'bigint') {
    if (!resolver.resolveVirtual) throw new MapRequestError(`${what}: source is a manager virtual address (${hex(s.virtual)}) but this backend cannot resolve virtual addresses`);
    return resolver.resolveVirtual(s.virtual, size);
  }
  if (typeof s.guestPhysical === 'bigint') {
    if (!resolver.resolveGuestPhysical) throw new MapRequestError(`${what}: source is a guest-physical address (${hex(s.guestPhysical)}) but this backend cannot resolve guest-physical addresses`);
    return resolver.resolveGuestPhysical(s.guestPhysical, size);
  }
  throw new MapRequestError(`${what}: source must be { virtual: bigint }, { guestPhysical: bigint } or { physical: bigint }`);
}

/**
 * Validates requests (level, alignment, canonical GVA, physical widths, flag combinations),
 * resolves their sources, and rejects overlaps: two requests may not cover the same GVA,
 * and may cover the same GPA only as exact aliases (same GPA, size, source and EPT rights).
 */
export function resolveMapRequests(requests: readonly MapRequest[], geometry: MapGeometry, resolver: SourceResolver): ResolvedMapRequest[] {
  const out: ResolvedMapRequest[] = [];
  const gpaReach = Math.min(geometry.maxPhysAddr, 12 + 9 * geometry.eptLevels);
  requests.forEach((req, index) => {
    const what = (): string => label(req, index);
    let physical: bigint;
    try {
      checkLeafLevel(req.level);
      if (typeof req.gva !== 'bigint' || typeof req.gpa !== 'bigint') throw new MapRequestError('gva and gpa must be bigints');
      const size = levelSize(req.level);
      checkCanonical(req.gva, linearBits(geometry.ptLevels), 'GVA');
      checkCanonical(req.gva + size - 1n, linearBits(geometry.ptLevels), `last byte of the ${leafSizeName(req.level)} range at GVA`);
      checkAligned(req.gva, size, `GVA of a ${leafSizeName(req.level)} mapping`);
      checkAligned(req.gpa, size, `GPA of a ${leafSizeName(req.level)} mapping`);
      encodePtFlags(req.pt);
      encodeEptFlags(req.ept, geometry);
      if (req.gpa < 0n || req.gpa + size > 1n << BigInt(gpaReach)) {
        throw new MapRequestError(`GPA ${hex(req.gpa)} (+${leafSizeName(req.level)}) is beyond the ${gpaReach}-bit guest-physical reach (MAXPHYADDR ${geometry.maxPhysAddr}, ${geometry.eptLevels}-level EPT)`);
      }
      physical = resolveSource(req, resolver, 'source');
      if (physical % size !== 0n || physical < 0n) throw new MapRequestError(`source physical address ${hex(physical)} is not aligned to ${leafSizeName(req.level)}`);
      if (physical + size > 1n << BigInt(geometry.maxPhysAddr)) throw new MapRequestError(`source physical address ${hex(physical)} is beyond the ${geometry.maxPhysAddr}-bit physical-address width`);
    } catch (err) {
      throw new MapRequestError(`${what()}: ${err instanceof Error ? err.message : String(err)}`);
    }
    out.push({ ...req, physical });
  });
  checkOverlaps(out, 'gva', 'GVA', () => false);
  checkOverlaps(out, 'gpa', 'GPA', (a, b) => a.gpa === b.gpa && a.level === b.level && a.physical === b.physical
    && encodeEptFlags(a.ept, geometry) === encodeEptFlags(b.ept, geometry));
  return out;
}

function checkOverlaps(reqs: ResolvedMapRequest[], key: 'gva' | 'gpa', name: string, alias: (a: ResolvedMapRequest, b: ResolvedMapRequest) => boolean): void {
  const order = reqs.map((r, i) => ({ r, i })).sort((a, b) => (a.r[key] < b.r[key] ? -1 : a.r[key] > b.r[key] ? 1 : 0));
  // Keep the request reaching furthest so far: a sorted sweep finds every overlap.
  let reach: { r: ResolvedMapRequest; i: number } | undefined;
  let reachEnd = 0n;
  for (const cur of order) {
    const start = cur.r[key];
    const end = start + levelSize(cur.r.level);
    if (reach && start < reachEnd && !alias(reach.r, cur.r)) {
      const [first, second] = reach.i < cur.i ? [reach, cur] : [cur, reach];
      throw new MapRequestError(`${label(second.r, second.i)} overlaps ${label(first.r, first.i)} in ${name} space: ` +
        `[${hex(first.r[key])}, ${hex(first.r[key] + levelSize(first.r.level))}) and [${hex(second.r[key])}, ${hex(second.r[key] + levelSize(second.r.level))})`);
    }
    if (!reach || end > reachEnd) { reach = cur; reachEnd = end; }
  }
}
