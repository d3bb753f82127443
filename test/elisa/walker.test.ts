// The walkers themselves, on hand-written entries (bit values straight from the SDM), so the
// oracle the other suites rely on is checked against something other than the builders.
import { expect } from 'chai';
import { ArenaAllocator, describeWalk, walk2d, walkEpt, walkGuest, type PhysPage } from '../../src/elisa';

function put(page: PhysPage, index: number, value: bigint): void {
  new DataView(page.bytes.buffer, page.bytes.byteOffset, 4096).setBigUint64(index * 8, value, true);
}

/** A 4-level EPT mapping GPA 0x0 → data by hand: L4[0] → L3[0] → L2[0] → L1[0..1]. */
function handEpt() {
  const arena = new ArenaAllocator(16, 0x10_0000n);
  const [l4, l3, l2, l1, data] = [arena.allocate(), arena.allocate(), arena.allocate(), arena.allocate(), arena.allocate()];
  put(l4!, 0, l3!.address | 0x7n);
  put(l3!, 0, l2!.address | 0x7n);
  put(l2!, 0, l1!.address | 0x7n);
  put(l1!, 0, data!.address | 0x7n | (6n << 3n)); // R W X, WB
  const eptp = l4!.address | 6n | (3n << 3n);
  return { arena, l4: l4!, l3: l3!, l2: l2!, l1: l1!, data: data!, eptp };
}

describe('elisa walkers', () => {
  it('EPT walk: translation, rights, and each misconfiguration the SDM lists', () => {
    const t = handEpt();
    const ok = walkEpt(t.arena, t.eptp, 0x123n);
    expect(ok.kind === 'ok' && ok.hpa).to.equal(t.data.address + 0x123n);
    const cases: [PhysPage, number, bigint, RegExp][] = [
      [t.l1, 0, t.data.address | 0x2n | (6n << 3n), /write allowed without read/],
      [t.l1, 0, t.data.address | 0x1n | (2n << 3n), /memory type 2 is reserved/],
      [t.l1, 0, t.data.address | 0x1n | (7n << 3n), /memory type 7 is reserved/],
      [t.l4, 0, t.l3.address | 0x7n | (6n << 3n), /bits 7:3 are reserved in a PML4/],
      [t.l4, 0, t.l3.address | 0x7n | 0x80n, /bits 7:3 are reserved in a PML4/],
      [t.l3, 0, t.l2.address | 0x7n | (6n << 3n), /bits 6:3 .* reserved in a non-leaf/],
      [t.l2, 0, 0x20_1000n | 0x87n | (6n << 3n), /bits 20:12 are reserved in a large leaf/],
      [t.l1, 0, (1n << 50n) | 0x1n | (6n << 3n), /above MAXPHYADDR 46/],
    ];
    for (const [page, index, value, reason] of cases) {
      const saved = new Uint8Array(page.bytes);
      put(page, index, value);
      const w = walkEpt(t.arena, t.eptp, 0x10n, {}, { maxPhysAddr: 46 });
      expect(w.kind, reason.source).to.equal('misconfig');
      expect(w.kind !== 'ok' && w.reason).to.match(reason);
      page.bytes.set(saved);
    }
    // Execute-only: a misconfiguration only where unsupported.
    put(t.l1, 0, t.data.address | 0x4n | (6n << 3n));
    expect(walkEpt(t.arena, t.eptp, 0n, { fetch: true }).kind).to.equal('ok');
    expect(walkEpt(t.arena, t.eptp, 0n, { fetch: true }, { executeOnly: false }).kind).to.equal('misconfig');
    expect(walkEpt(t.arena, t.eptp, 0n).kind).to.equal('violation');
    // Mode-based execute: a user fetch needs bit 10, a supervisor fetch bit 2.
    expect(walkEpt(t.arena, t.eptp, 0n, { fetch: true, user: true }).kind).to.equal('violation');
    expect(walkEpt(t.arena, t.eptp, 0n, { fetch: true, user: true }, { modeBasedExecute: false }).kind).to.equal('ok');
    // Not present, and beyond the 4-level reach.
    expect(walkEpt(t.arena, t.eptp, 0x1000_0000n).kind).to.equal('violation');
    const far = walkEpt(t.arena, t.eptp, 1n << 48n);
    expect(far.kind === 'violation' && far.reason).to.match(/beyond the 48-bit reach of a 4-level EPT/);
    // Rights are the AND over all levels: remove W at L3.
    put(t.l1, 0, t.data.address | 0x7n | (6n << 3n));
    put(t.l3, 0, t.l2.address | 0x5n);
    const ro = walkEpt(t.arena, t.eptp, 0n);
    expect(ro.kind === 'ok' && [ro.read, ro.write, ro.execute]).to.deep.equal([true, false, true]);
    expect(walkEpt(t.arena, t.eptp, 0n, { write: true }).kind).to.equal('violation');
  });

  it('guest walk: U, W, NX are ANDed/ORed over levels; reserved bits fault; non-canonical refused', () => {
    const arena = new ArenaAllocator(8, 0x10_0000n);
    const [l4, l3, l2, l1] = [arena.allocate(), arena.allocate(), arena.allocate(), arena.allocate()];
    put(l4!, 1, l3!.address | 0x7n);
    put(l3!, 0, l2!.address | 0x7n);
    put(l2!, 0, l1!.address | 0x7n);
    put(l1!, 2, 0xabc000n | 0x7n);
    const gva = (1n << 39n) | 0x2000n | 0x55n;
    const ok = walkGuest(arena, l4!.address, gva, 4, { user: true, write: true, fetch: true });
    expect(ok.kind === 'ok' && ok.gpa).to.equal(0xabc055n);
    put(l3!, 0, l2!.address | 0x3n); // supervisor at L3
    expect(walkGuest(arena, l4!.address, gva, 4, { user: true }).kind).to.equal('page-fault');
    put(l3!, 0, l2!.address | 0x7n | (1n << 63n)); // NX at L3
    const nx = walkGuest(arena, l4!.address, gva, 4, { fetch: true });
    expect(nx.kind === 'page-fault' && nx.reason).to.match(/NX page/);
    put(l3!, 0, l2!.address | 0x5n); // read-only at L3
    expect(walkGuest(arena, l4!.address, gva, 4, { write: true }).kind).to.equal('page-fault');
    put(l3!, 0, l2!.address | 0x7n);
    put(l2!, 0, 0x20_2000n | 0x87n); // 2 MiB leaf with a reserved bit 13 set
    expect(walkGuest(arena, l4!.address, gva, 4).kind).to.equal('page-fault');
    put(l2!, 0, 0x40_0000n | 0x87n);
    const big = walkGuest(arena, l4!.address, gva, 4);
    expect(big.kind === 'ok' && [big.gpa, big.level]).to.deep.equal([0x40_2055n, 2]);
    put(l4!, 1, l3!.address | 0x87n); // PS in a PML4E
    expect(walkGuest(arena, l4!.address, gva, 4).kind).to.equal('page-fault');
    expect(walkGuest(arena, l4!.address, 1n << 47n, 4).kind).to.equal('page-fault');
  });

  it('2-D walk: guest table reads go through the EPT, as writes when the EPTP enables A/D', () => {
    const t = handEpt();
    // Guest tables inside the EPT-mapped data page? Use identity: map GPA 0x0 region's L1 entries 0..3 to 4 table pages.
    const tables = [t.arena.allocate(), t.arena.allocate(), t.arena.allocate(), t.arena.allocate()];
    const target = t.arena.allocate();
    tables.forEach((p, i) => put(t.l1, i + 1, p.address | 0x1n | (6n << 3n))); // GPA (i+1)*4K → table i, read-only
    put(t.l1, 5, target.address | 0x3n | (6n << 3n));
    for (let i = 0; i < 3; i++) put(tables[i]!, 0, BigInt(i + 2) * 0x1000n | 0x7n); // each guest level → next GPA
    put(tables[3]!, 0, 0x5000n | 0x7n);
    const ctx = { mem: t.arena, eptp: t.eptp, cr3: 0x1000n, levels: 4 as const };
    const w = walk2d(ctx, 0x28n, { write: true });
    expect(w.kind === 'ok' && w.hpa).to.equal(target.address + 0x28n);
    expect(w.steps.map((s) => s.ept?.kind)).to.deep.equal(['ok', 'ok', 'ok', 'ok']);
    // With A/D on, the read-only table pages make the first guest table read fail.
    const ad = walk2d({ ...ctx, eptp: t.eptp | 0x40n }, 0x28n);
    expect(ad.kind).to.equal('ept');
    expect(ad.kind === 'ept' && ad.reason).to.match(/reading the level-4 entry at GPA 0x1000: EPT violation: write not allowed/);
    expect(describeWalk(w)).to.match(/guest L4 table GPA 0x1000\[0\]/).and.match(/final GPA through the EPT/);
  });
});
