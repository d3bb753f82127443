// Bit encodings checked exhaustively against the SDM positions (ELISA.md lists them), the
// EPTP and EPTP list, and the page allocator's bookkeeping.
import { expect } from 'chai';
import {
  ArenaAllocator, decodeEptFlags, decodeEptp, decodePtFlags, encodeEptFlags, encodeEptp, encodePtFlags, EptpList,
  OutOfMemoryError, maxPhysAddrFromCpuid, type EptFlags, type MemoryType, type PtFlags,
} from '../../src/elisa';

const bit = (n: number): bigint => 1n << BigInt(n);

describe('elisa encodings', () => {
  it('guest PT flags: all 256 combinations land on P=0 W=1 U=2 PWT=3 PCD=4 A=5 D=6 G=8 NX=63', () => {
    const names: [keyof PtFlags, number][] = [['writable', 1], ['user', 2], ['writeThrough', 3], ['cacheDisable', 4], ['accessed', 5], ['dirty', 6], ['global', 8], ['noExecute', 63]];
    for (let m = 0; m < 256; m++) {
      const flags: PtFlags = {};
      let want = bit(0);
      names.forEach(([name, pos], i) => { if (m & (1 << i)) { flags[name] = true; want |= bit(pos); } });
      expect(encodePtFlags(flags)).to.equal(want);
      const back = decodePtFlags(want);
      for (const [name] of names) expect(!!back[name]).to.equal(!!flags[name]);
    }
  });

  it('EPT flags: every R/W/X/XU combination × memory type × IPAT, misconfigurations refused', () => {
    const types: [MemoryType, bigint][] = [['UC', 0n], ['WC', 1n], ['WT', 4n], ['WP', 5n], ['WB', 6n]];
    let accepted = 0;
    for (let m = 0; m < 16; m++) {
      for (const [mt, code] of types) {
        for (const ipat of [false, true]) {
          const f: EptFlags = { read: !!(m & 1), write: !!(m & 2), execute: !!(m & 4), userExecute: !!(m & 8), memoryType: mt, ignorePat: ipat };
          const ok = !(f.write && !f.read) && m !== 0;
          if (!ok) { expect(() => encodeEptFlags(f)).to.throw(RangeError); continue; }
          accepted++;
          const want = (f.read ? bit(0) : 0n) | (f.write ? bit(1) : 0n) | (f.execute ? bit(2) : 0n) | (f.userExecute ? bit(10) : 0n) | (code << 3n) | (ipat ? bit(6) : 0n);
          expect(encodeEptFlags(f)).to.equal(want);
          expect(decodeEptFlags(want)).to.deep.equal(f);
          // Execute-only refused where the CPU lacks it.
          if (f.execute && !f.read) expect(() => encodeEptFlags(f, { executeOnly: false })).to.throw(/execute-only/);
        }
      }
    }
    // 16 combinations minus none minus W-without-R (W, W+X, W+XU, W+X+XU) = 11, × 5 types × 2.
    expect(accepted).to.equal(11 * 5 * 2);
  });

  it('EPTP: bits 2:0 memory type, 5:3 walk length − 1, 6 A/D, 51:12 root; decode accepts exactly the valid low bits', () => {
    expect(encodeEptp({ root: 0x1234_5000n, levels: 4, memoryType: 'WB', accessDirty: true })).to.equal(0x1234_505en);
    expect(encodeEptp({ root: 0xf_ffff_ffff_f000n, levels: 5, memoryType: 'UC', accessDirty: false })).to.equal(0xf_ffff_ffff_f020n);
    for (let low = 0; low < 128; low++) {
      const v = 0xabc_d000n | BigInt(low);
      const mt = low & 7, walk = (low >> 3) & 7;
      const valid = (mt === 0 || mt === 6) && (walk === 3 || walk === 4);
      if (!valid) { expect(() => decodeEptp(v)).to.throw(RangeError); continue; }
      const d = decodeEptp(v);
      expect(d).to.deep.equal({ root: 0xabc_d000n, levels: walk + 1, memoryType: mt === 6 ? 'WB' : 'UC', accessDirty: (low & 64) !== 0 });
      expect(encodeEptp(d)).to.equal(v);
    }
    for (const b of [7, 8, 9, 10, 11]) expect(() => decodeEptp(0x1000_005en | bit(b))).to.throw(/reserved bits 11:7/);
    expect(() => decodeEptp(0x1000_005en | bit(45), 40)).to.throw(/above MAXPHYADDR 40/);
    expect(() => encodeEptp({ root: 0x1800n, levels: 4, memoryType: 'WB', accessDirty: true })).to.throw(/not page aligned/);
    expect(() => encodeEptp({ root: 0x1000n, levels: 4, memoryType: 'WT', accessDirty: true })).to.throw(/UC or WB/);
  });

  it('EPTP list: 512 slots of 8 bytes, malformed EPTPs and bad slots refused', () => {
    const arena = new ArenaAllocator(2, 0x1000n);
    const list = new EptpList(arena.allocate());
    list.set(511, 0x1234_505en);
    list.set(1, 0x5000_005en);
    expect(Buffer.from(list.page.bytes).readBigUInt64LE(511 * 8)).to.equal(0x1234_505en);
    expect(list.get(1)).to.equal(0x5000_005en);
    list.clear(1);
    expect(list.get(1)).to.equal(0n);
    expect(() => list.set(512, 0x1234_505en)).to.throw(/slot 512 is outside 0..511/);
    expect(() => list.get(-1)).to.throw(/slot -1/);
    expect(() => list.set(3, 0x1234_5001n)).to.throw(/memory type 1 is neither UC/);
    expect(() => list.set(3, 0x1234_5016n)).to.throw(/walk length 3 is neither 4 nor 5/);
    expect(list.get(3)).to.equal(0n);
  });

  it('arena allocator: zeroed pages, counts, double and foreign frees, exhaustion', () => {
    const arena = new ArenaAllocator(3, 0x10_0000n);
    const a = arena.allocate();
    expect(a.address).to.equal(0x10_0000n);
    a.bytes.fill(0xee);
    expect(arena.pageAt(0x10_0000n)![17]).to.equal(0xee);
    const b = arena.allocate();
    const c = arena.allocate();
    expect(() => arena.allocate()).to.throw(OutOfMemoryError, /all 3 pages are in use/);
    arena.free(a);
    expect(() => arena.free(a)).to.throw(/freed twice/);
    expect(() => arena.free({ address: 0x20_0000n, bytes: new Uint8Array(4096) })).to.throw(/does not belong/);
    const again = arena.allocate();
    expect(again.address).to.equal(a.address);
    expect(again.bytes.every((x) => x === 0)).to.equal(true); // reused pages come back zeroed
    expect(arena.stats()).to.deep.equal({ allocated: 4, freed: 1, inUse: 3 });
    for (const p of [b, c, again]) arena.free(p);
    expect(arena.stats()).to.deep.equal({ allocated: 4, freed: 4, inUse: 0 });
    expect(arena.pageAt(0x10_0800n)).to.equal(undefined);
    expect(() => new ArenaAllocator(1, 0x123n)).to.throw(/not a page-aligned/);
  });
});

describe('elisa MAXPHYADDR from CPUID', () => {
  it('takes EAX bits 7:0 of leaf 0x80000008', () => {
    expect(maxPhysAddrFromCpuid(0x3030)).to.equal(48); // 48-bit physical, 48-bit linear
    expect(maxPhysAddrFromCpuid(0x392e)).to.equal(46);
    expect(() => maxPhysAddrFromCpuid(0x3040)).to.throw(/width 64 is outside 32..52/);
  });
});

describe('elisa arena over a supplied buffer', () => {
  it('zeroes pages of a buffer it did not create, on first use too', () => {
    const buffer = new ArrayBuffer(2 * 4096);
    new Uint8Array(buffer).fill(0x5a);
    const arena = new ArenaAllocator(2, 0x2000n, buffer);
    expect(arena.allocate().bytes.every((b) => b === 0)).to.equal(true);
    expect(new Uint8Array(buffer)[4096]).to.equal(0x5a); // untouched until handed out
    expect(() => new ArenaAllocator(3, 0x2000n, buffer)).to.throw(/holds 8192 bytes, 3 pages need 12288/);
  });
});
