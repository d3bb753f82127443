// Crafts ELF64 x86-64 executables byte by byte for the loader tests, independently of
// the loader's own parsing code (offsets from the System V gABI, not from src/x86/elf.ts).

export interface BuiltSegment {
  paddr: number;
  data: Uint8Array;
  memsz: number;
  flags?: number;
}

export interface BuildOptions {
  entry?: number;
  segments: BuiltSegment[];
  symbols?: { name: string; value: number; size?: number; type?: number; bind?: number }[];
  class?: 1 | 2;
  type?: number;
  machine?: number;
}

/** An ELF64 file: header, program headers, segment data (each at a 4 KiB-congruent offset), then .symtab/.strtab. */
export function buildElf(o: BuildOptions): Uint8Array {
  const phoff = 64;
  const phnum = o.segments.length;
  let cursor = phoff + phnum * 56;
  const placed = o.segments.map((s) => {
    // keep offset ≡ paddr (mod 4096), as the loader demands for p_align 4096
    let off = cursor;
    while (off % 4096 !== s.paddr % 4096) off++;
    cursor = off + s.data.length;
    return off;
  });
  const syms = o.symbols ?? [];
  const strtab: number[] = [0];
  const nameOffs = syms.map((s) => {
    const off = strtab.length;
    strtab.push(...Buffer.from(s.name, 'utf8'), 0);
    return off;
  });
  const symtabOff = cursor;
  const symtabSize = 24 * (syms.length + 1);
  const strtabOff = symtabOff + symtabSize;
  const shoff = Math.ceil((strtabOff + strtab.length) / 8) * 8;
  const shnum = syms.length ? 3 : 0;
  const total = shoff + shnum * 64;
  const buf = new Uint8Array(total);
  const v = new DataView(buf.buffer);
  buf.set([0x7f, 0x45, 0x4c, 0x46, o.class ?? 2, 1, 1], 0);
  v.setUint16(16, o.type ?? 2, true);
  v.setUint16(18, o.machine ?? 62, true);
  v.setUint32(20, 1, true);
  v.setBigUint64(24, BigInt(o.entry ?? o.segments[0]?.paddr ?? 0), true);
  v.setBigUint64(32, BigInt(phoff), true);
  v.setBigUint64(40, BigInt(shnum ? shoff : 0), true);
  v.setUint16(52, 64, true);
  v.setUint16(54, 56, true);
  v.setUint16(56, phnum, true);
  v.setUint16(58, 64, true);
  v.setUint16(60, shnum, true);
  o.segments.forEach((s, i) => {
    const p = phoff + i * 56;
    v.setUint32(p, 1, true);
    v.setUint32(p + 4, s.flags ?? 7, true);
    v.setBigUint64(p + 8, BigInt(placed[i]!), true);
    v.setBigUint64(p + 16, BigInt(s.paddr), true);
    v.setBigUint64(p + 24, BigInt(s.paddr), true);
    v.setBigUint64(p + 32, BigInt(s.data.length), true);
    v.setBigUint64(p + 40, BigInt(s.memsz), true);
    v.setBigUint64(p + 48, 4096n, true);
    buf.set(s.data, placed[i]!);
  });
  if (shnum) {
    syms.forEach((s, i) => {
      const e = symtabOff + 24 * (i + 1);
      v.setUint32(e, nameOffs[i]!, true);
      v.setUint8(e + 4, ((s.bind ?? 1) << 4) | (s.type ?? 2));
      v.setUint16(e + 6, 1, true);
      v.setBigUint64(e + 8, BigInt(s.value), true);
      v.setBigUint64(e + 16, BigInt(s.size ?? 0), true);
    });
    buf.set(strtab, strtabOff);
    const sh = (i: number, type: number, off: number, size: number, link: number) => {
      const b = shoff + 64 * i;
      v.setUint32(b + 4, type, true);
      v.setBigUint64(b + 24, BigInt(off), true);
      v.setBigUint64(b + 32, BigInt(size), true);
      v.setUint32(b + 40, link, true);
      v.setBigUint64(b + 56, type === 2 ? 24n : 0n, true);
    };
    sh(1, 2, symtabOff, symtabSize, 2);
    sh(2, 3, strtabOff, strtab.length, 0);
  }
  return buf;
}
