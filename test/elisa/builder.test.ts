// The context builder with the real gate code: what each context reaches at each GVA,
// what it must not reach, the EPTP list, stack placement, teardown.
import { expect } from 'chai';
import {
  ArenaAllocator, buildContexts, walk2d, PAGE_SIZE_N, type ElisaContexts, type WalkLevels, type MapRequest,
} from '../../src/elisa';
import { buildGatePages } from '../../src/elisa/gate';

function le64(v: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(v);
  return b;
}

interface Setup { arena: ArenaAllocator; ctx: ElisaContexts; app: bigint[]; appGva: bigint }

function setup(gva: bigint, levels: WalkLevels, appGva: bigint, entryOffset: bigint): Setup {
  const arena = new ArenaAllocator(2300, 0x1_0000_0000n);
  const app = [arena.allocate().address, arena.allocate().address];
  const maps: MapRequest[] = [
    { name: 'text', source: { physical: app[0]! }, gva: appGva, gpa: 0x4000_0000n, level: 1, pt: { user: true }, ept: { read: true, execute: true, userExecute: true } },
    { name: 'data', source: { physical: app[1]! }, gva: appGva + 0x1000n, gpa: 0x4000_1000n, level: 1, pt: { user: true, writable: true, noExecute: true }, ept: { read: true, write: true } },
  ];
  const ctx = buildContexts({ allocator: arena, gva, entry: appGva + entryOffset, maps, ptLevels: levels, eptLevels: levels, vcpu: 3n });
  return { arena, ctx, app, appGva };
}

const CASES: [string, bigint, WalkLevels, bigint, bigint][] = [
  ['libelisa-like low GVA, 4-level', 0x7f00_0000_0000n, 4, 0x40_0000n, 0x10n],
  ['5-level GVA above 2^47', 0x00f0_0000_0000_0000n, 5, 0x40_0000n, 0xff0n],
  ['upper-half GVA, 4-level', 0xffff_c000_0000_0000n, 4, 0x1234_5000n, 0n],
  ['GVA at the top of the lower half (stack relocated)', 0x7fff_ffff_e000n, 4, 0x40_0000n, 0x800n],
];

describe('elisa context builder', () => {
  for (const [title, gva, levels, appGva, entryOffset] of CASES) {
    it(`reaches the right pages in each context: ${title}`, () => {
      const { arena, ctx, app } = setup(gva, levels, appGva, entryOffset);
      const sub = { mem: arena, eptp: ctx.sub.eptp, cr3: ctx.sub.ptRootGpa, levels };
      const gate = { mem: arena, eptp: ctx.gate.eptp, cr3: ctx.gate.ptRootGpa, levels };
      const hpa = (w: ReturnType<typeof walk2d>): bigint | string => (w.kind === 'ok' ? w.hpa! : w.reason);

      // The middle GVA: gate code in the gate context, sub code in the sub context; execute-only.
      expect(hpa(walk2d(sub, gva + 0x20n, { fetch: true, user: true }))).to.equal(ctx.dataPages.subCode.address + 0x20n);
      expect(hpa(walk2d(gate, gva + 0x20n, { fetch: true, user: true }))).to.equal(ctx.dataPages.gateCode.address + 0x20n);
      expect(walk2d(sub, gva, { user: true }).kind).to.equal('ept'); // no EPT read on a code page
      expect(walk2d(gate, gva, { write: true }).kind).to.equal('page-fault'); // not writable in the guest tables
      // The code in those pages is the generator's output for these parameters (sub EPTP embedded).
      const expected = buildGatePages({
        middleGva: gva, subEptp: ctx.sub.eptp, gateEptpListGva: gva + 4096n, subEptpListGva: gva + 4096n,
        gateStackTop: ctx.stacks.gate.top, subStackTop: ctx.stacks.sub.top, entry: ctx.entry, vaBits: levels === 5 ? 57 : 48,
      });
      expect(Buffer.from(ctx.dataPages.subCode.bytes).equals(Buffer.from(expected.sub.bytes))).to.equal(true);
      expect(Buffer.from(ctx.dataPages.gateCode.bytes).includes(le64(ctx.sub.eptp))).to.equal(true);
      expect(Buffer.from(ctx.dataPages.subCode.bytes).includes(le64(ctx.entry))).to.equal(true);
      expect(ctx.gateEntryGva).to.equal(expected.entryGva);

      // The EPTP list: mapped writable after the middle page in both contexts; slot 511 = gate, 1 and 0 empty.
      for (const c of [sub, gate]) expect(hpa(walk2d(c, gva + 4096n + 8n, { write: true, user: true }))).to.equal(ctx.eptpList.page.address + 8n);
      expect(ctx.eptpList.get(511)).to.equal(ctx.gate.eptp);
      expect(ctx.eptpList.get(1)).to.equal(0n);
      expect(ctx.eptpList.get(0)).to.equal(0n);
      // EPTPs: WB, walk length = levels, A/D on.
      for (const c of [ctx.sub, ctx.gate]) expect(c.eptp & 0xfffn).to.equal(6n | (BigInt(levels - 1) << 3n) | 0x40n);

      // Stacks: writable, not executable, where the description says.
      expect(hpa(walk2d(gate, ctx.stacks.gate.top - 8n, { write: true, user: true }))).to.equal(ctx.dataPages.gateStack[0]!.address + 4088n);
      expect(hpa(walk2d(sub, ctx.stacks.sub.top - 8n, { write: true, user: true }))).to.equal(ctx.dataPages.subStack.at(-1)!.address + 4088n);
      expect(hpa(walk2d(sub, ctx.stacks.sub.base, { write: true, user: true }))).to.equal(ctx.dataPages.subStack[0]!.address);
      expect(ctx.stacks.sub.top - ctx.stacks.sub.base).to.equal(8n << 20n);
      expect(walk2d(sub, ctx.stacks.sub.base, { fetch: true, user: true }).kind).to.equal('page-fault');

      // The application: entry fetchable in the sub context only.
      expect(hpa(walk2d(sub, ctx.entry, { fetch: true, user: true }))).to.equal(app[0]! + entryOffset);
      expect(walk2d(gate, ctx.entry, { fetch: true, user: true }).kind).to.equal('page-fault');
      expect(walk2d(gate, ctx.stacks.sub.base + 0x1000n, { user: true }).kind).to.not.equal('ok');

      // The default context gets the top and bottom pages; the middle is the guest's to leave unmapped.
      expect(ctx.defaultPages.top.gva).to.equal(gva - 4096n);
      expect(ctx.defaultPages.bottom.gva).to.equal(gva + 4096n);
      expect(Buffer.from(ctx.defaultPages.top.bytes).subarray(4093).toString('hex')).to.equal('0f01d4');

      // Isolation: no page of the sub context but the list is reachable through the gate EPT, and no EPT page through any EPT.
      const gateHpas = new Set(ctx.gate.ept.leaves().map((l) => l.entry & 0x000f_ffff_ffff_f000n));
      const subOnly = [ctx.dataPages.subCode, ...ctx.dataPages.subStack, ...ctx.sub.pt.tablePages()].map((p) => p.address).concat(app);
      for (const a of subOnly) expect(gateHpas.has(a), `gate EPT reaches sub page 0x${a.toString(16)}`).to.equal(false);
      expect(gateHpas.has(ctx.eptpList.page.address)).to.equal(true);
      const allLeaves = [...ctx.gate.ept.leaves(), ...ctx.sub.ept.leaves()].map((l) => l.entry & 0x000f_ffff_ffff_f000n);
      for (const p of [...ctx.gate.ept.tablePages(), ...ctx.sub.ept.tablePages()]) expect(allLeaves.includes(p.address)).to.equal(false);

      const describe = ctx.describe(gva, 'sub');
      expect(describe).to.match(/sub context/).and.match(new RegExp(`HPA 0x${ctx.dataPages.subCode.address.toString(16)}`));

      ctx.destroy();
      ctx.destroy(); // idempotent
      for (const a of app) arena.free({ address: a, bytes: arena.pageAt(a)! });
      const s = arena.stats();
      expect(s.inUse).to.equal(0);
      expect(s.allocated).to.equal(s.freed);
    });
  }

  it('relocates the sub stack below the top page when it would leave the canonical half', () => {
    const { ctx } = setup(0x7fff_ffff_e000n, 4, 0x40_0000n, 0n);
    expect(ctx.stacks.sub.relocated).to.equal(true);
    expect(ctx.stacks.sub.top).to.equal(0x7fff_ffff_d000n);
    expect(ctx.stacks.gate.top).to.equal(0x7fff_ffff_d000n);
    const normal = setup(0x7f00_0000_0000n, 4, 0x40_0000n, 0n).ctx;
    expect(normal.stacks.sub).to.deep.equal({ base: 0x7f00_0000_2000n, top: 0x7f00_0080_2000n, relocated: false });
  });

  it('builds with a smaller stack and counts its pages', () => {
    const arena = new ArenaAllocator(64, 0x1_0000_0000n);
    const code = arena.allocate();
    const ctx = buildContexts({
      allocator: arena, gva: 0x10_0000n, entry: 0x20_0000n, subStackSize: PAGE_SIZE_N * 2n,
      maps: [{ source: { physical: code.address }, gva: 0x20_0000n, gpa: 0x3000_0000n, level: 1, pt: { user: true }, ept: { execute: true, userExecute: true } }],
    });
    expect(ctx.dataPages.subStack.length).to.equal(2);
    ctx.destroy();
    arena.free(code);
    expect(arena.stats().inUse).to.equal(0);
  });
});

describe('elisa EPT regions', () => {
  it('merge contiguous leaves with equal rights, and cover exactly the mapped GPAs of a built sub context', () => {
    const arena = new ArenaAllocator(2300, 0x1_0000_0000n);
    const text = arena.allocate();
    const ctx = buildContexts({
      allocator: arena, gva: 0x7f00_0000_0000n, entry: 0x40_0000n,
      maps: [{ source: { physical: text.address }, gva: 0x40_0000n, gpa: 0x4000_0000n, level: 1, pt: { user: true }, ept: { read: true, execute: true, userExecute: true } }],
    });
    const regions = ctx.sub.ept.regions();
    // The 2048 stack pages were allocated in one run, so their GPAs and HPAs are both contiguous: one region.
    const stack = regions.find((r) => r.gpa === (1n << 38n) + 0x2000n)!;
    expect(stack.size).to.equal(8n << 20n);
    expect(stack.hpa).to.equal(ctx.dataPages.subStack[0]!.address);
    expect(stack.flags).to.deep.equal({ read: true, write: true, execute: false, userExecute: false, memoryType: 'WB', ignorePat: false });
    // Every leaf is inside exactly one region, and the regions' total equals the leaves' total.
    const leaves = ctx.sub.ept.leaves();
    const total = leaves.reduce((a, l) => a + (1n << BigInt(12 + 9 * (l.level - 1))), 0n);
    expect(regions.reduce((a, r) => a + r.size, 0n)).to.equal(total);
    for (const l of leaves) expect(regions.filter((r) => l.gpa >= r.gpa && l.gpa < r.gpa + r.size).length).to.equal(1);
    // Code (execute-only) and list (R/W) pages are adjacent in GPA but differ in rights: separate regions.
    expect(regions.find((r) => r.gpa === 1n << 38n)!.size).to.equal(4096n);
    ctx.destroy();
    arena.free(text);
    expect(arena.stats().inUse).to.equal(0);
  });
});

describe('elisa builder: source resolution', () => {
  it('asks the resolver for each virtual/guest-physical source with the mapping size and maps what it returns', () => {
    const arena = new ArenaAllocator(2300, 0x1_0000_0000n);
    const calls: string[] = [];
    const resolver = {
      resolveVirtual: (va: bigint, size: bigint): bigint => { calls.push(`v ${va.toString(16)} ${size.toString(16)}`); return 0x77_0000_0000n + (va & 0xfff000n); },
      resolveGuestPhysical: (gpa: bigint, size: bigint): bigint => { calls.push(`g ${gpa.toString(16)} ${size.toString(16)}`); if (size > 4096n) throw new Error(`GPA ${gpa.toString(16)} is not backed by contiguous host memory`); return 0x66_0000_0000n; },
    };
    const ctx = buildContexts({
      allocator: arena, gva: 0x7f00_0000_0000n, entry: 0x40_0000n, resolver,
      maps: [
        { source: { virtual: 0x5555_0000_3000n }, gva: 0x40_0000n, gpa: 0x4000_0000n, level: 1, pt: { user: true }, ept: { execute: true, userExecute: true } },
        { source: { guestPhysical: 0x1234_5000n }, gva: 0x50_0000n, gpa: 0x4000_1000n, level: 1, pt: { user: true, writable: true, noExecute: true }, ept: { read: true, write: true } },
      ],
    });
    expect(calls).to.deep.equal(['v 555500003000 1000', 'g 12345000 1000']);
    const sub = { mem: arena, eptp: ctx.sub.eptp, cr3: ctx.sub.ptRootGpa, levels: 4 as const };
    const w = walk2d(sub, 0x50_0010n, { write: true, user: true });
    expect(w.kind === 'ok' && w.hpa).to.equal(0x66_0000_0010n);
    const x = walk2d(sub, 0x40_0010n, { fetch: true, user: true });
    expect(x.kind === 'ok' && x.hpa).to.equal(0x77_0000_3010n);
    ctx.destroy();
    // A resolver failure surfaces with its own words and nothing leaks.
    expect(() => buildContexts({
      allocator: arena, gva: 0x7f00_0000_0000n, entry: 0x40_0000n, resolver,
      maps: [{ source: { guestPhysical: 0x20_0000n }, gva: 0x40_0000n, gpa: 0x4000_0000n, level: 2, pt: { user: true }, ept: { execute: true, userExecute: true } }],
    })).to.throw(/map request 0: GPA 200000 is not backed by contiguous host memory/);
    expect(arena.stats().inUse).to.equal(0);
  });
});

describe('elisa builder without execute-only EPT support', () => {
  it('maps the code pages read+execute instead of execute-only', () => {
    const arena = new ArenaAllocator(2300, 0x1_0000_0000n);
    const text = arena.allocate();
    const maps: MapRequest[] = [{ source: { physical: text.address }, gva: 0x40_0000n, gpa: 0x4000_0000n, level: 1, pt: { user: true }, ept: { read: true, execute: true, userExecute: true } }];
    for (const executeOnly of [true, false]) {
      const ctx = buildContexts({ allocator: arena, gva: 0x7f00_0000_0000n, entry: 0x40_0000n, maps, executeOnly });
      for (const name of ['gate', 'sub'] as const) {
        const c = { mem: arena, eptp: ctx[name].eptp, cr3: ctx[name].ptRootGpa, levels: 4 as const };
        expect(walk2d(c, ctx.gva, { user: true }, { executeOnly }).kind).to.equal(executeOnly ? 'ept' : 'ok');
        expect(walk2d(c, ctx.gva, { fetch: true, user: true }, { executeOnly }).kind).to.equal('ok');
      }
      ctx.destroy();
    }
    // Execute-only application pages are refused up front when the CPU cannot do them.
    expect(() => buildContexts({ allocator: arena, gva: 0x7f00_0000_0000n, entry: 0x40_0000n, executeOnly: false, maps: [{ ...maps[0]!, ept: { execute: true, userExecute: true } }] }))
      .to.throw(/map request 0: EPT flags: execute-only translations are not supported/);
    arena.free(text);
    expect(arena.stats().inUse).to.equal(0);
  });
});
