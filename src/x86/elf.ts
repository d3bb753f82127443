// ELF64 loader for static, freestanding x86-64 executables (ET_EXEC): validates the
// headers, places PT_LOAD segments at their physical addresses in guest memory
// (copying p_filesz bytes and zeroing the rest of p_memsz) and reads .symtab so that
// callers can find functions and data by name.
/** A malformed or unsupported ELF file; the message names the problem. */
export class ElfError extends Error {
  override name = 'ElfError';
}

const ELF_MAGIC = [0x7f, 0x45, 0x4c, 0x46];
const EHDR_SIZE = 64;
const PHDR_SIZE = 56;
const SHDR_SIZE = 64;
const SYM_SIZE = 24;
const PT_LOAD = 1;
const SHT_SYMTAB = 2;
const EM_X86_64 = 62;
const MACHINES: Record<number, string> = { 3: 'i386', 40: 'ARM', 62: 'x86-64', 183: 'AArch64', 243: 'RISC-V' };

/** One PT_LOAD segment. */
export interface ElfSegment {
  /** Guest-physical load address (p_paddr). */
  paddr: number;
  /** Virtual address (p_vaddr); equal to paddr under the identity map. */
  vaddr: number;
  /** File offset of the initialised bytes. */
  offset: number;
  /** Bytes copied from the file. */
  filesz: number;
  /** Bytes occupied in memory; [filesz, memsz) is zeroed. */
  memsz: number;
  /** PF_X=1, PF_W=2, PF_R=4. */
  flags: number;
  align: number;
}

/** One .symtab entry. */
export interface ElfSymbol {
  name: string;
  value: number;
  size: number;
  /** STT_* (0 notype, 1 object, 2 func, 3 section, 4 file). */
  type: number;
  /** STB_* (0 local, 1 global, 2 weak). */
  binding: number;
}

/** Symbols by name; `get` returns undefined, `address` throws naming the missing symbol. */
export class ElfSymbols {
  private readonly byName = new Map<string, ElfSymbol>();

  /** Builds the table; for duplicate names (static symbols) a global one wins. */
  constructor(symbols: ElfSymbol[]) {
    for (const s of symbols) {
      const old = this.byName.get(s.name);
      if (!old || (old.binding === 0 && s.binding !== 0)) this.byName.set(s.name, s);
    }
  }

  /** The symbol named `name`, if the file has it. */
  get(name: string): ElfSymbol | undefined {
    return this.byName.get(name);
  }

  /** The address of symbol `name`; throws an ElfError if there is none. */
  address(name: string): number {
    const s = this.byName.get(name);
    if (!s) throw new ElfError(`symbol '${name}' not found in the ELF symbol table (${this.byName.size} symbols)`);
    return s.value;
  }

  /**
   * The symbol for `address`: a named symbol exactly there (labels such as `fault_site`
   * included) if any, else the function or object whose [value, value + size) holds it.
   */
  containing(address: number): ElfSymbol | undefined {
    for (const s of this.byName.values()) {
      if (s.value === address && s.type !== 3 && s.type !== 4) return s;
    }
    for (const s of this.byName.values()) {
      if ((s.type === 1 || s.type === 2) && address >= s.value && address < s.value + Math.max(s.size, 1)) return s;
    }
    return undefined;
  }

  /** Number of named symbols. */
  get size(): number {
    return this.byName.size;
  }

  /** Every symbol. */
  [Symbol.iterator](): IterableIterator<ElfSymbol> {
    return this.byName.values();
  }
}

/** A parsed ELF64 executable. */
export interface ElfImage {
  entry: number;
  segments: ElfSegment[];
  symbols: ElfSymbols;
}

const hex = (v: number | bigint): string => `0x${v.toString(16)}`;

/** Parses and validates an ELF64 x86-64 executable; throws ElfError naming what is wrong. */
export function parseElf(file: Uint8Array, what = 'ELF file'): ElfImage {
  if (file.byteLength < 4 || ELF_MAGIC.some((b, i) => file[i] !== b)) {
    const head = Array.from(file.subarray(0, 4), (b) => b.toString(16).padStart(2, '0')).join(' ');
    throw new ElfError(`${what} is not an ELF file: it starts with [${head}], not 7f 45 4c 46 ("\\x7fELF")`);
  }
  if (file.byteLength >= 5 && file[4] === 1) {
    throw new ElfError(`${what} is a 32-bit ELF (ELFCLASS32): only 64-bit (ELFCLASS64) x86-64 executables can be loaded`);
  }
  if (file.byteLength < EHDR_SIZE) {
    throw new ElfError(`${what} is truncated: ${file.byteLength} bytes, but an ELF64 header alone needs ${EHDR_SIZE}`);
  }
  if (file[4] !== 2) throw new ElfError(`${what} has unknown ELF class ${file[4]} (expected 2, ELFCLASS64)`);
  if (file[5] !== 1) throw new ElfError(`${what} is not little-endian (EI_DATA=${file[5]}); x86-64 ELF files are`);
  if (file[6] !== 1) throw new ElfError(`${what} has ELF version ${file[6]}, expected 1`);
  const view = new DataView(file.buffer, file.byteOffset, file.byteLength);
  const u16 = (o: number): number => view.getUint16(o, true);
  const u32 = (o: number): number => view.getUint32(o, true);
  const u64 = (o: number): bigint => view.getBigUint64(o, true);
  const num = (v: bigint, field: string): number => {
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new ElfError(`${what}: ${field} ${hex(v)} is too large`);
    return Number(v);
  };

  const type = u16(16);
  if (type === 3) {
    throw new ElfError(`${what} is position-independent (ET_DYN): only static ET_EXEC executables can be loaded; ` +
      'link with -static -no-pie');
  }
  if (type === 1) throw new ElfError(`${what} is a relocatable object (ET_REL), not an executable: link it first`);
  if (type !== 2) throw new ElfError(`${what} has ELF type ${type}, expected 2 (ET_EXEC)`);
  const machine = u16(18);
  if (machine !== EM_X86_64) {
    throw new ElfError(`${what} is for machine ${machine} (${MACHINES[machine] ?? 'unknown'}), not x86-64 (62)`);
  }
  const entry = num(u64(24), 'entry point');
  const phoff = num(u64(32), 'e_phoff');
  const shoff = num(u64(40), 'e_shoff');
  const phentsize = u16(54);
  const phnum = u16(56);
  const shentsize = u16(58);
  const shnum = u16(60);
  if (phnum === 0) throw new ElfError(`${what} has no program headers: nothing to load`);
  if (phentsize !== PHDR_SIZE) throw new ElfError(`${what} has program header size ${phentsize}, expected ${PHDR_SIZE}`);
  if (phoff + phnum * PHDR_SIZE > file.byteLength) {
    throw new ElfError(`${what} is truncated: its ${phnum} program headers at offset ${phoff} end at ` +
      `${phoff + phnum * PHDR_SIZE}, past the end of the file (${file.byteLength} bytes)`);
  }

  const segments: ElfSegment[] = [];
  for (let i = 0; i < phnum; i++) {
    const p = phoff + i * PHDR_SIZE;
    if (u32(p) !== PT_LOAD) continue;
    const seg: ElfSegment = {
      flags: u32(p + 4), offset: num(u64(p + 8), `segment ${i} p_offset`), vaddr: num(u64(p + 16), `segment ${i} p_vaddr`),
      paddr: num(u64(p + 24), `segment ${i} p_paddr`), filesz: num(u64(p + 32), `segment ${i} p_filesz`),
      memsz: num(u64(p + 40), `segment ${i} p_memsz`), align: num(u64(p + 48), `segment ${i} p_align`),
    };
    const name = `segment ${i} (p_paddr ${hex(seg.paddr)})`;
    if (seg.filesz > seg.memsz) throw new ElfError(`${what}: ${name} has p_filesz ${seg.filesz} > p_memsz ${seg.memsz}`);
    if (seg.offset + seg.filesz > file.byteLength) {
      throw new ElfError(`${what} is truncated: ${name} needs file bytes [${seg.offset}, ${seg.offset + seg.filesz}) ` +
        `but the file has ${file.byteLength}`);
    }
    if (seg.align > 1) {
      if ((seg.align & (seg.align - 1)) !== 0 && seg.align < 2 ** 31) {
        throw new ElfError(`${what}: ${name} has p_align ${seg.align}, which is not a power of two`);
      }
      if (seg.vaddr % seg.align !== seg.offset % seg.align) {
        throw new ElfError(`${what}: ${name} has p_vaddr ${hex(seg.vaddr)} and p_offset ${hex(seg.offset)} ` +
          `that differ modulo p_align ${hex(seg.align)}`);
      }
    }
    if (seg.memsz > 0) segments.push(seg);
  }
  if (segments.length === 0) throw new ElfError(`${what} has no non-empty PT_LOAD segment: nothing to load`);
  const sorted = [...segments].sort((a, b) => a.paddr - b.paddr);
  for (let i = 1; i < sorted.length; i++) {
    const a = sorted[i - 1]!;
    const b = sorted[i]!;
    if (a.paddr + a.memsz > b.paddr) {
      throw new ElfError(`${what}: segments overlap: [${hex(a.paddr)}, ${hex(a.paddr + a.memsz)}) and ` +
        `[${hex(b.paddr)}, ${hex(b.paddr + b.memsz)})`);
    }
  }
  if (!segments.some((s) => entry >= s.vaddr && entry < s.vaddr + s.memsz)) {
    throw new ElfError(`${what}: entry point ${hex(entry)} is not inside any PT_LOAD segment`);
  }

  const symbols = shnum > 0 && shoff > 0 ? readSymbols(file, view, shoff, shentsize, shnum, what) : [];
  return { entry, segments, symbols: new ElfSymbols(symbols) };
}

function readSymbols(file: Uint8Array, view: DataView, shoff: number, shentsize: number, shnum: number,
  what: string): ElfSymbol[] {
  if (shentsize !== SHDR_SIZE) throw new ElfError(`${what} has section header size ${shentsize}, expected ${SHDR_SIZE}`);
  if (shoff + shnum * SHDR_SIZE > file.byteLength) {
    throw new ElfError(`${what} is truncated: its ${shnum} section headers at offset ${shoff} end past the end of the file ` +
      `(${file.byteLength} bytes)`);
  }
  const section = (i: number) => {
    const o = shoff + i * SHDR_SIZE;
    return {
      type: view.getUint32(o + 4, true), offset: Number(view.getBigUint64(o + 24, true)),
      size: Number(view.getBigUint64(o + 32, true)), link: view.getUint32(o + 40, true),
    };
  };
  const decoder = new TextDecoder();
  const out: ElfSymbol[] = [];
  for (let i = 0; i < shnum; i++) {
    const symtab = section(i);
    if (symtab.type !== SHT_SYMTAB) continue;
    if (symtab.link >= shnum) throw new ElfError(`${what}: .symtab links to section ${symtab.link}, but there are ${shnum}`);
    const strtab = section(symtab.link);
    for (const [s, label] of [[symtab, '.symtab'], [strtab, 'its string table']] as const) {
      if (s.offset + s.size > file.byteLength) {
        throw new ElfError(`${what} is truncated: ${label} [${s.offset}, ${s.offset + s.size}) ends past the end of the file`);
      }
    }
    for (let o = symtab.offset + SYM_SIZE; o + SYM_SIZE <= symtab.offset + symtab.size; o += SYM_SIZE) {
      const nameOff = view.getUint32(o, true);
      if (nameOff === 0 || nameOff >= strtab.size) continue;
      const start = strtab.offset + nameOff;
      let end = start;
      while (end < strtab.offset + strtab.size && file[end] !== 0) end++;
      const info = view.getUint8(o + 4);
      out.push({
        name: decoder.decode(file.subarray(start, end)), type: info & 0xf, binding: info >> 4,
        value: Number(view.getBigUint64(o + 8, true)), size: Number(view.getBigUint64(o + 16, true)),
      });
    }
  }
  return out;
}

/** A guest-physical range the loader must not write (host structures). */
export interface ReservedRange {
  start: number;
  end: number;
  what: string;
}

/**
 * Copies the image's segments into `memory` (guest memory viewed from guest-physical 0):
 * p_filesz bytes from the file, zeros up to p_memsz. Checks every segment lies inside
 * memory and outside every reserved range before writing anything.
 */
export function loadSegments(file: Uint8Array, image: ElfImage, memory: Uint8Array, reserved: ReservedRange[] = []): void {
  for (const seg of image.segments) {
    const end = seg.paddr + seg.memsz;
    if (end > memory.byteLength) {
      throw new ElfError(`segment [${hex(seg.paddr)}, ${hex(end)}) lies outside guest memory ` +
        `[0, ${hex(memory.byteLength)}): give the machine more memory or link the program lower`);
    }
    for (const r of reserved) {
      if (seg.paddr < r.end && end > r.start) {
        throw new ElfError(`segment [${hex(seg.paddr)}, ${hex(end)}) overlaps ${r.what} at [${hex(r.start)}, ${hex(r.end)}): ` +
          `link the program at or above ${hex(r.end)}`);
      }
    }
  }
  for (const seg of image.segments) {
    // Safe: bounds against memory.byteLength and file.byteLength were checked above and in parseElf.
    memory.set(file.subarray(seg.offset, seg.offset + seg.filesz), seg.paddr);
    memory.fill(0, seg.paddr + seg.filesz, seg.paddr + seg.memsz);
  }
}

