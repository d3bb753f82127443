// `elisa inspect`: builds the gate and sub contexts for given parameters in a self-contained
// arena and dumps every page as JSON (or, with --describe, the 2-D walk of one GVA in words).
// It is a debugging view and what an outside checker walks on its own.

import { readFileSync } from 'node:fs';
import { UsageError, type CliCommand } from '../command';
import {
  ArenaAllocator, buildContexts, hex, PAGE_SIZE_N, type ElisaContexts, type EptFlags, type LeafLevel,
  type MapRequest, type MapSource, type PtFlags, type WalkLevels,
} from '../../elisa';

/** Physical base of the inspect arena (4 GiB: clear of libelisa's 256 GiB context GPAs). */
export const INSPECT_ARENA_BASE = 0x1_0000_0000n;
/** GPA at which inspect maps the page holding the entry point when no --map request covers it. */
export const INSPECT_ENTRY_GPA = 0x4000_0000n;

/** Parsed options of `elisa inspect`. */
export interface InspectOptions {
  gva: bigint;
  entry: bigint;
  levels: WalkLevels;
  /** Extra map requests as read from --map (JSON values). */
  maps: unknown[];
}

const USAGE = `usage: elisa inspect [--gva ADDR] [--entry ADDR] [--levels 4|5] [--map FILE.json] [--describe GVA]

Builds the ELISA gate and sub contexts in a self-contained arena (physical base ${hex(INSPECT_ARENA_BASE)})
and prints them as JSON: every non-zero page (page tables, EPTs, APT pages, code pages,
EPTP list, stack pages that are not zero) as 8192 hex digits keyed by physical address,
the EPTP list address, each context's EPTP (WB, walk length = levels, A/D on) and ptRoot
(the page every unmapped guest-physical address resolves to).

  --gva ADDR       the middle page of the gate region (default 0x7f0000000000)
  --entry ADDR     the sub context's entry function (default 0x400000); unless a --map
                   request covers it, its page is mapped at GPA ${hex(INSPECT_ENTRY_GPA)} to a fresh page
                   holding RET (0xc3) at the entry
  --levels 4|5     guest paging levels and EPT walk length (default 4)
  --map FILE.json  extra map requests: a JSON array of
                   {"gva": "0x…", "gpa": "0x…", "level": 1|2|3, "pt": {...}, "ept": {...},
                    "source": {"physical"|"guestPhysical": "0x…"} (default: a fresh zero page; level 1 only),
                    "name": "…"}
  --describe GVA   print the two-dimensional walk of GVA in the gate and sub contexts instead`;

function parseAddress(text: string | undefined, what: string): bigint {
  if (text === undefined) throw new UsageError(`${what} needs a value`);
  if (!/^(0x[0-9a-f_]+|[0-9_]+)$/i.test(text)) throw new UsageError(`${what}: '${text}' is not a number (use 0x… or decimal)`);
  return BigInt(text.replace(/_/g, ''));
}

function parseArgs(argv: string[]): InspectOptions & { describe?: bigint } {
  const options: InspectOptions & { describe?: bigint } = { gva: 0x7f00_0000_0000n, entry: 0x40_0000n, levels: 4, maps: [] };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const value = (): string | undefined => argv[++i];
    switch (arg) {
      case '--gva': options.gva = parseAddress(value(), '--gva'); break;
      case '--entry': options.entry = parseAddress(value(), '--entry'); break;
      case '--describe': options.describe = parseAddress(value(), '--describe'); break;
      case '--levels': {
        const v = value();
        if (v !== '4' && v !== '5') throw new UsageError(`--levels must be 4 or 5, not ${v ?? 'nothing'}`);
        options.levels = Number(v) as WalkLevels;
        break;
      }
      case '--map': {
        const file = value();
        if (!file) throw new UsageError('--map needs a file name');
        let parsed: unknown;
        try { parsed = JSON.parse(readFileSync(file, 'utf8')); } catch (err) {
          throw new UsageError(`--map ${file}: ${err instanceof Error ? err.message : String(err)}`);
        }
        if (!Array.isArray(parsed)) throw new UsageError(`--map ${file}: expected a JSON array of map requests`);
        options.maps.push(...parsed);
        break;
      }
      default: throw new UsageError(`unknown option '${arg}'`);
    }
  }
  return options;
}

function jsonAddress(v: unknown, what: string): bigint {
  if (typeof v === 'string' || (typeof v === 'number' && Number.isSafeInteger(v))) {
    try { return BigInt(v); } catch { /* fall through */ }
  }
  throw new Error(`${what}: ${JSON.stringify(v)} is not an address (use a "0x…" string)`);
}

/** Result of an inspect build: the contexts, the arena they live in. Call ctx.destroy() when done. */
export interface InspectBuild { ctx: ElisaContexts; arena: ArenaAllocator }

/** Builds the contexts exactly as `elisa inspect` does (deterministic: same options, same addresses). */
export function inspectBuild(options: InspectOptions): InspectBuild {
  const extra = options.maps.length;
  const arena = new ArenaAllocator(4096 + extra + 1, INSPECT_ARENA_BASE);
  const fresh: bigint[] = [];
  const maps: MapRequest[] = options.maps.map((raw, i) => {
    const what = `--map request ${i}`;
    if (raw === null || typeof raw !== 'object') throw new Error(`${what}: not an object`);
    const r = raw as Record<string, unknown>;
    const level = r.level ?? 1;
    let source: MapSource;
    const src = r.source as Record<string, unknown> | undefined;
    if (src === undefined) {
      if (level !== 1) throw new Error(`${what}: a level-${String(level)} request needs an explicit "source" (fresh pages are 4 KiB)`);
      const page = arena.allocate();
      fresh.push(page.address);
      source = { physical: page.address };
    } else if (src.physical !== undefined) source = { physical: jsonAddress(src.physical, `${what} source.physical`) };
    else if (src.guestPhysical !== undefined) source = { guestPhysical: jsonAddress(src.guestPhysical, `${what} source.guestPhysical`) };
    else throw new Error(`${what}: source must be {"physical": …} or {"guestPhysical": …} (inspect has no manager virtual addresses)`);
    return {
      name: typeof r.name === 'string' ? r.name : `--map ${i}`, source, gva: jsonAddress(r.gva, `${what} gva`), gpa: jsonAddress(r.gpa, `${what} gpa`),
      level: level as LeafLevel, pt: (r.pt ?? {}) as PtFlags, ept: (r.ept ?? { read: true }) as EptFlags,
    };
  });
  const covered = maps.some((m) => options.entry >= m.gva && options.entry < m.gva + (1n << BigInt(12 + 9 * (m.level - 1))));
  if (!covered) {
    const page = arena.allocate();
    page.bytes[Number(options.entry & 0xfffn)] = 0xc3; // RET: the smallest entry function
    fresh.push(page.address);
    maps.push({
      name: 'entry page', source: { physical: page.address }, gva: options.entry & ~(PAGE_SIZE_N - 1n), gpa: INSPECT_ENTRY_GPA, level: 1,
      pt: { user: true }, ept: { read: true, execute: true, userExecute: true },
    });
  }
  try {
    const ctx = buildContexts({
      allocator: arena, gva: options.gva, entry: options.entry, maps, ptLevels: options.levels, eptLevels: options.levels,
      // In the self-contained arena the "manager's guest-physical" addresses are the arena's own.
      resolver: { resolveGuestPhysical: (gpa) => gpa },
    });
    return { ctx, arena };
  } catch (err) {
    for (const a of fresh) arena.free({ address: a, bytes: arena.pageAt(a)! });
    throw err;
  }
}

/** The JSON document of issue 4 for a build. */
export function inspectJson(build: InspectBuild): Record<string, unknown> {
  const { ctx, arena } = build;
  const pages: Record<string, string> = {};
  for (let i = 0; i < arena.pageCount; i++) {
    const address = arena.base + BigInt(i) * PAGE_SIZE_N;
    if (!arena.isAllocated(address)) continue;
    const bytes = arena.pageAt(address)!;
    if (bytes.every((b) => b === 0)) continue;
    pages[hex(address)] = Buffer.from(bytes).toString('hex');
  }
  const context = (c: ElisaContexts['gate']) => ({ eptp: hex(c.eptp), ptRoot: hex(c.ptRoot), ptRootGpa: hex(c.ptRootGpa) });
  return {
    gva: hex(ctx.gva),
    entry: hex(ctx.entry),
    levels: ctx.ptLevels,
    eptpList: hex(ctx.eptpList.page.address),
    contexts: { gate: context(ctx.gate), sub: context(ctx.sub) },
    defaultPages: {
      top: { gva: hex(ctx.defaultPages.top.gva), bytes: Buffer.from(ctx.defaultPages.top.bytes).toString('hex') },
      bottom: { gva: hex(ctx.defaultPages.bottom.gva), bytes: Buffer.from(ctx.defaultPages.bottom.bytes).toString('hex') },
    },
    ...(ctx.gateEntryGva !== undefined ? { gateEntry: hex(ctx.gateEntryGva) } : {}),
    pages,
  };
}

/** The `elisa inspect` subcommand. */
export const inspect: CliCommand = {
  name: 'inspect',
  summary: 'build the gate and sub contexts in an arena and dump them (JSON) or describe a walk',
  usage: USAGE,
  async run(argv, io) {
    const options = parseArgs(argv);
    const build = inspectBuild(options);
    try {
      if (options.describe !== undefined) {
        io.out(build.ctx.describe(options.describe, 'gate'));
        io.out(build.ctx.describe(options.describe, 'sub'));
      } else {
        io.out(JSON.stringify(inspectJson(build), null, 1));
      }
    } finally {
      build.ctx.destroy();
    }
    return 0;
  },
};
